"""Reading and checking MXNet ``.lst`` files.

A line is ``index<TAB>label[<TAB>label2 ...]<TAB>path`` (MXNet's ``label_width``
convention, as written by ``im2rec.py --list``). Labels may be written as floats
(``1.000000``); ``-1`` means "unknown for this column". Paths are relative to an
image root (``--image-train``/``--image-val``) or absolute. lst_format parses the
text; an ImageList keeps the entries as arrays, so that a list of millions of lines
costs tens of MB, and the checks here work on those arrays.
"""
import collections.abc
import errno
import logging
import os
import stat
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import UserInputError, shorten
from .lst_format import read_columns

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListEntry:
    """One image of a list: where it came from, its labels and its resolved path."""

    line: int
    index: int
    labels: Tuple[int, ...]
    path: str


class ImageList:
    """The parsed entries of one ``.lst`` file, stored as arrays (a 1,000,000-line list takes ~50 MB).

    ``lines``, ``indices`` and ``labels`` (entries x label columns) are numpy int64
    arrays; the paths are one byte string with offsets, shared by the lists that
    ``take`` makes. ``entries`` still gives ListEntry objects, made when read.
    ``skipped`` counts the entries that the image checks left out (``drop_entries``).
    """

    def __init__(self, source, image_root, entries: Sequence[ListEntry] = (), *, _arrays=None, skipped=0):
        self.source, self.image_root, self.skipped = source, image_root, skipped
        if _arrays is None:  # from ListEntry objects (tests, callers that build lists by hand)
            entries = list(entries)
            width = len(entries[0].labels) if entries else 0
            _arrays = (np.array([e.line for e in entries], np.int64), np.array([e.index for e in entries], np.int64),
                       np.array([e.labels for e in entries], np.int64).reshape(len(entries), width),
                       _PathStore.from_strings("", [e.path for e in entries]), np.arange(len(entries)))
        self.lines, self.indices, self.labels, self._paths, self._rows = _arrays
        self._keys = None

    @property
    def num_label_columns(self):
        """How many label columns each line has."""
        return self.labels.shape[1]

    def __len__(self):
        return len(self.lines)

    def path_at(self, position):
        """The resolved image path of the entry at ``position``."""
        return self._paths.path(self._rows[position])

    def paths(self):
        """Every entry's resolved image path, in order (an iterator)."""
        return (self._paths.path(row) for row in self._rows)

    def where_at(self, position):
        """``file:line`` of the entry at ``position``, for messages."""
        return "%s:%d" % (shorten(self.source), self.lines[position])

    def where(self, entry):
        """``file:line`` of an entry, for messages."""
        return "%s:%d" % (shorten(self.source), entry.line)

    def entry(self, position):
        """The ListEntry at ``position``."""
        values = self.labels[position]  # float where labels may be real numbers (label_tables.py)
        labels = tuple(float(v) for v in values) if values.dtype.kind == "f" else tuple(int(v) for v in values)
        return ListEntry(int(self.lines[position]), int(self.indices[position]), labels, self.path_at(position))

    @property
    def entries(self):
        """The entries as a read-only sequence of ListEntry (each made when read)."""
        return _Entries(self)

    def take(self, positions):
        """A list of the entries at ``positions`` (a slice or an index array), in that order."""
        positions = np.arange(len(self))[positions] if isinstance(positions, slice) else np.asarray(positions, np.intp)
        return ImageList(self.source, self.image_root, skipped=self.skipped, _arrays=(
            self.lines[positions], self.indices[positions], self.labels[positions], self._paths, self._rows[positions]))


class _Entries(collections.abc.Sequence):
    """``ImageList.entries``: ListEntry objects made on access, so that none are kept."""

    def __init__(self, image_list):
        self._list = image_list

    def __len__(self):
        return len(self._list)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self._list.entry(i) for i in range(*item.indices(len(self._list)))]
        if not -len(self._list) <= item < len(self._list):
            raise IndexError("entry %d of %d" % (item, len(self._list)))
        return self._list.entry(item % len(self._list))

    def __eq__(self, other):
        return list(self) == list(other)


class _PathStore:
    """Image paths as one UTF-8 byte string plus offsets; a path is ``root`` joined to its text."""

    def __init__(self, root, blob, offsets):
        self.root, self.blob, self.offsets = root, blob, offsets
        self._prefix = os.path.join(root, "")  # os.path.join(root, text) for a relative text, made faster

    @classmethod
    def from_strings(cls, root, texts):
        """A store of the given path texts."""
        encoded = [t.encode("utf-8", "surrogateescape") for t in texts]
        return cls(root, b"".join(encoded), np.cumsum([0] + [len(b) for b in encoded], dtype=np.int64))

    def path(self, row):
        """The path joined to the image root (an absolute path stays as it is)."""
        text = self.blob[self.offsets[row]:self.offsets[row + 1]].decode("utf-8", "surrogateescape")
        return text if os.path.isabs(text) else self._prefix + text


def check_list_path(lst_path):
    """Refuse a list path that is missing, a folder or a device, saying which; a FIFO (``<(cat x.lst)``) is read once."""
    shown = shorten(lst_path)
    try:
        mode = os.stat(lst_path).st_mode if lst_path else None
    except OSError as exc:
        mode = None if exc.errno in (errno.ENOENT, errno.ENOTDIR) else exc
    if isinstance(mode, OSError):
        raise UserInputError("list file %r cannot be read: %s." % (shown, mode.strerror or mode))
    if mode is None:
        raise UserInputError("list file %r does not exist. Pass an MXNet .lst file "
                             "(make one with `multitask-mx make-list` or im2rec.py --list)." % shown)
    if stat.S_ISDIR(mode):
        raise UserInputError("list file %r is a folder. Pass an MXNet .lst file (index<TAB>label<TAB>path per "
                             "line); `multitask-mx make-list PREFIX %s` makes train/val/test lists from a folder "
                             "of class folders." % (shown, shown))
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):  # a pipe (FIFO, <(cat x.lst)) is read once, in order
        kind = "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else \
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise UserInputError("list file %r is %s, not a file. Pass an MXNet .lst file (a regular file, a named "
                             "pipe or a shell's <(...) substitution)." % (shown, kind))


def read_list(lst_path, image_root=None):
    """Read a ``.lst`` file (a distributed worker takes its shard later: ``distributed.shard_list``).

    Relative image paths are joined to ``image_root`` (default: the list's folder).
    Raises UserInputError naming the file and line for any malformed line.
    """
    check_list_path(lst_path)
    root = image_root if image_root else os.path.dirname(os.path.abspath(lst_path))
    if not os.path.isdir(root):
        raise UserInputError("image root %r (for %s) is not a folder. Point --image-train/--image-val "
                             "at the folder the list's paths are relative to." % (shorten(root), shorten(lst_path)))
    with open(lst_path, "rb") as f:  # parsed in blocks: no Python object per line is kept
        columns = read_columns(f, lst_path)
    if not columns.lines:
        raise UserInputError("list file %s has no entries." % shorten(lst_path))
    count = len(columns.lines)
    paths = _PathStore(root, b"".join(columns.blobs), np.frombuffer(columns.offsets, np.int64))
    image_list = ImageList(lst_path, root, _arrays=(
        np.frombuffer(columns.lines, np.int64), np.frombuffer(columns.indices, np.int64),
        np.frombuffer(columns.labels, np.int64).reshape(count, columns.width), paths, np.arange(count)))
    return image_list


def infer_num_classes(image_lists: Sequence[ImageList]):
    """Classes per label column: the largest label seen plus one."""
    width = image_lists[0].num_label_columns
    return [int(max(lst.labels[:, c].max(initial=-1) for lst in image_lists)) + 1 for c in range(width)]


def check_label_range(image_list: ImageList, num_classes: Sequence[int]):
    """Raise if a label is outside ``0..num_classes-1`` for its column."""
    if len(num_classes) != image_list.num_label_columns:
        raise UserInputError("--num-classes gives %d number(s) but %s has %d label column(s); give one "
                             "number per column, e.g. --num-classes %s."
                             % (len(num_classes), image_list.source, image_list.num_label_columns,
                                ",".join(["4"] * image_list.num_label_columns)))
    over = image_list.labels >= np.asarray(num_classes, np.int64)
    if over.any():
        position, column = np.argwhere(over)[0]  # the first line, then the first column, as read
        label, n = int(image_list.labels[position, column]), num_classes[column]
        raise UserInputError("%s: label %d in column %d is out of range for %d classes (0..%d). "
                             "Fix the line or raise --num-classes."
                             % (image_list.where_at(position), label, column + 1, n, n - 1))


def drop_entries(image_list: ImageList, bad: Optional[set]):
    """A copy of the list without the entries whose line numbers are in ``bad``; ``skipped`` counts them."""
    if not bad:
        return image_list
    kept = image_list.take(np.flatnonzero(~np.isin(image_list.lines, np.fromiter(bad, np.int64, len(bad)))))
    kept.skipped += len(image_list) - len(kept)
    return kept


def first_few(items, shown=5):
    """'[1, 2, 3, 4, 5, ... and 995 more]': a listing cut to its first ``shown`` items, saying how many are left out."""
    more = ", ... and %d more" % (len(items) - shown) if len(items) > shown else ""
    return "[%s%s]" % (", ".join(str(x) for x in items[:shown]), more)


def _path_keys(image_list: ImageList):
    """A hash of each entry's real path (as ``os.path.realpath`` gives it; int64 array), made once per list.

    Each folder's real path is looked up once; the few entries whose keys are shared
    are then compared by their paths, so no set of a million paths is ever built.
    """
    if image_list._keys is None:
        keys = np.empty(len(image_list), np.int64)
        for begin, reals in _real_paths(image_list, np.arange(len(image_list))):
            keys[begin:begin + len(reals)] = [hash(real) for real in reals]
        image_list._keys = keys
    return image_list._keys


def _real_paths(image_list, positions, chunk=65536):
    """(offset in ``positions``, [real path as bytes of each]) per chunk of ``positions``.

    A folder's real path is looked up once, and which of its files are symbolic links
    is read from its directory listing (one read of the folder instead of a stat per file).
    """
    store = image_list._paths
    root, blob, folders = os.fsencode(store.root), store.blob, {}
    listed = collections.Counter()  # entries per folder, to know when reading a folder pays
    for _, spans in _chunks(store, image_list, positions, chunk):
        listed.update(blob[start:end].rpartition(b"/")[0] for start, end in spans)
    realpath = os.path.realpath
    for begin, spans in _chunks(store, image_list, positions, chunk):
        reals = []
        for start, end in spans:
            folder, _, name = blob[start:end].rpartition(b"/")
            known = folders.get(folder)
            if known is None:
                real_folder = os.path.join(realpath(os.path.join(root, folder)), b"")
                known = folders[folder] = (real_folder, _symbolic_links(real_folder, listed[folder]))
            real_folder, links = known
            real = real_folder + name
            if name in (b"", b".", b"..") or (os.path.islink(real) if links is None else name in links):
                real = realpath(real)
            reals.append(real)
        yield begin, reals


def _chunks(store, image_list, positions, chunk):
    for begin in range(0, len(positions), chunk):
        rows = image_list._rows[positions[begin:begin + chunk]]
        yield begin, zip(store.offsets[rows].tolist(), store.offsets[rows + 1].tolist())


def _symbolic_links(folder, listed):
    """Names of the symbolic links in ``folder``; None where it holds far more entries than ``listed``."""
    links = set()
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count > 4 * listed + 64:
                    return None  # a stat per listed file is cheaper than reading this folder
                if entry.is_symlink():
                    links.add(entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return links  # nothing there: no links
    except OSError:
        return None
    return links


def find_duplicates(image_list: ImageList):
    """Paths that appear on more than one line: {path: [line, ...]}.

    A line that occurs twice (a distributed shard padded with its first lines) is one line.
    """
    keys = _path_keys(image_list)
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    groups = collections.defaultdict(set)
    shared = np.union1d(order[1:][same], order[:-1][same])
    for begin, reals in _real_paths(image_list, shared):
        for path, line in zip(reals, image_list.lines[shared[begin:begin + len(reals)]].tolist()):
            groups[path].add(line)
    return {os.fsdecode(path): sorted(lines) for path, lines in groups.items() if len(lines) > 1}


def find_overlap(first: ImageList, second: ImageList):
    """Image paths present in both lists (train/val leakage)."""
    shared = np.intersect1d(_path_keys(first), _path_keys(second))
    if not len(shared):
        return []
    paths = [{path for _, reals in _real_paths(lst, np.flatnonzero(np.isin(_path_keys(lst), shared))) for path in reals}
             for lst in (first, second)]
    return sorted(os.fsdecode(path) for path in paths[0] & paths[1])

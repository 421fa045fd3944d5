"""Reading and checking MXNet ``.lst`` files.

A line is ``index<TAB>label[<TAB>label2 ...]<TAB>path`` (MXNet's ``label_width``
convention, as written by ``im2rec.py --list``). Labels may be written as floats
(``1.000000``); ``-1`` means "unknown for this column". Paths are relative to an
image root (``--image-train``/``--image-val``) or absolute.
"""
import codecs
import collections.abc
import itertools
import logging
import math
import os
from array import array
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .errors import UserInputError

_logger = logging.getLogger(__name__)

MISSING_LABEL = -1
_BLOCK = 1 << 22  # bytes parsed at a time
_INT64 = 1 << 63


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

    def __init__(self, source, image_root, entries: Sequence[ListEntry] = (), *, _arrays=None):
        self.source, self.image_root, self.skipped = source, image_root, 0
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
        return "%s:%d" % (self.source, self.lines[position])

    def where(self, entry):
        """``file:line`` of an entry, for messages."""
        return "%s:%d" % (self.source, entry.line)

    def entry(self, position):
        """The ListEntry at ``position``."""
        return ListEntry(int(self.lines[position]), int(self.indices[position]),
                         tuple(int(v) for v in self.labels[position]), self.path_at(position))

    @property
    def entries(self):
        """The entries as a read-only sequence of ListEntry (each made when read)."""
        return _Entries(self)

    def take(self, positions):
        """A list of the entries at ``positions`` (a slice or an index array), in that order."""
        if isinstance(positions, slice):
            positions = np.arange(len(self))[positions]
        positions = np.asarray(positions, dtype=np.intp)
        out = ImageList(self.source, self.image_root, _arrays=(
            self.lines[positions], self.indices[positions], self.labels[positions], self._paths, self._rows[positions]))
        out.skipped = self.skipped
        return out


class _Entries(collections.abc.Sequence):
    """``ImageList.entries``: ListEntry objects made on access, so that none are kept."""

    def __init__(self, image_list):
        self._list = image_list

    def __len__(self):
        return len(self._list)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self._list.entry(i) for i in range(*item.indices(len(self._list)))]
        if item < 0:
            item += len(self._list)
        if not 0 <= item < len(self._list):
            raise IndexError("entry %d of %d" % (item, len(self._list)))
        return self._list.entry(item)

    def __eq__(self, other):
        return list(self) == list(other)


class _PathStore:
    """Image paths as one UTF-8 byte string plus offsets; a path is ``root`` joined to its text."""

    def __init__(self, root, blob, offsets):
        self.root, self.blob, self.offsets = root, blob, offsets

    @classmethod
    def from_strings(cls, root, texts):
        """A store of the given path texts."""
        encoded = [t.encode("utf-8", "surrogateescape") for t in texts]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(root, b"".join(encoded), offsets)

    def text(self, row):
        """The path as written in the list."""
        return self.blob[self.offsets[row]:self.offsets[row + 1]].decode("utf-8", "surrogateescape")

    def path(self, row):
        """The path joined to the image root (an absolute path stays as it is)."""
        return os.path.join(self.root, self.text(row))


def _parse_label(text, where):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # 'nan' and 'inf' parse as floats but are not class indices
        raise UserInputError("%s: label %r is not a number. Labels are class indices "
                             "(0, 1, 2 or 0.000000, 1.000000 ...), -1 for unknown." % (where, text))
    if value != int(value):
        raise UserInputError("%s: label %r is not a whole number; labels are class indices." % (where, text))
    value = int(value)
    if value < MISSING_LABEL:
        raise UserInputError("%s: label %d is negative. Use 0..N-1 for classes, or -1 where "
                             "the label is unknown for that column." % (where, value))
    return value


def parse_line(text, where):
    """Split one ``.lst`` line into (index, labels, relative path)."""
    parts = text.rstrip("\r\n").split("\t")
    if len(parts) < 3:
        hint = " Columns must be separated by TABs, not spaces." if " " in text.strip() else ""
        raise UserInputError("%s: expected 'index<TAB>label<TAB>path', found %d column(s): %r.%s"
                             % (where, len(parts), text.strip()[:120], hint))
    try:
        index = int(float(parts[0]))
    except (ValueError, OverflowError):  # OverflowError: 'inf'; 'nan' gives ValueError
        raise UserInputError("%s: the first column must be the image index (a number), found %r."
                             % (where, parts[0]))
    labels = tuple(_parse_label(t, where) for t in parts[1:-1])
    path = parts[-1].strip()
    if not path:
        raise UserInputError("%s: the image path (last column) is empty." % where)
    return index, labels, path


def _check_utf8(text, where):
    # A block that is not valid UTF-8 is decoded with errors="surrogateescape", so a byte that is
    # not UTF-8 shows up here as a lone surrogate, which cannot be encoded: reported with its line.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserInputError("%s: not UTF-8 text. A .lst file is text (index, labels, path separated by "
                             "TABs); pass the .lst, not the .rec/.idx, and save it as UTF-8." % where)


def _text_blocks(f):
    """(lines, valid UTF-8) per block of whole lines of a binary file, split as text mode splits them."""
    rest = b""
    data = f.read(_BLOCK)
    if data.startswith(codecs.BOM_UTF8):  # the byte-order mark that Windows editors may write
        data = data[len(codecs.BOM_UTF8):]
    while data:
        buf = rest + data
        cut = buf.rfind(b"\n")
        if cut < 0:  # old Mac line ends: a \r followed by a byte read already does not start a \r\n
            cut = buf.rfind(b"\r", 0, len(buf) - 1)
        rest, buf = (buf[cut + 1:], buf[:cut + 1]) if cut >= 0 else (buf, b"")
        if buf:
            yield _split_lines(buf)
        data = f.read(_BLOCK)
    if rest:
        yield _split_lines(rest)


def _split_lines(block):
    try:
        text, valid = block.decode("utf-8"), True
    except UnicodeDecodeError:
        text, valid = block.decode("utf-8", "surrogateescape"), False
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # universal newlines
    if lines[-1] == "":
        lines.pop()
    return lines, valid


class _Columns:
    """What the parsed lines add up to: line numbers, indices, labels (flat) and path texts."""

    def __init__(self):
        self.lines, self.indices, self.labels = array("q"), array("q"), array("q")
        self.width = None
        self.label_values = {}  # label text -> value, for the texts seen already (a few in most lists)
        self.blobs, self.offsets = [], array("q", [0])

    def add_paths(self, paths):
        """Store one block's path texts."""
        encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
        start = self.offsets[-1]
        self.offsets.extend(start + end for end in itertools.accumulate(map(len, encoded)))
        self.blobs.append(b"".join(encoded))

    def parse_slow(self, text, where):
        """One line through parse_line and the column-count check: the path that raises errors."""
        index, labels, path = parse_line(text, where)
        if self.width is None:
            self.width = len(labels)
        elif len(labels) != self.width:
            raise UserInputError("%s: %d label column(s), but earlier lines have %d. Every line "
                                 "needs the same number of columns." % (where, len(labels), self.width))
        if not -_INT64 <= index < _INT64:
            raise UserInputError("%s: the image index %d is too large for a 64-bit integer." % (where, index))
        self.label_values.update(zip(text.split("\t")[1:-1], labels))
        return index, labels, path


def _parse_lines(texts, valid, number, lst_path, columns):
    """Parse one block's lines (the first is line ``number + 1``) into ``columns``."""
    label_values, paths = columns.label_values, []
    for number, text in enumerate(texts, start=number + 1):
        if not valid:
            _check_utf8(text, "%s:%d" % (lst_path, number))
        parts = text.split("\t")
        try:  # the common line: an integer index, labels seen before, a path
            index = int(parts[0])
            labels = [label_values[t] for t in parts[1:-1]]
            path = parts[-1].strip()
            if len(labels) != columns.width or not path or not -_INT64 <= index < _INT64:
                raise ValueError
        except (ValueError, KeyError):
            if not text.strip():
                continue
            index, labels, path = columns.parse_slow(text, "%s:%d" % (lst_path, number))
        columns.lines.append(number)
        columns.indices.append(index)
        columns.labels.extend(labels)
        paths.append(path)
    columns.add_paths(paths)


def _check_list_path(lst_path):
    if lst_path and os.path.isdir(lst_path):
        raise UserInputError("list file %r is a folder. Pass an MXNet .lst file (index<TAB>label<TAB>path per "
                             "line); `multitask-mx make-list PREFIX %s` makes train/val/test lists from a folder "
                             "of class folders." % (lst_path, lst_path))
    if not lst_path or not os.path.isfile(lst_path):
        raise UserInputError("list file %r does not exist. Pass an MXNet .lst file "
                             "(make one with `multitask-mx make-list` or im2rec.py --list)." % lst_path)


def read_list(lst_path, image_root=None, part_index=0, num_parts=1):
    """Read a ``.lst`` file; with ``num_parts > 1`` keep only this worker's shard.

    Relative image paths are joined to ``image_root`` (default: the list's folder).
    Raises UserInputError naming the file and line for any malformed line.
    """
    _check_list_path(lst_path)
    root = image_root if image_root else os.path.dirname(os.path.abspath(lst_path))
    if not os.path.isdir(root):
        raise UserInputError("image root %r (for %s) is not a folder. Point --image-train/--image-val "
                             "at the folder the list's paths are relative to." % (root, lst_path))
    columns, number = _Columns(), 0
    with open(lst_path, "rb") as f:  # parsed in blocks: no Python object per line is kept
        for texts, valid in _text_blocks(f):
            _parse_lines(texts, valid, number, lst_path, columns)
            number += len(texts)
    if not columns.lines:
        raise UserInputError("list file %s has no entries." % lst_path)
    count = len(columns.lines)
    paths = _PathStore(root, b"".join(columns.blobs), np.frombuffer(columns.offsets, np.int64))
    image_list = ImageList(lst_path, root, _arrays=(
        np.frombuffer(columns.lines, np.int64), np.frombuffer(columns.indices, np.int64),
        np.frombuffer(columns.labels, np.int64).reshape(count, columns.width), paths, np.arange(count)))
    if num_parts > 1:
        image_list = image_list.take(slice(part_index, None, num_parts))
        if not len(image_list):
            raise UserInputError("list file %s has fewer entries than the %d workers sharing it; worker %d "
                                 "gets none. Use more images or fewer workers." % (lst_path, num_parts, part_index))
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
    keep = ~np.isin(image_list.lines, np.fromiter(bad, np.int64, len(bad)))
    kept = image_list.take(np.flatnonzero(keep))
    kept.skipped = image_list.skipped + int(len(keep) - keep.sum())
    return kept


def first_few(items, shown=5):
    """'[1, 2, 3, 4, 5, ... and 995 more]': a listing cut to its first ``shown`` items, saying how many are left out."""
    more = ", ... and %d more" % (len(items) - shown) if len(items) > shown else ""
    return "[%s%s]" % (", ".join(str(x) for x in items[:shown]), more)


def _real_folder(root, folder):
    real = os.path.realpath(os.path.join(root, folder))
    return real if real.endswith(b"/") else real + b"/"


def _path_keys(image_list: ImageList):
    """A hash of each entry's real path (as ``os.path.realpath`` gives it; int64 array), made once per list.

    Each folder's real path is looked up once; the few entries whose keys are shared
    are then compared by their paths, so no set of a million paths is ever built.
    """
    if image_list._keys is None:
        image_list._keys = np.fromiter((hash(real) for real, _ in _real_paths_at(image_list, range(len(image_list)))),
                                       np.int64, len(image_list))
    return image_list._keys


def _real_paths_at(image_list, positions, chunk=65536):
    """(real path as bytes, position) of the entries at ``positions``."""
    store = image_list._paths
    root, blob, folders = os.fsencode(store.root), store.blob, {}
    for begin in range(0, len(positions), chunk):
        part = np.asarray(positions[begin:begin + chunk], np.intp)
        rows = image_list._rows[part]
        for position, start, end in zip(part.tolist(), store.offsets[rows].tolist(), store.offsets[rows + 1].tolist()):
            folder, _, name = blob[start:end].rpartition(b"/")
            if name in (b"", b".", b".."):
                yield os.path.realpath(os.path.join(root, blob[start:end])), position
                continue
            real_folder = folders.get(folder)
            if real_folder is None:
                real_folder = folders[folder] = _real_folder(root, folder)
            real = real_folder + name
            yield (os.path.realpath(real) if os.path.islink(real) else real), position


def find_duplicates(image_list: ImageList):
    """Paths that appear on more than one line: {path: [line, ...]}.

    A line that occurs twice (a distributed shard padded with its first lines) is one line.
    """
    keys = _path_keys(image_list)
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    groups = collections.defaultdict(set)
    for path, position in _real_paths_at(image_list, np.union1d(order[1:][same], order[:-1][same])):
        groups[path].add(int(image_list.lines[position]))
    return {os.fsdecode(path): sorted(lines) for path, lines in groups.items() if len(lines) > 1}


def find_overlap(first: ImageList, second: ImageList):
    """Image paths present in both lists (train/val leakage)."""
    shared = np.intersect1d(_path_keys(first), _path_keys(second))
    if not len(shared):
        return []
    paths = [{path for path, _ in _real_paths_at(lst, np.flatnonzero(np.isin(_path_keys(lst), shared)))}
             for lst in (first, second)]
    return sorted(os.fsdecode(path) for path in paths[0] & paths[1])

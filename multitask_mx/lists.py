"""Reading and checking MXNet ``.lst`` files.

A line is ``index<TAB>label[<TAB>label2 ...]<TAB>path`` (MXNet's ``label_width``
convention, as written by ``im2rec.py --list``). Labels may be written as floats
(``1.000000``); ``-1`` means "unknown for this column". Paths are relative to an
image root (``--image-train``/``--image-val``) or absolute.
"""
import collections
import logging
import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .errors import UserInputError

_logger = logging.getLogger(__name__)

MISSING_LABEL = -1


@dataclass(frozen=True)
class ListEntry:
    """One image of a list: where it came from, its labels and its resolved path."""

    line: int
    index: int
    labels: Tuple[int, ...]
    path: str


@dataclass
class ImageList:
    """The parsed entries of one ``.lst`` file."""

    source: str
    image_root: str
    entries: List[ListEntry]

    @property
    def num_label_columns(self):
        """How many label columns each line has."""
        return len(self.entries[0].labels)

    def __len__(self):
        return len(self.entries)

    def where(self, entry):
        """``file:line`` of an entry, for messages."""
        return "%s:%d" % (self.source, entry.line)


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
    # The file is read with errors="surrogateescape", so a byte that is not UTF-8 shows up
    # here as a lone surrogate, which cannot be encoded: reported with its line.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserInputError("%s: not UTF-8 text. A .lst file is text (index, labels, path separated by "
                             "TABs); pass the .lst, not the .rec/.idx, and save it as UTF-8." % where)


def read_list(lst_path, image_root=None, part_index=0, num_parts=1):
    """Read a ``.lst`` file; with ``num_parts > 1`` keep only this worker's shard.

    Relative image paths are joined to ``image_root`` (default: the list's folder).
    Raises UserInputError naming the file and line for any malformed line.
    """
    if not lst_path or not os.path.isfile(lst_path):
        raise UserInputError("list file %r does not exist. Pass an MXNet .lst file "
                             "(make one with `multitask-mx make-list` or im2rec.py --list)." % lst_path)
    root = image_root if image_root else os.path.dirname(os.path.abspath(lst_path))
    if not os.path.isdir(root):
        raise UserInputError("image root %r (for %s) is not a folder. Point --image-train/--image-val "
                             "at the folder the list's paths are relative to." % (root, lst_path))
    entries = []
    width = None
    # utf-8-sig: drops the byte-order mark that Windows editors may write.
    with open(lst_path, encoding="utf-8-sig", errors="surrogateescape") as f:
        for number, text in enumerate(f, start=1):
            where = "%s:%d" % (lst_path, number)
            _check_utf8(text, where)
            if not text.strip():
                continue
            index, labels, rel = parse_line(text, where)
            if width is None:
                width = len(labels)
            elif len(labels) != width:
                raise UserInputError("%s: %d label column(s), but earlier lines have %d. Every line "
                                     "needs the same number of columns." % (where, len(labels), width))
            path = rel if os.path.isabs(rel) else os.path.join(root, rel)
            entries.append(ListEntry(number, index, labels, path))
    if not entries:
        raise UserInputError("list file %s has no entries." % lst_path)
    if num_parts > 1:
        entries = entries[part_index::num_parts]
        if not entries:
            raise UserInputError("list file %s has fewer entries than the %d workers sharing it; worker %d "
                                 "gets none. Use more images or fewer workers." % (lst_path, num_parts, part_index))
    return ImageList(lst_path, root, entries)


def infer_num_classes(image_lists: Sequence[ImageList]):
    """Classes per label column: the largest label seen plus one."""
    width = image_lists[0].num_label_columns
    return [max(max((e.labels[c] for e in lst.entries), default=-1) for lst in image_lists) + 1
            for c in range(width)]


def check_label_range(image_list: ImageList, num_classes: Sequence[int]):
    """Raise if a label is outside ``0..num_classes-1`` for its column."""
    if len(num_classes) != image_list.num_label_columns:
        raise UserInputError("--num-classes gives %d number(s) but %s has %d label column(s); give one "
                             "number per column, e.g. --num-classes %s."
                             % (len(num_classes), image_list.source, image_list.num_label_columns,
                                ",".join(["4"] * image_list.num_label_columns)))
    for entry in image_list.entries:
        for column, (label, n) in enumerate(zip(entry.labels, num_classes)):
            if label >= n:
                raise UserInputError("%s: label %d in column %d is out of range for %d classes (0..%d). "
                                     "Fix the line or raise --num-classes."
                                     % (image_list.where(entry), label, column + 1, n, n - 1))


def find_duplicates(image_list: ImageList):
    """Paths that appear on more than one line: {path: [line, ...]}."""
    lines = collections.defaultdict(list)
    for entry in image_list.entries:
        lines[os.path.realpath(entry.path)].append(entry.line)
    return {path: ls for path, ls in lines.items() if len(ls) > 1}


def find_overlap(first: ImageList, second: ImageList):
    """Image paths present in both lists (train/val leakage)."""
    a = {os.path.realpath(e.path) for e in first.entries}
    return sorted(a.intersection(os.path.realpath(e.path) for e in second.entries))


def drop_entries(image_list: ImageList, bad: Optional[set]):
    """A copy of the list without the entries whose line numbers are in ``bad``."""
    if not bad:
        return image_list
    return ImageList(image_list.source, image_list.image_root,
                     [e for e in image_list.entries if e.line not in bad])

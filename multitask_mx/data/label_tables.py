"""Label tables whose labels may be real numbers: a CSV with a header, or a ``.lst`` read for task kinds.

Both give the same ImageList as lists.read_list, with float64 labels (NaN where a
cell is empty or ``nan``). A CSV's header names the columns: ``path`` holds the image
path (relative to the image root, or absolute), every other column is a label column
in order, and its name becomes the task's (or the attribute's) name.
"""
import csv
import logging
import math
import os

import numpy as np

from ..errors import UserInputError
from .lists import ImageList, _PathStore, check_list_path

_logger = logging.getLogger(__name__)


def is_csv(path):
    """True for a ``.csv`` list (read by read_csv_list)."""
    return str(path).lower().endswith(".csv")


def _number(text, where):
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise UserInputError("%s: label %r is not a number. Labels are numbers; leave the cell empty or write "
                             "nan where the value is unknown." % (where, text))


def _image_root(path, image_root):
    root = image_root if image_root else os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(root):
        raise UserInputError("image root %r (for %s) is not a folder. Point --image-train/--image-val "
                             "at the folder the list's paths are relative to." % (root, path))
    return root


def _image_list(path, root, lines, labels, paths):
    if not lines:
        raise UserInputError("list file %s has no entries." % path)
    count = len(lines)
    return ImageList(path, root, _arrays=(
        np.array(lines, np.int64), np.arange(count, dtype=np.int64), np.array(labels, np.float64).reshape(count, -1),
        _PathStore.from_strings(root, paths), np.arange(count)))


def read_csv_list(path, image_root=None):
    """(ImageList with float labels, label column names) from a CSV with a header and a ``path`` column."""
    check_list_path(path)
    root = _image_root(path, image_root)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = [h.strip() for h in next(rows, [])]
        if "path" not in header:
            raise UserInputError("%s:1: the header %s has no 'path' column. The first line names the columns: "
                                 "path (the image) and one name per label column, e.g. path,age,gender."
                                 % (path, header))
        at = header.index("path")
        names = [h for i, h in enumerate(header) if i != at]
        if not names:
            raise UserInputError("%s:1: no label columns besides 'path'." % path)
        lines, labels, paths = [], [], []
        for number, row in enumerate(rows, start=2):
            if not any(cell.strip() for cell in row):
                continue
            where = "%s:%d" % (path, number)
            if len(row) != len(header):
                raise UserInputError("%s: %d cell(s), but the header has %d." % (where, len(row), len(header)))
            if not row[at].strip():
                raise UserInputError("%s: the path cell is empty." % where)
            lines.append(number)
            paths.append(row[at].strip())
            labels.append([_number(cell, where) for i, cell in enumerate(row) if i != at])
    return _image_list(path, root, lines, labels, paths), names


def read_real_lst(path, image_root=None):
    """A ``.lst`` (index<TAB>labels<TAB>path) whose labels may be real numbers, empty or ``nan``."""
    check_list_path(path)
    root = _image_root(path, image_root)
    lines, labels, paths, width = [], [], [], None
    with open(path, encoding="utf-8-sig") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            where = "%s:%d" % (path, number)
            parts = text.rstrip("\r\n").split("\t")
            if len(parts) < 3 or not parts[-1].strip():
                raise UserInputError("%s: expected 'index<TAB>label<TAB>...<TAB>path' (TAB-separated), found %r."
                                     % (where, text.strip()[:120]))
            values = [_number(t, where) for t in parts[1:-1]]
            if width is not None and len(values) != width:
                raise UserInputError("%s: %d label column(s), but earlier lines have %d." % (where, len(values), width))
            width = len(values)
            lines.append(number)
            labels.append(values)
            paths.append(parts[-1].strip())
    return _image_list(path, root, lines, labels, paths)


def read_table(path, image_root=None):
    """(ImageList with float labels, header names or None): a CSV by its extension, else a ``.lst``."""
    if is_csv(path):
        return read_csv_list(path, image_root)
    return read_real_lst(path, image_root), None

"""The ``.lst`` text format: lines parsed in blocks into flat columns, errors naming file and line.

A line is ``index<TAB>label[<TAB>label2 ...]<TAB>path``. The file is read in blocks
of whole lines; a block whose lines all look plain (integer index, label texts seen
before, a path) is parsed at once with list comprehensions, any other line by line
through ``parse_line``, which raises the UserInputError for a bad one. Nothing is
kept per line but its numbers and its path's bytes (lists.ImageList holds them).
"""
import codecs
import itertools
import logging
import math
from array import array

from ..errors import UserInputError, shorten

_logger = logging.getLogger(__name__)

MISSING_LABEL = -1
_BLOCK = 1 << 20  # bytes parsed at a time
_INT64 = 1 << 63


def _parse_label(text, where):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # 'nan' and 'inf' parse as floats but are not class indices
        raise UserInputError("%s: label %r is not a number. Labels are class indices "
                             "(0, 1, 2 or 0.000000, 1.000000 ...), -1 for unknown." % (where, shorten(text, 60)))
    if value != int(value):
        raise UserInputError("%s: label %r is not a whole number; labels are class indices." % (where, shorten(text, 60)))
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
                             % (where, shorten(parts[0], 60)))
    labels = tuple(_parse_label(t, where) for t in parts[1:-1])
    path = parts[-1].strip()
    if not path:
        raise UserInputError("%s: the image path (last column) is empty." % where)
    return index, labels, path


def read_columns(f, lst_path):
    """Parse an open (binary) ``.lst`` file into a Columns; ``lst_path`` names it in errors."""
    columns, number = Columns(), 0
    for texts, valid in _text_blocks(f):
        _parse_lines(texts, valid, number, lst_path, columns)
        number += len(texts)
    return columns


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


class Columns:
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
    start = 0
    while columns.width is None and start < len(texts):  # the first line sets the label columns
        _parse_line_by_line(texts[start:start + 1], valid, number + start, lst_path, columns)
        start += 1
    rest = texts[start:]
    if rest and not (valid and _parse_plain_block(rest, number + start, columns)):
        _parse_line_by_line(rest, valid, number + start, lst_path, columns)


def _parse_plain_block(texts, number, columns):
    """All lines at once, if each has an integer index, labels seen before and a path; else False."""
    rows = [t.split("\t") for t in texts]
    if set(map(len, rows)) - {columns.width + 2}:
        return False
    values = columns.label_values
    try:
        indices = array("q", [int(r[0]) for r in rows])
        labels = [[values[r[c]] for r in rows] for c in range(1, columns.width + 1)]
    except (ValueError, KeyError, OverflowError):
        return False
    paths = [r[-1].strip() for r in rows]
    if not all(paths):
        return False
    columns.lines.extend(range(number + 1, number + 1 + len(rows)))
    columns.indices.extend(indices)
    columns.labels.extend(labels[0] if len(labels) == 1 else itertools.chain.from_iterable(zip(*labels)))
    columns.add_paths(paths)
    return True


def _parse_line_by_line(texts, valid, number, lst_path, columns):
    label_values, paths = columns.label_values, []
    for number, text in enumerate(texts, start=number + 1):
        if not valid:
            _check_utf8(text, "%s:%d" % (shorten(lst_path), number))
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
            index, labels, path = columns.parse_slow(text, "%s:%d" % (shorten(lst_path), number))
        columns.lines.append(number)
        columns.indices.append(index)
        columns.labels.extend(labels)
        paths.append(path)
    columns.add_paths(paths)

"""lists: reading .lst files and the checks on them, on real files in tmp_path."""
import os

import pytest

from multitask_mx.errors import UserInputError
from multitask_mx.data.lst_format import MISSING_LABEL
from multitask_mx.data.lists import (check_label_range, drop_entries, find_duplicates, find_overlap,
    infer_num_classes, read_list)

from conftest import write_list


def write_text(path, text, mode="w"):
    """Write ``text`` (str or bytes) to ``path`` and return it as a string."""
    with open(path, mode) as f:
        f.write(text)
    return str(path)


@pytest.fixture
def lst(tmp_path):
    """Write a .lst with the given content under tmp_path; returns its path."""
    def make(text, name="data.lst"):
        return write_text(tmp_path / name, text)
    return make


def assert_error(match_parts, func, *args, **kwargs):
    """Call ``func`` expecting a UserInputError whose message contains every part."""
    with pytest.raises(UserInputError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    for part in match_parts:
        assert part in message, "%r not in %r" % (part, message)
    return message


# ---- good lines -------------------------------------------------------------------------------

def test_float_labels_and_default_root(tmp_path):
    path = write_list(tmp_path / "a.lst", [("x/a.jpg", 1), ("b.jpg", 0), ("c.jpg", 3)])
    image_list = read_list(path)
    assert image_list.source == path
    assert image_list.image_root == str(tmp_path)
    assert len(image_list) == 3
    assert image_list.num_label_columns == 1
    first = image_list.entries[0]
    assert (first.line, first.index, first.labels) == (1, 0, (1,))
    assert all(isinstance(v, int) for e in image_list.entries for v in e.labels)
    assert first.path == os.path.join(str(tmp_path), "x/a.jpg")
    assert image_list.where(image_list.entries[2]) == "%s:3" % path


def test_several_label_columns(tmp_path):
    path = write_list(tmp_path / "a.lst", [("a.jpg", [2, 0, 1]), ("b.jpg", [0, 1, MISSING_LABEL])])
    image_list = read_list(path)
    assert image_list.num_label_columns == 3
    assert [e.labels for e in image_list.entries] == [(2, 0, 1), (0, 1, -1)]


def test_absolute_and_relative_paths_with_explicit_root(tmp_path, lst):
    root = tmp_path / "images"
    root.mkdir()
    absolute = str(tmp_path / "elsewhere" / "z.jpg")
    path = lst("0\t1\trel/a.jpg\n1\t0\t%s\n" % absolute)
    image_list = read_list(path, str(root))
    assert image_list.image_root == str(root)
    assert image_list.entries[0].path == os.path.join(str(root), "rel/a.jpg")
    assert image_list.entries[1].path == absolute


def test_integer_labels_missing_label_blank_lines_and_crlf(lst):
    path = lst("\n0\t2\ta.jpg\r\n\n   \n5\t-1\tb c.jpg\r\n\n")
    image_list = read_list(path)
    assert [(e.line, e.index, e.labels) for e in image_list.entries] == [(2, 0, (2,)), (5, 5, (-1,))]
    assert image_list.entries[1].path.endswith("b c.jpg")  # spaces inside a path are fine


def test_utf8_paths_and_byte_order_mark(tmp_path):
    path = write_text(tmp_path / "bom.lst", "\ufeff0\t1\tcafé.jpg\n1\t0\tb.jpg\n".encode("utf-8"), "wb")
    image_list = read_list(path)
    assert image_list.entries[0].index == 0
    assert image_list.entries[0].path.endswith("café.jpg")


# ---- bad lines: each names the file and the line ----------------------------------------------

@pytest.mark.parametrize("text, line, expected", [
    ("0\t1\ta.jpg\n1\tb.jpg\n", 2, ["found 2 column(s)"]),
    ("0\n", 1, ["found 1 column(s)"]),
    ("0\t1\ta.jpg\n1 0 b.jpg\n", 2, ["TABs, not spaces"]),
    ("0\tcat\ta.jpg\n", 1, ["'cat' is not a number"]),
    ("0\tnan\ta.jpg\n", 1, ["'nan' is not a number"]),
    ("0\tinf\ta.jpg\n", 1, ["'inf' is not a number"]),
    ("0\t2.5\ta.jpg\n", 1, ["'2.5' is not a whole number"]),
    ("0\t-2\ta.jpg\n", 1, ["label -2 is negative", "-1"]),
    ("0\t1\t0\ta.jpg\n1\t1\tb.jpg\n", 2, ["1 label column(s), but earlier lines have 2"]),
    ("0\t1\ta.jpg\n1\t1\t0\tb.jpg\n", 2, ["2 label column(s), but earlier lines have 1"]),
    ("x\t1\ta.jpg\n", 1, ["image index", "'x'"]),
    ("inf\t1\ta.jpg\n", 1, ["image index", "'inf'"]),
    ("0\t1\t \n", 1, ["image path (last column) is empty"]),
])
def test_bad_line_names_file_and_line(lst, text, line, expected):
    path = lst(text)
    assert_error(["%s:%d:" % (path, line)] + expected, read_list, path)


def test_space_hint_only_when_spaces(lst):
    message = assert_error(["found 1 column(s)"], read_list, lst("0,1,a.jpg\n"))
    assert "not spaces" not in message


def test_binary_file_is_not_a_list(tmp_path):
    path = write_text(tmp_path / "data.rec", b"0\t1\ta.jpg\n" + bytes(range(128, 256)) + b"\n", "wb")
    assert_error(["%s:2:" % path, "UTF-8", ".rec"], read_list, path)


def test_latin1_path_far_into_the_file_names_its_line(tmp_path):
    lines = ["%d\t1\timages/photo_%05d.jpg\n" % (i, i) for i in range(700)]  # ~20 KB before the bad byte
    data = "".join(lines).encode("utf-8") + "700\t0\tcaf\xe9.jpg\n".encode("latin-1")
    path = write_text(tmp_path / "latin1.lst", data, "wb")
    assert_error(["%s:701:" % path, "not UTF-8"], read_list, path)


def test_empty_list(lst):
    path = lst("\n  \n\n")
    assert_error([path, "no entries"], read_list, path)


def test_missing_list_file(tmp_path):
    path = str(tmp_path / "nope.lst")
    assert_error([path, "does not exist"], read_list, path)
    assert_error(["does not exist"], read_list, None)


def test_missing_image_root(lst, tmp_path):
    path = lst("0\t1\ta.jpg\n")
    root = str(tmp_path / "no_such_folder")
    assert_error([root, path, "not a folder", "--image-train"], read_list, path, root)


# ---- label range and class counts ---------------------------------------------------------------

def test_check_label_range(tmp_path):
    path = write_list(tmp_path / "a.lst", [("a.jpg", [0, 1]), ("b.jpg", [3, -1]), ("c.jpg", [1, 2])])
    image_list = read_list(path)
    check_label_range(image_list, [4, 3])  # -1 is always allowed
    message = assert_error(["%s:3:" % path, "label 2 in column 2", "2 classes (0..1)", "--num-classes"],
                           check_label_range, image_list, [4, 2])
    assert "%s:2:" % path not in message
    assert_error(["%s:2:" % path, "label 3 in column 1"], check_label_range, image_list, [3, 3])


def test_check_label_range_wrong_number_of_counts(tmp_path):
    path = write_list(tmp_path / "a.lst", [("a.jpg", [0, 1])])
    image_list = read_list(path)
    assert_error(["--num-classes gives 1 number(s)", path, "2 label column(s)", "4,4"],
                 check_label_range, image_list, [4])
    assert_error(["gives 3 number(s)"], check_label_range, image_list, [4, 4, 4])


def test_infer_num_classes_over_several_lists(tmp_path):
    train = read_list(write_list(tmp_path / "t.lst", [("a.jpg", [0, 1]), ("b.jpg", [2, -1])]))
    val = read_list(write_list(tmp_path / "v.lst", [("c.jpg", [4, 0])]))
    assert infer_num_classes([train]) == [3, 2]
    assert infer_num_classes([train, val]) == [5, 2]
    unknown = read_list(write_list(tmp_path / "u.lst", [("a.jpg", [1, -1])]))
    assert infer_num_classes([unknown]) == [2, 0]


# ---- duplicates, overlap, dropping ----------------------------------------------------------------

def test_find_duplicates(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write_list(tmp_path / "a.lst", [("a.jpg", 0), ("b.jpg", 1), ("sub/../a.jpg", 2),
                                           (str(tmp_path / "a.jpg"), 0), ("c.jpg", 0)])
    duplicates = find_duplicates(read_list(path))
    assert duplicates == {os.path.realpath(str(tmp_path / "a.jpg")): [1, 3, 4]}
    assert find_duplicates(read_list(write_list(tmp_path / "b.lst", [("a.jpg", 0), ("b.jpg", 0)]))) == {}


def test_find_overlap_across_roots(tmp_path):
    (tmp_path / "val").mkdir()
    train = read_list(write_list(tmp_path / "t.lst", [("a.jpg", 0), ("b.jpg", 1), ("val/x.jpg", 0)]))
    val = read_list(write_list(tmp_path / "val" / "v.lst", [("x.jpg", 0), ("../b.jpg", 1), ("y.jpg", 1)]))
    assert find_overlap(train, val) == sorted(os.path.realpath(str(tmp_path / p)) for p in ("b.jpg", "val/x.jpg"))
    other = read_list(write_list(tmp_path / "o.lst", [("z.jpg", 0)]))
    assert find_overlap(train, other) == []


def test_drop_entries(tmp_path):
    image_list = read_list(write_list(tmp_path / "a.lst", [("a.jpg", 0), ("b.jpg", 1), ("c.jpg", 2)]))
    assert drop_entries(image_list, set()) is image_list
    kept = drop_entries(image_list, {2})
    assert [e.line for e in kept.entries] == [1, 3]
    assert len(image_list) == 3


def test_old_mac_line_endings(lst):
    image_list = read_list(lst("0\t1\ta.jpg\r1\t0\tb.jpg\r"))
    assert [(e.line, e.labels) for e in image_list.entries] == [(1, (1,)), (2, (0,))]


# ---- the compact list: parsing in blocks, views, many lines ---------------------------------------

def test_folder_given_as_list_says_so(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    message = assert_error([str(folder), "is a folder", ".lst", "multitask-mx make-list"], read_list, str(folder))
    assert "does not exist" not in message


@pytest.mark.parametrize("block", [5, 7, 64, 1 << 22])
def test_blocks_split_lines_as_text_mode_does(tmp_path, monkeypatch, block):
    # Line ends of every kind, a BOM, blank lines and a last line without an end, read in blocks
    # that cut anywhere (also between \r and \n): the same entries as Python's text mode gives.
    import multitask_mx.data.lst_format as lst_format
    text = "\ufeff0\t1\ta.jpg\r\n\r\n1\t2\tcafé b.jpg\r2\t-1\tc.jpg\n   \n\n3\t0.000000\td/e.jpg\r\r4\t1\tf.jpg"
    path = write_text(tmp_path / "mixed.lst", text.encode("utf-8"), "wb")
    with open(path, encoding="utf-8-sig") as f:
        expected = [(n, line.rstrip("\n").split("\t")) for n, line in enumerate(f, start=1) if line.strip()]
    monkeypatch.setattr(lst_format, "_BLOCK", block)
    image_list = read_list(path)
    assert [e.line for e in image_list.entries] == [n for n, _ in expected] == [1, 3, 4, 7, 9]
    assert [e.path for e in image_list.entries] == [os.path.join(str(tmp_path), p[-1]) for _, p in expected]
    assert image_list.labels.tolist() == [[1], [2], [-1], [0], [1]]


def test_bad_bytes_and_bad_labels_in_a_later_block_name_their_line(tmp_path, monkeypatch):
    import multitask_mx.data.lst_format as lst_format
    monkeypatch.setattr(lst_format, "_BLOCK", 64)
    good = "".join("%d\t1.000000\timg_%d.jpg\n" % (i, i) for i in range(40))
    path = write_text(tmp_path / "a.lst", good.encode() + b"40\t1\tcaf\xe9.jpg\n", "wb")
    assert_error(["%s:41:" % path, "not UTF-8"], read_list, path)
    path = write_text(tmp_path / "b.lst", good + "40\t1.5\tx.jpg\n41\t1.000000\ty.jpg\n")
    assert_error(["%s:41:" % path, "'1.5' is not a whole number"], read_list, path)
    path = write_text(tmp_path / "c.lst", good + "40\t1.000000\t2\tx.jpg\n")
    assert_error(["%s:41:" % path, "2 label column(s), but earlier lines have 1"], read_list, path)


def test_entries_view_take_and_skipped(tmp_path):
    path = write_list(tmp_path / "a.lst", [("%d.jpg" % i, [i % 3, i % 2]) for i in range(6)])
    image_list = read_list(path)
    entries = image_list.entries
    assert len(entries) == 6 and entries[-1] == entries[5] and entries[5].labels == (2, 1)
    assert [e.index for e in entries[1:4]] == [1, 2, 3]
    with pytest.raises(IndexError):
        entries[6]
    part = image_list.take([4, 0, 4])
    assert part.lines.tolist() == [5, 1, 5] and part.path_at(0) == os.path.join(str(tmp_path), "4.jpg")
    assert part.where_at(1) == "%s:1" % path
    kept = drop_entries(drop_entries(image_list, {2}), {3, 4})
    assert kept.lines.tolist() == [1, 5, 6] and kept.skipped == 3 and image_list.skipped == 0
    assert kept.take(slice(0, 2)).skipped == 3


def test_a_line_repeated_by_shard_padding_is_not_a_duplicate(tmp_path):
    path = write_list(tmp_path / "a.lst", [("a.jpg", 0), ("b.jpg", 1), ("a.jpg", 0)])
    image_list = read_list(path)
    assert find_duplicates(image_list.take([0, 1, 0, 1])) == {}  # the same lines twice: padding
    assert find_duplicates(image_list.take([0, 2])) == {os.path.realpath(str(tmp_path / "a.jpg")): [1, 3]}


def test_duplicates_through_a_symlinked_file_and_folder(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.jpg").write_bytes(b"x")
    os.symlink(str(tmp_path / "real"), str(tmp_path / "linked"))
    os.symlink("a.jpg", str(tmp_path / "real" / "alias.jpg"))
    path = write_list(tmp_path / "a.lst", [("real/a.jpg", 0), ("linked/a.jpg", 1), ("real/alias.jpg", 0),
                                           ("real/b.jpg", 0)])
    assert find_duplicates(read_list(path)) == {str(tmp_path.resolve() / "real" / "a.jpg"): [1, 2, 3]}


def test_a_long_list_is_read_into_arrays(tmp_path):
    count = 100000
    with open(tmp_path / "long.lst", "w") as f:
        f.writelines("%d\t%f\t%f\tfolder_%d/%07d.jpg\n" % (i, i % 7, i % 3, i // 1000, i) for i in range(count))
    image_list = read_list(str(tmp_path / "long.lst"))
    assert len(image_list) == count and image_list.labels.shape == (count, 2)
    assert image_list.labels[:5].tolist() == [[0, 0], [1, 1], [2, 2], [3, 0], [4, 1]]
    assert image_list.lines[-1] == count and image_list.indices[-1] == count - 1
    assert image_list.path_at(count - 1).endswith("folder_99/0099999.jpg")
    assert infer_num_classes([image_list]) == [7, 3]
    assert image_list.labels.nbytes + image_list.lines.nbytes < 4 * 8 * count  # arrays, not objects


def test_symlinked_file_in_a_big_folder_of_which_few_are_listed(tmp_path):
    # 300 files, 2 listed: the folder is not read, each listed file is looked at on its own
    for i in range(300):
        (tmp_path / ("%03d.jpg" % i)).write_bytes(b"x")
    os.symlink("007.jpg", str(tmp_path / "alias.jpg"))
    path = write_list(tmp_path / "a.lst", [("007.jpg", 0), ("alias.jpg", 0)])
    assert find_duplicates(read_list(path)) == {str(tmp_path.resolve() / "007.jpg"): [1, 2]}

"""tasks: direct and derived tasks, their labels, histograms, serialisation and class names."""
import json

import numpy as np
import pytest

from multitask_mx.errors import UserInputError
from multitask_mx.data.lists import read_list
from multitask_mx.data.tasks import (Task, build_tasks, class_histograms, parse_derived_task, parse_num_classes,
    read_class_names, task_labels)

from conftest import write_list


def labels_of(tasks, column_values):
    """Each task's label for each row of column values, as a list of lists."""
    return [task_labels(tasks, row).tolist() for row in column_values]


def write_map(path, text):
    path.write_text(text)
    return str(path)


# ---- defaults and derived expressions ------------------------------------------------------------

def test_default_tasks_for_one_column():
    tasks = build_tasks([4])
    assert [t.name for t in tasks] == ["label", "label_gt0"]
    assert [t.num_classes for t in tasks] == [4, 2]
    assert [t.column for t in tasks] == [0, 0]
    assert tasks[0].derive is None
    assert labels_of(tasks, [(0,), (1,), (2,), (3,), (-1,)]) == [[0, 0], [1, 1], [2, 1], [3, 1], [-1, -1]]
    assert task_labels(tasks, (2,)).dtype == np.int32


def test_no_derived_task_and_several_columns():
    assert [t.name for t in build_tasks([4], derived=[])] == ["label"]
    tasks = build_tasks([4, 3])
    assert [(t.name, t.num_classes, t.column) for t in tasks] == [("label1", 4, 0), ("label2", 3, 1)]
    named = build_tasks([4, 3], task_names=["animal", "place"])
    assert [t.name for t in named] == ["animal", "place"]


def test_default_derived_task_follows_task_name():
    tasks = build_tasks([3], task_names=["kind"])
    assert [t.name for t in tasks] == ["kind", "kind_gt0"]


@pytest.mark.parametrize("expression, expected", [
    ("x=label>=2", [0, 0, 1, 1, 1, -1]),
    ("x=label<2", [1, 1, 0, 0, 0, -1]),
    ("x=label==3", [0, 0, 0, 1, 0, -1]),
    ("x=label!=0", [0, 1, 1, 1, 1, -1]),
    ("x = label > 0", [0, 1, 1, 1, 1, -1]),
    ("x=label in {1,3}", [0, 1, 0, 1, 0, -1]),
    ("x=label in { 1 , 3 , 4 }", [0, 1, 0, 1, 1, -1]),
    ("x=label not in {0}", [0, 1, 1, 1, 1, -1]),
])
def test_derived_comparisons_and_sets(expression, expected):
    tasks = build_tasks([5], derived=[expression])
    assert [t.name for t in tasks] == ["label", "x"]
    assert tasks[1].num_classes == 2
    rows = [(v,) for v in (0, 1, 2, 3, 4, -1)]
    assert [r[1] for r in labels_of(tasks, rows)] == expected
    assert tasks[1].expression == expression.split("=", 1)[1].strip()


def test_derived_mapping_file(tmp_path):
    path = write_map(tmp_path / "groups.txt", "# source derived\n0 0\n1 1  # cats\n2, 1\n\n3 2\n")
    task = build_tasks([5], derived=["group=map:%s" % path])[1]
    assert (task.name, task.num_classes, task.column) == ("group", 3, 0)
    assert task.derive == ("map", {0: 0, 1: 1, 2: 1, 3: 2})
    # class 4 is not in the map: unknown for this task, as is a missing label
    assert [task.label_from(v) for v in (0, 1, 2, 3, 4, -1)] == [0, 1, 1, 2, -1, -1]


def test_derived_task_on_second_column(tmp_path):
    image_list = read_list(write_list(tmp_path / "a.lst",
                                      [("a.jpg", [0, 0]), ("b.jpg", [1, 2]), ("c.jpg", [3, -1])]))
    tasks = build_tasks([4, 3], derived=["x=label2>0"])
    assert [(t.name, t.column) for t in tasks] == [("label1", 0), ("label2", 1), ("x", 1)]
    rows = [e.labels for e in image_list.entries]
    assert labels_of(tasks, rows) == [[0, 0, 0], [1, 2, 1], [3, -1, -1]]
    mapped = parse_derived_task("y=label2:map:%s" % write_map(tmp_path / "m.txt", "0 1\n2 0\n"),
                                ["label1", "label2"], [4, 3])
    assert mapped.column == 1 and mapped.derive == ("map", {0: 1, 2: 0})


# ---- bad expressions name the flag or the file ----------------------------------------------------

@pytest.mark.parametrize("expression, expected", [
    ("label>0", "expected NAME=EXPRESSION"),
    ("=label>0", "expected NAME=EXPRESSION"),
    ("x==label>0", "single '='"),
    ("my task=label>0", "must be letters"),
    ("x=colour>0", "no label column named 'colour'; the columns are label"),
    ("x=label >> 0", "cannot parse"),
    ("x=label in {a}", "cannot parse"),
    ("x=label in 1,2", "cannot parse"),
    ("x=", "cannot parse"),
    ("x=label>0.5", "cannot parse"),
])
def test_bad_expression(expression, expected):
    with pytest.raises(UserInputError) as info:
        build_tasks([4], derived=[expression])
    message = str(info.value)
    assert "--derived-task %r" % expression in message
    assert expected in message


def test_unknown_column_lists_the_columns():
    with pytest.raises(UserInputError, match="label1, label2"):
        build_tasks([4, 3], derived=["x=label3>0"])


def test_missing_map_file(tmp_path):
    path = str(tmp_path / "nope.txt")
    with pytest.raises(UserInputError) as info:
        build_tasks([4], derived=["g=map:%s" % path])
    assert "--derived-task" in str(info.value) and path in str(info.value)
    assert "does not exist" in str(info.value)


@pytest.mark.parametrize("text, line", [("0 1\n1\n", 2), ("0 1\n1 2 3\n", 2), ("a b\n", 1),
                                        ("0 1\n\n# x\n2 1.5\n", 4)])
def test_bad_map_line_names_file_and_line(tmp_path, text, line):
    path = write_map(tmp_path / "groups.txt", text)
    with pytest.raises(UserInputError, match="two integers") as info:
        build_tasks([4], derived=["g=map:%s" % path])
    assert "%s:%d:" % (path, line) in str(info.value)


def test_empty_or_negative_map(tmp_path):
    empty = write_map(tmp_path / "empty.txt", "# nothing\n\n")
    with pytest.raises(UserInputError, match="empty") as info:
        build_tasks([4], derived=["g=map:%s" % empty])
    assert empty in str(info.value)
    negative = write_map(tmp_path / "neg.txt", "0 0\n1 -1\n")
    with pytest.raises(UserInputError, match="0 or more"):
        build_tasks([4], derived=["g=map:%s" % negative])
    single = write_map(tmp_path / "one.txt", "0 0\n1 0\n")
    with pytest.raises(UserInputError, match="at least 2|nothing to learn"):
        build_tasks([4], derived=["g=map:%s" % single])


def test_duplicate_task_names():
    with pytest.raises(UserInputError, match="two tasks are named 'label'"):
        build_tasks([4], derived=["label=label>0"])
    with pytest.raises(UserInputError, match="two tasks are named 'x'"):
        build_tasks([4], derived=["x=label>0", "x=label>1"])
    with pytest.raises(UserInputError, match="two tasks are named 'a'"):
        build_tasks([4, 3], task_names=["a", "a"])


def test_task_names_count_and_class_counts():
    with pytest.raises(UserInputError, match="--task-names gives 1 name"):
        build_tasks([4, 3], task_names=["a"])
    with pytest.raises(UserInputError, match="at least 2"):
        build_tasks([1], derived=[])


# ---- histograms and serialisation ------------------------------------------------------------------

def test_class_histograms():
    tasks = build_tasks([3])
    rows = [(0,), (1,), (1,), (2,), (-1,), (0,), (1,)]
    assert class_histograms(tasks, rows) == {
        "label": {"counts": [2, 3, 1], "missing": 1},
        "label_gt0": {"counts": [2, 4], "missing": 1},
    }
    sparse = class_histograms(build_tasks([4, 2], derived=[]), [(3, -1), (3, 1)])
    assert sparse == {"label1": {"counts": [0, 0, 0, 2], "missing": 0},
                      "label2": {"counts": [0, 1], "missing": 1}}
    assert class_histograms(tasks, []) == {"label": {"counts": [0, 0, 0], "missing": 0},
                                           "label_gt0": {"counts": [0, 0], "missing": 0}}


def test_to_dict_from_dict_round_trip(tmp_path):
    path = write_map(tmp_path / "groups.txt", "0 0\n1 1\n2 1\n")
    tasks = build_tasks([3, 4], derived=["a=label1>=1", "b=label2 in {1,3}", "c=label2 not in {0, 2}",
                                         "d=label2:map:%s" % path])
    assert [t.derive[0] if t.derive else None for t in tasks] == [None, None, "compare", "in", "in", "map"]
    for task in tasks:
        data = json.loads(json.dumps(task.to_dict()))  # as written to config.json
        back = Task.from_dict(data)
        assert back == task
        for value in (-1, 0, 1, 2, 3):
            assert back.label_from(value) == task.label_from(value)


# ---- class names and --num-classes ------------------------------------------------------------------

def test_read_class_names(tmp_path):
    tasks = build_tasks([3], derived=["x=label>0", "g=map:%s" % write_map(tmp_path / "m.txt", "0 0\n1 1\n2 2\n")])
    names_file = tmp_path / "names.txt"
    names_file.write_text("cat\n\ndog\nbird\n")
    assert read_class_names(tasks, None) == {"label": ["0", "1", "2"], "x": ["no", "yes"], "g": ["0", "1", "2"]}
    assert read_class_names(tasks, "%s,," % names_file)["label"] == ["cat", "dog", "bird"]
    assert read_class_names(tasks, ",,%s" % names_file)["g"] == ["cat", "dog", "bird"]


def test_read_class_names_bad(tmp_path):
    tasks = build_tasks([3])
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(UserInputError, match="does not exist") as info:
        read_class_names(tasks, missing)
    assert missing in str(info.value)
    short = tmp_path / "short.txt"
    short.write_text("cat\ndog\n")
    with pytest.raises(UserInputError, match="2 name\\(s\\) for task label, which has 3 classes") as info:
        read_class_names(tasks, str(short))
    assert str(short) in str(info.value)


@pytest.mark.parametrize("text, expected", [(None, None), ("4", [4]), ("4,2", [4, 2]), (" 4, 2 ", [4, 2]),
                                            (7, [7])])
def test_parse_num_classes(text, expected):
    assert parse_num_classes(text) == expected


@pytest.mark.parametrize("text", ["", "four", "4,x", "0", "4,-1", "4.5", ","])
def test_parse_num_classes_bad(text):
    with pytest.raises(UserInputError, match="--num-classes"):
        parse_num_classes(text)


def test_derived_task_that_never_varies_is_refused():
    with pytest.raises(UserInputError, match="always 0, so there is nothing to learn"):
        build_tasks([4], derived=["x=label>7"])
    with pytest.raises(UserInputError, match="always 1"):
        build_tasks([4], derived=["x=label>=0"])

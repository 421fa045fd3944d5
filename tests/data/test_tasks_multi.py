"""Several tasks: label columns, derived labels in the data path, class names, metrics, bad task input.

Bad input is checked through the real `train` parser and the functions `train` runs
before any network is built (resolve_tasks, read_class_names, build_loss), so each
error is the one a user sees; test_cli_tasks.py checks a few through the CLI itself.
"""
import logging

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from multitask_mx.training.config import TrainConfig
from conftest import make_images, write_list
from multitask_mx.model import network as model
from multitask_mx.data import tasks
from multitask_mx.cli import build_parser
from multitask_mx.training import inputs as train_cmd, prepare as train_prepare
from multitask_mx.data.datasets import LstDataset
from multitask_mx.errors import UserInputError
from multitask_mx.data.lists import read_list
from multitask_mx.training.metrics import TaskMetrics, summarise


def identity(img):
    return img


def write_names(tmp_path, text, name="classes.txt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---- derived labels in the data path match hand-computed ones -------------------------------------

def test_derived_tasks_in_the_dataset_match_hand_computed_labels(tmp_path):
    rows = [("a.jpg", [0, 1]), ("b.jpg", [1, -1]), ("c.jpg", [2, 0]), ("d.jpg", [3, 2]), ("e.jpg", [-1, 1])]
    image_list = read_list(write_list(tmp_path / "two.lst", rows))
    groups = tmp_path / "groups.txt"
    groups.write_text("0 0\n1 1\n2 1\n")  # class 3 is in no group: unknown for that task
    built = tasks.build_tasks([4, 3], ["animal", "place"],
                              ["pet=animal>0", "big=animal in {2,3}", "outdoor=place not in {0}",
                               "grp=animal:map:%s" % groups])
    dataset = LstDataset(image_list, built, identity)
    got = np.stack([dataset._labels[i] for i in range(len(rows))]).tolist()
    # columns: animal, place, pet (animal>0), big (animal in {2,3}), outdoor (place not in {0}), grp (map)
    assert got == [[0, 1, 0, 0, 1, 0],
                   [1, -1, 1, 0, -1, 1],
                   [2, 0, 1, 1, 0, 1],
                   [3, 2, 1, 1, 1, -1],
                   [-1, 1, -1, -1, 1, -1]]


def test_default_reproduces_the_original_label_gt0():
    # multi-task-MXNet's second output is `label > 0` on the one label column, nothing else
    built = tasks.build_tasks([4])
    assert [(t.name, t.num_classes, t.column, t.derive) for t in built] == [
        ("label", 4, 0, None), ("label_gt0", 2, 0, ("compare", ">", 0))]
    assert [tasks.task_labels(built, (c,)).tolist() for c in range(4)] == [[c, int(c > 0)] for c in range(4)]


# ---- class names: one file per task, or one file with sections ------------------------------------

def test_classes_file_with_sections(tmp_path):
    built = tasks.build_tasks([3, 2], ["animal", "place"], ["pet=animal>0"])
    path = write_names(tmp_path, "[animal]\ncat\ndog\n\nbird\n[ place ]\nindoor\noutdoor\n")
    assert tasks.read_class_names(built, path) == {
        "animal": ["cat", "dog", "bird"], "place": ["indoor", "outdoor"], "pet": ["no", "yes"]}
    # a sectioned file and a plain file for the task at the plain file's position
    extra = write_names(tmp_path, "not a pet\npet\n", "pet.txt")
    names = tasks.read_class_names(built, "%s,,%s" % (path, extra))
    assert names["pet"] == ["not a pet", "pet"] and names["animal"] == ["cat", "dog", "bird"]


@pytest.mark.parametrize("text, flag, expected", [
    ("[animal]\ncat\ndog\nbird\n[colour]\nred\n", "{p}", "{p}:5: section [colour] names no task; the tasks are "
                                                         "animal, place"),
    ("[animal]\ncat\ndog\nbird\n[animal]\nx\n", "{p}", "{p}:5: a second [animal] section"),
    ("[animal]\ncat\ndog\n", "{p}", "--classes {p} [animal]: 2 name(s) for task animal, which has 3 classes"),
    ("a\nb\nc\n", "{p},{p},{p}", "3 file(s) for 2 task(s)"),
    ("[animal]\ncat\ndog\nbird\n", "{p},{p}", "task animal is named by both"),
])
def test_classes_file_errors_name_file_and_line(tmp_path, text, flag, expected):
    built = tasks.build_tasks([3, 2], ["animal", "place"])
    path = write_names(tmp_path, text)
    with pytest.raises(UserInputError) as info:
        tasks.read_class_names(built, flag.format(p=path))
    assert expected.format(p=path) in str(info.value)


# ---- agreement matrices ----------------------------------------------------------------------------

def test_derivation_matrices_and_agreement_pairs(tmp_path):
    groups = tmp_path / "g.txt"
    groups.write_text("0 1\n1 0\n2 1\n")
    built = tasks.build_tasks([4, 2], derived=["gt0=label1>0", "mid=label1 in {1,2}",
                                               "g=label1:map:%s" % groups, "p=label2==1"])
    pairs = tasks.agreement_pairs(built)
    assert [(d, s) for d, s, _ in pairs] == [(2, 0), (3, 0), (4, 0), (5, 1)]
    gt0, mid, grp, p = (m.tolist() for _, _, m in pairs)
    assert gt0 == [[1, 0], [0, 1], [0, 1], [0, 1]]      # p(no) = p(0), p(yes) = 1 - p(0)
    assert mid == [[1, 0], [0, 1], [0, 1], [1, 0]]
    assert grp == [[0, 1], [1, 0], [0, 1], [0, 0]]      # class 3 is in no group
    assert p == [[1, 0], [0, 1]]


def test_agreement_and_top_k_on_hand_made_logits():
    built = tasks.build_tasks([4])
    metrics = TaskMetrics.for_tasks(built, [mx.cpu()], top_k=2)
    assert metrics.topk_tasks == [0]  # label_gt0 has 2 classes, not more than k
    source = mx.nd.array([[5, 1, 0, 0],    # p(0) high -> "no"; derived head says no: agrees
                          [0, 5, 4, 0],    # -> "yes"; derived says yes: agrees
                          [5, 0, 0, 4],    # p(0) = 0.72 -> "no"; derived says yes: disagrees
                          [0, 0, 1, 5]])   # masked out for label_gt0
    derived = mx.nd.array([[1, 0], [0, 1], [0, 1], [1, 0]])
    labels = [mx.nd.array([0, 2, 3, 3]), mx.nd.array([0, 1, 1, 0])]
    masks = [mx.nd.array([1, 1, 1, 1]), mx.nd.array([1, 1, 1, 0])]
    losses = [mx.nd.array([1, 1, 1, 1]), mx.nd.array([2, 2, 2, 0])]
    metrics.update(0, [source, derived], labels, masks, losses)
    values = metrics.values()
    assert values["label"] == {"loss": 1.0, "acc": 0.5, "count": 4, "topk": 1.0}
    assert values["label_gt0"] == {"loss": 2.0, "acc": 1.0, "count": 3}
    assert metrics.agreement() == {"label_gt0": pytest.approx(2 / 3)}
    assert "topk 1.0000" in summarise(values)
    metrics.reset()
    assert metrics.values()["label"]["count"] == 0 and np.isnan(metrics.agreement()["label_gt0"])


def test_top_k_must_be_positive():
    with pytest.raises(UserInputError, match="--top-k 0"):
        TaskMetrics.for_tasks(tasks.build_tasks([4]), [mx.cpu()], top_k=0)


def test_head_hidden_adds_a_hidden_layer_per_head():
    built = tasks.build_tasks([4, 3], ["a", "b"])
    net = model.build_net(model.TrunkSpec("resnet18_v1"), built, [mx.cpu()], (3, 32, 32), head_hidden=8,
                          dropout=0.5)
    shapes = {n.split("head_", 1)[1]: p.shape for n, p in net.collect_params().items() if "head_" in n}
    assert shapes == {"a_dense0_weight": (8, 512), "a_dense0_bias": (8,), "a_dense1_weight": (4, 8),
                      "a_dense1_bias": (4,), "b_dense0_weight": (8, 512), "b_dense0_bias": (8,),
                      "b_dense1_weight": (3, 8), "b_dense1_bias": (3,)}
    assert [type(layer).__name__ for layer in net.heads[0]] == ["Dense", "Dropout", "Dense"]
    plain = model.build_net(model.TrunkSpec("resnet18_v1"), built, [mx.cpu()], (3, 32, 32))
    assert [type(layer).__name__ for layer in plain.heads[1]] == ["Dense"]


# ---- bad input stops before training, naming the file, line or flag --------------------------------

@pytest.fixture
def lists(tmp_path):
    """A two-column training list and validation list of real tiny images."""
    root = tmp_path / "images"
    items = make_images(str(root), 2, seed=1)
    rows = [(rel, [label, label % 2]) for rel, label in items]
    return {"root": str(root), "tmp": tmp_path,
            "train": write_list(tmp_path / "train.lst", rows),
            "val": write_list(tmp_path / "val.lst", rows[:4], start_index=100)}


def prepare(lists, *flags, train_rows=None):
    """Parse `train` flags and run what train does before building a network; returns (tasks, loss)."""
    if train_rows is not None:
        write_list(lists["train"], train_rows)
    args = build_parser().parse_args(["train", "--data-train", lists["train"], "--image-train", lists["root"],
                                      "--data-val", lists["val"], "--image-val", lists["root"],
                                      "--save-result", str(lists["tmp"] / "save")] + list(flags))
    config = TrainConfig.from_args(args)
    data = config.data
    train_list, val_list = read_list(data.data_train, data.image_train), read_list(data.data_val, data.image_val)
    built = train_cmd.resolve_tasks(data, train_list, val_list)
    tasks.read_class_names(built, data.classes)
    return built, train_prepare.build_loss(config, built, train_list, [mx.cpu()])


def test_two_columns_give_two_tasks_and_inferred_classes(lists, caplog):
    caplog.set_level(logging.INFO, logger="multitask_mx")
    built, loss = prepare(lists, "--task-names", "shape,odd", "--loss-weights", "1,0.5")
    assert [(t.name, t.num_classes, t.column) for t in built] == [("shape", 4, 0), ("odd", 2, 1)]
    assert "inferred 4,2 from the lists" in caplog.text
    assert loss.weighting.current() == {"shape": 1.0, "odd": 0.5}


@pytest.mark.parametrize("flags, expected", [
    (["--loss-weights", "1,0.5,2"], "--loss-weights '1,0.5,2' gives 3 weight(s) for 2 task(s) (label1, label2"),
    (["--loss-weights", "1"], "gives 1 weight(s) for 2 task(s)"),
    (["--loss-weights", "1,x"], "--loss-weights '1,x': expected numbers"),
    (["--loss-weights", "0,0"], "every weight is 0"),
    (["--derived-task", "x=colour>0"], "--derived-task 'x=colour>0': no label column named 'colour'; the columns "
                                       "are label1, label2"),
    (["--derived-task", "x=label1 >> 1"], "--derived-task 'x=label1 >> 1': cannot parse"),
    (["--num-classes", "4,1"], "train.lst:3: label 1 in column 2 is out of range for 1 classes"),
    (["--num-classes", "3,2"], "train.lst:7: label 3 in column 1 is out of range for 3 classes"),
    (["--num-classes", "4"], "--num-classes gives 1 number(s) but"),
    (["--dwa-temperature", "0", "--loss-weighting", "dwa"], "--dwa-temperature 0"),
    (["--class-weights", "nope.txt"], "--class-weights 'nope.txt': not 'auto' and not a file"),
])
def test_bad_task_flags(lists, flags, expected):
    with pytest.raises(UserInputError) as info:
        prepare(lists, *flags)
    assert expected in str(info.value)


def test_a_task_with_every_label_missing_is_refused(lists):
    rows = [("circle/a.jpg", [1, -1]), ("square/b.jpg", [2, -1])]
    for flags in ([], ["--num-classes", "4,2"]):  # inferred (would be 0 classes) or given
        with pytest.raises(UserInputError) as info:
            prepare(lists, *flags, train_rows=rows)
        message = str(info.value)
        assert lists["train"] in message and "label2" in message and "nothing to learn" in message
    groups = lists["tmp"] / "g.txt"
    groups.write_text("0 0\n3 1\n")  # the training list has only classes 1 and 2
    with pytest.raises(UserInputError, match="task g .*= label1:map:.* has no known label on any line"):
        prepare(lists, "--num-classes", "4,2", "--derived-task", "g=label1:map:%s" % groups,
                train_rows=[("circle/a.jpg", [1, 0]), ("square/b.jpg", [2, 1])])


def test_column_count_differing_between_lines_names_the_line(lists):
    with open(lists["train"], "a") as f:
        f.write("99\t1.000000\tcircle/x.jpg\n")
    with pytest.raises(UserInputError, match=r"train.lst:9: 1 label column\(s\), but earlier lines have 2"):
        prepare(lists)


def test_class_weights_file(lists):
    path = lists["tmp"] / "cw.txt"
    path.write_text("# weights per class\nlabel2: 1, 3\n")
    _, loss = prepare(lists, "--class-weights", str(path))
    assert loss.class_weights[0] is None and loss.class_weights[1].tolist() == [1.0, 3.0]
    path.write_text("label2: 1 2 3\n")
    with pytest.raises(UserInputError, match="cw.txt:1: task label2 needs 2 class weights"):
        prepare(lists, "--class-weights", str(path))
    path.write_text("colour: 1 2\n")
    with pytest.raises(UserInputError, match="cw.txt:1: expected 'TASK: w0 w1 ...' with TASK one of label1, label2"):
        prepare(lists, "--class-weights", str(path))

"""Several tasks end to end through the real CLI: a two-column list with unknown labels, derived tasks,
learned and dynamic loss weights, top-k, agreement, and the bad task input of issue 4."""
import json
import os

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from conftest import make_images, run_cli, write_list

pytestmark = pytest.mark.slow

SMALL = ["--network", "resnet18_v1", "--image-shape", "3,32,32", "--batch-size", "8", "--lr", "0.05",
         "--data-nthreads", "1", "--quiet", "--seed", "1"]
CLASSES = "[shape]\nbackground\ncircle\nsquare\ntriangle\n[odd]\neven\nodd\n"


def two_column_rows(items):
    """Column 1 the shape, column 2 'odd shape class', unknown (-1) for every third image."""
    return [(rel, [label, -1 if i % 3 == 2 else label % 2]) for i, (rel, label) in enumerate(items)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tasks")
    root = str(tmp / "images")
    classes = tmp / "classes.txt"
    classes.write_text(CLASSES)
    return {"root": root, "tmp": tmp, "classes": str(classes),
            "train": write_list(tmp / "train.lst", two_column_rows(make_images(root, 4, seed=1))),
            "val": write_list(tmp / "val.lst", two_column_rows(make_images(root, 2, seed=2)), start_index=100)}


def train_args(data, save, *extra, val=True):
    args = ["train", "--data-train", data["train"], "--image-train", data["root"],
            "--save-result", save, "--save-name", "net"] + SMALL + list(extra)
    if val:
        args += ["--data-val", data["val"], "--image-val", data["root"]]
    return args


def head_arrays(params_file, task):
    return {k: v.asnumpy() for k, v in mx.nd.load(params_file).items() if "head_%s_" % task in k}


@pytest.fixture(scope="module")
def run(data):
    """Two columns + a derived task, uncertainty weighting, class weights, top-2, hidden heads: 1 epoch, then
    --resume for a second one."""
    save = str(data["tmp"] / "save")
    flags = ["--task-names", "shape,odd", "--classes", data["classes"], "--derived-task", "has_shape=shape>0",
             "--loss-weighting", "uncertainty", "--class-weights", "auto", "--top-k", "2", "--head-hidden", "8",
             "--best-metric", "val-acc:odd"]
    run_cli(*train_args(data, save, "--num-epoch", "1", *flags))
    run_cli(*train_args(data, save, "--num-epoch", "2", "--resume", *flags))
    return {"save": save, "history": json.load(open(os.path.join(save, "history.json"))),
            "config": json.load(open(os.path.join(save, "config.json"))),
            "log": open(os.path.join(save, "train.log")).read()}


def test_two_column_list_trains_every_head(run):
    save = run["save"]
    config = run["config"]
    assert [(t["name"], t["num_classes"], t["column"]) for t in config["tasks"]] == [
        ("shape", 4, 0), ("odd", 2, 1), ("has_shape", 2, 0)]
    assert config["classes"]["odd"] == ["even", "odd"] and config["classes"]["shape"][3] == "triangle"
    assert config["head_hidden"] == 8
    for task in ("shape", "odd", "has_shape"):
        first, second = head_arrays(save + "/net-0001.params", task), head_arrays(save + "/net-0002.params", task)
        assert len(first) == 4  # hidden and output Dense, weight and bias
        assert any(not np.array_equal(first[k], second[k]) for k in first), task
    assert "--num-classes not given: inferred 4,2 from the lists" in run["log"]
    assert "preflight train odd: class counts [5, 6], 5 unknown" in run["log"]


def test_history_holds_counts_topk_weights_and_agreement(run):
    history = run["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:
        train, val = record["train"], record["val"]
        assert (train["shape"]["count"], train["odd"]["count"], train["has_shape"]["count"]) == (16, 11, 16)
        assert (val["shape"]["count"], val["odd"]["count"]) == (8, 6)  # unknown labels are not scored
        assert "topk" in train["shape"] and "topk" not in train["odd"]
        assert set(record["loss_weights"]) == {"shape", "odd", "has_shape"}
        assert all(np.isfinite(v) and v > 0 for v in record["loss_weights"].values())
        assert set(record["agreement"]) == {"has_shape"} and 0 <= record["agreement"]["has_shape"] <= 1
    # the learned log-variances move (from 0), and --resume continues from epoch 1's
    first, second = history[0]["log_variance"], history[1]["log_variance"]
    assert all(v != 0 for v in first.values()) and first != second
    assert "loss log-variances restored from epoch 1: shape %.4f" % first["shape"] in run["log"]
    assert "Loss weights (uncertainty): shape" in run["log"]
    assert "Validation agreement of derived heads with their source heads: has_shape" in run["log"]
    best = json.load(open(os.path.join(run["save"], "best.json")))
    assert best["metric"] == "val-acc:odd"


def test_dwa_weights_follow_the_loss_ratios(data, tmp_path):
    save = str(tmp_path / "dwa")
    run_cli(*train_args(data, save, "--num-epoch", "3", "--no-derived-task", "--loss-weighting", "dwa",
                        "--loss-weights", "1,0.5", "--dwa-temperature", "2", "--batch-size", "16", val=False))
    history = json.load(open(os.path.join(save, "history.json")))
    assert [r["loss_weights"] for r in history[:2]] == [{"label1": 1.0, "label2": 0.5}] * 2
    ratios = np.array([history[1]["train"][t]["loss"] / history[0]["train"][t]["loss"] for t in ("label1", "label2")])
    factors = 2 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    np.testing.assert_allclose([history[2]["loss_weights"][t] for t in ("label1", "label2")],
                               factors * [1.0, 0.5], rtol=1e-6)
    assert "agreement" not in history[0]  # no derived task, no validation


@pytest.mark.parametrize("change, flags, fragments", [
    (None, ["--loss-weights", "1,2,3"], ["--loss-weights '1,2,3' gives 3 weight(s) for 2 task(s)"]),
    ("9\t1.000000\t7.000000\tcircle/x.jpg\n", ["--num-classes", "4,2"],
     ["train.lst:17: label 7 in column 2 is out of range for 2 classes"]),
    ("9\t1.000000\tcircle/x.jpg\n", [], ["train.lst:17: 1 label column(s), but earlier lines have 2"]),
    (None, ["--derived-task", "x=colour>0"], ["--derived-task 'x=colour>0': no label column named 'colour'"]),
    ("all-missing", [], ["every label of column 2 (task label2) is -1", "train.lst"]),
])
def test_bad_task_input_stops_before_training(data, tmp_path, change, flags, fragments):
    train = str(tmp_path / "train.lst")
    text = open(data["train"]).read()
    if change == "all-missing":  # every label of column 2 unknown
        fields = [line.split("\t") for line in text.splitlines(True)]
        text = "".join("\t".join(f[:2] + ["-1.000000"] + f[3:]) for f in fields)
    elif change is not None:
        text += change
    with open(train, "w") as f:
        f.write(text)
    save = str(tmp_path / "save")
    proc = run_cli(*train_args(dict(data, train=train), save, "--num-epoch", "1", *flags), expect=2)
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
    assert not os.path.exists(os.path.join(save, "net-0001.params"))

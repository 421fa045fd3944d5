"""Task kinds (regress, multilabel:K) beside softmax tasks: reading, loss masking, metrics, and end to end
through the CLI on drawn images whose blob size is the regression target (examples/age_gender_race)."""
import csv
import importlib.util
import json
import math
import os
import sys

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from mxnet import autograd
from conftest import REPO, run_cli
from multitask_mx.data import label_tables, task_kinds
from multitask_mx.data.tasks import Task
from multitask_mx.errors import UserInputError
from multitask_mx.training import kind_metrics
from multitask_mx.training.kind_losses import KindConfig
from multitask_mx.training.loop import MultiTaskLoss
from multitask_mx.training.metrics import TaskMetrics

TYPES = "regress,class,class,multilabel:3"
SMALL = ["--network", "cifar_resnet20_v1", "--image-shape", "3,32,32", "--batch-size", "16", "--lr", "0.02",
         "--data-nthreads", "0", "--quiet", "--seed", "1", "--no-augment"]  # crops would change the size = target


def _make_data_module():
    path = os.path.join(REPO, "examples", "age_gender_race", "make_data.py")
    spec = importlib.util.spec_from_file_location("make_age_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """train.csv (160 images, some ages and attributes unknown) and val.csv (64) of 32x32 drawn images."""
    tmp = tmp_path_factory.mktemp("kinds")
    make = _make_data_module()
    rng = np.random.RandomState(0)
    train, val = make.make_split(str(tmp), "train", 160, rng, 32), make.make_split(str(tmp), "val", 64, rng, 32)
    rows = read_csv(train)
    for i, row in enumerate(rows):  # unknown values: an empty age, an unknown (-1) attribute
        if i % 10 == 3:
            row["age"] = ""
        if i % 10 == 7:
            row["frame"] = "-1"
    with open(train, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=make.HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return {"tmp": tmp, "train": train, "val": val}


def test_lst_with_real_values_and_unknowns(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    lst = tmp_path / "t.lst"
    lst.write_text("0\t31.5\t2\t1\t0\ta.jpg\n1\t\t0\t-1\t1\ta.jpg\n2\tnan\t1\t0\t-1\ta.jpg\n")
    image_list, header = label_tables.read_table(str(lst))
    assert header is None and image_list.labels.shape == (3, 4)
    tasks = task_kinds.build_kind_tasks(task_kinds.parse_task_types("regress,class,multilabel:2"),
                                        image_list.labels, ["age", "colour", "attrs"])
    assert [(t.kind, t.num_classes, t.column) for t in tasks] == [("regress", 1, 0), ("class", 3, 1),
                                                                  ("multilabel", 2, 2)]
    assert tasks[0].mean == 31.5 and tasks[0].std == 1.0  # one known value: std 0 -> 1
    slots = task_kinds.slot_matrix(tasks, image_list.labels)
    assert slots.shape == (3, 4) and math.isnan(slots[1, 0]) and math.isnan(slots[2, 0])
    assert slots[:, 2:].tolist() == [[1, 0], [-1, 1], [0, -1]]


def test_bad_kind_input_names_file_and_line(tmp_path):
    with pytest.raises(UserInputError, match="multilabel:K"):
        task_kinds.parse_task_types("class,regres")
    (tmp_path / "a.jpg").write_bytes(b"")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,age,dot\na.jpg,3,1\na.jpg,4,2\n")
    image_list, header = label_tables.read_table(str(bad))
    tasks = task_kinds.build_kind_tasks([("regress", 1), ("multilabel", 1)], image_list.labels, header=header)
    assert tasks[1].attributes == ("dot",) and tasks[0].name == "age"
    with pytest.raises(UserInputError, match=r"bad.csv:3: .*must be 0, 1 or -1"):
        task_kinds.check_kind_labels(tasks, image_list)
    (tmp_path / "nopath.csv").write_text("image,age\na.jpg,3\n")
    with pytest.raises(UserInputError, match="no 'path' column"):
        label_tables.read_table(str(tmp_path / "nopath.csv"))
    (tmp_path / "word.csv").write_text("path,age\na.jpg,old\n")
    with pytest.raises(UserInputError, match=r"word.csv:2: label 'old' is not a number"):
        label_tables.read_table(str(tmp_path / "word.csv"))


def test_old_config_without_kind_is_softmax():
    old = {"name": "label", "num_classes": 4, "column": 0, "derive": None, "expression": ""}
    task = Task.from_dict(old)
    assert task.kind == "class" and task.to_dict() == old  # softmax tasks' config.json is unchanged
    new = Task("age", 1, 0, kind="regress", mean=40.0, std=20.0)
    assert Task.from_dict(json.loads(json.dumps(new.to_dict()))) == new


def test_unknown_targets_give_no_gradient_and_pos_weight_counts():
    tasks = [Task("age", 1, 0, kind="regress"), Task("attrs", 2, 1, kind="multilabel")]
    labels = mx.nd.array([[0.5, 1, 0], [float("nan"), -1, -1], [-0.2, 1, -1]])
    outputs = [mx.nd.array([[0.1], [5.0], [0.3]]), mx.nd.array([[0.2, -0.1], [3.0, 3.0], [0.0, 9.0]])]
    for out in outputs:
        out.attach_grad()
    for pos in (None, [[1.0, 1.0], [3.0, 1.0]][1]):
        loss_fn = MultiTaskLoss([1, 2], kinds=KindConfig.for_tasks(tasks, "l2", [None, pos] if pos else None))
        with autograd.record():
            total, losses, _, masks = loss_fn(outputs, labels, mx.nd.ones((3,)))
        total.backward()
        assert masks[0].asnumpy().tolist() == [1, 0, 1] and masks[1].asnumpy().tolist() == [1, 0, 1]
        assert not outputs[0].grad[1].asnumpy().any() and not outputs[1].grad[1].asnumpy().any()
        assert outputs[1].grad[2, 1].asscalar() == 0  # the unknown attribute of a labelled image
        assert np.isfinite(total.asnumpy()).all()
        if pos is None:
            unweighted = outputs[1].grad[0, 0].asscalar()
    assert outputs[1].grad[0, 0].asscalar() == pytest.approx(3 * unweighted)  # a positive weighed 3x


def test_histogram_average_precision_matches_exact():
    rng = np.random.RandomState(0)
    labels = (rng.rand(400, 3) < 0.3).astype(np.float32)
    logits = labels * 1.5 + rng.randn(400, 3)
    metrics = TaskMetrics(["age", "attrs"], [mx.cpu()], num_classes=[1, 3], kinds=[("regress", 2.0), ("multilabel", 1)])
    target = mx.nd.array([1.0, -1.0])
    metrics.update(0, [mx.nd.array([[0.5], [0.0]]), mx.nd.array(logits[:2])], [target, mx.nd.array(labels[:2])],
                   [mx.nd.ones((2,)), mx.nd.ones((2,))], [mx.nd.zeros((2,))] * 2)
    metrics.update(0, [mx.nd.zeros((398, 1)), mx.nd.array(logits[2:])], [mx.nd.zeros((398,)), mx.nd.array(labels[2:])],
                   [mx.nd.zeros((398,)), mx.nd.ones((398,))], [mx.nd.zeros((398,))] * 2)
    values = metrics.values()
    # errors in target units (std 2): (0.5 - 1) * 2 and (0 + 1) * 2
    assert values["age"]["mae"] == pytest.approx(1.5) and values["age"]["rmse"] == pytest.approx(math.sqrt(2.5))
    from multitask_mx.use.kind_reports import multilabel_report
    exact = multilabel_report(1 / (1 + np.exp(-logits)), labels, ["a", "b", "c"])
    assert values["attrs"]["map"] == pytest.approx(exact["map"], abs=0.01)
    assert values["attrs"]["f1"] == pytest.approx(exact["f1"], abs=1e-6)
    assert values["attrs"]["acc"] == pytest.approx(exact["accuracy"], abs=1e-6)
    assert kind_metrics.BINS == 200


@pytest.fixture(scope="module")
def trained(data):
    """regress + two softmax + multilabel:3 + a derived task, pos weights: 8 epochs."""
    save = str(data["tmp"] / "run")
    run_cli("train", "--data-train", data["train"], "--data-val", data["val"], "--task-types", TYPES,
            "--derived-task", "blue=colour==2", "--pos-weight", "auto",
            "--num-epoch", "8", "--save-result", save, *SMALL)
    return save


def baselines(data):
    """The validation MAE of predicting the training mean age, and the validation positive rate."""
    ages = np.array([float(r["age"]) for r in read_csv(data["train"]) if r["age"]])
    val = read_csv(data["val"])
    mean_mae = np.abs(np.array([float(r["age"]) for r in val]) - ages.mean()).mean()
    positive = np.mean([[float(r[a]) for a in ("dot", "frame", "bar")] for r in val])
    return mean_mae, positive


@pytest.mark.slow
def test_regression_and_multilabel_learn_beside_softmax(data, trained):
    mean_mae, positive_rate = baselines(data)
    last = json.load(open(os.path.join(trained, "history.json")))[-1]["val"]
    assert last["age"]["mae"] < mean_mae, (last["age"], mean_mae)
    assert last["attributes"]["map"] > positive_rate, (last["attributes"], positive_rate)
    assert set(last) == {"age", "colour", "shape", "attributes", "blue"}
    config = json.load(open(os.path.join(trained, "config.json")))
    kinds = {t["name"]: t.get("kind", "class") for t in config["tasks"]}
    assert kinds == {"age": "regress", "colour": "class", "shape": "class", "attributes": "multilabel",
                     "blue": "class"}
    age = config["tasks"][0]
    assert 30 < age["mean"] < 60 and 10 < age["std"] < 30
    assert config["classes"]["attributes"] == ["dot", "frame", "bar"]


@pytest.mark.slow
def test_evaluate_and_predict_report_per_kind(data, trained, tmp_path):
    mean_mae, positive_rate = baselines(data)
    report_file = str(tmp_path / "eval.json")
    proc = run_cli("evaluate", "--save-result", trained, "--data", data["val"], "--json", report_file,
                   "--confusion-png", str(tmp_path / "c.png"))
    assert "task age (regress): MAE" in proc.stdout and "task attributes (multilabel): mAP" in proc.stdout
    report = json.load(open(report_file))["tasks"]
    assert report["age"]["mae"] < report["age"]["mean_predictor_mae"] == pytest.approx(mean_mae, rel=1e-3)
    assert report["attributes"]["map"] > positive_rate
    assert set(report["attributes"]["attributes"]) == {"dot", "frame", "bar"}
    assert "confusion" in report["colour"] and os.path.exists(str(tmp_path / "c_colour.png"))
    image = os.path.join(os.path.dirname(data["val"]), read_csv(data["val"])[0]["path"])
    out = json.loads(run_cli("predict", image, "--save-result", trained, "--json", "-").stdout)
    tasks = out["predictions"][0]["tasks"]
    assert 0 < tasks["age"]["value"] < 120
    assert [a["attribute"] for a in tasks["attributes"]] == ["dot", "frame", "bar"]
    assert all(0 <= a["prob"] <= 1 and a["present"] == (a["prob"] >= 0.5) for a in tasks["attributes"])
    assert tasks["colour"][0]["class"] in ("0", "1", "2")
    table = run_cli("predict", image, "--save-result", trained).stdout
    assert "dot" in table and "age" in table


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["uncertainty", "dwa"])
def test_lst_kinds_with_learned_and_dynamic_weights(data, tmp_path, weighting):
    """The same data as a .lst (empty age = unknown), l1 regression, 2 short epochs: every task has finite losses."""
    lst = tmp_path / "train.lst"
    root = os.path.dirname(data["train"])
    with open(lst, "w") as f:
        for i, row in enumerate(read_csv(data["train"])[:48]):
            labels = [row[c] for c in ("age", "colour", "shape", "dot", "frame", "bar")]
            f.write("%d\t%s\t%s\n" % (i, "\t".join(labels), row["path"]))
    save = str(tmp_path / "run")
    run_cli("train", "--data-train", str(lst), "--image-train", root, "--task-types", TYPES, "--task-names",
            "age,colour,shape,marks", "--regress-loss", "l1", "--loss-weighting", weighting, "--num-epoch", "2",
            "--save-result", save, *SMALL)
    history = json.load(open(os.path.join(save, "history.json")))
    train = history[-1]["train"]
    assert set(train) == {"age", "colour", "shape", "marks"}
    assert all(math.isfinite(v["loss"]) for v in train.values())
    assert "mae" in train["age"] and "map" in train["marks"] and "acc" in train["colour"]
    assert train["age"]["count"] == sum(1 for r in read_csv(data["train"])[:48] if r["age"])
    config = json.load(open(os.path.join(save, "config.json")))
    assert config["tasks"][3]["attributes"] == ["marks1", "marks2", "marks3"]


@pytest.mark.slow
def test_export_bakes_in_the_regression_scale(trained, tmp_path):
    out = str(tmp_path / "export")
    onnx = importlib.util.find_spec("onnxruntime") is not None  # checked against MXNet by export itself
    proc = run_cli("export", "--save-result", trained, "--out", out, *(["--onnx"] if onnx else []))
    diff = float(proc.stdout.split("max difference to the trained model ")[1].split(")")[0])
    assert diff < 1e-3
    assert not onnx or "onnxruntime vs MXNet max difference" in proc.stdout
    info = json.load(open(os.path.join(out, "multitask-preprocess.json")))
    kinds = {o["task"]: o["kind"] for o in info["outputs"]}
    assert kinds["age"].startswith("value (mean") and kinds["attributes"].startswith("sigmoid")
    assert kinds["colour"] == "softmax probabilities"
    block = mx.gluon.SymbolBlock.imports(os.path.join(out, "multitask-symbol.json"), ["data"],
                                         os.path.join(out, "multitask-0000.params"))
    outputs = block(mx.nd.zeros((1, 3, 32, 32)))
    names = [o["task"] for o in info["outputs"]]
    age = outputs[names.index("age")].asnumpy()
    assert age.shape == (1, 1) and 0 < age[0, 0] < 120  # in years, not standardised
    attributes = outputs[names.index("attributes")].asnumpy()
    assert attributes.shape == (1, 3) and ((attributes > 0) & (attributes < 1)).all()


@pytest.mark.slow
def test_serve_answers_like_predict(data, trained, tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "use"))
    from test_serve import ServerProcess, post_image  # tests/use/test_serve.py, whichever tests are collected
    image = os.path.join(os.path.dirname(data["val"]), read_csv(data["val"])[1]["path"])
    expected = json.loads(run_cli("predict", image, "--save-result", trained, "--json", "-").stdout)
    expected = expected["predictions"][0]["tasks"]
    server = ServerProcess(trained, str(tmp_path))
    try:
        status, _, body = post_image(server.url, open(image, "rb").read(), content_type="image/png")
    finally:
        assert server.stop() == 0, server.logs()
    assert status == 200, body
    assert body["tasks"]["age"]["value"] == pytest.approx(expected["age"]["value"], abs=1e-3)
    assert [a["present"] for a in body["tasks"]["attributes"]] == [a["present"] for a in expected["attributes"]]
    assert body["tasks"]["colour"][0]["class"] == expected["colour"][0]["class"]

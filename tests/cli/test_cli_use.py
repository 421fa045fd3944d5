"""The five commands end to end through the real CLI: make-list -> train -> evaluate -> predict -> export.

One tiny model is trained for the whole module; every bad input of issue 5 must
give its message and no traceback.
"""
import csv
import io
import json
import os

import cv2
import numpy as np
import pytest

from conftest import CLASS_NAMES, make_images, run_cli
from multitask_mx.use import inference

import mxnet as mx

pytestmark = pytest.mark.slow


def read_lst(path):
    """[(index, labels tuple, relative path)] of an .lst file."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            rows.append((int(parts[0]), tuple(float(v) for v in parts[1:-1]), parts[-1]))
    return rows


def clean_error(proc, *fragments):
    """The command failed with our message (every fragment in stderr) and without a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """make-list on a folder of class folders, then a 2-epoch resnet18_v1 at 32x32 on its lists."""
    base = tmp_path_factory.mktemp("use")
    root = str(base / "photos")
    make_images(root, 10, seed=1)
    prefix = str(base / "lists" / "shapes")
    made = run_cli("make-list", prefix, root, "--split", "0.6,0.2,0.2", "--seed", 3)
    save = str(base / "run")
    run_cli("train", "--network", "resnet18_v1", "--image-shape", "3,32,32", "--num-epoch", 2, "--batch-size", 8,
            "--data-train", prefix + "_train.lst", "--image-train", root, "--data-val", prefix + "_val.lst",
            "--image-val", root, "--classes", prefix + "_classes.txt", "--save-result", save, "--quiet",
            "--seed", 1)
    return {"base": base, "root": root, "prefix": prefix, "save": save, "make_list_stdout": made.stdout}


def model_args(pipeline):
    return ["--save-result", pipeline["save"], "--batch-size", 8, "--quiet"]


# ---------------------------------------------------------------- make-list

def test_make_list_writes_stratified_im2rec_lists_and_class_names(pipeline):
    prefix = pipeline["prefix"]
    parts = {name: read_lst("%s_%s.lst" % (prefix, name)) for name in ("train", "val", "test")}
    for name, expected in (("train", 6), ("val", 2), ("test", 2)):
        per_class = np.bincount([int(labels[0]) for _, labels, _ in parts[name]], minlength=4)
        assert per_class.tolist() == [expected] * 4, name
    paths = [rel for rows in parts.values() for _, _, rel in rows]
    indices = [index for rows in parts.values() for index, _, _ in rows]
    assert len(set(paths)) == len(paths) == 40 and len(set(indices)) == 40
    assert all(rel.split("/")[0] == CLASS_NAMES[int(labels[0])] for rows in parts.values() for _, labels, rel in rows)
    first = open(prefix + "_train.lst").readline()
    assert first.count("\t") == 2 and first.split("\t")[1].endswith(".000000")  # im2rec's label format
    assert open(prefix + "_classes.txt").read().split() == CLASS_NAMES
    assert "_train.lst (24 image(s))" in pipeline["make_list_stdout"]


def test_make_list_same_seed_same_split_and_shuffle_only_reorders(pipeline, tmp_path):
    again = str(tmp_path / "again")
    shuffled = str(tmp_path / "shuffled")
    run_cli("make-list", again, pipeline["root"], "--split", "0.6,0.2,0.2", "--seed", 3)
    run_cli("make-list", shuffled, pipeline["root"], "--split", "0.6,0.2,0.2", "--seed", 3, "--shuffle")
    for name in ("train", "val", "test"):
        original = read_lst("%s_%s.lst" % (pipeline["prefix"], name))
        assert read_lst("%s_%s.lst" % (again, name)) == original
        assert sorted(read_lst("%s_%s.lst" % (shuffled, name))) == sorted(original)
    assert read_lst(shuffled + "_train.lst") != read_lst(again + "_train.lst")


def test_make_list_two_levels_give_two_label_columns(tmp_path):
    root = tmp_path / "pets"
    for animal in ("cat", "dog"):
        for place in ("indoor", "outdoor"):
            folder = root / animal / place
            folder.mkdir(parents=True)
            for i in range(3):
                cv2.imwrite(str(folder / ("%d.jpg" % i)), np.full((8, 8, 3), 40 * i, np.uint8))
    proc = run_cli("make-list", tmp_path / "pets", root, "--split", "1")
    rows = read_lst(str(tmp_path / "pets.lst"))
    assert len(rows) == 12 and {labels for _, labels, _ in rows} == {(0., 0.), (0., 1.), (1., 0.), (1., 1.)}
    assert [r for r in rows if r[2] == "dog/outdoor/0.jpg"][0][1] == (1.0, 1.0)
    assert open(tmp_path / "pets_classes1.txt").read().split() == ["cat", "dog"]
    assert open(tmp_path / "pets_classes2.txt").read().split() == ["indoor", "outdoor"]
    assert "2 class(es) in label column 2" in proc.stdout


def test_make_list_check_images_reports_and_leaves_out_unreadable_files(tmp_path):
    root = tmp_path / "imgs"
    make_images(str(root), 3, seed=4, classes=2)
    (root / CLASS_NAMES[1] / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    proc = run_cli("make-list", tmp_path / "l", root, "--split", "1", "--check-images")
    listed = {rel for _, _, rel in read_lst(str(tmp_path / "l.lst"))}
    assert len(listed) == 6 and "circle/broken.jpg" not in listed
    assert "broken.jpg" in proc.stderr and "1 unreadable" in proc.stdout
    run_cli("make-list", tmp_path / "m", root, "--split", "1")
    assert len(read_lst(str(tmp_path / "m.lst"))) == 7  # without the check it is listed
    # header: the cheap check as in train, no decoding; it still sees the missing end-of-image marker
    proc = run_cli("make-list", tmp_path / "h", root, "--split", "1", "--check-images", "header")
    assert len(read_lst(str(tmp_path / "h.lst"))) == 6 and "broken.jpg" in proc.stderr


# ---------------------------------------------------------------- evaluate

@pytest.mark.parametrize("epoch", [1, 2])
def test_evaluate_accuracy_equals_the_training_log(pipeline, tmp_path, epoch):
    out = tmp_path / "eval.json"
    proc = run_cli("evaluate", *model_args(pipeline), "--epoch", epoch, "--data", pipeline["prefix"] + "_val.lst",
                   "--image-root", pipeline["root"], "--json", out, "--confusion-png", tmp_path / "confusion.png")
    report = json.loads(out.read_text())
    logged = json.load(open(os.path.join(pipeline["save"], "history.json")))[epoch - 1]
    assert logged["epoch"] == epoch and report["model"]["epoch"] == epoch
    assert report["num_images"] == 8 and report["failed"] == []
    for task in ("label", "label_gt0"):
        assert report["tasks"][task]["accuracy"] == pytest.approx(logged["val"][task]["acc"], abs=1e-6)
        assert report["tasks"][task]["loss"] == pytest.approx(logged["val"][task]["loss"], rel=1e-4, abs=1e-5)
        assert "task %s: accuracy %.4f" % (task, logged["val"][task]["acc"]) in proc.stdout
    # the derived head's agreement with its source head, as training logged it (8 images: 1/8 steps)
    assert report["agreement"]["label_gt0"] == pytest.approx(logged["agreement"]["label_gt0"], abs=1e-6)
    assert "agreement of label_gt0's head" in proc.stdout
    label = report["tasks"]["label"]
    assert label["classes"] == CLASS_NAMES and len(label["per_class"]) == 4
    assert sum(c["support"] for c in label["per_class"]) == 8 and len(label["confusion"]) == 4
    assert set(label) >= {"accuracy", "top_k", "loss", "per_class", "confusion", "macro_avg", "weighted_avg"}
    assert os.path.getsize(tmp_path / "confusion_label.png") > 1000
    assert os.path.getsize(tmp_path / "confusion_label_gt0.png") > 1000


# ---------------------------------------------------------------- predict

def test_predict_on_the_list_agrees_with_evaluate(pipeline, tmp_path):
    val = pipeline["prefix"] + "_val.lst"
    run_cli("evaluate", *model_args(pipeline), "--data", val, "--image-root", pipeline["root"], "--per-image",
            "--json", tmp_path / "eval.json")
    evaluated = {row["line"]: row["predicted"] for row in json.loads((tmp_path / "eval.json").read_text())["images"]}
    proc = run_cli("predict", *model_args(pipeline), val, "--image-root", pipeline["root"], "--json", "-",
                   "--show", 2)
    predicted = json.loads(proc.stdout)
    assert predicted["num_images"] == 8 and predicted["num_failed"] == 0
    for row in predicted["predictions"]:
        assert {t: classes[0]["index"] for t, classes in row["tasks"].items()} == evaluated[row["line"]]
        assert len(row["tasks"]["label"]) == 2 and row["tasks"]["label"][0]["prob"] >= row["tasks"]["label"][1]["prob"]
        assert row["tasks"]["label"][0]["class"] in CLASS_NAMES
    table = run_cli("predict", *model_args(pipeline), val, "--image-root", pipeline["root"]).stdout
    assert table.splitlines()[0].split() == ["image", "label", "label_gt0"] and len(table.splitlines()) == 9


def test_predict_folder_and_files_as_csv_with_flip_tta(pipeline, tmp_path):
    folder = os.path.join(pipeline["root"], "circle")
    proc = run_cli("predict", *model_args(pipeline), folder, "--csv", tmp_path / "p.csv", "--tta", "flip")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert len({r["path"] for r in rows}) == 10 and {r["task"] for r in rows} == {"label", "label_gt0"}
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)
    assert len(proc.stdout.splitlines()) == 11  # the table still goes to stdout


# ---------------------------------------------------------------- export

@pytest.mark.filterwarnings("ignore:Cannot decide type")
def test_export_mxnet_and_onnx_agree_with_the_gluon_model(pipeline, tmp_path):
    import onnxruntime as ort
    out = tmp_path / "deploy"
    proc = run_cli("export", "--save-result", pipeline["save"], "--out", out, "--name", "shapes", "--onnx")
    assert "Traceback" not in proc.stderr and "opset 13" in proc.stdout
    info = json.loads((out / "shapes-preprocess.json").read_text())
    assert info["input"]["channel_order"] == "RGB" and info["crop"] == {"kind": "centre", "height": 32, "width": 32}
    assert info["resize"]["short_side"] == 37 and info["normalization"]["mean"][0] == pytest.approx(123.675)
    assert [o["classes"] for o in info["outputs"]] == [CLASS_NAMES, ["no", "yes"]]

    model = inference.load_model(pipeline["save"])
    transform = model.transform()
    from multitask_mx.data.images import decode_image
    test_rows = read_lst(pipeline["prefix"] + "_test.lst")
    batch = np.stack([transform(decode_image(os.path.join(pipeline["root"], rel), transform.decode_size))
                      for _, _, rel in test_rows])
    gluon = [mx.nd.softmax(o).asnumpy() for o in model.net(mx.nd.array(batch))]

    block = mx.gluon.SymbolBlock.imports(str(out / "shapes-symbol.json"), ["data"], str(out / "shapes-0000.params"))
    from_block = [o.asnumpy() for o in block(mx.nd.array(batch))]

    symbol, arg_params, aux_params = mx.model.load_checkpoint(str(out / "shapes"), 0)
    module = mx.mod.Module(symbol, data_names=["data"], label_names=None, context=mx.cpu())
    module.bind(data_shapes=[("data", batch.shape)], for_training=False)
    module.set_params(arg_params, aux_params)
    module.forward(mx.io.DataBatch([mx.nd.array(batch)]), is_train=False)
    from_module = [o.asnumpy() for o in module.get_outputs()]
    assert symbol.list_outputs() == [o["mxnet_output"] for o in info["outputs"]]

    session = ort.InferenceSession(str(out / "shapes.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [o["onnx_output"] for o in info["outputs"]]
    from_onnx = session.run(None, {"data": batch.astype(np.float32)})

    for k in range(2):
        for other in (from_block, from_module, from_onnx):
            np.testing.assert_allclose(other[k], gluon[k], atol=1e-4)
        assert np.allclose(gluon[k].sum(axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- bad input

def test_save_dir_without_config(tmp_path):
    for command in (["evaluate", "--data", "x.lst"], ["predict", "x.jpg"], ["export", "--out", tmp_path / "o"]):
        proc = run_cli(command[0], "--save-result", tmp_path, *command[1:], expect=2)
        clean_error(proc, "has no config.json")


def test_epoch_that_does_not_exist(pipeline):
    image = os.path.join(pipeline["root"], "circle", "circle_1_000.jpg")
    proc = run_cli("predict", "--save-result", pipeline["save"], "--epoch", 9, image, expect=2)
    clean_error(proc, "--epoch 9", "Epochs available: 1, 2, best")
    proc = run_cli("export", "--save-result", pipeline["save"], "--epoch", "last", "--out", pipeline["base"], expect=2)
    clean_error(proc, "--epoch", "'best' or 'latest'")


def test_unreadable_image_is_reported_and_the_rest_predicted(pipeline, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    good = os.path.join(pipeline["root"], "square", "square_1_000.jpg")
    proc = run_cli("predict", *model_args(pipeline), good, broken, expect=1)
    clean_error(proc, "broken.jpg", "1 of 2 image(s) could not be read")
    assert "square_1_000.jpg" in proc.stdout and "ERROR" in proc.stdout


def test_image_root_that_does_not_exist(pipeline, tmp_path):
    val = pipeline["prefix"] + "_val.lst"
    proc = run_cli("evaluate", *model_args(pipeline), "--data", val, "--image-root", tmp_path / "nope", expect=2)
    clean_error(proc, "--image-root", "is not a folder")
    proc = run_cli("predict", *model_args(pipeline), val, "--image-root", tmp_path / "nope", expect=2)
    clean_error(proc, "--image-root", "is not a folder")


def test_wrong_image_root_for_every_image_of_evaluate(pipeline, tmp_path):
    proc = run_cli("evaluate", *model_args(pipeline), "--data", pipeline["prefix"] + "_val.lst",
                   "--image-root", tmp_path, expect=2)
    clean_error(proc, "none of the 8 images", "does not exist")


def test_split_that_does_not_sum_to_one(pipeline, tmp_path):
    proc = run_cli("make-list", tmp_path / "x", pipeline["root"], "--split", "0.5,0.2", expect=2)
    clean_error(proc, "--split 0.5,0.2 sums to 0.7, not 1")


def test_class_folder_with_no_images(tmp_path):
    root = tmp_path / "data"
    make_images(str(root), 2, classes=2)
    (root / "empty_class").mkdir()
    proc = run_cli("make-list", tmp_path / "x", root, expect=2)
    clean_error(proc, "empty_class has no images")
    proc = run_cli("make-list", tmp_path / "x", tmp_path / "missing", expect=2)
    clean_error(proc, "is not a folder")

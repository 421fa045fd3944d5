"""Grad-CAM heat maps (use/cam.py): the graph cut, maps that peak on a drawn object, predict --cam, serve ?cam=1.

The end-to-end tests train one small resnet18_v1 (48 px, 5 epochs, no augmentation) on pictures
of a white square or a yellow disc drawn in the left or the right half of a dark noisy image; a
heat map of the predicted class should put most of its mass on the object's half. (With random
crops and flips, 3 epochs at 64 px learnt the classes in some runs only: 43 to 80 of 80 maps on the
right half over three runs; without augmentation 80 of 80 in each of two runs.)
"""
import base64
import http.client
import json
import os
import urllib.parse
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import mxnet as mx
from conftest import CLASSIC_SYMBOL, run_cli, write_list
from multitask_mx.data.tasks import Task
from multitask_mx.errors import UserInputError
from multitask_mx.model import network
from multitask_mx.model.pretrained import load_classic_checkpoint
from multitask_mx.use import cam, inference
from test_serve import ServerProcess, multipart, request

SIZE = 48


def draw_object_images(root, per_class=20, seed=0):
    """Class 0: noise only; 1: a white square; 2: a yellow disc; the object in the left half of
    even-numbered images, the right half of odd ones. Returns [(relpath, label)]."""
    rng = np.random.RandomState(seed)
    os.makedirs(root, exist_ok=True)
    items = []
    for label in range(3):
        for i in range(per_class):
            img = (rng.rand(SIZE, SIZE, 3) * 80).astype(np.uint8)
            side = i % 2
            half, r = SIZE // 2, SIZE // 6  # the object's centre well inside its half, after the centre crop too
            x, y = rng.randint(r + 4, half - r - 2) + half * side, rng.randint(r + 4, SIZE - r - 4)
            if label == 1:
                cv2.rectangle(img, (x - r, y - r), (x + r, y + r), (255, 255, 255), -1)
            elif label == 2:
                cv2.circle(img, (x, y), r, (0, 255, 255), -1)
            name = "c%d_%s_%02d.png" % (label, "LR"[side], i)
            cv2.imwrite(os.path.join(root, name), img)
            items.append((name, label))
    return items


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(save dir, image folder) of the module's small model."""
    base = tmp_path_factory.mktemp("cam")
    root = str(base / "images")
    write_list(base / "train.lst", draw_object_images(root))
    save = str(base / "run")
    run_cli("train", "--network", "resnet18_v1", "--image-shape", "3,%d,%d" % (SIZE, SIZE), "--num-epoch", 5,
            "--batch-size", 8, "--lr", 0.05, "--augment", "none", "--data-train", base / "train.lst",
            "--image-train", root, "--save-result", save, "--quiet", "--seed", 1)
    return save, root


# ---------------------------------------------------------------- the graph (fast)

def test_classic_graph_is_explained_at_its_last_convolutional_block():
    symbol = mx.sym.load(CLASSIC_SYMBOL)
    assert cam.find_feature_layer(symbol, (3, 224, 224)) == "relu1"  # then pool1, flatten0, fc1, softmax
    features, heads = cam.split_at(symbol, "relu1")
    assert features.list_outputs() == ["relu1_output"]
    assert cam.FEATURE_INPUT in heads.list_arguments() and "conv0_weight" not in heads.list_arguments()
    assert heads.infer_shape(**{cam.FEATURE_INPUT: (1, 2048, 7, 7)})[1] == [(1, 1000)]


def test_a_one_by_one_map_is_passed_for_the_last_with_several_positions():
    symbol = mx.sym.load(CLASSIC_SYMBOL)  # at 32 px ResNet-50's last block is 1 x 1, the one before 2 x 2
    layer = cam.find_feature_layer(symbol, (3, 32, 32))
    shape = dict(zip(symbol.get_internals().list_outputs(),
                     symbol.get_internals().infer_shape(data=(1, 3, 32, 32))[1]))[layer + "_output"]
    assert shape[2:] == (2, 2)


def test_the_cut_network_computes_what_the_whole_one_does(classic_checkpoint, tmp_path):
    """Classic-checkpoint trunk, untrained heads: features then heads give the saved network's logits."""
    features, input_name, params, _ = load_classic_checkpoint(classic_checkpoint, 0)
    spec = network.TrunkSpec(network="symbol:x", symbol_json=features.tojson(), input_name=input_name)
    tasks = [Task("a", 3, 0), Task("b", 2, 1)]
    net = network.build_net(spec, tasks, [mx.cpu()], (3, 64, 64), defer=True)
    network.load_pretrained_trunk(net, classic_checkpoint, params)
    net.hybridize()
    x = mx.nd.random.uniform(-1, 1, (2, 3, 64, 64))
    expected = [o.asnumpy() for o in net(x)]
    net.export(str(tmp_path / "m"), epoch=0)
    explainer = cam.GradCam(str(tmp_path / "m-symbol.json"), str(tmp_path / "m-0000.params"), (3, 64, 64))
    assert explainer.layer == "relu1" and explainer.feature_shape == (2048, 2, 2)
    got = explainer._logits(explainer.features(x))
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g.asnumpy(), e, rtol=1e-4, atol=1e-5)
    results = explainer.explain(x, [None, [1, 0]])
    assert [r.maps.shape for r in results] == [(2, 64, 64)] * 2
    assert results[1].classes.tolist() == [1, 0]
    for r in results:
        assert r.maps.min() >= 0 and r.maps.max() <= 1


def test_file_stems_stay_distinct():
    assert cam.file_stems(["a/x.jpg", "b/x.jpg", "x-2.png", "c/x.jpg", "d/ü ber.png"]) == \
        ["x", "x-2", "x-2-2", "x-3", "ber"]


# ---------------------------------------------------------------- a trained model (slow)

@pytest.mark.slow
def test_maps_peak_on_the_drawn_object(trained):
    save, root = trained
    model = inference.load_model(save)
    paths = sorted(os.path.join(root, n) for n in os.listdir(root) if not n.startswith("c0_"))
    hits = total = 0
    for task in model.task_names:
        for path, result in zip(paths, cam.grad_cam(model, paths, task)):
            left, right = result.map[:, :SIZE // 2].sum(), result.map[:, SIZE // 2:].sum()
            hits += (left > right) == ("_L_" in path)
            total += 1
    assert hits >= 0.7 * total, "%d of %d heat maps on the object's half" % (hits, total)


@pytest.mark.slow
def test_predict_cam_writes_a_picture_per_image_and_task(trained, tmp_path):
    save, root = trained
    twin = tmp_path / "other"
    twin.mkdir()
    (twin / "c1_L_00.png").write_bytes(open(os.path.join(root, "c1_L_00.png"), "rb").read())
    inputs = [os.path.join(root, "c1_L_00.png"), os.path.join(root, "c2_R_01.png"), str(twin / "c1_L_00.png"),
              str(tmp_path / "missing.png")]
    out = tmp_path / "cams"
    proc = run_cli("predict", "--save-result", save, *inputs, "--cam", out, "--cam-class", "label=2", "--quiet",
                   expect=1)
    assert "missing.png" in proc.stderr
    document = json.loads((out / "cams.json").read_text())
    assert sorted(os.listdir(out)) == sorted(["cams.json"] + ["%s__%s.png" % (s, t) for s in
                                                              ("c1_L_00", "c2_R_01", "c1_L_00-2")
                                                              for t in ("label", "label_gt0")])
    rows = document["images"]
    assert [r["path"] for r in rows] == inputs and "error" in rows[3]
    for row in rows[:3]:
        assert row["cams"]["label"]["class_index"] == 2 and row["cams"]["label"]["chosen"] == "--cam-class"
        assert row["cams"]["label_gt0"]["chosen"] == "predicted"
        picture = cv2.imread(str(out / row["cams"]["label"]["file"]))
        assert picture.shape == (224, 224, 3)
    assert document["feature_map"][1:] == [2, 2]


def test_cam_class_choices():
    model = SimpleNamespace(task_names=["shape", "big"], classes={"shape": ["circle", "square"], "big": ["no", "yes"]})
    assert cam.parse_class_choices([], model) == {"shape": None, "big": None}
    assert cam.parse_class_choices(["1", "shape=circle"], model) == {"shape": 0, "big": 1}
    with pytest.raises(UserInputError, match="task shape has classes 0 to 1 .circle, square."):
        cam.parse_class_choices(["shape=2"], model)
    with pytest.raises(UserInputError, match="no task 'colour'; this model's tasks are shape, big"):
        cam.parse_class_choices(["colour=1"], model)


@pytest.mark.slow
def test_cam_flags_are_checked_before_predicting(trained, tmp_path):
    save, root = trained
    image = os.path.join(root, "c1_L_00.png")
    proc = run_cli("predict", "--save-result", save, image, "--cam", tmp_path / "c", "--cam-class", "label=7",
                   expect=2)
    assert "task label has classes 0 to 2" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "c").exists() or not os.listdir(tmp_path / "c")
    proc = run_cli("predict", "--save-result", save, image, "--cam-class", "1", expect=2)
    assert "give --cam DIR" in proc.stderr


def post_for_cams(url, body, headers):
    """(status, parsed JSON) of POST /predict?cam=1 (test_serve.request drops query strings)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("POST", "/predict?cam=1", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.slow
def test_serve_returns_heat_maps_when_asked(trained, tmp_path):
    save, root = trained
    server = ServerProcess(save, str(tmp_path))
    try:
        body, headers = multipart(open(os.path.join(root, "c2_R_01.png"), "rb").read(), content_type="image/png")
        status, _, plain = request(server.url + "predict", "POST", body, headers)
        assert status == 200 and "cams" not in plain
        status, answer = post_for_cams(server.url, body, headers)
        assert status == 200, answer
        assert list(answer["cams"]) == ["label", "label_gt0"]
        for task, shown in answer["cams"].items():
            assert shown["index"] == answer["tasks"][task][0]["index"]  # the top class
            picture = cv2.imdecode(np.frombuffer(base64.b64decode(shown["png"]), np.uint8), cv2.IMREAD_COLOR)
            assert picture.shape == (224, 224, 3)
    finally:
        assert server.stop() == 0, server.logs()
    assert "Traceback" not in server.logs()

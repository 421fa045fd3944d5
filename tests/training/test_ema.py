"""--ema: the weights' moving average (multitask_mx/training/ema.py), its files, best choice, inference and resume."""
import json
import os
import shutil

import numpy as np
import pytest

import multitask_mx  # noqa: F401  (numpy shim before mxnet)
import mxnet as mx
from mxnet.gluon import nn

from conftest import make_images, run_cli, write_list
from multitask_mx.use import inference
from multitask_mx.atomic import atomic_write_json
from multitask_mx.training.best import BestTracker
from multitask_mx.training.checkpoints import CheckpointSaver
from multitask_mx.training.ema import WeightEMA

SMALL = ["--network", "cifar_resnet20_v1", "--image-shape", "3,32,32", "--batch-size", "8", "--lr", "0.02",
         "--data-nthreads", "0", "--quiet", "--seed", "3", "--no-augment"]


def small_net(ctxs):
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.Dense(3))
    net.initialize(mx.init.Xavier(), ctx=ctxs)
    net.hybridize(static_alloc=True)  # as in training: the saver exports the cached graph
    net(mx.nd.ones((2, 1, 5, 5), ctx=ctxs[0]))
    return net


def test_update_follows_the_warmed_up_decay_for_every_parameter():
    net = small_net([mx.cpu()])
    ema = WeightEMA(net, 0.99)
    params = net.collect_params()
    start = {n: p.data().asnumpy().copy() for n, p in params.items()}
    assert any(n.endswith("running_mean") for n in start)  # BatchNorm statistics are averaged too
    expected = dict(start)
    for step in range(3):
        for p in params.values():
            p.set_data(p.data() + 1.0)
        d = min(0.99, (1.0 + step) / (10.0 + step))
        assert ema.current_decay() == pytest.approx(d)
        ema.update()
        expected = {n: d * expected[n] + (1 - d) * params[n].data().asnumpy() for n in expected}
    for name, value in expected.items():
        np.testing.assert_allclose(ema.shadow[name].asnumpy(), value, rtol=1e-5, atol=1e-6)
        assert ema.shadow[name].dtype == np.float32
    assert ema.num_updates == 3 and ema.record()["updates"] == 3


def test_applied_swaps_in_the_average_on_every_device_and_restores_each():
    ctxs = [mx.cpu(0), mx.cpu(1)]
    net = small_net(ctxs)
    ema = WeightEMA(net, 0.5)
    bn_mean = next(p for n, p in net.collect_params().items() if n.endswith("running_mean"))
    bn_mean.data(ctxs[1])[:] = 7.0  # devices' BatchNorm statistics may differ: each gets its own back
    for p in net.collect_params().values():
        p.set_data(p.data(ctxs[0]) + 2.0) if p is not bn_mean else None
    before = {n: [a.asnumpy().copy() for a in p.list_data()] for n, p in net.collect_params().items()}
    x = mx.nd.ones((1, 1, 5, 5))
    with ema.applied(net):
        for name, p in net.collect_params().items():
            for a in p.list_data():
                np.testing.assert_array_equal(a.asnumpy(), ema.shadow[name].asnumpy())
        averaged_out = net(x).asnumpy()
    for name, p in net.collect_params().items():
        for a, b in zip(p.list_data(), before[name]):
            np.testing.assert_array_equal(a.asnumpy(), b)
    assert not np.allclose(net(x).asnumpy(), averaged_out)


def test_best_is_the_better_of_raw_and_ema():
    def record(epoch, raw_acc, ema_acc):
        val = lambda a: {"label": {"acc": a, "loss": 1.0, "count": 4}}
        return {"epoch": epoch, "val": val(raw_acc), "val_loss": 1.0, "train_loss": 1.0,
                "ema": {"updates": 3 * epoch, "val": val(ema_acc), "val_loss": 1.0}}
    best = BestTracker("val-acc:label", ["label"])
    assert best.update(record(1, 0.5, 0.25)) and best.weights == "raw"
    assert best.update(record(2, 0.5, 0.75)) and (best.epoch, best.weights) == (2, "ema")
    assert not best.update(record(3, 0.75, 0.5))
    assert best.to_dict() == {"metric": "val-acc:label", "value": 0.75, "epoch": 2, "weights": "ema"}
    again = BestTracker("val-acc:label", ["label"])
    again.restore(best.to_dict())
    assert (again.epoch, again.weights) == (2, "ema")
    train_only = BestTracker("train-loss", ["label"])  # the EMA is not measured on the training set
    train_only.update(record(1, 0.5, 0.9))
    assert train_only.weights == "raw"


def test_mid_epoch_checkpoint_keeps_the_ema_and_its_update_count(tmp_path):
    net = small_net([mx.cpu()])
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    ema = WeightEMA(net, 0.9)
    for _ in range(4):
        for p in net.collect_params().values():
            p.set_data(p.data() * 1.5 + 0.1)
        ema.update()
    saver = CheckpointSaver(str(tmp_path), "net")
    saver.save_progress(net, trainer, 2, 4, ema)
    arrays, updates, path = saver.read_ema(1, 4)
    assert updates == 4 and path == saver.ema_params_file(None)
    for name, shadow in ema.shadow.items():
        np.testing.assert_allclose(arrays[name].asnumpy(), shadow.asnumpy(), rtol=1e-6)
    again = WeightEMA(net, 0.9)
    again.load(arrays, updates)
    assert again.current_decay() == ema.current_decay()


def small_run(tmp, val_per_class, *extra):
    """Tiny train/val lists under ``tmp`` and `train` arguments for them: (data, save folder, args)."""
    root = str(tmp / "images")
    data = {"root": root, "train": write_list(tmp / "train.lst", make_images(root, 6, seed=1)),
            "val": write_list(tmp / "val.lst", make_images(root, val_per_class, seed=2), start_index=100)}
    save = str(tmp / "save")
    args = ["train", "--data-train", data["train"], "--image-train", root, "--data-val", data["val"],
            "--image-val", root, "--num-classes", "4", "--save-result", save, "--save-name", "net"] + SMALL
    return data, save, args + list(extra)


def test_keep_last_prunes_old_ema_files_and_best_can_be_the_ema(tmp_path):
    net = small_net([mx.cpu()])
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    ema = WeightEMA(net, 0.9)
    saver = CheckpointSaver(str(tmp_path), "net", keep_last=1)
    best = BestTracker("val-acc:label", ["label"])
    for epoch, (raw_acc, ema_acc) in enumerate([(0.5, 0.25), (0.5, 0.75), (0.25, 0.5)], start=1):
        for p in net.collect_params().values():
            p.set_data(p.data() + 1.0)
        ema.update()
        val = lambda a: {"label": {"acc": a, "loss": 1.0, "count": 4}}
        saver.save_epoch(net, trainer, epoch, {"epoch": epoch, "val": val(raw_acc), "val_loss": 1.0,
                                               "train_loss": 1.0, "ema": dict(ema.record(), val=val(ema_acc))},
                         best, ema)
    assert sorted(os.listdir(str(tmp_path))) == ["best.json", "history.csv", "history.json", "net-0003-ema.params",
                                                 "net-0003.params", "net-0003.states", "net-best.params",
                                                 "net-symbol.json"]
    assert saver.read_best()["weights"] == "ema" and saver.read_best()["epoch"] == 2
    kept = mx.nd.load(saver.best_params_file())
    name = next(n for n in ema.shadow if n.endswith("weight"))
    key = next(k for k in kept if k.endswith(name))
    assert not np.allclose(kept[key].asnumpy(), net.collect_params()[name].data().asnumpy())
    assert inference.choose_weights(str(tmp_path), "net", "best", "ema")[3] == "ema"
    atomic_write_json(saver.path("best.json"), dict(best.to_dict(), weights="raw"))
    with pytest.raises(multitask_mx.errors.UserInputError, match="--epoch best --weights ema"):
        inference.choose_weights(str(tmp_path), "net", "best", "ema")


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """Two epochs with --ema 0.9 (3 steps each), validated on 8 images."""
    data, save, args = small_run(tmp_path_factory.mktemp("ema"), 2, "--best-metric", "val-acc:label",
                                 "--ema", "0.9", "--num-epoch", "2")
    run_cli(*args)
    return {"data": data, "save": save, "args": args}


def load_params(path):
    return {k.split(":", 1)[-1]: v.asnumpy() for k, v in mx.nd.load(path).items()}


def history_of(save):
    return json.load(open(os.path.join(save, "history.json")))


@pytest.mark.slow
def test_ema_weights_are_saved_validated_and_differ_from_raw(ema_run):
    save = ema_run["save"]
    history = history_of(save)
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:
        epoch = record["epoch"]
        assert record["ema"]["updates"] == 3 * epoch  # 24 images, batch 8: one update per step
        assert set(record["ema"]["val"]) == set(record["val"]) and "val_loss" in record["ema"]
        raw = load_params(os.path.join(save, "net-%04d.params" % epoch))
        ema = load_params(os.path.join(save, "net-%04d-ema.params" % epoch))
        assert raw.keys() == ema.keys()
        assert any(not np.allclose(raw[k], ema[k]) for k in raw)
    assert "ema_val_label_acc" in open(os.path.join(save, "history.csv")).readline()
    assert "Validation (EMA weights)" in open(os.path.join(save, "train.log")).read()


@pytest.mark.slow
def test_best_json_says_which_weights_best_params_holds(ema_run):
    save = ema_run["save"]
    best = json.load(open(os.path.join(save, "best.json")))
    assert best["weights"] in ("raw", "ema")
    record = next(r for r in history_of(save) if r["epoch"] == best["epoch"])
    source = record["ema"] if best["weights"] == "ema" else record
    assert source["val"]["label"]["acc"] == best["value"]
    suffix = "-ema" if best["weights"] == "ema" else ""
    expected = load_params(os.path.join(save, "net-%04d%s.params" % (best["epoch"], suffix)))
    kept = load_params(os.path.join(save, "net-best.params"))
    for name in expected:
        np.testing.assert_array_equal(kept[name], expected[name])
    model = inference.load_model(save, epoch="best")
    assert model.weights == best["weights"] and model.describe()["weights"] == best["weights"]


@pytest.mark.slow
def test_evaluate_and_predict_load_the_ema_weights(ema_run, tmp_path):
    save, data = ema_run["save"], ema_run["data"]
    report = str(tmp_path / "eval_ema.json")
    proc = run_cli("evaluate", "--save-result", save, "--epoch", "1", "--weights", "ema", "--data", data["val"],
                   "--image-root", data["root"], "--json", report, "--quiet", "--top-k", "1")
    assert "epoch 1" in proc.stdout
    described = json.load(open(report))["model"]
    assert described["weights"] == "ema" and described["params_file"].endswith("net-0001-ema.params")
    proc = run_cli("predict", data["val"], "--image-root", data["root"], "--save-result", save, "--epoch", "1",
                   "--weights", "ema", "--json", "-", "--quiet")
    assert json.loads(proc.stdout)["model"]["weights"] == "ema"
    paths = [os.path.join(data["root"], line.rstrip("\n").split("\t")[-1]) for line in open(data["val"])]
    raw = inference.predict_paths(inference.load_model(save, epoch=1), paths).log_probs[0]
    ema = inference.predict_paths(inference.load_model(save, epoch=1, weights="ema"), paths).log_probs[0]
    assert np.isfinite(raw).all() and np.isfinite(ema).all()
    assert not np.allclose(raw, ema, atol=1e-3)


@pytest.mark.slow
def test_missing_ema_weights_are_named_with_what_exists(ema_run, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(ema_run["save"], copy)
    os.remove(os.path.join(copy, "net-0002-ema.params"))
    proc = run_cli("evaluate", "--save-result", copy, "--epoch", "2", "--weights", "ema", "--data",
                   ema_run["data"]["val"], expect=2)
    assert "Traceback" not in proc.stderr
    assert "net-0002-ema.params" in proc.stderr and "Epochs with EMA weights: 1." in proc.stderr


@pytest.mark.slow
def test_resume_continues_the_ema_from_its_file(ema_run, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(ema_run["save"], copy)
    args = [copy if a == ema_run["save"] else a for a in ema_run["args"]]
    args[args.index("--num-epoch") + 1] = "3"
    run_cli(*(args + ["--resume"]))
    history = history_of(copy)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[2]["ema"]["updates"] == 9  # counted on from 6, so the warm-up is not restarted
    log = open(os.path.join(copy, "train.log")).read()
    assert "continued from %s after 6 updates" % os.path.join(copy, "net-0002-ema.params") in log
    assert os.path.exists(os.path.join(copy, "net-0003-ema.params"))

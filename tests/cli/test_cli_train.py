"""End-to-end runs of `multitask-mx train` on tiny real images, through the real CLI."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from conftest import REPO, make_images, run_cli, write_list
from multitask_mx import mxprivate

pytestmark = pytest.mark.slow

SMALL = ["--network", "resnet18_v1", "--image-shape", "3,32,32", "--batch-size", "8", "--lr", "0.01",
         "--data-nthreads", "1", "--quiet"]


def train_args(data, save, *extra):
    return ["train", "--data-train", data["train"], "--image-train", data["root"],
            "--data-val", data["val"], "--image-val", data["root"], "--num-classes", "4",
            "--save-result", save, "--save-name", "net"] + SMALL + list(extra)


def load_params(path):
    return {k.split(":", 1)[-1]: v.asnumpy() for k, v in mx.nd.load(path).items()}


@pytest.fixture(scope="module")
def two_device_run(tmp_path_factory):
    """One 3-epoch run on two CPU contexts, shared by the tests that inspect its files."""
    tmp = tmp_path_factory.mktemp("run")
    root = tmp / "images"
    data = {"root": str(root),
            "train": write_list(tmp / "train.lst", make_images(str(root), 5, seed=1)),
            "val": write_list(tmp / "val.lst", make_images(str(root), 2, seed=2), start_index=100)}
    save = str(tmp / "save")
    proc = run_cli(*train_args(data, save, "--cpus", "2", "--num-epoch", "3", "--best-metric", "val-acc:label"))
    return {"data": data, "save": save, "proc": proc}


def test_run_writes_every_output_file(two_device_run):
    save = two_device_run["save"]
    for name in ["config.json", "history.json", "history.csv", "train.log", "net-symbol.json", "best.json",
                 "net-best.params"] + ["net-%04d.params" % e for e in (1, 2, 3)] + \
            ["net-%04d.states" % e for e in (1, 2, 3)]:
        assert os.path.getsize(os.path.join(save, name)) > 0, name
    history = json.load(open(os.path.join(save, "history.json")))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for record in history:
        assert set(record["train"]) == {"label", "label_gt0"}
        assert set(record["val"]) == {"label", "label_gt0"}
        assert record["speed_img_s"] > 0 and record["lr"] > 0
    config = json.load(open(os.path.join(save, "config.json")))
    assert [t["name"] for t in config["tasks"]] == ["label", "label_gt0"]
    assert config["normalization"] == "imagenet" and config["image_shape"] == [3, 32, 32]
    log = open(os.path.join(save, "train.log")).read()
    assert "cpu(0), cpu(1)" in log and "OMP_NUM_THREADS" in log


def test_best_checkpoint_holds_best_epoch_with_two_devices(two_device_run):
    save = two_device_run["save"]
    history = json.load(open(os.path.join(save, "history.json")))
    best = json.load(open(os.path.join(save, "best.json")))
    accs = [r["val"]["label"]["acc"] for r in history]
    assert best["metric"] == "val-acc:label"
    assert best["epoch"] == 1 + int(np.argmax(accs))  # first epoch reaching the maximum
    best_params = load_params(os.path.join(save, "net-best.params"))
    epoch_params = load_params(os.path.join(save, "net-%04d.params" % best["epoch"]))
    assert best_params.keys() == epoch_params.keys()
    for name in best_params:
        np.testing.assert_array_equal(best_params[name], epoch_params[name])


def test_saved_checkpoint_reloads_with_same_predictions(two_device_run):
    save = two_device_run["save"]
    x = mx.nd.random.uniform(-1, 1, shape=(4, 3, 32, 32))
    block = mx.gluon.SymbolBlock.imports(os.path.join(save, "net-symbol.json"), ["data"],
                                         os.path.join(save, "net-0003.params"))
    gluon_out = [o.asnumpy() for o in block(x)]
    assert [o.shape for o in gluon_out] == [(4, 4), (4, 2)]
    sym, args, aux = mx.model.load_checkpoint(os.path.join(save, "net"), 3)
    module = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
    module.bind(data_shapes=[("data", x.shape)], for_training=False)
    module.set_params(args, aux)
    module.forward(mx.io.DataBatch([x]), is_train=False)
    for a, b in zip(gluon_out, module.get_outputs()):
        np.testing.assert_allclose(a, b.asnumpy(), rtol=1e-4, atol=1e-4 * np.abs(a).max())
    # and our own rebuild path (used by --resume) gives the same numbers
    from multitask_mx.model import network as model
    from multitask_mx.data import tasks
    config = json.load(open(os.path.join(save, "config.json")))
    task_list = [tasks.Task.from_dict(t) for t in config["tasks"]]
    net = model.build_net(model.TrunkSpec(config["network"]), task_list, [mx.cpu()], (3, 32, 32))
    model.load_checkpoint_params(net, os.path.join(save, "net-0003.params"))
    for a, b in zip(gluon_out, net(x)):
        np.testing.assert_allclose(a, b.asnumpy(), rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_classic_checkpoint_trunk_is_cut_structurally(tiny_data, tmp_path, classic_checkpoint):
    save = str(tmp_path / "save")
    args = train_args(tiny_data, save, "--num-epoch", "1", "--model", classic_checkpoint, "--epoch", "0",
                      "--cpus", "2")
    del args[args.index("--lr"):args.index("--lr") + 2]  # the default lr policy, which sets the heads' rate
    proc = run_cli(*args)
    log = open(os.path.join(save, "train.log")).read()
    assert "trunk cut at layer 'flatten0'" in log
    assert "--network resnet18_v1 does not apply" in log
    assert "heads learn at 4 x --lr (fine-tuning at the default lr" in log  # and the heads' multiplier
    assert "trunk: 50 BatchNorm+ReLU pairs run as one oneDNN operator each" in log  # fusion.py, on CPU
    # the loaders (and their worker processes) are made before the network's weights are loaded
    assert log.index("phase loaders and trainer:") < log.index("pretrained trunk arrays from")
    saved_graph = open(os.path.join(save, "net-symbol.json")).read()  # the plain graph, ReLUs by their names
    assert "_contrib_BatchNormWithReLU" not in saved_graph and '"stage1_unit1_relu1"' in saved_graph
    config = json.load(open(os.path.join(save, "config.json")))
    assert config["normalization"] == "raw" and config["trunk"]["kind"] == "symbol"
    saved = load_params(os.path.join(save, "net-0001.params"))
    original = load_params(classic_checkpoint + "-0000.params")
    assert "conv0_weight" in saved and "fc1_weight" not in saved  # old classifier discarded
    assert saved["bn_data_gamma"].shape == original["bn_data_gamma"].shape
    assert any(k.startswith("multitask_head_label_") for k in saved)
    assert proc.returncode == 0


def test_gluon_params_file_loads_and_frozen_trunk_stays_unchanged(tiny_data, tmp_path):
    from gluoncv.model_zoo import get_model
    base = get_model("resnet18_v1", pretrained=False)
    base.initialize(mx.init.Xavier())
    base(mx.nd.zeros((1, 3, 32, 32)))
    params_file = str(tmp_path / "resnet18_v1.params")
    base.save_parameters(params_file)
    save = str(tmp_path / "save")
    run_cli(*train_args(tiny_data, save, "--num-epoch", "1", "--model", params_file, "--freeze-trunk"))
    saved = load_params(os.path.join(save, "net-0001.params"))
    pretrained = {k: v.asnumpy() for k, v in mx.nd.load(params_file).items()}
    conv_weights = [k for k in pretrained if k.startswith("features.") and k.endswith("weight")]
    assert conv_weights
    net_names = {k.split("resnetv10_", 1)[-1]: k for k in saved if "resnetv10_" in k}
    structural = dict(mxprivate.structural_params(base.features))
    for key in conv_weights:
        name = structural[key[len("features."):]].name.split("resnetv1", 1)[-1].split("_", 1)[-1]
        np.testing.assert_array_equal(saved[net_names[name]], pretrained[key])
    log = open(os.path.join(save, "train.log")).read()
    assert "only the heads train" in log
    assert "heads learn at" not in log  # --freeze-trunk: the heads alone, at --lr


def test_params_file_of_another_network_is_refused_with_a_list(tiny_data, tmp_path):
    from gluoncv.model_zoo import get_model
    base = get_model("resnet18_v1", pretrained=False)
    base.initialize()
    base(mx.nd.zeros((1, 3, 32, 32)))
    params_file = str(tmp_path / "r18.params")
    base.save_parameters(params_file)
    args = train_args(tiny_data, str(tmp_path / "s"), "--num-epoch", "1", "--model", params_file)
    args[args.index("resnet18_v1")] = "resnet34_v1"
    proc = run_cli(*args, expect=2)
    assert "do not fit the network" in proc.stderr and "missing in file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_image_stops_before_training_or_is_skipped(tiny_data, tmp_path):
    with open(tiny_data["train"], "a") as f:
        f.write("999\t1.000000\tcircle/not_there.jpg\n")
    save = str(tmp_path / "save")
    proc = run_cli(*train_args(tiny_data, save, "--num-epoch", "1"), expect=2)
    assert "not_there.jpg does not exist" in proc.stderr and "train.lst:25" in proc.stderr
    assert "--skip-bad-images" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(save, "net-0001.params"))
    run_cli(*train_args(tiny_data, save, "--num-epoch", "1", "--skip-bad-images"))
    log = open(os.path.join(save, "train.log")).read()
    assert "skipped 1 bad image(s)" in log


def test_flag_conflicts_stop_before_any_work(tiny_data, tmp_path):
    save = str(tmp_path / "save")
    proc = run_cli(*train_args(tiny_data, save, "--freeze-trunk", "--unfreeze-from", "stage4"), expect=2)
    assert "--freeze-trunk" in proc.stderr and "--unfreeze-from" in proc.stderr
    proc = run_cli(*train_args(tiny_data, save, "--dtype", "float16"), expect=2)
    assert "needs GPUs" in proc.stderr
    proc = run_cli(*train_args(tiny_data, save, "--resume"), expect=2)
    assert "no config.json" in proc.stderr
    assert not os.path.exists(os.path.join(save, "net-0001.params"))


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tiny_data, tmp_path):
    save = str(tmp_path / "save")
    proc = run_cli(*train_args(tiny_data, save, "--num-epoch", "2", "--lr", "1e12", "--disp-batches", "1",
                               "--lr-step-epochs", "9"), expect=3)
    assert "NaN or infinite" in proc.stderr and "batch" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigkill_mid_run_then_resume_completes_all_epochs(tiny_data, tmp_path):
    save = str(tmp_path / "save")
    args = [sys.executable, "-m", "multitask_mx"] + train_args(
        tiny_data, save, "--num-epoch", "4", "--checkpoint-every", "1", "--lr-scheduler", "cosine")
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = os.path.join(save, "history.json")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(history) and len(json.load(open(history))) >= 1 and \
                os.path.exists(os.path.join(save, "progress.json")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(json.load(open(history)))
    assert done_before < 4
    run_cli(*train_args(tiny_data, save, "--num-epoch", "4", "--resume", "--lr-scheduler", "cosine"))
    records = json.load(open(history))
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    log = open(os.path.join(save, "train.log")).read()
    assert "resuming after epoch %d" % done_before in log
    # the cosine schedule continued where it was: lr falls epoch after epoch
    lrs = [r["lr"] for r in records]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_batch_size_not_given_follows_the_run_length_and_resume_keeps_it(tiny_data, tmp_path):
    save = str(tmp_path / "save")
    flags = [a for a in train_args(tiny_data, save) if a not in ("--batch-size", "8")]  # SMALL's batch left out
    run_cli(*flags, "--num-epoch", "1")
    log = open(os.path.join(save, "train.log")).read()
    assert "batch size 8 (a short run: 3 updates in 1 epoch(s)" in log  # 24 images: 3 batches of 8
    config = json.load(open(os.path.join(save, "config.json")))
    assert config["batch_size"] == 8 and config["args"]["batch_size"] is None  # settled, the flags as given
    # every value the run settled, with why: the policy's, the flag's, auto's
    settled = config["settled"]
    assert settled["batch_size"]["value"] == 8 and settled["batch_size"]["why"].startswith("a short run: 3 updates")
    assert settled["lr"] == {"value": 0.01, "why": "--lr"} and settled["dtype"] == {"value": "float32", "why": "--dtype"}
    assert settled["augment"]["value"] in ("light", "standard") and settled["augment"]["why"]
    assert settled["head_lr_mult"]["value"] == 1.0 and settled["head_lr_mult"]["why"]
    run_cli(*flags, "--num-epoch", "2", "--resume")
    log = open(os.path.join(save, "train.log")).read()
    assert "batch size 8: the one the resumed run used (config.json)" in log


def test_continuing_a_run_keeps_the_heads_lr_multiplier_it_trained_with(tiny_data, tmp_path):
    save = str(tmp_path / "save")
    flags = [a for a in train_args(tiny_data, save) if a not in ("--lr", "0.01")]  # the default lr policy
    run_cli(*flags, "--num-epoch", "1")  # from scratch: heads at 1x
    assert json.load(open(os.path.join(save, "config.json")))["head_lr_mult"] == 1.0
    # the original's way to continue, --model SAVE_PREFIX, looks like fine-tuning to the default rule
    run_cli(*flags, "--num-epoch", "2", "--model", os.path.join(save, "net"), "--model-epoch", "1")
    log = open(os.path.join(save, "train.log")).read()
    assert "resuming after epoch 1" in log and "heads learn at" not in log
    assert [r["epoch"] for r in json.load(open(os.path.join(save, "history.json")))] == [1, 2]


def test_resume_refuses_a_run_of_other_tasks_or_network(two_device_run, tmp_path):
    data, save = two_device_run["data"], two_device_run["save"]
    proc = run_cli(*train_args(data, save, "--resume", "--num-epoch", "4", "--no-derived-task"), expect=2)
    assert "--resume" in proc.stderr and "tasks" in proc.stderr and "Traceback" not in proc.stderr
    args = train_args(data, save, "--resume", "--num-epoch", "4")
    args[args.index("resnet18_v1")] = "resnet34_v1"
    proc = run_cli(*args, expect=2)
    assert "network resnet18_v1, not resnet34_v1" in proc.stderr
    assert not os.path.exists(os.path.join(save, "net-0004.params"))


def test_image_that_fails_only_when_decoded_mid_epoch(tiny_data, tmp_path):
    # passes the header/trailer check, fails in the loader's worker process
    bad = os.path.join(tiny_data["root"], "circle", "garbage.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8" + os.urandom(64) + b"\xff\xd9")
    with open(tiny_data["train"], "a") as f:
        f.write("998\t1.000000\tcircle/garbage.jpg\n")
    save = str(tmp_path / "save")
    # batch 8 over 25 images: the remainder rolls over, so two epochs see every image
    proc = run_cli(*train_args(tiny_data, save, "--num-epoch", "2", "--data-nthreads", "1"), expect=2)
    assert "garbage.jpg cannot be decoded" in proc.stderr and "train.lst:25" in proc.stderr
    assert "Traceback" not in proc.stderr
    run_cli(*train_args(tiny_data, save, "--num-epoch", "2", "--skip-bad-images", "--overwrite"))
    log = open(os.path.join(save, "train.log")).read()
    assert "skipped unreadable image" in log and "garbage.jpg" in log
    assert sum(r.get("skipped_images", 0) for r in json.load(open(os.path.join(save, "history.json")))) >= 1

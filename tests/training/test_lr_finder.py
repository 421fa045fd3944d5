"""The lr range test: its schedule, the suggestion on a real small run, find-lr and train --lr auto."""
import argparse
import json
import os

import numpy as np
import pytest

from conftest import run_cli
from multitask_mx.training import lr_finder, loop as training
from multitask_mx.model import network as model
from multitask_mx.data import tasks as tasks_mod
from multitask_mx.data.augment_presets import PRESETS
from multitask_mx.data.augment import TrainTransform
from multitask_mx.data.datasets import LstDataset, make_loader
from multitask_mx.errors import UserInputError
from multitask_mx.data.lists import read_list
from multitask_mx.training.lr_finder import FinderConfig, find_lr

import mxnet as mx


def test_lr_grows_exponentially_from_start_to_end():
    cfg = FinderConfig(start_lr=1e-5, end_lr=1.0, steps=11)
    assert cfg.lr_at(0) == pytest.approx(1e-5) and cfg.lr_at(10) == pytest.approx(1.0)
    assert cfg.lr_at(5) == pytest.approx(1e-5 * 10 ** 2.5)
    assert FinderConfig(steps=100).smoothing == pytest.approx(0.8)


def _parse(*argv):
    parser = argparse.ArgumentParser()
    lr_finder.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv, flag", [(["--find-lr-start", "0"], "--find-lr-start"),
                                        (["--find-lr-start", "1", "--find-lr-end", "0.1"], "--find-lr-end"),
                                        (["--find-lr-steps", "3"], "--find-lr-steps")])
def test_bad_finder_flags_are_refused(argv, flag):
    with pytest.raises(UserInputError, match=flag):
        FinderConfig.from_args(_parse(*argv))


def _descending_at(result):
    """True if the suggestion is before the minimum, where the smoothed loss is falling."""
    i, smoothed = result.suggestion_index, np.array(result.smoothed)
    return 0 < i < result.minimum_index and smoothed[i - 1] > smoothed[min(i + 1, result.minimum_index)] \
        and smoothed[i] > smoothed[result.minimum_index]


@pytest.fixture
def small_setup(tiny_data):
    """A real resnet18_v1 two-task net at 32 px and a loader over the tiny training images."""
    mx.random.seed(3)
    np.random.seed(3)
    tasks = tasks_mod.build_tasks([4])  # label and the derived label_gt0
    ctxs = [mx.cpu()]
    net = model.build_net(model.TrunkSpec(network="resnet18_v1"), tasks, ctxs, (3, 32, 32))
    net.hybridize(static_alloc=True, static_shape=True)
    dataset = LstDataset(read_list(tiny_data["train"], tiny_data["root"]), tasks,
                         TrainTransform((32, 32), "imagenet", PRESETS["light"]))
    loss_fn = training.MultiTaskLoss([t.num_classes for t in tasks])
    return net, make_loader(dataset, 8, True, 0), ctxs, loss_fn, tasks


def test_find_lr_suggests_an_lr_where_the_loss_falls_and_restores_the_net(small_setup):
    net, loader, ctxs, loss_fn, tasks = small_setup
    before = {name: p.data().asnumpy().copy() for name, p in net.collect_params().items()}
    result = find_lr(net, loader, ctxs, loss_fn, tasks, FinderConfig(start_lr=1e-4, end_lr=10.0, steps=40),
                     optimizer_params={"momentum": 0.9, "wd": 1e-4})
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) <= 40
    assert result.stopped_early  # lr 10 makes any network diverge
    assert _descending_at(result), (result.suggestion_index, result.minimum_index, result.smoothed)
    assert result.suggestion == result.lrs[result.suggestion_index]
    after = {name: p.data().asnumpy() for name, p in net.collect_params().items()}
    assert all(np.array_equal(before[name], after[name]) for name in before)  # weights and BN statistics


@pytest.mark.slow
def test_find_lr_command_writes_the_curve_and_no_run(tiny_data, tmp_path):
    out = str(tmp_path / "curve" / "lr.png")
    save = str(tmp_path / "never")
    proc = run_cli("find-lr", "--network", "resnet18_v1", "--image-shape", "3,32,32", "--batch-size", "8",
                   "--data-train", tiny_data["train"], "--image-train", tiny_data["root"], "--save-result", save,
                   "--find-lr-start", "1e-4", "--find-lr-steps", "40", "--find-lr-out", out, "--seed", "3",
                   "--data-nthreads", "1", "--quiet")
    curve = json.load(open(str(tmp_path / "curve" / "lr.json")))
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "suggested lr: %.4g" % curve["suggestion"] in proc.stdout
    assert curve["suggestion_index"] < curve["minimum_index"]
    assert not os.path.exists(save)  # find-lr changes no saved run


@pytest.mark.slow
def test_train_lr_auto_runs_the_finder_then_trains_with_its_suggestion(tiny_data, tmp_path):
    save = str(tmp_path / "save")
    run_cli("train", "--network", "resnet18_v1", "--image-shape", "3,32,32", "--batch-size", "8", "--num-epoch", "1",
            "--data-train", tiny_data["train"], "--image-train", tiny_data["root"], "--save-result", save,
            "--lr", "auto", "--find-lr-start", "1e-4", "--find-lr-steps", "30", "--lr-scheduler", "step",
            "--seed", "3", "--data-nthreads", "1", "--quiet")
    curve = json.load(open(os.path.join(save, "lr_finder.json")))
    log = open(os.path.join(save, "train.log")).read()
    assert "lr %.4g: suggested by the lr finder (--lr auto)" % curve["suggestion"] in log
    history = json.load(open(os.path.join(save, "history.json")))
    assert history[0]["lr"] == pytest.approx(curve["suggestion"])  # step schedule: --lr throughout epoch 1
    assert os.path.exists(os.path.join(save, "lr_finder.png"))
    assert json.load(open(os.path.join(save, "config.json")))["lr"] == pytest.approx(curve["suggestion"])

"""--early-stop N: stop after N epochs without a new best --best-metric, keep the best, resume the count."""
import json
import os
import shutil
import time

import numpy as np
import pytest

import multitask_mx  # noqa: F401  (numpy shim before mxnet)

from conftest import run_cli
from multitask_mx.training.best import BestTracker
from multitask_mx.training.early_stopping import EarlyStopping
from test_ema import load_params, small_run


def record(epoch, acc):
    return {"epoch": epoch, "val": {"label": {"acc": acc, "loss": 1.0, "count": 4}}, "val_loss": 1.0,
            "train_loss": 1.0}


def test_stops_after_patience_epochs_without_a_new_best():
    best = BestTracker("val-acc:label", ["label"])
    stopper = EarlyStopping(2, best)
    stops = []
    for epoch, acc in enumerate([0.25, 0.5, 0.5, 0.75, 0.25, 0.75], start=1):
        best.update(record(epoch, acc))
        stops.append(stopper.should_stop(epoch))
    # a tie is no improvement: epoch 4 is the best, epochs 5 and 6 bring nothing
    assert stops == [False, False, False, False, False, True]
    info = stopper.stop_record(6)
    assert (info["epoch"], info["best_epoch"], info["patience"]) == (6, 4, 2)
    assert not EarlyStopping(0, best).should_stop(6)  # 0: off


def test_count_resumes_from_the_restored_best():
    best = BestTracker("val-acc:label", ["label"])
    best.restore({"metric": "val-acc:label", "value": 0.5, "epoch": 3, "weights": "raw"})
    stopper = EarlyStopping(3, best, start_epoch=5)
    assert stopper.epochs_without_improvement(5) == 2
    assert not stopper.should_stop(5) and stopper.should_stop(6)
    fresh = EarlyStopping(2, BestTracker("val-loss", ["label"]), start_epoch=4)  # no best yet: count from start
    assert not fresh.should_stop(5) and fresh.should_stop(6)


def test_early_stop_without_validation_is_refused_up_front(tmp_path):
    tic = time.time()
    proc = run_cli("train", "--data-train", str(tmp_path / "missing.lst"), "--save-result", str(tmp_path / "s"),
                   "--early-stop", "2", expect=2)
    assert "--early-stop 2 watches --best-metric val-loss, which needs --data-val" in proc.stderr
    assert "Traceback" not in proc.stderr and time.time() - tic < 60
    proc = run_cli("train", "--data-train", str(tmp_path / "missing.lst"), "--save-result", str(tmp_path / "s"),
                   "--early-stop", "-1", expect=2)
    assert "--early-stop -1" in proc.stderr


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run with --early-stop 1 on val-acc:label over 4 validation images.

    Accuracy on 4 images takes 5 values, so it can rise at most 5 times: the run
    must stop by epoch 6, before --num-epoch 7, however the training goes.
    """
    _, save, args = small_run(tmp_path_factory.mktemp("early"), 1, "--best-metric", "val-acc:label",
                              "--early-stop", "1", "--num-epoch", "7", "--seed", "5")
    run_cli(*args)
    return {"save": save, "args": args}


def read(save, name):
    return json.load(open(os.path.join(save, name)))


@pytest.mark.slow
def test_run_stops_one_epoch_after_its_best_and_keeps_the_best(stopped_run):
    save = stopped_run["save"]
    history, best = read(save, "history.json"), read(save, "best.json")
    last = history[-1]
    assert last["epoch"] < 7 and last["epoch"] == best["epoch"] + 1
    assert last["stopped_early"]["epoch"] == last["epoch"]
    assert last["stopped_early"]["best_epoch"] == best["epoch"] and last["stopped_early"]["patience"] == 1
    assert all("stopped_early" not in r for r in history[:-1])
    accs = [r["val"]["label"]["acc"] for r in history]
    assert all(b > a for a, b in zip(accs[:-2], accs[1:-1]))  # every epoch before the stop improved
    assert accs[-1] <= accs[-2]
    kept = load_params(os.path.join(save, "net-best.params"))
    best_epoch = load_params(os.path.join(save, "net-%04d.params" % best["epoch"]))
    after = load_params(os.path.join(save, "net-%04d.params" % last["epoch"]))
    for name in best_epoch:
        np.testing.assert_array_equal(kept[name], best_epoch[name])
    assert any(not np.array_equal(kept[k], after[k]) for k in kept)  # training went on after the best
    log = open(os.path.join(save, "train.log")).read()
    assert "early stop after epoch %d: val-acc:label has not improved for 1 epoch(s)" % last["epoch"] in log


@pytest.mark.slow
def test_resume_keeps_the_count(stopped_run, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(stopped_run["save"], copy)
    args = [copy if a == stopped_run["save"] else a for a in stopped_run["args"]] + ["--resume"]
    before = read(copy, "history.json")
    stop_epoch = before[-1]["epoch"]
    proc = run_cli(*args)  # the same patience: it had stopped, so nothing more is trained
    assert read(copy, "history.json") == before
    assert "nothing to train" in open(os.path.join(copy, "train.log")).read()
    # a patience of 2 allows one more epoch; the count goes on from the best epoch in best.json
    args[args.index("--early-stop") + 1] = "2"
    args[args.index("--num-epoch") + 1] = str(stop_epoch + 2)
    run_cli(*args)
    history, best = read(copy, "history.json"), read(copy, "best.json")
    assert history[stop_epoch - 1]["stopped_early"]["epoch"] == stop_epoch  # the first stop stays on record
    # no new best in epoch E+1 makes 2 epochs without one: stop there; else on to the last epoch, E+2
    stops = best["epoch"] < stop_epoch + 1
    assert [r["epoch"] for r in history] == list(range(1, stop_epoch + (2 if stops else 3)))
    assert ("stopped_early" in history[-1]) == stops
    assert proc.returncode == 0

"""Training features through the real CLI, on tiny settings: each test fails if its flag stops working."""
import json
import math
import os
import pickle

import cv2
import pytest

from conftest import run_cli
from multitask_mx.training.states import STATES_FORMAT

SMALL = ["--network", "mobilenet0.25", "--image-shape", "3,32,32", "--batch-size", "8", "--data-nthreads", "1",
         "--seed", "1", "--num-classes", "4", "--save-name", "net", "--quiet"]


def train_args(data, save, *extra):
    return ["train", "--data-train", data["train"], "--image-train", data["root"], "--data-val", data["val"],
            "--image-val", data["root"], "--save-result", save] + SMALL + list(extra)


def smoothed_entropy(eps, classes):
    """The smallest cross-entropy a network can reach against labels smoothed by ``eps``."""
    on, off = 1 - eps + eps / classes, eps / classes
    return -(on * math.log(on) + (classes - 1) * off * math.log(off))


@pytest.mark.slow
def test_mixup_label_smoothing_adam_keep_last_and_val_acc_mean(tiny_data, tmp_path):
    save = str(tmp_path / "run")
    run_cli(*train_args(tiny_data, save, "--num-epoch", "3", "--lr", "0.001", "--optimizer", "adam", "--mixup",
                        "0.4", "--label-smoothing", "0.2", "--keep-last", "1", "--best-metric", "val-acc-mean"))
    history = json.load(open(os.path.join(save, "history.json")))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    # label smoothing: no loss can fall below the smoothed labels' own entropy (mixing only adds to it)
    floor = smoothed_entropy(0.2, 4)
    assert all(r[split]["label"]["loss"] > floor - 1e-3 for r in history for split in ("train", "val"))
    # --keep-last 1: only the newest epoch's files stay, with best
    names = sorted(n for n in os.listdir(save) if n.endswith((".params", ".states")) and "last" not in n)
    assert [n for n in names if n.startswith("net-0")] == ["net-0003.params", "net-0003.states"]
    assert "net-best.params" in names
    # --best-metric val-acc-mean: the best epoch is the one with the highest mean validation accuracy
    best = json.load(open(os.path.join(save, "best.json")))
    means = {r["epoch"]: sum(v["acc"] for v in r["val"].values()) / len(r["val"]) for r in history}
    assert best["metric"] == "val-acc-mean" and best["value"] == pytest.approx(max(means.values()))
    assert means[best["epoch"]] == pytest.approx(max(means.values()))
    # --optimizer adam: the saved optimizer states are Adam's (mean and variance per weight)
    payload = pickle.load(open(os.path.join(save, "net-0003.states"), "rb"))
    assert payload["format"] == STATES_FORMAT
    states, optimizer = pickle.loads(payload["devices"][0])
    assert type(optimizer).__name__ == "Adam" and all(len(s) == 2 for s in states.values())
    args = json.load(open(os.path.join(save, "config.json")))["args"]
    assert args["mixup"] == 0.4 and args["label_smoothing"] == 0.2


def test_plot_lr_draws_the_schedule_and_trains_nothing(tiny_data, tmp_path):
    save, png = str(tmp_path / "run"), str(tmp_path / "lr.png")
    run_cli(*train_args(tiny_data, save, "--num-epoch", "4", "--lr", "0.1", "--lr-scheduler", "step",
                        "--lr-step-epochs", "2", "--plot-lr", png))
    image = cv2.imread(png)
    assert image is not None and image.shape[:2] == (400, 900)  # plots.LR_PLOT_SIZE; its curve: test_plots.py
    assert _checkpoints(save) == []


def _checkpoints(save):
    return [n for n in os.listdir(save) if n.endswith(".params")] if os.path.isdir(save) else []


def test_preview_augmentation_writes_a_grid_of_training_samples(tiny_data, tmp_path):
    save, png = str(tmp_path / "run"), str(tmp_path / "grid.png")
    run_cli(*train_args(tiny_data, save, "--preview-augmentation", "6", "--preview-out", png, "--augment",
                        "standard"))
    grid = cv2.imread(png)
    pad = 2  # plots.GRID_PAD: six 32x32 samples on one row
    assert grid.shape == (32 + 2 * pad, 6 * 32 + 7 * pad, 3)
    cells = [grid[pad:pad + 32, pad + i * (32 + pad):pad + i * (32 + pad) + 32] for i in range(6)]
    assert all(cell.std() > 5 for cell in cells)  # drawn shapes, not blank cells
    assert _checkpoints(save) == []

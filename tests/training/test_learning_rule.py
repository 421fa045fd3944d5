"""`--augment auto` follows the rule docs/learning.md states, and that page is what the stored grid gives (issue 24)."""
import dataclasses
import os
import subprocess
import sys

import pytest

from multitask_mx import api
from multitask_mx.data import augment_presets
from multitask_mx.data.augment_presets import PRESETS, Situation, auto_preset, resolve_augmentation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("finetune, updates, preset", [
    (False, 48, "light"),
    (False, 149, "light"),
    (False, 150, "standard"),   # STANDARD_MIN_UPDATES
    (False, 160, "standard"),   # issue 24's cell: standard whatever the lr (the high lr gets a warmup instead)
    (True, 100000, "light"),    # fine-tuning: always light
    (True, 20, "light"),
])
def test_auto_preset_follows_the_documented_thresholds(finetune, updates, preset):
    assert augment_presets.STANDARD_MIN_UPDATES == 150
    chosen, reason = auto_preset(finetune, updates)
    assert chosen == preset and (str(updates) in reason or finetune)


@pytest.mark.parametrize("preset, updates", [("light", 60), ("standard", 160)])
def test_auto_resolves_to_the_grids_noflip_column(preset, updates):
    """The grid's default column is the `--augment PRESET --no-hflip` run: auto's settings are the same."""
    situation = Situation(image_side=32, finetune=False, num_epoch=5, images_per_class=200, num_updates=updates)
    auto = resolve_augmentation(api.parse_flags("train", data_train="a.lst", save_result="b", batch_size=64,
                                                lr=0.1), situation)
    noflip = api.parse_flags("train", data_train="a.lst", save_result="b", augment=preset, no_hflip=True)
    assert auto.preset == preset and auto.config == dataclasses.replace(PRESETS[preset], hflip=False)
    assert resolve_augmentation(noflip, situation).config == auto.config


def test_docs_learning_page_is_in_sync_with_the_stored_results():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "learning_report.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_the_grid_reaches_its_budgets_and_runs_the_issues_cell_first():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import learning_grid
    assert learning_grid.shape(400, 10, 160, 64) == (205, 5, 165)   # about 160 updates at batch 64
    assert learning_grid.shape(124, 10, 500, 32) == (124, 13, 507)  # a small pool: more epochs instead
    runs = learning_grid.plan()
    first = runs[0]
    assert (first["budget"], first["batch"], first["lr"], first["mode"]) == (160, 64, "user", "scratch")
    assert not any(r["column"] == "torch" and r["lr"] == "default" for r in runs)  # torch has its own lr
    assert {r["group"] for r in runs} == {"development", "confirmation"}

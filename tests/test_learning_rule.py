"""`--augment auto` follows the rule docs/learning.md states, and that page is what the stored grid gives (issue 24)."""
import dataclasses
import os
import subprocess
import sys

import pytest

from multitask_mx import api
from multitask_mx.data import augment_presets
from multitask_mx.data.augment_presets import PRESETS, Situation, auto_preset, resolve_augmentation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

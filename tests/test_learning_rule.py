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


@pytest.mark.parametrize("finetune, updates, lr_per_256, preset", [
    (False, 149, None, "light"),
    (False, 150, None, "standard"),  # STANDARD_MIN_UPDATES at train's default lr
    (False, 150, 0.1, "standard"),   # a lower given lr never lowers the threshold
    (False, 160, 0.4, "light"),      # issue 24: --batch-size 64 --lr 0.1, 160 updates
    (False, 299, 0.4, "light"),
    (False, 300, 0.4, "standard"),   # twice the reference lr per image: twice the updates
    (False, 225, 0.3, "standard"),
    (True, 100000, None, "light"),   # fine-tuning: always light
    (True, 100000, 0.05, "light"),
])
def test_auto_preset_follows_the_documented_thresholds(finetune, updates, lr_per_256, preset):
    assert augment_presets.STANDARD_MIN_UPDATES == 150 and augment_presets.REFERENCE_LR_PER_256 == 0.2
    chosen, reason = auto_preset(finetune, updates, lr_per_256)
    assert chosen == preset and (str(updates) in reason or finetune)


def test_auto_with_a_given_lr_resolves_to_the_light_preset_without_the_flip():
    """The flags of the issue's case, through the parser: auto's recipe is light's settings without the flip."""
    args = api.parse_flags("train", data_train="a.lst", save_result="b", batch_size=64, lr=0.1)
    situation = Situation(image_side=32, finetune=False, num_epoch=5, images_per_class=200, num_updates=160,
                          lr_per_256=0.1 * 256 / 64)
    recipe = resolve_augmentation(args, situation)
    assert recipe.preset == "light" and recipe.config == dataclasses.replace(PRESETS["light"], hflip=False)
    # the grid's default column is the `--augment light --no-hflip` run: the same settings
    noflip = api.parse_flags("train", data_train="a.lst", save_result="b", augment="light", no_hflip=True)
    assert resolve_augmentation(noflip, situation).config == recipe.config


def test_a_run_at_the_default_lr_keeps_the_measured_threshold():
    situation = Situation(image_side=32, finetune=False, num_epoch=5, images_per_class=100, num_updates=160)
    assert augment_presets.choose_preset(situation)[0] == "standard"


def test_docs_learning_page_is_in_sync_with_the_stored_results():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "learning_report.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr

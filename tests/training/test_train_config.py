"""The whole train configuration is checked before any work: lists, image checks, network."""
import os

import pytest

from conftest import run_cli
from multitask_mx import api
from multitask_mx.errors import UserInputError
from multitask_mx.training.config import TrainConfig


@pytest.mark.parametrize("flags, message", [
    ({"lr_scheduler": "cosinus"}, "--lr-scheduler 'cosinus': choose one of"),
    ({"hue": 0.9}, "--hue 0.9"),
    ({"rand_crop_scale": "0.9,0.1"}, "--rand-crop-scale 0.9,0.1"),
    ({"no_augment": True, "augment": "standard"}, "--no-augment is --augment none"),
    ({"loss_weighting": "dwa", "dwa_temperature": -1}, "--dwa-temperature"),
    ({"freeze_trunk": True, "unfreeze_from": "stage3"}, "--freeze-trunk trains no trunk layer"),
    ({"early_stop": 3}, "--early-stop 3 watches --best-metric val-loss, which needs --data-val"),
    ({"best_metric": "val-accuracy"}, "--best-metric 'val-accuracy'"),
    ({"lr": 0.01, "lr_min": 0.1}, "--lr-min 0.1"),
    ({"lr": "auto", "find_lr_steps": 3}, "--find-lr-steps 3"),
    ({"image_shape": "3,32"}, "image-shape"),
    ({"preview_augmentation": 4, "preview_out": "grid.jpg"}, "--preview-out grid.jpg"),
])
def test_each_bad_flag_is_refused_by_the_early_check(flags, message):
    args = api.parse_flags("train", data_train="missing.lst", save_result="unused", **flags)
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace("+", r"\+")):
        TrainConfig.from_args(args)


def test_good_flags_pass_the_early_check():
    args = api.parse_flags("train", data_train="missing.lst", save_result="unused", lr_scheduler="step",
                           lr_step_epochs="2,4", hue=0.1, rand_crop_scale="0.2,1", best_metric="val-acc:label",
                           warmup_epochs=1, warmup_begin_lr=0.5)  # --lr not given: its value is not known yet, so not compared
    TrainConfig.from_args(args)


def test_cli_reports_a_bad_scheduler_before_reading_a_missing_list(tmp_path):
    save = tmp_path / "run"
    proc = run_cli("train", "--data-train", tmp_path / "no-such.lst", "--image-train", tmp_path,
                   "--save-result", save, "--lr-scheduler", "cosinus", expect=2)
    assert "--lr-scheduler 'cosinus'" in proc.stderr and "no-such.lst" not in proc.stderr
    assert not os.path.exists(save)  # nothing was created for a run that cannot start

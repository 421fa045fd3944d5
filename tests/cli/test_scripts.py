"""train_multitask.sh and examples/*.sh run as written, with their environment overrides set to tiny settings."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

TINY_NET = "--network mobilenet0.25 --image-shape 3,32,32"
FAST = ["--batch-size", "8", "--data-nthreads", "1", "--quiet"]


def run_script(script, env, *flags, timeout=600):
    full_env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=REPO, OMP_NUM_THREADS="1", **env)
    proc = subprocess.run(["bash", os.path.join(REPO, script)] + list(flags), env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, "%s exit %d\n%s\n%s" % (script, proc.returncode, proc.stdout[-3000:],
                                                          proc.stderr[-3000:])
    return proc


def epochs(save):
    return [r["epoch"] for r in json.load(open(os.path.join(save, "history.json")))]


def lists_env(data, save):
    return {"DATA_TRAIN": data["train"], "IMAGE_TRAIN": data["root"], "DATA_VAL": data["val"],
            "IMAGE_VAL": data["root"], "SAVE_RESULT": save}


@pytest.mark.slow
def test_train_multitask_sh_fine_tunes_a_classic_checkpoint_with_the_originals_flags(tiny_data, tmp_path,
                                                                                      classic_checkpoint):
    save = str(tmp_path / "results")
    env = dict(lists_env(tiny_data, save), MODEL=classic_checkpoint)
    run_script("train_multitask.sh", env, "--image-shape", "3,32,32", "--num-epoch", "1", *FAST)
    assert epochs(save) == [1]
    config = json.load(open(os.path.join(save, "config.json")))
    assert config["trunk"]["kind"] == "symbol" and config["args"]["model_epoch"] == 0  # --epoch 0 reached it
    assert config["args"]["model"] == classic_checkpoint and config["save_name"] == "resnet-50"


@pytest.mark.slow
def test_train_multitask_sh_trains_from_scratch_without_a_checkpoint(tiny_data, tmp_path):
    save = str(tmp_path / "results")
    env = dict(lists_env(tiny_data, save), MODEL=str(tmp_path / "none"))
    proc = run_script("train_multitask.sh", env, *TINY_NET.split(), "--num-epoch", "1", *FAST)
    assert "training cifar_resnet20_v1 from scratch" in proc.stdout
    assert epochs(save) == [1]
    assert json.load(open(os.path.join(save, "config.json")))["network"] == "mobilenet0.25"  # later flags win


@pytest.mark.slow
def test_seed000_two_label_columns(tmp_path):
    save = str(tmp_path / "run")
    run_script("examples/seed000_cat_dog_indoor_outdoor/train_multitask.sh",
               {"LISTS": str(tmp_path / "lists"), "SAVE_RESULT": save, "NET": TINY_NET, "EPOCHS": "1"}, *FAST)
    assert epochs(save) == [1]
    tasks = [t["name"] for t in json.load(open(os.path.join(save, "config.json")))["tasks"]]
    assert tasks == ["shape", "bright_bg", "has_shape"]


@pytest.mark.slow
def test_seed001_freeze_then_finetune_then_evaluate(tmp_path):
    save = str(tmp_path / "run")
    proc = run_script("examples/seed001_feature_extraction_then_finetune.sh",
                      {"SAVE": save, "NET": TINY_NET, "EPOCHS": "3"}, *FAST)
    assert epochs(save) == [1, 2, 3]
    assert "label" in proc.stdout and "acc" in proc.stdout  # the evaluate report of the best weights


@pytest.mark.slow
def test_seed003_make_list_adam_holdout(tmp_path):
    save = str(tmp_path / "run")
    run_script("examples/seed003_lr_mult_holdout.sh", {"SAVE": save, "NET": TINY_NET, "EPOCHS": "1"}, *FAST)
    assert epochs(save) == [1]
    assert os.path.exists(os.path.join(save, "holdout_confusion_label.png"))  # one per task
    assert json.load(open(os.path.join(save, "holdout.json")))["tasks"]["label"]["num_labelled"] > 0


@pytest.mark.slow
def test_seed004_preview_schedule_then_train(tmp_path):
    save = str(tmp_path / "run")
    run_script("examples/seed004_cyclic_lr_augment_curves.sh", {"SAVE": save, "NET": TINY_NET, "EPOCHS": "1"},
               *FAST)
    assert epochs(save) == [1]
    for name in ("augmentation.png", "lr.png", "curves.png", "seedlings-best.params"):
        assert os.path.exists(os.path.join(save, name)), name

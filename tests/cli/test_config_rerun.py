"""train --config runs/x/config.json: the run's flags repeated, typed flags override, a new folder."""
import json
import os

import pytest

import multitask_mx as mtx
from multitask_mx.errors import UserInputError

from conftest import run_cli


def _args(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        return json.load(f)["args"]


def _first_run(tmp_path, tiny_data):
    run = tmp_path / "runs" / "x"
    run_cli("train", "--data-train", tiny_data["train"], "--image-train", tiny_data["root"],
            "--data-val", tiny_data["val"], "--image-val", tiny_data["root"], "--network", "mobilenet0.25",
            "--image-shape", "3,32,32", "--num-epoch", "1", "--batch-size", "8", "--lr", "0.02", "--seed", "3",
            "--derived-task", "any=label>0", "--no-hflip", "--save-result", run, "--quiet")
    return run


@pytest.mark.slow
def test_config_repeats_the_flags_typed_ones_override(tmp_path, tiny_data):
    run = _first_run(tmp_path, tiny_data)
    run_cli("train", "--config", run / "config.json", "--batch-size", "4", "--quiet")
    rerun = tmp_path / "runs" / "x-rerun"  # no --save-result: a new folder beside the old one
    first, second = _args(run), _args(rerun)
    assert second["batch_size"] == 4 and second["save_result"] == str(rerun)
    assert second["config"] == str(run / "config.json")
    different = {k for k in set(first) | set(second) if first.get(k) != second.get(k)}
    assert different == {"batch_size", "save_result", "config"}
    assert second["derived_task"] == ["any=label>0"] and second["no_hflip"] is True and second["lr"] == 0.02
    assert os.path.isfile(rerun / "multitask-0001.params")
    assert len(_args(run)) == len(first)  # the old run is untouched
    run_cli("train", "--config", run / "config.json", "--quiet", "--num-epoch", "1")
    assert os.path.isdir(tmp_path / "runs" / "x-rerun2")


@pytest.mark.slow
def test_config_with_save_result_and_the_python_api(tmp_path, tiny_data):
    run = _first_run(tmp_path, tiny_data)
    mtx.train(config=str(run / "config.json"), save_result=str(tmp_path / "again"), seed=5, quiet=True)
    first, second = _args(run), _args(tmp_path / "again")
    different = {k for k in set(first) | set(second) if first.get(k) != second.get(k)}
    assert different == {"seed", "save_result", "config"} and second["seed"] == 5


def test_config_that_is_not_a_run_config_exits_2(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"network": "resnet18_v1"}')
    proc = run_cli("train", "--config", bad, expect=2)
    assert "--config %s" % bad in proc.stderr and "args" in proc.stderr
    proc = run_cli("train", "--config", tmp_path / "missing.json", expect=2)
    assert "cannot read" in proc.stderr
    with pytest.raises(UserInputError):
        mtx.train(config=str(bad))

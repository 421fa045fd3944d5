"""Training flags that would do nothing under the others are refused before any work (issue 24).

Every row of ``flag_rules.FLAG_RULES`` has a refused case, run through the CLI's entry point
(``cli.main``: the real parser and train command, in this process to spare an interpreter start
per row; one row also through ``python -m multitask_mx``), and an accepted case with the flag's
companion, checked by train's validation alone (no training). The schedule's rows are tested in
test_flag_effects.py.
"""
import os
import time

import pytest

from conftest import no_traceback, run_cli, small_lists
from multitask_mx import api, cli
from multitask_mx.errors import UserInputError
from multitask_mx.training import flag_rules
from multitask_mx.training.config import TrainConfig

# dest -> flags (dest -> value) under which that row's flag does nothing
REFUSED = {
    "mom": {"optimizer": "adam", "mom": 0.5},
    "dwa_temperature": {"dwa_temperature": 3.0},
    "find_lr_start": {"find_lr_start": 1e-4},
    "find_lr_end": {"lr": 0.1, "find_lr_end": 1.0},
    "find_lr_steps": {"find_lr_steps": 50},
    "head_dropout": {"head_dropout": 0.5},
    "model_root": {"model_root": "models"},
    "model_epoch": {"model_epoch": 3},
    "image_val": {"image_val": "images"},
    "cpus": {"gpus": "0", "cpus": 2},
    "preview_out": {"preview_out": "grid.png"},
    "rand_crop_scale": {"crop_pad": 0.125, "rand_crop_scale": "0.5,1"},
    "rand_crop_ratio": {"no_rand_crop": True, "rand_crop_ratio": "1,2"},
    "crop_pad": {"no_rand_crop": True, "crop_pad": 0.1},
    "trunk_lr_mult": {"freeze_trunk": True, "trunk_lr_mult": 0.1},
}
# dest -> flags with the companion the row asks for: the flag takes effect, nothing is refused
ACCEPTED = {
    "mom": {"optimizer": "nag", "mom": 0.5},
    "dwa_temperature": {"loss_weighting": "dwa", "dwa_temperature": 3.0},
    "find_lr_start": {"lr": "auto", "find_lr_start": 1e-4},
    "find_lr_end": {"lr": "auto", "find_lr_end": 1.0},
    "find_lr_steps": {"lr": "auto", "find_lr_steps": 50},
    "head_dropout": {"head_hidden": 64, "head_dropout": 0.5},
    "model_root": {"pretrained": True, "model_root": "models"},
    "model_epoch": {"model": "pretrained_model/resnet-50", "model_epoch": 3},
    "image_val": {"data_val": "val.lst", "image_val": "images"},
    "cpus": {"gpus": "auto", "cpus": 2},  # auto trains on CPU contexts where no GPU is found
    "preview_out": {"preview_augmentation": 4, "preview_out": "grid.png"},
    "rand_crop_scale": {"augment": "light", "rand_crop_scale": "0.5,1"},  # light's pad-and-crop gives way
    "rand_crop_ratio": {"augment": "none", "rand_crop_ratio": "1,2"},  # none's centre crop gives way
    "crop_pad": {"augment": "none", "crop_pad": 0.1},
    "trunk_lr_mult": {"freeze_epochs": 1, "trunk_lr_mult": 0.1},
}
RULES = {rule.dest: rule for rule in flag_rules.FLAG_RULES}


def _argv(flags):
    """Command-line words for ``flags`` (dest -> value; True: a switch)."""
    words = []
    for dest, value in flags.items():
        words += ["--" + dest.replace("_", "-")] + ([] if value is True else [str(value)])
    return words


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    return small_lists(tmp_path_factory.mktemp("lists"))


def _train_flags(lists, save):
    return {"data_train": lists["train"], "image_train": lists["root"], "save_result": str(save),
            "network": "cifar_resnet20_v1", "image_shape": "3,32,32", "num_epoch": 1}


def test_every_row_has_a_refused_and_an_accepted_case():
    assert set(RULES) == set(REFUSED) == set(ACCEPTED)
    assert len(RULES) == len(flag_rules.FLAG_RULES)  # one row per flag


def test_the_defaults_are_the_train_parsers():
    """"Given" means other than the parser's default: the rules read the defaults the parsers use."""
    for command in ("train", "find-lr"):
        parser = api._command_parser(command.replace("-", "_"))
        defaults = TrainConfig.defaults()
        assert {dest: defaults[dest] for dest in RULES} == {dest: parser.get_default(dest) for dest in RULES}


@pytest.mark.parametrize("dest", sorted(REFUSED))
def test_the_cli_refuses_a_flag_that_has_no_effect(dest, lists, tmp_path, capsys):
    save = tmp_path / "run"
    start = time.monotonic()
    code = cli.main(["train"] + _argv(_train_flags(lists, save)) + _argv(REFUSED[dest]))
    err = capsys.readouterr().err
    rule = RULES[dest]
    assert code == 2 and "error: %s " % rule.flag in err and "has no effect" in err and rule.remedy in err, err
    assert "Traceback" not in err and not os.path.exists(save)  # refused before the run folder, no epoch
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("dest", sorted(ACCEPTED))
def test_the_flag_with_its_companion_is_accepted(dest, tmp_path):
    args = api.parse_flags("train", **dict(_train_flags({"train": "a.lst", "root": "images"}, tmp_path / "run"),
                                          **ACCEPTED[dest]))
    TrainConfig.from_args(args)
    assert getattr(args, dest) != TrainConfig.defaults()[dest]  # the case gives the flag
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("flags", [{"optimizer": "adam", "mom": 0.9}, {"optimizer": "SGD", "mom": 0.5},
                                   {"gpus": "0", "cpus": 1}, {"head_dropout": 0.0}])
def test_a_flag_at_its_default_or_with_an_optimizer_in_any_case_is_accepted(flags):
    """An older run's config.json repeated with --config gives every flag, most at their defaults."""
    TrainConfig.from_args(api.parse_flags("train", data_train="a.lst", save_result="b", **flags))


def test_the_python_api_refuses_the_same():
    args = api.parse_flags("train", data_train="a.lst", save_result="b", head_dropout=0.3)
    with pytest.raises(UserInputError, match="^--head-dropout 0.3 has no effect without --head-hidden"):
        TrainConfig.from_args(args)


def test_find_lr_refuses_the_rows_that_hold_there_and_keeps_its_own_flags(tmp_path, capsys):
    base = ["find-lr", "--data-train", str(tmp_path / "absent.lst"), "--save-result", str(tmp_path / "run"),
            "--find-lr-out", str(tmp_path / "lr.png")]
    assert cli.main(base + ["--optimizer", "adam", "--mom", "0.5"]) == 2
    assert "--mom 0.5 has no effect with --optimizer adam" in capsys.readouterr().err
    assert cli.main(base + ["--find-lr-steps", "50", "--image-val", "images"]) == 2
    err = capsys.readouterr().err
    assert "has no effect" not in err and "absent.lst" in err  # went on to read the list


def test_python_m_multitask_mx_refuses_without_a_traceback(lists, tmp_path):
    save = tmp_path / "run"
    proc = no_traceback(run_cli("train", *_argv(_train_flags(lists, save)), "--optimizer", "adam",
                                "--mom", "0.95", expect=2))
    assert "--mom 0.95 has no effect with --optimizer adam: it needs --optimizer sgd or nag" in proc.stderr
    assert not os.path.exists(save)

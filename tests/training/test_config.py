"""One resolved configuration: every train flag has one stage that declares and holds it, and stage code
takes its settings, never the argparse Namespace."""
import argparse
import ast
import dataclasses
import os

import pytest

from conftest import REPO
from multitask_mx import api
from multitask_mx.commands import find_lr, train as train_command
from multitask_mx.errors import UserInputError
from multitask_mx.training.config import TrainConfig


def _train_dests(add_arguments):
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return [action.dest for action in parser._actions]


def test_each_stage_holds_exactly_the_flags_it_declares():
    for name, stage in TrainConfig.stages().items():
        fields = [f.name for f in dataclasses.fields(stage)]
        assert sorted(fields) == sorted(stage.flag_dests()), name


def test_every_train_flag_belongs_to_one_stage():
    owners = {}
    for name, stage in TrainConfig.stages().items():
        for dest in stage.flag_dests():
            owners.setdefault(dest, []).append(name)
    assert {d: o for d, o in owners.items() if len(o) > 1} == {}
    assert sorted(list(owners) + ["config"]) == sorted(_train_dests(train_command.add_arguments))
    assert set(_train_dests(find_lr.add_arguments)) == set(owners) | {"config", "find_lr_out"}


def test_settings_are_typed_frozen_and_record_every_flag():
    args = api.parse_flags("train", data_train="a.lst", save_result="run", batch_size=16, lr=0.05, augment="light")
    config = TrainConfig.from_args(args)
    assert (config.optim.batch_size, config.optim.lr, config.augment.augment) == (16, 0.05, "light")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.optim.lr = 1.0
    # config.json's "args" (read back by --config and --resume) is every flag, as the Namespace had them
    expected = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    assert config.flags() == dict(sorted(expected.items()))


def test_a_stage_check_and_a_cross_stage_check_refuse_before_any_work(tmp_path):
    with pytest.raises(UserInputError, match="--freeze-trunk trains no trunk layer"):
        TrainConfig.from_args(api.parse_flags("train", data_train="a.lst", save_result=str(tmp_path / "r"),
                                              freeze_trunk=True, unfreeze_from="stage3"))
    with pytest.raises(UserInputError, match="--early-stop 2 watches --best-metric val-loss, which needs --data-val"):
        TrainConfig.from_args(api.parse_flags("train", data_train="a.lst", save_result=str(tmp_path / "r"),
                                              early_stop=2))
    assert not os.path.exists(tmp_path / "r")


def _functions_taking_args(package):
    found = []
    for folder, _, files in os.walk(os.path.join(REPO, "multitask_mx", package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                for node in ast.walk(ast.parse(open(path).read())):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                            "args" in [a.arg for a in node.args.args + node.args.kwonlyargs]:
                        found.append("%s:%s" % (os.path.relpath(path, REPO), node.name))
    return found


# the one place the parsed flags become settings
NAMESPACE_READERS = ["multitask_mx/training/config.py:from_args"]


@pytest.mark.parametrize("package", ["data", "model", "training", "use"])
def test_stage_functions_take_settings_not_the_namespace(package):
    assert [f for f in _functions_taking_args(package) if f not in NAMESPACE_READERS] == []

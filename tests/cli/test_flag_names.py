"""One meaning per flag name across subcommands, with the old names still accepted."""
import logging

import pytest

from multitask_mx import api, cli
from multitask_mx.errors import UserInputError
from multitask_mx.training.config import TrainConfig


def _parse(argv):
    return cli.build_parser([argv[0]]).parse_args(argv)


def test_top_k_is_top_k_accuracy_in_train_and_evaluate():
    assert _parse(["evaluate", "--save-result", "r", "--data", "x.lst"]).top_k == [1, 5]
    assert _parse(["evaluate", "--save-result", "r", "--data", "x.lst", "--top-k", "5,1,2"]).top_k == [1, 2, 5]
    assert _parse(["train", "--data-train", "x.lst", "--save-result", "r", "--top-k", "3"]).top_k == [3]
    args = api.parse_flags("train", data_train="x.lst", save_result="r", top_k="1,5")
    with pytest.raises(UserInputError, match="training reports one top-k accuracy"):
        TrainConfig.from_args(args)


@pytest.mark.parametrize("value", ["0", "x", "1,-2", ""])
def test_bad_top_k_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as stop:
        _parse(["evaluate", "--save-result", "r", "--data", "x.lst", "--top-k", value])
    assert stop.value.code == 2 and "--top-k" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["predict", "--save-result", "r", "a.jpg"], ["serve", "--save-result", "r"]])
def test_show_counts_the_returned_classes_and_top_k_is_its_deprecated_alias(command, caplog):
    assert _parse(command).show == 3
    assert _parse(command + ["--show", "2"]).show == 2
    with caplog.at_level(logging.WARNING):
        assert _parse(command + ["--top-k", "4"]).show == 4
    assert "--top-k is deprecated here: use --show" in caplog.text
    assert not hasattr(_parse(command), "top_k")


def test_train_model_epoch_with_the_originals_epoch_as_alias(caplog):
    base = ["train", "--data-train", "x.lst", "--save-result", "r", "--model", "pretrained_model/resnet-50"]
    assert _parse(base + ["--model-epoch", "3"]).model_epoch == 3
    with caplog.at_level(logging.WARNING):
        assert _parse(base + ["--epoch", "3"]).model_epoch == 3  # train_multitask.sh passes --epoch
    assert caplog.text == ""  # the original's scripts run without a warning
    assert _parse(base).model_epoch == 0


@pytest.mark.parametrize("choice", ["header", "full", "none"])
def test_check_images_takes_the_same_choices_in_train_and_make_list(choice):
    train = _parse(["train", "--data-train", "x.lst", "--save-result", "r", "--check-images", choice])
    make_list = _parse(["make-list", "p", "root", "--check-images", choice])
    assert train.check_images == make_list.check_images == choice
    assert _parse(["make-list", "p", "root"]).check_images == "none"
    assert _parse(["make-list", "p", "root", "--check-images"]).check_images == "full"  # the old on/off form

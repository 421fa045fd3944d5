"""Schedule flags that would do nothing under the others: refused with what to add, or take effect (issue 24).

Every row of ``schedules.NO_EFFECT_RULES`` has a case here, run through the CLI's own entry point
(``cli.main``: the real parser and train command, in this process to spare an interpreter start per
row) and through the Python API; the step schedule's flags alone select the step schedule, which
``--plot-lr`` draws without training.
"""
import os

import pytest

from conftest import run_cli
from multitask_mx import api, cli
from multitask_mx.errors import UserInputError

from multitask_mx.training.schedule_flags import DEFAULT_SCHEDULE, NO_EFFECT_RULES
from multitask_mx.training.schedules import ScheduleConfig, lr_curve

# (rule's flag, rule's 'needs', the flags given): one refused combination per row of NO_EFFECT_RULES
REFUSED = [
    ("--lr-step-epochs", "the step schedule", ["--lr-scheduler", "cosine", "--lr-step-epochs", "3"]),
    ("--lr-factor", "the step schedule", ["--lr-scheduler", "poly", "--lr-factor", "0.5"]),
    ("--lr-min", "a cosine, poly or cyclic schedule", ["--lr-scheduler", "step", "--lr-min", "0.0001"]),
    ("--lr-power", "the poly schedule", ["--lr-power", "3"]),
    ("--cycle-epochs", "the cyclic schedule", ["--cycle-epochs", "2"]),
    ("--cycle-decay", "the cyclic schedule", ["--lr-scheduler", "step", "--cycle-decay", "0.5"]),
    ("--warmup-begin-lr", "a warmup", ["--warmup-begin-lr", "0.001"]),
]


def test_every_rule_has_a_refused_case():
    assert sorted((r.flag, r.needs) for r in NO_EFFECT_RULES) == sorted((f, n) for f, n, _ in REFUSED)


@pytest.mark.parametrize("flag, needs, flags", REFUSED, ids=["%s: %s" % (f, n) for f, n, _ in REFUSED])
def test_the_cli_refuses_a_flag_that_has_no_effect(flag, needs, flags, tmp_path, capsys):
    save = tmp_path / "run"
    code = cli.main(["train", "--data-train", str(tmp_path / "absent.lst"), "--save-result", str(save)] + flags)
    err = capsys.readouterr().err
    rule = next(r for r in NO_EFFECT_RULES if (r.flag, r.needs) == (flag, needs))
    assert code == 2 and "%s " % flag in err and "has no effect" in err and rule.remedy in err
    assert "absent.lst" not in err and not os.path.exists(save)  # refused before the lists are read


@pytest.mark.parametrize("flag, needs, flags", REFUSED, ids=["%s: %s" % (f, n) for f, n, _ in REFUSED])
def test_the_python_api_refuses_the_same(flag, needs, flags):
    args = api.parse_flags("train", data_train="absent.lst", save_result="unused",
                           **{k[2:].replace("-", "_"): v for k, v in zip(flags[::2], flags[1::2])})
    with pytest.raises(UserInputError, match="^%s .* has no effect" % flag):
        ScheduleConfig.from_args(args, base_lr=0.1)


@pytest.mark.parametrize("flags", [{"lr_step_epochs": "2"}, {"lr_factor": 0.5}, {"lr_step_epochs": "1,3",
                                                                                   "lr_factor": 0.2}])
def test_step_flags_alone_select_the_step_schedule(flags):
    cfg = ScheduleConfig.from_args(api.parse_flags("train", data_train="a.lst", save_result="b", num_epoch=4,
                                                   **flags), base_lr=0.1)
    assert cfg.name == "step"
    lrs = lr_curve(cfg, epoch_size=5)
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] < 0.1  # it drops: the flags took effect


def test_step_epochs_past_the_run_are_warned_about_not_refused(caplog):
    """A run trained in chunks (--resume with a larger --num-epoch later) gives the final step epochs."""
    args = api.parse_flags("train", data_train="a.lst", save_result="b", num_epoch=4, lr_step_epochs="30,60")
    with caplog.at_level("WARNING"):
        assert ScheduleConfig.from_args(args, base_lr=0.1).name == "step"
    assert "no step falls inside --num-epoch 4" in caplog.text


def test_cycle_decay_with_a_single_cycle_is_warned_about_not_refused(caplog):
    """A script's short trial run (the seeds' examples at --num-epoch 1) keeps its --cycle-decay."""
    args = api.parse_flags("train", data_train="a.lst", save_result="b", num_epoch=4, lr_scheduler="cyclic",
                           cycle_epochs=4, cycle_decay=0.5)
    with caplog.at_level("WARNING"):
        ScheduleConfig.from_args(args, base_lr=0.1).log_doubts()
    assert "one cycle fits --num-epoch 4" in caplog.text


def test_defaults_and_a_default_valued_flag_keep_cosine():
    """A flag given at its default value changes nothing, so it neither selects step nor is refused
    (an older run's config.json, repeated with --config, lists every flag at its value)."""
    for flags in ({}, {"lr_factor": 0.1, "lr_power": 2.0, "cycle_epochs": 10.0, "warmup_begin_lr": 0.0}):
        args = api.parse_flags("train", data_train="a.lst", save_result="b", **flags)
        assert ScheduleConfig.from_args(args, base_lr=0.1).name == DEFAULT_SCHEDULE


def test_a_dataclass_config_is_checked_the_same_way():
    with pytest.raises(UserInputError, match="--lr-factor 0.5 has no effect with --lr-scheduler cosine"):
        ScheduleConfig(name="cosine", base_lr=0.1, factor=0.5).check()
    ScheduleConfig(name="step", base_lr=0.1, factor=0.5, step_epochs=(2,)).check()


@pytest.mark.slow
def test_lr_step_epochs_alone_draws_a_step_schedule_through_the_cli(tiny_data, tmp_path):
    """The issue's case: `--lr-step-epochs 3,4` without --lr-scheduler was silently cosine."""
    save, png = tmp_path / "run", tmp_path / "lr.png"
    run_cli("train", "--data-train", tiny_data["train"], "--image-train", tiny_data["root"], "--save-result", save,
            "--network", "cifar_resnet20_v1", "--image-shape", "3,32,32", "--num-epoch", "5",
            "--lr-step-epochs", "3,4", "--plot-lr", png)
    log = open(os.path.join(str(save), "train.log")).read()
    assert "wrote the step schedule over 5 epochs" in log and "--lr-step-epochs given without" in log
    assert os.path.getsize(png) > 0


@pytest.mark.parametrize("lr, batch, flags, warmup", [
    (None, 64, {}, 0.0),              # train's default lr: no warmup (what the defaults were measured at)
    (0.05, 64, {}, 0.0),              # 0.2 per 256 images: the default's rate, no warmup
    (0.1, 64, {}, 0.5),               # issue 24's --batch-size 64 --lr 0.1: the first 10 % of 5 epochs
    (0.1, 64, {"warmup_epochs": 0}, 0.0),  # --warmup-epochs 0 given: off, as asked
    (0.1, 64, {"warmup_epochs": 2}, 2.0),
])
def test_a_given_lr_above_the_default_rate_gets_a_warmup(lr, batch, flags, warmup):
    args = api.parse_flags("train", data_train="a.lst", save_result="b", num_epoch=5, batch_size=batch,
                           **dict(flags, **({"lr": lr} if lr else {})))
    cfg = ScheduleConfig.from_args(args, base_lr=lr or 0.05)
    assert cfg.warmup_epochs == pytest.approx(warmup)
    if warmup:
        assert lr_curve(cfg, epoch_size=33)[0] < 0.1 * cfg.base_lr  # it starts low

"""Which schedule flags were given, which schedule they select, and the table of flags that would do nothing.

One home for issue 24's rule: a flag given with a value other than its default, where it changes
nothing under the other schedule flags, is refused with what to add (``NO_EFFECT_RULES``, applied
by ``ScheduleConfig.check`` in schedules.py); the step schedule's own flags select it when
--lr-scheduler is not given (``resolve_schedule_name``). docs/learning.md lists the table.
"""
from dataclasses import dataclass
from typing import Callable

# --lr-scheduler when it is not given and no flag of the step schedule is either
DEFAULT_SCHEDULE = "cosine"
# The schedule flags' defaults, declared once: add_arguments gives them to argparse and from_args compares
# with them to tell a flag the user gave from one left alone (a value equal to its default changes nothing).
# --warmup-epochs alone defaults to None in argparse: not given, train decides (schedules.default_warmup_epochs).
FLAG_DEFAULTS = {"factor": 0.1, "warmup_epochs": 0.0, "warmup_begin_lr": 0.0, "lr_min": 0.0, "power": 2.0,
                 "cycle_epochs": 10.0, "cycle_decay": 1.0}
# ScheduleConfig field -> the argparse dest that fills it (the flag is --dest with dashes)
FLAG_DESTS = {"step_epochs": "lr_step_epochs", "factor": "lr_factor", "warmup_epochs": "warmup_epochs",
              "warmup_begin_lr": "warmup_begin_lr", "lr_min": "lr_min", "power": "lr_power",
              "cycle_epochs": "cycle_epochs", "cycle_decay": "cycle_decay"}
# The original's train_imagenet-style scripts had only the step schedule: their users pass these flags and
# mean it, so either of them without --lr-scheduler selects step.
STEP_FLAGS = ("step_epochs", "factor")


@dataclass(frozen=True)
class FlagRule:
    """One row of NO_EFFECT_RULES: when ``flag`` (filling ``field``) changes nothing, and what to add."""

    flag: str
    field: str
    needs: str
    has_effect: Callable[[object], bool]  # of a schedules.ScheduleConfig
    remedy: str


# Flags that have no effect under the other schedule flags: one given with a value other than its default,
# where its row's ``has_effect`` (of the ScheduleConfig) is false, is refused with the row's remedy. The step
# schedule's own flags select it when --lr-scheduler is not given, so their rows refuse only an explicit
# other --lr-scheduler. Step epochs all at or after --num-epoch, and --cycle-decay with a single cycle, are
# not refused, only warned about (ScheduleConfig.log_doubts): a run trained in chunks with --resume reaches
# them in a later chunk, and a script's short trial run (the seeds' --num-epoch 1) must not be refused.
NO_EFFECT_RULES = (
    FlagRule("--lr-step-epochs", "step_epochs", "the step schedule", lambda c: c.name == "step",
             "use --lr-scheduler step (or leave --lr-scheduler out: --lr-step-epochs then selects step)"),
    FlagRule("--lr-factor", "factor", "the step schedule", lambda c: c.name == "step",
             "use --lr-scheduler step (or leave --lr-scheduler out: --lr-factor then selects step)"),
    FlagRule("--lr-min", "lr_min", "a cosine, poly or cyclic schedule", lambda c: c.name != "step",
             "leave --lr-min out (step lowers the lr by --lr-factor), or use --lr-scheduler cosine, poly or cyclic"),
    FlagRule("--lr-power", "power", "the poly schedule", lambda c: c.name == "poly", "add --lr-scheduler poly"),
    FlagRule("--cycle-epochs", "cycle_epochs", "the cyclic schedule", lambda c: c.name == "cyclic",
             "add --lr-scheduler cyclic"),
    FlagRule("--cycle-decay", "cycle_decay", "the cyclic schedule", lambda c: c.name == "cyclic",
             "add --lr-scheduler cyclic"),
    FlagRule("--warmup-begin-lr", "warmup_begin_lr", "a warmup", lambda c: c.warmup_epochs > 0,
             "add --warmup-epochs N (the warmup's length)"),
)


def resolve_schedule_name(scheduler, given):
    """(schedule name, reason): --lr-scheduler if given, else step when a step flag is given, else cosine.

    ``scheduler``: --lr-scheduler's value (None when not given); ``given``: the ScheduleConfig fields whose
    flags were given.
    """
    if scheduler is not None:
        return scheduler, "--lr-scheduler %s" % scheduler
    step_flags = [_flag_of(f) for f in STEP_FLAGS if f in given]
    if step_flags:
        return "step", "%s given without --lr-scheduler: the step schedule, as in the original's scripts" \
            % " and ".join(step_flags)
    return DEFAULT_SCHEDULE, "the default"


def _flag_of(field):
    return "--" + FLAG_DESTS[field].replace("_", "-")


def given_fields(optim):
    """The ScheduleConfig fields whose flags ``optim`` gives with a value other than the default."""
    given = {f for f, d in FLAG_DESTS.items()
             if f in FLAG_DEFAULTS and getattr(optim, d) is not None and getattr(optim, d) != FLAG_DEFAULTS[f]}
    if optim.lr_step_epochs is not None:
        given.add("step_epochs")
    return given

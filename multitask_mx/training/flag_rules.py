"""Training flags that would do nothing under the other flags given: the table, and its check (issue 24).

A flag given with a value other than its parser default, where the other flags leave it nothing to do
(``--mom`` with ``--optimizer adam``), is refused before any work with what to add or remove, as the
schedule's flags are (schedule_flags.NO_EFFECT_RULES, which needs the resolved schedule and is applied
by ScheduleConfig.check). ``FLAG_RULES`` holds every other row; ``check_flag_effects`` applies it once,
in ``TrainConfig.check`` (train, and find-lr for the rows that apply there).
docs/learning.md lists both tables (benchmarks/learning_report.py).

Rules read plain values (a dict of dest -> value: ``TrainConfig.flags()``) and the parser defaults
(``TrainConfig.defaults()``).
"""
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import UserInputError
from . import loop
from .schedule_flags import NO_EFFECT_RULES

BOTH = ("train", "find-lr")
# --gpus values that train on CPU contexts (devices.parse_contexts); auto does where no GPU is found
CPU_GPUS = ("", "cpu", "-1", "auto")


@dataclass(frozen=True)
class TrainFlagRule:
    """One row of FLAG_RULES: ``flag`` (argparse ``dest``) does nothing where ``idle`` says so.

    ``idle(values)``: the situation in which the flag changes nothing ("with --optimizer adam"), or None
    where it takes effect. ``commands``: those whose runs the row holds for (a flag find-lr shares with
    train may act differently there: its own --find-lr-* flags always act).
    """

    flag: str
    dest: str
    needs: str
    idle: Callable[[dict], Optional[str]]
    remedy: str
    commands: tuple = BOTH


def _without_momentum(v):
    return None if loop.uses_momentum(v["optimizer"]) else "with --optimizer %s" % v["optimizer"]


def _without_dwa(v):
    return None if v["loss_weighting"] == "dwa" else "with --loss-weighting %s" % v["loss_weighting"]


def _without_finder(v):
    return None if v["lr"] == "auto" else ("with --lr %s" % v["lr"] if v["lr"] is not None else "without --lr auto")


def _without_hidden_layer(v):
    return None if v["head_hidden"] else "without --head-hidden (each head is one Dense layer)"


def _without_pretrained(v):
    return None if v["pretrained"] else "without --pretrained"


def _without_classic_model(v):
    if not v["model"]:
        return "without --model"
    return "with --model %s (a .params file has no epochs)" % v["model"] if v["model"].endswith(".params") else None


def _without_data_val(v):
    return None if v["data_val"] else "without --data-val"


def _on_gpus(v):
    return None if (v["gpus"] or "").strip() in CPU_GPUS else "with --gpus %s" % v["gpus"]


def _without_preview(v):
    return None if v["preview_augmentation"] else "without --preview-augmentation N"


def _without_resized_crop(v):
    if v["no_rand_crop"]:
        return "with --no-rand-crop (a centre crop)"
    return "with --crop-pad %g (CIFAR's pad-and-crop)" % v["crop_pad"] if (v["crop_pad"] or 0) > 0 else None


def _without_random_crop(v):
    return "with --no-rand-crop (a centre crop)" if v["no_rand_crop"] else None


def _trunk_frozen(v):
    return "with --freeze-trunk (no trunk layer trains)" if v["freeze_trunk"] else None


_FINDER_REMEDY = "add --lr auto (train then runs the range test first), or pass it to `multitask-mx find-lr`"
_CROP_REMEDY = "leave out --crop-pad and --no-rand-crop (they replace the random resized crop), or leave %s out"

# Flags that have no effect under the other flags (the schedule's are in schedule_flags.NO_EFFECT_RULES)
FLAG_RULES = (
    TrainFlagRule("--mom", "mom", "--optimizer sgd or nag", _without_momentum,
                  "leave --mom out (this optimizer has no momentum, or its own), or use --optimizer sgd or nag"),
    TrainFlagRule("--dwa-temperature", "dwa_temperature", "--loss-weighting dwa", _without_dwa,
                  "add --loss-weighting dwa", ("train",)),
    TrainFlagRule("--find-lr-start", "find_lr_start", "--lr auto", _without_finder, _FINDER_REMEDY, ("train",)),
    TrainFlagRule("--find-lr-end", "find_lr_end", "--lr auto", _without_finder, _FINDER_REMEDY, ("train",)),
    TrainFlagRule("--find-lr-steps", "find_lr_steps", "--lr auto", _without_finder, _FINDER_REMEDY, ("train",)),
    TrainFlagRule("--head-dropout", "head_dropout", "--head-hidden N", _without_hidden_layer,
                  "add --head-hidden N (the dropout follows that hidden layer)"),
    TrainFlagRule("--model-root", "model_root", "--pretrained", _without_pretrained,
                  "add --pretrained (GluonCV's ImageNet weights of --network, read from --model-root)"),
    TrainFlagRule("--model-epoch", "model_epoch", "a classic --model PREFIX checkpoint", _without_classic_model,
                  "leave --model-epoch out, or give --model PREFIX of a classic checkpoint "
                  "(PREFIX-symbol.json, PREFIX-NNNN.params)"),
    TrainFlagRule("--image-val", "image_val", "--data-val", _without_data_val,
                  "add --data-val LIST (the validation list --image-val's paths are relative to)", ("train",)),
    TrainFlagRule("--cpus", "cpus", "training on CPUs", _on_gpus,
                  "leave --cpus out (CPU contexts of a run on CPUs), or leave --gpus out to train on CPUs"),
    TrainFlagRule("--preview-out", "preview_out", "--preview-augmentation N", _without_preview,
                  "add --preview-augmentation N (the samples drawn into --preview-out)", ("train",)),
    TrainFlagRule("--rand-crop-scale", "rand_crop_scale", "the random resized crop", _without_resized_crop,
                  _CROP_REMEDY % "--rand-crop-scale"),
    TrainFlagRule("--rand-crop-ratio", "rand_crop_ratio", "the random resized crop", _without_resized_crop,
                  _CROP_REMEDY % "--rand-crop-ratio"),
    TrainFlagRule("--crop-pad", "crop_pad", "a random crop", _without_random_crop,
                  "leave --no-rand-crop out, or --crop-pad"),
    TrainFlagRule("--trunk-lr-mult", "trunk_lr_mult", "a trunk that trains", _trunk_frozen,
                  "leave --trunk-lr-mult out, or use --freeze-epochs N (heads alone for N epochs, then all "
                  "at --trunk-lr-mult) instead of --freeze-trunk", ("train",)),
)
# Every row docs/learning.md lists: the schedule's, then the others
ALL_RULES = NO_EFFECT_RULES + FLAG_RULES


def idle_flags(values, defaults, command="train"):
    """[(rule, situation)] for each flag of ``command`` given (not at its default) that would do nothing."""
    found = []
    for rule in FLAG_RULES:
        if command in rule.commands and values[rule.dest] != defaults[rule.dest]:
            situation = rule.idle(values)
            if situation:
                found.append((rule, situation))
    return found


def check_flag_effects(values, defaults, command="train"):
    """UserInputError for the first flag in ``values`` (dest -> value) that FLAG_RULES says does nothing.

    ``defaults``: the parser's defaults (TrainConfig.defaults()); a flag at its default is not given.
    """
    for rule, situation in idle_flags(values, defaults, command):
        raise UserInputError("%s %s has no effect %s: it needs %s. To fix: %s." % (
            rule.flag, _shown(values[rule.dest]), situation, rule.needs, rule.remedy))


def _shown(value):
    return "%g" % value if isinstance(value, float) else str(value)

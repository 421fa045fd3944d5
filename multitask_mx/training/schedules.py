"""Learning-rate schedules by name, counted in updates (batches), with linear warmup.

Convention: every schedule is a pure function of the *absolute* update count ``u``
counted from the start of epoch 1, the number MXNet passes to the scheduler
(``optimizer.num_update``: 1 for the first batch, ``E`` for the last batch of epoch 1
when an epoch has ``E`` updates, ``E + 1`` for the first batch of epoch 2). Resuming
therefore needs no arithmetic on the schedule itself: the optimizer only has to keep
counting where it stopped. ``Trainer.load_states`` restores its count (and this
scheduler, pickled with it); without saved states the optimizer is created with
``begin_num_update = begin_epoch * E`` (``Schedule.optimizer_params``) so the first
update of the resumed run is ``begin_epoch * E + 1`` as in an uninterrupted run.

MXNet's own schedulers are not used because they change their state when called
(``MultiFactorScheduler`` cannot be asked for an earlier lr, ``CosineScheduler`` and
``PolyScheduler`` rewrite ``base_lr``), which breaks plotting and ``lr_at``; these
are subclasses of ``mx.lr_scheduler.LRScheduler`` so the optimizer takes them as is.
"""
import copy
import logging
import math
from dataclasses import dataclass, fields
from typing import Tuple

import mxnet as mx

from ..errors import UserInputError
from ..flagtypes import finite_float
from .schedule_flags import DEFAULT_SCHEDULE, FLAG_DEFAULTS, FLAG_DESTS, NO_EFFECT_RULES, given_fields, \
    resolve_schedule_name

_logger = logging.getLogger(__name__)


# --lr when not given: SGD lr for a batch of 256, scaled linearly with the batch. 0.2 is CIFAR's ResNet recipe
# and was best or within 0.011 of the best from scratch (docs/reference.md "Defaults that learn" has the runs).
SCRATCH_LR_PER_256 = 0.2
# Fine-tuning: the trunk at the same rate (the new heads at 4x it: model/finetune.py FINETUNE_HEAD_LR_MULT).
FINETUNE_LR_PER_256 = 0.2


# --batch-size when not given, on one device: the largest of DEFAULT_BATCHES that gives the run at least
# MIN_DEFAULT_UPDATES optimizer updates (8 if none does): short runs learn from the number of updates, not
# from the images per update; longer runs keep 32, which uses the cores (and GPUs) better (docs/reference.md).
DEFAULT_BATCHES = (32, 16, 8)
MIN_DEFAULT_UPDATES = 300


def default_batch_size(updates_per_epoch, num_epoch, devices=1):
    """(batch, reason) used when --batch-size is not given.

    ``updates_per_epoch(batch)`` counts one epoch's optimizer updates at that batch. On one
    device: the largest of DEFAULT_BATCHES with at least MIN_DEFAULT_UPDATES updates in the
    run, else the smallest. On several devices 32 over all of them, as before (a smaller
    batch would leave each device a handful of images).
    """
    if devices > 1:
        return DEFAULT_BATCHES[0], "%d devices" % devices
    for batch in DEFAULT_BATCHES:
        updates = updates_per_epoch(batch) * num_epoch
        if updates >= MIN_DEFAULT_UPDATES:
            return batch, "%d updates in %d epoch(s), at least %d" % (updates, num_epoch, MIN_DEFAULT_UPDATES)
    return batch, "a short run: %d updates in %d epoch(s) at the smallest default batch, fewer than %d " \
        "at any larger one" % (updates, num_epoch, MIN_DEFAULT_UPDATES)


def default_lr(batch_size, finetune):
    """(lr, reason) used when --lr is not given: linear in the batch size.

    From scratch 0.2 x batch/256 (CIFAR's ResNet recipe, 0.025 at batch 32); fine-tuning the same
    (bench_learning: short fine-tuning runs learned faster at 0.2 than at 0.1 or 0.05): they learn too slowly
    below it (issue 10: a pretrained trunk at 0.001, 0.81 vs 0.88 at 0.01; bench_learning: at half
    this rate fine-tuning trailed scratch). The heads' multiplier is ``finetune.default_head_lr_mult``.
    """
    per_256 = FINETUNE_LR_PER_256 if finetune else SCRATCH_LR_PER_256
    lr = per_256 * batch_size / 256.0
    return lr, "%s: %g x batch %d / 256" % ("fine-tuning" if finetune else "from scratch", per_256, batch_size)


# --warmup-epochs when not given: none at or below the lr per image the defaults were measured at, a linear
# warmup over the first WARMUP_SHARE of the run above it. bench_learning's grid (docs/learning.md; ResNet-20,
# 32 px, batch 64, --lr 0.1 = 0.4 per 256 images, 160 updates, seed 1, light preset without flip): without a
# warmup the first epoch blew up (held-out loss 159 on Fashion-MNIST, 2,834 on scikit-learn's digits) and the
# runs ended at 0.640 and 0.266; with a warmup over the first 10 % of the run, 0.726 and 0.964. Issue 24's
# held-out drawings (same batch and lr, no warmup) lost 0.17 with one preset and not the other, most likely
# the same blow-up (that data is not here to check).
WARMUP_SHARE = 0.1


def default_warmup_epochs(num_epoch, lr, batch_size):
    """(warmup epochs, reason) when --warmup-epochs is not given.

    ``lr``: the --lr the user gave (None when train chose it: the default policy needs no warmup);
    ``batch_size``: the run's batch (None while it is not resolved yet: no warmup decided then).
    """
    if lr is None or not isinstance(lr, (int, float)) or not batch_size:
        return 0.0, "no warmup at train's default lr"
    per_256 = lr * 256.0 / batch_size
    if per_256 <= max(SCRATCH_LR_PER_256, FINETUNE_LR_PER_256) * (1 + 1e-9):
        return 0.0, "no warmup: --lr %g is %.3g per 256 images, at most the default's %g" % (lr, per_256,
                                                                                           SCRATCH_LR_PER_256)
    epochs = round(WARMUP_SHARE * num_epoch, 3)
    return epochs, "--lr %g is %.3g per 256 images, above the default's %g: linear warmup over the first %d%% " \
        "of the run (%g epochs; --warmup-epochs 0 turns it off)" % (lr, per_256, SCRATCH_LR_PER_256,
                                                                   round(100 * WARMUP_SHARE), epochs)


def default_step_epochs(num_epoch):
    """Step epochs when --lr-step-epochs is not given: at half and three quarters of the run."""
    return tuple(sorted({e for e in (num_epoch // 2, (3 * num_epoch) // 4) if 0 < e < num_epoch}))


def parse_epochs(text):
    """'5,10' -> [5, 10] (strictly increasing positive epochs)."""
    try:
        epochs = [int(v) for v in text.split(",") if v.strip()] if text else []
    except ValueError:
        raise UserInputError("--lr-step-epochs %r: expected epochs such as 5,10." % text)
    if any(e <= 0 for e in epochs) or any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise UserInputError("--lr-step-epochs %r: the epochs must be positive and increasing, "
                             "such as 5,10." % text)
    return epochs


@dataclass(frozen=True)
class ScheduleConfig:
    """What the schedule flags (and --lr, --num-epoch) ask for."""

    name: str = DEFAULT_SCHEDULE
    base_lr: float = 0.001
    num_epoch: int = 10
    step_epochs: Tuple[int, ...] = (5, 10)
    factor: float = FLAG_DEFAULTS["factor"]
    warmup_epochs: float = FLAG_DEFAULTS["warmup_epochs"]
    warmup_begin_lr: float = FLAG_DEFAULTS["warmup_begin_lr"]
    lr_min: float = FLAG_DEFAULTS["lr_min"]
    power: float = FLAG_DEFAULTS["power"]
    cycle_epochs: float = FLAG_DEFAULTS["cycle_epochs"]
    cycle_decay: float = FLAG_DEFAULTS["cycle_decay"]

    @classmethod
    def from_args(cls, optim, base_lr=None, log=True, batch_size=None):
        """The config from parsed flags, checked (UserInputError naming the flag).

        ``base_lr`` is the resolved lr when --lr is not a number (not given, or "auto").
        ``batch_size``: the run's resolved batch (default: --batch-size as parsed; None until resolved), which
        decides the warmup of a given high --lr (``default_warmup_epochs``).
        ``log``: also log the schedule chosen and doubtful but valid settings (off for the early check).
        """
        if base_lr is None:
            base_lr = optim.lr
        if not isinstance(base_lr, (int, float)):
            raise ValueError("--lr %r must be resolved to a number before the schedule is built" % (base_lr,))
        steps = default_step_epochs(optim.num_epoch) if optim.lr_step_epochs is None else \
            tuple(parse_epochs(optim.lr_step_epochs))
        given = given_fields(optim)
        name, reason = resolve_schedule_name(optim.lr_scheduler, given)
        warmup, why_warmup = (optim.warmup_epochs, "--warmup-epochs") if optim.warmup_epochs is not None else \
            default_warmup_epochs(optim.num_epoch, optim.lr, batch_size or optim.batch_size)
        cfg = cls(name=name, base_lr=base_lr, num_epoch=optim.num_epoch,
                  step_epochs=steps, factor=optim.lr_factor,
                  warmup_epochs=warmup, warmup_begin_lr=optim.warmup_begin_lr,
                  lr_min=optim.lr_min, power=optim.lr_power, cycle_epochs=optim.cycle_epochs,
                  cycle_decay=optim.cycle_decay)
        cfg.check(given)
        if log:
            _logger.info("lr schedule %s (%s); warmup %g epochs (%s)", name, reason, warmup, why_warmup)
            cfg.log_doubts()
        return cfg

    def given_fields(self):
        """Fields set to a value other than the dataclass default: what a Python caller 'gave'."""
        return {f.name for f in fields(self) if f.name in FLAG_DESTS and getattr(self, f.name) != f.default}

    def check(self, given=None):
        """Raise UserInputError for values no schedule can use, and for a flag that has no effect here.

        ``given``: the fields whose flags were given (``from_args``); by default those that differ from
        the dataclass defaults.
        """
        if self.name not in SCHEDULES:
            raise UserInputError("--lr-scheduler %r: choose one of %s." % (self.name, ", ".join(sorted(SCHEDULES))))
        _require(self.base_lr > 0, "--lr %g: the learning rate must be positive." % self.base_lr)
        _require(0 < self.factor <= 1, "--lr-factor %g: give a multiplier in (0, 1], such as 0.1." % self.factor)
        _require(self.warmup_epochs >= 0, "--warmup-epochs %g: give 0 (no warmup) or more." % self.warmup_epochs)
        _require(0 <= self.warmup_begin_lr <= self.base_lr, "--warmup-begin-lr %g: give a value from 0 to "
                 "--lr (%g)." % (self.warmup_begin_lr, self.base_lr))
        _require(0 <= self.lr_min < self.base_lr, "--lr-min %g: give a value from 0 to below --lr (%g)."
                 % (self.lr_min, self.base_lr))
        _require(self.power > 0, "--lr-power %g: give a positive power, such as 2." % self.power)
        _require(self.cycle_epochs > 0, "--cycle-epochs %g: give a positive cycle length in epochs."
                 % self.cycle_epochs)
        _require(0 < self.cycle_decay <= 1, "--cycle-decay %g: give a factor in (0, 1]; 1 keeps every "
                 "cycle's peak at --lr." % self.cycle_decay)
        self.check_effects(self.given_fields() if given is None else given)

    def check_effects(self, given):
        """UserInputError for the first flag in ``given`` that NO_EFFECT_RULES says does nothing here."""
        for rule in NO_EFFECT_RULES:
            if rule.field in given and not rule.has_effect(self):
                raise UserInputError("%s %s has no effect %s: it needs %s. To fix: %s." % (
                    rule.flag, self._shown(rule.field), self._context(), rule.needs, rule.remedy))

    def _shown(self, field):
        value = getattr(self, field)
        return ",".join(str(e) for e in value) if isinstance(value, tuple) else "%g" % value

    def _context(self):
        return "with --lr-scheduler %s, --num-epoch %d%s" % (
            self.name, self.num_epoch, ", --warmup-epochs %g" % self.warmup_epochs if self.warmup_epochs else "")

    def log_doubts(self):
        """Log settings that are valid but probably not meant."""
        if self.warmup_epochs >= self.num_epoch:
            _logger.warning("--warmup-epochs %g covers the whole run (--num-epoch %d)",
                            self.warmup_epochs, self.num_epoch)
        if self.name == "step" and self.step_epochs and all(e >= self.num_epoch for e in self.step_epochs):
            _logger.warning("--lr-step-epochs %s: no step falls inside --num-epoch %d, so the lr stays at --lr "
                            "(a later --resume with more epochs reaches them)",
                            ",".join(map(str, self.step_epochs)), self.num_epoch)
        elif self.name == "step" and any(e >= self.num_epoch for e in self.step_epochs):
            _logger.info("--lr-step-epochs: steps at or after epoch %d (the last) never apply", self.num_epoch)
        if self.name == "cyclic" and self.cycle_decay != 1.0 and self.cycle_epochs >= self.num_epoch:
            _logger.warning("--cycle-decay %g: one cycle fits --num-epoch %d, so the decay never applies (it does "
                            "from the second cycle on: --cycle-epochs below --num-epoch)", self.cycle_decay,
                            self.num_epoch)


def _require(condition, message):
    if not condition:
        raise UserInputError(message)


class Schedule(mx.lr_scheduler.LRScheduler):
    """Base: linear warmup over the first updates, then ``main_lr`` of the absolute update.

    The warmup ramps from ``warmup_begin_lr`` at update 0 to the main schedule's own
    value at the end of the warmup, so the curve has no jump.
    """

    def __init__(self, cfg: ScheduleConfig, epoch_size, begin_epoch=0):
        if epoch_size < 1:
            raise ValueError("epoch_size must be at least 1 update, got %r" % epoch_size)
        super().__init__(base_lr=cfg.base_lr)
        self.cfg = cfg
        self.epoch_size = int(epoch_size)
        self.warmup_steps = int(round(cfg.warmup_epochs * self.epoch_size))
        self.warmup_begin_lr = cfg.warmup_begin_lr
        self.total_updates = cfg.num_epoch * self.epoch_size
        self.begin_num_update = int(begin_epoch) * self.epoch_size

    def __call__(self, num_update):
        """The lr for update ``num_update`` (absolute, 1 = first batch of epoch 1)."""
        if num_update < self.warmup_steps:
            target = self.main_lr(self.warmup_steps)
            return self.warmup_begin_lr + (target - self.warmup_begin_lr) * num_update / self.warmup_steps
        return self.main_lr(num_update)

    def main_lr(self, num_update):
        """The schedule without warmup."""
        raise NotImplementedError

    def optimizer_params(self):
        """Optimizer keyword arguments that install this schedule and its update count.

        No ``learning_rate``: the optimizer would overwrite ``base_lr`` with it.
        """
        return {"lr_scheduler": self, "begin_num_update": self.begin_num_update}

    def __repr__(self):
        return "%s(%s, epoch_size=%d)" % (type(self).__name__, self.cfg, self.epoch_size)


class StepSchedule(Schedule):
    """The original's multi-factor schedule: lr *= factor after each of ``step_epochs``.

    The drop takes effect from the first update after the step epoch ends, as in
    ``MultiFactorScheduler`` (which drops once ``num_update > step``).
    """

    def main_lr(self, num_update):
        steps = sum(1 for e in self.cfg.step_epochs if num_update > e * self.epoch_size)
        return self.base_lr * self.cfg.factor ** steps


class CosineSchedule(Schedule):
    """Half a cosine from --lr at update 0 to --lr-min at the last update of --num-epoch."""

    def main_lr(self, num_update):
        progress = min(max(num_update, 0), self.total_updates) / float(self.total_updates)
        return self.cfg.lr_min + (self.base_lr - self.cfg.lr_min) * (1 + math.cos(math.pi * progress)) / 2


class PolySchedule(Schedule):
    """--lr-min + (--lr - --lr-min) * (1 - u/total) ** --lr-power."""

    def main_lr(self, num_update):
        progress = min(max(num_update, 0), self.total_updates) / float(self.total_updates)
        return self.cfg.lr_min + (self.base_lr - self.cfg.lr_min) * (1 - progress) ** self.cfg.power


class CyclicSchedule(Schedule):
    """Triangular cycles of --cycle-epochs between --lr-min and a peak (seed 004's cyclic mode).

    Each cycle starts at --lr-min, climbs linearly to its peak at mid-cycle and falls
    back. Cycle k (from 0) peaks at ``--lr * --cycle-decay ** k``: decay 1 is the plain
    triangular schedule, below 1 the cyclic-decaying one. A peak never goes below --lr-min.
    """

    def main_lr(self, num_update):
        position = max(num_update, 0) / (self.cfg.cycle_epochs * self.epoch_size)
        cycle = math.floor(position)
        height = 1.0 - abs(2.0 * (position - cycle) - 1.0)
        peak = max(self.cfg.lr_min, self.base_lr * self.cfg.cycle_decay ** cycle)
        return self.cfg.lr_min + (peak - self.cfg.lr_min) * height


SCHEDULES = {"step": StepSchedule, "cosine": CosineSchedule, "poly": PolySchedule, "cyclic": CyclicSchedule}


def make_scheduler(cfg: ScheduleConfig, epoch_size, begin_epoch=0):
    """The named schedule as an ``mx.lr_scheduler.LRScheduler`` for ``epoch_size`` updates per epoch.

    ``begin_epoch`` (epochs already done when resuming) only sets
    ``begin_num_update``; the lr at an absolute update is the same for any value.
    Pass ``schedule.optimizer_params()`` to the optimizer.
    """
    if cfg.name not in SCHEDULES:
        raise UserInputError("--lr-scheduler %r: choose one of %s." % (cfg.name, ", ".join(sorted(SCHEDULES))))
    schedule = SCHEDULES[cfg.name](cfg, epoch_size, begin_epoch)
    _logger.info("lr schedule %s over %d updates/epoch%s: lr %.6g at update %d", cfg.name, schedule.epoch_size,
                 ", warmup %d updates" % schedule.warmup_steps if schedule.warmup_steps else "",
                 schedule(schedule.begin_num_update + 1), schedule.begin_num_update + 1)
    return schedule


def _as_schedule(scheduler_or_cfg, epoch_size):
    if isinstance(scheduler_or_cfg, ScheduleConfig):
        if epoch_size is None:
            raise ValueError("epoch_size is needed to turn a ScheduleConfig into a schedule")
        return SCHEDULES[scheduler_or_cfg.name](scheduler_or_cfg, epoch_size)
    if isinstance(scheduler_or_cfg, Schedule):
        return scheduler_or_cfg
    return copy.deepcopy(scheduler_or_cfg)  # MXNet's schedulers change state when called


def lr_at(scheduler_or_cfg, update, epoch_size=None):
    """The lr at absolute update ``update`` of a schedule (or a ScheduleConfig + epoch_size)."""
    return float(_as_schedule(scheduler_or_cfg, epoch_size)(update))


def lr_curve(scheduler_or_cfg, num_updates=None, epoch_size=None):
    """[lr at update 1, ..., lr at update ``num_updates``] (default: the whole run)."""
    schedule = _as_schedule(scheduler_or_cfg, epoch_size)
    if num_updates is None:
        num_updates = getattr(schedule, "total_updates", None)
        if num_updates is None:
            raise ValueError("num_updates is needed for a scheduler that does not know the run's length")
    return [float(schedule(u)) for u in range(1, int(num_updates) + 1)]


def add_arguments(parser):
    """The "learning-rate schedule" flags."""
    group = parser.add_argument_group("learning-rate schedule")
    group.add_argument("--lr-scheduler", default=None, help="schedule of the lr (counted in batches): "
                       + ", ".join(sorted(SCHEDULES)) + " (default: %s over --num-epoch; step when "
                       "--lr-step-epochs or --lr-factor is given, as in the original's scripts)" % DEFAULT_SCHEDULE)
    group.add_argument("--lr-step-epochs", default=None, help="step: epochs after which the lr drops "
                       "(default: at 1/2 and 3/4 of --num-epoch); selects step without --lr-scheduler")
    group.add_argument("--lr-factor", type=finite_float, default=FLAG_DEFAULTS["factor"],
                       help="step: lr multiplier at each step; selects step without --lr-scheduler")
    group.add_argument("--warmup-epochs", type=finite_float, default=None,
                       help="linear warmup over this many epochs (fractions allowed; 0: none; default: none, or the "
                       "first %d%%%% of the run when --lr is above 0.2 per 256 images)" % round(100 * WARMUP_SHARE))
    group.add_argument("--warmup-begin-lr", type=finite_float, default=FLAG_DEFAULTS["warmup_begin_lr"],
                       help="lr at the start of the warmup (needs --warmup-epochs)")
    group.add_argument("--lr-min", type=finite_float, default=FLAG_DEFAULTS["lr_min"],
                       help="cosine/poly: final lr; cyclic: lr at the start and end of each cycle")
    group.add_argument("--lr-power", type=finite_float, default=FLAG_DEFAULTS["power"],
                       help="poly: power of the decay")
    group.add_argument("--cycle-epochs", type=finite_float, default=FLAG_DEFAULTS["cycle_epochs"],
                       help="cyclic: length of one cycle in epochs")
    group.add_argument("--cycle-decay", type=finite_float, default=FLAG_DEFAULTS["cycle_decay"],
                       help="cyclic: each cycle's peak is this times the last one's (1: plain triangular)")
    group.add_argument("--plot-lr", metavar="FILE.png", default=None,
                       help="draw the schedule for --num-epoch epochs into FILE.png and exit without training")

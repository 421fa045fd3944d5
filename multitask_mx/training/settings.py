"""The training stages' settings: optimisation and schedule, checkpointing, monitoring, distribution."""
from dataclasses import dataclass
from typing import Optional, Union

from .. import devices
from ..settings import Settings
from .best import BestTracker
from . import (checkpoints, distributed, early_stopping, ema, gradients, loop, lr_finder, metrics, resume,
               schedules, tensorboard, weighting)


@dataclass(frozen=True)
class OptimSettings(Settings):
    """What the optimizer does: batch, epochs, lr and its schedule, the loss and its weighting, the EMA."""

    batch_size: Optional[int]
    num_epoch: int
    lr: Union[None, float, str]  # None: the default policy; "auto": the lr finder
    mom: float
    wd: float
    optimizer: str
    label_smoothing: float
    mixup: float
    seed: Optional[int]
    loss_weights: Optional[str]
    loss_weighting: str
    dwa_temperature: float
    class_weights: Optional[str]
    grad_stats_every: int
    grad_method: str
    lr_scheduler: Optional[str]
    lr_step_epochs: Optional[str]
    lr_factor: float
    warmup_epochs: Optional[float]
    warmup_begin_lr: float
    lr_min: float
    lr_power: float
    cycle_epochs: float
    cycle_decay: float
    plot_lr: Optional[str]
    find_lr_start: float
    find_lr_end: float
    find_lr_steps: int
    ema: Optional[float]

    FLAGS = (loop.add_arguments, weighting.add_arguments, gradients.add_arguments, schedules.add_arguments,
             lr_finder.add_arguments, ema.add_arguments)
    CHECKS = (lambda s: gradients.GradientConfig.from_args(s), lambda s: weighting.WeightingConfig.from_args(s),
              # a number or 'auto' is settled later; an infinite placeholder checks the rest (--lr-min < --lr, ...)
              lambda s: schedules.ScheduleConfig.from_args(s, s.lr if isinstance(s.lr, float) else float("inf"),
                                                           log=False),
              lambda s: s.lr != "auto" or lr_finder.FinderConfig.from_args(s))


@dataclass(frozen=True)
class CheckpointSettings(Settings):
    """The run folder, what is saved in it and when, resuming, and early stopping on the best metric."""

    save_result: str
    save_name: str
    best_metric: str
    overwrite: bool
    resume: bool
    resume_epoch: Optional[int]
    fresh_optimizer: bool
    checkpoint_every: int
    keep_last: int
    early_stop: int

    FLAGS = (checkpoints.add_arguments, early_stopping.add_arguments)
    CHECKS = (lambda s: BestTracker.check_form(s.best_metric), resume.check_resume_flags)


@dataclass(frozen=True)
class MonitorSettings(Settings):
    """What a run shows while it trains: log lines, the top-k metric, TensorBoard."""

    disp_batches: int
    quiet: bool
    top_k: Optional[list]
    tensorboard: Optional[str]

    FLAGS = (metrics.add_arguments, tensorboard.add_arguments)
    CHECKS = (lambda s: metrics.train_top_k(s.top_k), tensorboard.require_tensorboardx)


@dataclass(frozen=True)
class DistSettings(Settings):
    """The devices of this process and how gradients meet across devices and machines."""

    gpus: str
    cpus: int
    kv_store: str
    dump_rank_params: Optional[str]

    FLAGS = (devices.add_arguments, distributed.add_arguments)

"""``multitask-mx train``: lists + images -> a multi-task network, checkpointed each epoch.

A thin layer: flags are declared by the stages that read them; the work is
``multitask_mx.training.pipeline.train``.
"""
from ..data import augment, datasets as data, task_kinds, tasks as tasks_mod
from .. import devices
from ..model import finetune, network as model
from ..training import (checkpoints, distributed, early_stopping, ema as ema_mod, lr_finder, loop as training,
                        metrics as metrics_mod, pipeline, schedules, weighting)

DESCRIPTION = "train a multi-task classifier from .lst files and raw images"


def add_arguments(parser):
    """All training flags, grouped by the module they drive."""
    data.add_arguments(parser)
    augment.augment_arguments(parser)
    tasks_mod.add_arguments(parser)
    task_kinds.add_arguments(parser)
    model.add_arguments(parser)
    finetune.add_arguments(parser)
    training.add_arguments(parser)
    weighting.add_arguments(parser)
    metrics_mod.add_arguments(parser)
    schedules.add_arguments(parser)
    lr_finder.add_arguments(parser)
    checkpoints.add_arguments(parser)
    early_stopping.add_arguments(parser)
    ema_mod.add_arguments(parser)
    devices.add_arguments(parser)
    distributed.add_arguments(parser)


def run(args):
    """Entry point of ``multitask-mx train``."""
    return pipeline.train(args)

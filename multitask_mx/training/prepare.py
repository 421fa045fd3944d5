"""What ``train`` and ``find-lr`` both do before training: one preparation, in one order.

``prepare_inputs`` reads the lists, resolves the tasks, builds the loss and settles the
batch size and the augmentation once (each with its reason, logged); nothing after it
reads ``--batch-size`` again. Every function takes the run's ``TrainConfig`` (training/config.py). Then the loaders are made
(``datasets_and_loaders``: their worker processes fork while the process is small)
and only then the network (``build_training_net``).
"""
import logging
from dataclasses import dataclass
from typing import Any, List, Optional

from ..data import task_kinds, tasks as tasks_mod
from ..data.images import parse_image_shape
from ..model.finetune import FinetuneConfig, apply_rate_multipliers
from . import distributed, loop, phases, schedules, weighting
from .config import Settled, TrainConfig
from .inputs import build_datasets, choose_augmentation, make_loaders, prepare_lists
from .resume import build_planned_net

_logger = logging.getLogger(__name__)


@dataclass
class Inputs:
    """The data side of a run, settled before the network exists (``prepare_inputs``)."""

    train: Any  # the training list (this worker's shard)
    val: Optional[Any]
    tasks: List[Any]
    class_names: dict
    loss_fn: Any
    image_shape: tuple
    threads: int  # loader worker processes
    gpus: int
    num_examples: int  # images per epoch for the schedule (all workers)
    batch_size: int  # the batch over all devices of this worker, as given, resumed or chosen
    epoch_size: int  # updates per epoch
    recipe: Any  # the augmentation Recipe
    settled: Settled  # the values settled so far (batch size, augmentation), each with why


def prepare_inputs(config: TrainConfig, kv, ctxs, with_val=True):
    """Lists, tasks, loss, batch size, updates per epoch and augmentation: the Inputs of this run."""
    image_shape = parse_image_shape(config.data.image_shape)
    gpus = sum(c.device_type == "gpu" for c in ctxs)
    phases.switch("lists")
    train, val, tasks, threads = prepare_lists(config.data, kv, gpus)
    val = val if with_val else None
    class_names = tasks_mod.read_class_names(tasks, config.data.classes)
    loss_fn = build_loss(config, tasks, train, ctxs)
    num_examples = config.data.num_examples or len(train) * kv.num_workers
    settled = Settled()
    batch_size = settled.record("batch_size", *settle_batch_size(config, num_examples, kv, ctxs))
    epoch_size = distributed.updates_per_epoch(num_examples, batch_size, kv)
    recipe = choose_augmentation(config.augment, config.model.is_finetuning(), config.optim.num_epoch, train, tasks,
                                 image_shape, batch_size)
    settled.record("augment", recipe.preset, recipe.reason)
    return Inputs(train, val, tasks, class_names, loss_fn, image_shape, threads, gpus, num_examples, batch_size,
                  epoch_size, recipe, settled)


def build_loss(config: TrainConfig, tasks, train, ctxs):
    """The masked multi-task loss with its task weighting and class weights (flags checked here)."""
    optim = config.optim
    weights = weighting.make_weighting(weighting.WeightingConfig.from_args(optim), [t.name for t in tasks], ctxs)
    class_weights = weighting.make_class_weights(optim.class_weights, tasks, train)
    kinds = None
    if task_kinds.has_kinds(tasks):
        kinds = loop.KindConfig.for_tasks(
            tasks, config.data.regress_loss, task_kinds.positive_weights(config.data.pos_weight, tasks, train.labels))
    return loop.MultiTaskLoss([t.num_classes for t in tasks], label_smoothing=optim.label_smoothing,
                              weighting=weights, class_weights=class_weights, kinds=kinds)


def settle_batch_size(config: TrainConfig, num_examples, kv, ctxs):
    """(batch size, why): --batch-size, the resumed run's (config.json), else the default policy's; logged."""
    if config.optim.batch_size is not None:
        return config.optim.batch_size, "--batch-size"
    run = config.run_dir()
    if config.continues_run() and run.has_config():
        saved_config = run.read_config()
        saved = saved_config.get("batch_size") or saved_config.get("args", {}).get("batch_size")  # older runs
        if saved:
            _logger.info("batch size %d: the one the resumed run used (config.json)", saved)
            return saved, "the one the resumed run used (config.json)"
    batch, why = schedules.default_batch_size(
        lambda batch: distributed.updates_per_epoch(num_examples, batch, kv), config.optim.num_epoch, len(ctxs))
    _logger.info("batch size %d (%s; --batch-size sets it)", batch, why)
    return batch, why


def datasets_and_loaders(config: TrainConfig, inputs: Inputs, normalization):
    """((train set, val set), (train loader, val loader)); the loaders start their worker processes.

    Called before the network's arrays exist: workers forked later share the training
    process's pages, so that every page training first writes after the fork is copied
    (a classic ResNet-50 at batch 16: about 48,000 more page faults in the first step).
    """
    sets = build_datasets(config.data, inputs.train, inputs.val, inputs.tasks, inputs.image_shape, normalization,
                          inputs.recipe.config, uint8=inputs.gpus > 0)
    return sets, make_loaders(config.data, sets[0], sets[1], inputs.threads, inputs.batch_size,
                              pin_memory=inputs.gpus > 0, seed=config.optim.seed)


def finetune_config(config: TrainConfig, saver, point):
    """The FinetuneConfig: a resumed run's heads keep the lr multiplier it trained with (config.json).

    Whatever the flags of the resuming command say by default (e.g. --model SAVE_PREFIX, the original's
    way to continue, looks like fine-tuning); runs from before it was recorded trained at 1.
    """
    if point is None:
        return FinetuneConfig.settle(config.model, config.optim.lr)
    saved = saver.read_config().get("head_lr_mult")
    return FinetuneConfig.settle(config.model, config.optim.lr, 1.0 if saved is None else saved,
                                 "the resumed run's (config.json)")


def build_training_net(plan, config: TrainConfig, inputs: Inputs, ctxs, saver, finetune_cfg):
    """The planned network with its weights, rate multipliers (``finetune_cfg``) and graph."""
    net = build_planned_net(plan, config.model, inputs.tasks, ctxs, inputs.image_shape, saver)
    apply_rate_multipliers(net, finetune_cfg)
    net.hybridize(static_alloc=True, static_shape=True)
    return net

"""What ``train`` and ``find-lr`` both do before training: one preparation, in one order.

``prepare_inputs`` reads the lists, resolves the tasks, builds the loss and settles the
batch size and the augmentation once (each with its reason, logged); nothing after it
reads ``args.batch_size`` or mutates ``args``. Then the loaders are made
(``datasets_and_loaders``: their worker processes fork while the process is small)
and only then the network (``build_training_net``).
"""
import logging
from dataclasses import dataclass
from typing import Any, List, Optional

from ..data import task_kinds, tasks as tasks_mod
from ..data.images import parse_image_shape
from ..model.finetune import FinetuneConfig, apply_rate_multipliers
from ..runfolder import RunDir
from . import distributed, loop, phases, schedules, weighting
from .inputs import build_datasets, choose_augmentation, make_loaders, prepare_lists
from .resume import build_planned_net, continues_run

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


def prepare_inputs(args, kv, ctxs, with_val=True):
    """Lists, tasks, loss, batch size, updates per epoch and augmentation: the Inputs of this run."""
    image_shape = parse_image_shape(args.image_shape)
    gpus = sum(c.device_type == "gpu" for c in ctxs)
    phases.switch("lists")
    train, val, tasks, threads = prepare_lists(args, kv, gpus)
    val = val if with_val else None
    class_names = tasks_mod.read_class_names(tasks, args.classes)
    loss_fn = build_loss(args, tasks, train, ctxs)
    num_examples = args.num_examples or len(train) * kv.num_workers
    batch_size = settle_batch_size(args, num_examples, kv, ctxs)
    epoch_size = distributed.updates_per_epoch(num_examples, batch_size, kv)
    recipe = choose_augmentation(args, train, tasks, image_shape, batch_size)
    return Inputs(train, val, tasks, class_names, loss_fn, image_shape, threads, gpus, num_examples, batch_size,
                  epoch_size, recipe)


def build_loss(args, tasks, train, ctxs):
    """The masked multi-task loss with its task weighting and class weights (flags checked here)."""
    weights = weighting.make_weighting(weighting.WeightingConfig.from_args(args), [t.name for t in tasks], ctxs)
    class_weights = weighting.make_class_weights(args.class_weights, tasks, train)
    kinds = None
    if task_kinds.has_kinds(tasks):
        kinds = loop.KindConfig.for_tasks(
            tasks, args.regress_loss, task_kinds.positive_weights(args.pos_weight, tasks, train.labels))
    return loop.MultiTaskLoss([t.num_classes for t in tasks], label_smoothing=args.label_smoothing,
                              weighting=weights, class_weights=class_weights, kinds=kinds)


def settle_batch_size(args, num_examples, kv, ctxs):
    """The batch size: --batch-size, the resumed run's (config.json), else the default policy; logged with why."""
    if args.batch_size is not None:
        return args.batch_size
    run = RunDir(args.save_result, args.save_name)
    if continues_run(args) and run.has_config():
        config = run.read_config()
        saved = config.get("batch_size") or config.get("args", {}).get("batch_size")  # older runs: in "args"
        if saved:
            _logger.info("batch size %d: the one the resumed run used (config.json)", saved)
            return saved
    batch, why = schedules.default_batch_size(
        lambda batch: distributed.updates_per_epoch(num_examples, batch, kv), args.num_epoch, len(ctxs))
    _logger.info("batch size %d (%s; --batch-size sets it)", batch, why)
    return batch


def datasets_and_loaders(args, inputs: Inputs, normalization):
    """((train set, val set), (train loader, val loader)); the loaders start their worker processes.

    Called before the network's arrays exist: workers forked later share the training
    process's pages, so that every page training first writes after the fork is copied
    (a classic ResNet-50 at batch 16: about 48,000 more page faults in the first step).
    """
    sets = build_datasets(args, inputs.train, inputs.val, inputs.tasks, inputs.image_shape, normalization,
                          inputs.recipe.config, uint8=inputs.gpus > 0)
    return sets, make_loaders(args, sets[0], sets[1], inputs.threads, inputs.batch_size, pin_memory=inputs.gpus > 0)


def finetune_config(args, saver, point):
    """The FinetuneConfig: a resumed run's heads keep the lr multiplier it trained with (config.json).

    Whatever the flags of the resuming command say by default (e.g. --model SAVE_PREFIX, the original's
    way to continue, looks like fine-tuning); runs from before it was recorded trained at 1.
    """
    if point is None:
        return FinetuneConfig.from_args(args)
    saved = saver.read_config().get("head_lr_mult")
    return FinetuneConfig.from_args(args, 1.0 if saved is None else saved, "the resumed run's (config.json)")


def build_training_net(plan, args, inputs: Inputs, ctxs, saver, finetune_cfg):
    """The planned network with its weights, rate multipliers (``finetune_cfg``) and graph."""
    net = build_planned_net(plan, args, inputs.tasks, ctxs, inputs.image_shape, saver)
    apply_rate_multipliers(net, finetune_cfg)
    net.hybridize(static_alloc=True, static_shape=True)
    return net

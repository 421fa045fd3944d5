"""``multitask-mx train``: lists + images -> a multi-task network, checkpointed each epoch."""
import json
import logging
import os
import random
import time

from .. import _runtime
import mxnet as mx
import numpy as np
from mxnet import gluon

from .. import checkpoints, data, devices, model, tasks as tasks_mod, training
from . import plain_args
from ..checkpoints import CheckpointSaver
from ..data import LstDataset, check_images_or_skip, make_loader, preflight_report
from ..errors import UserInputError
from ..images import AugmentConfig, EvalTransform, TrainTransform, parse_image_shape
from ..lists import check_label_range, infer_num_classes, read_list
from ..logs import setup_logging
from ..metrics import TaskMetrics, summarise
from ..schedules import make_scheduler, parse_epochs

_logger = logging.getLogger(__name__)

DESCRIPTION = "train a multi-task classifier from .lst files and raw images"


def add_arguments(parser):
    """All training flags, grouped by the module they drive."""
    data.add_arguments(parser)
    tasks_mod.add_arguments(parser)
    model.add_arguments(parser)
    training.add_arguments(parser)
    checkpoints.add_arguments(parser)
    devices.add_arguments(parser)


def read_lists(args, kv):
    """Training (this worker's shard) and validation lists, with their checks done."""
    train = read_list(args.data_train, args.image_train, kv.rank, kv.num_workers)
    val = read_list(args.data_val, args.image_val) if args.data_val else None
    if val is not None and val.num_label_columns != train.num_label_columns:
        raise UserInputError("%s has %d label column(s) but %s has %d; both lists need the same columns."
                             % (val.source, val.num_label_columns, train.source, train.num_label_columns))
    return train, val


def resolve_tasks(args, train, val):
    """Tasks from --num-classes (or the lists), --task-names and --derived-task."""
    num_classes = tasks_mod.parse_num_classes(args.num_classes)
    if num_classes is None:
        num_classes = infer_num_classes([lst for lst in (train, val) if lst is not None])
        _logger.info("--num-classes not given: inferred %s from the lists", ",".join(map(str, num_classes)))
    for lst in filter(None, (train, val)):
        check_label_range(lst, num_classes)
    derived = [] if args.no_derived_task else args.derived_task
    names = args.task_names.split(",") if args.task_names else None
    return tasks_mod.build_tasks(num_classes, names, derived)


def build_datasets(args, train, val, tasks, image_shape, normalization):
    """Training and validation datasets with their transform presets."""
    augment = AugmentConfig()
    if args.no_color_jitter:
        augment.brightness = augment.contrast = augment.saturation = 0.0
    out_hw = image_shape[1:]
    train_set = LstDataset(train, tasks, TrainTransform(out_hw, normalization, augment), args.skip_bad_images)
    val_set = LstDataset(val, tasks, EvalTransform(out_hw, normalization), args.skip_bad_images) if val else None
    return train_set, val_set


def make_trainer(args, net, kv, epoch_size, begin_epoch):
    """A gluon.Trainer with the lr schedule; the batch size is the total over devices."""
    lr, scheduler = make_scheduler(args.lr_scheduler, args.lr, epoch_size, begin_epoch,
                                   parse_epochs(args.lr_step_epochs), args.lr_factor)
    params = {"learning_rate": lr, "wd": args.wd}
    if scheduler is not None:
        params["lr_scheduler"] = scheduler
    if args.optimizer in ("sgd", "nag"):
        params["momentum"] = args.mom
    try:
        return gluon.Trainer(net.collect_params(), args.optimizer, params, kvstore=kv)
    except (ValueError, AssertionError, mx.base.MXNetError) as exc:
        raise UserInputError("--optimizer %s: %s" % (args.optimizer, exc))


def make_config(args, trunk_spec, normalization, image_shape, tasks, class_names):
    """What later commands need to rebuild and use the model (config.json)."""
    return {
        "format": 1,
        "network": trunk_spec.network,
        "trunk": {"kind": "symbol" if trunk_spec.from_symbol else "zoo", "network": trunk_spec.network,
                  "input_name": trunk_spec.input_name,
                  "symbol_file": model.TRUNK_SYMBOL_FILE if trunk_spec.from_symbol else None},
        "image_shape": list(image_shape),
        "normalization": normalization,
        "tasks": [t.to_dict() for t in tasks],
        "classes": class_names,
        "save_name": args.save_name,
        "head_hidden": args.head_hidden,
        "head_dropout": args.head_dropout,
        "args": plain_args(args),
    }


def seed_everything(seed):
    """Seed Python, numpy and MXNet random streams."""
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        mx.random.seed(seed)


def fit(net, trainer, loaders, ctxs, tasks, saver, args, begin_epoch):
    """Train epochs ``begin_epoch+1 .. --num-epoch``, validating and saving after each."""
    train_loader, val_loader = loaders
    loss_fn = training.MultiTaskLoss(len(tasks))
    metrics = TaskMetrics([t.name for t in tasks], ctxs)
    cfg = training.LoopConfig(log_every=args.disp_batches, progress_bar=not args.quiet,
                              skip_bad=args.skip_bad_images)
    for epoch in range(begin_epoch + 1, args.num_epoch + 1):
        tic = time.time()
        lr = trainer.learning_rate
        train_values, speed, skipped = training.train_one_epoch(
            net, trainer, train_loader, ctxs, loss_fn, metrics, epoch, cfg)
        _logger.info("Epoch[%d] Train: %s (%.1f img/s)", epoch, summarise(train_values), speed)
        val_values = None
        if val_loader is not None:
            val_values = training.evaluate(net, val_loader, ctxs, loss_fn, metrics)
            _logger.info("Epoch[%d] Validation: %s", epoch, summarise(val_values))
        record = training.epoch_record(epoch, lr, train_values, val_values, speed, skipped, time.time() - tic)
        saver.save_epoch(net, trainer, epoch, record)
        _logger.info("Epoch[%d] Time cost=%.1f s", epoch, time.time() - tic)
    return saver.history


def run(args):
    """Entry point of ``multitask-mx train``."""
    save_dir = args.save_result
    setup_logging(os.path.join(save_dir, "train.log"), quiet=args.quiet)
    _runtime.log_thread_settings()
    _logger.info("multitask-mx train %s", json.dumps(plain_args(args)))
    seed_everything(args.seed)
    image_shape = parse_image_shape(args.image_shape)
    ctxs = devices.parse_contexts(args.gpus, args.cpus)
    kv = mx.kv.create(args.kv_store)
    _logger.info("devices: %s, kvstore %s", ctxs, args.kv_store)

    train, val = read_lists(args, kv)
    tasks = resolve_tasks(args, train, val)
    _logger.info("tasks: %s", ", ".join("%s (%d classes%s)" % (t.name, t.num_classes,
                 ", = %s" % t.expression if t.expression else "") for t in tasks))
    threads = args.data_nthreads if args.data_nthreads is not None else min(4, _runtime.usable_cores())
    if args.check_images != "none":
        full = args.check_images == "full"
        train = check_images_or_skip(train, args.skip_bad_images, full, threads)
        val = check_images_or_skip(val, args.skip_bad_images, full, threads) if val else None
    preflight_report(tasks, train, val)
    class_names = tasks_mod.read_class_names(tasks, args.classes)

    trunk_spec, normalization, classic_params = model.resolve_trunk(
        args.network, args.model, args.epoch, args.normalization)
    net = model.build_net(trunk_spec, tasks, ctxs, image_shape, args.head_hidden, args.head_dropout)
    if args.model:
        model.load_pretrained_trunk(net, args.model, trunk_spec, classic_params)
    else:
        _logger.info("no --model: the trunk %s trains from scratch", trunk_spec.network)
    net.hybridize(static_alloc=True, static_shape=True)

    train_set, val_set = build_datasets(args, train, val, tasks, image_shape, normalization)
    batch = args.batch_size
    train_loader = make_loader(train_set, batch, True, threads,
                               last_batch="rollover" if len(train_set) >= batch else "keep")
    val_loader = make_loader(val_set, batch, False, threads) if val_set else None
    num_examples = args.num_examples or len(train) * kv.num_workers
    epoch_size = max(1, int(np.ceil(num_examples / float(batch * kv.num_workers))))
    trainer = make_trainer(args, net, kv, epoch_size, 0)

    saver = CheckpointSaver(save_dir, args.save_name, writer=kv.rank == 0)
    saver.write_config(make_config(args, trunk_spec, normalization, image_shape, tasks, class_names))
    if trunk_spec.from_symbol:
        saver.write_text(model.TRUNK_SYMBOL_FILE, trunk_spec.symbol_json)
    _logger.info("training %d images (%d per epoch for the schedule), validating %d; batch %d over %d device(s)",
                 len(train_set), num_examples, len(val_set) if val_set else 0, batch, len(ctxs))
    return fit(net, trainer, (train_loader, val_loader), ctxs, tasks, saver, args, 0)

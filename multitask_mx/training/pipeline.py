"""The training pipeline: a TrainConfig -> lists, tasks, network, loaders, trainer -> ``fit``.

``train(config)`` is what ``multitask-mx train`` and ``multitask_mx.train(...)`` run.
"""
import logging
import random

from .. import _runtime
import mxnet as mx
import numpy as np
from mxnet import gluon

from ..data import augment
from . import distributed, lr_finder, plots, schedules, loop
from .. import devices, mxprivate
from ..model import dtype_choice, network, precision
from . import tensorboard
from . import phases, summary
from . import rundir
from .checkpoints import CheckpointSaver
from ..runfolder import LOG_FILE, TRUNK_SYMBOL_FILE
from .states import load_trainer_states
from ..errors import UserInputError
from ..data.augment import TrainTransform, preview_samples
from ..logs import setup_logging
from ..mxerrors import clean_mxnet_error
from .schedules import ScheduleConfig, make_scheduler

from .fit import fit
from .prepare import build_training_net, datasets_and_loaders, finetune_config, prepare_inputs
from .config import TrainConfig
from .resume import open_run_folder, plan_net

_logger = logging.getLogger(__name__)


def resolve_lr(config, batch_size, run_finder=None, resumed_lr=None):
    """(lr, why): --lr as a number: the one given, the resumed run's, the finder's (--lr auto) or the default
    policy's; logged."""
    given = config.optim.lr
    if isinstance(given, float):
        return given, "--lr"
    if resumed_lr is not None:
        lr, why = resumed_lr, "the one the resumed run chose (config.json)"
    elif given == "auto" and run_finder is not None:
        lr, why = run_finder(), "suggested by the lr finder (--lr auto)"
    else:
        lr, policy = schedules.default_lr(batch_size, config.model.is_finetuning())
        why = "%s (%s)" % ("the default policy, the lr finder does not run here" if given == "auto"
                           else "--lr not given, the default policy", policy)
    _logger.info("lr %.4g: %s", lr, why)
    return lr, why


def run_lr_finder(optim, net, train_loader, ctxs, loss_fn, tasks, kv, png_path=None):
    """--lr auto: the range test on this network and data (weights restored after); returns the suggestion.

    ``optim``: the run's OptimSettings (the finder's range, the optimizer, mixup, the seed).
    """
    if kv.type.startswith("dist"):
        raise UserInputError("--lr auto runs the lr finder on one machine: run `multitask-mx find-lr` with the "
                             "same flags first, then pass its suggestion as --lr.")
    result = lr_finder.find_lr(net, train_loader, ctxs, loss_fn, tasks, lr_finder.FinderConfig.from_args(optim),
                               loop=loop.LoopConfig(progress_bar=False, mixup_alpha=optim.mixup, seed=optim.seed),
                               **lr_finder.optimizer_settings(optim))
    if png_path:
        _logger.info("lr finder curve: %s", ", ".join(lr_finder.write_result(result, png_path)))
    return result.suggestion


def make_trainer(optim, net, kv, epoch_size, extra_params=(), base_lr=None, dtype="float32", batch_size=None):
    """A gluon.Trainer with the lr schedule of ``optim`` (the OptimSettings); the batch is the total over devices.

    ``extra_params`` (the loss's learned weights) are updated with the network's.

    Updates run on each device (update_on_kvstore=False) except for dist_async,
    so every device's optimizer state can be saved and restored.
    """
    schedule = make_scheduler(ScheduleConfig.from_args(optim, base_lr, batch_size=batch_size), epoch_size)
    params = dict(schedule.optimizer_params(), wd=optim.wd, rescale_grad=distributed.gradient_scale(kv))
    if loop.uses_momentum(optim.optimizer):
        params["momentum"] = optim.mom
    if dtype == "float16":
        params["multi_precision"] = True
    on_kvstore = None if "async" in kv.type else False
    devices_used = len(_net_contexts(net))
    store = kv if devices_used > 1 or kv.type.startswith("dist") else None  # one local device: nothing to reduce
    try:
        trainer = gluon.Trainer(list(net.collect_params().values()) + list(extra_params), optim.optimizer,
                                params, kvstore=store, update_on_kvstore=on_kvstore)
        return trainer, schedule
    except (ValueError, AssertionError, mx.base.MXNetError) as exc:
        raise UserInputError("--optimizer %s: %s" % (optim.optimizer, clean_mxnet_error(exc)))


def make_config(config, trunk_spec, normalization, image_shape, tasks, class_names, augmentation=None, lr=None,
                head_lr_mult=None, batch_size=None, settled=None):
    """What later commands need to rebuild and use the model, and the settings this run settled (config.json)."""
    return {
        "format": 1,
        "network": trunk_spec.network,
        "trunk": {"kind": "symbol" if trunk_spec.from_symbol else "zoo", "network": trunk_spec.network,
                  "input_name": trunk_spec.input_name,
                  "symbol_file": TRUNK_SYMBOL_FILE if trunk_spec.from_symbol else None},
        "image_shape": list(image_shape),
        "normalization": normalization,
        "tasks": [t.to_dict() for t in tasks],
        "classes": class_names,
        "save_name": config.checkpoint.save_name,
        "head_hidden": config.model.head_hidden,
        "head_dropout": config.model.head_dropout,
        "args": config.flags(),
        "augmentation": augmentation,
        "lr": lr,
        "head_lr_mult": head_lr_mult,
        "batch_size": batch_size,
        "settled": settled,  # {name: {"value", "why"}}: what the run settled, and why
    }


def seed_everything(seed):
    """Seed Python, numpy and MXNet random streams."""
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        mx.random.seed(seed)


def check_devices_and_dtype(config, ctxs):
    """Refuse a --dtype the devices or kvstore cannot run (float16 on CPU or with dist_async, ...) before any work."""
    dtype, kv_store = config.precision.dtype, config.dist.kv_store
    precision.check_dtype(dtype, ctxs)
    if dtype == "float16" and "async" in kv_store:
        raise UserInputError("--dtype float16 with --kv-store %s: float16 needs dynamic loss scaling, which "
                             "needs the updates on the workers, but dist_async updates on the servers. Use "
                             "--kv-store dist_device_sync (or dist_sync) with float16, or float32 with dist_async."
                             % kv_store)


def resolve_train_dtype(config, ctxs, tasks, image_shape, batch_size):
    """(dtype, why): --dtype to train with; ``auto`` times this network at this image size in both types."""
    if config.precision.dtype != "auto":
        return config.precision.dtype, "--dtype"
    model = config.model
    spec = network.resolve_trunk(model.network, model.model, model.model_epoch, config.data.normalization)[0] \
        if model.from_classic_checkpoint() else network.TrunkSpec(network=model.network or "resnet50_v1")
    dtype = dtype_choice.resolve_dtype("auto", ctxs, spec, [t.num_classes for t in tasks], image_shape, batch_size)
    return dtype, "--dtype auto (train.log has the timing or the reason)"


def draw_and_exit(config, inputs):
    """--plot-lr and --preview-augmentation: write the PNG(s), train nothing."""
    train, image_shape, epoch_size, recipe = inputs.train, inputs.image_shape, inputs.epoch_size, inputs.recipe
    optim = config.optim
    if optim.plot_lr:
        cfg = ScheduleConfig.from_args(optim, resolve_lr(config, inputs.batch_size)[0], batch_size=inputs.batch_size)
        plots.plot_lr_schedule(schedules.lr_curve(cfg, epoch_size=epoch_size), epoch_size, optim.plot_lr)
        _logger.info("wrote the %s schedule over %d epochs to %s", cfg.name, optim.num_epoch, optim.plot_lr)
    preview = augment.preview_settings(config.augment)
    if preview:
        count, path = preview
        plots.plot_augmentation_grid(augmentation_samples(optim.seed, train, image_shape, recipe, count), path)
        _logger.info("wrote %d augmented training samples (preset %s) to %s", count, recipe.preset, path)
    return 0


def augmentation_samples(seed, train, image_shape, recipe, count):
    """``count`` augmented samples of the first training images (uint8 HxWx3), as --preview-augmentation draws."""
    transform = TrainTransform(image_shape[1:], "imagenet", recipe.config)
    return preview_samples([e.path for e in train.entries[:count]], transform, count, seed or 0)


def open_run(config, kv):
    """Before any data, in the locked run folder: its log, the seed, the devices; returns the devices."""
    log_file = config.run_dir().path(LOG_FILE) if kv.rank == 0 else None
    setup_logging(log_file, quiet=config.monitor.quiet, rank_label=distributed.rank_label(kv))
    distributed.check_rank_params_pattern(config.dist.dump_rank_params, kv)
    phases.start()  # logs the start-up (interpreter, imports) to train.log
    _runtime.log_thread_settings()
    summary.log_start(config.flags())  # the machine and main flags on the console, every flag in train.log
    seed_everything(config.optim.seed)
    ctxs = devices.parse_contexts(config.dist.gpus, config.dist.cpus)
    check_devices_and_dtype(config, ctxs)
    _logger.info("devices: %s, kvstore %s", ctxs, config.dist.kv_store)
    return ctxs


def ready_trainer(optim, net, kv, sizes, extra_params, base_lr, point, dtype):
    """The trainer, ready to step: AMP, kvstore keys, and for a resumed run its optimizer states.

    ``sizes`` is (updates per epoch, the size of every batch); returns (trainer, (epoch, batches done)).
    """
    epoch_size, batch_size = sizes
    trainer, schedule = make_trainer(optim, net, kv, epoch_size, extra_params, base_lr, dtype, batch_size)
    if dtype == "float16":
        from mxnet.contrib import amp
        amp.init_trainer(trainer)
    start = (point.epoch, point.batches_done) if point else (0, 0)
    distributed.start_trainer(trainer, net, kv, batch_size, start, epoch_size)  # before the states
    if point is not None and point.states_file is None:  # --fresh-optimizer: a new state, the schedule goes on
        mxprivate.make_trainer_ready(trainer)
        trainer.optimizer.begin_num_update = trainer.optimizer.num_update = point.epoch * epoch_size
    elif point is not None:
        grouping = trainer.optimizer.aggregate_num  # MXNet's for this optimizer, before the saved one replaces it
        load_trainer_states(trainer, point.states_file)
        # the update count comes from the states; the schedule from today's flags, the grouping from today's devices
        trainer.optimizer.lr_scheduler = schedule
        trainer.optimizer.aggregate_num = grouping
    if all(c.device_type == "cpu" for c in _net_contexts(net)):
        update_parameters_one_by_one(trainer.optimizer)
    return trainer, start


def _net_contexts(net):
    """The devices the network's parameters live on."""
    return next(iter(net.collect_params().values())).list_ctx()


def update_parameters_one_by_one(optimizer):
    """One update operator per parameter, for CPUs: MXNet's SGD groups 4 parameters in each by default
    (``multi_sgd_mom_update``, which saves GPU kernel launches), and on a CPU the grouped operator walks
    4 arrays at once and is slower (benchmarks/bench_fusion.py). Other optimizers are left as they are."""
    if isinstance(optimizer, mx.optimizer.SGD) and optimizer.aggregate_num > 1:
        optimizer.aggregate_num = 1


def write_new_run_files(saver, config, trunk_spec):
    """A new run's config.json, and the trunk's symbol when it comes from a classic checkpoint."""
    saver.write_config(config)
    if trunk_spec.from_symbol:
        saver.write_text(TRUNK_SYMBOL_FILE, trunk_spec.symbol_json)


def train(config: TrainConfig):
    """Train the run of ``config`` (the checked TrainConfig); returns the history (one dict per epoch).

    Stages: lists and tasks, where the network comes from (fresh or resumed), loaders (their workers
    fork while the process is small), the network, trainer, ``fit``. ``multitask_mx.train(**flags)`` too.
    The run folder is locked (``RunDir.lock``) from before its log opens until the run ends.
    """
    kv = distributed.create_kvstore(config.dist.kv_store)
    lock = open_run_folder(config, kv)
    try:
        return _train_in_locked_folder(config, kv)
    finally:
        if lock is not None:
            lock.release()


def _train_in_locked_folder(config, kv):
    ctxs = open_run(config, kv)
    inputs = prepare_inputs(config, kv, ctxs)
    if config.draws_only():
        return draw_and_exit(config, inputs)

    phases.switch("network build")
    checkpoint = config.checkpoint
    saver = CheckpointSaver(checkpoint.save_result, checkpoint.save_name, writer=kv.rank == 0,
                            keep_last=checkpoint.keep_last)
    dtype = inputs.settled.record("dtype", *resolve_train_dtype(config, ctxs, inputs.tasks, inputs.image_shape,
                                                                 inputs.batch_size))
    precision.init_amp(dtype)  # before the network exists
    plan = plan_net(config, inputs.tasks, inputs.image_shape, saver)
    point = plan.point

    phases.switch("loaders and trainer")
    (train_set, val_set), loaders = datasets_and_loaders(config, inputs, plan.normalization)

    phases.switch("network build")
    finetune_cfg = finetune_config(config, saver, point)
    net = build_training_net(plan, config, inputs, ctxs, saver, finetune_cfg)

    phases.switch("loaders and trainer")
    finder = None if point else lambda: run_lr_finder(config.optim, net, loaders[0], ctxs, inputs.loss_fn, inputs.tasks,
                                                      kv, saver.path(lr_finder.PLOT_FILE) if saver.writer else None)
    base_lr = inputs.settled.record("lr", *resolve_lr(config, inputs.batch_size, finder,
                                                      saver.read_config().get("lr") if point else None))
    inputs.settled.record("head_lr_mult", finetune_cfg.head_lr_mult, finetune_cfg.head_lr_reason)
    trainer, start = ready_trainer(config.optim, net, kv, (inputs.epoch_size, min(inputs.batch_size, len(train_set))),
                                   inputs.loss_fn.params(), base_lr, point, dtype)

    if point is None:
        write_new_run_files(saver, make_config(config, plan.trunk_spec, plan.normalization, inputs.image_shape,
                                               inputs.tasks, inputs.class_names, inputs.recipe.to_dict(), base_lr,
                                               finetune_cfg.head_lr_mult, inputs.batch_size, inputs.settled.values),
                            plan.trunk_spec)
    _logger.info("training %d images (%d per epoch for the schedule), validating %d; batch %d over %d device(s)",
                 len(train_set), inputs.num_examples, len(val_set) if val_set else 0, inputs.batch_size, len(ctxs))
    callbacks = tensorboard.make_loggers(
        config, saver.writer, inputs.tasks, inputs.class_names, (net, loaders[1], ctxs, plan.normalization),
        lambda count: augmentation_samples(config.optim.seed, inputs.train, inputs.image_shape, inputs.recipe, count))
    try:
        history = fit(net, trainer, loaders, ctxs, inputs.tasks, inputs.loss_fn, saver, config, start,
                      plan.normalization, callbacks, finetune_cfg, dtype)
    except FloatingPointError as exc:
        raise FloatingPointError(rundir.diverged_message(exc, saver)) from None
    finally:
        tensorboard.close_all(callbacks)
    phases.switch("finish")
    distributed.finish(kv, net, config.dist.dump_rank_params)
    phases.finish()
    return summary.log_summary(history, saver, config.flags())  # best epoch, files, next commands; the history

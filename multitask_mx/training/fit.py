"""The epoch loop of a training run: train, validate, checkpoint, stop early."""
import logging
import time

from . import distributed, plots, loop, weighting
from . import early_stopping, ema as ema_mod, gradients, phases
from ..runfolder import CURVES_FILE
from .best import BestTracker
from ..model.finetune import FinetuneConfig, apply_freezing
from ..errors import UserInputError
from .metrics import TaskMetrics, summarise

_logger = logging.getLogger(__name__)


def fit(net, trainer, loaders, ctxs, tasks, loss_fn, saver, config, start, normalization="imagenet", callbacks=(),
        finetune_cfg=None, dtype="float32"):
    """Train from ``start`` (epoch, batches already done in the next one) to --num-epoch.

    Each of ``callbacks`` (e.g. tensorboard.TensorBoardLogger) is called with the
    epoch's history record once it is saved. ``config``: the run's TrainConfig; ``finetune_cfg`` and
    ``dtype``: the run's settled ones.
    """
    begin_epoch, batches_done = start
    train_loader, val_loader = loaders
    finetune_cfg = finetune_cfg or FinetuneConfig.settle(config.model, config.optim.lr)
    train_metrics = TaskMetrics.for_tasks(tasks, ctxs, config.monitor.top_k, agreement=False)
    val_metrics = TaskMetrics.for_tasks(tasks, ctxs, config.monitor.top_k)
    loss_fn.weighting.restore(saver.history)
    cfg = _loop_config(config, net, loss_fn, tasks, normalization, dtype)
    best = BestTracker(config.checkpoint.best_metric, [t.name for t in tasks], has_val=bool(config.data.data_val))
    best.restore(saver.read_best())
    ema = ema_mod.start(config.optim.ema, net, saver, start)
    stopper = early_stopping.EarlyStopping(config.checkpoint.early_stop, best, begin_epoch)
    if stopper.stopped_before(begin_epoch):
        return saver.history
    save_every = ema_mod.after_step(ema, _mid_epoch_saver(saver, net, trainer, config.checkpoint.checkpoint_every,
                                                          batches_done, ema))
    curves = plots.CurvesWriter(saver.path(CURVES_FILE) if saver.writer else None)
    for epoch in range(begin_epoch + 1, config.optim.num_epoch + 1):
        phases.switch("training loop")
        tic = time.time()
        lr = trainer.optimizer.lr_scheduler(trainer.optimizer.num_update + 1)  # this epoch's first lr
        if apply_freezing(net, finetune_cfg, epoch):
            net.hybridize(static_alloc=True, static_shape=True)  # rebuild the graph for the new grad_req
        remaining = len(train_loader) - batches_done if batches_done else None
        loss_fn.weighting.start_epoch(saver.history)
        train_values, speed, skipped = loop.train_one_epoch(
            net, trainer, train_loader, ctxs, loss_fn, train_metrics, epoch, cfg, save_every, remaining)
        train_values = distributed.end_epoch(net, trainer, train_values)
        batches_done = 0
        _logger.info("Epoch[%d] Train: %s (%.1f img/s)", epoch, summarise(train_values), speed)
        # the weights and optimizer states are written while validation runs; not with --ema, whose
        # validation swaps the averaged weights into the network
        started = _start_finite_epoch(saver, net, trainer, epoch) if ema is None and val_loader is not None else None
        info = (epoch, lr, train_values, speed, skipped, tic)
        val_values, val_skipped = _validate_or_save_first(net, val_loader, ctxs, loss_fn, val_metrics, saver, trainer,
                                                          info, normalization, started)
        record = loop.epoch_record(epoch, lr, train_values, val_values, speed, skipped, time.time() - tic, val_skipped)
        record.update(_weights_and_agreement(epoch, loss_fn.weighting, val_metrics if val_loader is not None else None))
        record.update(cfg.task_gradients.record() if cfg.task_gradients is not None else {})
        record.update(ema_mod.validate(ema, net, epoch, lambda: loop.evaluate(
            net, val_loader, ctxs, loss_fn, val_metrics, normalization=normalization) if val_loader is not None else None))
        phases.switch("checkpoint and curves")
        curves.update(saver.history_with(record))  # drawn in a thread while the checkpoint is written
        _save_finite_epoch(saver, net, trainer, epoch, record, best, ema, started)
        for callback in callbacks:
            callback(record)
        _logger.info("Epoch[%d] Time cost=%.1f s", epoch, time.time() - tic)
        if epoch < config.optim.num_epoch and stopper.should_stop(epoch):
            saver.record_stop(record, stopper.stop_record(epoch))
            break
    curves.finish(saver.history)
    return saver.history


def _loop_config(config, net, loss_fn, tasks, normalization, dtype):
    monitor, optim = config.monitor, config.optim
    return loop.LoopConfig(log_every=monitor.disp_batches, progress_bar=not monitor.quiet,
                           skip_bad=config.data.skip_bad_images, mixup_alpha=optim.mixup, amp=dtype == "float16",
                           seed=optim.seed, normalization=normalization,
                           task_gradients=gradients.make_task_gradients(optim, net, loss_fn, [t.name for t in tasks]))


def _weights_and_agreement(epoch, task_weighting, val_metrics):
    """Log and return the epoch's loss weights and (after validation) derived heads' agreement."""
    extras = task_weighting.record()
    _logger.info("Epoch[%d] Loss weights (%s): %s", epoch, task_weighting.name,
                 weighting.format_weights(extras["loss_weights"]))
    if val_metrics is not None and val_metrics.agreement_tasks:
        extras["agreement"] = val_metrics.agreement()
        _logger.info("Epoch[%d] Validation agreement of derived heads with their source heads: %s", epoch,
                     weighting.format_weights(extras["agreement"]))
    return extras


def _save_finite_epoch(saver, net, trainer, epoch, record, best, ema=None, started=None):
    """Save the epoch's checkpoint, never with NaN or infinite weights (FloatingPointError instead).

    ``started``: its weights and states are being written already (checked by _start_finite_epoch).
    """
    if saver.writer and started is None:
        loop.check_weights_finite(net.collect_params().values(), epoch)
    saver.save_epoch(net, trainer, epoch, record, best, ema, started)


def _start_finite_epoch(saver, net, trainer, epoch):
    """Check the weights are finite (FloatingPointError if not), then start writing the epoch's files."""
    if saver.writer:
        loop.check_weights_finite(net.collect_params().values(), epoch)
    return saver.start_epoch_files(net, trainer, epoch)


def _validate_or_save_first(net, val_loader, ctxs, loss_fn, val_metrics, saver, trainer, epoch_info,
                            normalization="imagenet", started=None):
    """(Validation values, images skipped) ((None, 0) without --data-val); an unreadable image never loses the epoch.

    Without --skip-bad-images a validation image that fails to decode raises; the
    epoch just trained is saved first (without validation figures), then the error is
    shown with what to do. With --skip-bad-images such images are counted and logged.
    ``started``: the epoch's files already being written (CheckpointSaver.start_epoch_files).
    """
    if val_loader is None:
        return None, 0
    epoch, lr, train_values, speed, skipped, tic = epoch_info
    phases.switch("validation")
    try:
        values, val_skipped = loop.evaluate_counting(net, val_loader, ctxs, loss_fn, val_metrics,
                                                                 normalization=normalization)
    except UserInputError as exc:
        record = loop.epoch_record(epoch, lr, train_values, None, speed, skipped, time.time() - tic)
        _save_finite_epoch(saver, net, trainer, epoch, record, None, None, started)
        raise UserInputError("validation after epoch %d: %s. Epoch %d is saved (without validation figures); fix "
                             "or remove that image, or pass --skip-bad-images, and continue with --resume."
                             % (epoch, exc, epoch)) from None
    if val_skipped:
        _logger.warning("Epoch[%d] validation skipped %d unreadable image(s)", epoch, val_skipped)
    _logger.info("Epoch[%d] Validation: %s", epoch, summarise(values))
    return values, val_skipped


def _mid_epoch_saver(saver, net, trainer, every, offset, ema=None):
    if not every:
        return None

    def on_batch(epoch, done):
        if (done + offset) % every == 0:
            if saver.writer:  # never write NaN weights that every --resume would reload
                loop.check_weights_finite(net.collect_params().values(), epoch, done + offset)
            saver.save_progress(net, trainer, epoch, done + offset, ema)
    return on_batch

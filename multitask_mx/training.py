"""The training loop: masked multi-task loss, one epoch of training, evaluation.

For each batch: split across devices, forward under ``autograd.record()``, sum the
task losses, backward, ``trainer.step``, add to the on-device metrics. Logging and
checkpointing happen at the log interval and at epoch end, in ``fit``.
"""
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from . import _runtime  # noqa: F401  (numpy shim before mxnet)
import mxnet as mx
from mxnet import autograd, gluon
from tqdm import tqdm

from .data import BAD_SAMPLE
from .devices import split_batch
from .errors import UserInputError
from .metrics import TaskMetrics, summarise, total_loss

_logger = logging.getLogger(__name__)


class MultiTaskLoss:
    """Sum over tasks of softmax cross-entropy; unknown labels (-1) and padding count zero."""

    def __init__(self, num_tasks, weights=None):
        self.num_tasks = num_tasks
        self.weights = list(weights) if weights else [1.0] * num_tasks
        self._ce = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=True)

    def __call__(self, outputs, labels, valid):
        """Returns (total per-sample loss, per-task losses, per-task labels, per-task masks)."""
        losses, task_labels, masks = [], [], []
        for k, out in enumerate(outputs):
            label = labels[:, k]
            mask = (label >= 0).astype("float32") * valid
            label = mx.nd.maximum(label, 0).astype("float32")
            losses.append(self._ce(out, label) * mask)
            task_labels.append(label)
            masks.append(mask)
        total = mx.nd.add_n(*[w * l for w, l in zip(self.weights, losses)])
        return total, losses, task_labels, masks


@dataclass
class LoopConfig:
    """How the loop reports: batches between log lines, progress bar or plain lines."""

    log_every: int = 20
    progress_bar: bool = True
    skip_bad: bool = False


def _progress(loader, enabled, desc):
    if enabled and sys.stderr.isatty():
        return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    return loader


def _log_bad_samples(batch, dataset):
    labels = batch[1].asnumpy()  # loader output on CPU: reading it does not wait for training
    bad = (labels[:, 0] == BAD_SAMPLE).nonzero()[0]
    for i in bad:
        entry = dataset.image_list.entries[int(batch[2][i].asscalar())]
        _logger.warning("skipped unreadable image %s (%s)", entry.path, dataset.image_list.where(entry))
    return len(bad)


def _check_finite(values, epoch, batch_index):
    bad = [name for name, v in values.items() if v["count"] and not math.isfinite(v["loss"])]
    if bad:
        raise FloatingPointError("the loss of task(s) %s became NaN or infinite in epoch %d by batch %d. "
                                 "Lower --lr, or check the images and labels of that batch; the last "
                                 "good checkpoint is kept." % (", ".join(bad), epoch, batch_index))


def train_one_epoch(net, trainer, loader, ctxs, loss_fn, metrics: TaskMetrics, epoch, cfg: LoopConfig,
                    on_batch: Optional[Callable] = None):
    """Train over ``loader`` once; returns (metric values, images/s, skipped bad images)."""
    metrics.reset()
    skipped, seen, tic, interval_start, interval_seen = 0, 0, time.time(), time.time(), 0
    bar = _progress(loader, cfg.progress_bar, "epoch %d" % epoch)
    for i, batch in enumerate(bar):
        if cfg.skip_bad:
            skipped += _log_bad_samples(batch, loader._dataset)
        parts, valids = split_batch(batch[:2], ctxs)
        with autograd.record():
            results = []
            for (x, y), v in zip(parts, valids):
                outputs = net(x)
                results.append((outputs, loss_fn(outputs, y, v)))
        autograd.backward([res[1][0] for res in results])
        trainer.step(batch[0].shape[0])
        for d, (outputs, (_, losses, labels, masks)) in enumerate(results):
            metrics.update(d, outputs, labels, masks, losses)
        seen += batch[0].shape[0]
        interval_seen += batch[0].shape[0]
        if (i + 1) % cfg.log_every == 0:
            values = metrics.values()
            _check_finite(values, epoch, i + 1)
            speed = interval_seen / max(time.time() - interval_start, 1e-9)
            _report_interval(bar, epoch, i + 1, speed, values, trainer.learning_rate)
            interval_start, interval_seen = time.time(), 0
        if on_batch is not None:
            on_batch(epoch, i + 1)
    values = metrics.values()
    _check_finite(values, epoch, i + 1 if seen else 0)
    return values, seen / max(time.time() - tic, 1e-9), skipped


def _report_interval(bar, epoch, batch_index, speed, values, lr):
    text = "Epoch[%d] Batch [%d]\tSpeed: %.2f samples/sec\tlr %.6g\t%s" % (
        epoch, batch_index, speed, lr, summarise(values))
    if isinstance(bar, tqdm):
        bar.set_postfix_str("%.1f img/s %s" % (speed, " ".join(
            "%s %.3f" % (n, v["acc"]) for n, v in values.items())))
    _logger.info(text)


def evaluate(net, loader, ctxs, loss_fn, metrics: TaskMetrics, progress_bar=False):
    """Mean loss and accuracy per task over ``loader`` (no gradient)."""
    metrics.reset()
    for batch in _progress(loader, progress_bar, "validation"):
        parts, valids = split_batch(batch[:2], ctxs)
        for d, ((x, y), v) in enumerate(zip(parts, valids)):
            outputs = net(x)
            _, losses, labels, masks = loss_fn(outputs, y, v)
            metrics.update(d, outputs, labels, masks, losses)
    return metrics.values()


def epoch_record(epoch, lr, train_values, val_values, speed, skipped, seconds):
    """One history row: epoch, lr, per-task train/val loss and accuracy, img/s."""
    record = {"epoch": epoch, "lr": lr, "train": train_values, "speed_img_s": round(speed, 3),
              "seconds": round(seconds, 2)}
    if val_values is not None:
        record["val"] = val_values
        record["val_loss"] = total_loss(val_values)
    record["train_loss"] = total_loss(train_values)
    if skipped:
        record["skipped_images"] = skipped
    return record


def add_arguments(parser):
    """Optimisation flags (the original's names and defaults)."""
    group = parser.add_argument_group("optimisation")
    group.add_argument("--batch-size", type=int, default=32, help="total batch size over all devices")
    group.add_argument("--num-epoch", type=int, default=10, help="train up to this epoch")
    group.add_argument("--lr", type=float, default=0.001, help="learning rate")
    group.add_argument("--mom", type=float, default=0.9, help="SGD momentum")
    group.add_argument("--wd", type=float, default=0.0001, help="weight decay")
    group.add_argument("--optimizer", default="sgd", help="any mx.optimizer name: sgd, nag, adam, ...")
    group.add_argument("--lr-scheduler", default="step", help="learning-rate schedule: step")
    group.add_argument("--lr-step-epochs", default="5,10", help="epochs at which the step schedule drops the lr")
    group.add_argument("--lr-factor", type=float, default=0.1, help="lr multiplier at each step")
    group.add_argument("--seed", type=int, default=None, help="random seed for weights, shuffling, augmentation")
    group.add_argument("--disp-batches", type=int, default=20, help="batches between speed/metric log lines")
    group.add_argument("--quiet", action="store_true", help="no progress bar, warnings only on the console")

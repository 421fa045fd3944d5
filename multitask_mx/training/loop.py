"""The training loop: masked multi-task loss, one epoch of training, evaluation.

For each batch: split across devices, forward under ``autograd.record()``, sum the
task losses, backward, ``trainer.step``, add to the on-device metrics. Logging and
checkpointing happen at the log interval and at epoch end, in ``fit``.
"""
import argparse
import collections
import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm import tqdm

from ..data.datasets import BAD_SAMPLE, SHOWN, device_normalize
from ..devices import split_batch
from ..mxprivate import loader_dataset
from .kind_losses import KindConfig, multilabel_loss, regress_loss
from .metrics import TaskMetrics, summarise, total_loss
from .gradients import task_terms
from .weighting import FixedWeighting
from ..flagtypes import fraction, non_negative_float, non_negative_int, positive_float, positive_int

_logger = logging.getLogger(__name__)

# Batches the Python loop may run ahead of MXNet's engine. Unbounded, a short epoch is queued in seconds
# and then computed in silence (no progress line is due while the loop waits at the epoch's end: an epoch
# of 30 batches showed nothing for 30 s), and the queued batches hold memory. Waiting for the batch
# ENGINE_LEAD back still leaves the engine that many batches of work, so it never waits for the loop.
ENGINE_LEAD = 2
# The optimizers given --mom: MXNet's others have no momentum (adam, rmsprop: their own moment estimates) or
# their own default (signum). Its registry ignores case (--optimizer SGD is sgd), so names are compared lowered.
MOMENTUM_OPTIMIZERS = ("sgd", "nag")


class MultiTaskLoss:
    """Weighted sum over tasks of softmax cross-entropy.

    Unknown labels (-1), failed images and device padding have mask 0 and add
    nothing. ``weighting`` (weighting.py) turns per-task losses into the total: fixed
    ``weights`` by default, or learned/dynamic ones. ``class_weights`` (one array or None
    per task) weigh training samples by class; validation losses stay unweighted so
    that they compare across settings. Optional label smoothing; ``mix`` gives mixup's
    second labels and weight.
    """

    def __init__(self, num_classes, label_smoothing=0.0, weighting=None, class_weights=None,
                 kinds: Optional[KindConfig] = None):
        self.num_classes = list(num_classes)
        self.kinds = kinds  # None: every task softmax, label k in column k (kind_losses.py otherwise)
        self._pos_weight_arrays = {}
        names = ["task%d" % k for k in range(len(self.num_classes))]
        self.weighting = weighting if weighting is not None else FixedWeighting(names)
        self.class_weights = list(class_weights) if class_weights else [None] * len(self.num_classes)
        self.label_smoothing = label_smoothing
        self._ce = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=not label_smoothing)
        self._class_weight_arrays = {}  # (task, context) -> NDArray, uploaded once

    @property
    def weights(self):
        """The tasks' current loss weights, in task order."""
        return list(self.weighting.current().values())

    def params(self):
        """Parameters of the loss that the Trainer updates with the network (learned weights)."""
        return self.weighting.params()

    def _task_loss(self, out, label, k):
        if not self.label_smoothing:
            loss = self._ce(out, label)
        else:
            eps, classes = self.label_smoothing, self.num_classes[k]
            dense = mx.nd.one_hot(label, classes, on_value=1 - eps + eps / classes, off_value=eps / classes)
            loss = self._ce(out, dense)
        if self.class_weights[k] is not None and autograd.is_recording():
            loss = loss * mx.nd.take(self._class_weight_array(k, label.context), label)
        return loss

    def _class_weight_array(self, k, ctx):
        key = (k, ctx)
        if key not in self._class_weight_arrays:
            self._class_weight_arrays[key] = mx.nd.array(self.class_weights[k], ctx=ctx, dtype="float32")
        return self._class_weight_arrays[key]

    def _kind_loss(self, out, labels, valid, k):
        """(masked per-sample loss, labels for the metrics, mask) of task k from the batch's label slots."""
        kind = self.kinds.kinds[k] if self.kinds else "class"
        start, width = self.kinds.slots[k] if self.kinds else (k, 1)
        if kind == "regress":
            return regress_loss(out, labels[:, start], valid, self.kinds.regress_loss)
        if kind == "multilabel":
            return multilabel_loss(out, labels[:, start:start + width], valid, self._pos_weight(k, out.context))
        label, mask = _label_and_mask(labels[:, start], valid)
        return self._task_loss(out, label, k) * mask, label, mask

    def _pos_weight(self, k, ctx):
        weights = self.kinds.pos_weights[k] if self.kinds.pos_weights else None
        if weights is None or not autograd.is_recording():  # validation losses stay unweighted
            return None
        if (k, ctx) not in self._pos_weight_arrays:
            self._pos_weight_arrays[(k, ctx)] = mx.nd.array(weights, ctx=ctx).reshape((1, -1))
        return self._pos_weight_arrays[(k, ctx)]

    def __call__(self, outputs, labels, valid, mix=None):
        """Returns (total per-sample loss, per-task losses, per-task labels, per-task masks)."""
        losses, task_labels, masks = [], [], []
        for k, out in enumerate(outputs):
            loss, label, mask = self._kind_loss(out, labels, valid, k)
            if mix is not None:
                other_loss = self._kind_loss(out, mix[0], valid, k)[0]
                loss = mix[1] * loss + (1 - mix[1]) * other_loss
            losses.append(loss)
            task_labels.append(label)
            masks.append(mask)
        total = self.weighting.combine(losses, masks, valid)
        return total, losses, task_labels, masks


def _label_and_mask(label, valid):
    mask = (label >= 0).astype("float32") * valid
    return mx.nd.maximum(label, 0).astype("float32"), mask


def mixup(x, labels, alpha, rng):
    """Mix each image with another of the batch: (mixed x, the partners' labels, weight)."""
    lam = float(rng.beta(alpha, alpha))
    index = mx.nd.array(rng.permutation(x.shape[0]), ctx=x.context)
    return lam * x + (1 - lam) * mx.nd.take(x, index), mx.nd.take(labels, index), lam


@dataclass
class LoopConfig:
    """How the loop runs and reports."""

    log_every: int = 20
    # without a progress bar (a log, no terminal): also a line at least this often, so that a short
    # epoch of few batches, or a slow machine, does not go silent for longer than this
    log_seconds: float = 10.0
    progress_bar: bool = True
    skip_bad: bool = False
    mixup_alpha: float = 0.0
    amp: bool = False
    seed: Optional[int] = None
    normalization: str = "imagenet"  # applied on the device to uint8 batches (data.Uint8Output)
    task_gradients: Optional[object] = None  # gradients.TaskGradients: per-task backward (stats, PCGrad)


def _progress(loader, enabled, desc, total=None):
    if enabled and sys.stderr.isatty():
        return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, total=total or len(loader))
    return loader


def _log_bad_samples(batch, dataset, named):
    """Count a batch's failed images; the epoch's first SHOWN (``named`` so far) are logged by name."""
    labels = batch[1].asnumpy()  # loader output on CPU: reading it does not wait for training
    bad = (labels[:, 0] == BAD_SAMPLE).nonzero()[0]
    for i in bad[:max(0, SHOWN - named)]:
        position = int(batch[2][i].asscalar())
        _logger.warning("skipped unreadable image %s (%s)", dataset.image_list.path_at(position),
                        dataset.image_list.where_at(position))
    return len(bad)


def _check_finite(values, epoch, batch_index):
    bad = [name for name, v in values.items() if v["count"] and not math.isfinite(v["loss"])]
    if bad:
        raise FloatingPointError("the loss of task(s) %s became NaN or infinite in epoch %d by batch %d. "
                                 "Lower --lr, or check the images and labels of that batch."
                                 % (", ".join(bad), epoch, batch_index))


def check_weights_finite(params, epoch, batch_index=None):
    """Raise FloatingPointError if any weight is NaN or infinite; called before every checkpoint write.

    One fused reduction and one read per save: ``sum(x * 0)`` is 0 for finite
    weights and NaN as soon as one is NaN or infinite (no overflow, unlike a norm).
    """
    arrays = [p.list_data()[0] for p in params]
    if not arrays:
        return
    total = mx.nd.add_n(*[(x.astype("float32", copy=False) * 0).sum().as_in_context(arrays[0].context) for x in arrays])
    if not math.isfinite(float(total.asscalar())):
        where = "by batch %d" % batch_index if batch_index else "by its end"
        raise FloatingPointError("the weights became NaN or infinite in epoch %d %s and were not saved. Lower "
                                 "--lr (or use --warmup-epochs), or check the images and labels." % (epoch, where))


def train_one_epoch(net, trainer, loader, ctxs, loss_fn, metrics: TaskMetrics, epoch, cfg: LoopConfig,
                    on_batch: Optional[Callable] = None, max_batches=None):
    """Train over ``loader`` once (or ``max_batches``); returns (metric values, images/s, skipped images).

    Skipped images are those that failed to load in this epoch plus those that the
    image check left out of the list before training (``ImageList.skipped``).
    """
    metrics.reset()
    if cfg.task_gradients is not None:
        cfg.task_gradients.reset()
    rng = np.random.RandomState(None if cfg.seed is None else cfg.seed + epoch)
    skipped, seen, done, tic = 0, 0, 0, time.time()
    interval_start, interval_seen = tic, 0
    bar = _progress(loader, cfg.progress_bar, "epoch %d" % epoch, max_batches)
    pending = collections.deque()  # the summed losses of the batches the engine may still be computing
    for batch in bar:
        if max_batches is not None and done >= max_batches:
            break
        if cfg.skip_bad:
            skipped += _log_bad_samples(batch, loader_dataset(loader), skipped)
        pending.append(train_step(net, trainer, batch, ctxs, loss_fn, metrics, cfg, rng, done + 1))
        if len(pending) > ENGINE_LEAD:
            for total in pending.popleft():
                total.wait_to_read()
        done += 1
        seen += batch[0].shape[0]
        interval_seen += batch[0].shape[0]
        if report_due(done, cfg, time.time() - interval_start, isinstance(bar, tqdm)):
            values = metrics.values()
            _check_finite(values, epoch, done)
            speed = interval_seen / max(time.time() - interval_start, 1e-9)
            _report_interval(bar, epoch, done, speed, values, trainer.learning_rate)
            interval_start, interval_seen = time.time(), 0
        if on_batch is not None:
            on_batch(epoch, done)
    values = metrics.values()
    _check_finite(values, epoch, done)
    if skipped > SHOWN:
        _logger.warning("epoch %d: skipped %d unreadable image(s), the first %d named above", epoch, skipped, SHOWN)
    if cfg.skip_bad:  # the only way the preflight leaves images out
        skipped += loader_dataset(loader).image_list.skipped
    return values, seen / max(time.time() - tic, 1e-9), skipped


def report_due(done, cfg: LoopConfig, seconds_since_report, has_bar):
    """True when batch ``done`` gets a log line: every ``cfg.log_every`` batches, and without a progress
    bar also once ``cfg.log_seconds`` have passed since the last line (a terminal's bar shows the rest)."""
    if done % cfg.log_every == 0:
        return True
    return not has_bar and seconds_since_report >= cfg.log_seconds


def train_step(net, trainer, batch, ctxs, loss_fn, metrics, cfg: LoopConfig, rng, batch_index=0):
    """One batch: split over devices, forward, summed task losses, backward, update, metrics.

    On batches that ``cfg.task_gradients`` wants, each task's loss is backpropagated
    on its own (gradients.py: statistics, PCGrad) instead of the one summed backward.
    """
    parts, valids = split_batch(batch[:2], ctxs)
    results, terms = [], []
    per_task = cfg.task_gradients is not None and cfg.task_gradients.wants(batch_index)
    with autograd.record():
        for (x, y), v in zip(parts, valids):
            x = device_normalize(x, cfg.normalization)
            mix = None
            if cfg.mixup_alpha:
                x, other, lam = mixup(x, y, cfg.mixup_alpha, rng)
                mix = (other, lam)
            outputs = net(x)
            results.append((outputs, loss_fn(outputs, y, v, mix)))
            if per_task:
                terms.append(task_terms(loss_fn.weighting, results[-1][1][1], results[-1][1][3], v))
        totals = [res[1][0] for res in results]
        if cfg.amp:
            from mxnet.contrib import amp
            with amp.scale_loss(totals, trainer) as scaled:
                autograd.backward(scaled)
    if per_task:
        cfg.task_gradients.backward(terms, ctxs, batch[0].shape[0], batch_index)
    elif not cfg.amp:
        autograd.backward(totals)
    trainer.step(batch[0].shape[0])
    for d, (outputs, (_, losses, labels, masks)) in enumerate(results):
        metrics.update(d, outputs, labels, masks, losses)
    return totals


def _report_interval(bar, epoch, batch_index, speed, values, lr):
    text = "Epoch[%d] Batch [%d]\tSpeed: %.2f samples/sec\tlr %.6g\t%s" % (
        epoch, batch_index, speed, lr, summarise(values))
    if isinstance(bar, tqdm):
        bar.set_postfix_str("%.1f img/s %s" % (speed, " ".join(
            "%s %.3f" % (n, v["acc"] if "acc" in v else v["mae"]) for n, v in values.items())))
    _logger.info(text)


def evaluate(net, loader, ctxs, loss_fn, metrics: TaskMetrics, progress_bar=False, normalization="imagenet"):
    """Mean loss and accuracy per task over ``loader`` (no gradient); uint8 batches get ``normalization``."""
    return evaluate_counting(net, loader, ctxs, loss_fn, metrics, progress_bar, normalization)[0]


def evaluate_counting(net, loader, ctxs, loss_fn, metrics: TaskMetrics, progress_bar=False, normalization="imagenet"):
    """(evaluate's values, images skipped as unreadable): with --skip-bad-images these are logged by name."""
    metrics.reset()
    skipped = 0
    for batch in _progress(loader, progress_bar, "validation"):
        if getattr(loader_dataset(loader), "skip_bad", False):
            skipped += _log_bad_samples(batch, loader_dataset(loader), skipped)
        parts, valids = split_batch(batch[:2], ctxs)
        for d, ((x, y), v) in enumerate(zip(parts, valids)):
            outputs = net(device_normalize(x, normalization))
            _, losses, labels, masks = loss_fn(outputs, y, v)
            metrics.update(d, outputs, labels, masks, losses)
    if getattr(loader_dataset(loader), "skip_bad", False):  # and those the preflight left out, as in training
        skipped += getattr(loader_dataset(loader).image_list, "skipped", 0)
    return metrics.values(), skipped


def epoch_record(epoch, lr, train_values, val_values, speed, skipped, seconds, val_skipped=0):
    """One history row: epoch, lr, per-task train/val loss and accuracy, img/s, images skipped (train + val)."""
    record = {"epoch": epoch, "lr": lr, "train": train_values, "speed_img_s": round(speed, 3),
              "seconds": round(seconds, 2)}
    if val_values is not None:
        record["val"] = val_values
        record["val_loss"] = total_loss(val_values)
    record["train_loss"] = total_loss(train_values)
    if skipped + val_skipped:
        record["skipped_images"] = skipped + val_skipped
    if val_skipped:
        record["val_skipped_images"] = val_skipped
    return record


def lr_value(text):
    """--lr's type: a number above 0 or 'auto' (argparse reports anything else)."""
    if text == "auto":
        return text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError("%s (a number such as 0.01, or auto to run the lr finder first)" % exc)


def uses_momentum(optimizer):
    """True when --optimizer ``optimizer`` is given --mom (MOMENTUM_OPTIMIZERS, any case)."""
    return optimizer.lower() in MOMENTUM_OPTIMIZERS


def add_arguments(parser):
    """Optimisation flags (the original's names and defaults)."""
    group = parser.add_argument_group("optimisation")
    group.add_argument("--batch-size", type=positive_int, default=None,
                       help="total batch size over all devices (default: 32, or 16 or 8 where that gives a run on "
                            "one device at least 300 optimizer updates; docs/reference.md)")
    group.add_argument("--num-epoch", type=positive_int, default=10, help="train up to this epoch")
    group.add_argument("--lr", type=lr_value, default=None, help="learning rate; 'auto' runs find-lr first; "
                       "not given: 0.2 x batch/256, from scratch and fine-tuning (the new heads 4x that "
                       "when fine-tuning; docs/reference.md)")
    group.add_argument("--mom", type=fraction, default=0.9, help="momentum of --optimizer sgd or nag")
    group.add_argument("--wd", type=non_negative_float, default=0.0001, help="weight decay")
    group.add_argument("--optimizer", default="sgd", help="any mx.optimizer name: sgd, nag, adam, ...")
    group.add_argument("--label-smoothing", type=fraction, default=0.0, help="label smoothing epsilon, e.g. 0.1")
    group.add_argument("--mixup", type=non_negative_float, default=0.0, metavar="ALPHA",
                       help="mixup with Beta(ALPHA, ALPHA) weights, applied to every task (0: off)")
    group.add_argument("--seed", type=non_negative_int, default=None, help="random seed for weights, shuffling, augmentation")

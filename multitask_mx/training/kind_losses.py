"""Losses of the task kinds beside softmax: regression (l1, l2, huber) and multi-label (masked BCE).

Each takes a head's output and the batch's float32 label slots of its task and gives
(per-sample loss, the labels for the metrics, per-sample 0/1 mask), like the softmax
loss in loop.py: unknown targets (NaN for regress, -1 per attribute), failed images
(BAD_SAMPLE) and device padding have mask 0 and add nothing.
"""
import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import mxnet as mx

from ..data.datasets import BAD_SAMPLE
from ..data.task_kinds import slot_ranges

_logger = logging.getLogger(__name__)


@dataclass
class KindConfig:
    """Per task: kind, its label slots (first, width), and for the losses the regression loss and pos weights."""

    kinds: Sequence[str]
    slots: Sequence[tuple]
    regress_loss: str = "huber"
    pos_weights: Optional[Sequence] = None  # per task: None or one weight per attribute

    @classmethod
    def for_tasks(cls, tasks, regress_loss="huber", pos_weights=None):
        """The config of ``tasks`` (task_kinds.slot_ranges gives the slots)."""
        return cls([t.kind for t in tasks], slot_ranges(tasks), regress_loss, pos_weights)


def regress_loss(out, label, valid, how="huber"):
    """(per-sample loss, target with 0 where unknown, mask) of a 1-unit head on a standardised target."""
    known = (label == label) * (label != BAD_SAMPLE)  # NaN != NaN: an unknown value
    mask = known.astype("float32") * valid
    target = mx.nd.where(known, label, mx.nd.zeros_like(label))
    diff = out.astype("float32").reshape((-1,)) - target
    if how == "l1":
        loss = mx.nd.abs(diff)
    elif how == "huber":  # quadratic within one standard deviation of the target, linear beyond
        absolute = mx.nd.abs(diff)
        loss = mx.nd.where(absolute < 1, 0.5 * diff * diff, absolute - 0.5)
    else:  # l2
        loss = 0.5 * diff * diff
    return loss * mask, target, mask


def multilabel_loss(out, labels, valid, pos_weight=None):
    """(per-sample mean BCE over known attributes, 0/1 labels, per-sample mask) of a K-unit sigmoid head.

    ``labels`` is (batch x K): 1, 0, or -1 (unknown) per attribute. The per-attribute
    mask is ``labels >= 0``; a sample counts when any of its attributes is known.
    """
    x = out.astype("float32")
    known = (labels >= 0).astype("float32") * valid.reshape((-1, 1))
    z = mx.nd.maximum(labels, 0)
    # log(1 + exp(-|x|)) + max(-x, 0) is -log(sigmoid(x)), without overflow
    log_sig = mx.nd.log1p(mx.nd.exp(-mx.nd.abs(x))) + mx.nd.relu(-x)
    weight = 1.0
    if pos_weight is not None:
        weight = 1.0 + mx.nd.broadcast_mul(z, pos_weight - 1.0)
    per_attribute = (1 - z) * x + weight * log_sig
    count = mx.nd.sum(known, axis=1)
    loss = mx.nd.sum(per_attribute * known, axis=1) / mx.nd.maximum(count, 1)
    return loss, z * known - (1 - known), (count > 0).astype("float32")

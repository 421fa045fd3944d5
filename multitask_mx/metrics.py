"""Per-task loss and accuracy, accumulated on the devices.

Reading a value from an NDArray waits for the engine, so the training loop only
adds to on-device sums here and reads them at the log interval and epoch end.
"""
from typing import Sequence

from . import _runtime  # noqa: F401  (numpy shim before mxnet)
import mxnet as mx
import numpy as np


class TaskMetrics:
    """Sums of loss, correct predictions and labelled samples per task, per device."""

    def __init__(self, task_names: Sequence[str], ctxs, top_k=None):
        self.task_names = list(task_names)
        self.ctxs = list(ctxs)
        self.reset()

    def reset(self):
        """Start a new accumulation (epoch or validation pass)."""
        # rows: loss sum, correct, labelled count
        self._sums = [mx.nd.zeros((3, len(self.task_names)), ctx=c) for c in self.ctxs]
        self.samples = 0

    def update(self, device_index, outputs, labels, masks, losses):
        """Add one device's batch slice: lists over tasks of logits, labels, 0/1 masks, losses."""
        rows = []
        for out, label, mask, loss in zip(outputs, labels, masks, losses):
            correct = (mx.nd.argmax(out, axis=1) == label.astype(out.dtype)) * mask
            rows.append(mx.nd.concat(mx.nd.sum(loss), mx.nd.sum(correct), mx.nd.sum(mask), dim=0))
        self._sums[device_index] += mx.nd.stack(*rows, axis=1).astype("float32")

    def values(self):
        """{task: {"loss": mean loss, "acc": accuracy}}; waits for the engine."""
        total = sum(s.asnumpy() for s in self._sums)
        out = {}
        for i, name in enumerate(self.task_names):
            count = total[2, i]
            out[name] = {"loss": float(total[0, i] / count) if count else float("nan"),
                         "acc": float(total[1, i] / count) if count else float("nan"),
                         "count": int(count)}
        return out


def summarise(values):
    """Short text for a log line: 'label loss 0.512 acc 0.812 | label_gt0 ...'."""
    return " | ".join("%s loss %.4f acc %.4f" % (name, v["loss"], v["acc"]) for name, v in values.items())


def total_loss(values):
    """Sum of the per-task mean losses (the quantity training minimises), NaN-safe."""
    return float(np.nansum([v["loss"] for v in values.values()]))

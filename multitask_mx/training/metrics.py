"""Per-task loss, accuracy, top-k accuracy and head agreement, accumulated on the devices.

Reading a value from an NDArray waits for the engine, so the training loop only
adds to on-device sums here and reads them at the log interval and epoch end.

Agreement is kept for each derived task (e.g. ``label_gt0 = label > 0``): how often
its own head's answer equals the answer implied by its source task's head, found by
summing the source head's class probabilities over the classes that derive to each
derived class (for ``label > 0``: 1 - p(class 0) against p(class 0)).
"""
import argparse
from typing import Sequence

import mxnet as mx
import numpy as np

from ..errors import UserInputError
from ..flagtypes import positive_int
from ..data.tasks import agreement_pairs
from . import kind_metrics

# rows of the on-device sums, one column per task
_LOSS, _CORRECT, _COUNT, _TOPK, _AGREE = range(5)


class TaskMetrics:
    """Sums of loss, correct predictions (top-1 and top-k), agreement and labelled samples per task and device.

    ``top_k`` adds top-k accuracy for tasks with more than k classes (``num_classes``
    says which); ``agreement`` is ``tasks.agreement_pairs(tasks)``.
    """

    def __init__(self, task_names: Sequence[str], ctxs, top_k=None, num_classes=None, agreement=(), kinds=None):
        self.task_names = list(task_names)
        # per task (kind, std): "regress" sums |error| in _CORRECT and error^2 in _TOPK; "multilabel" sums
        # right attribute answers in _CORRECT, known attributes in _TOPK, plus a score histogram (kind_metrics)
        self.kinds = list(kinds) if kinds else [("class", 1.0)] * len(self.task_names)
        self.ctxs = list(ctxs)
        classes = list(num_classes) if num_classes else [0] * len(self.task_names)
        self.top_k = top_k
        self.topk_tasks = [k for k, n in enumerate(classes) if top_k and n > top_k and self.kinds[k][0] == "class"]
        self._widths = classes
        self.agreement_tasks = [(d, s) for d, s, _ in agreement]
        self._matrices = [{c: mx.nd.array(m, ctx=c) for c in self.ctxs} for _, _, m in agreement]
        self._zero = {c: mx.nd.zeros((1,), ctx=c) for c in self.ctxs}  # the row of a task without top-k/agreement
        self.reset()

    @classmethod
    def for_tasks(cls, tasks, ctxs, top_k=None, agreement=True):
        """Metrics for Task objects: top-k where they have more than k classes, agreement of derived tasks.

        Agreement is only reported for validation: training passes agreement=False and
        saves its ops on every batch.
        """
        if isinstance(top_k, (list, tuple)):  # the parsed --top-k flag
            top_k = train_top_k(top_k)
        if top_k is not None and top_k < 1:
            raise UserInputError("--top-k %d: give 1 or more." % top_k)
        pairs = agreement_pairs(tasks) if agreement else []
        return cls([t.name for t in tasks], ctxs, top_k, [t.num_classes for t in tasks], pairs,
                   [(t.kind, t.std) for t in tasks])

    def reset(self):
        """Start a new accumulation (epoch or validation pass)."""
        self._sums = [mx.nd.zeros((5, len(self.task_names)), ctx=c) for c in self.ctxs]
        self._hists = [{k: mx.nd.zeros((2, self._widths[k], kind_metrics.BINS), ctx=c)
                        for k, (kind, _) in enumerate(self.kinds) if kind == "multilabel"} for c in self.ctxs]

    def update(self, device_index, outputs, labels, masks, losses):
        """Add one device's batch slice: lists over tasks of logits, labels, 0/1 masks, losses."""
        zero = self._zero[outputs[0].context]
        topk = set(self.topk_tasks)
        rows = []
        for k, (out, label, mask, loss) in enumerate(zip(outputs, labels, masks, losses)):
            kind, std = self.kinds[k]
            if kind == "regress":
                absolute, squared = kind_metrics.regress_sums(out, label, mask, std)
                rows.append([mx.nd.sum(loss), absolute, mx.nd.sum(mask), squared, zero])
                continue
            if kind == "multilabel":
                correct, known, hist = kind_metrics.multilabel_update(out, label)
                self._hists[device_index][k] += hist
                rows.append([mx.nd.sum(loss), correct, mx.nd.sum(mask), known, zero])
                continue
            # Class ids are compared in float32, never in the logits' type: float16 holds
            # integers exactly only up to 2048, so under AMP class 2049 would read as 2048.
            out = out.astype("float32", copy=False)
            label = label.astype("float32", copy=False)
            correct = (mx.nd.argmax(out, axis=1) == label) * mask
            in_topk = zero
            if k in topk:
                best = mx.nd.topk(out, axis=1, k=self.top_k, ret_typ="indices", dtype="float32")
                hit = mx.nd.sum(mx.nd.broadcast_equal(best, label.reshape((-1, 1))), axis=1)
                in_topk = mx.nd.sum(hit * mask)
            rows.append([mx.nd.sum(loss), mx.nd.sum(correct), mx.nd.sum(mask), in_topk, zero])
        for (d, s), matrices in zip(self.agreement_tasks, self._matrices):
            rows[d][_AGREE] = _agreeing(outputs[d], outputs[s], matrices[outputs[d].context], masks[d])
        stacked = mx.nd.stack(*[mx.nd.concat(*[r.astype("float32") for r in row], dim=0) for row in rows], axis=1)
        self._sums[device_index] += stacked

    def _totals(self):
        return sum(s.asnumpy() for s in self._sums)

    def values(self):
        """{task: {"loss", "acc", "count"[, "topk"]}} means over labelled samples; waits for the engine."""
        total = self._totals()
        out = {}
        for i, name in enumerate(self.task_names):
            count, kind = total[_COUNT, i], self.kinds[i][0]
            out[name] = {"loss": _mean(total[_LOSS, i], count), "count": int(count)}
            if kind == "regress":
                out[name].update(mae=_mean(total[_CORRECT, i], count), rmse=_mean(total[_TOPK, i], count) ** 0.5)
                continue
            if kind == "multilabel":  # acc: share of right attribute answers at probability 0.5
                hist = sum(h[i].asnumpy() for h in self._hists)
                values = kind_metrics.multilabel_values(hist)
                out[name].update(acc=_mean(total[_CORRECT, i], total[_TOPK, i]), map=values["map"],
                                 f1=values["f1"], attr_acc=values["attr_acc"])
                continue
            out[name]["acc"] = _mean(total[_CORRECT, i], count)
            if i in self.topk_tasks:
                out[name]["topk"] = _mean(total[_TOPK, i], count)
        return out

    def agreement(self):
        """{derived task: share of its labelled samples where its head agrees with its source head}."""
        total = self._totals()
        return {self.task_names[d]: _mean(total[_AGREE, d], total[_COUNT, d]) for d, _ in self.agreement_tasks}


def _agreeing(derived_out, source_out, matrix, mask):
    """Number of (masked) samples whose derived head's argmax equals the source head's implied class."""
    implied = mx.nd.dot(mx.nd.softmax(source_out.astype("float32"), axis=1), matrix)
    same = mx.nd.argmax(derived_out.astype("float32"), axis=1) == mx.nd.argmax(implied, axis=1)
    return mx.nd.sum(same * mask)


def _mean(total, count):
    return float(total / count) if count else float("nan")


def summarise(values):
    """Short text for a log line: 'label loss 0.512 acc 0.812 topk 0.95 | age loss 0.3 mae 4.1 rmse 5.2 | ...'."""
    shown = ("acc", "topk", "mae", "rmse", "map", "f1")
    return " | ".join("%s loss %.4f%s" % (name, v["loss"], "".join(" %s %.4f" % (key, v[key])
                                                                  for key in shown if key in v))
                      for name, v in values.items())


def total_loss(values):
    """Sum of the per-task mean losses (the quantity training minimises) over the tasks with labelled images.

    NaN when no task has one (a validation list whose labels are all -1): never 0, which
    would pass as the best validation loss there can be. A labelled task's NaN (divergence) stays NaN.
    """
    losses = [v["loss"] for v in values.values() if v.get("count", 1)]
    return float(np.sum(losses)) if losses else float("nan")


def top_k_values(text):
    """argparse type of ``--top-k K[,K]``: '1,5' -> [1, 5] (sorted, each 1 or more)."""
    try:
        ks = sorted({int(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError("%r: give whole numbers of 1 or more, e.g. 5 or 1,5" % text)
    return ks


def add_top_k_flag(group, default, what):
    """``--top-k K[,K]``: which top-k accuracies to report, declared once for train and evaluate."""
    group.add_argument("--top-k", type=top_k_values, default=default, metavar="K[,K]",
                       help="top-K accuracy: a prediction counts as right when the label is among the K most "
                            "probable classes (tasks with more than K classes only); %s" % what)


def train_top_k(ks):
    """The one K that training tracks (as 'topk' in history.json and for --best-metric val-topk:<task>), or None."""
    if not ks:
        return None
    if len(ks) > 1:
        raise UserInputError("--top-k %s: training reports one top-k accuracy ('topk' in history.json); give one "
                             "K, such as --top-k %d. `multitask-mx evaluate --top-k %s` reports several."
                             % (",".join(map(str, ks)), ks[-1], ",".join(map(str, ks))))
    return ks[0]


def add_arguments(parser):
    """Progress and metric flags."""
    group = parser.add_argument_group("progress and metrics")
    group.add_argument("--disp-batches", type=positive_int, default=20,
                       help="batches between speed/metric log lines (without a terminal's progress bar, also a "
                            "line at least every 10 s)")
    group.add_argument("--quiet", action="store_true", help="no progress bar, warnings only on the console")
    add_top_k_flag(group, None, "train reports one K, as 'topk' in the log and history.json")

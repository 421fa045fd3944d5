"""How task losses are weighted: fixed, learned (uncertainty), dynamic (DWA), and class weights.

``MultiTaskLoss`` (training.py) asks a weighting for the batch's total loss from the
per-task losses. Three weightings exist:

* ``fixed``: ``sum_k w_k L_k`` with ``--loss-weights`` (Keras' ``loss_weights``).
* ``uncertainty``: Kendall, Gal and Cipolla (2018), "Multi-task learning using
  uncertainty to weigh losses". Each task has a learned log-variance ``s_k`` and the
  loss is ``sum_k w_k (exp(-s_k) L_k + s_k / 2)``, the classification form of their
  eq. 10 (``1/sigma^2 L + log sigma`` with ``s = log sigma^2``). ``s`` is a Gluon
  Parameter that the Trainer updates with the network.
* ``dwa``: dynamic weight average, Liu, Johns and Davison (2019), "End-to-end multi-task
  learning with attention". Epoch t weighs task k by ``K softmax_k(r_k / T)`` with
  ``r_k = L_k(t-1) / L_k(t-2)``, the ratio of its last two epochs' mean training losses
  (weights 1 for the first two epochs); a task whose loss falls slowly gets more weight.

Class weights (``--class-weights auto`` or a file) weigh each sample of a task by its
class, for imbalanced classes: MXNet's softmax loss has none (apache/mxnet#6157).
"""
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..errors import UserInputError
from ..data.task_kinds import kind_histograms
from ..data.tasks import config_lines
from ..flagtypes import finite_float

_logger = logging.getLogger(__name__)

WEIGHTINGS = ("fixed", "uncertainty", "dwa")
LOG_VAR_LIMIT = 10.0  # |s_k| is clipped here so exp(-s_k) stays finite if a loss reaches zero


def parse_loss_weights(text, task_names: Sequence[str]):
    """'1,0.5' -> [1.0, 0.5], one finite weight of 0 or more per task; None -> all 1."""
    if text is None:
        return [1.0] * len(task_names)
    try:
        weights = [float(v) for v in str(text).split(",")]
    except ValueError:
        weights = [math.nan]
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise UserInputError("--loss-weights %r: expected numbers of 0 or more, one per task, e.g. %s."
                             % (text, ",".join(["1"] * len(task_names))))
    if len(weights) != len(task_names):
        raise UserInputError("--loss-weights %r gives %d weight(s) for %d task(s) (%s, in this order)."
                             % (text, len(weights), len(task_names), ", ".join(task_names)))
    if not any(weights):
        raise UserInputError("--loss-weights %r: every weight is 0, so nothing would train." % text)
    return weights


@dataclass(frozen=True)
class WeightingConfig:
    """The loss-weighting flags."""

    loss_weights: Optional[str] = None
    method: str = "fixed"
    temperature: float = 2.0
    class_weights: Optional[str] = None

    @classmethod
    def from_args(cls, optim):
        """From parsed flags, checked."""
        if optim.dwa_temperature <= 0:
            raise UserInputError("--dwa-temperature %g: give a temperature above 0 (2 is usual)."
                                 % optim.dwa_temperature)
        return cls(optim.loss_weights, optim.loss_weighting, optim.dwa_temperature, optim.class_weights)


class FixedWeighting:
    """``sum_k w_k L_k`` with constant weights; the base of the other weightings."""

    name = "fixed"

    def __init__(self, task_names: Sequence[str], base_weights=None):
        self.task_names = list(task_names)
        self.base = list(base_weights) if base_weights else [1.0] * len(self.task_names)
        self.factors = [1.0] * len(self.task_names)  # what the weighting multiplies the base by

    def params(self):
        """Parameters the Trainer must update with the network (none here)."""
        return []

    def combine(self, losses, masks, valid):
        """Total per-sample loss from per-task per-sample losses."""
        return mx.nd.add_n(*[(b * f) * l for b, f, l in zip(self.base, self.factors, losses)])

    def start_epoch(self, history):
        """Called before each epoch with the finished epochs' records."""

    def current(self):
        """{task: the weight its loss gets now}; may wait for the engine (epoch end only)."""
        return {n: b * f for n, b, f in zip(self.task_names, self.base, self.factors)}

    def record(self):
        """What the epoch record stores: ``loss_weights`` (and a weighting's own state)."""
        return {"loss_weights": self.current()}

    def restore(self, history):
        """Continue from the records of a resumed run."""


class DynamicWeightAverage(FixedWeighting):
    """DWA: weights from the ratio of each task's last two epoch losses (see the module doc)."""

    name = "dwa"

    def __init__(self, task_names, base_weights=None, temperature=2.0):
        super().__init__(task_names, base_weights)
        self.temperature = temperature

    def start_epoch(self, history):
        """Set this epoch's weights from the last two records' mean training losses."""
        self.factors = dwa_factors(history, self.task_names, self.temperature)


def dwa_factors(history, task_names, temperature):
    """``K softmax(r / T)`` over tasks, r = loss ratio of the last two epochs; 1 each before that."""
    if len(history) < 2:
        return [1.0] * len(task_names)
    before, last = history[-2]["train"], history[-1]["train"]
    ratios = []
    for name in task_names:
        a, b = last.get(name, {}).get("loss"), before.get(name, {}).get("loss")
        usable = a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and b > 0
        ratios.append(a / b if usable else 1.0)  # a task without labels in an epoch keeps ratio 1
    scaled = np.array(ratios) / temperature
    weights = np.exp(scaled - scaled.max())
    return (len(task_names) * weights / weights.sum()).tolist()


class UncertaintyWeighting(FixedWeighting):
    """Learned per-task log-variances ``s_k`` (Kendall et al. 2018): ``w_k (exp(-s_k) L_k + s_k / 2)``.

    The regulariser ``s_k / 2`` counts once per sample labelled for task k, so a task's
    weight settles where ``exp(-s_k)`` is about ``1 / (2 L_k)`` whatever its share of labels.
    """

    name = "uncertainty"

    def __init__(self, task_names, base_weights=None, ctxs=(mx.cpu(),)):
        super().__init__(task_names, base_weights)
        self.log_var = gluon.Parameter("multitask_loss_log_var", shape=(len(self.task_names),),
                                       init=mx.init.Zero(), wd_mult=0.0)
        self.log_var.initialize(ctx=list(ctxs))

    def params(self):
        """The log-variances, which the Trainer updates with the network."""
        return [self.log_var]

    def combine(self, losses, masks, valid):
        """``sum_k w_k (exp(-s_k) L_k + s_k / 2 * mask_k)`` per sample."""
        s = mx.nd.clip(self.log_var.data(losses[0].context), -LOG_VAR_LIMIT, LOG_VAR_LIMIT)
        precision = mx.nd.exp(-s)
        terms = [b * (precision[k] * loss + 0.5 * s[k] * mask)
                 for k, (b, loss, mask) in enumerate(zip(self.base, losses, masks))]
        return mx.nd.add_n(*terms)

    def log_variances(self):
        """{task: s_k} (waits for the engine)."""
        values = self.log_var.data(self.log_var.list_ctx()[0]).asnumpy()
        return {n: float(v) for n, v in zip(self.task_names, values)}

    def current(self):
        """{task: w_k exp(-s_k)}, the weight of each task's loss now."""
        s = self.log_variances()
        return {n: b * math.exp(-max(-LOG_VAR_LIMIT, min(LOG_VAR_LIMIT, s[n])))
                for n, b in zip(self.task_names, self.base)}

    def record(self):
        """``loss_weights`` and the log-variances, so that --resume can restore them."""
        return {"loss_weights": self.current(), "log_variance": self.log_variances()}

    def restore(self, history):
        """Set the log-variances to those of the last finished epoch of a resumed run."""
        saved = history[-1].get("log_variance") if history else None
        if saved:
            values = [float(saved.get(n, 0.0)) for n in self.task_names]
            self.log_var.set_data(mx.nd.array(values))
            _logger.info("--resume: loss log-variances restored from epoch %d: %s", history[-1]["epoch"],
                         ", ".join("%s %.4f" % (n, v) for n, v in zip(self.task_names, values)))


def make_weighting(cfg: WeightingConfig, task_names: Sequence[str], ctxs):
    """The weighting that cfg names, with its base weights checked against the tasks."""
    base = parse_loss_weights(cfg.loss_weights, task_names)
    if cfg.method == "uncertainty":
        return UncertaintyWeighting(task_names, base, ctxs)
    if cfg.method == "dwa":
        return DynamicWeightAverage(task_names, base, cfg.temperature)
    return FixedWeighting(task_names, base)


def format_weights(weights: Dict[str, float]):
    """'label 1.000 label_gt0 0.500', for the log."""
    return " ".join("%s %.4g" % (n, w) for n, w in weights.items())


# ---- class weights ------------------------------------------------------------------------------

def inverse_frequency(counts):
    """Weights proportional to 1/count, mean 1 over the classes that occur; 1 for absent classes."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.ones(len(counts))
    if present.any():
        inverse = 1.0 / counts[present]
        weights[present] = inverse / inverse.mean()
    return weights


def make_class_weights(flag, tasks, image_list):
    """[per-class weights or None per task] from --class-weights (None: no class weights)."""
    if not flag:
        return None
    if flag == "auto":
        histograms = kind_histograms(tasks, image_list.labels)
        # class weights apply to softmax tasks only
        weights = [inverse_frequency(histograms[t.name]["counts"]) if t.kind == "class" else None for t in tasks]
        source = "inverse class frequency in %s" % image_list.source
    else:
        weights = read_class_weights(flag, tasks)
        source = flag
    for task, w in zip(tasks, weights):
        if w is not None:
            _logger.info("class weights of %s (%s): %s", task.name, source, " ".join("%.3g" % v for v in w))
    return weights


def read_class_weights(path, tasks):
    """A file of lines ``TASK: w0 w1 ...`` (one weight per class); unlisted tasks get none."""
    if not os.path.isfile(path):
        raise UserInputError("--class-weights %r: not 'auto' and not a file. Give auto, or a file with lines "
                             "'TASK: w0 w1 ...' (one weight per class)." % path)
    by_name = {t.name: t for t in tasks}
    found = {}
    for number, text in config_lines(path):
        where = "%s:%d" % (path, number)
        name, _, values = text.partition(":")
        name = name.strip()
        if name not in by_name:
            raise UserInputError("%s: expected 'TASK: w0 w1 ...' with TASK one of %s, found %r."
                                 % (where, ", ".join(by_name), text))
        found[name] = _parse_weights(values, by_name[name], where)
    if not found:
        raise UserInputError("--class-weights %s has no 'TASK: w0 w1 ...' line." % path)
    return [found.get(t.name) for t in tasks]


def _parse_weights(text, task, where):
    try:
        weights = np.array([float(v) for v in re.split(r"[\s,]+", text.strip()) if v], np.float64)
    except ValueError:
        weights = np.array([math.nan])
    if len(weights) != task.num_classes or not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise UserInputError("%s: task %s needs %d class weights (numbers of 0 or more), found %r."
                             % (where, task.name, task.num_classes, text.strip()))
    return weights


def add_arguments(parser):
    """Loss-weighting flags."""
    group = parser.add_argument_group("loss weighting")
    group.add_argument("--loss-weights", default=None, metavar="W1,W2,...",
                       help="weight of each task's loss, in task order, e.g. 1,0.5 (default: 1 each)")
    group.add_argument("--loss-weighting", choices=WEIGHTINGS, default="fixed",
                       help="fixed: --loss-weights as given; uncertainty: learned per-task log-variances "
                            "(Kendall et al. 2018); dwa: dynamic weight average from the last two epochs' "
                            "losses. Both multiply --loss-weights")
    group.add_argument("--dwa-temperature", type=finite_float, default=2.0,
                       help="temperature T of --loss-weighting dwa (larger: weights closer to 1)")
    group.add_argument("--class-weights", default=None, metavar="auto|FILE",
                       help="weigh training samples by class: auto = inverse class frequency in the training "
                            "list, per task, mean 1; or a file of 'TASK: w0 w1 ...' lines")

"""Each task's gradient on the shared trunk: interference statistics and PCGrad.

``--grad-stats-every N`` backpropagates every task's loss separately on every N-th
batch and measures, on the trunk's parameters, the cosine similarity of each pair of
task gradients and each task's gradient norm (per image: divided by the batch size).
A negative cosine means the tasks pull the shared weights in conflicting directions.
The update of a measured batch is the same as usual: the trunk gets the sum of the
task gradients, every other parameter the sum of its own.

``--grad-method pcgrad`` (Yu et al. 2020, "Gradient Surgery for Multi-Task
Learning") does the separate backward passes on every batch and, for each task, in
random order, projects its trunk gradient off every other task's gradient it
conflicts with (negative dot product); the trunk gets the sum of the projected
gradients, the heads keep their own. It costs one backward pass per task instead of
one in all (README "Task interference" gives the measured img/s).

All arithmetic is NDArray ops on the device; values are read only at the stats
interval (a log line) and at epoch end (the history record). With several devices
each device's share of the batch is projected on its own device, and the statistics
are measured on the first device's share.
"""
import logging
from dataclasses import dataclass

import mxnet as mx
import numpy as np
from mxnet import autograd

from ..errors import UserInputError
from ..flagtypes import non_negative_int

_logger = logging.getLogger(__name__)

METHODS = ("sum", "pcgrad")
_EPS = 1e-20  # keeps a zero gradient (a task without labels in the batch) from dividing by zero


@dataclass
class GradientConfig:
    """The task-gradient flags."""

    stats_every: int = 0
    method: str = "sum"

    @classmethod
    def from_args(cls, optim):
        """From the OptimSettings' --grad-stats-every and --grad-method."""
        return cls(optim.grad_stats_every, optim.grad_method)

    def check_precision(self, dtype):
        """Refuse per-task gradients with float16: AMP's loss scaling would skew them."""
        if self.active and dtype == "float16":
            raise UserInputError("--grad-stats-every/--grad-method pcgrad with --dtype float16: the per-task "
                                 "backward passes do not use AMP's loss scaling. Use --dtype float32 (or bfloat16).")

    @property
    def active(self):
        """True when some batches need the per-task backward passes."""
        return bool(self.stats_every) or self.method != "sum"


def gram(vectors):
    """The K x K matrix of dot products of K 1-D NDArrays (one kernel)."""
    stacked = mx.nd.stack(*vectors, axis=0)
    return mx.nd.dot(stacked, stacked, transpose_b=True)


def cosines_and_norms(vectors):
    """(K x K cosine similarities, K norms) of K 1-D NDArrays, on their device; zero vectors give cosine 0."""
    g = gram(vectors)
    norms = mx.nd.sqrt(mx.nd.maximum(mx.nd.diag(g), 0))
    return g / (mx.nd.dot(norms.reshape((-1, 1)), norms.reshape((1, -1))) + _EPS), norms


def project_conflicting(vectors, order):
    """PCGrad's projections: for each task i, g_i minus its component along each g_j it conflicts with.

    ``order`` is a list of task indices (the random order of the paper's algorithm 1).
    A pair with a non-negative dot product leaves g_i as it is; the projections use the
    original g_j. Pure NDArray arithmetic, no value read on the host.
    """
    squared = [mx.nd.sum(v * v) + _EPS for v in vectors]
    projected = []
    for i, g in enumerate(vectors):
        out = g
        for j in order:
            if j != i:
                dot = mx.nd.sum(out * vectors[j])
                out = out - (mx.nd.minimum(dot, 0) / squared[j]) * vectors[j]
        projected.append(out)
    return projected


def pcgrad(vectors, order):
    """The PCGrad update of the shared parameters: the sum of the projected task gradients."""
    return mx.nd.add_n(*project_conflicting(vectors, order))


def task_terms(weighting, losses, masks, valid):
    """Task k's share of the weighted total loss, per task (the weighting is a sum of per-task terms)."""
    terms = []
    for k in range(len(losses)):
        keep = [l if j == k else l * 0 for j, l in enumerate(losses)]
        keep_masks = [m if j == k else m * 0 for j, m in enumerate(masks)]
        terms.append(weighting.combine(keep, keep_masks, valid))
    return terms


class TaskGradients:
    """Runs the per-task backward passes on the batches that need them and keeps the epoch's statistics."""

    def __init__(self, cfg: GradientConfig, task_names, trunk_params, other_params, seed=None):
        self.cfg = cfg
        self.task_names = list(task_names)
        self._trunk = list(trunk_params)
        self._others = list(other_params)
        self._rng = np.random.RandomState(seed)
        self.reset()

    def reset(self):
        """Start a new epoch's statistics."""
        self._cos_sum, self._norm_sum, self.measured = None, None, 0

    def wants(self, batch_index):
        """Whether batch ``batch_index`` (1-based) needs separate task gradients."""
        return len(self.task_names) > 1 and bool(self._learnable()) and (
            self.cfg.method == "pcgrad" or bool(self.cfg.stats_every and batch_index % self.cfg.stats_every == 0))

    def _learnable(self):
        return [p for p in self._trunk if p.grad_req != "null"]  # frozen trunk layers have no gradient

    def backward(self, terms_by_device, ctxs, batch_size, batch_index):
        """Backward each task's term separately, then write the combined gradients (sum or PCGrad)."""
        trunk, others = self._learnable(), [p for p in self._others if p.grad_req != "null"]
        num_tasks = len(self.task_names)
        vectors = [[] for _ in ctxs]
        other_sums = [[None] * len(others) for _ in ctxs]
        for k in range(num_tasks):
            autograd.backward([terms[k] for terms in terms_by_device], retain_graph=k < num_tasks - 1)
            for d, ctx in enumerate(ctxs):
                vectors[d].append(mx.nd.concat(*[p.grad(ctx).reshape((-1,)) for p in trunk], dim=0))
                for i, p in enumerate(others):
                    grad = p.grad(ctx)
                    other_sums[d][i] = grad.copy() if other_sums[d][i] is None else other_sums[d][i] + grad
        measure = bool(self.cfg.stats_every) and batch_index % self.cfg.stats_every == 0
        if measure:
            self._add_stats(vectors[0], batch_size, batch_index)
        order = list(self._rng.permutation(num_tasks))
        for d, ctx in enumerate(ctxs):
            combined = pcgrad(vectors[d], order) if self.cfg.method == "pcgrad" else mx.nd.add_n(*vectors[d])
            _write_flat(combined, trunk, ctx)
            for p, total in zip(others, other_sums[d]):
                p.grad(ctx)[:] = total

    def _add_stats(self, vectors, batch_size, batch_index):
        cos, norms = cosines_and_norms(vectors)
        norms = norms / float(batch_size)
        self._cos_sum = cos if self._cos_sum is None else self._cos_sum + cos
        self._norm_sum = norms if self._norm_sum is None else self._norm_sum + norms
        self.measured += 1
        _logger.info("Batch [%d] task gradients on the trunk: %s", batch_index,
                     format_stats(_pairs(self.task_names, cos.asnumpy()), _named(self.task_names, norms.asnumpy())))

    def record(self):
        """The epoch's means for history.json: ``grad_cosine`` {"a|b": mean}, ``grad_norm`` {task: mean}."""
        if not self.measured:
            return {}
        cos = self._cos_sum.asnumpy() / self.measured
        norms = self._norm_sum.asnumpy() / self.measured
        return {"grad_cosine": _pairs(self.task_names, cos), "grad_norm": _named(self.task_names, norms),
                "grad_batches": self.measured}


def _write_flat(vector, params, ctx):
    """Copy consecutive pieces of the 1-D ``vector`` into the params' gradients on ``ctx``."""
    start = 0
    for p in params:
        grad = p.grad(ctx)
        grad[:] = vector[start:start + grad.size].reshape(grad.shape)
        start += grad.size


def _pairs(names, matrix):
    return {"%s|%s" % (names[i], names[j]): float(matrix[i, j])
            for i in range(len(names)) for j in range(i + 1, len(names))}


def _named(names, values):
    return {n: float(v) for n, v in zip(names, values)}


def format_stats(cosines, norms):
    """'cos a|b -0.12 | norm a 0.53 b 0.21' for a log line."""
    return "cos %s | norm %s" % (" ".join("%s %.3f" % kv for kv in cosines.items()),
                                 " ".join("%s %.3g" % kv for kv in norms.items()))


def make_task_gradients(optim, net, loss_fn, task_names):
    """The TaskGradients of a run (``optim``: its OptimSettings), or None when neither flag asks for them."""
    cfg = GradientConfig.from_args(optim)
    if not cfg.active:
        return None
    trunk = net.trunk_params()
    trunk_ids = {id(p) for p in trunk}
    others = [p for p in net.collect_params().values() if id(p) not in trunk_ids] + list(loss_fn.params())
    if len(task_names) < 2:
        _logger.warning("--grad-stats-every/--grad-method: one task only, nothing to compare; ignored")
    return TaskGradients(cfg, task_names, trunk, others, optim.seed)


def add_arguments(parser):
    """Task-gradient flags."""
    group = parser.add_argument_group("task gradients")
    group.add_argument("--grad-stats-every", type=non_negative_int, default=0, metavar="N",
                       help="every N batches, measure each task's trunk gradient separately: pairwise cosine "
                       "similarities and norms, logged, in history.json and curves.png (0: off)")
    group.add_argument("--grad-method", choices=METHODS, default="sum",
                       help="how task gradients combine on the trunk: sum (usual) or pcgrad (Yu et al. 2020: "
                       "conflicting components projected out; one backward pass per task)")

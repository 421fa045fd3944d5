"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates"; fastai's lr_find).

Train for a few hundred batches while the lr grows exponentially from ``start_lr`` to
``end_lr``; record the loss of every batch, smooth it with a bias-corrected exponential
moving average, stop once it exceeds ``diverge`` times the best smoothed loss. The
suggested lr is where the smoothed loss falls fastest against log(lr), looked for only
before the minimum (past it the loss is already blowing up). The network's weights
and BatchNorm statistics are restored afterwards, so the test leaves no trace.
"""
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import List

import numpy as np
from mxnet import gluon

from .loop import LoopConfig, train_step, uses_momentum
from .checkpoints import atomic_write_bytes
from ..errors import UserInputError
from .metrics import TaskMetrics, total_loss

_logger = logging.getLogger(__name__)

PLOT_FILE = "lr_finder.png"


@dataclass(frozen=True)
class FinderConfig:
    """The range test's settings (the --find-lr-* flags)."""

    start_lr: float = 1e-6
    end_lr: float = 10.0
    steps: int = 100
    diverge: float = 4.0

    @property
    def smoothing(self):
        """EMA factor of the loss: a memory of 1/20 of the test (5 batches of 100).

        fastai's fixed 0.98 remembers ~50 batches; over a 100-batch test that lags the
        curve by half its lr range and moves the steepest point several-fold too high.
        """
        return 1.0 - 1.0 / max(2.0, self.steps / 20.0)

    @classmethod
    def from_args(cls, optim):
        """The config from parsed flags, checked (UserInputError naming the flag)."""
        cfg = cls(start_lr=optim.find_lr_start, end_lr=optim.find_lr_end, steps=optim.find_lr_steps)
        if not 0 < cfg.start_lr < cfg.end_lr:
            raise UserInputError("--find-lr-start %g --find-lr-end %g: give 0 < start < end, such as 1e-6 and 10."
                                 % (cfg.start_lr, cfg.end_lr))
        if cfg.steps < 10:
            raise UserInputError("--find-lr-steps %d: the test needs at least 10 batches (100-300 is usual)."
                                 % cfg.steps)
        return cfg

    def lr_at(self, step):
        """The lr of batch ``step`` (0-based): exponential from start_lr to end_lr over ``steps`` batches."""
        return self.start_lr * (self.end_lr / self.start_lr) ** (step / float(self.steps - 1))


@dataclass
class FinderResult:
    """The curve (one entry per batch run) and the suggestion."""

    lrs: List[float] = field(default_factory=list)
    losses: List[float] = field(default_factory=list)
    smoothed: List[float] = field(default_factory=list)
    suggestion: float = float("nan")
    suggestion_index: int = -1
    minimum_index: int = -1
    rule: str = ""
    stopped_early: bool = False

    def to_dict(self):
        """JSON-friendly form (non-finite losses become None)."""
        d = asdict(self)
        for key in ("losses", "smoothed"):
            d[key] = [v if math.isfinite(v) else None for v in d[key]]
        return d


def find_lr(net, loader, ctxs, loss_fn, tasks, cfg: FinderConfig = FinderConfig(), optimizer="sgd",
            optimizer_params=None, loop: LoopConfig = None):
    """Run the range test on ``net`` with batches of ``loader`` (cycled) and return a FinderResult.

    ``optimizer``/``optimizer_params`` are those of the training to come (lr excluded):
    momentum changes which lr is best. The net's parameters (weights and BatchNorm
    statistics) are restored before returning.
    """
    params = list(net.collect_params().values())
    snapshot = [(p, p.data(ctxs[0]).copy()) for p in params]
    trainer = gluon.Trainer(params, optimizer, dict(optimizer_params or {}, learning_rate=cfg.start_lr),
                            kvstore="device" if len(ctxs) > 1 else None)
    loop = loop or LoopConfig(progress_bar=False)
    metrics = TaskMetrics.for_tasks(tasks, ctxs, agreement=False)
    rng = np.random.RandomState(loop.seed)
    result = FinderResult()
    try:
        _run_batches(net, trainer, loader, ctxs, loss_fn, metrics, cfg, loop, rng, result)
    finally:
        for p, value in snapshot:
            p.set_data(value)
    _suggest(result)
    _logger.info("lr finder: %d batches from lr %.3g to %.3g%s; suggested lr %.4g (%s)", len(result.lrs),
                 result.lrs[0], result.lrs[-1], ", stopped when the loss diverged" if result.stopped_early else "",
                 result.suggestion, result.rule)
    return result


def _batches(loader, steps):
    """``steps`` batches, going round the loader as often as needed."""
    done = 0
    while done < steps:
        for batch in loader:
            yield batch
            done += 1
            if done == steps:
                return


def _run_batches(net, trainer, loader, ctxs, loss_fn, metrics, cfg, loop, rng, result):
    best, average = float("inf"), 0.0
    for step, batch in enumerate(_batches(loader, cfg.steps)):
        lr = cfg.lr_at(step)
        trainer.set_learning_rate(lr)
        metrics.reset()
        train_step(net, trainer, batch, ctxs, loss_fn, metrics, loop, rng)
        loss = total_loss(metrics.values())  # one sync per batch: the test must see each loss to stop in time
        average = cfg.smoothing * average + (1 - cfg.smoothing) * loss
        smoothed = average / (1 - cfg.smoothing ** (step + 1))  # bias correction: the EMA starts at 0
        result.lrs.append(lr)
        result.losses.append(loss)
        result.smoothed.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > cfg.diverge * best:
            result.stopped_early = True
            return
        best = min(best, smoothed)


def _suggest(result: FinderResult):
    """Fill in the suggestion: steepest descent of the smoothed loss before its minimum."""
    smoothed = np.array([v if math.isfinite(v) else np.inf for v in result.smoothed])
    if len(smoothed) < 3 or not np.isfinite(smoothed).any():
        raise UserInputError("the lr finder ran only %d batch(es) before the loss diverged: lower "
                             "--find-lr-start, or check the data." % len(smoothed))
    lowest = int(np.argmin(smoothed))
    result.minimum_index = lowest
    skip = max(1, len(smoothed) // 10)  # the first batches move the EMA more than the lr does
    if lowest - skip < 2:
        result.suggestion_index = lowest
        result.suggestion = result.lrs[lowest] / 10.0
        result.rule = "the loss never fell: lr at the lowest loss / 10"
        return
    slope = np.gradient(smoothed[:lowest + 1], np.log10(result.lrs[:lowest + 1]))
    index = skip + int(np.argmin(slope[skip:lowest]))  # before the minimum: the loss still falls there
    result.suggestion_index = index
    result.suggestion = result.lrs[index]
    result.rule = "steepest descent of the smoothed loss (minimum at lr %.3g)" % result.lrs[lowest]


def write_result(result: FinderResult, png_path):
    """Write the curve as PNG (loss against log lr, suggestion marked) and as JSON beside it; returns both paths."""
    from .plots import plot_lr_finder

    json_path = png_path[:-4] + ".json" if png_path.lower().endswith(".png") else png_path + ".json"
    atomic_write_bytes(json_path, json.dumps(result.to_dict(), indent=1).encode("utf-8"))
    plot_lr_finder(result.lrs, result.losses, result.smoothed, result.suggestion, png_path)
    return png_path, json_path


def optimizer_settings(optim):
    """{optimizer, optimizer_params} for the test from the training flags (lr left to the test)."""
    params = {"wd": optim.wd}
    if uses_momentum(optim.optimizer):
        params["momentum"] = optim.mom
    return {"optimizer": optim.optimizer, "optimizer_params": params}


def add_arguments(parser):
    """The lr finder's flags (find-lr, and train --lr auto)."""
    group = parser.add_argument_group("lr finder (find-lr, --lr auto)")
    group.add_argument("--find-lr-start", type=float, default=FinderConfig.start_lr, help="first lr of the test")
    group.add_argument("--find-lr-end", type=float, default=FinderConfig.end_lr,
                       help="last lr (the test stops earlier once the loss exceeds 4x its best)")
    group.add_argument("--find-lr-steps", type=int, default=FinderConfig.steps,
                       help="batches over which the lr grows from start to end")

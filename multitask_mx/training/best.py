"""Which epoch is best by ``--best-metric``: the checkpoint kept as ``{save-name}-best.params``."""
import logging
import math

from ..errors import UserInputError

_logger = logging.getLogger(__name__)


class BestTracker:
    """Which epoch is best by ``val-loss``, ``val-acc:<task>``, ``val-acc-mean`` (or train-loss)."""

    def __init__(self, metric, task_names, has_val=True):
        if metric.startswith("val") and not has_val:
            _logger.info("--best-metric %s needs --data-val; using train-loss instead", metric)
            metric = "train-loss"
        valid = (["val-loss", "val-acc-mean", "train-loss"] + ["val-acc:%s" % t for t in task_names]
                 + ["val-topk:%s" % t for t in task_names])
        if metric not in valid:
            raise UserInputError("--best-metric %r: choose one of %s." % (metric, ", ".join(valid)))
        self.metric = metric
        self.higher_is_better = "acc" in metric or "topk" in metric
        self.value, self.epoch, self.weights = None, None, "raw"

    @staticmethod
    def check_form(metric):
        """Refuse a --best-metric of no known form before any work (task names are checked with the tasks)."""
        kind, _, task = metric.partition(":")
        if not (metric in ("val-loss", "val-acc-mean", "train-loss") or (kind in ("val-acc", "val-topk") and task)):
            raise UserInputError("--best-metric %r: choose val-loss, val-acc-mean, train-loss, val-acc:<task> or "
                                 "val-topk:<task>." % metric)

    def value_of(self, record):
        """The metric's value in an epoch record."""
        if self.metric == "val-loss":
            return record["val_loss"]
        if self.metric == "train-loss":
            return record["train_loss"]
        if self.metric == "val-acc-mean":
            accs = [v["acc"] for v in record["val"].values() if v["count"] and "acc" in v]  # regress has none
            return sum(accs) / len(accs) if accs else None  # no task with a labelled validation image
        kind, task = self.metric.split(":", 1)
        return record["val"][task].get("topk" if kind == "val-topk" else "acc")

    def update(self, record):
        """Take an epoch's record; True if it is a new best.

        With ``--ema`` the record's ``ema`` entry competes too: ``weights`` says
        which of the two ("raw" or "ema") is the best; the EMA wins only when better.
        """
        better = False
        for weights, values in self._candidates(record):
            value = self.value_of(values)
            if value is None or math.isnan(value):
                continue
            if self.value is None or (value > self.value if self.higher_is_better else value < self.value):
                self.value, self.epoch, self.weights = value, record["epoch"], weights
                better = True
        return better

    def _candidates(self, record):
        yield "raw", record
        if "val" in record.get("ema", {}) and self.metric.startswith("val"):
            yield "ema", record["ema"]

    def to_dict(self):
        """For best.json."""
        return {"metric": self.metric, "value": self.value, "epoch": self.epoch, "weights": self.weights}

    def restore(self, saved):
        """Continue from a best.json written by an earlier run."""
        if saved and saved.get("metric") == self.metric:
            self.value, self.epoch = saved["value"], saved["epoch"]
            self.weights = saved.get("weights", "raw")

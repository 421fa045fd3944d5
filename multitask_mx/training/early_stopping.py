"""Early stopping (``--early-stop N``): end the run after N epochs without a new best ``--best-metric``.

"Improvement" is whatever the run's ``BestTracker`` (best.py) counts as a new
best, so the stop and ``{save-name}-best.params`` always agree: the run stops N epochs
after the epoch whose weights best.params holds. The count is derived from the best
epoch, which ``--resume`` restores from best.json, so a resumed run keeps counting
where it left off (and a run that had already stopped does not train again unless
N is raised).
"""
import logging

from ..errors import UserInputError

_logger = logging.getLogger(__name__)


class EarlyStopping:
    """Decides after each epoch whether ``patience`` epochs have passed without a new best."""

    def __init__(self, patience, best, start_epoch=0):
        self.patience = int(patience or 0)
        self.best = best
        self.start_epoch = start_epoch  # counts from here while no epoch has been best yet

    def epochs_without_improvement(self, epoch):
        """Epochs finished since the best one (or since the start, before any best)."""
        since = self.best.epoch if self.best.epoch is not None else self.start_epoch
        return epoch - since

    def should_stop(self, epoch):
        """True once ``patience`` epochs up to ``epoch`` brought no new best."""
        return bool(self.patience) and self.epochs_without_improvement(epoch) >= self.patience

    def stopped_before(self, begin_epoch):
        """True (and says why) when a resumed run had already waited ``patience`` epochs by ``begin_epoch``."""
        if not (begin_epoch and self.should_stop(begin_epoch)):
            return False
        _logger.info("nothing to train: %s has not improved for %d epoch(s) by epoch %d (--early-stop %d); raise "
                     "--early-stop to train on", self.best.metric, self.epochs_without_improvement(begin_epoch),
                     begin_epoch, self.patience)
        return True

    def stop_record(self, epoch):
        """What the history records about the stop (``stopped_early``), and the log line saying why."""
        info = {"epoch": epoch, "best_epoch": self.best.epoch, "patience": self.patience,
                "metric": self.best.metric, "best_value": self.best.value, "best_weights": self.best.weights}
        _logger.info("early stop after epoch %d: %s has not improved for %d epoch(s) (--early-stop %d); the best "
                     "is epoch %s (%s weights, %s = %s), kept as the best checkpoint", epoch, self.best.metric,
                     self.epochs_without_improvement(epoch), self.patience, self.best.epoch, self.best.weights,
                     self.best.metric, "%.5g" % self.best.value if self.best.value is not None else "none")
        return info


def check_early_stop(patience, best_metric, data_val, kv_store):
    """Refuse ``--early-stop`` that cannot work (with these --best-metric, --data-val, --kv-store), before any work."""
    if patience < 0:
        raise UserInputError("--early-stop %d: give the number of epochs without improvement to wait (1 or "
                             "more), or 0 to train all --num-epoch epochs." % patience)
    if patience and best_metric.startswith("val") and not data_val:
        raise UserInputError("--early-stop %d watches --best-metric %s, which needs --data-val. Give a validation "
                             "list, or pass --best-metric train-loss to stop when the training loss stops falling "
                             "(which does not guard against overfitting)." % (patience, best_metric))
    if patience and kv_store.startswith("dist"):
        # only rank 0 validates, so the other workers could not know when to stop with it
        raise UserInputError("--early-stop is not available with --kv-store %s yet: only worker 0 validates. "
                             "Train a fixed --num-epoch and keep the best checkpoint (--best-metric)."
                             % kv_store)


def add_arguments(parser):
    """``--early-stop``."""
    group = parser.add_argument_group("early stopping")
    group.add_argument("--early-stop", type=int, default=0, metavar="N",
                       help="stop after N epochs in which --best-metric did not improve (0: off); the best "
                            "checkpoint is kept")

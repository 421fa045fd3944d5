"""Learning-rate schedules by name, counted in updates (batches)."""
import logging

from . import _runtime  # noqa: F401  (numpy shim before mxnet)
import mxnet as mx

from .errors import UserInputError

_logger = logging.getLogger(__name__)


def parse_epochs(text):
    """'5,10' -> [5, 10]."""
    try:
        return [int(v) for v in text.split(",") if v.strip()] if text else []
    except ValueError:
        raise UserInputError("--lr-step-epochs %r: expected epochs such as 5,10." % text)


def step_scheduler(base_lr, epoch_size, begin_epoch, step_epochs, factor):
    """The original's multi-factor schedule: lr *= factor at each of ``step_epochs``.

    Steps already passed when resuming at ``begin_epoch`` are applied to the base lr
    (the original dropped them, restarting at the full lr).
    """
    lr = base_lr * factor ** sum(1 for e in step_epochs if e <= begin_epoch)
    steps = [epoch_size * (e - begin_epoch) for e in step_epochs if e > begin_epoch]
    if not steps:
        return lr, None
    return lr, mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=factor, base_lr=lr)


SCHEDULERS = {"step": step_scheduler}


def make_scheduler(name, base_lr, epoch_size, begin_epoch, step_epochs, factor):
    """(starting lr, mx.lr_scheduler or None) for the named schedule."""
    if name not in SCHEDULERS:
        raise UserInputError("--lr-scheduler %r: choose one of %s." % (name, ", ".join(sorted(SCHEDULERS))))
    return SCHEDULERS[name](base_lr, epoch_size, begin_epoch, step_epochs, factor)

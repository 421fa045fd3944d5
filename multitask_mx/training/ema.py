"""Exponential moving average of the weights (``--ema DECAY``), as in timm's ``ModelEmaV2``.

After every ``trainer.step`` each parameter's shadow copy moves towards the trained
value: ``shadow = d * shadow + (1 - d) * weight``. Every parameter is averaged,
BatchNorm running statistics included, so the averaged network is complete. The
shadows live in float32 on one device (the first training device), and the update
is one NDArray operation per parameter queued on the engine: nothing waits for the device.

The decay warms up as ``min(DECAY, (1 + n) / (10 + n))`` after ``n`` updates (TF's
``ExponentialMovingAverage(num_updates=...)``, timm's ``ModelEmaV3`` warm-up), so in a
short run the average is not dominated by the random initial weights.
"""
import argparse
import contextlib
import logging

import mxnet as mx

_logger = logging.getLogger(__name__)


class WeightEMA:
    """Float32 shadow copies of a network's parameters on one device, averaged after each step."""

    def __init__(self, net, decay, num_updates=0):
        self.decay = float(decay)
        self.num_updates = int(num_updates)
        self._params = list(net.collect_params().items())  # name -> Parameter, in the network's order
        self.ctx = self._params[0][1].list_ctx()[0]
        self.shadow = {name: p.data(self.ctx).astype("float32", copy=True) for name, p in self._params}

    def current_decay(self):
        """The decay the next update uses: DECAY, lowered during the warm-up."""
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    def update(self):
        """Move every shadow towards its parameter's current value (call after trainer.step)."""
        d = self.current_decay()
        for name, param in self._params:
            shadow = self.shadow[name]
            # sgd_update computes w = (1 - lr*wd) * w - lr * g in one fused kernel; with lr = -(1 - d),
            # wd = -1 and g = the weight it is d * shadow + (1 - d) * weight. Measured on resnet18_v1
            # (CPU): half the time of `shadow *= d; shadow += (1 - d) * weight`, which takes 3 kernels.
            mx.nd.sgd_update(shadow, param.data(self.ctx).astype("float32", copy=False), lr=-(1.0 - d), wd=-1.0,
                             out=shadow)
        self.num_updates += 1

    def load(self, arrays, num_updates, source="the EMA weights"):
        """Continue from saved shadows ({parameter name: NDArray}, e.g. an EMA .params file)."""
        missing = [name for name, _ in self._params if name not in arrays]
        if missing:
            from ..errors import UserInputError
            raise UserInputError("%s lack %s, so they are not this network's moving average. Delete the file to "
                                 "start the average afresh." % (source, ", ".join(missing[:5])))
        for name, _ in self._params:
            self.shadow[name] = arrays[name].as_in_context(self.ctx).astype("float32")
        self.num_updates = int(num_updates)

    @contextlib.contextmanager
    def applied(self, net):
        """Inside the block the network holds the averaged weights (on every device); after it, its own."""
        backup = [(param, [a.copy() for a in param.list_data()]) for _, param in self._params]
        try:
            for name, param in self._params:
                param.set_data(self.shadow[name].astype(param.dtype, copy=False))
            yield net
        finally:
            for param, arrays in backup:
                for target, saved in zip(param.list_data(), arrays):
                    saved.copyto(target)

    def record(self):
        """The EMA's state for the history: updates done and the decay in use."""
        return {"updates": self.num_updates, "decay": round(self.current_decay(), 6)}


def start(decay, net, saver, start_point):
    """The EMA for ``--ema decay`` (None without), continued from the resume point's EMA file if there is one.

    ``saver`` is the run's CheckpointSaver; ``start_point`` is (epoch, batches done).
    """
    if decay is None:
        return None
    ema = WeightEMA(net, decay)
    resumed = bool(start_point[0] or start_point[1])
    saved = saver.read_ema(*start_point) if resumed else None
    if saved is not None:
        ema.load(saved[0], saved[1], saved[2])
    elif resumed:
        _logger.info("--ema: the resumed run has no EMA weights; the average starts from the current weights")
    _logger.info("EMA of the weights with decay %g (warm-up min(decay, (1+n)/(10+n))) on %s%s", ema.decay, ema.ctx,
                 ", continued from %s after %d updates" % (saved[2], saved[1]) if saved else "")
    return ema


def validate(ema, net, epoch, evaluate):
    """``evaluate()`` run with the averaged weights, logged; returns the record's ``ema`` entry ({} without --ema).

    ``evaluate`` returns per-task metric values (or None without validation data).
    """
    if ema is None:
        return {}
    from .metrics import summarise, total_loss
    entry = ema.record()
    with ema.applied(net):
        values = evaluate()
    if values is not None:
        entry["val"] = values
        entry["val_loss"] = total_loss(values)
        _logger.info("Epoch[%d] Validation (EMA weights): %s", epoch, summarise(values))
    return {"ema": entry}


def after_step(ema, on_batch=None):
    """The per-batch callback of the training loop: update the EMA, then call ``on_batch``."""
    if ema is None:
        return on_batch

    def hook(epoch, done):
        ema.update()
        if on_batch is not None:
            on_batch(epoch, done)
    return hook


def decay_value(text):
    """argparse type of ``--ema``: a decay strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError("--ema %r: give a decay between 0 and 1, e.g. 0.999 (the weight the "
                                         "average keeps at each step)." % text)
    return value


def add_arguments(parser):
    """``--ema``."""
    group = parser.add_argument_group("weight averaging")
    group.add_argument("--ema", type=decay_value, default=None, metavar="DECAY",
                       help="also keep an exponential moving average of the weights (e.g. 0.999), validate "
                            "and save it each epoch ({save-name}-NNNN-ema.params); best may be the EMA")


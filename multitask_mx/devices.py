"""Devices: which contexts to use, and splitting a batch across them.

``gluon.utils.split_and_load`` fails when a batch has fewer samples than there are
devices (apache/mxnet#13909). ``split_batch`` pads such a batch by repeating its
last sample and masks the padding out of the loss and the metrics.
"""
import logging

import mxnet as mx
from mxnet import gluon

from .errors import UserInputError
from .flagtypes import positive_int

_logger = logging.getLogger(__name__)


def parse_contexts(gpus, cpus=1):
    """Contexts from ``--gpus`` ('' or 'cpu' for CPU, '0,1', 'auto') and ``--cpus N``."""
    gpus = (gpus or "").strip()
    available = mx.context.num_gpus()
    if gpus == "auto":
        gpus = ",".join(str(i) for i in range(available))
    if gpus in ("", "cpu", "-1"):
        return [mx.cpu(i) for i in range(max(1, cpus))]
    try:
        ids = [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise UserInputError("--gpus %r: give GPU ids such as 0 or 0,1,2,3, or '' for CPU." % gpus)
    if available == 0:
        raise UserInputError("--gpus %s: this MXNet sees no GPU (the CPU build, or no CUDA device). Use "
                             "--gpus '' to train on CPU, or install an mxnet-cuXXX build (see README)." % gpus)
    bad = [i for i in ids if i >= available]
    if bad:
        raise UserInputError("--gpus %s: GPU(s) %s do not exist; this machine has %d (0..%d)."
                             % (gpus, bad, available, available - 1))
    return [mx.gpu(i) for i in ids]


def split_batch(batch, ctxs):
    """Split each array of ``batch`` across ``ctxs``; returns (slices per ctx, validity masks per ctx).

    The mask is 1 for real samples and 0 for padding added when the batch is
    smaller than the number of devices.
    """
    size = batch[0].shape[0]
    valid = mx.nd.ones((size,), dtype="float32")
    if size < len(ctxs):
        pad = len(ctxs) - size
        index = mx.nd.array(list(range(size)) + [size - 1] * pad, dtype="int64")
        batch = [mx.nd.take(a, index) for a in batch]
        valid = mx.nd.concat(valid, mx.nd.zeros((pad,)), dim=0)
    parts = [gluon.utils.split_and_load(a, ctxs, even_split=False) for a in list(batch) + [valid]]
    return list(zip(*parts[:-1])), parts[-1]


def add_arguments(parser):
    """Device flags."""
    group = parser.add_argument_group("devices")
    group.add_argument("--gpus", default="",
                       help="GPU ids, e.g. 0 or 0,1,2,3; '' (default) for CPU; 'auto' for all GPUs")
    group.add_argument("--cpus", type=positive_int, default=1,
                       help="CPU contexts when on CPU (2 -> mx.cpu(0), mx.cpu(1)): the multi-device path "
                            "without GPUs")
    group.add_argument("--kv-store", default="device", help="kvstore for gradient reduction: device, local; dist_sync, dist_device_sync, "
                            "dist_async across machines (start them with `multitask-mx launch`)")

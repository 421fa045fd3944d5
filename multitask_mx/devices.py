"""Devices: which contexts to use, whether this MXNet can drive the GPUs, and splitting a batch across them.

The pip GPU wheels of MXNet 1.9.1 carry compiled kernels for a fixed list of GPU
architectures and no PTX (``config/distribution/linux_cu11x.cmake``:
``MXNET_CUDA_ARCH "5.0;6.0;7.0;8.0;8.6"``, checked in the wheel's fat binary,
docs/gpu.md): an H100/H200 (sm_90) fails at its first operation with "no kernel
image is available" (apache/mxnet#20469). ``check_gpus`` asks the driver for each
GPU's compute capability (``GPU_QUERY``, replaceable in tests) and stops before
any work with what to do.

``gluon.utils.split_and_load`` fails when a batch has fewer samples than there are
devices (apache/mxnet#13909). ``split_batch`` pads such a batch by repeating its
last sample and masks the padding out of the loss and the metrics.
"""
import io
import logging
import os
import pickle
import struct

import mxnet as mx
from mxnet import gluon

from . import cuda_libs
from .errors import UserInputError
from .mxerrors import device_error_message, is_device_error
from .flagtypes import positive_int

_logger = logging.getLogger(__name__)

# Compute capabilities (as 86 for sm_86) of the kernels in the pip wheels of MXNet 1.9.1, no PTX.
_CU11 = (50, 60, 70, 80, 86)
WHEEL_ARCHS = dict({"mxnet-cu100": (30, 50, 60, 70, 75), "mxnet-cu101": (30, 50, 60, 70, 75),
                    "mxnet-cu102": (30, 50, 60, 70, 75), "mxnet-cu110": (50, 60, 70, 80)},
                   **{"mxnet-cu11%d" % minor: _CU11 for minor in range(1, 8)})
# The device query: () -> cuda_libs.CudaDevices. Tests replace it with a stub of the driver's answer.
GPU_QUERY = cuda_libs.query_gpus


def parse_contexts(gpus, cpus=1, query=None):
    """Contexts from ``--gpus`` ('' or 'cpu' for CPU, '0,1', 'auto') and ``--cpus N``.

    GPUs are checked first (``check_gpus``: kernels for their architecture, driver) and
    then touched once each, so that a device problem stops here with its own message.
    """
    gpus = (gpus or "").strip()
    if gpus == "auto":
        gpus = ",".join(str(i) for i in range(mx.context.num_gpus()))
    if gpus in ("", "cpu", "-1"):
        return [mx.cpu(i) for i in range(max(1, cpus))]
    try:
        ids = [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise UserInputError("--gpus %r: give GPU ids such as 0 or 0,1,2,3, or '' for CPU." % gpus)
    found = check_gpus(ids, query)
    available = mx.context.num_gpus()
    if available == 0:
        raise UserInputError("--gpus %s: %s" % (gpus, _why_no_gpu(found)))
    bad = [i for i in ids if i >= available]
    if bad:
        raise UserInputError("--gpus %s: GPU(s) %s do not exist; this machine has %d (0..%d)."
                             % (gpus, bad, available, available - 1))
    ctxs = [mx.gpu(i) for i in ids]
    for ctx in ctxs:
        touch_device(ctx)
    return ctxs


def onednn_cpus(ctxs):
    """True when every context is a CPU and this MXNet build has oneDNN (MKL-DNN) kernels."""
    return all(c.device_type == "cpu" for c in ctxs) and mx.runtime.Features().is_enabled("MKLDNN")


def _why_no_gpu(found):
    if not found.gpus:
        return ("this MXNet sees no GPU (the CPU build, or no CUDA device: %s). Use --gpus '' to train on CPU, "
                "or install an mxnet-cuXXX build (docs/gpu.md)." % (found.error or "the driver lists none"))
    if not mx.runtime.Features().is_enabled("CUDA"):
        return ("the driver sees %d GPU(s) but this MXNet is the CPU build. pip uninstall mxnet, then "
                "pip install -c constraints.txt -e \".[cu112]\" (docs/gpu.md); or --gpus '' for CPU."
                % len(found.gpus))
    return ("the NVIDIA driver (CUDA %s) sees %d GPU(s) but MXNet's CUDA runtime cannot use them: the driver "
            "is too old for it (mxnet-cu11x needs driver >= 450.80.02, CUDA 11.0). Update the NVIDIA driver; "
            "`multitask-mx doctor` shows the versions." % (found.driver_cuda_text, len(found.gpus)))


def kernel_archs(dist=None):
    """Compute capabilities the installed MXNet has kernels for, or None when unknown (a source build)."""
    dist = dist if dist is not None else cuda_libs.mxnet_distribution()
    return WHEEL_ARCHS.get(dist[0]) if dist else None


def runs_on(sm, archs):
    """Whether kernels for ``archs`` run on a GPU of capability ``sm``: same major, minor not above it."""
    return any(a // 10 == sm // 10 and a <= sm for a in archs)


def gpu_support(gpu, archs):
    """'yes', 'yes (runs sm_86 code)', 'NO (...)' or 'unknown (...)' for one GpuInfo."""
    if archs is None:
        return "unknown (not a pip wheel: the first GPU operation tells)"
    if gpu.sm in archs:
        return "yes"
    if runs_on(gpu.sm, archs):
        return "yes (runs sm_%d code)" % max(a for a in archs if a // 10 == gpu.sm // 10 and a <= gpu.sm)
    return "NO (this MXNet has kernels for %s only, no PTX)" % ", ".join("sm_%d" % a for a in archs)


def check_gpus(ids, query=None, dist=None):
    """Stop with what to do if a GPU in ``ids`` has no kernels in this MXNet or the driver is too old.

    ``query`` (default GPU_QUERY) answers like cuda_libs.query_gpus; returns its answer.
    Also switches runtime fusion off where NVRTC cannot compile for these GPUs.
    """
    found = (query or GPU_QUERY)()
    dist = dist if dist is not None else cuda_libs.mxnet_distribution()
    archs = kernel_archs(dist)
    chosen = [g for g in found.gpus if g.index in ids]
    for gpu in chosen:
        if archs is not None and not runs_on(gpu.sm, archs):
            raise UserInputError(
                "GPU %d is a %s (compute capability %d.%d, sm_%d); the installed %s %s has compiled kernels for "
                "%s only and no PTX, so every GPU operation would fail with \"no kernel image is available\" "
                "(apache/mxnet#20469). Build MXNet 1.9.1 from source with CUDA >= 11.8 and MXNET_CUDA_ARCH "
                "including %d.%d (exact commands in docs/gpu.md), or use an older GPU (V100, A100, A10, RTX 30xx/40xx)."
                % (gpu.index, gpu.name, gpu.capability[0], gpu.capability[1], gpu.sm, dist[0], dist[1],
                   ", ".join("sm_%d" % a for a in archs), gpu.capability[0], gpu.capability[1]))
    needed = _wheel_cuda(dist)
    if chosen and needed and found.driver_cuda and found.driver_cuda < needed:
        raise UserInputError("the NVIDIA driver supports CUDA %s only; %s needs a driver for CUDA %d.%d or newer "
                             "(CUDA 11: driver >= 450.80.02). Update the NVIDIA driver; the MXNet build is fine."
                             % (found.driver_cuda_text, dist[0], needed // 1000, (needed % 1000) // 10))
    configure_fusion(chosen, found)
    return found


def _wheel_cuda(dist):
    # mxnet-cu112 runs on any CUDA 11 driver (minor version compatibility); cu10x need their own version
    if not dist or not dist[0].startswith("mxnet-cu"):
        return None
    digits = dist[0][len("mxnet-cu"):]
    major = int(digits[:2])
    return 11000 if major == 11 else major * 1000 + int(digits[2:] or 0) * 10


def configure_fusion(gpus, found, archs=None):
    """Set MXNET_USE_FUSION=0 (logged) where NVRTC cannot compile fused kernels for ``gpus``; returns the reason.

    MXNet compiles fused elementwise kernels at run time with NVRTC for the device's
    compute_XY; CUDA 11.2's NVRTC does not know compute_89/90, and PTX from a newer NVRTC
    needs a driver at least as new. A value the user set is left alone.
    """
    if not gpus or "MXNET_USE_FUSION" in os.environ:
        return None
    archs = archs if archs is not None else cuda_libs.nvrtc_archs()
    version = cuda_libs.nvrtc_version()
    reason = None
    unknown = [g for g in gpus if archs is not None and g.sm not in archs]
    if unknown:
        reason = "the NVRTC here compiles for %s, not for %s's sm_%d" % (
            ",".join(map(str, archs)), unknown[0].name, unknown[0].sm)
    elif version and found.driver_cuda and found.driver_cuda < version[0] * 1000 + version[1] * 10:
        reason = "NVRTC %d.%d writes PTX that the driver (CUDA %s) cannot load" % (
            version[0], version[1], found.driver_cuda_text)
    if reason:
        os.environ["MXNET_USE_FUSION"] = "0"
        _logger.warning("runtime fusion switched off (MXNET_USE_FUSION=0): %s", reason)
    return reason


def touch_device(ctx):
    """Run one small operation on ``ctx``; a device problem becomes a UserInputError saying what to do."""
    try:
        (mx.nd.ones((1,), ctx=ctx) + 1).asnumpy()
    except mx.base.MXNetError as exc:
        if not is_device_error(exc):
            raise
        raise UserInputError(device_error_message(exc, "the first operation on %s" % ctx))


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


# NDArray::Save's header (src/ndarray/ndarray.cc, MXNet 1.9.1): magic, storage type, [storage shape if
# sparse], shape (int32 ndim + int64 dims), then the context (int32 device type, int32 device id).
_NDARRAY_MAGICS = (0xF993FAC9, 0xF993FACA)  # NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC
_CPU_DEVICE_TYPE = 1


def _raw_ndarray_on_cpu(raw: bytearray):
    """Rewrite a pickled NDArray's context to cpu(0), in place; other formats are left alone."""
    magic, stype = struct.unpack_from("<Ii", raw, 0)
    if magic not in _NDARRAY_MAGICS:
        return raw
    offset = 8
    for _ in range(2 if stype != 0 else 1):  # sparse arrays save their storage shape first
        ndim = struct.unpack_from("<i", raw, offset)[0]
        offset += 4 + 8 * max(ndim, 0)
    if len(raw) >= offset + 8:
        struct.pack_into("<ii", raw, offset, _CPU_DEVICE_TYPE, 0)
    return raw


class _LoadedOnCpu(mx.nd.NDArray):
    """An NDArray unpickled onto cpu(0) whatever device it was saved from (then a plain NDArray again)."""

    __slots__ = ()  # the layout of NDArray, so that the object can become one

    def __setstate__(self, state):
        if state.get("handle") is not None:
            state = dict(state, handle=_raw_ndarray_on_cpu(bytearray(state["handle"])))
        super().__setstate__(state)
        self.__class__ = mx.nd.NDArray


class _CpuUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if name == "NDArray" and module.startswith("mxnet.ndarray"):
            return _LoadedOnCpu
        return super().find_class(module, name)


def states_on_cpu(state_bytes: bytes) -> bytes:
    """A pickled optimizer state (``Updater.get_states``) with every array moved to the CPU.

    Unpickling an NDArray restores it on the device it was saved from: states of a run
    on ``--gpus 4,5,6,7`` fail with "invalid device ordinal" on a 4-GPU machine. On the
    CPU, MXNet's Updater copies each state to its weight's device at the first update
    (``set_states`` marks them unsynced), so they land on today's devices.
    """
    return pickle.dumps(_CpuUnpickler(io.BytesIO(state_bytes)).load())

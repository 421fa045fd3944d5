"""MXNet's error texts, made readable: the message without the embedded traceback, and device errors named.

MXNet 1.9.1 puts its C++ "traceback" in front of the message::

    Traceback (most recent call last):
      File "../src/operator/tensor/./dot-inl.h", line 1241
    MXNetError: Check failed: ... dot shape error: [2,3] X [4,5]

so the first line of ``str(exc)`` says nothing. ``clean_mxnet_error`` returns the
message itself; ``is_device_error`` and ``device_error_advice`` tell a GPU problem
(no kernel for this GPU, out of memory, a driver too old for the CUDA runtime, a
device that does not exist, NVRTC unable to compile fused kernels, a CPU build
asked for a GPU) from a problem with the user's input, so that such a failure is
never reported as "the network does not accept images of shape ...".

This module imports nothing from MXNet: it works on exceptions and texts.
"""
import logging
import re

_logger = logging.getLogger(__name__)

_FRAME = re.compile(r'^\s*(Traceback \(most recent call last\):|File ".*", line \d+|\[bt\] \(\d+\)|Stack trace:)')
_PREFIX = re.compile(r"^(mxnet\.base\.)?MXNetError:\s*")
_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: ")

# (kind, pattern found in the text, what to do). First match wins: "out of memory" inside a
# "no kernel image" text cannot happen, but a CPU build's text must not be read as a CUDA one.
DEVICE_ERRORS = [
    ("no kernel for this GPU", re.compile(r"no kernel image is available|CUDNN_STATUS_ARCH_MISMATCH", re.I),
     "the installed MXNet has no compiled kernels for this GPU's architecture (pip's mxnet-cu11x 1.9.1 "
     "wheels carry sm_50/60/70/80/86 only: H100/H200 and newer are not covered). Build MXNet 1.9.1 from "
     "source with CUDA >= 11.8 and MXNET_CUDA_ARCH including 9.0 (docs/gpu.md), or use an older GPU."),
    ("GPU out of memory", re.compile(r"out of memory|CUDNN_STATUS_ALLOC_FAILED|cudaMalloc retry failed", re.I),
     "the GPU ran out of memory. Lower --batch-size (it is the total over all GPUs), use --dtype float16, "
     "a smaller --image-shape, or more GPUs; check with nvidia-smi that no other process holds the memory."),
    ("NVIDIA driver too old", re.compile(r"driver version is insufficient|CUDA_ERROR_UNSUPPORTED_PTX_VERSION|"
                                         r"unsupported toolchain", re.I),
     "the NVIDIA driver is older than the CUDA runtime needs (CUDA 11 needs driver >= 450.80.02; "
     "runtime-compiled kernels from the pip NVRTC 11.8 need >= 520). Update the driver, or set "
     "MXNET_USE_FUSION=0 if only fused kernels fail."),
    ("no such GPU", re.compile(r"invalid device ordinal|no CUDA-capable device", re.I),
     "a GPU id in --gpus does not exist on this machine (nvidia-smi lists them; CUDA_VISIBLE_DEVICES "
     "renumbers them from 0)."),
    ("fused kernels failed to compile", re.compile(r"NVRTC Compilation failed|NVRTC", re.I),
     "MXNet's runtime compiler (NVRTC) cannot compile fused kernels for this GPU. Set MXNET_USE_FUSION=0 "
     "(multitask-mx does so itself when it knows NVRTC is too old for the GPU)."),
    ("a CPU build of MXNet", re.compile(r"GPU is not enabled|not implemented for GPU|GPU support is disabled|"
                                        r"Compile MXNet with USE_CUDA", re.I),
     "this MXNet is the CPU build. Install a GPU build (pip install -c constraints.txt -e \".[cu112]\" after "
     "pip uninstall mxnet; see README, GPUs), or drop --gpus to run on CPU."),
    ("a CUDA library failed", re.compile(r"CUDNN_STATUS_|CUBLAS_STATUS_|CUDA: |cudaError|NCCL", re.I),
     "a CUDA library call failed on the GPU. Run `multitask-mx doctor --gpus 0` to check the driver, the "
     "CUDA libraries and the GPU."),
]


def clean_mxnet_error(exc) -> str:
    """The meaningful part of an MXNet error (an exception or its text), one paragraph, no traceback.

    Drops MXNet 1.9.1's embedded ``Traceback``/``File "...", line N`` frames, the older
    ``Stack trace: [bt] (0) ...`` lines, the ``MXNetError:`` prefix and ``[hh:mm:ss] file:line:``
    stamps; keeps every remaining line (a shape error's "Error in operator ..." names the layer).
    """
    text = str(exc)
    kept = []
    for line in text.splitlines():
        if _FRAME.match(line):
            continue
        line = _TIMESTAMP.sub("", _PREFIX.sub("", line.strip()))
        if line:
            kept.append(line)
    cleaned = " ".join(kept).strip()
    # "Deferred initialization failed ... MXNetError: Error in operator ..." (ValueError from Gluon)
    cleaned = re.sub(r"\s*MXNetError:\s*", ": ", cleaned)
    return cleaned or text.strip() or type(exc).__name__


def device_error_kind(text):
    """(kind, advice) for an MXNet error text about the GPU or its software, else None."""
    for kind, pattern, advice in DEVICE_ERRORS:
        if pattern.search(str(text)):
            return kind, advice
    return None


def is_device_error(text) -> bool:
    """True when an MXNet error text (or exception) is about the GPU, its driver or its libraries."""
    return device_error_kind(text) is not None


def device_error_message(exc, what):
    """A user message for a device error met while doing ``what`` (e.g. "building the network on gpu(0)")."""
    kind, advice = device_error_kind(exc)
    return "%s failed: %s: %s\n  What to do: %s" % (what, kind, clean_mxnet_error(exc), advice)


def describe_mxnet_error(exc, what, otherwise):
    """The message for an MXNet error: device errors as such, others as ``otherwise % cleaned text``."""
    if is_device_error(exc):
        return device_error_message(exc, what)
    return otherwise % clean_mxnet_error(exc)

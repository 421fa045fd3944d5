"""The CUDA stack under MXNet, read without MXNet: libraries from pip, the driver and its GPUs.

A GPU build of MXNet 1.9.1 (``mxnet-cu112``) links against the CUDA 11 runtime,
cuBLAS, cuFFT, cuRAND, cuSOLVER, NVRTC, NVTX, cuDNN 8 and NCCL 2 and bundles none
of them (apache/mxnet#20279): on a machine with only a driver, ``import mxnet``
fails with an OSError. NVIDIA publishes these libraries as pip packages that
install under ``site-packages/nvidia/<part>/lib``; the ``cu112`` extra installs
them and ``preload`` loads them with RTLD_GLOBAL before ``import mxnet`` (as other
frameworks do with their ``nvidia-*`` dependencies), so the dynamic loader finds
them by soname when libmxnet.so asks.

``query_gpus`` asks the driver (libcuda.so.1, part of the driver, no toolkit needed)
for its CUDA version and each GPU's name, compute capability and memory: that
works even where MXNet cannot see the GPUs, which tells a driver too old for the
CUDA runtime from a CPU build.

Nothing here imports mxnet.
"""
import ctypes
import glob
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional

_logger = logging.getLogger(__name__)

# soname libmxnet.so of mxnet-cu11x 1.9.1 needs (`readelf -d`, docs/gpu.md) -> (pip package, folder under nvidia/)
CUDA11_LIBRARIES = [
    ("libcudart.so.11.0", "nvidia-cuda-runtime-cu11", "cuda_runtime"),
    ("libnvrtc.so.11.2", "nvidia-cuda-nvrtc-cu11", "cuda_nvrtc"),
    ("libnvToolsExt.so.1", "nvidia-nvtx-cu11", "nvtx"),
    ("libcublasLt.so.11", "nvidia-cublas-cu11", "cublas"),  # libcublas.so.11 needs it
    ("libcublas.so.11", "nvidia-cublas-cu11", "cublas"),
    ("libcufft.so.10", "nvidia-cufft-cu11", "cufft"),
    ("libcurand.so.10", "nvidia-curand-cu11", "curand"),
    ("libcusolver.so.11", "nvidia-cusolver-cu11", "cusolver"),
    ("libcudnn.so.8", "nvidia-cudnn-cu11", "cudnn"),
    ("libnccl.so.2", "nvidia-nccl-cu11", "nccl"),
]
DRIVER_LIBRARY = "libcuda.so.1"
# What the last preload() did: soname -> path loaded, or the reason it was not.
PRELOADED = {}


@dataclass
class GpuInfo:
    """One GPU as the driver sees it."""

    index: int
    name: str
    capability: tuple  # (major, minor), e.g. (8, 6)
    memory_bytes: int = 0

    @property
    def sm(self):
        """The capability as one number: 86 for (8, 6)."""
        return self.capability[0] * 10 + self.capability[1]


@dataclass
class CudaDevices:
    """The driver's answer: its CUDA version (11080 = 11.8), the GPUs, or why there is none."""

    driver_cuda: Optional[int] = None
    gpus: List[GpuInfo] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def driver_cuda_text(self):
        """'11.8' for 11080; 'none' without a driver."""
        if not self.driver_cuda:
            return "none"
        return "%d.%d" % (self.driver_cuda // 1000, (self.driver_cuda % 1000) // 10)


def mxnet_distribution():
    """(name, version) of the installed pip distribution providing ``mxnet`` (mxnet, mxnet-cu112, ...), or None."""
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        return None
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        if name == "mxnet" or name.startswith(("mxnet-cu", "mxnet_cu")):
            top = (dist.read_text("top_level.txt") or "mxnet").split()
            if "mxnet" in top:
                return name.replace("_", "-"), dist.version
    return None


def is_gpu_distribution(dist=None):
    """True when the installed mxnet is one of the pip GPU builds (mxnet-cuXXX)."""
    dist = dist if dist is not None else mxnet_distribution()
    return bool(dist) and dist[0].startswith("mxnet-cu")


def nvidia_lib_dirs():
    """``site-packages/nvidia/*/lib`` folders of NVIDIA's pip packages, {part: folder}."""
    try:
        import nvidia  # namespace package of nvidia-*-cu11
    except ImportError:
        return {}
    found = {}
    for root in getattr(nvidia, "__path__", []):
        for lib in sorted(glob.glob(os.path.join(root, "*", "lib"))):
            found.setdefault(os.path.basename(os.path.dirname(lib)), lib)
    return found


def _candidates(dirs, soname, part):
    folder = dirs.get(part)
    paths = [os.path.join(folder, soname)] if folder else []
    if part == "cudnn" and folder:  # cuDNN 8 loads its sub-libraries by soname: load them first
        paths = sorted(glob.glob(os.path.join(folder, "libcudnn_*.so.8"))) + paths
    return [p for p in paths if os.path.exists(p)]


def preload(force=False):
    """Load the pip CUDA libraries with RTLD_GLOBAL, before ``import mxnet``; returns PRELOADED.

    Only for a pip GPU build of mxnet (``force`` skips that test). Libraries are retried
    until none more loads, so their order does not matter; a failure is recorded, not
    raised: ``missing_libraries`` and ``doctor`` report it, and ``import mxnet`` then
    fails with the loader's own message.
    """
    if PRELOADED or not (force or is_gpu_distribution()):
        return PRELOADED
    dirs = nvidia_lib_dirs()
    pending = [(soname, path) for soname, _, part in CUDA11_LIBRARIES for path in _candidates(dirs, soname, part)]
    while pending:
        failed = []
        for soname, path in pending:
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                PRELOADED[os.path.basename(path)] = path
            except OSError as exc:
                failed.append((soname, path, str(exc)))
        if len(failed) == len(pending):
            for soname, path, reason in failed:
                PRELOADED[os.path.basename(path)] = "not loaded: %s" % reason
            break
        pending = [(s, p) for s, p, _ in failed]
    return PRELOADED


def missing_libraries():
    """[(soname, pip package, reason)] of the CUDA libraries mxnet-cu11x needs that cannot be loaded."""
    missing = []
    for soname, package, _ in CUDA11_LIBRARIES:
        try:
            ctypes.CDLL(soname)
        except OSError as exc:
            missing.append((soname, package, str(exc)))
    return missing


def _driver():
    try:
        return ctypes.CDLL(DRIVER_LIBRARY)
    except OSError:
        return None


def _check(lib, code, what):
    if code != 0:
        text = ctypes.c_char_p()
        lib.cuGetErrorString(code, ctypes.byref(text))
        raise RuntimeError("%s: CUDA driver error %d (%s)" % (what, code, (text.value or b"?").decode()))


def query_gpus():
    """The driver's CUDA version and its GPUs (CudaDevices); never raises.

    Reads libcuda.so.1 (the driver) directly: cuInit, cuDriverGetVersion, cuDeviceGetCount,
    cuDeviceGetName, cuDeviceComputeCapability, cuDeviceTotalMem_v2.
    """
    lib = _driver()
    if lib is None:
        return CudaDevices(error="no NVIDIA driver (%s cannot be loaded)" % DRIVER_LIBRARY)
    version, count = ctypes.c_int(), ctypes.c_int()
    try:
        _check(lib, lib.cuDriverGetVersion(ctypes.byref(version)), "cuDriverGetVersion")
        _check(lib, lib.cuInit(0), "cuInit")
        _check(lib, lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        gpus = [_gpu(lib, i) for i in range(count.value)]
    except RuntimeError as exc:
        return CudaDevices(driver_cuda=version.value or None, error=str(exc))
    return CudaDevices(driver_cuda=version.value, gpus=gpus)


def _gpu(lib, index):
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name, memory = ctypes.create_string_buffer(256), ctypes.c_size_t()
    _check(lib, lib.cuDeviceGet(ctypes.byref(device), index), "cuDeviceGet(%d)" % index)
    _check(lib, lib.cuDeviceGetName(name, 256, device), "cuDeviceGetName")
    _check(lib, lib.cuDeviceComputeCapability(ctypes.byref(major), ctypes.byref(minor), device),
           "cuDeviceComputeCapability")
    _check(lib, lib.cuDeviceTotalMem_v2(ctypes.byref(memory), device), "cuDeviceTotalMem")
    return GpuInfo(index, name.value.decode(errors="replace"), (major.value, minor.value), memory.value)


def nvrtc_archs():
    """The compute capabilities (as 86, 90, ...) the loaded NVRTC compiles for, or None if unknown.

    ``nvrtcGetSupportedArchs`` exists from CUDA 11.2 on; MXNet's runtime fusion compiles
    with ``--gpu-architecture=compute_XY`` of the device and fails where XY is not listed.
    """
    try:
        lib = ctypes.CDLL("libnvrtc.so.11.2")
        count = ctypes.c_int()
        if lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)) != 0:
            return None
        archs = (ctypes.c_int * count.value)()
        if lib.nvrtcGetSupportedArchs(archs) != 0:
            return None
        return list(archs)
    except (OSError, AttributeError):
        return None


def nvrtc_version():
    """(major, minor) of the loaded NVRTC, or None."""
    try:
        lib = ctypes.CDLL("libnvrtc.so.11.2")
    except OSError:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    return (major.value, minor.value) if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) == 0 else None

"""Process set-up that must happen before ``import mxnet``."""
import logging
import os

_logger = logging.getLogger(__name__)

# What configure_threads decided, for the log (it runs before logging is set up).
THREAD_SETTINGS = {}


def patch_numpy_for_mxnet():
    """Give numpy >= 1.24 back the ``np.bool`` alias that MXNet 1.9.1 still uses."""
    import numpy as np

    if np.lib.NumpyVersion(np.__version__) >= "1.24.0" and "bool" not in np.__dict__:
        np.bool = np.bool_  # removed in numpy 1.24; MXNet 1.9.1 calls it in ndarray code


def preload_cuda_libraries():
    """Make NVIDIA's pip CUDA libraries loadable before ``import mxnet`` (GPU builds only; see cuda_libs)."""
    import sys
    if "mxnet" in sys.modules:  # too late: libmxnet.so is loaded (or failed) already
        return {}
    from . import cuda_libs
    if not cuda_libs.nvidia_lib_dirs():  # no nvidia-* pip package: nothing to do, and no metadata scan
        return {}
    return cuda_libs.preload()


def usable_cores():
    """Number of CPU cores this process may run on (respects taskset/cgroups affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_loader_workers(gpus=0):
    """Loader worker processes when none are asked for.

    CPU training: the cores, at most 4 (the network needs the rest). With GPUs the
    loader is the bottleneck (about 250 img/s per worker against about 2,000 img/s
    per A100 under AMP): every core but one per GPU, whose process feeds it.
    """
    if gpus:
        return max(1, usable_cores() - gpus)
    return min(4, usable_cores())


def configure_threads(cpu_contexts=1, passive_wait=False):
    """Set OpenMP threads to the cores (split among CPU contexts) unless the user set them.

    MXNet's default threading is about half as fast as one OpenMP thread per core on
    small machines (3.7 vs 6.7 img/s for ResNet-50 on 2 cores), and libgomp reads
    ``OMP_NUM_THREADS`` only when mxnet is loaded, so this must run first.
    """
    if THREAD_SETTINGS:  # already decided in this process
        return THREAD_SETTINGS
    cores = usable_cores()
    if "OMP_NUM_THREADS" in os.environ:
        THREAD_SETTINGS["OMP_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] + " (set by user)"
    else:
        threads = max(1, cores // max(1, cpu_contexts))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        THREAD_SETTINGS["OMP_NUM_THREADS"] = "%d (chosen: %d cores / %d CPU contexts)" % (
            threads, cores, max(1, cpu_contexts))
    if passive_wait and "OMP_WAIT_POLICY" not in os.environ:
        # A server runs small forward passes between requests handled on the same
        # cores: spinning OpenMP threads made them 4-8x slower there.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        THREAD_SETTINGS["OMP_WAIT_POLICY"] = "PASSIVE (chosen for serving)"
    # One engine worker per CPU context is MXNet's default; say so in the log.
    THREAD_SETTINGS["MXNET_CPU_WORKER_NTHREADS"] = os.environ.get("MXNET_CPU_WORKER_NTHREADS", "1 (default)")
    THREAD_SETTINGS["cores"] = str(cores)
    return THREAD_SETTINGS


def log_thread_settings():
    """Write the thread settings chosen at start-up to the log."""
    for key, value in sorted(THREAD_SETTINGS.items()):
        _logger.info("threads: %s=%s", key, value)
    log_cpu_features()


# --- AMX: Intel's matrix units, which Linux hands out only on request ---------------------------------
# Linux >= 5.16 enables AMX tile state per process: a process that did not ask gets SIGILL on its first
# AMX instruction. oneDNN 2.4.4 (in MXNet 1.9.1) has AMX kernels but never asks, so we ask for it.
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
SYS_ARCH_PRCTL = 158  # x86-64
# What request_amx decided, for the log (it runs before logging is set up).
CPU_FEATURES = {}


def read_cpu_flags(cpuinfo_text=None):
    """The CPU's feature flags from /proc/cpuinfo (or the given text); empty where there is none."""
    if cpuinfo_text is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo_text = f.read()
        except OSError:  # not Linux
            return set()
    for line in cpuinfo_text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def should_request_amx(flags):
    """True when the CPU lists AMX tiles and an AMX data type (bf16 or int8) that oneDNN can use."""
    return "amx_tile" in flags and bool({"amx_bf16", "amx_int8"} & flags)


def request_amx(cpuinfo_text=None, syscall=None):
    """Ask Linux for AMX tile state once when the CPU lists it; records the outcome in CPU_FEATURES.

    On success, and unless the user set it, ``DNNL_MAX_CPU_ISA=AVX512_CORE_AMX`` lets oneDNN 2.4
    dispatch AMX kernels (it lists them as initial support, left out of its default choice).
    Elsewhere (no amx flag, other OS) nothing is requested and nothing changes. The grant is
    per process and forked children (DataLoader workers, which only decode images) inherit it.
    """
    if "amx" in CPU_FEATURES:
        return CPU_FEATURES["amx"]
    flags = read_cpu_flags(cpuinfo_text)
    CPU_FEATURES.update(cpu_support(flags))
    if not should_request_amx(flags):
        CPU_FEATURES["amx"] = "not requested: the CPU does not list amx_tile with amx_bf16/amx_int8"
        return CPU_FEATURES["amx"]
    if syscall is None:
        import ctypes
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    if syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0:
        import ctypes
        CPU_FEATURES["amx"] = "request refused by Linux (errno %d; needs Linux >= 5.16): AMX stays off" % (
            ctypes.get_errno())
        return CPU_FEATURES["amx"]
    CPU_FEATURES["amx"] = "enabled (arch_prctl ARCH_REQ_XCOMP_PERM granted)"
    if "DNNL_MAX_CPU_ISA" not in os.environ:
        os.environ["DNNL_MAX_CPU_ISA"] = "AVX512_CORE_AMX"
        CPU_FEATURES["amx"] += "; DNNL_MAX_CPU_ISA=AVX512_CORE_AMX"
    return CPU_FEATURES["amx"]


def amx_enabled():
    """True when this process was granted AMX."""
    return CPU_FEATURES.get("amx", "").startswith("enabled")


def cpu_support(flags):
    """{feature: yes/no} for the low-precision paths: bf16 (native or emulated), VNNI int8, AMX."""
    avx512_core = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    return {
        "avx512_core": avx512_core,  # what oneDNN 2.4 needs for any bf16 kernel (emulated without the below)
        "avx512_bf16": "avx512_bf16" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "amx_bf16": "amx_bf16" in flags and "amx_tile" in flags,
        "amx_int8": "amx_int8" in flags and "amx_tile" in flags,
    }


def bf16_supported():
    """True when oneDNN has bf16 kernels for this CPU (AVX-512 core or better)."""
    request_amx()
    return bool(CPU_FEATURES.get("avx512_core"))


def log_cpu_features():
    """Write the CPU's low-precision features and the AMX decision to the log."""
    request_amx()
    _logger.info("cpu: %s; AMX %s", ", ".join("%s=%s" % (k, "yes" if v else "no")
                                              for k, v in CPU_FEATURES.items() if k != "amx"),
                 CPU_FEATURES["amx"])


# --- what the machine is: said at the start of train and by doctor ------------------------------------
# Vector extensions that change how fast MXNet's oneDNN kernels run, widest last.
VECTOR_EXTENSIONS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX"))


def read_cpu_model(cpuinfo_text=None):
    """The CPU's model name from /proc/cpuinfo (or the given text); 'unknown CPU' where there is none."""
    if cpuinfo_text is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo_text = f.read()
        except OSError:  # not Linux
            return "unknown CPU"
    for line in cpuinfo_text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine_summary(cpuinfo_text=None, loadavg=None):
    """One line: CPU model, usable cores, vector extensions (AVX2, AVX-512, AMX) and the load average.

    Training speed differs several-fold between machines (AVX-512 or not, other work on the cores):
    this line lets a reader of a log or of ``doctor`` tell a slow machine from a broken install.
    """
    flags = read_cpu_flags(cpuinfo_text)
    present = [label for flag, label in VECTOR_EXTENSIONS if flag in flags]
    absent = [label for flag, label in VECTOR_EXTENSIONS[1:] if flag not in flags and label != "AVX512-BF16"]
    if loadavg is None:
        try:
            loadavg = os.getloadavg()
        except OSError:
            loadavg = None
    return "machine: %s, %d usable of %d cores; vector extensions: %s%s; load average %s" % (
        read_cpu_model(cpuinfo_text), usable_cores(), os.cpu_count() or 1, ", ".join(present) or "none of AVX2/AVX-512",
        " (no %s)" % ", no ".join(absent) if absent else "",
        " ".join("%.2f" % x for x in loadavg) if loadavg else "unknown")

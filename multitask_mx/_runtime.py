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


def default_loader_workers():
    """Loader worker processes when none are asked for: the cores, at most 4."""
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

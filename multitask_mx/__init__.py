"""multitask_mx: multi-task image classification with MXNet Gluon.

Importing the package does not import mxnet: the command line first sets the
thread environment (which MXNet's OpenMP runtime reads only once, at load).
Library users who import the stage modules directly get the numpy shim below,
and the request for AMX tile state on CPUs that have it (Linux grants it per
process; it must come before MXNet's first kernel, see _runtime.request_amx).
With a pip GPU build of mxnet, the CUDA libraries from NVIDIA's pip packages are
loaded first (cuda_libs.py), so that ``import mxnet`` finds them.
"""
from ._runtime import patch_numpy_for_mxnet, preload_cuda_libraries, request_amx

__version__ = "0.1.0"

patch_numpy_for_mxnet()
request_amx()
preload_cuda_libraries()

# The Python API (multitask_mx/api.py): ``multitask_mx.train(**flags)``, ``multitask_mx.load(run_dir)``.
# Resolved on first use, so ``import multitask_mx`` still loads no mxnet (threads are set first).
_API = ("train", "load", "Model", "parse_flags")


def __getattr__(name):
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError("module 'multitask_mx' has no attribute %r" % name)


def __dir__():
    return sorted(list(globals()) + list(_API))

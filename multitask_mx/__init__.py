"""multitask_mx: multi-task image classification with MXNet Gluon.

Importing the package does not import mxnet: the command line first sets the
thread environment (which MXNet's OpenMP runtime reads only once, at load).
Library users who import the stage modules directly get the numpy shim below.
"""
from ._runtime import patch_numpy_for_mxnet

__version__ = "0.1.0"

patch_numpy_for_mxnet()

"""``--kv-store horovod``: Horovod's allreduce (Gloo on CPU, NCCL on GPUs) as a gluon kvstore.

MXNet 1.9.1's ``mx.kv.create('horovod')`` is documented but its Python class is not
in the 1.9.1 wheel: the name falls through to the C++ factory, which returns a
*local* kvstore, so every process would train alone. ``HorovodKVStore`` is the
class MXNet 2.0 ships, for 1.9.1: ``pushpull`` sums over the processes
(``hvd.allreduce_``), ``broadcast``/``init`` take rank 0's values. Its ``type`` is
``dist_sync_horovod`` so that gluon.Trainer and ``distributed`` treat it as the
synchronous distributed store it is (gradients reduced every step, scaled by
1/workers, rank 0 writes the files, BatchNorm statistics averaged at epoch end).

Built against the installed MXNet: ``pip install --no-build-isolation horovod``
with ``HOROVOD_WITH_MXNET=1`` (see docs/distributed.md).
"""
import os

import mxnet as mx
from mxnet.kvstore import KVStoreBase

from ..errors import UserInputError

# set by horovodrun (Gloo) or mpirun for each process; without any, hvd.init() makes a job of one
_LAUNCHED_BY = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
WORKER_ARGV_ENV = "MULTITASK_MX_HOROVOD_ARGV"  # launch --engine horovod: the train command, as a JSON list


def import_horovod():
    """``horovod.mxnet``, or a UserInputError that says how to install it."""
    try:
        import horovod.mxnet as hvd
    except ImportError as exc:
        raise UserInputError(
            "--kv-store horovod needs Horovod built for MXNet (%s). Install it with: pip install wheel && "
            "HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 "
            "HOROVOD_WITHOUT_PYTORCH=1 pip install --no-build-isolation -c constraints.txt horovod "
            "(see docs/distributed.md), or use --kv-store dist_sync." % exc) from None
    return hvd


def check_launched():
    """Refuse a process that horovodrun did not start: it would train alone."""
    if not any(os.environ.get(name) for name in _LAUNCHED_BY):
        raise UserInputError("--kv-store horovod: this process was not started by horovodrun (no HOROVOD_RANK). "
                             "Start the run with `multitask-mx launch --engine horovod -n WORKERS -- train ... "
                             "--kv-store horovod` (see docs/distributed.md).")


@KVStoreBase.register
class Horovod(KVStoreBase):
    """Allreduce among the processes of a horovodrun job, in gluon's kvstore interface."""

    def __init__(self):
        self._hvd = import_horovod()
        self._hvd.init()
        self._initial = {}  # key -> rank 0's value (init), read back by pull

    @property
    def type(self):
        """``dist_sync_horovod``: synchronous and distributed, for gluon and ``distributed``."""
        return "dist_sync_horovod"

    @property
    def rank(self):
        """This process's rank."""
        return self._hvd.rank()

    @property
    def num_workers(self):
        """The number of processes."""
        return self._hvd.size()

    @staticmethod
    def is_capable(capability):
        """No optimizer on the store: every process updates its own copy (update_on_kvstore=False)."""
        return capability.lower() != KVStoreBase.OPTIMIZER

    def broadcast(self, key, value, out, priority=0):
        """Rank 0's ``value`` into every array of ``out``."""
        result = self._hvd.broadcast(value, root_rank=0, name="b%s" % key, priority=priority)
        for array in out if isinstance(out, (list, tuple)) else [out]:
            result.copyto(array)

    def pushpull(self, key, value, out=None, priority=0):
        """Sum ``value`` (one array, or one per device) over every process; into ``out``, else in place."""
        arrays = value if isinstance(value, (list, tuple)) else [value]
        total = arrays[0] if len(arrays) == 1 else mx.nd.add_n(*[a.as_in_context(arrays[0].context)
                                                                    for a in arrays])
        self._hvd.allreduce_(total, average=False, name="p%s" % key, priority=priority)
        targets = out if out is not None else arrays
        for array in targets if isinstance(targets, (list, tuple)) else [targets]:
            if array is not total:
                total.copyto(array)

    def init(self, key, value):
        """Keep rank 0's values for ``pull`` (the dist stores' way to share start weights)."""
        keys, values = (key, value) if isinstance(key, (list, tuple)) else ([key], [value])
        for k, v in zip(keys, values):
            self._initial[k] = self._hvd.broadcast(v, root_rank=0, name="i%s" % k)

    def pull(self, key, out=None, priority=0, ignore_sparse=True):
        """Rank 0's value given to ``init``."""
        self._initial[key].copyto(out)

    def barrier(self):
        """Wait for every process (a tiny allreduce)."""
        self._hvd.allreduce(mx.nd.zeros((1,)), name="barrier").wait_to_read()

    _barrier = barrier  # the name mxprivate.kv_barrier calls, as on MXNet's own kvstores

    def set_optimizer(self, optimizer):
        """Not supported: the optimizer runs in each process."""
        raise NotImplementedError("horovod keeps no optimizer: use update_on_kvstore=False")

    def save_optimizer_states(self, fname, dump_optimizer=False):
        """Not supported (the states are in each process's trainer)."""
        raise NotImplementedError

    def load_optimizer_states(self, fname):
        """Not supported (the states are in each process's trainer)."""
        raise NotImplementedError


def create():
    """The Horovod kvstore of a process started by horovodrun."""
    check_launched()
    return Horovod()

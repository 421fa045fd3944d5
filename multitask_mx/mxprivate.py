"""Every use of MXNet's (and GluonCV's) private names, in one place.

MXNet 1.9.1 offers no public way to do a few things this trainer needs: save
every device's optimizer state (``Trainer.save_states`` keeps only the first),
initialise a dist kvstore's keys safely, stop a failing worker from waiting at
exit, run a scheduler or server node after our imports, or read the weights
GluonCV's model store knows. Each such access is a small function here, and
tests/test_mxprivate.py calls each on a real object, so an MXNet upgrade that
renames one fails there, by name, and nowhere else.
"""
import ctypes

import mxnet as mx

# --- gluon.Trainer ------------------------------------------------------------------------


def trainer_kvstore(trainer):
    """The trainer's kvstore (None until it is created, and for a single device)."""
    return trainer._kvstore


def trainer_grad_scale(trainer):
    """The gradient scale the trainer divides by the batch size at each step (the optimizer's rescale_grad at start)."""
    return trainer._scale


def init_trainer_kvstore(trainer):
    """Create the trainer's kvstore and updaters now instead of at the first step (dist_async: sends the optimizer)."""
    if not trainer._kv_initialized:
        trainer._init_kvstore()


def make_trainer_ready(trainer):
    """Create the kvstore, the per-device updaters and the parameters' kvstore copies now, not at the first step."""
    init_trainer_kvstore(trainer)
    if trainer._params_to_init:
        trainer._init_params()


def updates_on_kvstore(trainer):
    """True when the kvstore applies the updates (dist_async's servers, or a local kvstore doing so)."""
    return bool(trainer._update_on_kvstore)


def trainer_is_distributed(trainer):
    """True when the trainer's kvstore is a dist kvstore."""
    return bool(trainer._distributed)


def trainer_updaters(trainer):
    """The per-device updaters that hold the optimizer states (one per device; after ``make_trainer_ready``)."""
    return trainer._updaters


def set_trainer_optimizer(trainer, optimizer):
    """Make ``optimizer`` (e.g. one unpickled with the states) the trainer's, with the trainer's parameter table."""
    trainer._optimizer = optimizer
    optimizer.param_dict = {i: p for i, p in enumerate(trainer._params)}


def pending_params(trainer):
    """Parameters whose kvstore copy the trainer has not initialised yet."""
    return list(trainer._params_to_init)


def set_pending_params(trainer, params):
    """Tell the trainer that only ``params`` still need their kvstore copy initialised."""
    trainer._params_to_init = list(params)


def param_key(trainer, param):
    """The kvstore key the trainer uses for ``param``."""
    return trainer._param2idx[param.name]


# --- gluon.Parameter, gluon.Block -------------------------------------------------------


def is_deferred(param):
    """True while a parameter waits for its shape (deferred initialisation) and has no arrays yet."""
    return bool(param._deferred_init)


def finish_deferred_init(param):
    """Create a deferred parameter's arrays now (loaded values, else its initializer)."""
    param._finish_deferred_init()


def has_traced_graph(block):
    """True once a hybridized block has run forward in this process, so that ``export`` can write its graph."""
    return bool(block._cached_graph)


def structural_params(block):
    """{structural name such as 'features.0.weight': Parameter} of a block (the names save_parameters writes)."""
    return block._collect_params_with_prefix()


def child_blocks(block):
    """[(key, child block)] of a block, in order (a HybridSequential's layers)."""
    return list(block._children.items())


def replace_child(block, key, child):
    """Put ``child`` in the place of the child block ``key`` (same position, same structural names after it)."""
    block._children[key] = child


def activation_type(activation):
    """The act_type of an ``nn.Activation`` block ('relu', 'sigmoid', ...)."""
    return activation._act_type


def batchnorm_options(batchnorm):
    """The (mutable) dict of operator arguments an ``nn.BatchNorm`` passes at each call (axis, eps, ...)."""
    return batchnorm._kwargs


# --- KVStore ---------------------------------------------------------------------------


def kv_barrier(kv):
    """Wait until every worker of a dist kvstore reaches this point (a no-op for local kvstores)."""
    kv._barrier()


def set_barrier_before_exit(kv, wait):
    """Whether this worker waits for all others at exit (MXNet's default); off, a failing worker exits at once."""
    mx.base.check_call(mx.base._LIB.MXKVStoreSetBarrierBeforeExit(kv.handle, ctypes.c_int(int(wait))))


def run_kvstore_node():
    """Be the scheduler or a server (``DMLC_ROLE``) until the job ends; returns at once in a worker."""
    from mxnet.kvstore import kvstore_server
    kvstore_server._init_kvstore_server_module()


# --- gluon.data.DataLoader ---------------------------------------------------------------


def loader_dataset(loader):
    """The dataset a DataLoader reads."""
    return loader._dataset


# --- GluonCV's model store ---------------------------------------------------------------


def gluoncv_store_table():
    """({store name: sha1} in the store's order, zip URL format) of GluonCV's pretrained weights."""
    from gluoncv.model_zoo import model_store
    return dict(model_store._model_sha1), model_store._url_format

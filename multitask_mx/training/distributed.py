"""Training on several workers with MXNet's parameter server (the ``dist_*`` kvstores).

``multitask-mx launch`` starts a scheduler, servers and workers with the
``DMLC_*`` environment; each worker runs ``train`` and creates its kvstore here.
gluon.Trainer then sums the gradients of all workers on the servers. What
MXNet 1.9.1 leaves to us, and this module does:

* refuse a dist kvstore without the launcher's environment (ps-lite would abort);
* give every worker a shard of the same length, so that in the sync modes all
  workers make the same number of steps (one step more on one worker waits forever);
* scale the summed gradient by 1/workers (sync), so that N workers with batch B
  update like one machine with batch N*B, as MXNet's Module did;
* put rank 0's start weights on the servers ourselves (``start_trainer``): the
  Trainer's own broadcast pushes MKL-DNN-layout weights, which fails silently,
  and its ``kv.init`` can let other workers pull before rank 0's push arrived;
* average BatchNorm's running statistics over the workers at each epoch end,
  which the trainer does not synchronise (they are not trained by gradients),
  and the epoch's train metrics, so that the history is the whole training set's;
* let a failing worker exit at once: by default its kvstore waits at exit for
  the other workers, which wait for it, and the job hangs.

The collectives use the kvstore's servers as a sum (``pushpull`` without an
optimizer), which works in the sync modes only: in ``dist_async`` the servers
hold the optimizer and apply anything pushed to them as a gradient, so there the
shards may differ by a batch and each worker keeps its own BatchNorm statistics.
"""
import logging
import math
import os

import mxnet as mx
import numpy as np

from ..atomic import atomic_path
from .. import mxprivate
from ..errors import UserInputError
from ..data.lists import ImageList
from .cluster import end_heartbeat, start_heartbeat

_logger = logging.getLogger(__name__)

KV_STORES = ("device", "local", "nccl", "dist_sync", "dist_device_sync", "dist_async", "horovod")
DMLC_VARIABLES = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")
# kvstore keys of our collectives. gluon.Trainer uses 0 .. number of parameters - 1; ps-lite
# computes key * 9973 in a C int to pick a server, so keys stay below 2**31 / 9973 (215,000).
_GATHER_KEY = 100000
_METRICS_KEY = 100001
_AUX_KEY_BASE = 100002
_AUX_SUFFIXES = ("running_mean", "running_var", "moving_mean", "moving_var")  # Gluon's and Symbol's BatchNorm
_initialised = set()  # keys this process has created (kv.init may run once per key)


def is_distributed(kv):
    """True for the parameter-server kvstores."""
    return kv is not None and kv.type.startswith("dist")


def is_sync(kv):
    """True for dist_sync and dist_device_sync: every step waits for all workers."""
    return is_distributed(kv) and "async" not in kv.type


def create_kvstore(name):
    """``mx.kv.create(name)`` after the checks that MXNet leaves to a crash or a silent fallback."""
    if name not in KV_STORES:
        raise UserInputError("--kv-store %r: choose one of %s." % (name, ", ".join(KV_STORES)))
    role = os.environ.get("DMLC_ROLE")
    if name.startswith("dist"):
        missing = [v for v in DMLC_VARIABLES if not os.environ.get(v)]
        if missing:
            raise UserInputError(
                "--kv-store %s needs a scheduler, servers and workers, and this process has no parameter-server "
                "environment (%s not set). Start the run with `multitask-mx launch -n WORKERS -s SERVERS -- "
                "train ... --kv-store %s` (see docs/distributed.md), or use --kv-store device on one machine."
                % (name, ", ".join(missing), name))
    elif role == "worker":
        raise UserInputError("this process was started by `multitask-mx launch` as a worker (DMLC_ROLE=worker), "
                             "but --kv-store %s trains alone: pass --kv-store dist_sync, dist_device_sync or "
                             "dist_async." % name)
    if name == "horovod":
        from .horovod_kv import create  # imports horovod, an optional extra
        return create()
    if name.startswith("dist"):
        start_heartbeat()  # before mx.kv.create, which waits for every node: the launcher sees a stuck start too
    kv = mx.kv.create(name)
    if is_distributed(kv):
        # With the barrier at exit (MXNet's default), a worker that fails waits for the others, which
        # wait for it: the job hangs. Without it, it exits and the launcher stops the rest. Until finish().
        mxprivate.set_barrier_before_exit(kv, False)
    return kv


def finish(kv, net, rank_params=None):
    """End of a successful run: ``--dump-rank-params``, then a normal kvstore shutdown.

    The shutdown waits for all workers, and rank 0 then stops the servers.
    """
    if rank_params:
        dump_rank_params(net, rank_params, kv)
    if is_distributed(kv) and kv.type != "dist_sync_horovod":
        mxprivate.set_barrier_before_exit(kv, True)
        end_heartbeat()


def rank_label(kv):
    """``[worker 1/4]`` for the log lines of a distributed worker, '' otherwise."""
    return "[worker %d/%d]" % (kv.rank, kv.num_workers) if is_distributed(kv) else ""


def shard_list(image_list: ImageList, rank, num_workers):
    """This worker's part of a list: every ``num_workers``-th entry, padded to ``ceil(N / num_workers)``.

    Padding repeats the shard's first entries so that all shards have the same length
    (a repeated line is not a duplicate path to lists.find_duplicates).
    """
    if num_workers == 1:
        return image_list
    count = len(image_list)
    if count < num_workers:
        raise UserInputError("%s has %d image(s) for %d workers: every worker needs at least one. Use more "
                             "images or fewer workers (launch -n)." % (image_list.source, count, num_workers))
    shard = np.arange(rank, count, num_workers)
    length = int(math.ceil(count / float(num_workers)))
    return image_list.take(np.concatenate([shard, shard[:length - len(shard)]]))


def init_keys(kv, keys, arrays):
    """``kv.init`` that is safe to follow with pulls and pushes from any worker.

    In MXNet 1.9.1 rank 0's init pushes can still be queued when ``kv.init``'s
    barrier lets the other workers go on (seen when the arrays were just used, e.g.
    by a forward pass): a pull then reaches a server without the key, which aborts
    ("init 0 first"), and a push would be taken as the initial value. Waiting for
    the pushes and meeting at a second barrier closes that gap.
    """
    kv.init(keys, arrays)
    mx.nd.waitall()
    mxprivate.kv_barrier(kv)


def gather(kv, value):
    """Every worker's ``value`` (a number), in rank order; sync kvstores only, once per run."""
    vec = mx.nd.zeros((kv.num_workers,))
    vec[kv.rank] = value
    init_keys(kv, [_GATHER_KEY], [mx.nd.zeros((kv.num_workers,))])
    kv.pushpull(_GATHER_KEY, vec)  # in place: with out= MXNet 1.9.1 also adds into the input
    return [int(round(v)) for v in vec.asnumpy()]


def equalize_shards(image_list: ImageList, kv):
    """Cut this worker's shard to the shortest worker's length (sync kvstores).

    Shards differ only when image checks dropped entries (``--skip-bad-images``).
    """
    if not is_sync(kv):
        return image_list
    lengths = gather(kv, len(image_list))
    shortest = min(lengths)
    if shortest == len(image_list):
        return image_list
    _logger.warning("workers have %s images after the checks; each uses %d so that all make the same number "
                    "of steps", lengths, shortest)
    return image_list.take(slice(0, shortest))


def updates_per_epoch(num_examples, batch_size, kv):
    """Optimizer updates per epoch, for the lr schedule.

    Sync: one update per global batch of ``batch_size`` x workers. Async: the
    servers update once per push, i.e. once per batch of any worker.
    """
    workers = kv.num_workers if is_sync(kv) else 1
    return max(1, int(math.ceil(num_examples / float(batch_size * workers))))


def gradient_scale(kv):
    """The optimizer's ``rescale_grad`` factor: 1/workers in the sync modes, whose servers sum gradients."""
    return 1.0 / kv.num_workers if is_sync(kv) else 1.0


def start_trainer(trainer, net, kv, batch_size, start=(0, 0), epoch_size=1):
    """Dist kvstores: create the trainer's keys from rank 0's weights and pull them, before any step.

    This replaces gluon.Trainer's lazy broadcast, which fails in MXNet 1.9.1 (see
    ``init_keys`` and ``_plain``); call it before ``load_trainer_states``. In
    dist_async the servers get the optimizer here, so it needs the gradient scale
    for ``batch_size`` (the size of every batch) and, when resuming from ``start``
    (epoch, batches done), the update count (``_restore_async_schedule``).
    Also creates the keys that ``end_epoch`` uses.
    """
    if not is_distributed(kv):
        return
    if not is_sync(kv):
        # gluon sets this at the first step; the servers' copy cannot change later
        trainer.optimizer.rescale_grad = mxprivate.trainer_grad_scale(trainer) / batch_size
        if start != (0, 0):
            _restore_async_schedule(trainer, kv, start, epoch_size)
    mxprivate.init_trainer_kvstore(trainer)  # dist_async: sends the optimizer to the servers
    params = [p for p in mxprivate.pending_params(trainer) if not mxprivate.is_deferred(p)]
    keys = [mxprivate.param_key(trainer, p) for p in params]
    # plain copies: after a forward pass MKL-DNN keeps conv weights in its own layout, which the
    # dist kvstore cannot send (the push fails inside the engine and the key never reaches the server)
    init_keys(kv, keys, [_plain(p.list_data()[0]) for p in params])
    pulled = [mx.nd.zeros(p.shape, dtype=p.dtype) for p in params]
    for key, array in zip(keys, pulled):
        kv.pull(key, out=array, priority=-key)
    for param, array in zip(params, pulled):
        param.set_data(array)
    mxprivate.set_pending_params(trainer, [p for p in mxprivate.pending_params(trainer) if mxprivate.is_deferred(p)])
    mx.nd.waitall()  # no gradient may reach the servers before every worker holds the start weights
    if is_sync(kv):
        aux = _aux_params(net)
        init_keys(kv, [key for key, _ in aux], [mx.nd.zeros(p.shape, dtype=p.dtype) for _, p in aux])


def _plain(array):
    """A copy in MXNet's default layout, on the CPU."""
    return mx.nd.array(array.asnumpy(), dtype=array.dtype)


def _aux_params(net):
    params = net.collect_params()
    names = [n for n in sorted(params.keys()) if n.endswith(_AUX_SUFFIXES)]
    return [(_AUX_KEY_BASE + i, params[name]) for i, name in enumerate(names)]


def end_epoch(net, trainer, train_values):
    """Sync dist: average BatchNorm statistics and the epoch's train metrics over the workers.

    Afterwards every worker holds the same model, and the train metrics (history,
    loss weighting) are those of the whole training set. Returns the metric values.
    """
    kv = mxprivate.trainer_kvstore(trainer)
    if is_distributed(kv) and not is_sync(kv):
        # dist_async: the servers count the updates, about epoch_size per epoch; this worker's
        # copy of the optimizer only gives the lr that fit logs
        optimizer = trainer.optimizer
        optimizer.num_update += getattr(optimizer.lr_scheduler, "epoch_size", 0)
    if not is_sync(kv):
        return train_values
    for key, param in _aux_params(net):
        total = _plain(param.data(param.list_ctx()[0]))
        kv.pushpull(key, total)  # in place (see gather)
        param.set_data(total / kv.num_workers)
    return reduce_metric_values(kv, train_values)


def reduce_metric_values(kv, values):
    """{task: {"count": n, "loss": mean, ...}} over all workers: counts add, means weigh by count."""
    fields = [(task, name) for task in sorted(values) for name in sorted(values[task]) if name != "count"]
    counts = [values[task]["count"] for task, _ in fields]
    sums = [values[task][name] * n if n else 0.0 for (task, name), n in zip(fields, counts)]
    vec = mx.nd.array(sums + [values[task]["count"] for task in sorted(values)])
    if _METRICS_KEY not in _initialised:
        init_keys(kv, [_METRICS_KEY], [mx.nd.zeros(vec.shape)])
        _initialised.add(_METRICS_KEY)
    kv.pushpull(_METRICS_KEY, vec)  # in place (see gather)
    totals = vec.asnumpy().tolist()
    task_counts = dict(zip(sorted(values), [int(round(c)) for c in totals[len(fields):]]))
    out = {task: {"count": task_counts[task]} for task in values}
    for (task, name), total in zip(fields, totals):
        out[task][name] = total / task_counts[task] if task_counts[task] else float("nan")
    return {task: dict(values[task], **out[task]) for task in values}


def _restore_async_schedule(trainer, kv, start, epoch_size):
    """dist_async resume: the servers' optimizer starts counting updates where the run stopped.

    In dist_async the optimizer (momentum, update count) lives on the servers and
    MXNet cannot save it from a worker (kvstore.save_optimizer_states asserts), so
    the resumed servers restart the momentum but continue the lr schedule.
    """
    count = start[0] * epoch_size + start[1] * kv.num_workers
    trainer.optimizer.begin_num_update = trainer.optimizer.num_update = count
    _logger.info("dist_async resume: the lr schedule continues from update %d; momentum restarts (the servers "
                 "held it, and MXNet cannot save it)", count)


def dump_rank_params(net, pattern, kv):
    """``--dump-rank-params``: write this worker's final weights to PATTERN with {rank} filled in."""
    path = pattern.format(rank=kv.rank)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        net.save_parameters(tmp)
    _logger.info("wrote this worker's final weights to %s", path)
    return path


def check_rank_params_pattern(pattern, kv):
    """Refuse a --dump-rank-params path that all workers would share."""
    if pattern and kv.num_workers > 1 and "{rank}" not in pattern:
        raise UserInputError("--dump-rank-params %s: put {rank} in the path (e.g. /tmp/final-{rank}.params); "
                             "otherwise %d workers write the same file." % (pattern, kv.num_workers))


def add_arguments(parser):
    """Distributed flags (--kv-store itself is a device flag)."""
    group = parser.add_argument_group("distributed")
    group.add_argument("--dump-rank-params", default=None, metavar="PATH",
                       help="for checks: at the end every worker writes its final weights to PATH, where {rank} "
                            "becomes its rank (e.g. /tmp/final-{rank}.params); checkpoints stay rank 0's")

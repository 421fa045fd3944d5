"""Optimizer state of every device: the ``.states`` files a checkpoint writes and ``--resume`` reads.

``Trainer.save_states`` keeps only the first device's state; these keep all of them
(pickled per device, with the optimizer and its lr schedule, whose classes are
unpickled by name: see ``multitask_mx.schedules``).
"""
import logging
import pickle

from .. import mxprivate
from ..atomic import atomic_path, atomic_write_bytes
from ..errors import UserInputError

_logger = logging.getLogger(__name__)

STATES_FORMAT = "multitask_mx-states-1"


def save_trainer_states(trainer, path):
    """Save the optimizer state of every device (Trainer.save_states keeps only the first)."""
    mxprivate.make_trainer_ready(trainer)  # Trainer creates its kvstore and updaters lazily, at the first step
    if mxprivate.updates_on_kvstore(trainer) and mxprivate.trainer_is_distributed(trainer):
        # dist_async: the state lives on the servers, which MXNet cannot save from a worker
        atomic_write_bytes(path, pickle.dumps({"format": STATES_FORMAT, "devices": [], "on_servers": True}))
        return
    if mxprivate.updates_on_kvstore(trainer):  # the state lives in the kvstore
        with atomic_path(path) as tmp:
            trainer.save_states(tmp)
        return
    payload = {"format": STATES_FORMAT, "devices": [u.get_states(dump_optimizer=True)
                                                        for u in mxprivate.trainer_updaters(trainer)]}
    atomic_write_bytes(path, pickle.dumps(payload))


def load_trainer_states(trainer, path):
    """Load states saved by save_trainer_states, onto as many devices as the trainer has now."""
    mxprivate.make_trainer_ready(trainer)
    if mxprivate.updates_on_kvstore(trainer) and not mxprivate.trainer_is_distributed(trainer):
        trainer.load_states(path)
        return
    with open(path, "rb") as f:
        payload = pickle.loads(f.read())
    if isinstance(payload, dict) and payload.get("on_servers"):
        return  # dist_async: the new servers start the optimizer afresh (distributed.set_resumed_update_count)
    states = payload["devices"] if isinstance(payload, dict) and payload.get("format") == STATES_FORMAT else None
    if states is None:
        raise UserInputError("%s is not an optimizer-state file written by multitask_mx." % path)
    from ..devices import states_on_cpu
    updaters = mxprivate.trainer_updaters(trainer)
    if len(states) != len(updaters):
        # Data-parallel devices apply identical updates, so their states are copies.
        _logger.info("resuming on %d device(s) from states of %d: device 0's state is given to all",
                     len(updaters), len(states))
        states = [states[0]] * len(updaters)
    for updater, state in zip(updaters, states):
        updater.set_states(states_on_cpu(state))  # the saved device ids may not exist here
        updater.optimizer = updaters[0].optimizer
    mxprivate.set_trainer_optimizer(trainer, updaters[0].optimizer)

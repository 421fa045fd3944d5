"""Where a run starts: a fresh network, or the one --resume continues (and the checks that keep runs apart)."""
import logging
from dataclasses import dataclass
from typing import Optional

from ..model import network
from . import rundir
from ..errors import UserInputError
from ..runfolder import TRUNK_SYMBOL_FILE, ResumePoint

_logger = logging.getLogger(__name__)


@dataclass
class NetPlan:
    """Where the network comes from, decided before any of its arrays exist (``plan_net``)."""

    trunk_spec: network.TrunkSpec
    normalization: str
    point: Optional[ResumePoint] = None  # where a continued run starts
    weights: Optional[str] = None  # the pretrained weights file of a fresh run (None: from scratch)
    classic_params: Optional[dict] = None  # a classic checkpoint's arrays, read with its symbol


def plan_net(config, tasks, image_shape, saver):
    """The NetPlan of a fresh run (pretrained trunk or scratch) or of the run --resume continues.

    ``config``: the run's TrainConfig (its model, data and checkpoint settings decide).
    """
    point = find_resume_point(config, saver)
    if point is not None:
        saved = saver.read_config()
        check_resume_compatible(saved, config.model, tasks, image_shape, saver.save_dir)
        trunk_spec = network.TrunkSpec(network=saved["trunk"]["network"], input_name=saved["trunk"]["input_name"],
                                     symbol_json=saver.read_text(TRUNK_SYMBOL_FILE)
                                     if saved["trunk"]["kind"] == "symbol" else None)
        return NetPlan(trunk_spec, saved["normalization"], point=point)
    model = config.model
    weights = network.pretrained_weights(model.network, model.model, model.pretrained, model.model_root)
    trunk_spec, normalization, classic_params = network.resolve_trunk(
        model.network, weights, model.model_epoch, config.data.normalization)
    return NetPlan(trunk_spec, normalization, weights=weights, classic_params=classic_params)


def build_planned_net(plan: NetPlan, model, tasks, ctxs, image_shape, saver):
    """The network of ``plan`` with its weights: the resumed run's, the pretrained trunk's, or drawn at random.

    ``model``: the ModelSettings (the heads' hidden layer and dropout).
    """
    net = network.build_net(plan.trunk_spec, tasks, ctxs, image_shape, model.head_hidden, model.head_dropout,
                          defer=plan.point is not None or bool(plan.weights))  # loaded next: not drawn first
    if plan.point is not None:
        rundir.load_resume_params(net, saver, plan.point.params_file)
        _logger.info("resuming %s", plan.point.describe())
    elif plan.weights:
        network.load_pretrained_trunk(net, plan.weights, plan.classic_params)
        plan.classic_params = None  # copied into the network: let the arrays go
    else:
        _logger.info("no --model: the trunk %s trains from scratch", plan.trunk_spec.network)
    return net


def open_run_folder(config, kv):
    """Before the log opens: --save-result writable, locked for this process, holding no run this one would mix with.

    ``config``: the run's TrainConfig. Returns the folder's RunLock (None on ranks that write nothing).
    """
    checkpoint = config.checkpoint
    return rundir.open_run_folder(checkpoint.save_result, checkpoint.save_name, kv.rank == 0, config.continues_run(),
                                  checkpoint.overwrite, new_run=not config.draws_only())  # a drawing: no run


def check_resume_flags(checkpoint):
    """Refuse resume flags of ``checkpoint`` (the CheckpointSettings) that contradict each other or do nothing."""
    if checkpoint.resume and checkpoint.overwrite:
        raise UserInputError("--resume continues the run in --save-result and --overwrite deletes it: give one of "
                             "them.")
    for flag, given in (("--resume-epoch", checkpoint.resume_epoch is not None),
                        ("--fresh-optimizer", checkpoint.fresh_optimizer)):
        if given and not checkpoint.resume:
            raise UserInputError("%s only applies when continuing a run: add --resume." % flag)
    if checkpoint.resume_epoch is not None and checkpoint.fresh_optimizer:
        raise UserInputError("--resume-epoch N continues from a complete epoch (weights and optimizer state); "
                             "--fresh-optimizer is for a newest epoch whose .states is lost: give one of them.")


def find_resume_point(config, saver):
    """The ResumePoint of --resume (or --model SAVE_PREFIX --model-epoch N, the original's way), else None.

    ``config``: the run's TrainConfig; ``saver``: its run folder.
    """
    checkpoint, own_prefix = config.checkpoint, config.model_is_own_prefix()
    if not config.continues_run():
        return None
    if not saver.has_config():
        raise UserInputError("--resume: %s has no config.json, so there is no run to resume there. Check "
                             "--save-result/--save-name, or drop --resume to start a new run." % saver.save_dir)
    if own_prefix and not checkpoint.resume:
        point = saver.resume_point(epoch=config.model.model_epoch)
    else:
        point = saver.resume_point(epoch=checkpoint.resume_epoch, fresh_optimizer=checkpoint.fresh_optimizer)
    saver.resume_from(point)
    if point is None:
        _logger.info("--resume: no finished epoch in %s yet; starting from the beginning", saver.save_dir)
    return point


def check_resume_compatible(saved, model, tasks, image_shape, save_dir):
    """Stop if --resume would continue a run (config ``saved``, in ``save_dir``) of another network, tasks or shape."""
    problems = []
    if model.network and saved["trunk"]["kind"] == "zoo" and model.network != saved["network"]:
        problems.append("network %s, not %s" % (saved["network"], model.network))
    saved_tasks = [(t["name"], t["num_classes"]) for t in saved["tasks"]]
    if saved_tasks != [(t.name, t.num_classes) for t in tasks]:
        problems.append("tasks %s, not %s" % (saved_tasks, [(t.name, t.num_classes) for t in tasks]))
    if list(saved["image_shape"]) != list(image_shape):
        problems.append("image shape %s, not %s" % (saved["image_shape"], list(image_shape)))
    if problems:
        raise UserInputError("--resume: the run in %s was trained with %s. Resume with the same settings, or "
                             "use a new --save-result." % (save_dir, "; ".join(problems)))

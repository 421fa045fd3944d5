"""Where a run starts: a fresh network, or the one --resume continues (and the checks that keep runs apart)."""
import logging
import os
from dataclasses import dataclass
from typing import Optional

from ..data import augment
from . import checkpoints
from ..model import network as model
from . import rundir
from ..errors import UserInputError

_logger = logging.getLogger(__name__)


@dataclass
class NetPlan:
    """Where the network comes from, decided before any of its arrays exist (``plan_net``)."""

    trunk_spec: model.TrunkSpec
    normalization: str
    point: Optional[tuple] = None  # the resume point of a continued run
    weights: Optional[str] = None  # the pretrained weights file of a fresh run (None: from scratch)
    classic_params: Optional[dict] = None  # a classic checkpoint's arrays, read with its symbol


def plan_net(args, tasks, image_shape, saver):
    """The NetPlan of a fresh run (pretrained trunk or scratch) or of the run --resume continues."""
    point = find_resume_point(args, saver)
    if point is not None:
        saved = saver.read_config()
        check_resume_compatible(saved, args, tasks, image_shape)
        trunk_spec = model.TrunkSpec(network=saved["trunk"]["network"], input_name=saved["trunk"]["input_name"],
                                     symbol_json=saver.read_text(model.TRUNK_SYMBOL_FILE)
                                     if saved["trunk"]["kind"] == "symbol" else None)
        return NetPlan(trunk_spec, saved["normalization"], point=point)
    weights = model.pretrained_weights(args.network, args.model, args.pretrained, args.model_root)
    trunk_spec, normalization, classic_params = model.resolve_trunk(
        args.network, weights, args.model_epoch, args.normalization)
    return NetPlan(trunk_spec, normalization, weights=weights, classic_params=classic_params)


def build_planned_net(plan: NetPlan, args, tasks, ctxs, image_shape, saver):
    """The network of ``plan`` with its weights: the resumed run's, the pretrained trunk's, or drawn at random."""
    net = model.build_net(plan.trunk_spec, tasks, ctxs, image_shape, args.head_hidden, args.head_dropout,
                          defer=plan.point is not None or bool(plan.weights))  # loaded next: not drawn first
    if plan.point is not None:
        rundir.load_resume_params(net, saver, plan.point[1])
        _logger.info("resuming after epoch %d from %s%s", plan.point[0], plan.point[1],
                     " (%d batches into epoch %d)" % (plan.point[3], plan.point[0] + 1) if plan.point[3] else "")
    elif plan.weights:
        model.load_pretrained_trunk(net, plan.weights, plan.classic_params)
        plan.classic_params = None  # copied into the network: let the arrays go
    else:
        _logger.info("no --model: the trunk %s trains from scratch", plan.trunk_spec.network)
    return net


def check_save_result(args, kv):
    """Before the log opens: --save-result writable and holding no run this one would mix with."""
    drawing = args.plot_lr or augment.preview_settings(args)  # writes no checkpoint: no run to protect
    rundir.check_save_result(args.save_result, args.save_name, kv.rank == 0 and not drawing, continues_run(args),
                             args.overwrite)


def continues_run(args):
    """--resume, or --model SAVE_RESULT/SAVE_NAME --model-epoch N (the original's way to continue a run)."""
    own_prefix = os.path.join(args.save_result, args.save_name)
    return bool(args.resume or (args.model and os.path.abspath(args.model) == os.path.abspath(own_prefix)))


def find_resume_point(args, saver):
    """Where --resume (or --model SAVE_PREFIX --model-epoch N, the original's way) continues from."""
    own_prefix = args.model and os.path.abspath(args.model) == os.path.abspath(saver.prefix)
    if not (args.resume or own_prefix):
        return None
    if not os.path.exists(saver.path(checkpoints.CONFIG_FILE)):
        raise UserInputError("--resume: %s has no config.json, so there is no run to resume there. Check "
                             "--save-result/--save-name, or drop --resume to start a new run." % saver.save_dir)
    point = saver.resume_point()
    if own_prefix and not args.resume:
        epoch = args.model_epoch
        if not os.path.exists(saver.params_file(epoch)):
            raise UserInputError("--model %s --model-epoch %d: no such checkpoint; saved epochs: %s"
                                 % (args.model, epoch, saver.saved_epochs() or "none"))
        point = (epoch, saver.params_file(epoch), saver.states_file(epoch), 0)
        saver.history = [r for r in saver.history if r["epoch"] <= epoch]
    if point is None:
        _logger.info("--resume: no finished epoch in %s yet; starting from the beginning", saver.save_dir)
    return point


def check_resume_compatible(saved, args, tasks, image_shape):
    """Stop if --resume would continue a run of another network, tasks or image shape."""
    problems = []
    if args.network and saved["trunk"]["kind"] == "zoo" and args.network != saved["network"]:
        problems.append("network %s, not %s" % (saved["network"], args.network))
    saved_tasks = [(t["name"], t["num_classes"]) for t in saved["tasks"]]
    if saved_tasks != [(t.name, t.num_classes) for t in tasks]:
        problems.append("tasks %s, not %s" % (saved_tasks, [(t.name, t.num_classes) for t in tasks]))
    if list(saved["image_shape"]) != list(image_shape):
        problems.append("image shape %s, not %s" % (saved["image_shape"], list(image_shape)))
    if problems:
        raise UserInputError("--resume: the run in %s was trained with %s. Resume with the same settings, or "
                             "use a new --save-result." % (args.save_result, "; ".join(problems)))

"""``multitask-mx find-lr``: the lr range test with the training flags; writes a PNG and prints the lr to use.

It reads the lists and builds the network exactly as ``train`` would, runs
``lr_finder.find_lr`` and writes the curve; it writes no checkpoint and changes no
saved run (with --resume it starts from that run's weights, read only).
"""
import logging
import os

from .. import devices
from ..training import distributed, lr_finder, loop
from ..training.checkpoints import CheckpointSaver
from ..errors import UserInputError
from ..atomic import check_output_file
from ..model.finetune import FinetuneConfig
from ..logs import setup_logging
from . import train as train_command
from ..training import pipeline, prepare, resume
from ..training.config import TrainConfig

_logger = logging.getLogger(__name__)


def add_arguments(parser):
    """The training flags (the test uses them all) and where the curve goes."""
    train_command.add_arguments(parser)
    parser.add_argument("--find-lr-out", default="lr_finder.png", metavar="FILE.png",
                        help="the PNG of loss against lr; the curve's numbers go to FILE.json beside it")


def run(args):
    """Entry point of ``multitask-mx find-lr``: train's preparation of the same TrainConfig, then the range test."""
    setup_logging(quiet=args.quiet)
    out = args.find_lr_out
    if not out.lower().endswith(".png"):
        raise UserInputError("--find-lr-out %s: the curve is a PNG image; give a name ending in .png." % out)
    config = TrainConfig.from_args(args, command="find-lr")
    read = (("--data-train", config.data.data_train), ("--data-val", config.data.data_val))
    for path in (out, os.path.splitext(out)[0] + ".json"):
        check_output_file(path, "--find-lr-out", read, config.run_dir())
    finder = lr_finder.FinderConfig.from_args(config.optim)
    kv = distributed.create_kvstore("local")
    pipeline.seed_everything(config.optim.seed)
    ctxs = devices.parse_contexts(config.dist.gpus, config.dist.cpus)
    pipeline.check_devices_and_dtype(config, ctxs)
    inputs = prepare.prepare_inputs(config, kv, ctxs, with_val=False)  # as train: the same preparation, in order
    saver = CheckpointSaver(config.checkpoint.save_result, config.checkpoint.save_name, writer=False)  # reads only
    plan = resume.plan_net(config, inputs.tasks, inputs.image_shape, saver)
    _, (loader, _) = prepare.datasets_and_loaders(config, inputs, plan.normalization)
    # the suggestion is meant for --lr, and with a given --lr every layer learns at it: test that
    net = prepare.build_training_net(plan, config, inputs, ctxs, saver, FinetuneConfig.settle(
        config.model, config.optim.lr, 1.0, "find-lr: its suggestion is for --lr"))
    optim = config.optim
    result = lr_finder.find_lr(net, loader, ctxs, inputs.loss_fn, inputs.tasks, finder, loop=loop.LoopConfig(
        progress_bar=False, mixup_alpha=optim.mixup, seed=optim.seed), **lr_finder.optimizer_settings(optim))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    png, json_path = lr_finder.write_result(result, out)
    print("suggested lr: %.4g (%s)\ncurve: %s, %s\ntrain with: --lr %.4g"
          % (result.suggestion, result.rule, png, json_path, result.suggestion))
    return 0

"""``multitask-mx find-lr``: the lr range test with the training flags; writes a PNG and prints the lr to use.

It reads the lists and builds the network exactly as ``train`` would, runs
``lr_finder.find_lr`` and writes the curve; it writes no checkpoint and changes no
saved run (with --resume it starts from that run's weights, read only).
"""
import logging
import os

from .. import devices
from ..training import distributed, flag_rules, lr_finder, loop
from ..training.checkpoints import CheckpointSaver
from ..errors import UserInputError
from ..atomic import check_output_file
from ..runfolder import RunDir
from ..model.finetune import FinetuneConfig
from ..logs import setup_logging
from . import train as train_command
from ..training import pipeline, prepare, resume

_logger = logging.getLogger(__name__)


def add_arguments(parser):
    """The training flags (the test uses them all) and where the curve goes."""
    train_command.add_arguments(parser)
    parser.add_argument("--find-lr-out", default="lr_finder.png", metavar="FILE.png",
                        help="the PNG of loss against lr; the curve's numbers go to FILE.json beside it")


def run(args):
    """Entry point of ``multitask-mx find-lr``."""
    setup_logging(quiet=args.quiet)
    if not args.find_lr_out.lower().endswith(".png"):
        raise UserInputError("--find-lr-out %s: the curve is a PNG image; give a name ending in .png."
                             % args.find_lr_out)
    read = (("--data-train", args.data_train), ("--data-val", args.data_val))
    for path in (args.find_lr_out, os.path.splitext(args.find_lr_out)[0] + ".json"):
        check_output_file(path, "--find-lr-out", read, RunDir(args.save_result, args.save_name))
    cfg = lr_finder.FinderConfig.from_args(args)
    FinetuneConfig.from_args(args)
    flag_rules.check_flag_effects(vars(args), flag_rules.parser_defaults(), "find-lr")
    kv = distributed.create_kvstore("local")
    pipeline.seed_everything(args.seed)
    ctxs = devices.parse_contexts(args.gpus, args.cpus)
    pipeline.check_devices_and_dtype(args, ctxs)
    inputs = prepare.prepare_inputs(args, kv, ctxs, with_val=False)  # as train: the same preparation, in order
    saver = CheckpointSaver(args.save_result, args.save_name, writer=False)  # reads a --resume run, writes nothing
    plan = resume.plan_net(args, inputs.tasks, inputs.image_shape, saver)
    _, (loader, _) = prepare.datasets_and_loaders(args, inputs, plan.normalization)
    # the suggestion is meant for --lr, and with a given --lr every layer learns at it: test that
    net = prepare.build_training_net(plan, args, inputs, ctxs, saver,
                                     FinetuneConfig.from_args(args, 1.0, "find-lr: its suggestion is for --lr"))
    loss_fn, tasks = inputs.loss_fn, inputs.tasks
    result = lr_finder.find_lr(net, loader, ctxs, loss_fn, tasks, cfg, loop=loop.LoopConfig(
        progress_bar=False, mixup_alpha=args.mixup, seed=args.seed), **lr_finder.optimizer_settings(args))
    os.makedirs(os.path.dirname(os.path.abspath(args.find_lr_out)), exist_ok=True)
    png, json_path = lr_finder.write_result(result, args.find_lr_out)
    print("suggested lr: %.4g (%s)\ncurve: %s, %s\ntrain with: --lr %.4g"
          % (result.suggestion, result.rule, png, json_path, result.suggestion))
    return 0

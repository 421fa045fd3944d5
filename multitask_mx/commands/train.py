"""``multitask-mx train``: lists + images -> a multi-task network, checkpointed each epoch.

A thin layer: flags are declared by the stage settings that hold them (training/config.py); the
work is ``multitask_mx.training.pipeline.train`` of the ``TrainConfig``. ``--config runs/x/config.json`` repeats an
earlier run's flags (``expand_config``), the flags typed beside it override them.
"""
import argparse
import logging
import os

from ..errors import UserInputError
from ..runfolder import read_json
from .keywords import flag_actions, namespace_from_values
from ..training import pipeline
from ..training.config import TrainConfig

# where a run writes: never taken from the repeated run (its folder holds that run)
NOT_REPEATED = ("config", "save_result", "resume", "overwrite", "tensorboard")
_logger = logging.getLogger(__name__)


def add_arguments(parser):
    """All training flags: each stage's settings declare their own (``TrainConfig.add_arguments``)."""
    TrainConfig.add_arguments(parser)


def parse_with_config(argv):
    """train's Namespace for ``argv`` when it names ``--config FILE``, else None (the usual parse applies).

    The run's saved flags come first, the typed ones win; flags in NOT_REPEATED are never
    repeated; without --save-result the run goes to a new folder beside the old one
    (``x-rerun``, ``x-rerun2``, ...). Which flags were typed comes from a parse with every
    default suppressed.
    """
    typed = _typed_flags(argv)
    if not typed.get("config"):
        return None
    args = with_saved_flags(_train_parser(), typed, typed_names=set(typed))
    args.run, args.command = run, "train"
    return args


def with_saved_flags(parser, given, typed_names=()):
    """The Namespace of ``given`` (dest -> value, with ``config``) on top of that run's saved flags.

    ``typed_names``: the names in ``given`` that argparse already converted (the CLI's); the API's
    keyword values are converted and checked here.
    """
    path = given["config"]
    known = flag_actions(parser)
    saved = {k: v for k, v in read_config_args(path).items() if k not in given and k not in NOT_REPEATED}
    dropped = sorted(set(saved) - set(known))
    if dropped:
        _logger.warning("--config %s: flag(s) this version does not have, not repeated: %s", path, ", ".join(dropped))
    values = {k: v for k, v in saved.items() if k in known}
    values.update(given)
    if "save_result" not in given:
        values["save_result"] = _new_run_folder(os.path.dirname(os.path.abspath(path)))
    return namespace_from_values(parser, values, typed=typed_names)


def read_config_args(path):
    """The "args" of a run's config.json (the flags it ran with), or UserInputError saying what is wrong."""
    config = read_json(path)
    if not isinstance(config, dict) or not isinstance(config.get("args"), dict):
        raise UserInputError("--config %s: no \"args\" in it; give the config.json that train wrote in a run "
                             "folder." % path)
    return config["args"]


class _SilentParser(argparse.ArgumentParser):
    """A parser whose errors raise instead of printing usage and exiting: the real parse reports them."""

    def error(self, message):
        raise ValueError(message)


def _train_parser(suppress=False):
    parser = (_SilentParser if suppress else argparse.ArgumentParser)(prog="multitask-mx train", add_help=False)
    add_arguments(parser)
    if suppress:  # only what argv names ends up in the namespace
        for action in parser._actions:
            action.default, action.required = argparse.SUPPRESS, False
    return parser


def _typed_flags(argv):
    try:
        return vars(_train_parser(suppress=True).parse_args(list(argv)))
    except ValueError:  # a bad or unknown flag (or --help): the real parse reports it
        return {}


def _new_run_folder(old):
    """The first of ``old-rerun``, ``old-rerun2``, ... that does not exist yet."""
    n, candidate = 1, old.rstrip(os.sep) + "-rerun"
    while os.path.exists(candidate):
        n += 1
        candidate = "%s-rerun%d" % (old.rstrip(os.sep), n)
    _logger.info("--config without --save-result: this run goes to %s", candidate)
    return candidate


def run(args):
    """Entry point of ``multitask-mx train``: the flags become a TrainConfig, then ``pipeline.train``."""
    return pipeline.train(TrainConfig.from_args(args))

"""The ``multitask-mx`` command line: subcommands, error reporting, thread set-up."""
import argparse
import importlib
import logging
import sys

from . import __version__, _runtime
from .errors import UserInputError
from .mxerrors import device_error_message, is_device_error

# subcommand -> module under multitask_mx.commands
COMMANDS = {
    "train": "train",
    "find-lr": "find_lr",
    "doctor": "doctor",
    "make-list": "make_list",
    "evaluate": "evaluate",
    "predict": "predict",
    "export": "export",
    "launch": "launch",
    "serve": "serve",
}


def _peek_cpu_contexts(argv):
    # Threads must be set before mxnet loads, i.e. before the parser (whose
    # modules import mxnet) exists, so --cpus is read here by hand.
    for i, arg in enumerate(argv):
        if arg == "--cpus" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--cpus="):
            value = arg.split("=", 1)[1]
        else:
            continue
        return int(value) if value.isdigit() else 1
    return 1


def build_parser():
    """The argument parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="multitask-mx", description="Multi-task image classification "
                                     "with MXNet Gluon: train, evaluate, predict, export.")
    parser.add_argument("--version", action="version", version="multitask-mx " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module("multitask_mx.commands." + module_name)
        command = sub.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv=None):
    """Run a subcommand; user errors print one message and exit 2, no traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _runtime.configure_threads(_peek_cpu_contexts(argv), passive_wait=bool(argv) and argv[0] == "serve")
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except UserInputError as exc:
        logging.getLogger("multitask_mx").error("%s", exc)
        print("error: %s" % exc, file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 3
    except Exception as exc:  # noqa: BLE001  (only MXNet's device errors are handled; the rest re-raised)
        # A GPU running out of memory (or similar) mid-run: say what and what to do, not a traceback.
        # mxnet is not imported here: it must load after configure_threads.
        if type(exc).__name__ != "MXNetError" or not is_device_error(exc):
            raise
        print("error: %s\nThe checkpoints of finished epochs are kept." % device_error_message(exc, args.command),
              file=sys.stderr)
        return 4
    except KeyboardInterrupt:
        print("interrupted: the checkpoints of finished epochs are kept.", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``multitask-mx`` command line: subcommands, error reporting, thread set-up."""
import argparse
import importlib
import logging
import os
import signal
import sys

from . import __version__, _runtime
from .errors import UserInputError
from .mxerrors import device_error_message, is_device_error

# subcommand -> (module under multitask_mx.commands, one-line description). Static, so that
# `multitask-mx --help` imports no command module (several load mxnet, serve loads flask).
COMMANDS = {
    "train": ("train", "train a multi-task classifier from .lst files and raw images"),
    "find-lr": ("find_lr", "find a learning rate: the lr range test on your data and network "
                           "(writes a PNG, prints the lr)"),
    "doctor": ("doctor", "print versions, devices, thread settings, bf16/VNNI/AMX support and 10-second "
                         "training throughputs (fp32, and bf16 where the CPU has it)"),
    "make-list": ("make_list", "make .lst files (train/val/test, stratified) from a folder of class folders, "
                               "like im2rec.py --list"),
    "evaluate": ("evaluate", "evaluate a trained model on an .lst file (per-task accuracy, top-k, "
                             "per-class report, confusion)"),
    "predict": ("predict", "predict the classes of every task for images, folders of images or an .lst file"),
    "export": ("export", "export a trained model for deployment: MXNet checkpoint with probabilities, "
                         "preprocessing JSON, ONNX"),
    "launch": ("launch", "run `train` on several workers: starts MXNet's scheduler, servers and workers "
                         "(dist kvstores)"),
    "serve": ("serve", "serve a trained model over HTTP: POST /predict, GET /health and an upload page at /"),
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


TERMINATED = "terminated (SIGTERM): the checkpoints of finished epochs are kept; continue with --resume."


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, systemd, batch schedulers), raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _stop_on_sigterm():
    # Raising in the main process unwinds like Ctrl-C: atomic writes remove their
    # temporary files and the DataLoader's worker pool is terminated at exit. Forked
    # children (loader workers) must simply die, as by default: a Python handler runs
    # only in the main thread, and a worker's main thread waits in the pool's queue lock
    # while MXNet's engine threads (re-created after the fork) take the signal, so with
    # the inherited handler pool.terminate() sent SIGTERM and then waited forever for
    # the worker (seen as a finished run that never exited). Hence SIG_DFL at the fork.
    main_pid = os.getpid()
    os.register_at_fork(after_in_child=_default_sigterm)

    def handler(signum, frame):
        if os.getpid() != main_pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        _arm_exit_watchdog()
        raise Terminated()
    signal.signal(signal.SIGTERM, handler)


def _default_sigterm():
    """In a forked child: SIGTERM ends the process whichever of its threads receives it."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread of the main interpreter (cannot happen right after fork)
        pass


_REPORTED = []  # the stop message, once printed


def _arm_exit_watchdog(seconds=20.0):
    """Exit with 143 if unwinding after SIGTERM gets stuck (seen under load: a loader pool that never joins).

    The exception raised in the main thread can land inside a lock or a pool's join;
    every file a later run reads is written atomically, so ending the process is safe.
    """
    import threading

    def stop():
        if not _REPORTED:
            _report(TERMINATED, 143, "stopped")
        sys.stderr.flush()
        os._exit(143)
    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()


def chosen_command(argv):
    """The subcommand named in ``argv`` (its first word that is not an option), or None."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(commands=None):
    """The argument parser with one sub-parser per command.

    Only the sub-parsers named in ``commands`` (default: all) get their flags, which
    imports their modules; the others are listed with their description alone.
    """
    parser = argparse.ArgumentParser(prog="multitask-mx", description="Multi-task image classification "
                                     "with MXNet Gluon: train, evaluate, predict, export.")
    parser.add_argument("--version", action="version", version="multitask-mx " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, description) in COMMANDS.items():
        command = sub.add_parser(name, help=description, description=description,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if commands is None or name in commands:
            module = importlib.import_module("multitask_mx.commands." + module_name)
            module.add_arguments(command)
            command.set_defaults(run=module.run)
    return parser


def main(argv=None):
    """Run a subcommand; user errors print one message and exit 2, no traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _runtime.configure_threads(_peek_cpu_contexts(argv), passive_wait=bool(argv) and argv[0] == "serve")
    try:
        args = None
        if argv[:1] == ["train"]:  # train --config: the run's saved flags, then the typed ones
            args = importlib.import_module("multitask_mx.commands.train").parse_with_config(argv[1:])
        args = args or build_parser([chosen_command(argv)]).parse_args(argv)
    except SystemExit as exc:  # argparse's usage error (2) or --help (0), as a status like the others
        return exc.code
    except UserInputError as exc:
        return _report(exc, 2)
    _stop_on_sigterm()
    logging.raiseExceptions = False  # a log line that cannot be written (full disk) must not print a traceback
    try:
        result = args.run(args)
    except UserInputError as exc:
        return _report(exc, 2)
    except FloatingPointError as exc:
        return _report(exc, 3)
    except Exception as exc:  # noqa: BLE001  (only MXNet's device errors are handled; the rest re-raised)
        # A GPU running out of memory (or similar) mid-run: say what and what to do, not a traceback.
        # mxnet is not imported here: it must load after configure_threads.
        if type(exc).__name__ != "MXNetError" or not is_device_error(exc):
            raise
        return _report("%s\nThe checkpoints of finished epochs are kept." % device_error_message(exc, args.command), 4)
    except Terminated:
        return _report(TERMINATED, 143, "stopped")
    except KeyboardInterrupt:
        return _report("interrupted: the checkpoints of finished epochs are kept; continue with --resume.",
                       130, "stopped")
    return result if isinstance(result, int) else 0


def run_and_exit(argv=None):
    """``multitask-mx`` and ``python -m multitask_mx``: ``main``, then exit without MXNet's teardown.

    Once a command has returned, every file it wrote is closed and fsynced (atomic.py), so the
    interpreter's finalisation only frees memory; MXNet's part of it (engine, memory pools, oneDNN's
    primitive cache) took 0.45-0.6 s after a ResNet-50 training run on 2 cores, in every command.
    Logs and standard streams are flushed first. A normal exit is kept where something may still
    be running or need an orderly goodbye: other non-daemon threads, or a distributed job
    (ps-lite's workers and servers tell the scheduler they leave).
    """
    status = main(argv)
    status = 0 if status is None else status
    if not isinstance(status, int) or _needs_orderly_exit():
        sys.exit(status)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to write to it
            pass
    os._exit(status)


def _needs_orderly_exit():
    import threading
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    return bool(others) or "DMLC_ROLE" in os.environ or "mxnet" not in sys.modules


def _report(message, status, kind="error"):
    """Print ``message`` once on stderr (the log file, if any, gets it too); return the exit status."""
    _REPORTED.append(status)
    text = "%s: %s" % (kind, message) if kind == "error" else str(message)
    logger = logging.getLogger("multitask_mx")
    for handler in logging.getLogger().handlers:  # the console handler would print it a second time
        if isinstance(handler, logging.FileHandler):
            handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, text, (), None))
    print(text, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

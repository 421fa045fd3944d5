"""The ``multitask-mx`` command line: subcommands, error reporting, thread set-up."""
import argparse
import importlib
import logging
import os
import signal
import sys

from . import __version__, _runtime
from .errors import UserInputError, shorten
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


# what each command leaves behind when stopped (a signal or Ctrl-C), after "terminated (SIGTERM): "
_TRAINING = "the checkpoints of finished epochs are kept; continue with --resume."
_NOTHING = "nothing was written (files are written whole or not at all)."
LEAVES = {"train": _TRAINING, "find-lr": "no learning rate was chosen; nothing was written.",
          "predict": "no partial output was written (--json/--csv files are written whole or not at all).",
          "evaluate": "no partial report was written (--json/--confusion-png are written whole or not at all).",
          "export": "no partial export was written (every file is written whole or not at all).",
          "serve": "the server stopped; nothing was written.", "make-list": _NOTHING, "doctor": _NOTHING,
          "launch": "the workers were stopped; " + _TRAINING}
# signal -> (how it is named, exit status 128 + its number as a shell reports it)
STOP_SIGNALS = {signal.SIGTERM: ("terminated (SIGTERM)", 143), signal.SIGHUP: ("hangup (SIGHUP)", 129)}
TERMINATED = "terminated (SIGTERM): " + _TRAINING  # the training message (kept for callers of this name)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (kill, systemd, schedulers, a closed terminal), raised in the main thread like Ctrl-C."""

    def __init__(self, signum=signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


_RECEIVED = []  # stop signals the main process received: one whose exception was swallowed still counts


def _stop_on_sigterm():
    # Raising in the main process unwinds like Ctrl-C: atomic writes remove their
    # temporary files and the DataLoader's worker pool is terminated at exit. Forked
    # children (loader workers) must simply die, as by default: a Python handler runs
    # only in the main thread, and a worker's main thread waits in the pool's queue lock
    # while MXNet's engine threads (re-created after the fork) take the signal, so with
    # the inherited handler pool.terminate() sent SIGTERM and then waited forever for
    # the worker (seen as a finished run that never exited). Hence SIG_DFL at the fork.
    # The exception can also land where Python swallows it (a __del__, such as the
    # DataLoader's at the end of a run: "Exception ignored", exit 0, workers left):
    # _RECEIVED remembers the signal, and main() reports it and ends the children.
    main_pid = os.getpid()
    _load_prctl()
    os.register_at_fork(after_in_child=_default_sigterm)
    sys.unraisablehook = _quiet_stop_hook(sys.unraisablehook)

    def handler(signum, frame):
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _RECEIVED.append(signum)
        _arm_exit_watchdog(signum)
        raise Terminated(signum)
    for signum in _handled_signals():
        signal.signal(signum, handler)


def _handled_signals():
    """The stop signals this process handles. A node of a ps-lite job (DMLC_ROLE) keeps SIGHUP's default, death:
    `launch` ends remote nodes by hanging up their ssh session, and a node blocked in ps-lite never reaches a
    Python handler (seen as a server left running on a host after a failed job)."""
    return [s for s in STOP_SIGNALS if not (s == signal.SIGHUP and "DMLC_ROLE" in os.environ)]


def _quiet_stop_hook(previous):
    """An unraisable-exception hook that stays silent about our stop exception (it is reported once, by main)."""
    def hook(unraisable):
        if not isinstance(unraisable.exc_value, Terminated):
            previous(unraisable)
    return hook


def _record_stop_signals():
    """From here on a stop signal is only recorded: the command's work is done, main reports it."""
    for signum in _handled_signals():
        signal.signal(signum, lambda number, frame: _RECEIVED.append(number))


def _default_sigterm():
    """In a forked child: SIGTERM ends the process whichever of its threads receives it; so does the parent's end.

    A loader pool replaces a worker that was ended while the pool itself still runs, so
    ending the children at a stop can race with their replacements: on Linux each forked
    child asks the kernel for SIGKILL when its parent ends (prctl PR_SET_PDEATHSIG),
    so no worker outlives the command however it ends (a stop, the watchdog, a crash).
    """
    try:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
    except ValueError:  # not the main thread of the main interpreter (cannot happen right after fork)
        pass
    if _PRCTL:
        _PRCTL[0](1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != _PRCTL[1]:  # the parent ended before the request was made
            os._exit(1)


_PRCTL = []  # [libc's prctl, the main process id] on Linux, loaded before any fork


def _load_prctl():
    if sys.platform.startswith("linux") and not _PRCTL:
        import ctypes
        try:
            _PRCTL.extend([ctypes.CDLL(None, use_errno=True).prctl, os.getpid()])
        except (OSError, AttributeError):  # no prctl: the children are still ended at a stop
            pass


_REPORTED = []  # the stop message, once printed
_STOPPED = []  # set once stopped by a signal: run_and_exit then skips Python's finalisation (pools' finalizers)


def _stop_message(command, signum):
    name, status = STOP_SIGNALS.get(signum, STOP_SIGNALS[signal.SIGTERM])
    return "%s: %s" % (name, LEAVES.get(command, _NOTHING)), status


def _stopped(command, signum):
    """Report a stop signal once, end the child processes (loader workers) left; the exit status."""
    message, status = _stop_message(command, signum)
    if not _REPORTED:
        _report(message, status, "stopped")
    _end_children()
    _STOPPED.append(status)
    return status


def _end_children(wait=2.0):
    """Terminate this process's multiprocessing children (loader and check workers) and reap them."""
    import multiprocessing
    import time
    children = multiprocessing.active_children()
    for child in children:
        try:
            child.terminate()
        except (OSError, ValueError, AttributeError):  # already gone, or closed
            pass
    deadline = time.monotonic() + wait
    for child in children:
        try:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join(1.0)
        except (OSError, ValueError, AssertionError, AttributeError):
            pass


def _arm_exit_watchdog(signum=signal.SIGTERM, seconds=20.0):
    """Exit with the signal's status if unwinding gets stuck (seen under load: a loader pool that never joins).

    The exception raised in the main thread can land inside a lock or a pool's join;
    every file a later run reads is written atomically, so ending the process is safe.
    """
    import threading
    command = chosen_command(sys.argv[1:]) or ""

    def stop():
        message, status = _stop_message(command, signum)
        try:
            if not _REPORTED:
                _report(message, status, "stopped")
            _end_children(wait=1.0)
            sys.stderr.flush()
        finally:  # whatever failed above (an interpreter shutting down), the process ends
            os._exit(status)
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
    del _RECEIVED[:], _STOPPED[:]  # (main may run several times in one process: tests, notebooks)
    _stop_on_sigterm()  # from the start: the imports alone take seconds
    try:
        args = None
        if argv[:1] == ["train"]:  # train --config: the run's saved flags, then the typed ones
            args = importlib.import_module("multitask_mx.commands.train").parse_with_config(argv[1:])
        args = args or build_parser([chosen_command(argv)]).parse_args(argv)
    except SystemExit as exc:  # argparse's usage error (2) or --help (0), as a status like the others
        return exc.code
    except UserInputError as exc:
        return _report(exc, 2)
    except Terminated as exc:
        return _stopped(chosen_command(argv), exc.signum)
    logging.raiseExceptions = False  # a log line that cannot be written (full disk) must not print a traceback
    try:
        try:
            result = args.run(args)
        finally:
            _record_stop_signals()
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
    except Terminated as exc:
        return _stopped(args.command, exc.signum)
    except KeyboardInterrupt:
        _end_children()
        _STOPPED.append(130)
        return _report("interrupted: %s" % LEAVES.get(args.command, _NOTHING), 130, "stopped")
    if _RECEIVED:  # a stop signal whose exception Python swallowed (in a __del__) or that came at the end
        return _stopped(args.command, _RECEIVED[0])
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
    if _RECEIVED and not _REPORTED:  # a stop signal after main's last look
        status = _stopped(chosen_command(sys.argv[1:] if argv is None else argv), _RECEIVED[0])
    # After a stop signal the finalisers must not run: a pool whose workers were ended waits
    # forever in its finalizer for the queue lock a dead worker held.
    if not isinstance(status, int) or (_needs_orderly_exit() and not _STOPPED):
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
    # a safety net for values echoed whole (a 200,000-character path): no line fills the screen
    text = "\n".join(shorten(line, 2000) for line in text.split("\n"))
    logger = logging.getLogger("multitask_mx")
    for handler in logging.getLogger().handlers:  # the console handler would print it a second time
        if isinstance(handler, logging.FileHandler):
            handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, text, (), None))
    try:
        print(text, file=sys.stderr)
    except (OSError, ValueError):  # the terminal is gone (SIGHUP): the log file has it
        pass
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Logging set-up for the commands: console plus an optional log file."""
import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname).1s %(message)s"
# ``extra=FILE_ONLY`` on a record: the log file gets it, the console does not (e.g. train's ~90 flags as JSON,
# which config.json holds too; the console shows the few that matter)
FILE_ONLY = {"file_only": True}


class _ConsoleFilter(logging.Filter):
    """Leaves out the records logged with ``extra=FILE_ONLY``."""

    def filter(self, record):
        return not getattr(record, "file_only", False)


def setup_logging(log_file=None, quiet=False, rank_label=""):
    """Send our loggers' records to stderr (and to ``log_file``); idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_multitask_mx", False):
            root.removeHandler(handler)
            handler.close()
    fmt = logging.Formatter(("%s " % rank_label if rank_label else "") + FORMAT, "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.addFilter(_ConsoleFilter())
    handlers = [console]
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
        handlers[-1].setFormatter(fmt)
    for handler in handlers:
        handler._multitask_mx = True
        root.addHandler(handler)
    root.setLevel(logging.INFO)

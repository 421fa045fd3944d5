"""What ``train`` tells a person at its start and at its end, on the console.

At the start: the machine (cores, vector extensions, load: why a run is fast or slow) and the
handful of flags that decide the run; every flag goes to train.log (and config.json) only.
At the end: the best epoch and its validation figures per task, where the files are, and the
commands that use the model next, with this run's real paths.
"""
import json
import logging
import shlex

from .. import _runtime
from ..errors import shorten
from ..logs import FILE_ONLY

_logger = logging.getLogger(__name__)

# The flags shown on the console at the start, in this order (the rest: train.log and config.json).
CONSOLE_FLAGS = ("network", "model", "pretrained", "image_shape", "data_train", "data_val", "num_classes",
                 "task_names", "derived_task", "no_derived_task", "batch_size", "lr", "augment", "num_epoch",
                 "gpus", "save_result", "resume")
# A validation figure per task kind, in the order they are shown where present.
FIGURES = (("acc", "acc %.3f"), ("topk", "top-k %.3f"), ("mae", "MAE %.4g"), ("rmse", "RMSE %.4g"),
           ("map", "mAP %.3f"), ("f1", "F1 %.3f"), ("loss", "loss %.4f"))


def console_flags(flags):
    """'network=... data_train=...' of the flags in CONSOLE_FLAGS that are set (None: chosen later, shown so)."""
    parts = []
    for key in CONSOLE_FLAGS:
        value = flags.get(key)
        if value is False or (value is None and key not in ("batch_size", "lr")) or value == []:
            continue
        if value is True:
            parts.append("--%s" % key.replace("_", "-"))
            continue
        shown = "(chosen below)" if value is None else ",".join(map(str, value)) if isinstance(value, list) \
            else value
        parts.append("--%s %s" % (key.replace("_", "-"), shown))
    return " ".join(parts)


def log_start(flags):
    """Log the machine and the run's main flags on the console, and every flag (JSON) to train.log only."""
    _logger.info("%s", _runtime.machine_summary())
    shown = {k: shorten(v) if isinstance(v, str) else v for k, v in flags.items()}  # config.json has them whole
    _logger.info("multitask-mx train %s", json.dumps(shown), extra=FILE_ONLY)
    _logger.info("train: %s (every flag: train.log, config.json)", console_flags(flags))


def _figures(values):
    return ", ".join(fmt % values[key] for key, fmt in FIGURES
                     if isinstance(values.get(key), (int, float)) and values.get(key) == values.get(key))


def _command(*words):
    return " ".join(shlex.quote(str(w)) for w in words)


def summary_lines(history, best, save_dir, save_name, flags):
    """The end-of-run summary as lines: best epoch and its figures, the files, the next commands.

    ``history``: the run's epoch records; ``best``: best.json's content (or None); ``flags``: train's
    flags as a dict (``data_val``, ``image_val``, ``data_train``, ``image_train``).
    """
    if not history:
        return ["no epoch finished: nothing to summarise (train.log in %s)" % save_dir]
    by_epoch = {r["epoch"]: r for r in history}
    epoch = (best or {}).get("epoch")
    record = by_epoch.get(epoch, history[-1])
    weights = record.get("ema", {}) if (best or {}).get("weights") == "ema" else record
    split = "val" if weights.get("val") else "train"
    lines = ["finished %d epoch(s); best epoch %s by %s%s" % (
        len(history), record["epoch"], (best or {}).get("metric", "the last epoch"),
        " (EMA weights)" if weights is not record else "")]
    for task, values in (weights.get(split) or {}).items():
        lines.append("  %s %s: %s" % (split, task, _figures(values) or "no labelled image"))
    lines.append("files in %s: %s-best.params (the weights used by default), %s-NNNN.params per epoch, "
                 "history.json, curves.png, train.log, config.json" % (save_dir, save_name, save_name))
    data, root = flags.get("data_val") or flags.get("data_train"), flags.get("image_val") or flags.get("image_train")
    evaluate = ["multitask-mx", "evaluate", "--save-result", save_dir, "--data", data or "TEST.lst"]
    lines += ["next:",
              "  " + _command(*(evaluate + (["--image-root", root] if root else []))) +
              ("   # a held-out list is better than the validation one" if data else ""),
              "  " + _command("multitask-mx", "predict", "--save-result", save_dir, root or "PHOTO.jpg") +
              "   # or any image files or folders",
              "  " + _command("multitask-mx", "serve", "--save-result", save_dir) + "   # http://127.0.0.1:8080/"]
    return lines


def log_summary(history, saver, flags):
    """Log ``summary_lines`` for a finished run (rank 0 of a distributed job: the one that writes files).

    Returns ``history``, so that it can end ``pipeline.train``.
    """
    if saver.writer:
        for line in summary_lines(history, saver.read_best(), saver.save_dir, saver.save_name, flags):
            _logger.info("%s", line)
    return history

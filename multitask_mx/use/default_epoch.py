"""Which epoch a command loads when ``--epoch`` is not given: one default for the CLI and the Python API.

``predict``, ``evaluate``, ``export``, ``serve`` and ``multitask_mx.load`` all load the best epoch where
the run recorded one (``best.json``), else the newest; before, the commands took the newest and the API
the best, so one image scored 0.976 in one and 0.963 in the other (issue 25).
"""
import os

from ..runfolder import RunDir

BEST = "best"
DEFAULT_EPOCH = "default"  # --epoch not given: best where one is recorded, else the newest (resolve_default_epoch)


def resolve_default_epoch(save_dir, save_name, epoch, weights="raw"):
    """(epoch, why) where ``epoch`` may be DEFAULT_EPOCH: the best epoch where a best is recorded, else the newest.

    One default for ``predict``, ``evaluate``, ``export``, ``serve`` and ``multitask_mx.load``; ``why`` goes
    into the log line that names the file loaded.
    """
    if epoch != DEFAULT_EPOCH:
        return epoch, "--epoch %s" % ("latest" if epoch is None else epoch)
    saver = RunDir(save_dir, save_name)
    best = saver.read_best() or {}
    if os.path.isfile(saver.best_params_file()) and weights in ("raw", best.get("weights", "raw")):
        why = "the default: the best epoch, %s by %s; --epoch latest for the newest" % (
            best.get("epoch", "?"), best.get("metric", "?"))
        number = best.get("epoch")
        # raw best weights are that epoch's own file: load it by number, so the output names the epoch
        if best.get("weights", "raw") == "raw" and isinstance(number, int) and number in saver.saved_epochs():
            return number, why
        return BEST, why
    return None, "the default: the newest epoch, as %s records no best%s" % (
        save_dir, " with %s weights" % weights if weights != "raw" else "")

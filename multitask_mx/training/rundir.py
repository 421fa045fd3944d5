"""Guards of a training run's folder: one writer at a time, one run per folder, damaged checkpoints, divergence.

``open_run_folder`` runs before the log file opens: the folder must be writable, it is
locked for this process (a second train into it is refused, naming the holder), and a
folder that holds a trained run is continued (``--resume``), never mixed with a new one
unless ``--overwrite`` deletes that run's own files first.
"""
import logging
import os
import sys

from ..model import network
from ..atomic import check_output_dir
from ..errors import UserInputError
from ..runfolder import RunDir

_logger = logging.getLogger(__name__)


def open_run_folder(save_result, save_name, writer, continuing, overwrite, new_run=True):
    """Check --save-result and lock it for this process; returns the RunLock (None where nothing is written).

    ``writer``: False on distributed ranks other than 0 (rank 0 alone writes, locks and deletes).
    ``continuing``: --resume (or --model SAVE_PREFIX --model-epoch N) continues the run there.
    ``new_run``: False for --plot-lr/--preview-augmentation, which write no checkpoint.
    """
    check_output_dir(save_result, "--save-result")
    if not writer:
        return None
    lock = RunDir(save_result, save_name).lock()
    try:
        if new_run and not continuing:
            _clear_for_new_run(save_result, save_name, overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def _clear_for_new_run(save_result, save_name, overwrite):
    run = RunDir(save_result, save_name)
    if not run.holds_trained_run():
        return  # nothing trained there yet: the new run's files replace these
    earlier = run.own_files()
    names = sorted(os.path.basename(p) for p in earlier)
    if not overwrite:
        raise UserInputError("--save-result %s already holds a training run (%s). Pass --resume to continue it, "
                             "another --save-result for a new run, or --overwrite to delete that run's files and "
                             "start again." % (save_result, _some(names)))
    for path in earlier:
        os.remove(path)
    print("--overwrite: deleted %d file(s) of the earlier run in %s" % (len(earlier), save_result), file=sys.stderr)


def _some(names, count=4):
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


def load_resume_params(net, run, params_file):
    """Load the checkpoint --resume continues from; a damaged file names the epochs that do load."""
    try:
        network.load_checkpoint_params(net, params_file)
    except UserInputError:
        if run.params_loadable(params_file):
            raise  # readable but not this network's: the message says what does not fit
        raise run.damaged_params_error(params_file, "--resume") from None


def diverged_message(exc, saver):
    """Divergence: drop the diverging epoch's mid-epoch checkpoint and say where --resume restarts.

    Weights are never saved unless finite, but a checkpoint written in the last
    batches before the loss check saw NaN can hold finite, exploded weights; the
    finished epochs passed the epoch-end loss check, so --resume restarts from them.
    """
    if saver.writer:
        saver.discard_progress()
    epochs = [r["epoch"] for r in saver.read_history()]
    where = ("from epoch %d, the last finished one" % epochs[-1]) if epochs else "from the beginning (no epoch finished)"
    return "%s The finished epochs' checkpoints are kept: --resume with a lower --lr restarts %s." % (exc, where)

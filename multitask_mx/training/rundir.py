"""Guards of a training run's save directory: one run per folder, damaged checkpoints, divergence.

``check_save_result`` runs before the log file opens: the folder must be writable,
and a folder that holds a trained run is continued (``--resume``), never mixed with
a new one unless ``--overwrite`` deletes that run's own files first.
"""
import logging
import os
import sys

from ..model import network as model
from ..atomic import check_output_dir
from .checkpoints import CheckpointSaver, params_loadable
from ..errors import UserInputError

_logger = logging.getLogger(__name__)

LOG_FILE = "train.log"
CURVES_FILE = "curves.png"
# Files a run writes before its first checkpoint: alone they are no trained run to protect.
_NOT_TRAINED_YET = {LOG_FILE, CURVES_FILE, "config.json", model.TRUNK_SYMBOL_FILE}


def check_save_result(save_result, save_name, writer, continuing, overwrite):
    """Refuse an unwritable --save-result, or one holding a run that this one would mix with.

    ``continuing``: --resume (or --model SAVE_PREFIX --model-epoch N) continues the run there.
    ``writer``: False on distributed ranks other than 0 (rank 0 alone deletes files for --overwrite) and
    for --plot-lr/--preview-augmentation, which write no checkpoint.
    """
    check_output_dir(save_result, "--save-result")
    if continuing or not writer:
        return
    saver = CheckpointSaver(save_result, save_name, writer=False)
    earlier = saver.run_files(extra_names=(LOG_FILE, CURVES_FILE, model.TRUNK_SYMBOL_FILE))
    names = sorted(os.path.basename(p) for p in earlier)
    if all(n in _NOT_TRAINED_YET or n.endswith("-symbol.json") for n in names):
        return  # nothing trained there yet: the new run's files replace these
    if not overwrite:
        raise UserInputError("--save-result %s already holds a training run (%s). Pass --resume to continue it, "
                             "another --save-result for a new run, or --overwrite to delete that run's files and "
                             "start again." % (save_result, _some(names)))
    for path in earlier:
        os.remove(path)
    print("--overwrite: deleted %d file(s) of the earlier run in %s" % (len(earlier), save_result), file=sys.stderr)


def _some(names, count=4):
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


def load_resume_params(net, saver, params_file):
    """Load the checkpoint --resume continues from; a damaged file names the epochs that do load."""
    try:
        model.load_checkpoint_params(net, params_file)
    except UserInputError:
        if params_loadable(params_file):
            raise  # readable but not this network's: the message says what does not fit
        raise saver.damaged_params_error(params_file, "--resume") from None


def diverged_message(exc, saver):
    """Divergence: drop the diverging epoch's mid-epoch checkpoint and say where --resume restarts.

    Weights are never saved unless finite, but a checkpoint written in the last
    batches before the loss check saw NaN can hold finite, exploded weights; the
    finished epochs passed the epoch-end loss check, so --resume restarts from them.
    """
    if saver.writer:
        saver.discard_progress()
    point = saver.resume_point()
    where = ("from epoch %d, the last finished one" % point[0]) if point else "from the beginning (no epoch finished)"
    return "%s The finished epochs' checkpoints are kept: --resume with a lower --lr restarts %s." % (exc, where)

"""A training run's folder (``--save-result``): the one owner of its file names, its lock and what it holds.

Every command opens a run through ``RunDir``: ``train`` writes it (through the
``CheckpointSaver`` subclass) while holding ``RunDir.lock``; ``evaluate``,
``predict``, ``export``, ``serve`` and ``multitask_mx.load`` read it. Nothing
else spells a file name of a run. The folder holds::

    config.json            what later commands need to rebuild the model (read by ``read_config``)
    history.json/.csv      one row per finished epoch
    NAME-symbol.json       the network's graph (NAME: --save-name)
    NAME-0003.params       epoch 3's weights        NAME-0003.states  its optimizer state
    NAME-0003-ema.params   its moving average (--ema)
    NAME-best.params       the best epoch's weights (best.json says which)
    NAME-last.params/.states, progress.json   the mid-epoch checkpoint (--checkpoint-every)
    train.log, curves.png, trunk-symbol.json, .lock

An epoch is complete when its params and states files are both there and not
empty; ``resume_point`` never skips an incomplete newest epoch silently.
"""
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import List, Optional

from .errors import UserInputError, shorten
from .runlock import LOCK_FILE, RunLock

_logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
HISTORY_CSV = "history.csv"
BEST_FILE = "best.json"
PROGRESS_FILE = "progress.json"  # a mid-epoch checkpoint's position
LOG_FILE = "train.log"
CURVES_FILE = "curves.png"
TRUNK_SYMBOL_FILE = "trunk-symbol.json"  # the trunk's graph when it comes from a classic checkpoint
DEFAULT_SAVE_NAME = "multitask"
# Files a run writes before its first checkpoint: alone they are no trained run to protect.
NOT_TRAINED_YET = {LOG_FILE, CURVES_FILE, CONFIG_FILE, TRUNK_SYMBOL_FILE, LOCK_FILE}

_SAVE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=@-]*$")


def check_save_name(name):
    """``--save-name``: a plain file-name stem (letters, digits, ``_.+=@-``), no folder, not empty.

    Used as the flag's type, so a name that climbs out of the run folder (``../x``), names a
    sub-folder (``a/b``) or is empty is refused before any work.
    """
    name = str(name)
    if not _SAVE_NAME.match(name) or name in (".", "..") or len(name) > 100:
        raise UserInputError("--save-name %r: give a plain file-name stem such as 'multitask' (letters, digits and "
                             "_ . + = @ -, not starting with '.' or '-', at most 100 characters): the checkpoints "
                             "are written as NAME-0001.params inside --save-result. To write elsewhere, change "
                             "--save-result." % shorten(name))
    return name


@dataclass(frozen=True)
class ResumePoint:
    """Where a continued run starts: after ``epoch`` (plus ``batches_done`` of the next, mid-epoch).

    ``states_file`` is None when the run continues with a fresh optimizer state (``--fresh-optimizer``).
    """

    epoch: int
    params_file: str
    states_file: Optional[str]
    batches_done: int = 0

    def describe(self):
        """A log line's worth: which epoch, which files."""
        text = "after epoch %d from %s" % (self.epoch, self.params_file)
        if self.batches_done:
            text += " (%d batches into epoch %d)" % (self.batches_done, self.epoch + 1)
        if self.states_file is None:
            text += ", with a fresh optimizer state (--fresh-optimizer)"
        return text


@dataclass(frozen=True)
class EpochFiles:
    """One saved epoch: its files and whether it is complete (params and states present, not empty)."""

    epoch: int
    params_file: str
    states_file: str
    ema_params_file: str

    @property
    def has_params(self):
        """The weights file is there and not empty."""
        return _non_empty(self.params_file)

    @property
    def has_states(self):
        """The optimizer-state file is there and not empty."""
        return _non_empty(self.states_file)

    @property
    def complete(self):
        """Both files are there: --resume can continue from this epoch."""
        return self.has_params and self.has_states


def _non_empty(path):
    try:
        return os.path.isfile(path) and os.path.getsize(path) > 0
    except OSError:
        return False


class RunDir:
    """The files of one run folder, found by name; reading only (``CheckpointSaver`` writes).

    ``save_name`` None: the one config.json records, else ``multitask``.
    """

    def __init__(self, folder, save_name=None):
        self.save_dir = folder
        if save_name is None:
            save_name = self._recorded_save_name() or DEFAULT_SAVE_NAME
        self.save_name = check_save_name(save_name)

    def _recorded_save_name(self):
        try:
            with open(self.path(CONFIG_FILE), encoding="utf-8") as f:
                name = json.load(f).get("save_name")
        except (OSError, ValueError, AttributeError):
            return None
        return name if isinstance(name, str) and _SAVE_NAME.match(name) else None

    # ---- names -------------------------------------------------------------------------------------
    def path(self, filename):
        """Path of a file in the run folder."""
        return os.path.join(self.save_dir, filename)

    @property
    def prefix(self):
        """Checkpoint prefix, as passed to mx.model.load_checkpoint."""
        return self.path(self.save_name)

    def symbol_file(self):
        """``{name}-symbol.json``."""
        return "%s-symbol.json" % self.prefix

    def params_file(self, epoch):
        """``{name}-{epoch:04d}.params``."""
        return "%s-%04d.params" % (self.prefix, epoch)

    def states_file(self, epoch):
        """``{name}-{epoch:04d}.states``: the optimizer state of every device."""
        return "%s-%04d.states" % (self.prefix, epoch)

    def ema_params_file(self, epoch):
        """``{name}-{epoch:04d}-ema.params`` (``--ema``): the averaged weights; epoch None: mid-epoch's."""
        return "%s-%s-ema.params" % (self.prefix, "last" if epoch is None else "%04d" % epoch)

    def best_params_file(self):
        """``{name}-best.params``: the weights of the best epoch so far."""
        return "%s-best.params" % self.prefix

    def last_params_file(self):
        """``{name}-last.params``: the mid-epoch checkpoint's weights."""
        return "%s-last.params" % self.prefix

    def last_states_file(self):
        """``{name}-last.states``: the mid-epoch checkpoint's optimizer state."""
        return "%s-last.states" % self.prefix

    # ---- reading -----------------------------------------------------------------------------------
    def has_config(self):
        """True once train has written config.json here."""
        return os.path.isfile(self.path(CONFIG_FILE))

    def read_config(self):
        """config.json, the one way it is read: a missing, damaged or foreign one is a UserInputError."""
        if not os.path.isdir(self.save_dir):
            raise UserInputError("--save-result %s is not a folder. Give the folder that `multitask-mx train "
                                 "--save-result` wrote." % self.save_dir)
        path = self.path(CONFIG_FILE)
        if not os.path.isfile(path):
            raise UserInputError("%s has no %s, so it is not a run folder written by `multitask-mx train` (or "
                                 "training stopped before it started). Give the folder that train's --save-result "
                                 "wrote." % (self.save_dir, CONFIG_FILE))
        config = read_json(path)
        missing = [k for k in ("image_shape", "normalization", "tasks") if not isinstance(config, dict)
                   or k not in config]
        if missing:
            raise UserInputError("%s lacks %s; it is not a config.json written by `multitask-mx train`. Restore it "
                                 "from a copy, or train again." % (path, ", ".join(missing)))
        return config

    def read_text(self, filename):
        """A text file of the run."""
        with open(self.path(filename), encoding="utf-8") as f:
            return f.read()

    def read_history(self):
        """history.json's rows (one per finished epoch), [] before the first."""
        path = self.path(HISTORY_FILE)
        return read_json(path) if os.path.exists(path) else []

    def read_best(self):
        """best.json, or None."""
        path = self.path(BEST_FILE)
        return read_json(path) if os.path.exists(path) else None

    def saved_epochs(self):
        """Epoch numbers that have a params file, ascending."""
        pattern = re.compile(re.escape(self.save_name) + r"-(\d{4,})\.params$")
        names = os.listdir(self.save_dir) if os.path.isdir(self.save_dir) else []
        return sorted(int(m.group(1)) for m in map(pattern.match, names) if m)

    def epochs(self) -> List[EpochFiles]:
        """Every saved epoch with its files, ascending."""
        return [EpochFiles(e, self.params_file(e), self.states_file(e), self.ema_params_file(e))
                for e in self.saved_epochs()]

    def resume_point(self, epoch=None, fresh_optimizer=False):
        """The ResumePoint of ``--resume`` (None: no epoch finished yet).

        The newest finished epoch (history.json), or a newer mid-epoch checkpoint. If that
        epoch's params or states file is missing or empty, a UserInputError names it and the two
        ways on: ``--resume-epoch N`` (an earlier complete epoch) or ``--fresh-optimizer`` (its
        weights, a new optimizer state). ``epoch``: resume from that finished epoch instead.
        """
        files = {e.epoch: e for e in self.epochs()}
        finished = sorted(r["epoch"] for r in self.read_history())
        complete = [e for e in finished if e in files and files[e].complete]
        if epoch is not None:
            if epoch not in complete:
                raise UserInputError("--resume-epoch %d: epoch %d of %s is not a complete checkpoint (params and "
                                     "states). Complete epochs: %s." % (epoch, epoch, self.save_dir,
                                                                        _listed(complete)))
            later = [e for e in finished if e > epoch]
            if later:
                _logger.warning("--resume-epoch %d: epochs %s are trained again and their files replaced",
                                epoch, _listed(later))
            return ResumePoint(epoch, files[epoch].params_file, files[epoch].states_file)
        if not finished:
            return self._mid_epoch_point(0)
        newest = finished[-1]
        point = self._mid_epoch_point(newest)
        if point is not None:
            return point
        saved = files.get(newest)
        if saved is not None and saved.complete:
            return ResumePoint(newest, saved.params_file, saved.states_file)
        if saved is not None and saved.has_params and fresh_optimizer:
            return ResumePoint(newest, saved.params_file, None)
        raise UserInputError(self._incomplete_message(newest, saved, complete))

    def _incomplete_message(self, newest, saved, complete):
        missing = self.params_file(newest) if saved is None or not saved.has_params else self.states_file(newest)
        ways = []
        if complete:
            ways.append("--resume-epoch %d to continue from epoch %d, the last complete one (epoch %d's files "
                        "are then replaced)" % (complete[-1], complete[-1], newest))
        if saved is not None and saved.has_params:
            ways.append("--fresh-optimizer to continue from epoch %d's weights with a new optimizer state "
                        "(momentum restarts)" % newest)
        if not ways:
            ways.append("--overwrite without --resume to train again from the beginning")
        return ("--resume: epoch %d finished (history.json) but %s is missing or empty, so the run cannot continue "
                "exactly where it stopped. Restore the file, or pass %s." % (newest, missing, ", or ".join(ways)))

    def _mid_epoch_point(self, epoch):
        progress = self.path(PROGRESS_FILE)
        if not os.path.exists(progress):
            return None
        position = read_json(progress)
        if not isinstance(position, dict) or position.get("epoch") != epoch + 1:
            return None
        if not (_non_empty(self.last_params_file()) and _non_empty(self.last_states_file())):
            _logger.warning("the mid-epoch checkpoint of epoch %d is incomplete (%s or %s missing): resuming from "
                            "the end of epoch %d instead", epoch + 1, self.last_params_file(),
                            self.last_states_file(), epoch)
            return None
        return ResumePoint(epoch, self.last_params_file(), self.last_states_file(), position["batches_done"])

    def own_files(self, extra_names=()):
        """Files of a training run already in the folder (ours only: never a user's other files).

        Checkpoints of this save name and of the one in config.json, states, the mid-epoch
        checkpoint, config, history, best, the log, curves, temporary files and ``extra_names``.
        """
        from .atomic import is_temp_name
        names = {self.save_name, self._recorded_save_name() or self.save_name}
        own = re.compile(r"^(%s)-(symbol\.json|\d{4,}(-ema)?\.(params|states)|best\.params|last\.(params|states)|"
                         r"last-ema\.params)$" % "|".join(re.escape(n) for n in names))
        fixed = {CONFIG_FILE, HISTORY_FILE, HISTORY_CSV, BEST_FILE, PROGRESS_FILE, LOG_FILE, CURVES_FILE,
                 TRUNK_SYMBOL_FILE} | set(extra_names)
        found = []
        for name in sorted(os.listdir(self.save_dir)) if os.path.isdir(self.save_dir) else []:
            if name in fixed or own.match(name) or is_temp_name(name):
                found.append(self.path(name))
        return [p for p in found if os.path.isfile(p)]

    def holds_trained_run(self):
        """True if the folder holds more than the files a run writes before its first checkpoint."""
        return any(os.path.basename(p) not in NOT_TRAINED_YET and not p.endswith("-symbol.json")
                   for p in self.own_files())

    @staticmethod
    def params_loadable(path):
        """True if ``path`` is a complete MXNet params file."""
        return params_loadable(path)

    def loadable_epochs(self):
        """Saved epochs whose params file MXNet can read (for messages about a damaged one)."""
        return [e for e in self.saved_epochs() if params_loadable(self.params_file(e))]

    def damaged_params_error(self, params_file, flag):
        """The UserInputError for a truncated or corrupt params file of this run, with the epochs that load."""
        good = self.loadable_epochs()
        hint = ("Epochs of this run that load: %s; pass --epoch N with one of them" % ", ".join(map(str, good))
                if good else "No epoch of this run loads; train again")
        if flag == "--resume" and good:
            hint += (" as --model %s --model-epoch N (without --resume), or delete the damaged file to resume from "
                     "epoch %d" % (self.prefix, good[-1]))
        return UserInputError("%s: %s is truncated or corrupt (MXNet cannot read it). %s."
                              % (flag, params_file, hint))

    # ---- the lock ----------------------------------------------------------------------------------
    def lock(self):
        """Hold the folder's exclusive lock for as long as the returned RunLock is open (a context manager).

        An OS file lock (flock): the kernel releases it when the process ends, however it ends,
        so a killed run never leaves the folder locked. A folder another process holds is
        refused at once, naming that process.
        """
        return RunLock(self.save_dir)


def _listed(epochs):
    return ", ".join(map(str, epochs)) or "none"


def read_json(path):
    """Load a JSON file of a run; a damaged one is a UserInputError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise UserInputError("%s is damaged (not valid JSON: %s). Restore it from a copy, or start a new "
                             "run in another --save-result." % (path, exc)) from None
    except OSError as exc:
        raise UserInputError("cannot read %s (%s)." % (path, exc.strerror or exc)) from None


def params_loadable(path):
    """True if ``path`` is a complete MXNet params file."""
    import mxnet as mx
    try:
        mx.nd.load(path)
        return True
    except (mx.base.MXNetError, OSError):
        return False

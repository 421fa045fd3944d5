"""The checkpoint saver: the only code that knows the save directory's file names.

Per epoch it writes ``{name}-symbol.json`` and ``{name}-{epoch:04d}.params`` in
MXNet's checkpoint format (``mx.model.load_checkpoint`` and
``gluon.SymbolBlock.imports`` read them), ``{name}-{epoch:04d}.states`` (optimizer
state), ``history.json``/``history.csv`` and, once, ``config.json``. Every file a
later run reads is written to a temporary name and renamed, so a kill during a
save never leaves a half-written file under the real name.
"""
import csv
import glob
import io
import json
import logging
import os
import re
import shutil
import threading

from ..atomic import (DiskFullError, atomic_path, atomic_prefix, atomic_write_bytes, atomic_write_json,
    is_temp_name, remove_stale_temps)
from ..errors import UserInputError
from .states import save_trainer_states
from ..flagtypes import non_negative_int

_logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
HISTORY_CSV = "history.csv"
BEST_FILE = "best.json"
PROGRESS_FILE = "progress.json"  # a mid-epoch checkpoint's position


def read_json(path):
    """Load a JSON file of a run; a damaged one is a UserInputError naming it."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise UserInputError("%s is damaged (not valid JSON: %s). Restore it from a copy, or start a new "
                                 "run in another --save-result." % (path, exc)) from None


def flatten_record(record, prefix=""):
    """{'val': {'label': {'acc': 1}}} -> {'val_label_acc': 1}, for the CSV history."""
    flat = {}
    for key, value in record.items():
        name = "%s_%s" % (prefix, key) if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten_record(value, name))
        elif not isinstance(value, (list, tuple)):
            flat[name] = value
    return flat


def history_csv_text(history):
    """The history as CSV text, one row per epoch."""
    rows = [flatten_record(r) for r in history]
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


class CheckpointSaver:
    """Writes and finds the files of one training run's save directory."""

    def __init__(self, save_dir, save_name, writer=True, keep_last=0):
        self.save_dir = save_dir
        self.save_name = save_name
        self.writer = writer  # False on distributed ranks other than 0
        self.keep_last = keep_last
        self.history = []
        if writer:
            os.makedirs(save_dir, exist_ok=True)
            remove_stale_temps(save_dir)  # left by runs killed during a save

    def path(self, filename):
        """Path of a file in the save directory."""
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

    def write_config(self, config):
        """Record what later commands need to rebuild the model (``config.json``)."""
        if self.writer:
            atomic_write_json(self.path(CONFIG_FILE), config)

    def read_config(self):
        """The run's config.json."""
        return read_json(self.path(CONFIG_FILE))

    def read_text(self, filename):
        """A text file of the run."""
        with open(self.path(filename), encoding="utf-8") as f:
            return f.read()

    def read_best(self):
        """best.json of an earlier run, or None."""
        path = self.path(BEST_FILE)
        return read_json(path) if os.path.exists(path) else None

    def write_text(self, filename, text):
        """Write a text file of the run (e.g. the trunk symbol), atomically."""
        if self.writer:
            atomic_write_bytes(self.path(filename), text.encode("utf-8"))

    def start_epoch_files(self, net, trainer, epoch):
        """Start writing the epoch's symbol, params and optimizer states in a background thread.

        For the time validation takes: neither changes the weights or the optimizer, and the
        writing is mostly serialisation outside the GIL (ResNet-50: 1.2 s of 1.6). Pass the
        returned handle to ``save_epoch``, which waits for it and handles its errors as its own.
        None (``save_epoch`` then writes them itself) for workers that write nothing, and for a network
        that has not run forward in this process, whose graph export cannot write before validation traces
        it (a run resumed after the last batch of an epoch).
        """
        from .. import mxprivate  # imports mxnet: only once a checkpoint is written
        if not (self.writer and mxprivate.has_traced_graph(net)):
            return None
        return _EpochFiles(self, net, trainer, epoch)

    def _write_epoch_files(self, net, trainer, epoch):
        self._export(net, self.params_file(epoch))
        if trainer is not None:
            save_trainer_states(trainer, self.states_file(epoch))

    def save_epoch(self, net, trainer, epoch, record, best=None, ema=None, started=None):
        """Write the epoch's symbol, params (and EMA params), optimizer states, history row (and best, keep-last).

        ``started``: the handle of ``start_epoch_files`` when the weights and states are being written already.
        """
        if not self.writer:  # other workers keep the history in memory only (the loss weighting reads it)
            self.history = self.history_with(record)
            return
        try:
            if started is not None:
                started.wait()
            else:
                self._write_epoch_files(net, trainer, epoch)
            if ema is not None:
                self._export_ema(net, ema, self.ema_params_file(epoch))
            self.append_history(record)
        except DiskFullError:
            for path in (self.params_file(epoch), self.ema_params_file(epoch), self.states_file(epoch)):
                if os.path.exists(path):  # half an epoch's files: resuming would skip to the older epoch anyway
                    os.remove(path)
            raise self._disk_full(net, "epoch %d was not saved" % epoch) from None
        if best is not None and best.update(record):
            self._save_best(epoch, best)
        self._clear_progress()
        self.prune(epoch)
        _logger.info("saved checkpoint %s", self.params_file(epoch))

    def save_progress(self, net, trainer, epoch, batches_done, ema=None):
        """Mid-epoch checkpoint (``--checkpoint-every``): weights, states (EMA weights) and the position."""
        if not self.writer:
            return
        try:
            self._export(net, "%s-last.params" % self.prefix)
            save_trainer_states(trainer, "%s-last.states" % self.prefix)
            position = {"epoch": epoch, "batches_done": batches_done}
            if ema is not None:
                self._export_ema(net, ema, self.ema_params_file(None))
                position["ema_updates"] = ema.num_updates
            atomic_write_json(self.path(PROGRESS_FILE), position)
        except DiskFullError:
            self._clear_progress()  # a mid-epoch checkpoint with mismatched parts must not be resumed
            raise self._disk_full(net, "the mid-epoch checkpoint of epoch %d was not saved" % epoch) from None

    def _disk_full(self, net, what):
        # Checkpoint size: the weights once in .params and about once more in .states (momentum).
        nbytes = sum(4 * p.data().size for p in net.collect_params().values())
        saved = self.saved_epochs()
        return DiskFullError(self.save_dir, " (needs about %.0f MB per checkpoint): %s; %s"
                             % (max(1, 2 * nbytes / 1e6), what,
                                "epoch %d is the last one saved (--resume continues from it)" % saved[-1]
                                if saved else "no epoch is saved"))

    def discard_progress(self):
        """Delete the mid-epoch checkpoint, so that --resume restarts from the last finished epoch."""
        self._clear_progress()

    def _clear_progress(self):
        for path in (self.path(PROGRESS_FILE), "%s-last.params" % self.prefix, "%s-last.states" % self.prefix,
                     self.ema_params_file(None)):
            if os.path.exists(path):
                os.remove(path)

    def best_params_file(self):
        """``{name}-best.params``: the weights of the best epoch so far."""
        return "%s-best.params" % self.prefix

    def ema_params_file(self, epoch):
        """``{name}-{epoch:04d}-ema.params`` (``--ema``): the averaged weights; epoch None: mid-epoch's."""
        return "%s-%s-ema.params" % (self.prefix, "last" if epoch is None else "%04d" % epoch)

    def _export_ema(self, net, ema, params_path):
        with ema.applied(net):  # the same symbol, the averaged weights
            self._export(net, params_path)

    def _save_best(self, epoch, best):
        source = self.ema_params_file(epoch) if best.weights == "ema" else self.params_file(epoch)
        self._link_atomic(source, self.best_params_file())
        atomic_write_json(self.path(BEST_FILE), best.to_dict())
        _logger.info("epoch %d is the best so far (%s weights): %s = %.5g -> %s", epoch, best.weights,
                     best.metric, best.value, self.best_params_file())

    def read_ema(self, epoch, batches_done=0):
        """({parameter name: NDArray}, updates, file) of the EMA saved at a resume point, or None."""
        if batches_done:
            path = self.ema_params_file(None)
            updates = read_json(self.path(PROGRESS_FILE)).get("ema_updates")
        else:
            path = self.ema_params_file(epoch)
            updates = next((r.get("ema", {}).get("updates") for r in self.history if r["epoch"] == epoch), None)
        if updates is None or not os.path.exists(path):
            return None
        import mxnet as mx
        arrays = {k.split(":", 1)[-1]: v for k, v in mx.nd.load(path).items()}
        return arrays, updates, path

    def _export(self, net, params_path):
        from ..model.precision import drop_output_casts  # imports mxnet: only once a checkpoint is written
        with atomic_prefix(self.prefix, {"-symbol.json": self.symbol_file(), "-0000.params": params_path}) as tmp:
            net.export(tmp, epoch=0)  # MultiTaskNet.export: the plain graph, without fused BatchNorm+ReLU
            drop_output_casts(tmp + "-symbol.json")

    @staticmethod
    def _link_atomic(source, target):
        with atomic_path(target) as tmp:
            try:
                os.link(source, tmp)  # no copy: the epoch file and best share the bytes
            except OSError:
                shutil.copyfile(source, tmp)

    def prune(self, epoch, keep_last=None):
        """Delete epoch files older than the newest ``keep_last`` (best.params stays)."""
        keep = self.keep_last if keep_last is None else keep_last
        if not keep or keep < 0:  # 0 keeps all; a negative count would delete the newest epochs too
            return
        for old in self.saved_epochs():
            if old <= epoch - keep:
                for path in (self.params_file(old), self.states_file(old), self.ema_params_file(old)):
                    if os.path.exists(path):
                        os.remove(path)

    def run_files(self, extra_names=()):
        """Files of a training run already in the save directory (ours only: never a user's other files).

        Checkpoints of this save name and of the one in config.json, states, the
        mid-epoch checkpoint, config, history, best, temporary files and ``extra_names``.
        """
        names = {self.save_name}
        if os.path.isfile(self.path(CONFIG_FILE)):
            try:
                names.add(str(read_json(self.path(CONFIG_FILE)).get("save_name") or self.save_name))
            except (ValueError, OSError, AttributeError):
                pass  # a damaged config.json is still ours
        own = re.compile(r"^(%s)-(symbol\.json|\d{4,}\.(params|states)|best\.params|last\.(params|states))$"
                         % "|".join(re.escape(n) for n in names))
        fixed = {CONFIG_FILE, HISTORY_FILE, HISTORY_CSV, BEST_FILE, PROGRESS_FILE} | set(extra_names)
        found = []
        for name in sorted(os.listdir(self.save_dir)) if os.path.isdir(self.save_dir) else []:
            if name in fixed or own.match(name) or is_temp_name(name):
                found.append(self.path(name))
        return [p for p in found if os.path.isfile(p)]

    def saved_epochs(self):
        """Epoch numbers that have a params file, ascending."""
        pattern = re.compile(re.escape(self.save_name) + r"-(\d{4,})\.params$")
        found = (pattern.match(os.path.basename(p)) for p in glob.glob("%s-*.params" % glob.escape(self.prefix)))
        return sorted(int(m.group(1)) for m in found if m)

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

    def history_with(self, record):
        """The history once ``record`` is saved: earlier epochs, then it (a resumed epoch replaces later rows)."""
        return [r for r in self.history if r["epoch"] < record["epoch"]] + [record]

    def append_history(self, record):
        """Add one epoch's record to ``history.json`` and ``history.csv``."""
        self.history = self.history_with(record)
        atomic_write_json(self.path(HISTORY_FILE), self.history)
        atomic_write_bytes(self.path(HISTORY_CSV), history_csv_text(self.history).encode("utf-8"))

    def record_stop(self, record, info):
        """Note in the epoch's history row that the run stopped early there (``stopped_early``)."""
        record["stopped_early"] = info
        if self.writer:
            self.append_history(record)

    def resume_point(self):
        """(epoch, params file, states file, batches done) to resume from, or None.

        The newest finished epoch, or a newer mid-epoch checkpoint if one exists.
        """
        history = read_json(self.path(HISTORY_FILE)) if os.path.exists(self.path(HISTORY_FILE)) else []
        finished = [r["epoch"] for r in history if os.path.exists(self.params_file(r["epoch"]))
                    and os.path.exists(self.states_file(r["epoch"]))]
        epoch = max(finished) if finished else 0
        self.history = [r for r in history if r["epoch"] <= epoch]
        progress = self.path(PROGRESS_FILE)
        if os.path.exists(progress):
            pos = read_json(progress)
            if pos["epoch"] == epoch + 1 and os.path.exists("%s-last.states" % self.prefix):
                return (epoch, "%s-last.params" % self.prefix, "%s-last.states" % self.prefix,
                        pos["batches_done"])
        if not epoch:
            return None
        return epoch, self.params_file(epoch), self.states_file(epoch), 0


class _EpochFiles:
    """An epoch's weights and optimizer states being written by a thread (CheckpointSaver.start_epoch_files)."""

    def __init__(self, saver, net, trainer, epoch):
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(saver, net, trainer, epoch),
                                        name="checkpoint-epoch-%d" % epoch)
        self._thread.start()

    def _run(self, saver, net, trainer, epoch):
        try:
            saver._write_epoch_files(net, trainer, epoch)
        except BaseException as exc:  # raised again in the training thread by wait()
            self._error = exc

    def wait(self):
        """Block until the files are written; raise what the writing raised (DiskFullError, ...)."""
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def params_loadable(path):
    """True if ``path`` is a complete MXNet params file."""
    import mxnet as mx
    try:
        mx.nd.load(path)
        return True
    except (mx.base.MXNetError, OSError):
        return False


def add_arguments(parser):
    """Checkpoint flags."""
    group = parser.add_argument_group("checkpoint")
    group.add_argument("--save-result", required=True, help="folder for checkpoints, logs and history")
    group.add_argument("--save-name", default="multitask", help="checkpoint prefix inside --save-result")
    group.add_argument("--best-metric", default="val-loss",
                       help="keeps {save-name}-best.params for the best epoch: val-loss, val-acc:<task>, "
                            "val-topk:<task> (with --top-k), val-acc-mean")
    group.add_argument("--overwrite", action="store_true",
                       help="start a new run in a --save-result that holds an earlier run: its checkpoints, "
                            "states, config, history, best and log are deleted first (other files stay)")
    group.add_argument("--resume", action="store_true",
                       help="continue the run in --save-result: weights, optimizer, epoch, schedule, best, history")
    group.add_argument("--checkpoint-every", type=non_negative_int, default=0, metavar="N",
                       help="also checkpoint every N batches, so a kill loses at most N batches")
    group.add_argument("--keep-last", type=non_negative_int, default=0, metavar="K",
                       help="keep only the newest K epoch checkpoints (0: keep all; best is always kept)")

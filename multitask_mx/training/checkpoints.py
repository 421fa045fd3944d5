"""The checkpoint saver: writes a run folder whose names and reading live in ``multitask_mx.runfolder``.

Per epoch it writes ``{name}-symbol.json`` and ``{name}-{epoch:04d}.params`` in
MXNet's checkpoint format (``mx.model.load_checkpoint`` and
``gluon.SymbolBlock.imports`` read them), ``{name}-{epoch:04d}.states`` (optimizer
state), ``history.json``/``history.csv`` and, once, ``config.json``. Every file a
later run reads is written to a temporary name and renamed, so a kill during a
save never leaves a half-written file under the real name.
"""
import csv
import io
import logging
import os
import shutil
import threading

from ..atomic import (DiskFullError, atomic_path, atomic_prefix, atomic_write_bytes, atomic_write_json,
                      remove_stale_temps)
from ..runfolder import (BEST_FILE, CONFIG_FILE, HISTORY_CSV, HISTORY_FILE, PROGRESS_FILE, RunDir,  # noqa: F401
                         DEFAULT_SAVE_NAME, check_save_name, params_loadable, read_json)
from .states import save_trainer_states
from ..flagtypes import non_negative_int, positive_int

_logger = logging.getLogger(__name__)


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


class CheckpointSaver(RunDir):
    """Writes the files of one training run's folder (names, reading and the resume point: ``RunDir``)."""

    def __init__(self, save_dir, save_name=None, writer=True, keep_last=0):
        super().__init__(save_dir, save_name)
        self.writer = writer  # False on distributed ranks other than 0
        self.keep_last = keep_last
        self.history = []
        if writer:
            os.makedirs(save_dir, exist_ok=True)
            remove_stale_temps(save_dir)  # left by runs killed during a save

    def write_config(self, config):
        """Record what later commands need to rebuild the model (``config.json``)."""
        if self.writer:
            atomic_write_json(self.path(CONFIG_FILE), config)

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
            self._export(net, self.last_params_file())
            save_trainer_states(trainer, self.last_states_file())
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
        for path in (self.path(PROGRESS_FILE), self.last_params_file(), self.last_states_file(),
                     self.ema_params_file(None)):
            if os.path.exists(path):
                os.remove(path)

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

    def resume_from(self, point):
        """Keep the history up to ``point`` (a ResumePoint, or None: a new run) for the epochs to come."""
        epoch = point.epoch if point is not None else 0
        self.history = [r for r in self.read_history() if r["epoch"] <= epoch]


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


def add_arguments(parser):
    """Checkpoint flags."""
    group = parser.add_argument_group("checkpoint")
    group.add_argument("--save-result", required=True, help="folder for checkpoints, logs and history")
    group.add_argument("--save-name", default=DEFAULT_SAVE_NAME, type=check_save_name,
                       help="checkpoint prefix inside --save-result: a plain file-name stem (NAME-0001.params)")
    group.add_argument("--best-metric", default="val-loss",
                       help="keeps {save-name}-best.params for the best epoch: val-loss, val-acc:<task>, "
                            "val-topk:<task> (with --top-k), val-acc-mean")
    group.add_argument("--overwrite", action="store_true",
                       help="start a new run in a --save-result that holds an earlier run: its checkpoints, "
                            "states, config, history, best and log are deleted first (other files stay)")
    group.add_argument("--resume", action="store_true",
                       help="continue the run in --save-result: weights, optimizer, epoch, schedule, best, history")
    group.add_argument("--resume-epoch", type=positive_int, default=None, metavar="N",
                       help="with --resume: continue after finished epoch N instead of the newest (the later "
                            "epochs are trained again and their files replaced)")
    group.add_argument("--fresh-optimizer", action="store_true",
                       help="with --resume: continue from the newest epoch's weights even though its optimizer "
                            "state (.states) is missing or damaged; the optimizer starts afresh (momentum restarts)")
    group.add_argument("--checkpoint-every", type=non_negative_int, default=0, metavar="N",
                       help="also checkpoint every N batches, so a kill loses at most N batches")
    group.add_argument("--keep-last", type=non_negative_int, default=0, metavar="K",
                       help="keep only the newest K epoch checkpoints (0: keep all; best is always kept)")

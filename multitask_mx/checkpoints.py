"""The checkpoint saver: the only code that knows the save directory's file names.

Per epoch it writes ``{name}-symbol.json`` and ``{name}-{epoch:04d}.params`` in
MXNet's checkpoint format (``mx.model.load_checkpoint`` and
``gluon.SymbolBlock.imports`` read them), ``{name}-{epoch:04d}.states`` (optimizer
state), ``history.json``/``history.csv`` and, once, ``config.json``. Every file a
later run reads is written to a temporary name and renamed, so a kill during a
save never leaves a half-written file under the real name.
"""
import csv
import io
import json
import logging
import os

_logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
HISTORY_CSV = "history.csv"


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def read_json(path):
    """Load a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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

    def __init__(self, save_dir, save_name, writer=True):
        self.save_dir = save_dir
        self.save_name = save_name
        self.writer = writer  # False on distributed ranks other than 0
        self.history = []
        if writer:
            os.makedirs(save_dir, exist_ok=True)

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

    def write_text(self, filename, text):
        """Write a text file of the run (e.g. the trunk symbol), atomically."""
        if self.writer:
            atomic_write_bytes(self.path(filename), text.encode("utf-8"))

    def save_epoch(self, net, trainer, epoch, record):
        """Write the epoch's symbol, params, optimizer states and history row."""
        if not self.writer:
            return
        tmp_prefix = self.path(".tmp-%d-%s" % (os.getpid(), self.save_name))
        net.export(tmp_prefix, epoch=epoch)
        os.replace("%s-symbol.json" % tmp_prefix, self.symbol_file())
        os.replace("%s-%04d.params" % (tmp_prefix, epoch), self.params_file(epoch))
        if trainer is not None:
            trainer.save_states(tmp_prefix + ".states")
            os.replace(tmp_prefix + ".states", self.states_file(epoch))
        self.append_history(record)
        _logger.info("saved checkpoint %s", self.params_file(epoch))

    def append_history(self, record):
        """Add one epoch's record to ``history.json`` and ``history.csv``."""
        self.history.append(record)
        atomic_write_json(self.path(HISTORY_FILE), self.history)
        atomic_write_bytes(self.path(HISTORY_CSV), history_csv_text(self.history).encode("utf-8"))


def add_arguments(parser):
    """Checkpoint flags."""
    group = parser.add_argument_group("checkpoint")
    group.add_argument("--save-result", required=True, help="folder for checkpoints, logs and history")
    group.add_argument("--save-name", default="multitask", help="checkpoint prefix inside --save-result")

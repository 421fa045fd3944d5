"""``--tensorboard DIR``: the run as TensorBoard event files, written with tensorboardX.

At the start: the run's flags as hparams and the augmentation preview (a grid of
augmented training samples). After each epoch: every number of the epoch's history
record as a scalar (per-task train/val loss and metrics, lr, loss weights, head
agreement, img/s, task-gradient cosines and norms), and the validation confusion
matrix of each classification task as an image (one extra pass over the validation
list; the latest PNGs also stay in DIR/confusion/). Watch with
``tensorboard --logdir DIR`` (the tensorboard package, not needed for writing).
"""
import logging
import math
import os
import time

import mxnet as mx
import numpy as np

from ..data.datasets import device_normalize
from ..devices import split_batch
from ..errors import UserInputError

_logger = logging.getLogger(__name__)

INSTALL = "pip install -c constraints.txt tensorboardX  (or: pip install -e .[tensorboard])"
PREVIEW_SAMPLES = 16
_SKIPPED_KEYS = ("epoch", "count")  # numbers of a record that are not curves


def require_tensorboardx(monitor):
    """Refuse --tensorboard before any work when tensorboardX is missing (exit 2 with the pip command)."""
    if not monitor.tensorboard:
        return
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise UserInputError("--tensorboard %s needs the tensorboardX package: %s" % (monitor.tensorboard, INSTALL))


def record_scalars(record, prefix=""):
    """[(tag, value)] of every finite number in a history record, nested keys joined by '/'."""
    out = []
    for key, value in record.items():
        if key in _SKIPPED_KEYS:
            continue
        tag = prefix + str(key).replace("|", "_vs_")  # tensorboardX would rename a '|' (task pairs: "a|b")
        if isinstance(value, dict):
            out += record_scalars(value, tag + "/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append((tag, float(value)))
    return out


def is_classification(task):
    """Softmax tasks get a confusion matrix (Task.kind comes with the regression/multilabel task kinds)."""
    return getattr(task, "kind", "class") == "class"


def validation_confusions(net, loader, ctxs, tasks, normalization):
    """{task: confusion counts[true, predicted]} of the classification tasks over the validation loader."""
    from .confusion import confusion_matrix
    wanted = [k for k, t in enumerate(tasks) if is_classification(t)]
    totals = {k: np.zeros((tasks[k].num_classes,) * 2, np.int64) for k in wanted}
    for batch in loader:
        parts, valids = split_batch(batch[:2], ctxs)
        for (x, y), v in zip(parts, valids):
            outputs = net(device_normalize(x, normalization))
            labels, keep = y.asnumpy(), v.asnumpy() > 0
            for k in wanted:
                known = keep & (labels[:, k] >= 0)  # -1: unknown; bad images carry negative labels too
                predicted = mx.nd.argmax(outputs[k], axis=1).asnumpy()
                totals[k] += confusion_matrix(labels[known, k], predicted[known], tasks[k].num_classes)
    return {tasks[k].name: totals[k] for k in wanted}


class TensorBoardLogger:
    """The fit callback behind --tensorboard: called with each epoch's history record.

    Events are written and flushed in the calling thread with tensorboardX's
    synchronous ``EventsWriter`` (SummaryWriter's background thread and queue would
    leave an epoch's events unwritten until its next two-minute flush): after each
    epoch the event file holds that epoch, for TensorBoard and for a crash alike.
    """

    def __init__(self, logdir, flags, class_names, confusions=None):
        from tensorboardX.event_file_writer import EventsWriter
        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self.events = EventsWriter(os.path.join(logdir, "events"))
        self.class_names = class_names
        self.confusions = confusions  # () -> {task: matrix}, None without a validation list
        self._hparams(flags)
        _logger.info("TensorBoard event files in %s (watch: tensorboard --logdir %s)", logdir, logdir)

    def _write(self, summaries, step):
        from tensorboardX.proto.event_pb2 import Event
        for summary in summaries:
            self.events.write_event(Event(summary=summary, wall_time=time.time(), step=step))
        self.events.flush()

    def _hparams(self, flags):
        """The flags ({dest: value}) as hparams (the HParams tab); the scalars' tags are its metrics."""
        from tensorboardX.summary import hparams
        flags = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams_of(flags).items()}
        experiment, start, self._session_end = hparams(flags, {"val_loss": 0.0, "train_loss": 0.0})
        self._write([experiment, start], 0)

    def add_preview(self, images):
        """The augmentation preview: HxWx3 uint8 samples as one grid image at step 0."""
        if images:
            from tensorboardX.summary import image
            from .plots import augmentation_grid
            self._write([image("augmentation_preview", augmentation_grid(images, 8), dataformats="HWC")], 0)

    def __call__(self, record):
        """Write one epoch: its scalars, then the validation confusion matrices as images."""
        from tensorboardX.summary import image, scalar
        epoch = record["epoch"]
        summaries = [scalar(tag, value) for tag, value in record_scalars(record)]
        if self.confusions is not None:
            summaries += [image("confusion/%s" % task, self._confusion_image(task, matrix, epoch), dataformats="HWC")
                          for task, matrix in self.confusions().items()]
        self._write(summaries, epoch)

    def _confusion_image(self, task, matrix, epoch):
        from matplotlib.image import imread
        from .confusion import plot_confusion
        path = os.path.join(self.logdir, "confusion", "%s.png" % task)
        names = (self.class_names or {}).get(task) or [str(c) for c in range(len(matrix))]
        plot_confusion(matrix, names, path, "%s, validation, epoch %d" % (task, epoch))
        return (imread(path)[:, :, :3] * 255).astype(np.uint8)

    def close(self):
        """Mark the hparams session ended and close the event file."""
        self._write([self._session_end], 0)
        self.events.close()


def hparams_of(flags):
    """The flags worth comparing runs by: those of ``flags`` ({dest: value}) that were set (None left out)."""
    return {k: v for k, v in sorted(flags.items()) if v is not None}


def make_loggers(config, writer, tasks, class_names, validation, preview):
    """fit's callbacks for --tensorboard: [TensorBoardLogger], or [] without the flag or on a worker that does not write.

    ``validation`` is (net, validation loader or None, contexts, normalization);
    ``preview(count)`` gives the augmentation preview's samples; ``config``: the run's TrainConfig (its
    flags become the hparams).
    """
    if not config.monitor.tensorboard or not writer:
        return []
    net, val_loader, ctxs, normalization = validation
    confusions = None
    if val_loader is not None and any(is_classification(t) for t in tasks):
        def confusions():
            return validation_confusions(net, val_loader, ctxs, tasks, normalization)
    logger = TensorBoardLogger(config.monitor.tensorboard, config.flags(), class_names, confusions)
    logger.add_preview(preview(PREVIEW_SAMPLES))
    return [logger]


def close_all(loggers):
    """Close the loggers' event files (after fit, also when it stops with an error)."""
    for logger in loggers:
        logger.close()


def add_arguments(parser):
    """The --tensorboard flag."""
    group = parser.add_argument_group("monitoring")
    group.add_argument("--tensorboard", default=None, metavar="DIR",
                       help="write TensorBoard event files to DIR (scalars, confusion matrices, augmentation "
                       "preview, hparams); needs tensorboardX; watch with: tensorboard --logdir DIR")

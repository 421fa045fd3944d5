"""PNG pictures of a run: training curves, the lr schedule, the augmentation preview.

matplotlib is imported only when a picture is drawn, and only its Agg canvas is
used (no pyplot, so no global figure state and no display needed). Every picture is
written to a temporary file and renamed, so a person opening ``curves.png`` in the
middle of a run always sees a whole image.
"""
import io
import logging
import math
import threading
import time

import numpy as np

from .checkpoints import atomic_write_bytes

_logger = logging.getLogger(__name__)

DPI = 100
CURVES_SIZE = (1500, 450)  # width, height in pixels: loss | accuracy | lr
LR_PLOT_SIZE = (900, 400)
GRID_PAD = 2  # pixels between (and around) the preview's samples


def _figure(size_px):
    """A matplotlib Figure of exactly ``size_px`` (width, height) pixels on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    """Render ``fig`` to PNG in memory, then write it atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _series(history, split, task, key):
    """[(epoch, value)] of history[i][split][task][key] where present and finite."""
    points = []
    for record in history:
        value = (record.get(split) or {}).get(task, {}).get(key)
        if value is not None and math.isfinite(value):
            points.append((record["epoch"], value))
    return points


def _task_names(history):
    names = []
    for record in history:
        for split in ("train", "val"):
            names += [n for n in (record.get(split) or {}) if n not in names]
    return names


def _plot_split_lines(ax, history, tasks, key):
    """One colour per task: train solid with dots, validation dashed with crosses."""
    for i, task in enumerate(tasks):
        colour = "C%d" % (i % 10)  # matplotlib's default colour cycle
        for split, style in (("train", "o-"), ("val", "x--")):
            points = _series(history, split, task, key)
            if points:
                ax.plot(*zip(*points), style, color=colour, markersize=3, label="%s %s" % (split, task))
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")


def plot_curves(history, path):
    """Train/val loss and per-task accuracy against epoch, the lr, and task-gradient cosines if measured, into one PNG."""
    return _save(curves_figure(history), path)


class CurvesWriter:
    """Redraws ``curves.png`` after an epoch, in a background thread, at most about ``share`` of the run's time.

    Drawing the three panels takes 0.3-0.7 s on 2 cores (plus about 0.5 s to import
    matplotlib the first time): a sixth of a 4-second epoch (make demo: 15 epochs, 17 s of
    77 s went to checkpoints and curves). So after an epoch the picture is redrawn only
    once the time since the last drawing is at least the drawing's own time / ``share``,
    and the drawing runs in a thread while the main thread writes the checkpoint and
    trains on (both wait in MXNet or in fsync, outside the GIL). ``finish`` draws whatever
    is not yet shown and waits. A person watching the file sees it at most that much
    behind; history.json never is. A picture that cannot be drawn is a warning, never
    the end of a run.
    """

    def __init__(self, path, share=0.05):
        self.path, self.share = path, share  # path None: draw nothing (a worker that writes no files)
        self._started_at, self._cost, self._shown = None, 0.0, None
        self._thread = None

    def update(self, history, force=False):
        """Start redrawing from ``history`` if due (or ``force``); returns whether it started."""
        now = time.monotonic()
        due = force or self._started_at is None or now - self._started_at >= self._cost / self.share
        if self.path is None or not history or not due:
            return False
        self.wait()  # one drawing at a time
        self._started_at, self._shown = now, len(history)
        # not a daemon: a run that stops on an error still finishes (or cleans up) the picture it is
        # writing before the process exits, so no half-written temporary file is left behind
        self._thread = threading.Thread(target=self._draw, args=(list(history), now), name="curves.png")
        self._thread.start()
        return True

    def _draw(self, history, started):
        try:
            plot_curves(history, self.path)
        except Exception as exc:  # noqa: BLE001  (a full disk, a font problem: the run goes on)
            _logger.warning("could not draw %s: %s", self.path, exc)
        self._cost = time.monotonic() - started

    def wait(self):
        """Block until the drawing in progress (if any) is written."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def finish(self, history):
        """Draw the last epochs if the picture does not show them yet, and wait for the drawing."""
        if self.path is not None and history and self._shown != len(history):
            self.update(history, force=True)
        self.wait()


def curves_figure(history):
    """The Figure of ``plot_curves``: axes loss, accuracy, lr (and gradient cosines); one line per task and split."""
    has_grads = any(r.get("grad_cosine") for r in history)
    fig = _figure((CURVES_SIZE[0] * 4 // 3, CURVES_SIZE[1]) if has_grads else CURVES_SIZE)
    axes = fig.subplots(1, 4 if has_grads else 3)
    loss_ax, acc_ax, lr_ax = axes[:3]
    if has_grads:
        _plot_gradient_cosines(axes[3], history)
    tasks = _task_names(history)
    _plot_split_lines(loss_ax, history, tasks, "loss")
    loss_ax.set_title("loss (log scale)" if _log_scale(loss_ax) else "loss")
    _plot_split_lines(acc_ax, history, tasks, "acc")
    acc_ax.set_title("accuracy")
    acc_ax.set_ylim(-0.02, 1.02)
    lrs = [(r["epoch"], r["lr"]) for r in history if r.get("lr") is not None]
    if lrs:
        lr_ax.plot(*zip(*lrs), "o-", markersize=3)
    lr_ax.set_title("learning rate")
    lr_ax.set_xlabel("epoch")
    lr_ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _log_scale(ax):
    """Put ``ax``'s y axis on a log scale when every value drawn is positive; returns whether it did.

    One large first-epoch validation loss (a BatchNorm network's running statistics are far from
    its batch statistics early on) flattens every later epoch on a linear axis to a line at zero.
    """
    values = [y for line in ax.lines for y in line.get_ydata()]
    if not values or min(values) <= 0:  # a loss of exactly 0 (or a regression's odd one): stay linear
        return False
    ax.set_yscale("log")
    if max(values) / min(values) < 100:  # under two decades a log axis shows one labelled tick or none: label more
        from matplotlib.ticker import FuncFormatter
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: "%.2g" % value))
    return True


def _plot_gradient_cosines(ax, history):
    """--grad-stats-every's epoch means: one line per task pair, the cosine of their trunk gradients."""
    pairs = []
    for record in history:
        pairs += [p for p in record.get("grad_cosine") or {} if p not in pairs]
    for i, pair in enumerate(pairs):
        points = [(r["epoch"], r["grad_cosine"][pair]) for r in history if pair in (r.get("grad_cosine") or {})]
        ax.plot(*zip(*points), "o-", color="C%d" % (i % 10), markersize=3, label=pair.replace("|", " / "))
    ax.axhline(0, color="0.5", linewidth=0.8)
    ax.set_ylim(-1.02, 1.02)
    ax.set_title("task gradients on the trunk: cosine")
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def plot_lr_schedule(lrs_by_update, epoch_size, path):
    """The lr of every update (``lrs_by_update[i]`` is update i+1) against epochs, into a PNG."""
    return _save(lr_schedule_figure(lrs_by_update, epoch_size), path)


def lr_schedule_figure(lrs_by_update, epoch_size):
    """The Figure of ``plot_lr_schedule``: one line, one point per update, x in epochs."""
    fig = _figure(LR_PLOT_SIZE)
    ax = fig.subplots()
    lrs = np.asarray(lrs_by_update, dtype=np.float64)
    epochs = np.arange(1, len(lrs) + 1) / float(epoch_size)
    ax.plot(epochs, lrs)
    ax.set_xlabel("epoch (%d updates each)" % epoch_size)
    ax.set_ylabel("learning rate")
    if len(lrs):
        ax.set_title("learning rate: %.3g to %.3g, max %.3g" % (lrs[0], lrs[-1], lrs.max()))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def augmentation_grid(images, cols):
    """The HxWx3 uint8 images tiled ``cols`` to a row on white, GRID_PAD pixels apart."""
    cols = max(1, min(cols, len(images)))
    rows = int(math.ceil(len(images) / float(cols)))
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    grid = np.full((rows * (h + GRID_PAD) + GRID_PAD, cols * (w + GRID_PAD) + GRID_PAD, 3), 255, np.uint8)
    for i, im in enumerate(images):
        top = GRID_PAD + (i // cols) * (h + GRID_PAD)
        left = GRID_PAD + (i % cols) * (w + GRID_PAD)
        grid[top:top + im.shape[0], left:left + im.shape[1]] = im
    return grid


def plot_augmentation_grid(images_uint8_list, path, cols=8):
    """Write the augmented RGB samples as one PNG grid, one pixel per pixel."""
    if not images_uint8_list:
        raise ValueError("no images to put in the augmentation grid")
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, augmentation_grid(images_uint8_list, cols), format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_lr_finder(lrs, losses, smoothed, suggestion, path):
    """The lr range test: raw and smoothed loss against lr (log axis), the suggested lr marked, into a PNG."""
    return _save(lr_finder_figure(lrs, losses, smoothed, suggestion), path)


def lr_finder_figure(lrs, losses, smoothed, suggestion):
    """The Figure of ``plot_lr_finder``: loss points, the smoothed curve and the suggestion's vertical line."""
    fig = _figure(LR_PLOT_SIZE)
    ax = fig.subplots()
    finite = [(lr, v) for lr, v in zip(lrs, losses) if math.isfinite(v)]
    if finite:
        ax.plot(*zip(*finite), ".", color="0.7", markersize=3, label="loss per batch")
    ax.plot(lrs, smoothed, "-", color="C0", label="smoothed loss")
    ax.axvline(suggestion, color="C3", linestyle="--", label="suggested lr %.3g" % suggestion)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    top = [v for v in smoothed if math.isfinite(v)]
    if top:  # the divergence at the end would squash the part that matters
        ax.set_ylim(min(top) - 0.05 * abs(min(top)), 1.3 * max(top[:max(1, len(top) * 9 // 10)]))
    ax.set_title("lr finder: suggested lr %.3g" % suggestion)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig

"""The confusion matrix of one task, as counts and as a PNG: evaluation's report and TensorBoard's image both draw it.

True classes in rows and predicted classes in columns, as in scikit-learn. In the training
package (below ``use``) so that the training callbacks can draw it too.
"""
import logging
import os

import numpy as np

from ..atomic import atomic_write_bytes

_logger = logging.getLogger(__name__)

# Up to this many classes the PNG writes counts in cells.
CELL_TEXT_LIMIT = 30


def confusion_matrix(labels, predicted, num_classes):
    """counts[true, predicted] (int64, num_classes x num_classes)."""
    labels = np.asarray(labels, np.int64)
    predicted = np.asarray(predicted, np.int64)
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _figure_size(num_classes):
    # About 0.16 inch per class keeps 200 class names legible at 7 pt; never below 6 inches.
    side = max(6.0, 0.16 * num_classes + 2.5)
    return side, side


def plot_confusion(confusion, class_names, path, title=""):
    """Write the confusion matrix as a PNG: cells coloured by row share (recall), counts when few classes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion, np.float64)
    n = len(class_names)
    shares = _ratio_rows(confusion)
    fig, ax = plt.subplots(figsize=_figure_size(n), dpi=100)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    font = 7 if n > CELL_TEXT_LIMIT else 9
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(class_names, rotation=90, fontsize=font)
    ax.set_yticklabels(class_names, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix (colour: share of the true class's images)")
    if n <= CELL_TEXT_LIMIT:
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(j, i, "%d" % confusion[i, j], ha="center", va="center", fontsize=font,
                            color="white" if shares[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def _ratio_rows(confusion):
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)


def _save_figure(fig, path):
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    _logger.info("wrote %s", path)

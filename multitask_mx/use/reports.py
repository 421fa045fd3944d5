"""Evaluation reports: accuracy, top-k, loss, per-class precision/recall/F1, confusion.

Everything works on numpy arrays of one task: log-probabilities (N x classes) and
labels (N, -1 where unknown, which is left out). The confusion matrix has true
classes in rows and predicted classes in columns, as in scikit-learn.
"""
import logging
import os

import numpy as np

from ..training.checkpoints import atomic_write_bytes

_logger = logging.getLogger(__name__)

# Up to this many classes the text report prints the confusion matrix and the PNG writes counts in cells.
MATRIX_PRINT_LIMIT = 20
CELL_TEXT_LIMIT = 30


def confusion_matrix(labels, predicted, num_classes):
    """counts[true, predicted] (int64, num_classes x num_classes)."""
    labels = np.asarray(labels, np.int64)
    predicted = np.asarray(predicted, np.int64)
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(num, den):
    return np.divide(num, den, out=np.zeros(len(num), np.float64), where=den > 0)


def per_class_scores(confusion, class_names):
    """[{index, class, precision, recall, f1, support}] per class (0 where undefined, as scikit-learn)."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    precision = _ratio(tp, confusion.sum(axis=0))
    recall = _ratio(tp, confusion.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    support = confusion.sum(axis=1).astype(np.int64)
    return [{"index": i, "class": class_names[i], "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i])} for i in range(len(class_names))]


def averages(per_class):
    """Macro (plain mean) and support-weighted means of precision, recall and F1."""
    support = np.array([c["support"] for c in per_class], np.float64)
    out = {}
    for name, weights in (("macro_avg", np.ones_like(support)), ("weighted_avg", support)):
        total = weights.sum()
        out[name] = {key: float(np.dot([c[key] for c in per_class], weights) / total) if total else 0.0
                     for key in ("precision", "recall", "f1")}
    return out


def top_k_accuracy(log_probs, labels, ks):
    """{"k": fraction of images whose label is among the k most probable classes} for each k."""
    order = np.argsort(-log_probs, axis=1, kind="stable")
    out = {}
    for k in ks:
        hits = (order[:, :k] == labels[:, None]).any(axis=1)
        out[str(k)] = float(hits.mean()) if len(labels) else float("nan")
    return out


def mean_loss(log_probs, labels):
    """Mean softmax cross-entropy (the training loss without label smoothing)."""
    if not len(labels):
        return float("nan")
    return float(-log_probs[np.arange(len(labels)), labels].astype(np.float64).mean())


def task_report(log_probs, labels, class_names, ks=(1, 5)):
    """Report of one task over the images that have a label for it (labels < 0 are left out)."""
    labels = np.asarray(labels)
    known = labels >= 0
    log_probs, labels = log_probs[known], labels[known]
    num_classes = len(class_names)
    predicted = np.argmax(log_probs, axis=1) if len(labels) else np.zeros(0, np.int64)
    confusion = confusion_matrix(labels, predicted, num_classes)
    per_class = per_class_scores(confusion, class_names)
    ks = sorted({1} | {k for k in ks if 1 < k < num_classes})
    report = {"num_classes": num_classes, "classes": list(class_names),
              "num_labelled": int(len(labels)), "num_missing": int((~known).sum()),
              "accuracy": float((predicted == labels).mean()) if len(labels) else float("nan"),
              "top_k": top_k_accuracy(log_probs, labels, ks), "loss": mean_loss(log_probs, labels),
              "per_class": per_class}
    report.update(averages(per_class))
    report["confusion"] = confusion.tolist()
    return report


def format_task_report(name, report):
    """The report of one task as text: summary line, per-class table, small confusion matrices."""
    figures = ["accuracy %.4f" % report["accuracy"]]
    figures += ["top-%s %.4f" % (k, v) for k, v in report["top_k"].items() if k != "1"]
    figures.append("loss %.4f" % report["loss"])
    lines = ["task %s: %s  (%d labelled image(s), %d without a label)"
             % (name, "  ".join(figures), report["num_labelled"], report["num_missing"])]
    width = max([len(c["class"]) for c in report["per_class"]] + [12])
    lines.append("  %-*s %9s %9s %9s %9s" % (width, "class", "precision", "recall", "f1", "support"))
    for c in report["per_class"]:
        lines.append("  %-*s %9.4f %9.4f %9.4f %9d" % (width, c["class"], c["precision"], c["recall"], c["f1"],
                                                       c["support"]))
    for avg in ("macro_avg", "weighted_avg"):
        v = report[avg]
        lines.append("  %-*s %9.4f %9.4f %9.4f %9d" % (width, avg.replace("_", " "), v["precision"], v["recall"],
                                                       v["f1"], report["num_labelled"]))
    if report["num_classes"] <= MATRIX_PRINT_LIMIT:
        lines.append("  confusion (rows: true class, columns: predicted class):")
        cell = max(len(str(max(max(r) for r in report["confusion"]))), 3)
        for c, row in zip(report["per_class"], report["confusion"]):
            lines.append("  %-*s %s" % (width, c["class"], " ".join("%*d" % (cell, n) for n in row)))
    return "\n".join(lines)


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

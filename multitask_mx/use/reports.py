"""Evaluation reports: accuracy, top-k, loss, per-class precision/recall/F1, confusion.

Everything works on numpy arrays of one task: log-probabilities (N x classes) and
labels (N, -1 where unknown, which is left out). The confusion matrix has true
classes in rows and predicted classes in columns, as in scikit-learn.
"""
import logging

import numpy as np

from ..training.confusion import confusion_matrix, plot_confusion  # noqa: F401  (part of the reports)

_logger = logging.getLogger(__name__)

# Up to this many classes the text report prints the confusion matrix.
MATRIX_PRINT_LIMIT = 20


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

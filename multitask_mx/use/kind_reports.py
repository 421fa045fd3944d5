"""Evaluation reports of regression and multi-label tasks, beside reports.task_report for softmax tasks.

Regression: MAE and RMSE in the target's units, with the MAE of always predicting the
training mean (config.json's) for comparison. Multi-label: per attribute average
precision (exact, from every image's probability), F1 and accuracy at probability
0.5 and the positive rate; their means over attributes (``map``, ``f1``, ``accuracy``).
"""
import logging

import numpy as np

from ..data.lst_format import MISSING_LABEL
from ..data.task_kinds import class_column

_logger = logging.getLogger(__name__)


def kind_targets(tasks, image_list):
    """{task index: targets} of the regress (N values, NaN unknown) and multilabel (N x K, -1 unknown) tasks."""
    labels = np.asarray(image_list.labels, np.float64)
    out = {}
    for k, task in enumerate(tasks):
        if task.kind == "regress":
            out[k] = labels[:, task.column]
        elif task.kind == "multilabel":
            values = labels[:, task.column:task.column + task.num_classes]
            out[k] = np.where(np.isfinite(values), values, MISSING_LABEL)
    return out


def class_labels(tasks, image_list):
    """N x tasks class labels of the class tasks (derivations applied), -1 in the other kinds' columns."""
    labels = np.asarray(image_list.labels, np.float64)
    out = np.full((len(labels), len(tasks)), MISSING_LABEL, np.int64)
    for k, task in enumerate(tasks):
        if task.kind == "class":
            out[:, k] = [task.label_from(int(v)) for v in class_column(labels[:, task.column])]
    return out


def regress_report(task, predicted, targets):
    """MAE, RMSE and the mean predictor's MAE over the images with a value."""
    predicted, targets = np.asarray(predicted, np.float64).reshape(-1), np.asarray(targets, np.float64)
    known = np.isfinite(targets) & np.isfinite(predicted)
    error = predicted[known] - targets[known]
    nan = float("nan")
    return {"kind": "regress", "num_labelled": int(known.sum()), "num_missing": int((~known).sum()),
            "mae": float(np.abs(error).mean()) if len(error) else nan,
            "rmse": float(np.sqrt((error ** 2).mean())) if len(error) else nan,
            "mean_predictor_mae": float(np.abs(targets[known] - task.mean).mean()) if len(error) else nan,
            "training_mean": task.mean}


def average_precision(scores, positive):
    """Average precision of one attribute (NaN without a positive): mean precision at each positive's rank."""
    if not positive.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def multilabel_report(probs, targets, attribute_names):
    """Per attribute AP, F1, accuracy and positive rate at 0.5; their means."""
    attributes = {}
    for a, name in enumerate(attribute_names):
        known = targets[:, a] >= 0
        positive, present = targets[known, a] == 1, probs[known, a] >= 0.5
        tp, fp, fn = (positive & present).sum(), (~positive & present).sum(), (positive & ~present).sum()
        attributes[name] = {"ap": average_precision(probs[known, a], positive),
                            "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan"),
                            "accuracy": float((positive == present).mean()) if known.any() else float("nan"),
                            "positive_rate": float(positive.mean()) if known.any() else float("nan"),
                            "num_labelled": int(known.sum())}
    report = {"kind": "multilabel", "num_labelled": int((targets >= 0).any(axis=1).sum()),
              "num_missing": int((targets < 0).all(axis=1).sum()), "attributes": attributes}
    for key, mean_key in (("ap", "map"), ("f1", "f1"), ("accuracy", "accuracy"), ("positive_rate", "positive_rate")):
        values = [v[key] for v in attributes.values() if v[key] == v[key]]
        report[mean_key] = float(np.mean(values)) if values else float("nan")
    return report


def format_kind_report(name, report):
    """A regress or multilabel report as text."""
    counts = "(%d labelled image(s), %d without a label)" % (report["num_labelled"], report["num_missing"])
    if report["kind"] == "regress":
        return "task %s (regress): MAE %.4g  RMSE %.4g  (predicting the training mean %.4g: MAE %.4g)  %s" % (
            name, report["mae"], report["rmse"], report["training_mean"], report["mean_predictor_mae"], counts)
    lines = ["task %s (multilabel): mAP %.4f  F1@0.5 %.4f  accuracy %.4f  (positive rate %.4f)  %s"
             % (name, report["map"], report["f1"], report["accuracy"], report["positive_rate"], counts)]
    width = max([len(a) for a in report["attributes"]] + [9])
    lines.append("  %-*s %9s %9s %9s %9s" % (width, "attribute", "AP", "F1", "accuracy", "positive"))
    for attribute, v in report["attributes"].items():
        lines.append("  %-*s %9.4f %9.4f %9.4f %9.4f" % (width, attribute, v["ap"], v["f1"], v["accuracy"],
                                                         v["positive_rate"]))
    return "\n".join(lines)

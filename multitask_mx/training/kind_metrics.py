"""Metrics of regression and multi-label heads, accumulated on the device like metrics.TaskMetrics'.

Regression: sums of |error| and error^2 in the target's own units (the head predicts
the standardised value; the task's std scales it back), read as MAE and RMSE.
Multi-label: per attribute, histograms of the predicted probability for positive
and for negative samples (``BINS`` bins). Average precision, F1 at 0.5 and accuracy
all follow from them, without keeping one score per image: AP treats the scores
within one bin (1/200 wide) as tied.
"""
import logging

import mxnet as mx
import numpy as np

_logger = logging.getLogger(__name__)

BINS = 200


def regress_sums(out, target, mask, std):
    """(sum of |error|, sum of error^2) over masked samples, in the target's units."""
    error = (out.astype("float32").reshape((-1,)) - target) * (mask * std)
    return mx.nd.sum(mx.nd.abs(error)), mx.nd.sum(error * error)


def multilabel_update(out, labels):
    """(correct attribute answers at 0.5, known attributes, (2 x K x BINS) histogram) of one batch slice.

    ``labels``: 1, 0 or -1 (unknown, and masked samples) per attribute.
    """
    prob = mx.nd.sigmoid(out.astype("float32"))
    positive, negative = labels == 1, labels == 0
    correct = mx.nd.sum((prob >= 0.5) * positive + (prob < 0.5) * negative)
    bins = mx.nd.clip(mx.nd.floor(prob * BINS), 0, BINS - 1)
    onehot = mx.nd.one_hot(bins, BINS)  # batch x K x BINS
    hist = mx.nd.stack(mx.nd.sum(onehot * positive.expand_dims(2), axis=0),
                       mx.nd.sum(onehot * negative.expand_dims(2), axis=0))
    return correct, mx.nd.sum(positive + negative), hist


def binned_average_precision(pos_hist, neg_hist):
    """AP of one attribute from its positive/negative score histograms (NaN without positives)."""
    pos, neg = pos_hist[::-1], neg_hist[::-1]  # highest scores first
    total = pos.sum()
    if not total:
        return float("nan")
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    precision = tp / np.maximum(tp + fp, 1e-12)
    return float(np.sum(precision * pos) / total)


def multilabel_values(hist):
    """{"map", "f1", "attr_acc": [per attribute], "ap": [per attribute]} from the summed (2 x K x BINS) histogram."""
    pos, neg = hist[0].astype(np.float64), hist[1].astype(np.float64)
    half = BINS // 2  # bins at or above probability 0.5
    tp, fn = pos[:, half:].sum(axis=1), pos[:, :half].sum(axis=1)
    fp, tn = neg[:, half:].sum(axis=1), neg[:, :half].sum(axis=1)
    aps = [binned_average_precision(p, n) for p, n in zip(pos, neg)]
    f1 = [float(2 * a / (2 * a + b + c)) if a + b + c else float("nan") for a, b, c in zip(tp, fp, fn)]
    acc = [float((a + d) / (a + b + c + d)) if a + b + c + d else float("nan") for a, b, c, d in zip(tp, fp, fn, tn)]
    return {"map": _nanmean(aps), "f1": _nanmean(f1), "ap": aps, "attr_f1": f1, "attr_acc": acc}


def _nanmean(values):
    known = [v for v in values if v == v]
    return float(np.mean(known)) if known else float("nan")

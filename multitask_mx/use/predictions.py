"""Predictions as rows: the top classes of every task per image, as predict, serve and the Python API give them."""
import numbers
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import UserInputError
from ..flagtypes import DeprecatedAlias, positive_int


@dataclass
class Item:
    """One image to predict: the name shown, the file read, and its .lst line if any."""

    name: str
    path: str
    line: Optional[int] = None


def top_k(probs_row, k):
    """Indices of the ``k`` largest probabilities, largest first."""
    k = min(k, len(probs_row))
    best = np.argpartition(-probs_row, k - 1)[:k]
    return best[np.argsort(-probs_row[best], kind="stable")]


def top_classes(model, probs, k):
    """{task: [{"index", "class", "prob"}]} of one image (``probs``: one row per task), most probable first."""
    result = {}
    for task, row in zip(model.tasks, probs):
        names = model.classes[task.name]
        result[task.name] = [{"index": int(c), "class": names[c], "prob": float(row[c])} for c in top_k(row, k)]
    return result


def task_answers(model, outputs, k):
    """{task: answer} of one image from its per-task inference outputs (``Predictions.log_probs`` rows).

    A class task gives its top-``k`` classes (top_classes); a regress task
    ``{"value"}``; a multilabel task ``[{"index", "attribute", "prob", "present"}]``
    for every attribute in order, ``present`` when its probability is 0.5 or more.
    """
    answers = top_classes(model, [np.exp(row) for row in outputs], k)
    for task, row in zip(model.tasks, outputs):
        if task.kind == "regress":
            answers[task.name] = {"value": float(row[0])}
        elif task.kind == "multilabel":
            names = model.classes[task.name]
            answers[task.name] = [{"index": a, "attribute": names[a], "prob": float(p), "present": bool(p >= 0.5)}
                                  for a, p in enumerate(np.exp(row))]
    return answers


def prediction_rows(model, items, predictions, k):
    """Per image: {"path", "line"?, "tasks": {task: answer (task_answers)}} or {"path", "error"}.

    ``items``: ``Item``s or plain paths, in the order ``predictions`` (``inference.predict_paths``) has them.
    """
    rows = []
    outputs = predictions.log_probs
    for n, item in enumerate(items):
        item = item if isinstance(item, Item) else Item(str(item), str(item))
        row = {"path": item.name}
        if item.line is not None:
            row["line"] = item.line
        if n in predictions.failed:
            row["error"] = predictions.failed[n]
        else:
            row["tasks"] = task_answers(model, [o[n] for o in outputs], k)
        rows.append(row)
    return rows


def check_show(value, name="--show"):
    """Refuse a number of classes shown below 1 (``--show``'s range) with a UserInputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UserInputError("%s=%r: give a whole number of classes to show per task, 1 or more (as --show)."
                             % (name, value))
    return value


def add_show_flag(group, what):
    """``--show N``: classes shown per task, declared once for predict and serve (``--top-k`` its old name)."""
    group.add_argument("--show", type=positive_int, default=3, metavar="N",
                       help="classes %s per task, most probable first" % what)
    group.add_argument("--top-k", dest="show", type=positive_int, action=DeprecatedAlias, new_flag="--show",
                       note="--top-k means top-k accuracy in train and evaluate")

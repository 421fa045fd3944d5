"""Task kinds beside softmax classification: ``regress`` (a real value) and ``multilabel:K`` (K yes/no attributes).

``--task-types class,regress,multilabel:5`` declares, in column order, what each
task's label column(s) hold: ``class`` one column of class indices (-1 unknown),
``regress`` one column of real numbers (empty or ``nan`` unknown), ``multilabel:K``
K consecutive columns of 0/1 (-1 unknown per attribute). With kinds, a list's labels
are read as real numbers (label_tables.py) and each image's labels go into the batch
as one float32 row of *slots*: one per class or regress task, K per multilabel task.
A regression target is standardised with the training list's mean and std (kept in
the Task, hence in config.json) so that one learning rate suits every task.
"""
import dataclasses
import logging
import math
import re
from typing import Optional, Sequence

import numpy as np

from ..errors import UserInputError
from .lst_format import MISSING_LABEL
from .tasks import Task, build_tasks, class_histograms, parse_num_classes

_logger = logging.getLogger(__name__)

_TYPE_RE = re.compile(r"^(class|regress|multilabel:(\d+))$")


def parse_task_types(text):
    """'class,regress,multilabel:5' -> [("class", 1), ("regress", 1), ("multilabel", 5)] (kind, columns)."""
    types = []
    for part in [p.strip() for p in str(text).split(",")]:
        match = _TYPE_RE.match(part)
        if not match or (match.group(2) is not None and int(match.group(2)) < 1):
            raise UserInputError("--task-types %r: %r is not a task type. Give one per task, in column order: "
                                 "class, regress or multilabel:K (K yes/no columns), e.g. "
                                 "--task-types regress,class,multilabel:5." % (text, part))
        types.append(("multilabel", int(match.group(2))) if match.group(2) else (part, 1))
    return types


def has_kinds(tasks):
    """True if any task is not softmax classification (labels then travel as float32 slots)."""
    return any(t.kind != "class" for t in tasks)


def slot_ranges(tasks: Sequence[Task]):
    """[(first slot, slots)] per task in a batch's label row: K for multilabel, 1 otherwise."""
    out, start = [], 0
    for task in tasks:
        width = task.num_classes if task.kind == "multilabel" else 1
        out.append((start, width))
        start += width
    return out


def class_column(values):
    """A float column of class indices as int64, NaN (an empty CSV cell) as unknown."""
    return np.where(np.isfinite(values), values, MISSING_LABEL).astype(np.int64)


def slot_matrix(tasks: Sequence[Task], labels):
    """Label slots of every image: float32 (images x slots); regress standardised, NaN where unknown."""
    labels = np.asarray(labels, np.float64)
    columns = [None] * len(tasks)
    for i, task in enumerate(tasks):
        source = labels[:, task.column:task.column + (task.num_classes if task.kind == "multilabel" else 1)]
        if task.kind == "regress":
            columns[i] = (source - task.mean) / task.std
        elif task.kind == "multilabel":
            columns[i] = np.where(np.isfinite(source), source, MISSING_LABEL)
        else:
            column = class_column(source[:, 0])
            columns[i] = np.array([task.label_from(int(v)) for v in column], np.float64).reshape(-1, 1)
    return np.concatenate(columns, axis=1).astype(np.float32) if columns else np.zeros((len(labels), 0), np.float32)


def _column_names(types, names, header):
    """Task names (--task-names, the CSV header, or label1..) and every column's name."""
    width = sum(w for _, w in types)
    header = list(header) if header and len(header) == width else None
    if names is not None and len(names) != len(types):
        raise UserInputError("--task-names gives %d name(s) for the %d task(s) of --task-types."
                             % (len(names), len(types)))
    if names is None:
        names, column = [], 0
        for i, (kind, w) in enumerate(types):
            default = header[column] if header and kind != "multilabel" else \
                ("attributes" if kind == "multilabel" and sum(k == "multilabel" for k, _ in types) == 1
                 else "label%d" % (i + 1))
            names.append(default)
            column += w
    return names, header


def build_kind_tasks(types, train_labels, task_names=None, num_classes=None, derived=None, header=None):
    """Tasks of ``types`` (parse_task_types) over a float label matrix, then derived tasks of class columns."""
    width = sum(w for _, w in types)
    if train_labels.shape[1] != width:
        raise UserInputError("--task-types declares %d label column(s) (%s) but the training list has %d."
                             % (width, ", ".join(k if w == 1 else "%s:%d" % (k, w) for k, w in types),
                                train_labels.shape[1]))
    names, header = _column_names(types, task_names, header)
    class_counts = parse_num_classes(num_classes)
    wanted = sum(k == "class" for k, _ in types)
    if class_counts is not None and len(class_counts) != wanted:
        raise UserInputError("--num-classes gives %d number(s) for the %d class task(s) of --task-types."
                             % (len(class_counts), wanted))
    tasks, column, counts = [], 0, list(class_counts or [])
    for (kind, w), name in zip(types, names):
        values = train_labels[:, column:column + w]
        if kind == "class":
            n = counts.pop(0) if class_counts else int(class_column(values[:, 0]).max(initial=-1)) + 1
            if n < 2:
                raise UserInputError("class task %s (column %d) has %d class(es) in the training list; a softmax "
                                     "head needs at least 2. Check --task-types and --num-classes."
                                     % (name, column + 1, n))
            tasks.append(Task(name, n, column))
        elif kind == "regress":
            tasks.append(_regress_task(name, column, values[:, 0]))
        else:
            attributes = tuple(header[column:column + w]) if header else \
                tuple("%s%d" % (name, i + 1) for i in range(w))
            tasks.append(Task(name, w, column, kind="multilabel", attributes=attributes))
        column += w
    return tasks + _derived_tasks(tasks, derived)


def _regress_task(name, column, values):
    known = values[np.isfinite(values)]
    if not len(known):
        raise UserInputError("regression task %s: no line of the training list has a value in its column, so "
                             "it has nothing to learn from." % name)
    std = float(known.std())
    return Task(name, 1, column, kind="regress", mean=float(known.mean()), std=std if std > 0 else 1.0)


def _derived_tasks(tasks, derived):
    """Derived tasks (tasks.parse_derived_task) of the class columns; other kinds cannot be sources."""
    if not derived:
        return []
    class_tasks = [t for t in tasks if t.kind == "class"]
    # build_tasks numbers columns from 0; map its column back to the real one afterwards
    built = build_tasks([t.num_classes for t in class_tasks], [t.name for t in class_tasks], derived)
    out = []
    for task in built[len(class_tasks):]:
        out.append(dataclasses.replace(task, column=class_tasks[task.column].column))
    return out


def check_kind_labels(tasks, image_list):
    """Raise naming file:line for a label its task cannot take (class out of range, attribute not 0/1/-1)."""
    labels = np.asarray(image_list.labels, np.float64)
    for task in tasks:
        if task.derive is not None or task.kind == "regress":
            continue
        width = task.num_classes if task.kind == "multilabel" else 1
        values = labels[:, task.column:task.column + width]
        known = np.isfinite(values)
        if task.kind == "multilabel":
            bad = known & ~np.isin(values, (0, 1, MISSING_LABEL))
            what = "an attribute of %s must be 0, 1 or -1 (unknown)" % task.name
        else:
            bad = known & ((values != np.round(values)) | (values < MISSING_LABEL) | (values >= task.num_classes))
            what = "task %s takes class indices 0..%d, -1 for unknown" % (task.name, task.num_classes - 1)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise UserInputError("%s: label %r in column %d: %s." % (image_list.where_at(row), values[row, col],
                                                                     task.column + col + 1, what))
    if any(t.kind == "regress" for t in tasks) and np.isinf(labels).any():
        row, col = np.argwhere(np.isinf(labels))[0]
        raise UserInputError("%s: label in column %d is infinite." % (image_list.where_at(row), col + 1))


def kind_histograms(tasks, labels):
    """Per task: class counts (class), count/mean/std (regress), positives per attribute (multilabel)."""
    labels = np.asarray(labels, np.float64)
    out = {}
    class_tasks = [t for t in tasks if t.kind == "class"]
    if class_tasks:
        ints = np.stack([class_column(labels[:, c]) for c in range(labels.shape[1])], axis=1)
        out.update(class_histograms(class_tasks, ints))
    for task in tasks:
        if task.kind == "regress":
            values = labels[:, task.column]
            known = values[np.isfinite(values)]
            out[task.name] = {"counts": [int(len(known))], "missing": int(len(values) - len(known)),
                              "mean": float(known.mean()) if len(known) else math.nan,
                              "std": float(known.std()) if len(known) else math.nan}
        elif task.kind == "multilabel":
            values = labels[:, task.column:task.column + task.num_classes]
            out[task.name] = {"counts": [int(n) for n in (values == 1).sum(axis=0)],
                              "negatives": [int(n) for n in (values == 0).sum(axis=0)],
                              "missing": int((~np.isin(values, (0, 1))).all(axis=1).sum())}
    return {t.name: out[t.name] for t in tasks}


def positive_weights(flag, tasks, labels) -> Optional[list]:
    """--pos-weight auto: negatives/positives per attribute of each multilabel task (None elsewhere)."""
    if flag in (None, "none"):
        return None
    histograms = kind_histograms(tasks, labels)
    out = []
    for task in tasks:
        if task.kind != "multilabel":
            out.append(None)
            continue
        h = histograms[task.name]
        weights = [n / p if p else 1.0 for p, n in zip(h["counts"], h["negatives"])]
        _logger.info("pos weight of %s (negatives/positives): %s", task.name, " ".join("%.3g" % w for w in weights))
        out.append(weights)
    return out


def add_arguments(parser):
    """Task-kind flags."""
    group = parser.add_argument_group("task kinds")
    group.add_argument("--task-types", default=None, metavar="TYPES",
                       help="what each task's label column(s) hold, in column order: class (softmax), regress "
                            "(a real value), multilabel:K (K yes/no columns), e.g. regress,class,multilabel:5")
    group.add_argument("--regress-loss", choices=["l1", "l2", "huber"], default="huber",
                       help="loss of regress tasks, on the standardised target (huber: l2 within one standard "
                            "deviation, l1 beyond, so that early outliers do not blow the trunk up)")
    group.add_argument("--pos-weight", choices=["none", "auto"], default="none",
                       help="multilabel: weigh each attribute's positives by negatives/positives (auto)")

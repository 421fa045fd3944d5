"""Tasks: which label column each softmax head learns, and derived tasks.

A list with K label columns gives K direct tasks. A derived task is computed from
one column in the data path, e.g. the original multi-task-MXNet's second task
``label_gt0 = label > 0``. Derived-task expressions are parsed by a tiny grammar
(comparisons and class sets on a named column, or a mapping file), never eval'd.
"""
import logging
import operator
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import UserInputError
from .lists import MISSING_LABEL

_logger = logging.getLogger(__name__)

_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
            "==": operator.eq, "!=": operator.ne}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_COMPARE_RE = re.compile(r"^\s*(%s)\s*(>=|<=|==|!=|>|<)\s*(-?\d+)\s*$" % _NAME)
_IN_RE = re.compile(r"^\s*(%s)\s+(not\s+in|in)\s*\{\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*\}\s*$" % _NAME)
_MAP_RE = re.compile(r"^\s*(?:(%s)\s*:\s*)?map\s*:\s*(.+?)\s*$" % _NAME)


@dataclass(frozen=True)
class Task:
    """One softmax head: its name, class count, source column and optional derivation.

    ``derive`` is None for a direct task, else ("compare", op, value),
    ("in", negate, values) or ("map", {source_class: derived_class}).
    """

    name: str
    num_classes: int
    column: int
    derive: Optional[tuple] = None
    expression: str = ""

    def to_dict(self):
        """JSON-friendly description, for config.json."""
        derive = self.derive
        if derive and derive[0] == "map":
            derive = ("map", {str(k): v for k, v in derive[1].items()})
        elif derive and derive[0] == "in":
            derive = ("in", derive[1], sorted(derive[2]))
        return {"name": self.name, "num_classes": self.num_classes, "column": self.column,
                "derive": list(derive) if derive else None, "expression": self.expression}

    @classmethod
    def from_dict(cls, d):
        """Inverse of to_dict."""
        derive = d.get("derive")
        if derive and derive[0] == "map":
            derive = ("map", {int(k): int(v) for k, v in derive[1].items()})
        elif derive and derive[0] == "in":
            derive = ("in", bool(derive[1]), frozenset(derive[2]))
        elif derive:
            derive = tuple(derive)
        return cls(d["name"], int(d["num_classes"]), int(d["column"]), derive, d.get("expression", ""))

    def label_from(self, value):
        """This task's label for a source-column value (missing stays missing)."""
        if value == MISSING_LABEL or self.derive is None:
            return value
        kind = self.derive[0]
        if kind == "compare":
            return int(_COMPARE[self.derive[1]](value, self.derive[2]))
        if kind == "in":
            return int((value in self.derive[2]) != self.derive[1])
        return self.derive[1].get(value, MISSING_LABEL)


def default_column_names(width):
    """Column names: 'label' for one column, 'label1'..'labelK' for several."""
    return ["label"] if width == 1 else ["label%d" % (i + 1) for i in range(width)]


def _read_map_file(path, where):
    if not os.path.isfile(path):
        raise UserInputError("%s: mapping file %r does not exist. It needs one 'source_class derived_class' "
                             "pair per line." % (where, path))
    mapping = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.replace(",", " ").split()
            if len(parts) != 2 or not all(re.match(r"^-?\d+$", p) for p in parts):
                raise UserInputError("%s:%d: expected 'source_class derived_class' (two integers), found %r."
                                     % (path, number, text))
            mapping[int(parts[0])] = int(parts[1])
    if not mapping:
        raise UserInputError("mapping file %s is empty." % path)
    return mapping


def parse_derived_task(text, column_names: Sequence[str], num_classes: Sequence[int]):
    """Parse ``name=EXPR`` into a Task. EXPR: ``col>0``, ``col in {1,2}``, ``[col:]map:FILE``."""
    where = "--derived-task %r" % text
    if "=" not in text or text.index("=") == 0:
        raise UserInputError("%s: expected NAME=EXPRESSION, e.g. 'label_gt0=label>0'." % where)
    name, expr = text.split("=", 1)
    name = name.strip()
    if expr.startswith("="):  # 'name==...' is a typo for 'name=...'
        raise UserInputError("%s: expected NAME=EXPRESSION with a single '=' after the name." % where)
    if not re.match("^%s$" % _NAME, name):
        raise UserInputError("%s: task name %r must be letters, digits and '_'." % (where, name))
    for pattern, build in ((_COMPARE_RE, _compare), (_IN_RE, _class_set), (_MAP_RE, _mapping)):
        match = pattern.match(expr)
        if match:
            column_name = match.group(1) or column_names[0]
            if column_name not in column_names:
                raise UserInputError("%s: no label column named %r; the columns are %s."
                                     % (where, column_name, ", ".join(column_names)))
            column = list(column_names).index(column_name)
            derive, classes = build(match, where)
            return Task(name, classes, column, derive, expr.strip())
    raise UserInputError("%s: cannot parse %r. Write a comparison ('label>0'), a class set "
                         "('label in {1,2,3}') or a mapping file ('map:groups.txt')." % (where, expr))


def _compare(match, where):
    return ("compare", match.group(2), int(match.group(3))), 2


def _class_set(match, where):
    values = frozenset(int(v) for v in match.group(3).split(","))
    return ("in", match.group(2) != "in", values), 2


def _mapping(match, where):
    mapping = _read_map_file(match.group(2), where)
    if min(mapping.values()) < 0:
        raise UserInputError("%s: derived classes in the mapping must be 0 or more." % where)
    return ("map", mapping), max(mapping.values()) + 1


def build_tasks(num_classes: Sequence[int], task_names: Optional[Sequence[str]] = None,
                derived: Optional[Sequence[str]] = None):
    """Direct tasks (one per label column) followed by derived tasks.

    With one column and no ``derived`` given, adds the original's ``label_gt0 = label > 0``.
    """
    names = list(task_names) if task_names else default_column_names(len(num_classes))
    if len(names) != len(num_classes):
        raise UserInputError("--task-names gives %d name(s) for %d label column(s)." % (len(names), len(num_classes)))
    tasks = [Task(n, int(k), i) for i, (n, k) in enumerate(zip(names, num_classes))]
    if derived is None:
        derived = ["%s_gt0=%s>0" % (names[0], names[0])] if len(num_classes) == 1 else []
    tasks += [parse_derived_task(text, names, num_classes) for text in derived]
    seen = set()
    for task in tasks:
        if task.name in seen:
            raise UserInputError("two tasks are named %r; task names must be unique." % task.name)
        if task.num_classes < 2:
            raise UserInputError("task %r has %d class(es); a softmax head needs at least 2. "
                                 "Check --num-classes." % (task.name, task.num_classes))
        seen.add(task.name)
    return tasks


def task_labels(tasks: Sequence[Task], column_labels: Sequence[int]):
    """Labels of every task for one image (int32 array, -1 where unknown)."""
    return np.array([t.label_from(column_labels[t.column]) for t in tasks], dtype=np.int32)


def class_histograms(tasks: Sequence[Task], rows):
    """{task name: [count per class]} plus the missing count under key 'missing'."""
    out = {}
    labels = np.array([task_labels(tasks, r) for r in rows], dtype=np.int32).reshape(-1, len(tasks))
    for i, task in enumerate(tasks):
        column = labels[:, i]
        counts = np.bincount(column[column >= 0], minlength=task.num_classes)
        out[task.name] = {"counts": counts.tolist(), "missing": int((column < 0).sum())}
    return out


def add_arguments(parser):
    """Task flags."""
    group = parser.add_argument_group("tasks")
    group.add_argument("--num-classes", default=None,
                       help="classes per label column, e.g. 4 or 4,2 (default: inferred from the lists)")
    group.add_argument("--task-names", default=None, help="names of the label columns' tasks, e.g. animal,place")
    group.add_argument("--derived-task", action="append", default=None, metavar="NAME=EXPR",
                       help="a task computed from a column: 'label_gt0=label>0' (the default with one "
                            "column), 'pet=label in {1,2}', 'group=map:groups.txt'. Repeatable.")
    group.add_argument("--no-derived-task", action="store_true",
                       help="with one label column, train only the class task (no label_gt0)")
    group.add_argument("--classes", default=None,
                       help="class-name files, one per task in task order, comma-separated")


def parse_num_classes(text):
    """'4' or '4,2' -> [4] or [4, 2]; None stays None (infer)."""
    if text is None:
        return None
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserInputError("--num-classes %r: expected a class count per label column, e.g. 4 or 4,2." % text)
    return values


def read_class_names(tasks, classes_flag):
    """{task: [class names]} from --classes files, numbered names where none given."""
    files = [f.strip() for f in classes_flag.split(",")] if classes_flag else []
    names = {}
    for i, task in enumerate(tasks):
        if i < len(files) and files[i]:
            if not os.path.isfile(files[i]):
                raise UserInputError("--classes: file %r does not exist." % files[i])
            with open(files[i], encoding="utf-8") as f:
                listed = [line.strip() for line in f if line.strip()]
            if len(listed) != task.num_classes:
                raise UserInputError("--classes %s: %d name(s) for task %s, which has %d classes."
                                     % (files[i], len(listed), task.name, task.num_classes))
            names[task.name] = listed
        elif task.derive and task.derive[0] in ("compare", "in"):
            names[task.name] = ["no", "yes"]
        else:
            names[task.name] = [str(c) for c in range(task.num_classes)]
    return names

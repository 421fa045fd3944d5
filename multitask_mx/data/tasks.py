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
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import UserInputError
from .lst_format import MISSING_LABEL

_logger = logging.getLogger(__name__)

_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
            "==": operator.eq, "!=": operator.ne}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_COMPARE_RE = re.compile(r"^\s*(%s)\s*(>=|<=|==|!=|>|<)\s*(-?\d+)\s*$" % _NAME)
_IN_RE = re.compile(r"^\s*(%s)\s+(not\s+in|in)\s*\{\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*\}\s*$" % _NAME)
_MAP_RE = re.compile(r"^\s*(?:(%s)\s*:\s*)?map\s*:\s*(.+?)\s*$" % _NAME)
_SECTION_RE = re.compile(r"^\[\s*(%s)\s*\]$" % _NAME)


@dataclass(frozen=True)
class Task:
    """One softmax head: its name, class count, source column and optional derivation.

    ``derive`` is None for a direct task, else ("compare", op, value),
    ("in", negate, values) or ("map", {source_class: derived_class}).
    """

    name: str
    num_classes: int  # head units: classes; 1 for "regress"; attributes for "multilabel"
    column: int  # the (first) label column
    derive: Optional[tuple] = None
    expression: str = ""
    kind: str = "class"  # "class" (softmax), "regress" or "multilabel" (task_kinds.py)
    mean: float = 0.0  # regress: the training list's mean and std, the head predicts (value - mean) / std
    std: float = 1.0
    attributes: tuple = ()  # multilabel: the attributes' names (one per column)

    def to_dict(self):
        """JSON-friendly description, for config.json."""
        derive = self.derive
        if derive and derive[0] == "map":
            derive = ("map", {str(k): v for k, v in derive[1].items()})
        elif derive and derive[0] == "in":
            derive = ("in", derive[1], sorted(derive[2]))
        out = {"name": self.name, "num_classes": self.num_classes, "column": self.column,
               "derive": list(derive) if derive else None, "expression": self.expression}
        if self.kind != "class":  # config.json of softmax-only runs stays as it was
            out.update(kind=self.kind, mean=self.mean, std=self.std, attributes=list(self.attributes))
        return out

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
        # runs written before task kinds have no "kind": softmax classification
        return cls(d["name"], int(d["num_classes"]), int(d["column"]), derive, d.get("expression", ""),
                   d.get("kind", "class"), float(d.get("mean", 0.0)), float(d.get("std", 1.0)),
                   tuple(d.get("attributes", ())))

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


def config_lines(path):
    """(line number, text) of a small settings file, '#' comments and blank lines left out."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            text = line.split("#", 1)[0].strip()
            if text:
                yield number, text


def _read_map_file(path, where):
    if not os.path.isfile(path):
        raise UserInputError("%s: mapping file %r does not exist. It needs one 'source_class derived_class' "
                             "pair per line." % (where, path))
    mapping = {}
    for number, text in config_lines(path):
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
            task = Task(name, classes, column, derive, expr.strip())
            _check_derivation_varies(task, num_classes[column], column_name, where)
            return task
    raise UserInputError("%s: cannot parse %r. Write a comparison ('label>0'), a class set "
                         "('label in {1,2,3}') or a mapping file ('map:groups.txt')." % (where, expr))


def _check_derivation_varies(task, source_classes, column_name, where):
    # 'label>7' on a 4-class column would train a head on a constant: refuse it.
    values = {task.label_from(c) for c in range(source_classes)} - {MISSING_LABEL}
    if len(values) < 2:
        raise UserInputError("%s: over the %d classes of %s (0..%d) this task is always %s, so there is "
                             "nothing to learn. Check the number or classes in the expression."
                             % (where, source_classes, column_name, source_classes - 1,
                                values.pop() if values else "unknown"))


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
        if derived:
            announce_default_derived(names[0])
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


_ANNOUNCED = set()  # default derived tasks already explained in this process (once each)


def announce_default_derived(column):
    """Say, once per process, that a one-column list gets the original's second task, and how to change that.

    The original multi-task-MXNet always trained ``label > 0`` beside the class; its flags and data keep
    that behaviour here, but a user with one column of, say, animals would otherwise never learn why a
    "not class 0" head appears in every log and report.
    """
    if column in _ANNOUNCED:
        return
    _ANNOUNCED.add(column)
    _logger.info("one label column: adding the original multi-task-MXNet's second task %s_gt0 = %s > 0 (is the "
                 "class other than class 0?), trained and reported beside %s. --no-derived-task trains %s alone; "
                 "a second label column in the list (--num-classes 4,2) or --derived-task NAME=EXPR gives a real "
                 "second task (docs/tasks.md)", column, column, column, column)


def task_labels(tasks: Sequence[Task], column_labels: Sequence[int]):
    """Labels of every task for one image (int32 array, -1 where unknown)."""
    return np.array([t.label_from(column_labels[t.column]) for t in tasks], dtype=np.int32)


def task_label_matrix(tasks: Sequence[Task], column_labels):
    """Labels of every task for every image: (images x tasks) int32 from (images x columns) labels.

    Each task's derivation runs once per class value (a look-up table), not once per image.
    """
    column_labels = np.asarray(column_labels, dtype=np.int64)
    if column_labels.ndim == 1:  # one label per image
        column_labels = column_labels.reshape(-1, 1)
    out = np.empty((len(column_labels), len(tasks)), np.int32)
    for i, task in enumerate(tasks):
        column = column_labels[:, task.column]
        low, high = (int(column.min()), int(column.max())) if len(column) else (0, -1)
        if high - low < 1 << 20:
            table = np.array([task.label_from(v) for v in range(low, high + 1)], np.int32)
            out[:, i] = table[column - low]
        else:  # huge class numbers: the distinct values only
            values, inverse = np.unique(column, return_inverse=True)
            out[:, i] = np.array([task.label_from(int(v)) for v in values], np.int32)[inverse]
    return out


def class_histograms(tasks: Sequence[Task], rows):
    """{task name: [count per class]} plus the missing count under key 'missing'.

    ``rows``: the images' column labels (a list of tuples or an images x columns array).
    """
    out = {}
    labels = task_label_matrix(tasks, rows)
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
                       help="class names: files (one name per line) for the tasks in order, comma-separated, "
                            "or one file with a [task] section per task")


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
    """{task: [class names]} from --classes, numbered (or no/yes) names where none given.

    ``classes_flag`` is comma-separated files: a plain file (one name per line) names
    the task at its position; a file of ``[task]`` sections names the tasks it lists.
    """
    files = [f.strip() for f in classes_flag.split(",")] if classes_flag else []
    given = {}
    for i, path in enumerate(files):
        if not path:
            continue
        sections = _read_names_file(path, [t.name for t in tasks])
        if sections is None:  # a plain file: the task at this position
            if i >= len(tasks):
                raise UserInputError("--classes: %d file(s) for %d task(s); %s has no task. Give one file per task "
                                     "in task order (%s), or one file with [task] sections."
                                     % (len(files), len(tasks), path, ", ".join(t.name for t in tasks)))
            with open(path, encoding="utf-8") as f:
                sections = {tasks[i].name: (path, [line.strip() for line in f if line.strip()])}
        for name, found in sections.items():
            if name in given:
                raise UserInputError("--classes: task %s is named by both %s and %s."
                                     % (name, given[name][0], found[0]))
            given[name] = found
    names = {}
    for task in tasks:
        if task.name in given:
            where, listed = given[task.name]
            if len(listed) != task.num_classes:
                raise UserInputError("--classes %s: %d name(s) for task %s, which has %d classes."
                                     % (where, len(listed), task.name, task.num_classes))
            names[task.name] = listed
        elif task.kind == "regress":
            names[task.name] = [task.name]
        elif task.kind == "multilabel":
            names[task.name] = list(task.attributes)
        elif task.derive and task.derive[0] in ("compare", "in"):
            names[task.name] = ["no", "yes"]
        else:
            names[task.name] = [str(c) for c in range(task.num_classes)]
    return names


def _read_names_file(path, task_names):
    """{task: (where, names)} for a file of ``[task]`` sections; None for a plain names file."""
    if not os.path.isfile(path):
        raise UserInputError("--classes: file %r does not exist." % path)
    with open(path, encoding="utf-8") as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]
    if not lines or not _SECTION_RE.match(lines[0][1]):
        return None
    sections, current = {}, None
    for number, text in lines:
        header = _SECTION_RE.match(text)
        if header is None:
            current[1].append(text)
            continue
        name = header.group(1).strip()
        if name not in task_names:
            raise UserInputError("%s:%d: section [%s] names no task; the tasks are %s."
                                 % (path, number, name, ", ".join(task_names)))
        if name in sections:
            raise UserInputError("%s:%d: a second [%s] section." % (path, number, name))
        current = sections[name] = ("%s [%s]" % (path, name), [])
    return sections


def derivation_matrix(task: Task, source_classes: int):
    """0/1 matrix (source classes x task classes): which source class gives which derived class.

    Summing a source head's probabilities through it gives the derived task's answer
    implied by the source head; source classes a map leaves out give no row.
    """
    matrix = np.zeros((source_classes, task.num_classes), np.float32)
    for c in range(source_classes):
        derived = task.label_from(c)
        if 0 <= derived < task.num_classes:
            matrix[c, derived] = 1.0
    return matrix


def agreement_pairs(tasks: Sequence[Task]):
    """[(derived task index, source task index, derivation matrix)] for every derived task."""
    direct = {t.column: i for i, t in enumerate(tasks) if t.derive is None}
    return [(i, direct[t.column], derivation_matrix(t, tasks[direct[t.column]].num_classes))
            for i, t in enumerate(tasks) if t.derive is not None and t.column in direct]


def check_columns_labelled(image_list, column_names: Sequence[str]):
    """Raise if a label column has no known label (every line -1) in ``image_list``."""
    for column, name in enumerate(column_names):
        if (image_list.labels[:, column] == MISSING_LABEL).all():
            raise UserInputError("%s: every label of column %d (task %s) is -1 (unknown), so that task has "
                                 "nothing to learn from. Label some images, or remove the column."
                                 % (image_list.source, column + 1, name))


def check_tasks_labelled(tasks: Sequence[Task], image_list):
    """Raise if a task (e.g. a map that covers no listed class) has no known label in ``image_list``."""
    histograms = class_histograms(tasks, image_list.labels)
    for task in tasks:
        if not sum(histograms[task.name]["counts"]):
            how = " (= %s)" % task.expression if task.expression else ""
            raise UserInputError("%s: task %s%s has no known label on any line (all %d unknown), so it has "
                                 "nothing to learn from. Label some images, or fix the derived task."
                                 % (image_list.source, task.name, how, len(image_list)))

"""``multitask-mx evaluate``: accuracy, top-k, loss, per-class report and confusion of a saved model on a list."""
import json
import logging
import os
import sys

import numpy as np

from ..use import inference, quantize
from ..use.settings import PredictSettings
from ..atomic import check_output_file, finite_or_none, write_output
from ..runfolder import RunDir
from ..errors import UserInputError
from ..data import label_tables
from ..data.lists import check_list_path, read_list
from ..data.task_kinds import has_kinds
from ..use import kind_reports
from ..logs import setup_logging
from ..training.metrics import add_top_k_flag
from ..use.reports import format_task_report, plot_confusion, task_report
from ..data.tasks import agreement_pairs, task_labels

_logger = logging.getLogger(__name__)


def add_arguments(parser):
    """Evaluate flags: the model, the data, the reports."""
    inference.add_arguments(parser)
    quantize.add_arguments(parser)
    group = parser.add_argument_group("data")
    group.add_argument("--data", "--data-val", dest="data", required=True,
                       help="the .lst file to evaluate on (e.g. PREFIX_test.lst from make-list)")
    group.add_argument("--image-root", "--image-val", dest="image_root", default=None,
                       help="folder the list's paths are relative to (default: the list's folder)")
    group = parser.add_argument_group("report")
    add_top_k_flag(group, [1, 5], "evaluate reports each K given")
    group.add_argument("--json", default=None, metavar="FILE", help="write the report as JSON")
    group.add_argument("--confusion-png", default=None, metavar="FILE",
                       help="write the confusion matrix as a PNG; with several tasks, FILE_<task>.png each")
    group.add_argument("--per-image", action="store_true",
                       help="add each image's labels and predicted classes to the JSON")


def read_eval_list(lst_path, image_root, tasks=()):
    """The list to evaluate, with messages that name this command's flags."""
    check_list_path(lst_path)  # missing, a folder or a device: said as such; a pipe is read once
    if image_root and not os.path.isdir(image_root):
        raise UserInputError("--image-root %s is not a folder. Give the folder the paths in %s are relative to."
                             % (image_root, lst_path))
    if has_kinds(tasks) or label_tables.is_csv(lst_path):  # labels that may be real numbers
        return label_tables.read_table(lst_path, image_root)[0]
    return read_list(lst_path, image_root)


def list_labels(model, image_list):
    """Labels of every task for every entry (N x tasks), checked against the model's classes."""
    needed = max(t.column + (t.num_classes if t.kind == "multilabel" else 1) for t in model.tasks)
    if image_list.num_label_columns < needed:
        raise UserInputError("%s has %d label column(s), but the model's tasks read %d (%s). Evaluate on a "
                             "list with the same columns as the training list."
                             % (image_list.source, image_list.num_label_columns, needed,
                                ", ".join("%s: column %d" % (t.name, t.column + 1) for t in model.tasks)))
    if image_list.num_label_columns > needed:
        _logger.warning("%s has %d label columns but the model's tasks read only the first %d (%s): column(s) "
                        "%d-%d are ignored. Was the model trained on another list?",
                        image_list.source, image_list.num_label_columns, needed,
                        ", ".join("%s: column %d" % (t.name, t.column + 1) for t in model.tasks),
                        needed + 1, image_list.num_label_columns)
    if image_list.labels.dtype.kind == "f":  # a CSV, or a model with regress/multilabel tasks
        labels = kind_reports.class_labels(model.tasks, image_list)
    else:
        labels = np.stack([task_labels(model.tasks, e.labels) for e in image_list.entries])
    for k, task in enumerate(model.tasks):
        bad = np.nonzero(labels[:, k] >= task.num_classes)[0]
        if len(bad):
            entry = image_list.entries[bad[0]]
            raise UserInputError("%s: label %d of task %s is out of range: the model has %d classes (0..%d). "
                                 "Is this list from the same data as the training list?"
                                 % (image_list.where(entry), labels[bad[0], k], task.name, task.num_classes,
                                    task.num_classes - 1))
    return labels


def build_report(model, image_list, labels, predictions, ks, per_image=False):
    """The evaluation report (see docs/using_the_model.md for the schema)."""
    ok = predictions.ok()
    report = {"model": model.describe(),
              "data": {"list": image_list.source, "image_root": image_list.image_root},
              "num_images": int(ok.sum()),
              "failed": [{"line": image_list.entries[i].line, "path": predictions.paths[i], "error": reason}
                         for i, reason in sorted(predictions.failed.items())],
              "tasks": {}}
    targets = kind_reports.kind_targets(model.tasks, image_list)
    for k, task in enumerate(model.tasks):
        if task.kind == "regress":
            report["tasks"][task.name] = kind_reports.regress_report(task, predictions.log_probs[k][ok],
                                                                     targets[k][ok])
        elif task.kind == "multilabel":
            report["tasks"][task.name] = kind_reports.multilabel_report(
                np.exp(predictions.log_probs[k][ok]), targets[k][ok], model.classes[task.name])
        else:
            report["tasks"][task.name] = task_report(predictions.log_probs[k][ok], labels[ok, k],
                                                     model.classes[task.name], ks)
    agreement = head_agreement(model, labels, predictions, ok)
    if agreement:
        report["agreement"] = agreement
    if per_image:
        report["images"] = per_image_rows(model, image_list, labels, predictions)
    return report


def head_agreement(model, labels, predictions, ok):
    """{derived task: how often its head gives the answer its source head implies}, as training logs it.

    On the images labelled for the derived task: the source head's probabilities
    summed through the derivation (for label>0: 1 - p(class 0)) against the
    derived head's own prediction. None for a task with no labelled image.
    """
    out = {}
    for derived, source, matrix in agreement_pairs(model.tasks):
        rows = ok & (labels[:, derived] >= 0)
        if not rows.any():
            out[model.tasks[derived].name] = None
            continue
        implied = np.argmax(np.exp(predictions.log_probs[source][rows]) @ matrix, axis=1)
        own = np.argmax(predictions.log_probs[derived][rows], axis=1)
        out[model.tasks[derived].name] = float((implied == own).mean())
    return out


def per_image_rows(model, image_list, labels, predictions):
    """One row per image: line, path, labels and predicted class index per task."""
    rows = []
    for i, entry in enumerate(image_list.entries):
        row = {"line": entry.line, "path": entry.path,
               "labels": {t.name: int(labels[i, k]) for k, t in enumerate(model.tasks)}}
        if i in predictions.failed:
            row["error"] = predictions.failed[i]
        else:
            row["predicted"] = {t.name: int(np.argmax(predictions.log_probs[k][i]))
                                for k, t in enumerate(model.tasks) if t.kind == "class"}
        rows.append(row)
    return rows


def precision_change(model, labels, reference, predictions):
    """{task: accuracy in this precision and in fp32, the change, top-1 agreement} on the same images."""
    ok = reference.ok() & predictions.ok()
    out = {}
    for k, task in enumerate(model.tasks):
        ours, theirs = (np.argmax(p.log_probs[k][ok], axis=1) for p in (predictions, reference))
        labelled = labels[ok, k] >= 0
        acc = float((ours == labels[ok, k])[labelled].mean()) if labelled.any() else float("nan")
        acc32 = float((theirs == labels[ok, k])[labelled].mean()) if labelled.any() else float("nan")
        out[task.name] = {"accuracy": acc, "fp32_accuracy": acc32, "change": acc - acc32,
                          "top1_agreement": float((ours == theirs).mean()) if ok.any() else float("nan"),
                          "num_images": int(ok.sum())}
    return out


def confusion_paths(path, task_names):
    """{task: png path}: ``path`` itself for one task, ``stem_<task>.png`` for several."""
    if len(task_names) == 1:
        return {task_names[0]: path}
    stem, ext = os.path.splitext(path)
    return {name: "%s_%s%s" % (stem, name, ext or ".png") for name in task_names}


def confusion_notice(asked, task, path):
    """The line saying where a task's confusion PNG went, and why its name differs from ``--confusion-png``."""
    if path == asked:
        return "wrote %s's confusion matrix to %s" % (task, path)
    return "wrote %s's confusion matrix to %s (--confusion-png %s: one file per task, named FILE_<task>.png)" % (
        task, path, asked)


def write_json(path, report):
    """Write the report atomically, creating the folder (or to standard output for ``-``)."""
    # NaN (a task with no labelled image) becomes null: strict JSON
    write_output(path, json.dumps(finite_or_none(report), indent=2, allow_nan=False) + "\n")


def run(args):
    """Entry point of ``multitask-mx evaluate``."""
    setup_logging(None, quiet=args.quiet)
    ks = args.top_k
    settings = PredictSettings.from_args(args)
    cfg = inference.predict_config(settings, args.precision)
    inputs, run = (("--data", args.data),), RunDir(args.save_result, args.save_name)
    for flag, path in (("--json", args.json), ("--confusion-png", args.confusion_png)):
        if path:
            check_output_file(path, flag, inputs, run)  # before the predictions, not after
    model = inference.load_model(args.save_result, args.save_name, args.epoch, inference.model_contexts(settings),
                                 weights=args.weights)
    precision_cfg = quantize.PrecisionConfig.from_args(args)
    image_list = read_eval_list(args.data, args.image_root, model.tasks)
    labels = list_labels(model, image_list)
    paths = [e.path for e in image_list.entries]
    reference = None
    if precision_cfg.precision != "fp32":  # the fp32 figures on the same list, to report the change
        quantize.check_precision(precision_cfg.precision, model.ctxs)
        reference = inference.predict_paths(model, paths, cfg)
        model = quantize.apply_precision(model, precision_cfg)
    predictions = inference.predict_paths(model, paths, cfg)
    if len(predictions.failed) == len(image_list.entries):
        raise UserInputError("none of the %d images of %s could be read (first: %s %s). Is --image-root the "
                             "folder the paths are relative to? It is %s."
                             % (len(image_list.entries), image_list.source, predictions.paths[0],
                                predictions.failed[0], image_list.image_root))
    report = build_report(model, image_list, labels, predictions, ks, args.per_image)
    if reference is not None:
        report["precision_change"] = precision_change(model, labels, reference, predictions)
    print("evaluated %s epoch %s on %d image(s) of %s" % (model.save_name, model.epoch, report["num_images"],
                                                          image_list.source))
    for name, task in report["tasks"].items():
        print(kind_reports.format_kind_report(name, task) if "kind" in task else format_task_report(name, task))
    for name, value in report.get("agreement", {}).items():
        if value is not None:
            print("agreement of %s's head with the answer its source head implies: %.4f" % (name, value))
    for name, change in report.get("precision_change", {}).items():
        print("%s in %s: accuracy %.4f vs fp32 %.4f (change %+.4f); top-1 agrees with fp32 on %.2f%% of images"
              % (name, model.precision, change["accuracy"], change["fp32_accuracy"], change["change"],
                 100 * change["top1_agreement"]))
    if args.json:
        write_json(args.json, report)
    if args.confusion_png:
        class_tasks = [t.name for t in model.tasks if t.kind == "class"]  # the others have no confusion matrix
        for name, path in confusion_paths(args.confusion_png, class_tasks).items():
            task = report["tasks"][name]
            plot_confusion(task["confusion"], task["classes"], path,
                           "%s: accuracy %.4f on %d image(s)" % (name, task["accuracy"], task["num_labelled"]))
            print(confusion_notice(args.confusion_png, name, path))
    if predictions.failed:
        print("%d image(s) could not be read and were left out (listed above%s)."
              % (len(predictions.failed), " and in the JSON" if args.json else ""), file=sys.stderr)
        return 1
    return 0

"""``multitask-mx predict``: top-k classes per task for image files, folders or an .lst, as a table, JSON or CSV."""
import csv
import io
import json
import logging
import os
import sys

import numpy as np

from ..use import cam, inference, quantize
from ..use.settings import PredictSettings
from ..data.image_files import IMAGE_EXTENSIONS, find_image_files
from ..use.predictions import Item, add_show_flag, prediction_rows
from ..atomic import check_output_dir, check_output_file, is_stdout, write_output
from ..runfolder import RunDir
from ..errors import UserInputError
from ..data import label_tables
from ..data.lists import read_list
from ..logs import setup_logging

_logger = logging.getLogger(__name__)


def add_arguments(parser):
    """Predict flags: inputs, the model, the output formats."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders (searched recursively), .lst files or .csv lists (a path column)")
    inference.add_arguments(parser)
    quantize.add_arguments(parser)
    group = parser.add_argument_group("inputs")
    group.add_argument("--image-root", default=None,
                       help="folder the paths of an .lst INPUT are relative to (default: the list's folder)")
    group.add_argument("--exts", default=",".join(IMAGE_EXTENSIONS),
                       help="image extensions looked for in folders, comma-separated")
    group = parser.add_argument_group("output")
    add_show_flag(group, "shown")
    group.add_argument("--json", default=None, metavar="FILE", help="write the predictions as JSON ('-': stdout)")
    group.add_argument("--csv", default=None, metavar="FILE",
                       help="write one row per image, task and rank as CSV ('-': stdout)")
    cam.add_arguments(parser)


def collect_inputs(inputs, image_root, extensions):
    """Expand INPUTs (files, folders, .lst files) into Items, in order."""
    if image_root and not os.path.isdir(image_root):
        raise UserInputError("--image-root %s is not a folder. Give the folder the .lst paths are relative to."
                             % image_root)
    items = []
    for text in inputs:
        if text.lower().endswith((".lst", ".csv")):
            if not os.path.isfile(text):
                raise UserInputError("list %s does not exist." % text)
            image_list = label_tables.read_csv_list(text, image_root)[0] if label_tables.is_csv(text) else \
                read_list(text, image_root)
            items += [Item(os.path.relpath(e.path, image_list.image_root), e.path, e.line)
                      for e in image_list.entries]
        elif os.path.isdir(text):
            found = find_image_files(text, extensions)
            if not found:
                raise UserInputError("folder %s has no images (looked for %s, in sub-folders too)."
                                     % (text, ", ".join(extensions)))
            items += [Item(p, p) for p in found]
        elif os.path.exists(text) or text.lower().endswith(tuple(extensions)):
            items.append(Item(text, text))  # a missing image is reported with the other failures
        else:
            raise UserInputError("INPUT %s does not exist: give image files, folders or .lst files." % text)
    return items


def answer_text(answer):
    """One task's answer as a table cell: 'class prob; ...', a value, or the attributes with their probabilities."""
    if isinstance(answer, dict):  # regress
        return "%.4g" % answer["value"]
    if answer and "attribute" in answer[0]:  # multilabel: present ones marked with +
        return " ".join("%s%s %.2f" % ("+" if a["present"] else "-", a["attribute"], a["prob"]) for a in answer)
    return "; ".join("%s %.3f" % (c["class"], c["prob"]) for c in answer)


def table_text(model, rows):
    """Fixed-width table: one line per image, one column per task ('class prob, ...', a value, attributes)."""
    cells = [[r["path"]] + ([answer_text(r["tasks"][t]) for t in model.task_names]
                            if "tasks" in r else ["ERROR: " + r["error"]])
             for r in rows]
    header = ["image"] + model.task_names
    widths = [max(len(c[i]) for c in cells + [header] if i < len(c)) for i in range(len(header))]
    lines = []
    for cols in [header] + cells:
        lines.append("  ".join(col.ljust(w) for col, w in zip(cols, widths)).rstrip())
    return "\n".join(lines) + "\n"


def csv_text(rows):
    """Long CSV: path, line, task, rank, class_index, class, probability, error, value.

    A regress task gives one row with its ``value``; a multilabel task one row per
    attribute (class = the attribute, value = 1 if present at probability 0.5, else 0).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "line", "task", "rank", "class_index", "class", "probability", "error", "value"])
    for r in rows:
        line = r.get("line", "")
        if "error" in r:
            writer.writerow([r["path"], line, "", "", "", "", "", r["error"], ""])
            continue
        for task, answer in r["tasks"].items():
            if isinstance(answer, dict):
                writer.writerow([r["path"], line, task, 1, "", "", "", "", "%.6g" % answer["value"]])
                continue
            for rank, c in enumerate(answer, start=1):
                value = int(c["present"]) if "present" in c else ""
                writer.writerow([r["path"], line, task, rank, c["index"], c.get("class", c.get("attribute")),
                                 "%.6g" % c["prob"], "", value])
    return out.getvalue()


def run(args):
    """Entry point of ``multitask-mx predict``."""
    setup_logging(None, quiet=args.quiet)
    settings = PredictSettings.from_args(args)
    cfg = inference.predict_config(settings, args.precision)
    inputs = [("the input", path) for path in args.inputs]
    run = RunDir(args.save_result, args.save_name)
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        if path:
            check_output_file(path, flag, inputs, run)  # before the predictions, not after
    if args.cam_class and not args.cam:
        raise UserInputError("--cam-class chooses the class of the heat maps that --cam DIR writes: give --cam DIR.")
    if args.cam:
        check_output_dir(args.cam, "--cam")
    extensions = tuple(e.strip() if e.strip().startswith(".") else "." + e.strip()
                       for e in args.exts.split(",") if e.strip())
    items = collect_inputs(args.inputs, args.image_root, extensions)
    model = inference.load_model(args.save_result, args.save_name, args.epoch, inference.model_contexts(settings),
                                 weights=args.weights)
    model = quantize.apply_precision(model, quantize.PrecisionConfig.from_args(args))
    cam_classes = cam.parse_class_choices(args.cam_class, model) if args.cam else None
    predictions = inference.predict_paths(model, [i.path for i in items], cfg)
    rows = prediction_rows(model, items, predictions, args.show)
    if args.cam:  # the class predict reports (after --tta, --precision); the maps come from the fp32 weights
        predicted = {t: np.argmax(np.nan_to_num(lp, nan=0.0), axis=1) for t, lp in zip(model.task_names,
                                                                                     predictions.log_probs)}
        cam.write_cams(model, items, args.cam, cam_classes, predicted, cfg.batch_size)
    if args.json:
        document = {"model": model.describe(), "tta": args.tta, "tasks": model.task_names,
                    "num_images": len(items), "num_failed": len(predictions.failed), "predictions": rows}
        write_output(args.json, json.dumps(document, indent=2) + "\n")
    if args.csv:
        write_output(args.csv, csv_text(rows))
    if not any(is_stdout(p) for p in (args.json, args.csv) if p):
        sys.stdout.write(table_text(model, rows))
    if predictions.failed:
        print("%d of %d image(s) could not be read (listed above); the others were predicted."
              % (len(predictions.failed), len(items)), file=sys.stderr)
        return 1
    return 0

"""Learning quality (issue 10): held-out accuracy of train's defaults against other recipes, on real images.

Each run is the real CLI (`python -m multitask_mx train ...` in a subprocess, cifar_resnet20_v1 at
32 px); the figure is the last epoch's validation accuracy of the `label` task read from the run's
history.json (label_gt0, the derived task, is stored too). Two datasets that packages ship
(benchmarks/learning_data.py), each at two budgets (images x epochs), four recipes side by side:

  default   no augmentation or lr flags: what a user gets
  none, light, standard
            the presets (--augment NAME), default lr and batch: issue 10's check is
            "default within 0.02 of the best preset" (before --augment existed: the nearest flags)
  light-noflip, standard-noflip
            those presets without the mirror flip, as auto uses them
  none-lr0.0125, none-lr0.05
            no augmentation at half and twice the default lr from scratch (0.025 at batch 32)
  original  multi-task-MXNet's recipe: resize + random crop + mirror (no colour), SGD lr 0.001,
            momentum 0.9, wd 0.0001, lr x0.1 at epochs 5 and 10
  tuned     the best flags found by hand for these short runs: mirror only, lr 0.01 cosine, batch 16

and fine-tune against scratch: a trunk trained on classes 0-4 (default recipe, --pretrain), saved as a
GluonCV-style .params (`features.*` names, no output layer), then `--model FILE.params` on
classes 5-9 against the same run from scratch, same budget and flags (recipes default and tuned; and
heads-1x / heads-10x, the default with the new heads at 1x and 10x the trunk's lr instead of 4x, against
the default's scratch runs; tuned-heads-4x, the tuned recipe with the heads at 4x, against tuned's).

    python benchmarks/bench_learning.py                  # full run (seeds 1 and 2; --seeds 1,2,3 for three)
    python benchmarks/bench_learning.py --datasets mnist5k --keep-runs /tmp/bl &   # split over processes,
    python benchmarks/bench_learning.py --datasets fashion --keep-runs /tmp/bl;     # then assemble:
    python benchmarks/bench_learning.py --reuse --keep-runs /tmp/bl
    python benchmarks/bench_learning.py --smoke          # each kind of run once, tiny, first dataset: CI
    python benchmarks/bench_learning.py --recipes default,tuned --datasets mnist5k

The result goes to benchmarks/results/bench_learning.json (smoke: results/smoke/).

Issue 24's grid (benchmarks/learning_grid.py: development and confirmation datasets, budgets of about
60/160/500 updates, batch 32 and 64, train's lr and the user's usual 0.1 x batch/64, scratch and
fine-tuning, every preset and the PyTorch reference), cached run by run and stored after each in
benchmarks/results/bench_learning_grid.json; docs/learning.md is generated from it (learning_report.py):

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/bench_learning.py --grid --max-minutes 60
    python benchmarks/bench_learning.py --grid --status
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402  (starts the run's load accounting)
from learning_data import DATASETS, DatasetMissing, Prepared  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, "benchmarks", ".data")
BASE = ["--network", "cifar_resnet20_v1", "--image-shape", "3,32,32", "--quiet"]
NO_COLOUR = ["--brightness", "0", "--contrast", "0", "--saturation", "0", "--hue", "0", "--rotate", "0",
             "--aspect-stretch", "0", "--pca-lighting", "0"]
ORIGINAL_OPT = ["--lr", "0.001", "--mom", "0.9", "--wd", "0.0001", "--lr-scheduler", "step",
                "--lr-step-epochs", "5,10", "--lr-factor", "0.1"]
# Found by hand on mnist5k, 500 images x 3 epochs (val acc): lr 0.001 batch 32 no augmentation 0.25;
# lr 0.01 cosine 0.47; lr 0.01 cosine batch 16 with mirror only 0.58 (twice the steps: short runs are step-bound).
TUNED_OPT = ["--lr", "0.01", "--lr-scheduler", "cosine", "--batch-size", "16"]
# name -> (flags when train has --augment, flags before it had). The original's random crop of a
# 32 px crop from the image resized to 32 px is the whole image: the centre crop, --no-rand-crop.
# none, light and standard are the presets at train's default lr and batch (only --augment differs from
# default): issue 10's check reads "best preset" off them; imagenet is left out (auto never picks it).
PRESET_RECIPES = ("none", "light", "standard")
RECIPES = {
    "default": ([], []),
    "none": (["--augment", "none"], ["--no-augment"]),
    "light": (["--augment", "light"], ["--no-rand-crop"] + NO_COLOUR),
    "standard": (["--augment", "standard"], ["--rand-crop-scale", "0.35,1", "--brightness", "0.2", "--contrast", "0.2",
                                             "--saturation", "0.2"]),
    # the presets as auto uses them, without the mirror flip; and no augmentation at half and twice the
    # default scratch lr (0.025 at batch 32): the evidence for auto's rule and for the default lr
    "light-noflip": (["--augment", "light", "--no-hflip"], None),
    "standard-noflip": (["--augment", "standard", "--no-hflip"], None),
    "none-lr0.0125": (["--augment", "none", "--lr", "0.0125"], None),
    "none-lr0.05": (["--augment", "none", "--lr", "0.05"], None),
    "original": (["--no-rand-crop"] + NO_COLOUR + ORIGINAL_OPT, ["--no-rand-crop"] + NO_COLOUR + ORIGINAL_OPT),
    "tuned": (["--no-rand-crop"] + NO_COLOUR + TUNED_OPT, ["--no-rand-crop"] + NO_COLOUR + TUNED_OPT),
    # fine-tuning only: the default with the heads at 1x and 10x the trunk's lr (the default is 4x,
    # model/finetune.py FINETUNE_HEAD_LR_MULT); their scratch column is the default's scratch runs
    "heads-1x": (["--head-lr-mult", "1"], None),
    "heads-10x": (["--head-lr-mult", "10"], None),
    # and the tuned recipe (a chosen --lr: every layer at it) with the heads at 4x: why a given --lr
    # leaves the heads' multiplier at 1
    "tuned-heads-4x": (["--no-rand-crop"] + NO_COLOUR + TUNED_OPT + ["--head-lr-mult", "4"], None),
}
# fine-tuning-only recipe -> the recipe whose scratch runs it is compared with
FINETUNE_ONLY = {"heads-1x": "default", "heads-10x": "default", "tuned-heads-4x": "tuned"}


def parse_args(argv=None):
    """Benchmark settings."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # the recipe tables' datasets: the development group (benchmarks/learning_grid.py GROUPS)
    p.add_argument("--datasets", default="fashion,mnist5k", help="comma-separated: %s" % ", ".join(DATASETS))
    quality_recipes = [r for r in RECIPES if r not in FINETUNE_ONLY]
    p.add_argument("--recipes", default=",".join(quality_recipes), help="comma-separated: %s" % ", ".join(quality_recipes))
    p.add_argument("--budgets", default="50x3,100x5",
                   help="training images per class x epochs, comma-separated (10 classes; '' for none)")
    p.add_argument("--finetune", default="50x3", help="fine-tune/scratch budget on classes 5-9 ('' to skip)")
    # 2,000 images x 5 epochs, the default recipe: a trunk that knows its own classes (held-out accuracy
    # 0.86 Fashion-MNIST, 0.98 digits), the stand-in for ImageNet weights. The earlier 750 x 3 trunk with the
    # tuned recipe (0.70 on Fashion-MNIST's clothes) was a weaker start than random weights on shoes and bags.
    p.add_argument("--pretrain", default="400x5", help="trunk's budget on classes 0-4 (default recipe)")
    p.add_argument("--finetune-recipes", default="default,tuned,heads-1x,heads-10x,tuned-heads-4x")
    p.add_argument("--val-per-class", type=int, default=50, help="held-out images per class")
    p.add_argument("--seeds", default="1,2", help="training seeds, comma-separated; figures are their mean")
    p.add_argument("--cache", default=CACHE, help="where the PNG files and lists are written once")
    p.add_argument("--keep-runs", metavar="DIR", help="keep every run's folder under DIR")
    p.add_argument("--reuse", action="store_true",
                   help="read runs already finished under --keep-runs instead of training them again")
    p.add_argument("--reuse-only", action="store_true",
                   help="like --reuse, but train nothing: runs not found are left out of the tables")
    p.add_argument("--smoke", action="store_true", help="10 images per class, 1 epoch, one seed: CI")
    p.add_argument("--grid", action="store_true", help="issue 24's grid (benchmarks/learning_grid.py): every "
                   "preset and the PyTorch reference per dataset, budget, batch, lr, scratch/fine-tuning")
    p.add_argument("--status", action="store_true", help="--grid: print which runs are done and left, run none")
    p.add_argument("--max-minutes", type=float, default=60.0, help="--grid: start no run after this long")
    p.add_argument("--columns", help="--grid: only these columns (learning_grid.COLUMNS), comma-separated")
    p.add_argument("--cells", help="--grid: only these UPDATESxBATCH cells, e.g. 160x64")
    p.add_argument("--torch-python", default=os.path.join(REPO, ".venv-torch", "bin", "python"),
                   help="--grid: a Python with torch, numpy and opencv for the torch column (GluonCV does not "
                   "import beside torch 2, so not this one)")
    args = p.parse_args(argv)
    args.datasets_given = argv is not None and "--datasets" in argv or "--datasets" in sys.argv[1:]
    if args.smoke:
        args.budgets, args.finetune, args.pretrain, args.val_per_class, args.seeds = "5x1", "5x1", "5x1", 5, "1"
        # each kind of run once (a preset, the default, fine-tuning with and without its heads' multiplier):
        # the other recipes differ only in their flags, which the tests parse
        if args.recipes == p.get_default("recipes"):
            args.recipes = "default,none"
        if args.finetune_recipes == p.get_default("finetune_recipes"):
            args.finetune_recipes = "default,heads-1x"
    args.dataset_list, args.recipe_list = args.datasets.split(","), args.recipes.split(",")
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.budget_list = [budget(b) for b in args.budgets.split(",") if b]
    for name in args.recipe_list + args.finetune_recipes.split(","):
        if name not in RECIPES:
            p.error("unknown recipe %r: choose from %s" % (name, ", ".join(RECIPES)))
    if set(args.recipe_list) & set(FINETUNE_ONLY):
        p.error("recipes %s compare fine-tuning settings: give them in --finetune-recipes" % ", ".join(FINETUNE_ONLY))
    return args


def budget(text):
    """'50x3' -> (50 images per class, 3 epochs)."""
    per_class, epochs = text.split("x")
    return int(per_class), int(epochs)


def has_augment_flag():
    """Whether this train has --augment (issue 10's presets); recipes fall back to older flags if not."""
    out = subprocess.run([sys.executable, "-m", "multitask_mx", "train", "--help"], cwd=REPO,
                         capture_output=True, text=True).stdout
    return "--augment " in out or "--augment\n" in out


class Runner:
    """Runs `multitask_mx train` subprocesses and reads their history.json."""

    def __init__(self, args, modern):
        self.args, self.modern, self.runs = args, modern, []
        self.work = args.keep_runs or tempfile.mkdtemp(prefix="bench_learning_")

    def flags(self, recipe):
        """The recipe's flags for this version of train (None: the recipe needs --augment)."""
        flags = RECIPES[recipe][0 if self.modern else 1]
        return None if flags is None else list(flags)

    def train(self, tag, train_lst, val_lst, epochs, recipe, seed, extra=()):
        """One run; returns its record (val accuracies, seconds, the command)."""
        out = os.path.join(self.work, tag)
        if self.flags(recipe) is None:
            raise SystemExit("bench_learning: recipe %s needs a train with --augment" % recipe)
        cmd = ([sys.executable, "-m", "multitask_mx", "train", "--data-train", train_lst, "--data-val", val_lst,
                "--num-epoch", str(epochs), "--seed", str(seed), "--save-result", out] + BASE
               + self.flags(recipe) + list(extra))
        reused = self.reuse(out, cmd, train_lst, epochs, seed)
        if reused:
            record = dict(reused, tag=tag, recipe=recipe)
            print("  %-44s val acc %.3f  (reused)" % (tag, record["val_acc"]), file=sys.stderr, flush=True)
            self.runs.append(record)
            return record, out
        if self.args.reuse_only:
            print("  %-44s not found under %s: left out (--reuse-only)" % (tag, self.work), file=sys.stderr)
            return None, out
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        seconds = time.time() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit("bench_learning: run %s failed (exit %d): %s" % (tag, proc.returncode, " ".join(cmd)))
        with open(os.path.join(out, "history.json")) as f:
            last = json.load(f)[-1]
        record = {"tag": tag, "recipe": recipe, "seed": seed, "epochs": epochs, "seconds": round(seconds, 1),
                  "val_acc": round(last["val"]["label"]["acc"], 4),
                  "val_acc_label_gt0": round(last["val"].get("label_gt0", {}).get("acc", float("nan")), 4),
                  "command": " ".join(["python"] + cmd[1:]).replace(REPO + "/", "")}
        with open(os.path.join(out, "bench_record.json"), "w") as f:
            json.dump(record, f)
        print("  %-44s val acc %.3f  (%.0f s)" % (tag, record["val_acc"], seconds), file=sys.stderr, flush=True)
        self.runs.append(record)
        return record, out


    def reuse(self, out, cmd, train_lst, epochs, seed):
        """With --reuse: the record of a finished run already in ``out`` (same list, epochs, seed), else None.

        Lets a long benchmark be split over processes (e.g. one per --datasets) sharing --keep-runs and
        then assembled by one run that trains nothing twice. A folder from a run that did not write
        bench_record.json is read from its history.json and config.json (its seconds: the epochs' own).
        The folder's name says the recipe: use a fresh --keep-runs folder after changing train's defaults.
        """
        history, config = os.path.join(out, "history.json"), os.path.join(out, "config.json")
        if not ((self.args.reuse or self.args.reuse_only) and os.path.exists(history) and os.path.exists(config)):
            return None
        with open(config) as f:
            saved = json.load(f).get("args", {})
        with open(history) as f:
            epochs_done = json.load(f)
        if (saved.get("data_train"), saved.get("num_epoch"), saved.get("seed")) != (train_lst, epochs, seed) \
                or len(epochs_done) != epochs:
            return None
        if os.path.exists(os.path.join(out, "bench_record.json")):
            with open(os.path.join(out, "bench_record.json")) as f:
                return json.load(f)
        last = epochs_done[-1]
        return {"seed": seed, "epochs": epochs, "seconds": round(sum(e.get("seconds", 0) for e in epochs_done), 1),
                "val_acc": round(last["val"]["label"]["acc"], 4),
                "val_acc_label_gt0": round(last["val"].get("label_gt0", {}).get("acc", float("nan")), 4),
                "command": " ".join(["python"] + cmd[1:]).replace(REPO + "/", "")}


def mean_spread(values):
    """(mean, half the range) of the seeds' figures."""
    return statistics.mean(values), (max(values) - min(values)) / 2.0


def quality(runner, data, name, args):
    """The recipes x budgets table of one dataset: {budget: {recipe: [acc per seed]}}."""
    val = data.lst("val", range(10), args.val_per_class)
    table = {}
    for per_class, epochs in args.budget_list:
        key = "%dx%d" % (per_class * 10, epochs)
        train = data.lst("train", range(10), per_class)
        records = {r: [runner.train("%s-%s-%s-s%d" % (name, key, r, s), train, val, epochs, r, s)[0]
                       for s in args.seed_list] for r in args.recipe_list}
        # a recipe without runs (--reuse-only) is left out of the row, not counted as 0
        table[key] = {r: [x["val_acc"] for x in rs if x] for r, rs in records.items() if any(rs)}
    return table


def gluoncv_params(checkpoint, path, network="cifar_resnet20_v1"):
    """Save a run's trunk as GluonCV's own ``net.save_parameters`` names it (features.*, no output layer),
    the file a user brings to ``--model FILE.params``."""
    import mxnet as mx  # only here: the benchmark itself trains nothing
    from gluoncv import model_zoo
    zoo = model_zoo.get_model(network, classes=10)
    stem = re.sub(r"\d+_$", "", zoo.prefix)  # cifarresnetv1: the counter after it differs between processes
    saved = {}
    for key, array in mx.nd.load(checkpoint).items():
        found = re.search(re.escape(stem) + r"\d+_(.*)", key.split(":", 1)[-1])
        if found:
            saved[found.group(1)] = array
    trunk = {k: saved[p.name[len(zoo.prefix):]] for k, p in zoo._collect_params_with_prefix().items()
             if k.startswith("features.") and p.name[len(zoo.prefix):] in saved}
    if len(trunk) != sum(k.startswith("features.") for k in zoo._collect_params_with_prefix()):
        raise SystemExit("bench_learning: %s does not hold a whole %s trunk" % (checkpoint, network))
    mx.nd.save(path, trunk)
    return path


def finetune(runner, data, name, args):
    """Fine-tune a trunk pretrained on classes 0-4 against scratch on classes 5-9, same budget and flags."""
    first, second = range(5), range(5, 10)
    per_class, epochs = budget(args.pretrain)
    pretrained, out = runner.train("%s-pretrain-0to4-%s" % (name, args.pretrain), data.lst("train", first, per_class),
                                   data.lst("val", first, args.val_per_class), epochs, "default", args.seed_list[0])
    if pretrained is None:  # --reuse-only and no trunk
        return None
    trunk = gluoncv_params(os.path.join(out, "multitask-best.params"),
                           os.path.join(runner.work, "%s-trunk-0to4-%s.params" % (name, args.pretrain)))
    per_class, epochs = budget(args.finetune)
    train, val = data.lst("train", second, per_class), data.lst("val", second, args.val_per_class)
    table, scratch_runs = {}, {}
    for recipe in args.finetune_recipes.split(","):
        row = {"scratch": [], "finetune": []}
        for s in args.seed_list:
            tag = "%s-5to9-%dx%d-%s-s%d" % (name, per_class * 5, epochs, recipe, s)
            base = FINETUNE_ONLY.get(recipe, recipe)  # the scratch column of a fine-tuning-only recipe
            if (base, s) not in scratch_runs:
                scratch_runs[base, s] = runner.train("%s-5to9-%dx%d-%s-s%d-scratch" % (name, per_class * 5, epochs,
                                                                                      base, s),
                                                     train, val, epochs, base, s)[0]
            scratch = scratch_runs[base, s]
            # the trunk's budget in the name: --reuse must not take a run fine-tuned from another trunk
            tuned = runner.train("%s-finetune-from%s" % (tag, args.pretrain), train, val, epochs, recipe, s,
                                 ["--model", trunk])[0]
            if scratch and tuned:  # --reuse-only: a pair or nothing
                row["scratch"].append(scratch["val_acc"])
                row["finetune"].append(tuned["val_acc"])
        if row["scratch"]:
            table[recipe] = row
    return {"budget": "%dx%d" % (per_class * 5, epochs), "pretrain": args.pretrain, "recipes": table,
            "pretrain_val_acc": pretrained["val_acc"]}


def fmt(values):
    """'0.812 +-0.004' for a list of per-seed figures."""
    mean, spread = mean_spread(values)
    return "%.3f" % mean if len(values) == 1 else "%.3f +-%.3f" % (mean, spread)


def table_rows(results, recipes):
    """Flat rows of the two tables (means over seeds) and issue 10's checks on each row.

    Quality rows: dataset, budget, one column per recipe, the best preset (same lr and batch as the
    default, only --augment differs) and whether the default is within 0.02 of it (issue 10's check),
    and, separately, the default's gap to the best recipe of any kind (tuned lr/batch included). Fine-tune rows: dataset, budget, recipe, scratch, fine-tune, and
    whether fine-tuning beats scratch.
    """
    quality, tuning = [], []
    for name, res in results.items():
        for key, row in res["quality"].items():
            means = {r: round(statistics.mean(row[r]), 4) for r in recipes if r in row}
            out = dict({"dataset": name, "budget": key}, **means)
            presets = {r: v for r, v in means.items() if r in PRESET_RECIPES}
            others = [v for r, v in means.items() if r != "default"]
            if "default" in means and len(presets) == len(PRESET_RECIPES):  # the check needs every preset
                best = max(presets, key=presets.get)
                out["best_preset"], out["best_preset_acc"] = best, presets[best]
                out["default_within_0.02"] = "yes" if means["default"] >= presets[best] - 0.02 else "no"
            if "default" in means and others:
                out["best_other"] = max(others)
                out["default_minus_best_other"] = round(means["default"] - max(others), 4)
            quality.append(out)
        ft = res.get("finetune") or {}
        for recipe, row in ft.get("recipes", {}).items():
            scratch, tuned = statistics.mean(row["scratch"]), statistics.mean(row["finetune"])
            tuning.append({"dataset": name, "budget": ft["budget"], "recipe": recipe, "scratch": round(scratch, 4),
                           "finetune": round(tuned, 4),
                           "finetune_beats_scratch": "yes" if tuned > scratch else "no"})
    return quality, tuning


def print_tables(results, args):
    """The side-by-side tables on stdout (markdown); each cell is the mean over seeds (+- half the range)."""
    quality, tuning = table_rows(results, args.recipe_list)
    print("\n| dataset | train images x epochs | " + " | ".join(args.recipe_list)
          + " | best preset | default within 0.02 of best preset | default - best of all |")
    print("|---|---|" + "---|" * (len(args.recipe_list) + 3))
    for row in quality:
        cells = results[row["dataset"]]["quality"][row["budget"]]
        print("| %s | %s | %s | %s | %s | %s |" % (
            row["dataset"], row["budget"], " | ".join(fmt(cells[r]) if r in cells else "-" for r in args.recipe_list),
            row.get("best_preset", "-"), row.get("default_within_0.02", "-"),
            "%+.3f" % row["default_minus_best_other"] if "default_minus_best_other" in row else "-"))
    print("\n| dataset | classes 5-9, images x epochs | recipe | scratch | fine-tune from classes 0-4 | beats scratch |")
    print("|---|---|---|---|---|---|")
    for row in tuning:
        cells = results[row["dataset"]]["finetune"]["recipes"][row["recipe"]]
        print("| %s | %s | %s | %s | %s | %s |" % (row["dataset"], row["budget"], row["recipe"], fmt(cells["scratch"]),
                                                   fmt(cells["finetune"]),
                                                   row["finetune_beats_scratch"]))
    return quality, tuning


def main(argv=None):
    """Prepare the data, run every job, print the tables, store the result."""
    args = parse_args(argv)
    common.start_run()
    if args.grid:
        import learning_grid
        return learning_grid.main(args, common)
    modern = has_augment_flag()
    runner = Runner(args, modern)
    print("\n".join(common.machine_header()), file=sys.stderr)
    print("train has --augment: %s; runs under %s" % (modern, runner.work), file=sys.stderr)
    results, sources, missing = {}, {}, []
    for name in args.dataset_list:
        try:
            data = Prepared(name, args.cache)
        except DatasetMissing as exc:
            missing.append(str(exc))
            print("skipped %s: %s" % (name, exc), file=sys.stderr)
            continue
        sources[name] = data.meta["source"]
        results[name] = {"quality": quality(runner, data, name, args)}
        if args.finetune:
            results[name]["finetune"] = finetune(runner, data, name, args)
        if args.smoke:
            break  # one dataset shows that every kind of run works
    if not results:
        if args.smoke:  # CI without the data packages: say so loudly, but the code has nothing to run on
            print("bench_learning --smoke SKIPPED, no dataset installed:\n  " + "\n  ".join(missing))
            return
        raise SystemExit("bench_learning: no dataset installed:\n  " + "\n  ".join(missing))
    rows, finetune_rows = print_tables(results, args)
    figures = {"rows": rows, "finetune_rows": finetune_rows, "results": results, "datasets": sources,
               "missing": missing, "recipes": {r: runner.flags(r) for r in RECIPES}, "train_has_augment": modern,
               "base_flags": BASE, "seeds": args.seed_list, "val_per_class": args.val_per_class,
               "metric": "last epoch's val accuracy of task 'label' (mean over seeds)", "runs": runner.runs}
    notes = None
    if args.reuse or args.reuse_only:
        notes = ("runs found under %s were read, not retrained (--reuse): they were trained by earlier invocations "
                 "of this script with the same flags, split by --datasets; each run's own command is in runs[]"
                 % args.keep_runs)
    common.write_result("bench_learning", figures, notes=notes)
    if not args.keep_runs:
        shutil.rmtree(runner.work, ignore_errors=True)  # checkpoints of every run: tens of MB


if __name__ == "__main__":
    main()

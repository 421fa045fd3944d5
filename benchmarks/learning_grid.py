"""bench_learning's grid (issue 24): every preset and the PyTorch reference in every cell, run by run, cached.

A cell is (dataset, mode, budget, batch, lr): mode ``scratch`` trains on the 10 classes,
``finetune`` fine-tunes a trunk pretrained on classes 0-4 on classes 5-9; the budget is about 60,
160 or 500 optimizer updates; the batch 32 or 64; the lr ``default`` (train's own, not given) or
``user``, the usual 0.1 x batch/64 given as --lr. Columns: the presets as ``auto`` uses them
(light-noflip, standard-noflip), the presets as named (none, light, standard, imagenet) and
``torch`` (benchmarks/torch_baseline.py: pad-crop + flip, lr 0.1 x batch/64, step schedule).
The default column is not a run of its own: it is the noflip run of the preset that the
documented rule (``augment_presets.choose_preset``) picks for the cell, so a rule can be checked
on the whole grid without training again (tests check that ``--augment auto`` resolves to the
same settings).

Datasets are split into a development group (rules are fitted on them) and a confirmation group
(never used to choose a rule or a threshold; its figures are the ones quoted).

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/bench_learning.py --grid --max-minutes 60
    python benchmarks/bench_learning.py --grid --status     # which runs are done, which are left

Each run's folder under --keep-runs (default benchmarks/.grid_runs/, git-ignored) holds
``record.json`` once done, so an interrupted grid goes on where it stopped; after every run the
whole grid is written to benchmarks/results/bench_learning_grid.json (machine, seeds, load).
Runs go scratch before fine-tuning, auto's two candidates and none before the other columns, seed 1
before seed 2, in CELL_ORDER (issue 24's case first, the long cells last), the user's lr before the
default, column by column over every dataset (development, then confirmation). Accuracy is valid under
load; the seconds stored are not timing figures (other engineers share the cores).
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GROUPS = {"development": ("fashion", "mnist5k"), "confirmation": ("digits",)}
BUDGETS = (60, 160, 500)
BATCHES = (32, 64)
LRS = ("default", "user")
MODES = ("scratch", "finetune")
SEEDS = (1, 2)
# columns in the order they are run: auto's two candidates first
COLUMNS = ("light-noflip", "standard-noflip", "none", "light", "standard", "torch", "imagenet",
           "light-noflip-nowarmup", "standard-noflip-nowarmup")
FIRST_PASS = 3  # auto's two candidates and none over every cell before the other columns
AUGMENT = {"light-noflip": ["--augment", "light", "--no-hflip"],
           "standard-noflip": ["--augment", "standard", "--no-hflip"],
           "none": ["--augment", "none"], "light": ["--augment", "light"], "standard": ["--augment", "standard"],
           "imagenet": ["--augment", "imagenet"]}
# "-nowarmup" columns: auto's candidates with --warmup-epochs 0, i.e. without the warmup train adds at a given
# lr above 0.2 per 256 images (training/schedules.py default_warmup_epochs): the evidence for that warmup. Runs
# of the user's lr made before the warmup existed are stored under these names (their record says so); run
# with --columns, not in the default pass
EXTRA_COLUMNS = ("light-noflip-nowarmup", "standard-noflip-nowarmup")
# (budget, batch) in the order they are run: issue 24's failing case first (batch 64, about 160 updates),
# then the other short cells, the long ones last
CELL_ORDER = ((160, 64), (160, 32), (60, 32), (60, 64), (500, 32), (500, 64))
EPOCHS = 5  # budgets are reached with 5 epochs where the dataset has the images, more epochs where not
VAL_PER_CLASS = 50
PRETRAIN = (400, 5)  # trunk for the fine-tuning cells: images per class (capped by the pool) x epochs
BASE = ["--network", "cifar_resnet20_v1", "--image-shape", "3,32,32", "--quiet", "--data-nthreads", "1"]
RESULT = os.path.join(HERE, "results", "bench_learning_grid.json")
RUNS_DIR = os.path.join(HERE, ".grid_runs")
# torch in a venv of its own: GluonCV refuses to import beside torch 2 (gluoncv/check.py)
TORCH_PYTHON = os.path.join(REPO, ".venv-torch", "bin", "python")


def group_of(dataset):
    """'development' or 'confirmation'."""
    return next(g for g, names in GROUPS.items() if dataset in names)


def user_lr(batch):
    """The lr a user of the original scripts usually gives: 0.1 at batch 64, linear in the batch."""
    return 0.1 * batch / 64.0


def shape(pool, classes, updates, batch):
    """(images per class, epochs, real updates) that reach about ``updates`` at ``batch`` from a pool."""
    per_class = max(1, min(pool, int(round(updates * batch / float(classes * EPOCHS)))))
    per_epoch = -(-per_class * classes // batch)
    epochs = max(1, int(round(updates / float(per_epoch))))
    return per_class, epochs, epochs * per_epoch


def plan(datasets=None, columns=None, cells=None):
    """Every run of the grid as a dict, in the order they are run (``columns``, ``cells``: only those)."""
    runs = []
    for dataset in datasets or [d for names in GROUPS.values() for d in names]:
        for mode in MODES:
            for updates in BUDGETS:
                for batch in BATCHES:
                    for lr in LRS:
                        for column in columns or [c for c in COLUMNS if c not in EXTRA_COLUMNS]:
                            if column == "torch" and (lr == "default" or mode == "finetune"):
                                continue  # its own lr; no torch trunk to fine-tune
                            if cells and (updates, batch) not in cells:
                                continue
                            for seed in SEEDS:
                                runs.append({"dataset": dataset, "group": group_of(dataset), "mode": mode,
                                             "budget": updates, "batch": batch, "lr": lr, "column": column,
                                             "seed": seed})
    order = {"development": 0, "confirmation": 1}
    # one seed over every cell before the second: more cells known early, the second seed then sizes the noise
    runs.sort(key=lambda r: (MODES.index(r["mode"]), COLUMNS.index(r["column"]) >= FIRST_PASS, r["seed"],
                             CELL_ORDER.index((r["budget"], r["batch"])), LRS.index(r["lr"]) == 0,
                             COLUMNS.index(r["column"]), order[r["group"]]))
    return runs


def tag(run):
    """The run's folder name."""
    return "%(dataset)s-%(mode)s-u%(budget)d-b%(batch)d-lr%(lr)s-%(column)s-s%(seed)d" % run


def estimate_seconds(run):
    """Rough machine time of one run on 2 busy cores (start-up + images): for the status line only."""
    return 15 + 0.006 * run["budget"] * run["batch"]


class Grid:
    """Runs grid cells one at a time, caching each under ``runs_dir``."""

    def __init__(self, runs_dir=RUNS_DIR, cache=None, python=sys.executable, torch_python=TORCH_PYTHON):
        from learning_data import Prepared
        self.runs_dir, self.python, self.cache = runs_dir, python, cache or os.path.join(HERE, ".data")
        self.torch_python = torch_python
        self.prepared, self._prepared_cls = {}, Prepared

    def data(self, name):
        """The dataset's Prepared (PNG files and lists), written once."""
        if name not in self.prepared:
            self.prepared[name] = self._prepared_cls(name, self.cache)
        return self.prepared[name]

    def record(self, run):
        """The stored record of a finished run, or None."""
        path = os.path.join(self.runs_dir, tag(run), "record.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def lists(self, run):
        """(train list, val list, images per class, epochs, updates) of the run's cell."""
        data = self.data(run["dataset"])
        classes = list(range(5, 10)) if run["mode"] == "finetune" else list(range(10))
        pool = min(int((data.train_labels == c).sum()) for c in classes)
        per_class, epochs, updates = shape(pool, len(classes), run["budget"], run["batch"])
        return (data.lst("train", classes, per_class), data.lst("val", classes, VAL_PER_CLASS), per_class, epochs,
                updates)

    def command(self, run, out):
        """The command line of one run (train, or torch_baseline for the torch column)."""
        train, val, per_class, epochs, _ = self.lists(run)
        if run["column"] == "torch":
            return [self.torch_python, os.path.join(HERE, "torch_baseline.py"), "--job", "--train", train, "--val", val,
                    "--root", self.data(run["dataset"]).root, "--epochs", str(epochs), "--batch-size",
                    str(run["batch"]), "--lr", "%g" % user_lr(run["batch"]), "--schedule", "step", "--workers", "1",
                    "--seed", str(run["seed"])]
        cmd = [self.python, "-m", "multitask_mx", "train", "--data-train", train, "--data-val", val, "--num-epoch",
               str(epochs), "--seed", str(run["seed"]), "--save-result", out, "--batch-size", str(run["batch"])]
        cmd += BASE + AUGMENT[run["column"].replace("-nowarmup", "")]
        if run["column"].endswith("-nowarmup"):
            cmd += ["--warmup-epochs", "0"]
        if run["lr"] == "user":
            cmd += ["--lr", "%g" % user_lr(run["batch"])]
        if run["mode"] == "finetune":
            cmd += ["--model", self.trunk(run["dataset"], run["seed"])]
        return cmd

    def trunk(self, dataset, seed):
        """A trunk trained on classes 0-4 (train's defaults), as a GluonCV .params file; trained once."""
        from bench_learning import gluoncv_params
        data = self.data(dataset)
        first = list(range(5))
        pool = min(int((data.train_labels == c).sum()) for c in first)
        out = os.path.join(self.runs_dir, "%s-pretrain-0to4-s%d" % (dataset, seed))
        path = os.path.join(self.runs_dir, "%s-trunk-0to4-s%d.params" % (dataset, seed))
        if not os.path.exists(path):
            cmd = [self.python, "-m", "multitask_mx", "train", "--data-train",
                   data.lst("train", first, min(pool, PRETRAIN[0])), "--data-val", data.lst("val", first, VAL_PER_CLASS),
                   "--num-epoch", str(PRETRAIN[1]), "--seed", str(seed), "--save-result", out, "--overwrite"] + BASE
            subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
            gluoncv_params(os.path.join(out, "multitask-best.params"), path)
        return path

    def run(self, run):
        """Train one run (or read it back); returns its record."""
        done = self.record(run)
        if done:
            return done
        out = os.path.join(self.runs_dir, tag(run))
        os.makedirs(out, exist_ok=True)
        cmd = self.command(run, out)
        _, _, per_class, epochs, updates = self.lists(run)
        load, t0 = os.getloadavg()[0], time.time()
        proc = subprocess.run(cmd + (["--overwrite"] if run["column"] != "torch" else []), cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("%s failed (exit %d): %s\n%s" % (tag(run), proc.returncode, " ".join(cmd),
                                                                proc.stderr[-2000:]))
        if run["column"] == "torch":
            acc = json.loads(proc.stdout.strip().splitlines()[-1])["val_acc"]
        else:
            with open(os.path.join(out, "history.json")) as f:
                acc = json.load(f)[-1]["val"]["label"]["acc"]
        record = dict(run, val_acc=round(acc, 4), images_per_class=per_class, epochs=epochs, updates=updates,
                      code=code_version(),
                      seconds_under_load=round(time.time() - t0, 1), load_1min_at_start=round(load, 2),
                      command=" ".join(["python"] + cmd[1:]).replace(REPO + "/", ""))
        with open(os.path.join(out, "record.json.tmp"), "w") as f:
            json.dump(record, f)
        os.replace(os.path.join(out, "record.json.tmp"), os.path.join(out, "record.json"))
        for name in os.listdir(out):  # checkpoints: megabytes per run, the record is what is kept
            if name.endswith((".params", ".states")):
                os.remove(os.path.join(out, name))
        return record


def code_version():
    """The commit of the code that trains: $GRID_CODE_VERSION (a copy outside git), else the checkout's HEAD."""
    if os.environ.get("GRID_CODE_VERSION"):
        return os.environ["GRID_CODE_VERSION"]
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def status(grid, runs):
    """(done records, left runs, estimated seconds left)."""
    done = [r for r in (grid.record(run) for run in runs) if r]
    left = [run for run in runs if not grid.record(run)]
    return done, left, sum(estimate_seconds(r) for r in left)


def write(grid, common):
    """Store every finished run of the grid, extra columns included (benchmarks/results/bench_learning_grid.json);
    what is left is counted over the main grid."""
    done, left, seconds = status(grid, plan())
    done += [r for r in (grid.record(run) for run in plan(columns=EXTRA_COLUMNS)) if r]
    sources = {}
    for name in sorted({r["dataset"] for r in done}):
        sources[name] = grid.data(name).meta["source"]
    figures = {"groups": {g: list(v) for g, v in GROUPS.items()}, "budgets": list(BUDGETS), "batches": list(BATCHES),
               "lrs": {"default": "train's default (not given)", "user": "--lr 0.1 x batch/64"},
               "columns": COLUMNS, "augment_flags": AUGMENT, "seeds": list(SEEDS), "base_flags": BASE,
               "val_per_class": VAL_PER_CLASS, "pretrain": list(PRETRAIN), "datasets": sources,
               "metric": "last epoch's val accuracy of task 'label'", "runs": done,
               "left": {"runs": len(left), "estimated_machine_seconds": int(seconds)}}
    common.write_result("bench_learning_grid", figures,
                        notes="accuracy only: runs shared 2 cores with other work (nice 10, OMP_NUM_THREADS=1, "
                              "one at a time); their seconds are not timing figures")


def main(args, common):
    """--grid: run what is left (up to --max-minutes), storing after each run; or --status."""
    grid = Grid(args.keep_runs or RUNS_DIR, args.cache, torch_python=args.torch_python)
    runs = plan(args.dataset_list if args.datasets_given else None, args.columns.split(",") if args.columns else None,
                [tuple(int(v) for v in c.split("x")) for c in args.cells.split(",")] if args.cells else None)
    if args.status:
        done, left, seconds = status(grid, runs)
        print("grid: %d runs done, %d left (about %.1f h of machine time)" % (len(done), len(left), seconds / 3600.0))
        return
    deadline = time.time() + 60 * args.max_minutes
    for run in runs:
        if time.time() > deadline:
            break
        if grid.record(run):
            continue
        try:
            record = grid.run(run)
        except Exception as exc:  # one failed run is reported, the others still run
            print("grid: %s" % exc, file=sys.stderr, flush=True)
            continue
        print("  %-55s %.3f (%d updates)" % (tag(run), record["val_acc"], record["updates"]), file=sys.stderr,
              flush=True)
        write(grid, common)
    write(grid, common)

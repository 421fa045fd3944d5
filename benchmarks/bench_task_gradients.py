#!/usr/bin/env python
"""The cost of per-task gradients: training img/s with the plain summed backward, with
--grad-stats-every 1 (every batch measured: the worst case of the statistics) and with
--grad-method pcgrad, on one tiny run each (2 tasks, mobilenet0.25 at 32 px, CPU).

Each case is a ``multitask-mx train`` process; img/s is the mean of the history's
epochs after the first (the first includes graph set-up). Cases run in turn, twice
(sum, stats, pcgrad, sum, stats, pcgrad), so that a change of load hits all of them.

    python benchmarks/bench_task_gradients.py            # 3 epochs of 96 images per case
    python benchmarks/bench_task_gradients.py --smoke    # 2 epochs of 32 images
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import common  # noqa: E402

CASES = {"sum": [], "stats_every_1": ["--grad-stats-every", "1"], "pcgrad": ["--grad-method", "pcgrad"]}


def _fixtures():
    spec = importlib.util.spec_from_file_location("fixtures", os.path.join(REPO, "tests", "conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    """Run the cases and store benchmarks/results/bench_task_gradients.json."""
    common.start_run()
    smoke = common.is_smoke()
    per_class, epochs = (8, 2) if smoke else (24, 3)
    work = tempfile.mkdtemp(prefix="bench_task_gradients_")
    fixtures = _fixtures()
    items = [(rel, [label, int(label > 0)]) for rel, label in fixtures.make_images(os.path.join(work, "images"),
                                                                                  per_class, seed=1)]
    train = fixtures.write_list(os.path.join(work, "train.lst"), items)
    speeds = {name: [] for name in CASES}
    for repeat in range(2):
        for name, flags in CASES.items():
            run = os.path.join(work, "%s_%d" % (name, repeat))
            subprocess.run([sys.executable, "-m", "multitask_mx", "train", "--data-train", train, "--image-train",
                            os.path.join(work, "images"), "--task-names", "shape,any", "--network", "mobilenet0.25",
                            "--image-shape", "3,32,32", "--num-epoch", str(epochs), "--batch-size", "16",
                            "--seed", "1", "--quiet", "--save-result", run] + flags, check=True, cwd=REPO)
            with open(os.path.join(run, "history.json")) as f:
                history = json.load(f)
            history = history if isinstance(history, list) else history["epochs"]
            speeds[name] += [r["speed_img_s"] for r in history[1:]]
    figures = {name: {"img_s": round(sum(v) / len(v), 1), "epochs_measured": len(v)} for name, v in speeds.items()}
    for name in CASES:
        figures[name]["relative_to_sum"] = round(figures[name]["img_s"] / figures["sum"]["img_s"], 3)
    print("%-14s %8s %8s" % ("case", "img/s", "x sum"))
    for name, row in figures.items():
        print("%-14s %8.1f %8.3f" % (name, row["img_s"], row["relative_to_sum"]))
    common.write_result("bench_task_gradients", figures, notes="2 tasks (4 and 2 classes), %d images, batch 16, "
                        "mobilenet0.25 at 32 px, 1 CPU context; img/s per epoch after the first" % len(items))


if __name__ == "__main__":
    main()

"""`make demo` (issue 10): what train_multitask.sh learns on data_example/ without a checkpoint, and in what time.

Both sides run the real script (`bash train_multitask.sh`, no checkpoint in MODEL, so it trains from
scratch) in a subprocess, seed by seed, alternating:

  demo     the script as shipped: cifar_resnet20_v1 at 32x32, default batch, lr and augmentation
  before   the script before issue 10's demo change: the same call with `--network resnet18_v1
           --image-shape 3,64,64 --batch-size 32` appended (later flags win)

Each row: held-out accuracy of `label` and `label_gt0` at the last epoch (80 images, so one image is
0.0125) and the whole command's seconds, per seed and their mean. Seconds depend on machine load,
accuracies do not.

    python benchmarks/bench_demo.py                 # seeds 1-3, 15 epochs (the script's): about 4 minutes
    python benchmarks/bench_demo.py --smoke         # one seed, 1 epoch: CI
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402  (starts the run's load accounting)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = {
    "demo": [],
    "before": ["--network", "resnet18_v1", "--image-shape", "3,64,64", "--batch-size", "32"],
}


def parse_args(argv=None):
    """Benchmark settings."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="1,2,3", help="training seeds, comma-separated")
    p.add_argument("--smoke", action="store_true", help="one seed, 1 epoch: CI")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds = "1"
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    return args


def run_script(side, seed, work, smoke):
    """One `bash train_multitask.sh` run; returns {label, label_gt0, seconds, epochs, command}."""
    save = os.path.join(work, "%s-s%d" % (side, seed))
    env = dict(os.environ, MODEL=os.path.join(work, "no-checkpoint"), SAVE_RESULT=save,
               PYTHON=sys.executable)
    extra = SIDES[side] + ["--seed", str(seed), "--quiet"] + (["--num-epoch", "1"] if smoke else [])
    cmd = ["bash", "train_multitask.sh"] + extra
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit("bench_demo: %s seed %d failed (exit %d)" % (side, seed, proc.returncode))
    with open(os.path.join(save, "history.json")) as f:
        history = json.load(f)
    last = history[-1]["val"]
    record = {"label": round(last["label"]["acc"], 4), "label_gt0": round(last["label_gt0"]["acc"], 4),
              "seconds": round(seconds, 1), "epochs": len(history), "command": " ".join(cmd)}
    print("  %-6s seed %d: label %.4f, label_gt0 %.4f, %.1f s" % (side, seed, record["label"], record["label_gt0"],
                                                                  seconds), file=sys.stderr, flush=True)
    return record


def summary_rows(runs):
    """One row per side: per-seed figures and their means."""
    rows = []
    for side, records in runs.items():
        rows.append({"side": side, "flags": " ".join(SIDES[side]) or "(as shipped)",
                     "label_runs": [r["label"] for r in records], "label": round(statistics.mean(
                         r["label"] for r in records), 4),
                     "label_gt0": round(statistics.mean(r["label_gt0"] for r in records), 4),
                     "seconds_runs": [r["seconds"] for r in records],
                     "seconds": round(statistics.mean(r["seconds"] for r in records), 1),
                     "epochs": records[0]["epochs"]})
    return rows


def main(argv=None):
    """Run both sides seed by seed, print and store the rows."""
    args = parse_args(argv)
    common.start_run()
    print("\n".join(common.machine_header()), file=sys.stderr)
    work = tempfile.mkdtemp(prefix="bench_demo_")
    try:
        runs = {side: [] for side in SIDES}
        for seed in args.seed_list:
            for side in SIDES:
                runs[side].append(run_script(side, seed, work, args.smoke))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = summary_rows(runs)
    for row in rows:
        print("%-6s label %s (mean %.3f), label_gt0 %.3f, seconds %s (mean %.1f)" % (
            row["side"], row["label_runs"], row["label"], row["label_gt0"], row["seconds_runs"], row["seconds"]))
    common.write_result("bench_demo", {"rows": rows, "seeds": args.seed_list, "runs": runs,
                                       "data": "data_example/ (240 training, 80 held-out images, 4 classes)",
                                       "metric": "last epoch's held-out accuracy"})


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""A small network against a plain PyTorch script (issue 13): the training step and the whole job.

(a) step: img/s of training steps of a two-head CIFAR ResNet-20 at 32 px, batch 64, on one
    in-memory batch: our train_one_epoch (hybridized MultiTaskNet, MultiTaskLoss, metrics,
    gluon.Trainer) against torch_baseline.py's step (eager PyTorch, SGD), after warm-up on both;
(b) job: 2,000 Fashion-MNIST images (benchmarks/learning_data.py) x 5 epochs with a validation
    pass per epoch, whole process timed from outside: ``python -m multitask_mx train`` with the same
    recipe as the script (pad-crop + flip, SGD momentum 0.9, wd 1e-4, cosine lr 0.05 at batch 64,
    2 loader workers) against ``torch_baseline.py --job``; and the held-out accuracy of each.

Equal threads: both sides get this process's OMP_NUM_THREADS (the usable cores unless set) and
nothing else; PyTorch's intra-op pool reads it. The PyTorch side runs in a Python that has torch
(``--torch-python``; e.g. ``python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy
opencv-python-headless``); without one the script says so and measures only our side.

    python benchmarks/bench_small_net.py --torch-python .venv-torch/bin/python
    python benchmarks/bench_small_net.py --smoke         # seconds: few steps, 100 images x 1 epoch
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
from multitask_mx import _runtime  # noqa: E402  (does not import mxnet)
import common  # noqa: E402  (benchmarks/: the run's machine, load and result file)

_runtime.configure_threads()  # OpenMP reads OMP_NUM_THREADS once, when mxnet loads

import mxnet as mx  # noqa: E402

from multitask_mx.data.tasks import build_tasks  # noqa: E402
from multitask_mx.model.network import TrunkSpec, build_net  # noqa: E402
import bench_training  # noqa: E402  (TrainEpochs, synthetic_batches, train_config: our step as train runs it)
from learning_data import DatasetMissing, Prepared  # noqa: E402

BASELINE = os.path.join(HERE, "torch_baseline.py")
DEFAULT_TORCH = os.path.join(REPO, ".venv-torch", "bin", "python")


def parse_args(argv=None):
    """Benchmark flags; --smoke shrinks everything."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torch-python", default=DEFAULT_TORCH, help="a Python with torch, numpy and cv2")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batches", type=int, default=40, help="timed steps per figure")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="alternating measurements per side; medians shown")
    p.add_argument("--images", type=int, default=200, help="training images per class (10 classes) for (b)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: step, job")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.batches, args.warmup, args.repeats, args.images, args.epochs = 2, 1, 1, 10, 1
    return args


def torch_available(python):
    """Whether ``python`` exists and imports torch."""
    return os.path.exists(python) and subprocess.run(
        [python, "-c", "import torch, cv2, numpy"], capture_output=True).returncode == 0


def run_json(cmd, env=None):
    """Run ``cmd``; (its last stdout line as JSON, wall seconds, CPU seconds of the child)."""
    before = os.times()
    tic = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall, after = time.time() - tic, os.times()
    if proc.returncode:
        raise SystemExit("bench_small_net: %s failed:\n%s" % (" ".join(cmd), proc.stderr[-3000:]))
    out = proc.stdout.strip().splitlines()
    result = json.loads(out[-1]) if out and out[-1].startswith("{") else {}
    return result, wall, (after.children_user + after.children_system) - (before.children_user + before.children_system)


def our_step(args):
    """epoch(): img/s of --batches of our training step on one synthetic batch."""
    s = argparse.Namespace(batch_size=args.batch_size, size=args.size)
    tasks = build_tasks([10])
    net = build_net(TrunkSpec("cifar_resnet20_v1"), tasks, [mx.cpu()], (3, args.size, args.size))
    net.hybridize(static_alloc=True, static_shape=True)
    config = bench_training.train_config(bench_training.Settings(
        network="cifar_resnet20_v1", size=args.size, batch_size=args.batch_size, images=0, photo=(0, 0), batches=0,
        seconds=0, warmup=0, loader_batches=0, workers=0, repeats=1, skip=frozenset(), classic_symbol="",
        as_shipped=False, smoke=False), "unused.lst")
    epochs = bench_training.TrainEpochs(net, tasks, config)
    epochs.epoch(bench_training.synthetic_batches(tasks, s, args.warmup))
    return lambda: epochs.epoch(bench_training.synthetic_batches(tasks, s, args.batches))


def bench_step(args, torch_python):
    """(a): medians of alternating measurements, ours in this process, PyTorch in a subprocess each time."""
    ours, theirs = [], []
    ours_epoch = our_step(args)
    for _ in range(args.repeats):
        ours.append(ours_epoch())
        if torch_python:
            result, _, _ = run_json([torch_python, BASELINE, "--step", "--batch-size", str(args.batch_size), "--size",
                                     str(args.size), "--batches", str(args.batches), "--warmup", str(args.warmup)])
            theirs.append(result["img_s"])
        print("  step: ours %.1f img/s, pytorch %s" % (ours[-1], "%.1f" % theirs[-1] if theirs else "-"),
              file=sys.stderr, flush=True)
    return _pair_rows("(a) train step, ResNet-20 at %d px, batch %d, in-memory batch" % (args.size, args.batch_size),
                      "img/s", ours, theirs)


def bench_job(args, torch_python, work):
    """(b): the whole job from .lst files, each side a process of its own, alternating."""
    data = Prepared("fashion", os.path.join(HERE, ".data"))
    train, val = data.lst("train", range(10), args.images), data.lst("val", range(10), 50)
    root = os.path.dirname(train)
    ours_cmd = [sys.executable, "-m", "multitask_mx", "train", "--network", "cifar_resnet20_v1", "--image-shape",
                "3,%d,%d" % (args.size, args.size), "--data-train", train, "--data-val", val, "--image-train", root,
                "--image-val", root, "--num-epoch", str(args.epochs), "--batch-size", str(args.batch_size),
                "--augment", "light", "--lr", str(args.lr), "--data-nthreads", "2", "--seed", "1", "--quiet",
                "--no-derived-task", "--overwrite", "--save-result", os.path.join(work, "ours")]
    torch_cmd = [torch_python, BASELINE, "--job", "--train", train, "--val", val, "--root", root, "--size",
                 str(args.size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr",
                 str(args.lr), "--workers", "2"]
    walls, accs = {"ours": [], "pytorch": []}, {"ours": [], "pytorch": []}
    for _ in range(args.repeats):
        _, wall, _ = run_json(ours_cmd)
        history = json.load(open(os.path.join(work, "ours", "history.json")))
        walls["ours"].append(wall)
        accs["ours"].append(history[-1]["val"]["label"]["acc"])
        if torch_python:
            result, wall, _ = run_json(torch_cmd)
            walls["pytorch"].append(wall)
            accs["pytorch"].append(result["val_acc"])
        print("  job: %s" % {k: ["%.1f s" % w for w in v] for k, v in walls.items()}, file=sys.stderr, flush=True)
    label = "(b) whole job, %d images x %d epochs + validation" % (10 * args.images, args.epochs)
    rows = _pair_rows(label + ", wall s", "s", walls["ours"], walls["pytorch"], lower_is_better=True)
    rows += _pair_rows(label + ", held-out accuracy", "acc", accs["ours"], accs["pytorch"], ratio=False)
    return rows, {"ours": ours_cmd, "pytorch": torch_cmd}


def _pair_rows(what, unit, ours, theirs, lower_is_better=False, ratio=True):
    """Two table rows (ours, pytorch) with medians and, for speed, ours relative to PyTorch (>1: ours faster)."""
    mine = statistics.median(ours)
    other = statistics.median(theirs) if theirs else None
    rel = None
    if ratio and other:
        rel = round(other / mine if lower_is_better else mine / other, 3)
    return [{"measurement": what, "side": "ours (MXNet)", unit: round(mine, 3), "runs": [round(x, 3) for x in ours],
             "vs_pytorch": rel},
            {"measurement": what, "side": "plain PyTorch", unit: None if other is None else round(other, 3),
             "runs": [round(x, 3) for x in theirs], "vs_pytorch": 1.0 if other and ratio else None}]


def main(argv=None):
    """Measure, print the rows, store results/bench_small_net.json."""
    args = parse_args(argv)
    common.start_run()
    print("\n".join(common.machine_header()), file=sys.stderr)
    torch_python = args.torch_python if torch_available(args.torch_python) else None
    if not torch_python:
        print("no PyTorch at %s: only our side is measured (--torch-python)" % args.torch_python, file=sys.stderr)
    skip = set(filter(None, args.skip.split(",")))
    rows, commands = [], {}
    if "step" not in skip:
        rows += bench_step(args, torch_python)
    if "job" not in skip:
        try:
            with tempfile.TemporaryDirectory(prefix="bench_small_net_") as work:
                job_rows, commands = bench_job(args, torch_python, work)
                rows += job_rows
        except DatasetMissing as exc:
            print("job skipped: %s" % exc, file=sys.stderr)
    for r in rows:
        print("%-70s %-14s %s" % (r["measurement"], r["side"], {k: v for k, v in r.items()
                                                               if k not in ("measurement", "side")}))
    versions = None
    if torch_python:
        versions = subprocess.run([torch_python, "-c", "import torch; print(torch.__version__)"],
                                  capture_output=True, text=True).stdout.strip()
    common.write_result("bench_small_net", {"rows": rows, "job_commands": commands, "torch": versions,
                                            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
                        notes="both sides at the same OMP_NUM_THREADS; medians of %d alternating runs" % args.repeats)


if __name__ == "__main__":
    main()

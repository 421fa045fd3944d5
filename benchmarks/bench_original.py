#!/usr/bin/env python
"""The original's job, whole process, at equal threads: multitask_mx against multi-task-MXNet.

Both sides train the classic ResNet-50 symbol (tests/fixtures/resnet-50-symbol.json with
generated weights, two heads) on the same generated JPEGs for ``--epochs`` epochs with a
validation pass and a checkpoint each epoch, each as its own process started from nothing:
``python -m multitask_mx train --model PREFIX`` against ``original_baseline.py --job``
(train_multitask.py's Module.fit, fixed to run). Each figure is the wall time of the whole
process (interpreter start-up and imports included), timed from outside.

Threads: both sides get the same ``OMP_NUM_THREADS`` (``--threads``, default the usable
cores) and no other thread variable. The original as shipped (MXNet's own default, which
halves the cores on x86) is measured beside it with ``--as-shipped`` (on by default).
Our side's train.log phase breakdown (multitask_mx/training/phases.py) goes into the result.

    python benchmarks/bench_original.py                # 320 + 64 JPEGs at 224, batch 16, 1 epoch
    python benchmarks/bench_original.py --repeats 3    # what the README's figure uses
    python benchmarks/bench_original.py --smoke        # a few seconds: 16 + 16 images at 32 px
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
import common  # noqa: E402  (benchmarks/; importing it starts the run's load record)
from multitask_mx import _runtime  # noqa: E402
from photos import make_photos  # noqa: E402

BASELINE_SCRIPT = os.path.join(HERE, "original_baseline.py")
CLASSIC_SYMBOL = os.path.join(REPO, "tests", "fixtures", "resnet-50-symbol.json")
NUM_CLASSES = 4
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS", "MXNET_OMP_MAX_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
PHASES_LINE = re.compile(r"phases: (.*)")
PHASE_ITEM = re.compile(r"([^,;]+?) (\d+\.\d) s(?: \(x\d+\))?")


def parse_args(argv=None):
    """Flags; --smoke shrinks everything to a few seconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320, help="training images (distinct JPEG files)")
    parser.add_argument("--val-images", type=int, default=64, help="validation images (other JPEG files)")
    parser.add_argument("--photo", default="500x375", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--size", type=int, default=224, help="network input side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=_runtime.usable_cores(),
                        help="OMP_NUM_THREADS of both sides (default: the usable cores, what train chooses)")
    parser.add_argument("--no-as-shipped", dest="as_shipped", action="store_false",
                        help="leave out the original with MXNet's default threads")
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, alternating; medians")
    parser.add_argument("--train-flags", default="", help="extra flags for our train (e.g. '--check-images none')")
    parser.add_argument("--ours-code", default=REPO,
                        help="folder holding the multitask_mx package our side runs (default: this checkout)")
    parser.add_argument("--smoke", action="store_true",
                        help="16 + 16 images of 64x48 at 32 px, one run per side, no as-shipped run")
    args = parser.parse_args(argv)
    if args.smoke:  # one run per side at equal threads, no as-shipped run: it only shows that both still run
        args.images, args.val_images, args.photo, args.size, args.batch_size, args.repeats = 16, 16, "64x48", 32, 8, 1
        args.as_shipped = False
    return args


def make_classic_checkpoint(prefix):
    """PREFIX-0000.params for the classic symbol (generated weights), made in a subprocess: mxnet stays
    out of this process, whose only job is to start and time the two sides."""
    code = ("import sys; sys.path[:0] = [%r]; import bench_training; "
            "bench_training.make_classic_checkpoint(%r, %r)" % (HERE, CLASSIC_SYMBOL, prefix))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    return prefix


def environment(threads):
    """This process's environment without thread variables; OMP_NUM_THREADS=threads unless None."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def timed(cmd, env, log_path, cwd=REPO):
    """Run ``cmd`` to the end; (wall seconds, CPU seconds of it and its children); output to ``log_path``.

    The CPU seconds tell a busy machine's story: under load the wall time stretches, the CPU
    time much less (OpenMP's spin-waiting still inflates it).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "w") as log:
        tic = time.time()
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        seconds = time.time() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit("failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd), open(log_path).read()[-3000:]))
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def ours(args, data, prefix, out, run):
    """Our train on the classic checkpoint; ((wall s, CPU s), {phase: seconds} from train.log)."""
    save = os.path.join(out, "ours-%d" % run)
    cmd = [sys.executable, "-m", "multitask_mx", "train", "--model", prefix, "--epoch", "0",
           "--data-train", data["train"], "--image-train", data["root"], "--data-val", data["val"],
           "--image-val", data["root"], "--num-classes", str(NUM_CLASSES), "--batch-size", str(args.batch_size),
           "--image-shape", "3,%d,%d" % (args.size, args.size), "--num-epoch", str(args.epochs),
           "--save-result", save, "--quiet"] + args.train_flags.split()
    env = environment(args.threads)
    env.pop("PYTHONPATH", None)  # `python -m` finds multitask_mx in its working folder: --ours-code
    seconds = timed(cmd, env, save + ".out", cwd=os.path.abspath(args.ours_code))
    return seconds, read_phases(os.path.join(save, "train.log"))


def original(args, data, prefix, out, run, threads):
    """The original's whole job (original_baseline.py --job); (wall s, CPU s)."""
    os.makedirs(os.path.join(out, "original-%d" % run), exist_ok=True)
    cmd = [sys.executable, BASELINE_SCRIPT, "--job", "--prefix", prefix, "--lst", data["train"],
           "--val-lst", data["val"], "--root", data["root"], "--num-classes", str(NUM_CLASSES),
           "--size", str(args.size), "--batch-size", str(args.batch_size), "--num-epoch", str(args.epochs),
           "--save-prefix", os.path.join(out, "original-%d" % run, "multitask")]
    return timed(cmd, environment(threads), os.path.join(out, "original-%d-%s.out" % (run, threads or "default")))


def read_phases(log_path):
    """{phase: seconds} from the summary line that train writes at its end (empty if none)."""
    with open(log_path) as f:
        found = [m.group(1) for m in map(PHASES_LINE.search, f) if m]
    if not found:
        return {}
    body = found[-1].split("; whole process")[0]
    return {name.strip(): float(value) for name, value in PHASE_ITEM.findall(body)}


def make_data(root, args):
    """Training and validation JPEGs (distinct files) and a list for each."""
    size = tuple(int(v) for v in args.photo.lower().split("x"))
    items = make_photos(root, args.images + args.val_images, size, NUM_CLASSES)
    data = {"root": root}
    for name, part in (("train", items[:args.images]), ("val", items[args.images:])):
        data[name] = os.path.join(root, name + ".lst")
        with open(data[name], "w") as f:
            f.writelines("%d\t%f\t%s\n" % (i, label, rel) for i, (rel, label) in enumerate(part))
    return data


def measure(args, out):
    """Alternate the sides ``--repeats`` times; {side: [seconds...]} and our phases per run."""
    data = make_data(os.path.join(out, "data"), args)
    prefix = make_classic_checkpoint(os.path.join(out, "resnet-50"))
    sides = [("original", args.threads)] + ([("original as shipped", None)] if args.as_shipped else [])
    runs, phase_runs = {"ours": []}, []
    runs.update({name: [] for name, _ in sides})
    for run in range(max(1, args.repeats)):
        seconds, phases = ours(args, data, prefix, out, run)
        runs["ours"].append(seconds)
        phase_runs.append(phases)
        for name, threads in sides:
            runs[name].append(original(args, data, prefix, out, run, threads))
        print("  run %d: %s (load average %.2f)" % (run + 1, ", ".join("%s %.1f s (CPU %.1f s)" % ((k,) + v[-1])
                                                                      for k, v in runs.items()), os.getloadavg()[0]),
              file=sys.stderr, flush=True)
    return runs, phase_runs


def figures(args, runs, phase_runs):
    """Rows (side, threads, processes, wall s, img/s, img/s per core, vs original) and our phase medians."""
    cores = _runtime.usable_cores()
    trained = args.images * args.epochs
    base = statistics.median(w for w, _ in runs["original"])
    workers = _runtime.default_loader_workers()
    threads = {"ours": args.threads, "original": args.threads, "original as shipped": "MXNet default"}
    loaders = {"ours": "%d loader worker processes" % workers, "original": "ImageIter in the training process",
               "original as shipped": "ImageIter in the training process"}
    rows = []
    for side, measured in runs.items():
        wall = statistics.median(w for w, _ in measured)
        rows.append({"side": side, "omp_num_threads": threads[side], "loader": loaders[side],
                     "wall_s": round(wall, 2), "runs_s": [round(w, 2) for w, _ in measured],
                     "cpu_s": round(statistics.median(c for _, c in measured), 2),
                     "train_img_s": round(trained / wall, 2), "train_img_s_per_core": round(trained / wall / cores, 2),
                     "speedup_vs_original_equal_threads": round(base / wall, 3),
                     "paired_speedups": paired_speedups(runs["original"], measured),
                     "paired_speedup_median": round(statistics.median(paired_speedups(runs["original"], measured)), 3)})
    names = list(dict.fromkeys(n for p in phase_runs for n in p))
    phases = {n: round(statistics.median(p.get(n, 0.0) for p in phase_runs), 2) for n in names}
    return {"rows": rows, "our_phases_s": phases,
            "job": {"network": "classic resnet-50 symbol, generated weights, 2 heads", "size": args.size,
                    "train_images": args.images, "val_images": args.val_images, "photo": args.photo,
                    "batch_size": args.batch_size, "epochs": args.epochs, "repeats": max(1, args.repeats),
                    "threads": args.threads, "train_flags": args.train_flags,
                    "ours_code": os.path.relpath(os.path.abspath(args.ours_code), REPO)}}


def paired_speedups(original, measured):
    """original's wall time / this side's, run by run: each run of a round ran minutes apart from the
    next round's, so a pair shares the machine's speed of that moment (it drifts by up to 20 %)."""
    return [round(o / w, 3) for (o, _), (w, _) in zip(original, measured)]


def print_table(result):
    """The figures as a table on stdout."""
    print("%-22s %15s %8s %8s %8s %11s %9s  %s" % ("side", "OMP_NUM_THREADS", "wall s", "CPU s", "img/s",
                                                    "img/s/core", "vs orig.", "loader"))
    for r in result["rows"]:
        print("%-22s %15s %8.1f %8.1f %8.2f %11.2f %8.2fx  %s" % (r["side"], r["omp_num_threads"], r["wall_s"],
                                                                 r["cpu_s"], r["train_img_s"], r["train_img_s_per_core"],
                                                            r["speedup_vs_original_equal_threads"], r["loader"]))
    print("img/s: training images x epochs / whole-process wall time (validation and checkpoints included)")
    print("vs orig.: ratio of the medians; run by run (original / side, same round): " + "; ".join(
        "%s %s (median %.2fx)" % (r["side"], " ".join("%.2f" % v for v in r["paired_speedups"]),
                                  r["paired_speedup_median"]) for r in result["rows"] if r["side"] != "original"))
    print("our phases (train.log, medians): " + ", ".join("%s %.1f s" % kv for kv in result["our_phases_s"].items()))


def main(argv=None):
    """Generate the data and checkpoint, time both sides, print and store the result."""
    args = parse_args(argv)
    common.start_run(0 if args.smoke else 1.0)
    with tempfile.TemporaryDirectory(prefix="bench_original_") as out:
        runs, phase_runs = measure(args, out)
    result = figures(args, runs, phase_runs)
    print_table(result)
    common.write_result("bench_original", result, notes="whole-process wall time of each side, timed from "
                        "outside; equal OMP_NUM_THREADS on 'ours' and 'original'; 'original as shipped' "
                        "has no thread variable (MXNet's default)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Distributed training on this machine: one worker against two workers and a server on loopback.

(a) the same small training job, run by ``multitask-mx train --kv-store device`` (1 worker) and by
    ``multitask-mx launch -n 2 -s 1 -- train --kv-store dist_sync`` (2 workers + 1 server, loopback):
    samples/s of the whole job and seconds per epoch, from rank 0's history.json (epochs after the
    first), and the wall time of the whole command;
(b) the communication a dist_sync step adds: ms per pushpull of all of resnet50_v1's trained
    parameters (what gluon.Trainer sends each step), with 1 worker + 1 server, 2 + 1 and 2 + 2.

Both parts run processes side by side on the same cores, so on a small machine two workers share
what one had: no speed-up is expected there, and the table says what the exchange costs.

    python benchmarks/bench_distributed.py            # resnet18_v1 at 64x64, 256 images, 3 epochs
    python benchmarks/bench_distributed.py --quick    # about two minutes: 32x32, 64 images, 2 epochs
    python benchmarks/bench_distributed.py --smoke    # seconds: 16 images, 2 epochs; (b) 1 worker + 1 server

    python benchmarks/bench_distributed.py --scaling  # (c) and (d) instead, stored as bench_distributed_scaling:
(c) ms per gradient exchange of ResNet-20-sized (cifar_resnet20_v1) and ResNet-50-sized (resnet50_v1)
    parameter sets with 2, 3 and 4 workers on loopback: ps-lite pushpull (1 server) against Horovod's
    allreduce (horovodrun --gloo, when Horovod is installed); then, as root, the same with 2 workers across the
    network namespaces of tests/cluster/netns.sh, over ssh (distributed_netns.py; where they cannot be made,
    or with --smoke, the run says why and stores no such rows);
(d) what a failure costs: seconds from the fault (SIGKILL of a worker, a server, the scheduler; SIGSTOP of
    a worker) to the launcher's exit with every process stopped, for a 2-worker dist_sync job in epoch 2.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from multitask_mx import _runtime
from multitask_mx.training import cluster as launch, processes  # noqa: E402  (neither imports mxnet)
import common  # noqa: E402  (benchmarks/: the run's machine, load and result file)
from photos import Lists, make_photos  # noqa: E402
import distributed_scaling as scaling  # noqa: E402

PRESETS = {"size": (64, 32, 32), "images": (256, 64, 16), "batch_size": (16, 8, 8), "epochs": (3, 2, 2),
           "iterations": (10, 3, 1)}  # full, --quick, --smoke
NUM_CLASSES = 4


def parse_args(argv=None):
    """Flags; those left out take the full or the --quick preset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about two minutes")
    parser.add_argument("--network", default="resnet18_v1", help="network of the training job (a)")
    parser.add_argument("--size", type=int, help="image side for (a) (full 64, quick 32)")
    parser.add_argument("--images", type=int, help="training images for (a) (full 256, quick 64)")
    parser.add_argument("--batch-size", type=int, help="batch per worker for (a) (full 16, quick 8)")
    parser.add_argument("--epochs", type=int, help="epochs of (a); the first is not timed (full 3, quick 2)")
    parser.add_argument("--iterations", type=int, help="timed pushpull iterations for (b) (full 10, quick 3)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each job of (a) this many times, alternating; the table shows medians")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: 16 images at 32, 2 epochs; (b) resnet18_v1, 1 worker + 1 server, 1 iteration")
    parser.add_argument("--pushpull-network", default="resnet50_v1", help="network whose parameters (b) sends")
    parser.add_argument("--pushpull-worker", action="store_true", help=argparse.SUPPRESS)  # (b)'s worker
    parser.add_argument("--scaling", action="store_true", help="measure (c) and (d) instead of (a) and (b)")
    args = parser.parse_args(argv)
    for key, preset in PRESETS.items():
        if getattr(args, key) is None:
            setattr(args, key, preset[2 if args.smoke else int(args.quick)])
    if args.smoke:
        args.pushpull_network = "resnet18_v1"
    return args


# --- (a) the training job -------------------------------------------------------------------------

def make_data(root, count, size):
    """``count`` photo-like JPEGs of ``size`` x ``size`` (photos.py) and a .lst over them."""
    lists = Lists(root, make_photos(root, count, (size, size), NUM_CLASSES))
    return lists.path(count), root


def run_job(args, lst, images, save, workers):
    """One training job through the real command line; (history of rank 0, wall seconds)."""
    train = ["train", "--data-train", lst, "--image-train", images, "--num-classes", str(NUM_CLASSES),
             "--network", args.network, "--image-shape", "3,%d,%d" % (args.size, args.size),
             "--batch-size", str(args.batch_size), "--num-epoch", str(args.epochs), "--lr", "0.001",
             "--data-nthreads", "1", "--seed", "1", "--quiet", "--save-result", save]
    if workers == 1:
        command = train + ["--kv-store", "device"]
    else:
        command = ["launch", "-n", str(workers), "-s", "1", "--timeout", "1800", "--"] + train + \
            ["--kv-store", "dist_sync"]
    # without this process's OMP_NUM_THREADS, each command chooses as it would for a user:
    # train takes all cores, launch gives each worker cores / workers
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    tic = time.time()
    proc = subprocess.run([sys.executable, "-m", "multitask_mx"] + command, capture_output=True, text=True,
                          cwd=REPO, env=env)
    seconds = time.time() - tic
    if proc.returncode != 0:
        raise SystemExit("the %d-worker job failed:\n%s" % (workers, proc.stderr[-3000:]))
    with open(os.path.join(save, "history.json")) as f:
        return json.load(f), seconds


def job_row(name, history, seconds, workers):
    """Median over the timed epochs (all but the first) of the job's samples/s and s/epoch."""
    timed = history[1:] or history
    return {"name": name, "img_s": statistics.median(r["speed_img_s"] for r in timed) * workers,
            "epoch_s": statistics.median(r["seconds"] for r in timed), "job_s": seconds}


# --- (b) pushpull of resnet50_v1's parameters -------------------------------------------------------

def pushpull_worker(iterations, network="resnet50_v1"):
    """Run as a launched worker: time kv.pushpull over ``network``'s trained parameters."""
    import mxnet as mx
    from gluoncv.model_zoo import get_model
    from multitask_mx.training import distributed

    kv = distributed.create_kvstore("dist_sync")
    net = get_model(network, pretrained=False)
    net.initialize()
    net(mx.nd.zeros((1, 3, 224, 224)))
    arrays = [mx.nd.ones(p.shape) for p in net.collect_params().values() if p.grad_req != "null"]
    keys = list(range(len(arrays)))
    distributed.init_keys(kv, keys, [a.copy() for a in arrays])
    times = []
    for i in range(iterations + 2):  # the first two warm up
        tic = time.time()
        for key, array in zip(keys, arrays):
            kv.pushpull(key, array, priority=-key)  # as gluon.Trainer does with update_on_kvstore=False
        mx.nd.waitall()
        times.append(time.time() - tic)
    floats = sum(a.size for a in arrays)
    print("PUSHPULL %s" % json.dumps({"rank": kv.rank, "ms": [t * 1000 for t in times[2:]],
                                      "arrays": len(arrays), "floats": floats}), flush=True)
    distributed.finish(kv, None)


def run_pushpull(iterations, workers, servers, log_dir, network="resnet50_v1"):
    """Launch the pushpull workers on loopback; rank 0's median ms per iteration and what it sent."""
    argv = [sys.executable, os.path.abspath(__file__), "--pushpull-worker", "--iterations", str(iterations),
            "--pushpull-network", network]
    nodes = launch.plan_local(workers, servers, argv, worker_threads=max(1, _runtime.usable_cores() // workers))
    if processes.run_nodes(nodes, log_dir, timeout=900, echo=None) != 0:
        raise SystemExit("the pushpull job failed; logs in %s" % log_dir)
    for name in sorted(os.listdir(log_dir)):
        if name.startswith("worker-"):
            for line in open(os.path.join(log_dir, name)):
                if line.startswith("PUSHPULL ") and json.loads(line[9:])["rank"] == 0:
                    return json.loads(line[9:])
    raise SystemExit("no PUSHPULL line from rank 0 in %s" % log_dir)


# --- report ----------------------------------------------------------------------------------------

def header_lines(args):
    """Date, machine, versions, threads and settings."""
    from common import machine_header
    return ["# bench_distributed.py %s" % time.strftime("%Y-%m-%d %H:%M")] + machine_header() + [
        "(a) %s at %dx%d, %d images, batch %d per worker, %d epochs (the first not timed), no validation; "
        "each job's OMP threads: cores / workers, 1 loader process per worker; %d repeat(s), medians"
        % (args.network, args.size, args.size, args.images, args.batch_size, args.epochs, args.repeats),
        "(b) %d timed iterations after 2 warm-up ones; loopback (127.0.0.1, DMLC_INTERFACE=lo)" % args.iterations]


def main(argv=None):
    """Measure (a) and (b) and print one table."""
    args = parse_args(argv)
    if args.pushpull_worker:
        return pushpull_worker(args.iterations, args.pushpull_network)
    if os.environ.get(scaling.WORKER_ENV):
        return scaling.exchange_worker(os.environ[scaling.WORKER_ENV], args.iterations)
    if args.scaling:
        return scaling.main(args)
    _runtime.configure_threads()
    print("\n".join(header_lines(args)), flush=True)
    jobs, comm = [], []
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as root:
        lst, images = make_data(root, args.images, args.size)
        names = {1: "(a) 1 worker, --kv-store device", 2: "(a) 2 workers + 1 server, dist_sync, loopback"}
        runs = {1: [], 2: []}
        for repeat in range(max(1, args.repeats)):
            for workers, name in names.items():  # alternating, so that a busy spell hits both
                print("measuring %s ..." % name, file=sys.stderr, flush=True)
                history, seconds = run_job(args, lst, images, os.path.join(root, "save%d-%d" % (workers, repeat)),
                                           workers)
                runs[workers].append(job_row(name, history, seconds, workers))
        for workers, name in names.items():
            jobs.append({key: statistics.median(r[key] for r in runs[workers]) if key != "name" else name
                         for key in runs[workers][0]})
        for workers, servers in ((1, 1),) if args.smoke else ((1, 1), (2, 1), (2, 2)):
            print("measuring (b) %d worker(s) + %d server(s) ..." % (workers, servers), file=sys.stderr, flush=True)
            result = run_pushpull(args.iterations, workers, servers, os.path.join(root, "pp%d%d" % (workers, servers)),
                                  args.pushpull_network)
            comm.append(("(b) pushpull, %d worker(s) + %d server(s)" % (workers, servers), result))
    print("\n%-50s %10s %10s %10s" % ("job", "samples/s", "s/epoch", "command s"))
    for row in jobs:
        print("%-50s %10.1f %10.2f %10.1f" % (row["name"], row["img_s"], row["epoch_s"], row["job_s"]))
    print("ratio 2 workers / 1 worker: samples/s %.2f, s/epoch %.2f"
          % (jobs[1]["img_s"] / jobs[0]["img_s"], jobs[1]["epoch_s"] / jobs[0]["epoch_s"]))
    first = comm[0][1]
    print("\n%-50s %10s %10s %10s" % ("%s: %d arrays, %.1f M floats (%.0f MB)"
                                      % (args.pushpull_network, first["arrays"], first["floats"] / 1e6, first["floats"] * 4 / 1e6),
                                      "ms/iter", "min", "max"))
    for name, result in comm:
        print("%-50s %10.1f %10.1f %10.1f" % (name, statistics.median(result["ms"]), min(result["ms"]),
                                             max(result["ms"])))
    print("load average %.2f %.2f %.2f at the end" % os.getloadavg())
    common.write_result("bench_distributed", {
        "jobs": [{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in jobs],
        "pushpull": [{"name": name, "ms_median": round(statistics.median(r["ms"]), 1),
                      "ms_min": round(min(r["ms"]), 1), "ms_max": round(max(r["ms"]), 1),
                      "arrays": r["arrays"], "floats": r["floats"]} for name, r in comm],
        "settings": {"network": args.network, "size": args.size, "images": args.images,
                     "batch_size": args.batch_size, "epochs": args.epochs, "iterations": args.iterations}})
    return 0


if __name__ == "__main__":
    sys.exit(main())

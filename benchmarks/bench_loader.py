"""The training loader alone: img/s per worker and in total, uint8 against float32 batches.

    python benchmarks/bench_loader.py                       # 1 and all usable cores, 224 px, batch 32
    python benchmarks/bench_loader.py --workers 1,2 --size 224 --batches 20 --json out.json

Builds `train`'s own loader (`build_datasets` with the default augmentation, `data.make_loader`) over
photo-like 500x375 JPEGs, once with float32 batches (what CPU training uses) and once with uint8
batches (what GPU training uses; the mean/std then runs on the GPU), and times a second pass of
`--batches` batches for each worker count. img/s per worker tells how many cores one GPU needs:
an A100 under AMP trains ResNet-50 at about 2,200 img/s. Prints the machine header and one table,
stores the result in benchmarks/results/bench_loader.json (docs/benchmarks.md renders it; run it on a
quiet machine, or it is listed as under load) and, with `--json`, also writes the figures there.
"""
import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multitask_mx import _runtime  # noqa: E402  (does not import mxnet)


def parse_args():
    """Benchmark flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default=None, help="worker counts, e.g. 1,2 (default: 1 and all usable cores)")
    parser.add_argument("--size", type=int, default=224, help="network input side")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per figure")
    parser.add_argument("--images", type=int, default=128, help="generated JPEGs (cycled)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 1 worker, 64 px, 2 batches of 8")
    args = parser.parse_args()
    if args.smoke:
        args.workers, args.size, args.batch_size, args.batches, args.images = "1", 64, 8, 2, 16
    return args


def time_loader(lists, tasks, args, workers, uint8):
    """img/s of a second pass over ``args.batches`` batches of train's loader."""
    import common
    from multitask_mx.data.datasets import make_loader
    from multitask_mx.data.lists import read_list
    path = lists.path(args.batches * args.batch_size)
    flags = ["--data-train", path, "--save-result", "unused", "--batch-size", str(args.batch_size),
             "--image-shape", "3,%d,%d" % (args.size, args.size)]
    dataset = common.train_dataset(read_list(path, lists.root), tasks, flags, uint8=uint8)
    loader = make_loader(dataset, args.batch_size, True, workers, last_batch="rollover")
    for _ in loader:  # first pass: starts the workers, warms the page cache
        pass
    tic, seen, dtype = time.time(), 0, None
    for batch in loader:
        seen += batch[0].shape[0]
        dtype = batch[0].dtype
    return seen / (time.time() - tic), dtype


def main():
    """Run the table."""
    args = parse_args()
    _runtime.configure_threads()
    import numpy as np
    from common import machine_header, start_run, write_result
    start_run()  # an idle sample first: how busy the other processes keep the cores (the result's "quiet")
    from photos import Lists, make_photos
    from multitask_mx.data.tasks import build_tasks
    cores = _runtime.usable_cores()
    counts = [int(w) for w in args.workers.split(",")] if args.workers else sorted({1, cores})
    header = machine_header()
    print("\n".join(header))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lists = Lists(tmp, make_photos(tmp, args.images, (500, 375), 4))
        tasks = build_tasks([4])
        print("%-8s %-8s %10s %14s" % ("workers", "batches", "img/s", "img/s/worker"))
        for workers in counts:
            for uint8 in (False, True):
                speed, dtype = time_loader(lists, tasks, args, workers, uint8)
                rows.append({"workers": workers, "dtype": np.dtype(dtype).name, "img_s": round(speed, 1),
                             "img_s_per_worker": round(speed / max(1, workers), 1)})
                print("%-8d %-8s %10.1f %14.1f" % (workers, rows[-1]["dtype"], speed, speed / max(1, workers)),
                      flush=True)
    result = {"command": " ".join(sys.argv), "machine": header, "load_after": os.getloadavg(),
              "size": args.size, "batch_size": args.batch_size, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    write_result("bench_loader", {"size": args.size, "batch_size": args.batch_size, "rows": rows})
    return result


if __name__ == "__main__":
    main()

"""Issue 3's speed figures, side by side in one run on data_example/:

  (e) training img/s with --freeze-trunk (heads only: no trunk backward, no trunk update)
      against full fine-tuning, same network, images, batch and loader;
  (f) the loader over data_example/ reading and decoding from disk against --cache-images
      (decoded once into RAM), with the one-off caching time and its memory.

    python benchmarks/bench_finetune.py                 # resnet50_v1 at 224, batch 16
    python benchmarks/bench_finetune.py --quick         # resnet18_v1 at 64: about a minute
    python benchmarks/bench_finetune.py --smoke         # seconds: resnet18_v1 at 32, 2 batches, once

Figures are medians of --repeats alternating measurements.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from multitask_mx import _runtime  # noqa: E402
import common  # noqa: E402  (benchmarks/: the run's machine, load and result file)

_runtime.configure_threads()

import mxnet as mx  # noqa: E402

from bench_training import TrainEpochs, loading_sources  # noqa: E402
from multitask_mx.model import network as model  # noqa: E402
from multitask_mx.data.datasets import make_loader  # noqa: E402
from multitask_mx.model.finetune import FinetuneConfig, apply_freezing  # noqa: E402
from multitask_mx.data.lists import read_list  # noqa: E402
from multitask_mx.data.tasks import build_tasks  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "data_example")


def parse_args(argv=None):
    """Benchmark settings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", default="resnet50_v1")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=6, help="timed training batches per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=_runtime.default_loader_workers())
    parser.add_argument("--quick", action="store_true", help="resnet18_v1 at 64, 4 batches, 2 repeats")
    parser.add_argument("--smoke", action="store_true", help="resnet18_v1 at 32, 2 batches of 8, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.network, args.size, args.batches, args.repeats = "resnet18_v1", 64, 4, 2
    if args.smoke:
        args.network, args.size, args.batches, args.repeats, args.batch_size = "resnet18_v1", 32, 2, 1, 8
    return args


def train_flags(args):
    """`train`'s argv for these settings, every other flag at its default (so the transforms are the real presets)."""
    return ["--data-train", os.path.join(EXAMPLE, "train_data.lst"), "--save-result", "/tmp", "--network",
            args.network, "--image-shape", "3,%d,%d" % (args.size, args.size), "--batch-size", str(args.batch_size)]


def datasets(args, flags, tasks):
    """data_example's training set with train's transform preset."""
    train = read_list(os.path.join(EXAMPLE, "train_data.lst"), os.path.join(EXAMPLE, "images"))
    return common.train_dataset(train, tasks, flags)


def alternate(measures, repeats):
    """{name: [img/s, ...]} measuring each in turn, ``repeats`` times."""
    runs = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            runs[name].append(measure())
    return runs


def bench_freeze(args, flags, tasks):
    """(e): one net, one loader; the same batches with the trunk frozen or training."""
    net = model.build_net(model.TrunkSpec(args.network), tasks, [mx.cpu()], (3, args.size, args.size))
    net.hybridize(static_alloc=True, static_shape=True)
    loader = make_loader(datasets(args, flags, tasks), args.batch_size, True, args.workers, "rollover")
    epochs = TrainEpochs(net, tasks, common.train_config(flags))
    batches = [b for _, b in zip(range(args.batches), loader)]  # decoded once: the trunk is what differs
    epochs.epoch(batches[:1])

    def mode(freeze):
        def measure():
            if apply_freezing(net, FinetuneConfig(freeze_trunk=freeze), 2):
                net.hybridize(static_alloc=True, static_shape=True)
                epochs.epoch(batches[:1])  # rebuild the graph outside the timing
            return epochs.epoch(batches)
        return measure
    return alternate({"full fine-tuning": mode(False), "--freeze-trunk": mode(True)}, args.repeats)


def bench_cache(args, flags, tasks):
    """(f): img/s of iterating the loader over data_example, from disk and from the RAM cache."""
    disk, cached = datasets(args, flags, tasks), datasets(args, flags, tasks)
    tic = time.time()
    used = cached.cache_images(args.workers)
    cache_seconds = time.time() - tic

    def loading(dataset):  # img/s of one pass over a loader, after an untimed first pass
        return loading_sources(lambda _: make_loader(dataset, args.batch_size, True, args.workers, "keep"))(None)
    runs = alternate({"loader, decoding from disk": loading(disk), "loader, --cache-images": loading(cached)},
                     args.repeats)
    return runs, cache_seconds, used


def main(argv=None):
    """Measure (e) and (f) and print one table."""
    args = parse_args(argv)
    flags = train_flags(args)
    tasks = build_tasks([4])
    print("# bench_finetune.py %s" % time.strftime("%Y-%m-%d %H:%M"))
    print("\n".join(common.machine_header()))
    print("settings: %s at %dx%d, batch %d, %d timed batches, %d loader workers, %d repeats (medians)"
          % (args.network, args.size, args.size, args.batch_size, args.batches, args.workers, args.repeats))
    freeze = bench_freeze(args, flags, tasks)
    cache, cache_seconds, used = bench_cache(args, flags, tasks)
    rows = [("(e) " + k, v) for k, v in freeze.items()] + [("(f) " + k, v) for k, v in cache.items()]
    print("\n%-40s %9s %7s  %s" % ("measurement", "img/s", "ratio", "runs"))
    base, figures = {}, []
    for name, runs in rows:
        speed = statistics.median(runs)
        ratio = speed / base[name[:3]] if name[:3] in base else None
        base.setdefault(name[:3], speed)
        print("%-40s %9.2f %7s  %s" % (name, speed, "%.2fx" % ratio if ratio else "",
                                        " ".join("%.1f" % r for r in runs)))
        figures.append({"name": name, "img_s": round(speed, 2), "ratio": ratio and round(ratio, 3),
                        "runs": [round(r, 2) for r in runs]})
    images = len(read_list(os.path.join(EXAMPLE, "train_data.lst")).entries)
    print("ratio: against the first line of the same letter; (f) caching %d images took %.2f s and %.1f MB"
          % (images, cache_seconds, used / 1e6))
    common.write_result("bench_finetune", {"rows": figures, "network": args.network, "size": args.size,
                                           "batch_size": args.batch_size, "batches": args.batches,
                                           "cache": {"images": images, "seconds": round(cache_seconds, 2),
                                                     "mb": round(used / 1e6, 1)}})


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Prediction speed on a folder of JPEGs: our batched path against one image at a time, in one run.

(a) ``inference.predict_paths``, what ``multitask-mx predict`` runs: DataLoader worker
    processes decode and transform, the network sees batches of ``--batch-size``,
    results are read back one batch late so the engine never waits;
(b) a loop calling the network on one image at a time (seed 000's ``predict.py``:
    read, preprocess, predict, read the result, next image), same network, same
    weights, same preprocessing, at its fastest setting: the loop is measured with
    MKL-DNN's fused graph and with the plain one (MULTITASK_MX_NO_FUSION=1), and the
    faster of the two is the baseline (at batch 1 the plain graph was the faster here).

Target (issue 5): (a) >= 5x (b) at batch 32 for resnet50_v1. Random weights: the speed
does not depend on them. Each figure is one timed pass over all images after an
untimed warm-up pass over one batch.

    python benchmarks/bench_predict.py                     # resnet50_v1 at 224, batch 32, 128 JPEGs
    python benchmarks/bench_predict.py --network resnet18_v1 --size 112 --images 64 --batch-size 16
    python benchmarks/bench_predict.py --smoke           # seconds: resnet18_v1 at 32, 8 small JPEGs
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from multitask_mx import _runtime  # noqa: E402  (does not import mxnet)
import common  # noqa: E402  (benchmarks/: the run's machine, load and result file)

_runtime.configure_threads()  # OpenMP reads OMP_NUM_THREADS once, when mxnet loads

import cv2  # noqa: E402
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from multitask_mx.use import inference  # noqa: E402
from multitask_mx.training.checkpoints import CheckpointSaver  # noqa: E402
from common import machine_header  # noqa: E402
from multitask_mx.devices import parse_contexts  # noqa: E402
from multitask_mx.data.images import decode_image  # noqa: E402
from multitask_mx.model.network import TrunkSpec, build_net  # noqa: E402
from multitask_mx.data.tasks import build_tasks  # noqa: E402


def parse_args(argv=None):
    """Benchmark flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="resnet50_v1", help="GluonCV network of the trunk")
    parser.add_argument("--size", type=int, default=224, help="network input side")
    parser.add_argument("--batch-size", type=int, default=32, help="batch of the batched path")
    parser.add_argument("--images", type=int, default=128, help="JPEGs generated in a temporary folder")
    parser.add_argument("--photo", default="500x375", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--workers", type=int, default=_runtime.default_loader_workers(),
                        help="decoding worker processes of the batched path (predict's default)")
    parser.add_argument("--gpus", default="", help="GPU id to run on ('' for CPU)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure the two paths this many times, alternating; the table shows medians")
    parser.add_argument("--smoke", action="store_true", help="seconds: resnet18_v1 at 32, 8 JPEGs of 64x48, batch 4")
    args = parser.parse_args(argv)
    if args.smoke:
        args.network, args.size, args.batch_size, args.images, args.photo, args.repeats = \
            "resnet18_v1", 32, 4, 8, "64x48", 1
    return args


def make_photos(folder, count, width, height, seed=0):
    """``count`` photo-like JPEGs (gradient, shapes, noise; quality 90); returns their paths."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(count):
        img = rng.uniform(30, 220, 3) + (xx[..., None] / width) * rng.uniform(-60, 60, 3) \
            + (yy[..., None] / height) * rng.uniform(-60, 60, 3)
        img = np.ascontiguousarray(img, np.float32)
        for _ in range(8):
            cv2.circle(img, (rng.randint(width), rng.randint(height)), rng.randint(5, height // 3),
                       tuple(float(c) for c in rng.uniform(0, 255, 3)), -1, cv2.LINE_AA)
        img += rng.normal(0, 6, img.shape).astype(np.float32)
        paths.append(os.path.join(folder, "photo_%04d.jpg" % i))
        cv2.imwrite(paths[-1], np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def make_save_dir(folder, network, size, ctx):
    """A save directory as `train` writes it (config.json + epoch 1), with random weights."""
    tasks = build_tasks([4])
    shape = (3, size, size)
    net = build_net(TrunkSpec(network=network), tasks, [ctx], shape)
    net.hybridize(static_alloc=True, static_shape=True)
    net(mx.nd.zeros((1,) + shape, ctx=ctx))
    saver = CheckpointSaver(folder, "bench")
    saver.write_config({"format": 1, "network": network, "image_shape": list(shape), "normalization": "imagenet",
                        "tasks": [t.to_dict() for t in tasks], "save_name": "bench", "classes": {}})
    saver.save_epoch(net, None, 1, {"epoch": 1})
    return folder


def batched(save_dir, paths, args, ctxs):
    """img/s of predict_paths over ``paths`` (after a one-batch warm-up)."""
    model = inference.load_model(save_dir, ctxs=ctxs)
    cfg = inference.PredictConfig(batch_size=args.batch_size, workers=args.workers, progress=False)
    inference.predict_paths(model, paths[:args.batch_size], cfg)
    mx.nd.waitall()
    tic = time.time()
    result = inference.predict_paths(model, paths, cfg)
    mx.nd.waitall()
    assert not result.failed
    return len(paths) / (time.time() - tic)


def one_at_a_time(save_dir, paths, ctxs, fused):
    """img/s of seed 000's loop: decode, preprocess, network on one image, read its result.

    ``fused``: MKL-DNN's fused inference graph (predict's default on CPU) or the plain graph.
    """
    saved = os.environ.pop("MULTITASK_MX_NO_FUSION", None)
    if not fused:
        os.environ["MULTITASK_MX_NO_FUSION"] = "1"
    try:
        model = inference.load_model(save_dir, ctxs=ctxs)
    finally:
        os.environ.pop("MULTITASK_MX_NO_FUSION", None)
        if saved is not None:
            os.environ["MULTITASK_MX_NO_FUSION"] = saved
    transform = model.transform()

    def predict_one(path):
        x = mx.nd.array(transform(decode_image(path, transform.decode_size))[None], ctx=ctxs[0])
        return [mx.nd.softmax(o).asnumpy() for o in model.net(x)]

    predict_one(paths[0])  # warm-up: memory planning for batch 1
    mx.nd.waitall()
    tic = time.time()
    for path in paths:
        predict_one(path)
    mx.nd.waitall()
    return len(paths) / (time.time() - tic)


def machine_lines(ctxs):
    """Machine and versions for the top of the table."""
    return machine_header(ctxs)


def main(argv=None):
    """Generate the images, measure both paths, print one table and store the result."""
    args = parse_args(argv)
    ctxs = parse_contexts(args.gpus)
    width, height = (int(v) for v in args.photo.lower().split("x"))
    speeds = {"loop, fused graph": [], "loop, plain graph": [], "batched": []}
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        os.makedirs(os.path.join(tmp, "images"))
        paths = make_photos(os.path.join(tmp, "images"), args.images, width, height)
        save_dir = make_save_dir(os.path.join(tmp, "run"), args.network, args.size, ctxs[0])
        for _ in range(max(1, args.repeats)):  # alternate, so a busy moment of the machine hits all
            speeds["loop, fused graph"].append(one_at_a_time(save_dir, paths, ctxs, fused=True))
            speeds["loop, plain graph"].append(one_at_a_time(save_dir, paths, ctxs, fused=False))
            speeds["batched"].append(batched(save_dir, paths, args, ctxs))
    median = {k: statistics.median(v) for k, v in speeds.items()}
    loop_name = max(("loop, fused graph", "loop, plain graph"), key=median.get)
    loop_speed, batch_speed = median[loop_name], median["batched"]
    lines = machine_lines(ctxs)
    lines.append("%s at %dx%d, random weights, 2 tasks; %d JPEGs of %dx%d in a temporary folder; median of %d"
                 % (args.network, args.size, args.size, args.images, width, height, max(1, args.repeats)))
    lines.append("")
    lines.append("%-58s %6s %8s %9s" % ("path", "batch", "img/s", "vs loop"))
    for name in ("loop, fused graph", "loop, plain graph"):
        lines.append("%-58s %6d %8.2f %8.2fx%s" % ("(b) %s, one image at a time" % name, 1, median[name],
                                                  median[name] / loop_speed, "  <- baseline (the faster)"
                                                  if name == loop_name else ""))
    lines.append("%-58s %6d %8.2f %8.2fx" % ("(a) predict_paths, DataLoader with %d worker(s), fused" % args.workers,
                                             args.batch_size, batch_speed, batch_speed / loop_speed))
    lines.append("target (issue 5): (a) >= 5x (b) at batch 32 for resnet50_v1")
    print("\n".join(lines))
    rows = [{"path": "(b) %s, one image at a time" % n, "batch": 1, "img_s": round(median[n], 2),
             "runs": [round(x, 2) for x in speeds[n]], "baseline": n == loop_name} for n in speeds if n != "batched"]
    rows.append({"path": "(a) predict_paths, %d worker(s), fused graph" % args.workers, "batch": args.batch_size,
                 "img_s": round(batch_speed, 2), "runs": [round(x, 2) for x in speeds["batched"]],
                 "vs_loop": round(batch_speed / loop_speed, 3)})
    common.write_result("bench_predict", {"rows": rows, "network": args.network, "size": args.size,
                                          "images": args.images, "photo": args.photo, "repeats": max(1, args.repeats)})


if __name__ == "__main__":
    main()

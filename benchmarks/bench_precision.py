#!/usr/bin/env python
"""Lower precision on the CPU: bf16 training and INT8 inference, speed and accuracy, in one run.

Speed (one process, back to back, random weights: speed does not depend on them; every
timer starts and stops on an idle engine, ``mx.nd.waitall()``; warm-up excluded):
  - inference of ``--network`` at ``--size``, hybridized as predict/evaluate/serve do
    (``graphs.hybridize_for_inference``): fp32 batched (MKL-DNN fused graph), INT8 batched
    (``quantize_net``, naive calibration on random images), each at predict's default batch for it
    (32; INT8 64, and INT8 at 32 too), and one image at a time in fp32 at its fastest setting
    (fused and plain graph both timed) and in INT8;
  - one training step, fp32 then bf16 (MXNet AMP; needs AVX-512, AMX where the CPU has it).
    Training comes last: ``amp.init`` stays on for the rest of the process.
Accuracy (real images through the CLI: 1,000 Fashion-MNIST training and 500 held-out images at 32 px
with cifar_resnet20_v1 where the Debian package is installed, else data_example/'s 240 and 80 JPEGs
with resnet18_v1 at 64 px; see parity_data):
  - ``train`` in fp32 and in bf16, same seed and epochs: last-epoch
    validation accuracy of each (target: bf16 within 0.01 of fp32);
  - ``evaluate --precision int8`` of the fp32 run on the validation list: top-1 agreement
    with fp32 (target >= 98 %) and the accuracy change.

    python benchmarks/bench_precision.py            # ResNet-50 at 224 + parity run (minutes on a quiet 2-core machine)
    python benchmarks/bench_precision.py --smoke    # seconds: resnet18_v1 at 32, 1 epoch on 48 images
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
from multitask_mx import _runtime  # noqa: E402  (does not import mxnet; requests AMX where the CPU has it)
import common  # noqa: E402  (benchmarks/: the run's machine, load and result file)

_runtime.configure_threads()  # OpenMP reads OMP_NUM_THREADS once, when mxnet loads

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

from multitask_mx.model import dtype_choice
from multitask_mx.use import graphs, inference, quantize  # noqa: E402
from multitask_mx.model.network import TrunkSpec, build_net  # noqa: E402
from multitask_mx.data.tasks import build_tasks  # noqa: E402

EXAMPLE = os.path.join(REPO, "data_example")


def parse_args(argv=None):
    """Benchmark flags (``--smoke`` shrinks everything)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="resnet50_v1", help="network of the speed table")
    parser.add_argument("--size", type=int, default=224, help="input side of the speed table")
    parser.add_argument("--batch-size", type=int, default=inference.DEFAULT_BATCH,
                        help="fp32 inference batch (predict's default)")
    parser.add_argument("--int8-batch", type=int, default=inference.DEFAULT_INT8_BATCH,
                        help="INT8 inference batch (predict's default with --precision int8); INT8 is also "
                             "timed at --batch-size")
    parser.add_argument("--train-batch", type=int, default=16, help="training step batch")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps / inference batches per figure")
    parser.add_argument("--single-images", type=int, default=32, help="images of the one-at-a-time loop")
    parser.add_argument("--repeats", type=int, default=3,
                        help="each speed figure this many times, sides alternating; medians (a shared VM's "
                             "speed drifts by 20 %% between minutes)")
    parser.add_argument("--accuracy-epochs", type=int, default=5, help="epochs of the parity trainings")
    parser.add_argument("--no-accuracy", action="store_true", help="speed table only")
    parser.add_argument("--no-speed", action="store_true", help="accuracy parity only")
    parser.add_argument("--smoke", action="store_true", help="seconds of work: small network, tiny parity run")
    args = parser.parse_args(argv)
    if args.smoke:
        args.network, args.size, args.batch_size, args.train_batch, args.int8_batch = "resnet18_v1", 32, 4, 4, 8
        args.steps, args.single_images, args.accuracy_epochs, args.repeats = 1, 4, 1, 1
    return args


def timed(fn, repeats):
    """Seconds per call of ``fn`` over ``repeats`` calls, after one untimed call; engine idle at both ends."""
    fn()
    mx.nd.waitall()
    tic = time.time()
    for _ in range(repeats):
        fn()
    mx.nd.waitall()
    return (time.time() - tic) / repeats


def inference_speeds(args):
    """img/s: fp32 and INT8, batched and one image at a time (fp32 at its faster graph)."""
    shape = (3, args.size, args.size)
    tasks = build_tasks([4])
    net = build_net(TrunkSpec(network=args.network), tasks, [mx.cpu()], shape)
    with tempfile.TemporaryDirectory() as tmp:
        net.hybridize()
        net(mx.nd.zeros((1,) + shape))
        net.export(os.path.join(tmp, "net"))
        files = (os.path.join(tmp, "net-symbol.json"), os.path.join(tmp, "net-0000.params"))
        calib = np.random.RandomState(0).uniform(-2, 2, (16,) + shape).astype(np.float32)
        blocks = {"int8": quantize.quantize_checkpoint(*files, calib, "naive")}  # speed: any calibration
        for name, fuse in (("fp32", True), ("fp32 plain graph", False)):  # as predict/evaluate/serve run them
            blocks[name] = graphs.hybridize_for_inference(quantize._load_block(*files), fuse=fuse)
    graphs.hybridize_for_inference(blocks["int8"], fuse=False)
    batches = {"fp32": mx.nd.random.uniform(-2, 2, (args.batch_size,) + shape),
               "int8": mx.nd.random.uniform(-2, 2, (args.int8_batch,) + shape)}
    one = mx.nd.random.uniform(-2, 2, (1,) + shape)

    def loop(block):
        def run():
            for _ in range(args.single_images):
                block(one)[0].asnumpy()  # the one-image path reads each answer before the next image
        return run

    runs = {}  # figure -> img/s of each repeat; the sides alternate within a repeat
    for _ in range(args.repeats):
        for name in ("fp32", "int8"):
            runs.setdefault("%s batched" % name, []).append(
                len(batches[name]) / timed(lambda b=blocks[name], x=batches[name]: b(x), args.steps))
        if args.int8_batch != args.batch_size:  # the same batch as fp32's, for the record
            runs.setdefault("int8 at fp32's batch", []).append(
                args.batch_size / timed(lambda b=blocks["int8"], x=batches["fp32"]: b(x), args.steps))
        for name in ("fp32", "fp32 plain graph", "int8"):
            runs.setdefault("%s one image" % name, []).append(args.single_images / timed(loop(blocks[name]), 1))
    speeds = {name: statistics.median(values) for name, values in runs.items()}
    best_single = max(speeds["fp32 one image"], speeds["fp32 plain graph one image"])
    speeds = {k: round(v, 2) for k, v in speeds.items()}
    speeds["int8 batched / fp32 batched"] = round(speeds["int8 batched"] / speeds["fp32 batched"], 2)
    if "int8 at fp32's batch" in speeds:
        speeds["int8 / fp32 at fp32's batch"] = round(speeds["int8 at fp32's batch"] / speeds["fp32 batched"], 2)
    speeds["int8 batched / fp32 one-image loop (fastest graph)"] = round(speeds["int8 batched"] / best_single, 2)
    speeds["runs (img/s)"] = {name: [round(v, 2) for v in values] for name, values in runs.items()}
    return speeds


def training_speeds(args):
    """img/s of one training step, fp32 then bf16 (if this CPU has bf16 kernels)."""
    shape = (3, args.size, args.size)
    if not _runtime.bf16_supported():
        net = build_net(TrunkSpec(network=args.network), build_tasks([4]), [mx.cpu()], shape)
        net.hybridize(static_alloc=True, static_shape=True)
        fp32 = dtype_choice.synthetic_train_speed(net, shape, args.train_batch, mx.cpu(), steps=args.steps)
        return {"float32": round(fp32, 2), "bfloat16": None, "bfloat16 note": "no AVX-512: no bf16 kernels"}
    # amp.init cannot be undone: each repeat times fp32 then bf16 in a fresh child process
    runs = [dtype_choice.measure_in_child(TrunkSpec(network=args.network), [4], shape, args.train_batch, args.steps)
            for _ in range(args.repeats)]
    speeds = {dtype: statistics.median(r[dtype] for r in runs) for dtype in ("float32", "bfloat16")}
    speeds["bfloat16 / float32"] = round(speeds["bfloat16"] / speeds["float32"], 2)
    speeds["runs (img/s)"] = {dtype: [r[dtype] for r in runs] for dtype in ("float32", "bfloat16")}
    return speeds


def _subset(src, dst, count):
    with open(src) as f:
        lines = f.readlines()
    with open(dst, "w") as f:
        f.writelines(lines[::max(1, len(lines) // count)][:count])
    return dst


def cli(*argv):
    """Run ``python -m multitask_mx ARGV`` (the real command line); its stdout."""
    done = subprocess.run([sys.executable, "-m", "multitask_mx"] + [str(a) for a in argv], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit("failed: multitask-mx %s\n%s" % (" ".join(map(str, argv)), done.stderr[-3000:]))
    return done.stdout


def parity_data(args, tmp):
    """(train list, val list, image root, network, side, description): Fashion-MNIST where installed, else data_example/.

    The INT8 agreement means something only on a model that has learnt: resnet18_v1 on data_example's
    240 shapes reached 0.34 (a near-constant model agrees with anything), ResNet-20 on 1,000
    Fashion-MNIST images about 0.75, measured on 500 held-out images.
    """
    from learning_data import DatasetMissing, Prepared
    if not args.smoke:
        try:
            data = Prepared("fashion", os.path.join(REPO, "benchmarks", ".data"))
            train, val = data.lst("train", range(10), 100), data.lst("val", range(10), 50)
            return (train, val, os.path.dirname(train), "cifar_resnet20_v1", 32,
                    "Fashion-MNIST (%s), 1,000 training and 500 held-out images, 32 px" % data.meta["source"])
        except DatasetMissing as exc:
            print("parity on data_example/: %s" % exc, file=sys.stderr)
    train, val = os.path.join(EXAMPLE, "train_data.lst"), os.path.join(EXAMPLE, "val_data.lst")
    size = 64
    if args.smoke:
        train, val, size = (_subset(train, os.path.join(tmp, "t.lst"), 32),
                            _subset(val, os.path.join(tmp, "v.lst"), 16), 32)
    return train, val, os.path.join(EXAMPLE, "images"), "resnet18_v1", size, "data_example/ (real JPEG images, 64x64)"


def accuracy_parity(args, tmp):
    """Validation accuracy of fp32 and bf16 trainings; INT8 agreement and change on the validation list."""
    train, val, images, network, size, described = parity_data(args, tmp)
    out = {"data": described, "network": network, "image_size": size,
           "epochs": args.accuracy_epochs, "train_images": sum(1 for _ in open(train)),
           "val_images": sum(1 for _ in open(val))}
    dtypes = ["float32"] + (["bfloat16"] if _runtime.bf16_supported() else [])
    for dtype in dtypes:
        save = os.path.join(tmp, dtype)
        cli("train", "--network", network, "--image-shape", "3,%d,%d" % (size, size), "--num-epoch",
            args.accuracy_epochs, "--data-train", train, "--image-train", images, "--data-val",
            val, "--image-val", images, "--save-result", save, "--seed", 1, "--no-derived-task", "--quiet",
            "--dtype", dtype)
        last = json.load(open(os.path.join(save, "history.json")))[-1]
        out["%s val accuracy" % dtype] = round(last["val"]["label"]["acc"], 4)
    if "bfloat16" in dtypes:
        out["bf16 - fp32 val accuracy"] = round(out["bfloat16 val accuracy"] - out["float32 val accuracy"], 4)
    else:
        out["bf16 note"] = "not trained: this CPU has no AVX-512 (no oneDNN bf16 kernels)"
    report = os.path.join(tmp, "int8.json")
    cli("evaluate", "--save-result", os.path.join(tmp, "float32"), "--data", val, "--image-root", images,
        "--precision", "int8", *(["--calib-images", 16] if args.smoke else []), "--json", report, "--quiet")
    change = json.load(open(report))["precision_change"]["label"]
    out.update({"int8 top-1 agreement with fp32": round(change["top1_agreement"], 4),
                "int8 val accuracy": round(change["accuracy"], 4),
                "int8 - fp32 val accuracy": round(change["change"], 4)})
    return out


def summary_rows(figures):
    """The README's rows: each measured ratio or agreement beside issue 13's target, and whether it is met."""
    rows = []

    def add(measurement, value, target, met, unit=""):
        if value is not None:
            rows.append({"measurement": measurement, "value": "%s%s" % (value, unit), "target": target,
                         "met": "yes" if met else "no"})

    for key, values in figures.items():
        if key.startswith("inference"):
            ratio, loop = values["int8 batched / fp32 batched"], values["int8 batched / fp32 one-image loop (fastest graph)"]
            add("INT8 batched / fp32 batched, %s" % key.split("(")[1].rstrip(")"), ratio, ">= 3", ratio >= 3, "x")
            add("INT8 batched / fp32 one-image loop (fastest graph)", loop, ">= 5", loop >= 5, "x")
        if key.startswith("training") and values.get("bfloat16"):
            ratio = values["bfloat16 / float32"]
            add("bf16 / fp32 training step, %s" % key.split("(")[1].rstrip(")"), ratio, ">= 1.5", ratio >= 1.5, "x")
    acc = figures.get("accuracy", {})
    if "bf16 - fp32 val accuracy" in acc:
        change = acc["bf16 - fp32 val accuracy"]
        add("bf16 - fp32 held-out accuracy, %s, %d epochs" % (acc["network"], acc["epochs"]), change,
            ">= -0.01", change >= -0.01)
    if "int8 top-1 agreement with fp32" in acc:
        agreement = acc["int8 top-1 agreement with fp32"]
        add("INT8 top-1 agreement with fp32 (%d held-out images)" % acc["val_images"], agreement, ">= 0.98",
            agreement >= 0.98)
    return rows


def main(argv=None):
    """Measure, print one table, store benchmarks/results/bench_precision.json."""
    args = parse_args(argv)
    for line in common.machine_header():
        print(line)
    print("CPU: %s" % ", ".join("%s=%s" % kv for kv in sorted(_runtime.CPU_FEATURES.items())))
    figures = {"cpu_features": dict(_runtime.CPU_FEATURES)}
    if not args.no_accuracy:  # first: its trainings run in child processes, before this one turns AMP on
        with tempfile.TemporaryDirectory() as tmp:
            figures["accuracy"] = accuracy_parity(args, tmp)
    if not args.no_speed:
        figures["inference img/s (%s, %d px, batch %d, INT8 batch %d)" % (
            args.network, args.size, args.batch_size, args.int8_batch)] = inference_speeds(args)
        figures["training img/s (%s, %d px, batch %d)" % (args.network, args.size, args.train_batch)] = \
            training_speeds(args)
    figures["rows"] = summary_rows(figures)
    for section, values in figures.items():
        if section == "rows":
            continue
        print(section)
        for key, value in values.items():
            print("  %-52s %s" % (key, value))
    for row in figures["rows"]:
        print("%-60s %-8s target %-8s met: %s" % (row["measurement"], row["value"], row["target"], row["met"]))
    common.write_result("bench_precision", figures, notes="random weights for speed; medians of --repeats %d; "
                        "accuracy: see accuracy.data" % args.repeats)


if __name__ == "__main__":
    main()

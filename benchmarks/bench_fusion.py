"""BatchNorm+ReLU fusion (multitask_mx/model/fusion.py): a training step with and without it, same weights.
Also the SGD update grouped as MXNet does by default (4 parameters per operator) against one by one
(pipeline.update_parameters_one_by_one, what `train` does on CPUs), on the classic ResNet-50's parameters.

For each trunk, two networks with the same weights, one with its BatchNorm+ReLU pairs
fused (what `train` builds on a CPU) and one without; their training steps (forward,
backward, SGD update on one in-memory batch) and inference forwards (validation) are
timed in alternating rounds in one process, so that the machine's drift between
minutes falls on both sides alike. The ratio is the median over rounds of fused/plain.

    python benchmarks/bench_fusion.py            # classic ResNet-50 and resnet50_v1 at 224 (batch 16), ResNet-20 at 32 (batch 64)
    python benchmarks/bench_fusion.py --smoke    # seconds: small images, one round
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from multitask_mx import _runtime  # noqa: E402
import common  # noqa: E402  (benchmarks/: the run's machine, load and result file)

_runtime.configure_threads()

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

from bench_training import make_classic_checkpoint  # noqa: E402
from multitask_mx import mxprivate  # noqa: E402
from multitask_mx.model import network as model  # noqa: E402
from multitask_mx.model.pretrained import load_classic_checkpoint  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSIC_SYMBOL = os.path.join(os.path.dirname(HERE), "tests", "fixtures", "resnet-50-symbol.json")
# (trunk, image side, batch, steps per round); "classic" is the original's ResNet-50 checkpoint symbol
TRUNKS = [("classic", 224, 16, 2), ("resnet50_v1", 224, 16, 2), ("cifar_resnet20_v1", 32, 64, 8)]
SMOKE_TRUNKS = [("classic", 32, 4, 1), ("cifar_resnet20_v1", 32, 8, 1)]


def parse_args(argv=None):
    """Benchmark settings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="alternating timing rounds per trunk")
    parser.add_argument("--smoke", action="store_true", help="small images, one round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds = 1
    return args


def trunk_spec(trunk, folder):
    """The TrunkSpec `train` makes for ``trunk`` (a classic checkpoint written to ``folder``)."""
    if trunk != "classic":
        return model.TrunkSpec(trunk)
    prefix = make_classic_checkpoint(CLASSIC_SYMBOL, os.path.join(folder, "resnet-50"))
    features, input_name, _, _ = load_classic_checkpoint(prefix, 0)
    return model.TrunkSpec(network="symbol:resnet-50", symbol_json=features.tojson(), input_name=input_name)


def twin_steps(spec, shape, batch):
    """{"plain"|"fused": (train step, inference forward)} of two networks with the same weights."""
    x = mx.nd.random.uniform(-1, 1, shape=(batch,) + shape)
    y = mx.nd.array([i % 4 for i in range(batch)])
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    steps, weights = {}, None
    for name, fuse in (("plain", None), ("fused", shape)):
        net = model.MultiTaskNet(spec, [4], ["label"], fuse_for_shape=fuse)
        model.initialize_net(net, [mx.cpu()], shape)
        params = mxprivate.structural_params(net)  # structural names: the same in both networks
        weights = weights or {k: p.data().copy() for k, p in params.items()}
        for k, p in params.items():
            p.set_data(weights[k])
        net.hybridize(static_alloc=True, static_shape=True)
        trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})

        def train(net=net, trainer=trainer):
            with autograd.record():
                total = loss(net(x)[0], y)
            total.backward()
            trainer.step(batch)

        def infer(net=net):
            net(x)[0].wait_to_read()
        for _ in range(2):  # graphs, memory and oneDNN primitives made outside the timing
            train()
            infer()
        mx.nd.waitall()
        steps[name] = (train, infer)
    return steps


def timed(fn, count, batch):
    """img/s of ``count`` calls of ``fn``, from an idle engine to an idle engine."""
    mx.nd.waitall()
    tic = time.time()
    for _ in range(count):
        fn()
    mx.nd.waitall()
    return count * batch / (time.time() - tic)


def measure(trunk, side, batch, steps_per_round, rounds, folder):
    """Rows (training and inference) for one trunk: plain and fused img/s and the paired ratio."""
    shape = (3, side, side)
    steps = twin_steps(trunk_spec(trunk, folder), shape, batch)
    runs = {(kind, name): [] for kind in ("train", "infer") for name in steps}
    for _ in range(rounds):
        for name, (train, infer) in steps.items():
            runs[("train", name)].append(timed(train, steps_per_round, batch))
            runs[("infer", name)].append(timed(infer, 2 * steps_per_round, batch))
    rows = []
    for kind, what in (("train", "training step"), ("infer", "inference forward")):
        plain, fused = runs[(kind, "plain")], runs[(kind, "fused")]
        rows.append({"trunk": "classic ResNet-50 checkpoint" if trunk == "classic" else trunk,
                     "measurement": what, "image": "%dx%d" % (side, side), "batch": batch,
                     "plain_img_s": round(statistics.median(plain), 2), "fused_img_s": round(statistics.median(fused), 2),
                     "ratio": round(statistics.median([f / p for p, f in zip(plain, fused)]), 3),
                     "plain_runs": [round(v, 2) for v in plain], "fused_runs": [round(v, 2) for v in fused]})
        print("%-30s %-18s plain %8.2f img/s  fused %8.2f img/s  fused/plain %.3f" % (
            rows[-1]["trunk"], what, rows[-1]["plain_img_s"], rows[-1]["fused_img_s"], rows[-1]["ratio"]), flush=True)
    return rows


def update_grouping(trunk, side, rounds, folder, updates=10):
    """ms per SGD-with-momentum update of every parameter of ``trunk``: grouped 4 per operator (MXNet's
    default) and one by one, alternating rounds; median ms of each and the median per-round ratio."""
    shape = (3, side, side)
    net = model.MultiTaskNet(trunk_spec(trunk, folder), [4], ["label"])
    model.initialize_net(net, [mx.cpu()], shape)
    params = [p for p in net.collect_params().values() if p.grad_req != "null"]
    updater = mx.optimizer.get_updater(mx.optimizer.create("sgd", learning_rate=0.01, momentum=0.9, wd=1e-4))
    optimizer = updater.optimizer
    indices, weights, grads = list(range(len(params))), [p.data() for p in params], [p.grad() for p in params]
    times = {4: [], 1: []}
    for _ in range(rounds + 1):  # the first round makes the momentum arrays: not counted
        for group in times:
            optimizer.aggregate_num = group
            mx.nd.waitall()
            tic = time.time()
            for _ in range(updates):
                updater(indices, grads, weights)
            mx.nd.waitall()
            times[group].append(1000 * (time.time() - tic) / updates)
    grouped, single = times[4][1:], times[1][1:]
    row = {"trunk": "classic ResNet-50 checkpoint" if trunk == "classic" else trunk, "parameters": len(params),
           "grouped_ms": round(statistics.median(grouped), 2), "one_by_one_ms": round(statistics.median(single), 2),
           "grouped_over_one_by_one": round(statistics.median([g / o for g, o in zip(grouped, single)]), 3)}
    print("%-30s SGD update of %d parameters: grouped (4 per operator) %.1f ms, one by one %.1f ms, ratio %.3f"
          % (row["trunk"], row["parameters"], row["grouped_ms"], row["one_by_one_ms"], row["grouped_over_one_by_one"]))
    return row


def main(argv=None):
    """Measure every trunk and store the rows."""
    args = parse_args(argv)
    common.start_run()
    print("# bench_fusion.py %s" % time.strftime("%Y-%m-%d %H:%M"))
    print("\n".join(common.machine_header()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_fusion_") as folder:
        for trunk, side, batch, steps in (SMOKE_TRUNKS if args.smoke else TRUNKS):
            rows += measure(trunk, side, batch, steps, args.rounds, folder)
        update = update_grouping("classic", 32 if args.smoke else 224, args.rounds, folder, 1 if args.smoke else 10)
    common.write_result("bench_fusion", {"rows": rows, "rounds": args.rounds, "update": update},
                        notes="two networks with the same weights in one process, alternating rounds; "
                              "ratio = median over rounds of fused/plain img/s")


if __name__ == "__main__":
    main()

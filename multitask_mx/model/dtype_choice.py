"""``--dtype auto``: time a few training steps of the network in float32 and bfloat16 and keep the faster.

The timing runs in a child process (``time_train_dtypes``), since ``amp.init`` cannot be
undone, and bfloat16 is kept only where it is faster for this network and image size: it
costs on small networks (ResNet-20 at 32 px took 70 s in bf16 against 44 s in fp32).
Above ``network`` in the model package (it builds networks); ``precision`` (the AMP state) is below it.
"""
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

from .. import _runtime
import mxnet as mx
from mxnet import autograd, gluon

from .network import build_net
from .precision import init_amp

_logger = logging.getLogger(__name__)

AUTO_MIN_GAIN = 1.05  # bf16 must be this much faster than fp32 for auto to choose it (timing noise)


def synthetic_train_speed(net, image_shape, batch, ctx, seconds=None, steps=None, warmup=2):
    """Training img/s of ``net`` on one random in-memory batch, after ``warmup`` steps.

    Runs ``steps`` timed steps, or as many as fit in ``seconds``; each step waits for
    the engine, so the clock stops after the work is done.
    """
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.001, "momentum": 0.9})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    x = mx.nd.random.uniform(shape=(batch,) + tuple(image_shape), ctx=ctx)
    y = mx.nd.zeros((batch,), ctx=ctx)

    def step():
        with autograd.record():
            outs = net(x)
            outs = [outs] if isinstance(outs, mx.nd.NDArray) else outs
            total = mx.nd.add_n(*[loss(o, y) for o in outs])
        total.backward()
        trainer.step(batch)
        mx.nd.waitall()

    for _ in range(warmup):  # memory planning and kernel selection
        step()
    done, tic = 0, time.time()
    while (steps is not None and done < steps) or (steps is None and time.time() - tic < seconds):
        step()
        done += 1
    return done * batch / (time.time() - tic)


def time_train_dtypes(trunk_spec, task_classes, image_shape, batch, ctx=None, steps=3, seconds=None):
    """{"float32": img/s, "bfloat16": img/s} for the same network, batch and images, back to back.

    Calls ``amp.init`` for the bf16 half, which stays on for the rest of the process:
    run it in a process of its own (``measure_in_child``) or at the end (doctor).
    """
    from ..data.tasks import build_tasks
    ctx = ctx or mx.cpu()
    tasks = build_tasks(list(task_classes))
    speeds = {}
    for dtype in ("float32", "bfloat16"):
        init_amp(dtype)
        net = build_net(trunk_spec, tasks, [ctx], image_shape)
        net.hybridize(static_alloc=True, static_shape=True)
        speeds[dtype] = round(synthetic_train_speed(net, image_shape, batch, ctx, seconds, steps), 2)
    return speeds


def measure_in_child(trunk_spec, task_classes, image_shape, batch, steps=3):
    """``time_train_dtypes`` in a fresh Python process (same threads and AMX set-up); the speeds."""
    with tempfile.TemporaryDirectory() as tmp:
        job = os.path.join(tmp, "job.json")
        with open(job, "w") as f:
            json.dump({"network": trunk_spec.network, "symbol_json": trunk_spec.symbol_json,
                       "input_name": trunk_spec.input_name, "classes": list(task_classes),
                       "image_shape": list(image_shape), "batch": batch, "steps": steps}, f)
        done = subprocess.run([sys.executable, "-m", "multitask_mx.model.dtype_choice", job], capture_output=True,
                              text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    if done.returncode != 0:
        tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError("the fp32/bf16 timing process failed (exit %d): %s" % (done.returncode, tail[0]))
    return json.loads(done.stdout.strip().splitlines()[-1])


def native_bf16():
    """True where oneDNN's bf16 kernels run in hardware: AMX granted to this process, or AVX512-BF16.

    On AVX-512 without either, oneDNN emulates bf16 and it is slower than float32, so
    ``auto`` does not even time it. Measured with AVX512-BF16 and no AMX (2 cores, AMD
    EPYC): ResNet-50 at 224 trained 1.59x faster in bf16 (bench_precision.json, median of 3).
    """
    features = _runtime.CPU_FEATURES
    return bool((_runtime.amx_enabled() and features.get("amx_bf16")) or features.get("avx512_bf16"))


def resolve_dtype(dtype, ctxs, trunk_spec, task_classes, image_shape, batch):
    """The --dtype to train with: ``auto`` becomes bfloat16 where the CPU has native bf16 and bf16 steps time faster."""
    if dtype != "auto":
        return dtype
    if not all(c.device_type == "cpu" for c in ctxs):
        _logger.info("--dtype auto: float32 (auto chooses between float32 and bfloat16 on CPUs only; on GPUs "
                     "pass --dtype float16 for mixed precision)")
        return "float32"
    if not native_bf16():
        _logger.info("--dtype auto: float32 (no native bf16 on this CPU/process: no AVX512-BF16, AMX %s)",
                     _runtime.CPU_FEATURES.get("amx"))
        return "float32"
    per_device = max(1, batch // len(ctxs))
    tic = time.time()
    try:
        speeds = measure_in_child(trunk_spec, task_classes, image_shape, per_device)
    except RuntimeError as exc:
        _logger.warning("--dtype auto: float32, since %s", exc)
        return "float32"
    chosen = "bfloat16" if speeds["bfloat16"] > AUTO_MIN_GAIN * speeds["float32"] else "float32"
    _logger.info("--dtype auto: %s (timed %s at %s, batch %d: float32 %.2f img/s, bfloat16 %.2f img/s; "
                 "%.1f s to measure)", chosen, trunk_spec.network, "x".join(map(str, image_shape[1:])),
                 per_device, speeds["float32"], speeds["bfloat16"], time.time() - tic)
    return chosen


def _child_main(job_file):
    # Through the package's module, not this __main__ copy (its AMP state is the one the model reads).
    from . import dtype_choice
    from .network import TrunkSpec
    with open(job_file) as f:
        job = json.load(f)
    spec = TrunkSpec(network=job["network"], symbol_json=job["symbol_json"], input_name=job["input_name"])
    speeds = dtype_choice.time_train_dtypes(spec, job["classes"], tuple(job["image_shape"]), job["batch"],
                                         steps=job["steps"])
    print(json.dumps(speeds))


if __name__ == "__main__":
    _child_main(sys.argv[1])

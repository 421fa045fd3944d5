"""Training in lower precision: bfloat16 on CPUs (fast with AMX), float16 on GPUs, through MXNet AMP.

``--dtype bfloat16`` and ``float16`` call ``amp.init`` before the network is built: AMP
patches the operators the network is made of, so convolutions and dense layers run in
the low type while the weights (the optimizer's master copy), BatchNorm statistics,
softmax and the losses stay float32, as AMP's lists decide. Two things AMP's patching
misses are handled here:

- a trunk cut from a classic checkpoint is loaded from JSON, not built from patched
  operators: ``amp_symbol`` converts that symbol with ``amp.convert_symbol``;
- checkpoints stay float32 and load anywhere: ``HybridBlock.export`` bypasses AMP's casts
  that feed another node (``remove_amp_cast=True``, MXNet's default), ``drop_output_casts``
  removes the ones that are outputs (bf16 logits cast back to float32), and the weights
  are float32 master copies.

``--dtype auto`` times a few training steps of each type (``time_train_dtypes``, in a
child process, since ``amp.init`` cannot be undone) and keeps bfloat16 only where it is
faster for this network and image size: it costs on small networks (measured: ResNet-20
at 32 px took 70 s in bf16 against 44 s in fp32).
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

from ..errors import UserInputError

_logger = logging.getLogger(__name__)

DTYPES = ("float32", "float16", "bfloat16", "auto")
AUTO_MIN_GAIN = 1.05  # bf16 must be this much faster than fp32 for auto to choose it (timing noise)
_AMP = {"dtype": None}  # the type amp.init was called with in this process


def check_dtype(dtype, ctxs):
    """Refuse a --dtype the devices cannot run, before any work."""
    on_cpu = all(c.device_type == "cpu" for c in ctxs)
    if dtype == "float16" and on_cpu:
        raise UserInputError("--dtype float16 (mixed precision) needs GPUs; on CPU it would be slower and less "
                             "accurate. Use --dtype bfloat16 on a CPU with AVX-512, or pass --gpus.")
    if dtype == "bfloat16" and not on_cpu:
        raise UserInputError("--dtype bfloat16: MXNet 1.9.1 has bfloat16 kernels for CPUs only; on GPUs use "
                             "--dtype float16.")
    if dtype == "bfloat16" and not _runtime.bf16_supported():
        raise UserInputError("--dtype bfloat16 needs a CPU with AVX-512 (oneDNN has no bfloat16 kernels for this "
                             "one; fast ones need avx512_bf16 or amx_bf16 in /proc/cpuinfo). Drop --dtype.")


def init_amp(dtype):
    """Start MXNet AMP for ``dtype`` (float16/bfloat16); nothing for float32. Call before building the net."""
    if dtype not in ("float16", "bfloat16"):
        return
    from mxnet.contrib import amp
    amp.init(target_dtype=dtype)
    _AMP["dtype"] = dtype
    _logger.info("mixed precision: %s compute through MXNet AMP, float32 weights, BatchNorm, softmax and "
                 "loss%s", dtype, "; dynamic loss scaling" if dtype == "float16" else
                 " (no loss scaling: bfloat16 has float32's range)")


def amp_dtype():
    """The low type AMP runs in this process, or None."""
    return _AMP["dtype"]


def needs_loss_scaling(dtype):
    """float16 gradients underflow without loss scaling; bfloat16 ones keep float32's exponent range.

    Skipping the scaler for bf16 also saves its overflow check, which reads the
    gradients back every step (a synchronisation of the engine).
    """
    return dtype == "float16"


def amp_symbol(symbol, input_name="data"):
    """``symbol`` with AMP's casts for the active AMP type (``amp.convert_symbol``); unchanged without AMP.

    A trunk loaded from a checkpoint's JSON is not built from AMP's patched operators, so
    it would stay float32 while the heads run in the low type. The weights stay float32
    (the master copy); casts feed the convolutions. ``tojson()``/``export`` drop AMP's casts
    by default (``remove_amp_cast=True``), which is what keeps our checkpoints float32.
    """
    if amp_dtype() is None:
        return symbol
    from mxnet.contrib import amp
    converted = amp.convert_symbol(symbol, target_dtype=amp_dtype(), data_names=[input_name],
                                   cast_optional_params=False)
    _logger.info("converted the checkpoint trunk's graph to %s compute (AMP casts added)", amp_dtype())
    return converted


def drop_output_casts(symbol_file):
    """Rewrite ``symbol_file`` without the ``amp_cast`` ops that are its outputs; nothing without AMP.

    Under bfloat16 the heads' logits are cast back to float32 (network.py), and those
    casts are the graph's outputs. ``export``'s ``remove_amp_cast`` only bypasses casts
    that feed another node, so they would stay in every checkpoint's symbol file. Without
    them a bf16 run's symbol is exactly the float32 one.
    """
    if amp_dtype() is None:
        return
    symbol = mx.sym.load(symbol_file)
    outputs = [_uncast(out) for out in symbol]
    mx.sym.Group(outputs).save(symbol_file, remove_amp_cast=True)


def _uncast(output):
    """The input of ``output`` if it is an ``amp_cast`` node, else ``output``."""
    last = json.loads(output.tojson())["nodes"][-1]
    return output.get_children()[0] if last["op"] == "amp_cast" else output


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
    from .network import build_net
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
        done = subprocess.run([sys.executable, "-m", "multitask_mx.model.precision", job], capture_output=True,
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
    # Through the package's module, not this __main__ copy: the model reads the AMP state there.
    from . import precision
    from .network import TrunkSpec
    with open(job_file) as f:
        job = json.load(f)
    spec = TrunkSpec(network=job["network"], symbol_json=job["symbol_json"], input_name=job["input_name"])
    speeds = precision.time_train_dtypes(spec, job["classes"], tuple(job["image_shape"]), job["batch"],
                                         steps=job["steps"])
    print(json.dumps(speeds))


if __name__ == "__main__":
    _child_main(sys.argv[1])

"""``multitask-mx doctor``: versions, devices, threads, CPU bf16/VNNI/AMX, short synthetic training speed tests."""
import os
import platform

from .. import _runtime
from ..model import dtype_choice, precision
import mxnet as mx

from ..logs import setup_logging
from ..flagtypes import non_negative_int, positive_float


def add_arguments(parser):
    """Doctor flags."""
    parser.add_argument("--network", default="resnet50_v1", help="network for the throughput test")
    parser.add_argument("--image-shape", default="3,224,224", help="input C,H,W for the throughput test")
    parser.add_argument("--batch-size", type=non_negative_int, default=0,
                        help="batch for the throughput test; 0: 8 on CPU, on a GPU the largest power of two "
                             "(up to 256) that fits its free memory, as training would use it")
    parser.add_argument("--seconds", type=positive_float, default=10.0, help="length of the throughput test")
    parser.add_argument("--gpus", default="", help="GPU ids for the test ('' for CPU)")


# Training img/s (fp32, synthetic in-memory batches) stored by the benchmark scripts in benchmarks/results/,
# so that doctor's own figure has something to be compared with. tests/test_doctor_reference.py checks each
# figure against its stored result; a rerun of those benchmarks on another machine adds a line here.
# (network, C,H,W) -> [(img/s low, img/s high, batch, machine, where)]
THROUGHPUT_REFERENCE = {
    ("resnet50_v1", "3,224,224"): [
        (9.65, 11.96, 16, "2 AMD EPYC cores with AVX-512 (avx512_bf16), quiet",
         "bench_training.json (b), bench_fusion.json, bench_precision.json"),
    ],
    ("cifar_resnet20_v1", "3,32,32"): [
        (503.5, 503.5, 64, "2 AMD EPYC cores without AVX-512 (AVX2), quiet",
         "bench_small_net_avx2.json, code before the mean-pooling change"),
        (763.4, 763.4, 64, "2 AMD EPYC cores with AVX-512 (avx512_bf16), quiet", "bench_small_net.json"),
    ],
}


def reference_lines(network, image_shape):
    """Lines giving the stored benchmark figures to compare doctor's throughput with."""
    shape = ",".join(str(int(x)) for x in image_shape)
    rows = THROUGHPUT_REFERENCE.get((network, shape))
    if not rows:
        known = "; ".join("--network %s --image-shape %s" % key for key in THROUGHPUT_REFERENCE)
        return ["  reference: no stored benchmark for %s at %s; run doctor with one of: %s" % (network, shape, known)]
    lines = ["  reference (stored benchmarks, %s at %s, fp32 training on synthetic batches):"
             % (network, "x".join(shape.split(",")[1:]))]
    for low, high, batch, machine, where in rows:
        figure = "%.1f" % low if low == high else "%.1f-%.1f" % (low, high)
        lines.append("    %s img/s at batch %d on %s (benchmarks/results/%s)" % (figure, batch, machine, where))
    lines.append("  well below these: other work on the cores (see the load average above), fewer cores, "
                 "or a CPU without AVX-512")
    return lines


def versions():
    """{package: version} for the stack multitask_mx runs on."""
    import cv2
    import gluoncv
    import numpy
    import tqdm
    return {"python": platform.python_version(), "mxnet": mx.__version__, "gluoncv": gluoncv.__version__,
            "numpy": numpy.__version__, "opencv": cv2.__version__, "tqdm": tqdm.__version__,
            "platform": platform.platform()}


def build_features():
    """MXNet's compiled-in features that matter here."""
    feats = mx.runtime.Features()
    wanted = ("CUDA", "CUDNN", "NCCL", "MKLDNN", "OPENMP", "BLAS_OPEN", "BLAS_MKL", "DIST_KVSTORE", "OPENCV")
    return {name: feats.is_enabled(name) for name in wanted if name in feats}


def _network(network, image_shape, ctx):
    """A hybridized MultiTaskNet of ``network`` with one 4-class head on ``ctx``."""
    from ..model.network import TrunkSpec, build_net
    from ..data.tasks import build_tasks
    net = build_net(TrunkSpec(network=network), build_tasks([4], derived=["label_gt0=label>0"]), [ctx],
                    image_shape)  # the default two heads, named: no derived-task notice in doctor
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def synthetic_throughput(network, image_shape, batch, seconds, ctx):
    """Training img/s of ``network`` on random in-memory batches for about ``seconds``.

    One untimed step first: memory planning and kernel selection (cuDNN autotune on GPUs).
    """
    return dtype_choice.synthetic_train_speed(_network(network, image_shape, ctx), image_shape, batch, ctx, seconds=seconds,
                                 warmup=1)


def batch_filling_memory(free_bytes, bytes_per_image, cap=256, floor=8):
    """The largest power of two <= ``cap`` whose batch takes at most 80% of ``free_bytes``."""
    fits = int(0.8 * free_bytes // max(1, bytes_per_image))
    batch = floor
    while batch * 2 <= min(cap, fits):
        batch *= 2
    return batch


def gpu_batch(network, image_shape, ctx, probe=16):
    """A batch that fills ``ctx``'s GPU: memory used by a ``probe``-image training step, scaled to the free memory."""
    free_before, _ = mx.context.gpu_memory_info(ctx.device_id)
    dtype_choice.synthetic_train_speed(_network(network, image_shape, ctx), image_shape, probe, ctx, steps=0, warmup=1)
    free_after, _ = mx.context.gpu_memory_info(ctx.device_id)
    return batch_filling_memory(free_before, max(1, free_before - free_after) / probe)


def print_cuda_stack():
    """The driver, its GPUs and whether this MXNet has kernels for them, and the CUDA libraries."""
    from .. import cuda_libs, devices
    dist = cuda_libs.mxnet_distribution()
    found = devices.GPU_QUERY()
    archs = devices.kernel_archs(dist)
    print("CUDA: mxnet distribution %s, driver CUDA %s%s" % (
        "%s %s" % dist if dist else "unknown", found.driver_cuda_text, " (%s)" % found.error if found.error else ""))
    for gpu in found.gpus:
        print("  GPU %d: %s, sm_%d, %.1f GiB; kernels in this MXNet: %s" % (
            gpu.index, gpu.name, gpu.sm, gpu.memory_bytes / 2 ** 30, devices.gpu_support(gpu, archs)))
    if cuda_libs.is_gpu_distribution(dist):
        missing = cuda_libs.missing_libraries()
        for soname, package, reason in missing:
            print("  MISSING %s: pip install -c constraints.txt %s (%s)" % (soname, package, reason))
        loaded = [p for p in cuda_libs.PRELOADED.values() if not p.startswith("not loaded")]
        print("  CUDA libraries: %s; %d preloaded from pip packages" % (
            "all found" if not missing else "%d missing" % len(missing), len(loaded)))
        print("  NVRTC %s, fused kernels for: %s; MXNET_USE_FUSION=%s" % (
            "%d.%d" % cuda_libs.nvrtc_version() if cuda_libs.nvrtc_version() else "not loadable",
            ",".join(map(str, cuda_libs.nvrtc_archs() or [])) or "?", os.environ.get("MXNET_USE_FUSION", "1 (default)")))


def print_cpu_precision():
    """The CPU's bf16/VNNI/AMX features and whether Linux granted AMX to this process."""
    _runtime.request_amx()
    features = _runtime.CPU_FEATURES
    print("low precision on this CPU:")
    print("  bf16      %s" % ("native (avx512_bf16)" if features["avx512_bf16"] else "emulated (AVX-512)"
                              if features["avx512_core"] else "no (needs AVX-512): --dtype bfloat16 unavailable"))
    print("  int8 VNNI %s" % ("yes" if features["vnni"] else "no (INT8 still runs, slower)"))
    print("  AMX       bf16 %s, int8 %s; %s" % ("yes" if features["amx_bf16"] else "no",
                                                "yes" if features["amx_int8"] else "no", features["amx"]))


def compare_bf16(args, shape, batch, ctx, fp32_speed):
    """After the fp32 test: the same test in bf16 (AMP stays on afterwards, so it comes last)."""
    if ctx.device_type != "cpu" or not _runtime.bf16_supported():
        print("bf16 training speed: not measured (%s)" % ("CPU only" if ctx.device_type != "cpu"
                                                          else "this CPU has no AVX-512"))
        return
    precision.init_amp("bfloat16")
    speed = synthetic_throughput(args.network, shape, batch, args.seconds, ctx)
    print("bf16 training speed: %.2f img/s against fp32 %.2f (%.2fx; AMX %s). Use --dtype bfloat16 where it is "
          "faster, or --dtype auto." % (speed, fp32_speed, speed / max(fp32_speed, 1e-9),
                                        "on" if _runtime.amx_enabled() else "off"))


def run(args):
    """Entry point of ``multitask-mx doctor``."""
    setup_logging()
    from ..devices import parse_contexts
    from ..data.images import parse_image_shape
    print("multitask-mx doctor")
    for key, value in versions().items():
        print("  %-10s %s" % (key, value))
    print("MXNet build features:")
    for key, value in build_features().items():
        print("  %-12s %s" % (key, "yes" if value else "no"))
    print(_runtime.machine_summary())
    print("devices: %d GPU(s) visible to MXNet, %d usable CPU core(s)" % (mx.context.num_gpus(),
                                                                           _runtime.usable_cores()))
    print_cuda_stack()
    print("threads:")
    for key, value in sorted(_runtime.THREAD_SETTINGS.items()):
        print("  %s=%s" % (key, value))
    ctx = parse_contexts(args.gpus)[0]  # a GPU without kernels, or a driver too old, stops here
    shape = parse_image_shape(args.image_shape)
    batch = args.batch_size or (gpu_batch(args.network, shape, ctx) if ctx.device_type == "gpu" else 8)
    print("training throughput, %s at %s, batch %d on %s, %.0f s ..." % (
        args.network, "x".join(map(str, shape[1:])), batch, ctx, args.seconds), flush=True)
    speed = synthetic_throughput(args.network, shape, batch, args.seconds, ctx)
    print("  %.2f img/s (synthetic data; compare with `train` speed to spot a slow loader)" % speed)
    if ctx.device_type == "cpu":
        print("\n".join(reference_lines(args.network, shape)))
    print_cpu_precision()
    compare_bf16(args, shape, batch, ctx, speed)
    return 0

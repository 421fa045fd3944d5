"""``multitask-mx doctor``: versions, devices, threads, CPU bf16/VNNI/AMX, short synthetic training speed tests."""
import platform

from .. import _runtime, precision
import mxnet as mx

from ..logs import setup_logging

DESCRIPTION = ("print versions, devices, thread settings, bf16/VNNI/AMX support and 10-second training "
               "throughputs (fp32, and bf16 where the CPU has it)")


def add_arguments(parser):
    """Doctor flags."""
    parser.add_argument("--network", default="resnet50_v1", help="network for the throughput test")
    parser.add_argument("--image-shape", default="3,224,224", help="input C,H,W for the throughput test")
    parser.add_argument("--batch-size", type=int, default=8, help="batch for the throughput test")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the throughput test")
    parser.add_argument("--gpus", default="", help="GPU ids for the test ('' for CPU)")


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


def synthetic_throughput(network, image_shape, batch, seconds, ctx):
    """Training img/s of ``network`` on random in-memory batches for about ``seconds``."""
    from ..model import TrunkSpec, build_net
    from ..tasks import build_tasks
    net = build_net(TrunkSpec(network=network), build_tasks([4]), [ctx], image_shape)
    net.hybridize(static_alloc=True, static_shape=True)
    return precision.synthetic_train_speed(net, image_shape, batch, ctx, seconds=seconds, warmup=1)


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


def compare_bf16(args, shape, ctx, fp32_speed):
    """After the fp32 test: the same test in bf16 (AMP stays on afterwards, so it comes last)."""
    if ctx.device_type != "cpu" or not _runtime.bf16_supported():
        print("bf16 training speed: not measured (%s)" % ("CPU only" if ctx.device_type != "cpu"
                                                          else "this CPU has no AVX-512"))
        return
    precision.init_amp("bfloat16")
    speed = synthetic_throughput(args.network, shape, args.batch_size, args.seconds, ctx)
    print("bf16 training speed: %.2f img/s against fp32 %.2f (%.2fx; AMX %s). Use --dtype bfloat16 where it is "
          "faster, or --dtype auto." % (speed, fp32_speed, speed / max(fp32_speed, 1e-9),
                                        "on" if _runtime.amx_enabled() else "off"))


def run(args):
    """Entry point of ``multitask-mx doctor``."""
    setup_logging()
    from ..devices import parse_contexts
    from ..images import parse_image_shape
    print("multitask-mx doctor")
    for key, value in versions().items():
        print("  %-10s %s" % (key, value))
    print("MXNet build features:")
    for key, value in build_features().items():
        print("  %-12s %s" % (key, "yes" if value else "no"))
    print("devices: %d GPU(s) visible, %d usable CPU core(s)" % (mx.context.num_gpus(), _runtime.usable_cores()))
    print("threads:")
    for key, value in sorted(_runtime.THREAD_SETTINGS.items()):
        print("  %s=%s" % (key, value))
    ctx = parse_contexts(args.gpus)[0]
    shape = parse_image_shape(args.image_shape)
    print("training throughput, %s at %s, batch %d on %s, %.0f s ..." % (
        args.network, "x".join(map(str, shape[1:])), args.batch_size, ctx, args.seconds), flush=True)
    speed = synthetic_throughput(args.network, shape, args.batch_size, args.seconds, ctx)
    print("  %.2f img/s (synthetic data; compare with `train` speed to spot a slow loader)" % speed)
    print_cpu_precision()
    compare_bf16(args, shape, ctx, speed)
    return 0

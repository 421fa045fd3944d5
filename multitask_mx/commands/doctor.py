"""``multitask-mx doctor``: versions, devices, threads and a short synthetic training speed test."""
import platform
import time

from .. import _runtime
import mxnet as mx
from mxnet import autograd, gluon

from ..logs import setup_logging
from ..flagtypes import positive_float, positive_int

DESCRIPTION = "print versions, devices, thread settings and a 10-second training throughput"


def add_arguments(parser):
    """Doctor flags."""
    parser.add_argument("--network", default="resnet50_v1", help="network for the throughput test")
    parser.add_argument("--image-shape", default="3,224,224", help="input C,H,W for the throughput test")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="batch for the throughput test")
    parser.add_argument("--seconds", type=positive_float, default=10.0, help="length of the throughput test")
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
    tasks = build_tasks([4])
    net = build_net(TrunkSpec(network=network), tasks, [ctx], image_shape)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.001, "momentum": 0.9})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    x = mx.nd.random.uniform(shape=(batch,) + tuple(image_shape), ctx=ctx)
    y = mx.nd.zeros((batch,), ctx=ctx)

    def step():
        with autograd.record():
            outs = net(x)
            total = mx.nd.add_n(*[loss(o, y) for o in outs])
        total.backward()
        trainer.step(batch)
        total.wait_to_read()

    step()  # warm-up: memory planning and kernel selection
    done, tic = 0, time.time()
    while time.time() - tic < seconds:
        step()
        done += batch
    return done / (time.time() - tic)


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
    return 0

#!/usr/bin/env python
"""The original multi-task-MXNet's training job, fixed, timed: Module API + ImageIter on CPU.

This is ``train_multitask.py`` from github.com/miraclewkf/multi-task-MXNet as it
runs once its two show-stoppers are fixed: the trunk is cut at ``flatten0`` (the
layer name in its own bundled ResNet-50 symbol; it looked up ``flatten``), and
``--gpus ''`` gives the CPU. Everything else is kept: ``mx.image.ImageIter`` with
``CreateAugmenter(resize, rand_crop, rand_mirror, mean, std)``, the
``MultiTask_iter`` wrapper that derives ``label > 0`` through ``asnumpy``, two
``FullyConnected`` + ``SoftmaxOutput`` heads, the ``Multi_Accuracy`` metric (which
reads every batch back with ``asnumpy``), SGD with momentum through the
``device`` kvstore, and ``Module.fit``. Validation and checkpoints are left out:
only training batches are timed.

Threading is MXNet's default: ``bench_training.py`` starts this script in a
subprocess with ``OMP_NUM_THREADS`` and MXNet's thread variables removed from the
environment. (The original's ``metric.py`` sets ``MXNET_CPU_WORKER_NTHREADS=2``, but
only after ``train_multitask.py`` has imported mxnet, when the engine has already
read it; checked on MXNet 1.9.1: it has no effect, so it is left out here.)

With ``--loader-only`` it times the same ImageIter alone (the original's loader).
Prints one JSON line: img/s over the timed batches, and the threads MXNet chose.

With ``--job`` it runs the original's whole job instead, untimed inside (the caller times
the whole process): ``Module.fit`` for ``--num-epoch`` epochs with ``eval_data`` (an
ImageIter over ``--val-lst``, resize + mean/std, as the original's), its
``validation_metric``, and ``do_checkpoint`` writing ``--save-prefix`` every epoch, as
``train_multitask.py`` does. Threads are whatever the caller's environment says.
"""
import argparse
import ctypes
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from multitask_mx._runtime import patch_numpy_for_mxnet  # noqa: E402  (no thread settings, only np.bool)

patch_numpy_for_mxnet()
import mxnet as mx  # noqa: E402

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS", "MXNET_OMP_MAX_THREADS",
                    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class MultiTaskIter(mx.io.DataIter):
    """The original's MultiTask_iter: task 2 label = label > 0, derived with asnumpy."""

    def __init__(self, data_iter):
        super().__init__("multitask_iter")
        self.data_iter = data_iter
        self.batch_size = data_iter.batch_size

    @property
    def provide_data(self):
        return self.data_iter.provide_data

    @property
    def provide_label(self):
        shape = self.data_iter.provide_label[0][1]
        return [("softmax_label", shape), ("softmax_multitask_label", shape)]

    def reset(self):
        self.data_iter.reset()

    def next(self):
        batch = self.data_iter.next()
        label = batch.label[0]
        label2 = mx.nd.array(label.asnumpy() > 0).astype("float32")
        return mx.io.DataBatch(data=batch.data, label=[label, label2], pad=batch.pad, index=batch.index)


class MultiAccuracy(mx.metric.EvalMetric):
    """The original's Multi_Accuracy: per-task accuracy, read back to numpy every batch."""

    def __init__(self, num, output_names):
        self.num = num
        super().__init__("multi_accuracy", output_names=output_names)

    def reset(self):
        self.num_inst = [0] * self.num
        self.sum_metric = [0.0] * self.num

    def reset_local(self):
        # Speedometer(auto_reset) calls this every 20 batches; the base class would make the sums floats.
        self.reset()

    def update(self, labels, preds):
        for i in range(len(labels)):
            pred_label = mx.nd.argmax_channel(preds[i]).asnumpy().astype("int32")
            label = labels[i].asnumpy().astype("int32")
            self.sum_metric[i] += (pred_label.flat == label.flat).sum()
            self.num_inst[i] += len(pred_label.flat)

    def get(self):
        return zip(*(("%s-task%d" % (self.name, i), self.sum_metric[i] / max(1, self.num_inst[i]))
                     for i in range(self.num)))


def fine_tune_symbol(sym, num_classes, layer_name):
    """The original's get_fine_tune_model: two softmax heads on ``layer_name``."""
    net = sym.get_internals()[layer_name + "_output"]
    fc = mx.symbol.FullyConnected(data=net, num_hidden=num_classes, name="fc")
    sm = mx.symbol.SoftmaxOutput(data=fc, name="softmax")
    fc2 = mx.symbol.FullyConnected(data=net, num_hidden=2, name="fc_multitask")
    sm2 = mx.symbol.SoftmaxOutput(data=fc2, name="softmax_multitask")
    return mx.symbol.Group([sm, sm2])


class StopTiming(Exception):
    """Raised from the batch callback once the timed batches are done."""


class BatchTimer:
    """Batch-end callback: waits for the engine after the warm-up and at the end, then stops fit."""

    def __init__(self, batch_size, warmup, batches, seconds):
        self.batch_size, self.warmup, self.batches, self.seconds = batch_size, warmup, batches, seconds
        self.t0 = self.t1 = None
        self.timed = 0

    def __call__(self, param):
        done = param.nbatch + 1
        if done == self.warmup:
            mx.nd.waitall()
            self.t0 = time.time()
        elif done > self.warmup:
            self.timed += 1
            if self.timed >= self.batches or (self.seconds and time.time() - self.t0 >= self.seconds):
                mx.nd.waitall()
                self.t1 = time.time()
                raise StopTiming()

    def img_per_s(self):
        """Images per second over the timed batches."""
        return self.timed * self.batch_size / (self.t1 - self.t0)


def image_iter(args, lst=None):
    """The original's training iterator: ImageIter with resize, random crop, mirror, mean and std.

    With ``lst`` (a validation list) its validation iterator: resize, mean and std, in order.
    """
    shape = (3, args.size, args.size)
    if lst is not None:
        return mx.image.ImageIter(
            batch_size=args.batch_size, data_shape=shape, label_width=1, path_imglist=lst, path_root=args.root,
            data_name="data", aug_list=mx.image.CreateAugmenter(shape, resize=args.size, mean=True, std=True))
    return mx.image.ImageIter(
        batch_size=args.batch_size, data_shape=shape, label_width=1, path_imglist=args.lst,
        path_root=args.root, shuffle=True, data_name="data",
        aug_list=mx.image.CreateAugmenter(shape, resize=args.size, rand_crop=True, rand_mirror=True,
                                          mean=True, std=True))


def load_only(args):
    """Iterate the original's ImageIter alone (no training), timed like ``train``; returns the timer."""
    timer = BatchTimer(args.batch_size, args.warmup, args.batches, args.seconds)
    try:
        for nbatch, batch in enumerate(image_iter(args)):
            batch.data[0].wait_to_read()
            timer(mx.model.BatchEndParam(epoch=0, nbatch=nbatch, eval_metric=None, locals=None))
    except StopTiming:
        pass
    return timer


def fit_original(args, batch_callbacks, job=False):
    """Module.fit as the original calls it (with ``job``: validation and checkpoints too)."""
    sym, arg_params, aux_params = mx.model.load_checkpoint(args.prefix, 0)
    epoch_size = max(int(20000 / args.batch_size), 1)  # the original's --num-examples default
    steps = [epoch_size * x for x in (5, 10)]
    optimizer_params = {"learning_rate": 0.001, "momentum": 0.9, "wd": 0.0001,
                        "lr_scheduler": mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=0.1)}
    module = mx.mod.Module(context=mx.cpu(), symbol=fine_tune_symbol(sym, args.num_classes, "flatten0"),
                           data_names=["data"], label_names=["softmax_label", "softmax_multitask_label"])
    metric = mx.metric.CompositeEvalMetric()
    metric.add(MultiAccuracy(2, ["softmax_output", "softmax_multitask_output"]))
    extra = {}
    if job:
        extra = {"eval_data": MultiTaskIter(image_iter(args, args.val_lst)), "validation_metric": metric,
                 "epoch_end_callback": mx.callback.do_checkpoint(args.save_prefix)}
    module.fit(MultiTaskIter(image_iter(args)), num_epoch=args.num_epoch if job else 1, eval_metric=metric,
               kvstore=mx.kvstore.create("device"), optimizer="sgd", optimizer_params=optimizer_params,
               arg_params=arg_params, aux_params=aux_params, allow_missing=True,
               initializer=mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
               batch_end_callback=[mx.callback.Speedometer(args.batch_size, 20)] + batch_callbacks, **extra)


def train(args):
    """Module.fit as the original calls it, stopped by the timer; returns the timer."""
    timer = BatchTimer(args.batch_size, args.warmup, args.batches, args.seconds)
    try:
        fit_original(args, [timer])
    except StopTiming:
        pass
    return timer


def omp_max_threads():
    """OpenMP threads MXNet set for itself (it halves the cores on x86 when OMP_NUM_THREADS is unset)."""
    try:
        return ctypes.CDLL("libgomp.so.1").omp_get_max_threads()
    except (OSError, AttributeError):
        return None


def main():
    """Parse the flags, time the job (or the loader) and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lst", required=True, help=".lst file with enough lines for all batches")
    parser.add_argument("--root", required=True, help="folder the list's paths are relative to")
    parser.add_argument("--prefix", help="classic checkpoint PREFIX (PREFIX-0000.params); not for --loader-only")
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--batches", type=int, default=20, help="timed batches (at most)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop timing after this long (0: off)")
    parser.add_argument("--loader-only", action="store_true", help="time the ImageIter alone, no training")
    parser.add_argument("--job", action="store_true",
                        help="the whole job, untimed: fit with validation and a checkpoint per epoch")
    parser.add_argument("--val-lst", help="validation .lst for --job")
    parser.add_argument("--num-epoch", type=int, default=1, help="epochs of --job")
    parser.add_argument("--save-prefix", help="checkpoint prefix of --job (PREFIX-symbol.json, PREFIX-NNNN.params)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="original: %(message)s")
    if args.job:
        fit_original(args, [], job=True)
        print(json.dumps({"omp_max_threads": omp_max_threads(),
                          "environment": {k: os.environ.get(k, "unset") for k in THREAD_VARIABLES}}))
        return
    timer = load_only(args) if args.loader_only else train(args)
    if timer.t1 is None:
        raise SystemExit("the list ran out before %d warm-up + timed batches" % args.warmup)
    print(json.dumps({"img_s": timer.img_per_s(), "batches": timer.timed, "seconds": timer.t1 - timer.t0,
                      "omp_max_threads": omp_max_threads(),
                      "environment": {k: os.environ.get(k, "unset") for k in THREAD_VARIABLES}}))


if __name__ == "__main__":
    main()

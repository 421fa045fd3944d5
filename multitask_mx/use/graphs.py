"""How a trained network's graph runs for inference: fused or plain, static memory and shapes.

One home for the hybridize() options of predict, evaluate, serve, export and the Python API.
"""
import os

import mxnet as mx

from ..devices import onednn_cpus


def inference_backend(ctxs):
    """hybridize() options for inference: on CPU, MKL-DNN's fused graph (conv+BN+ReLU).

    Measured here: ResNet-50 at 224 runs 28-35% faster (batch 1 and 32) than the plain
    graph; outputs differ by float rounding only. Set MULTITASK_MX_NO_FUSION=1 to compare.
    """
    return {"backend": "MKLDNN"} if onednn_cpus(ctxs) and not os.environ.get("MULTITASK_MX_NO_FUSION") else {}


def hybridize_for_inference(net, ctxs=None, fuse=True):
    """Hybridize ``net`` for repeated inference: static memory and shapes (+ the fused graph, ``fuse``).

    ``static_shape`` keeps the operators' state between calls of the same batch shape: without it
    MXNet 1.9's CachedOp rebuilds that state on every call, so the fused graph folds BatchNorm into
    the weights again and an INT8 graph quantizes every weight again (oneDNN's verbose log: weight
    reorders in every call). ResNet-50 at 224 on 2 cores (VNNI): fused fp32 one image 25 ms per call
    with it against 52-65 without (34-39 unfused); INT8 batch 32 225-250 ms against 300-400; fp32 and
    bf16 at batch 32 unchanged. A batch of another shape still runs, re-planned: calls that keep
    changing shape (1, 2, 3, 1, 4, 2 images) took 87 against 78 ms each.
    """
    net.hybridize(static_alloc=True, static_shape=True, **(inference_backend(ctxs or [mx.cpu()]) if fuse else {}))
    return net

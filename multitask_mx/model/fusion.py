"""BatchNorm + ReLU as one oneDNN operator while training on CPU, and back to two in saved files.

A checkpoint's trunk (classic ResNet-50 has 50 such pairs) runs each BatchNorm then a
ReLU: two passes over every activation forward and two backward. MXNet 1.9.1 has the
fused operator ``_contrib_BatchNormWithReLU`` (oneDNN's batch normalization with its
ReLU flag, forward and backward); its own MKLDNN backend uses it for inference only.
It gives bit-identical outputs, gradients and BatchNorm statistics (tests/model/test_fusion.py)
and faster training steps (figures: benchmarks/bench_fusion.py); validation keeps the one
graph rather than building a second, since training is where the time goes.

The operator has oneDNN kernels only: CPU contexts, 4-D inputs on axis 1, float32. So
``fuse_bn_relu`` rewrites only pairs that qualify, and ``fusion_wanted`` says when to
try. Saved symbols never hold it (``unfuse_symbol_file``): checkpoints stay the plain
graph that inference, INT8 quantization, ONNX export and GPUs load. MXNet's own switch
``MXNET_DISABLE_MKLDNN_BN_RELU_OPT=1`` turns the rewrite off.

Where it fuses, a model-zoo trunk's last GlobalAvgPool2D also runs as a mean over height
and width (``mean_for_global_pool``; why: ``_GlobalMeanPool``), saved as the pooling layer
it stands for (figures: benchmarks/bench_small_net.py).
"""
import json
import os

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

from .. import mxprivate
from ..atomic import atomic_write_text
from ..devices import onednn_cpus
from .pretrained import internal_output_shapes

FUSED_OP = "_contrib_BatchNormWithReLU"
RELU_NAME = "__relu_name__"  # hidden attribute (MXNet's parsers accept __x__ keys): the ReLU's own name
POOL_ATTRS = "__global_avg_pool__"  # hidden attribute of a mean standing for a GlobalAvgPool2D: its attributes


def fusion_wanted(ctxs, amp_dtype=None):
    """True where the fused operator can run: CPU contexts with oneDNN, float32, not switched off."""
    return (onednn_cpus(ctxs) and amp_dtype is None
            and os.environ.get("MXNET_MKLDNN_ENABLED", "1") != "0"
            and os.environ.get("MXNET_DISABLE_MKLDNN_BN_RELU_OPT", "0") in ("", "0"))


def _attrs(node):
    return node.setdefault("attrs", node.pop("attr", None) or node.pop("param", None) or {})


def _consumers(graph):
    """{node index: [indices of the nodes and heads (-1) that read any of its outputs]}."""
    found = {}
    for i, node in enumerate(graph["nodes"]):
        for entry in node["inputs"]:
            found.setdefault(entry[0], []).append(i)
    for entry in graph["heads"]:
        found.setdefault(entry[0], []).append(-1)
    return found


def _four_d_outputs(symbol, input_name, image_shape):
    """Names of the internal outputs that are 4-D for a batch of ``image_shape`` images."""
    try:
        shapes = internal_output_shapes(symbol, image_shape, input_name)
    except mx.base.MXNetError:  # nothing fused; building the network reports the shape problem
        return set()
    return {name for name, shape in shapes.items() if shape is not None and len(shape) == 4}


def _fusable(graph, bn_index, relu_index, consumers, four_d):
    nodes = graph["nodes"]
    bn, relu = nodes[bn_index], nodes[relu_index]
    source = nodes[bn["inputs"][0][0]]
    return (bn["op"] == "BatchNorm" and consumers.get(bn_index) == [relu_index]
            and relu["inputs"][0][1] == 0
            and _attrs(bn).get("axis", "1") in ("1", "-3")
            and _attrs(bn).get("output_mean_var", "False") in ("False", "false", "0")
            and source["name"] + "_output" in four_d)


def fuse_bn_relu(symbol, input_name, image_shape):
    """(``symbol`` with each qualifying BatchNorm -> ReLU pair as one fused node, pairs fused)."""
    graph = json.loads(symbol.tojson())
    nodes, consumers = graph["nodes"], _consumers(graph)
    four_d = _four_d_outputs(symbol, input_name, image_shape)
    fused_relus = set()
    for i, node in enumerate(nodes):
        if node["op"] == "Activation" and _attrs(node).get("act_type") == "relu" \
                and _fusable(graph, node["inputs"][0][0], i, consumers, four_d):
            bn = nodes[node["inputs"][0][0]]
            bn["op"] = FUSED_OP
            _attrs(bn)[RELU_NAME] = node["name"]
            fused_relus.add(i)
    if not fused_relus:
        return symbol, 0

    def emit(index, node, append, new_index):  # a fused ReLU is left out: its readers read the fused node
        return new_index[node["inputs"][0][0]] if index in fused_relus else append(node)
    return mx.sym.load_json(_rebuilt(graph, emit)), len(fused_relus)


class _Identity(gluon.HybridBlock):
    """Takes the place of a ReLU whose BatchNorm now applies it."""

    def hybrid_forward(self, F, x):
        return x


def fuse_block_bn_relu(block, image_shape):
    """Fuse, in place, each BatchNorm followed by a ReLU in the sequences of a Gluon ``block``; pairs fused.

    For model-zoo trunks (ResNet v1, VGG-BN, MobileNet v1): the BatchNorm keeps its
    parameters and structural names and runs with Gluon's own ``fuse_relu`` switch; the
    ReLU's place in its sequence is taken by an identity, so later layers keep their names.
    """
    four_d = _four_d_outputs(block(mx.sym.var("data")), "data", image_shape)
    pairs = 0
    for seq in _sequences(block):
        children = mxprivate.child_blocks(seq)
        for (_, bn), (key, act) in zip(children, children[1:]):
            if _fusable_layers(bn, act, four_d):
                bn.fuse_relu = True  # Gluon's own switch (nn.BatchNormReLU sets it)
                mxprivate.batchnorm_options(bn)[RELU_NAME] = act.prefix + "fwd"  # the name unfuse gives the ReLU
                mxprivate.replace_child(seq, key, _Identity(prefix=_prefix_in_place_of(act)))
                pairs += 1
    return pairs


def _fusable_layers(bn, act, four_d):
    return (isinstance(bn, nn.BatchNorm) and not bn.fuse_relu and isinstance(act, nn.Activation)
            and mxprivate.activation_type(act) == "relu"
            and mxprivate.batchnorm_options(bn).get("axis", 1) == 1 and bn.prefix + "fwd_output" in four_d)


def _sequences(block):
    if isinstance(block, (nn.HybridSequential, nn.Sequential)):
        yield block
    for _, child in mxprivate.child_blocks(block):
        yield from _sequences(child)


class _GlobalMeanPool(gluon.HybridBlock):
    """A GlobalAvgPool2D computed as a mean over height and width: the same output, shape and node name.

    oneDNN's pooling backward for a small last feature map (ResNet-20 at 32 px: 8x8) runs its
    reference kernel and hands back a gradient in another blocked layout than the one its input
    has, and then every BatchNorm backward of the last stage runs oneDNN's reference kernel too
    (DNNL_VERBOSE: ``bnorm_ref``, most of a ResNet-20 training step at 32 px). The
    mean's gradient is a plain array, which MXNet reorders once for the BatchNorm.
    """

    def __init__(self, pool_attrs, **kwargs):
        super().__init__(**kwargs)
        self._pool_attrs = pool_attrs  # the pooling node's attributes (JSON), for unfuse_json

    def hybrid_forward(self, F, x):
        with mx.AttrScope(**{POOL_ATTRS: self._pool_attrs}):  # symbols only: a traced graph's node
            return F.mean(x, axis=(2, 3), keepdims=True, name="fwd")


def mean_for_global_pool(features):
    """Replace ``features``' last layer, if it is a GlobalAvgPool2D, by a mean of the same name; True if done."""
    children = mxprivate.child_blocks(features)
    if not children or not isinstance(children[-1][1], nn.GlobalAvgPool2D):
        return False
    key, pool = children[-1]
    attrs = _attrs(json.loads(pool(mx.sym.var("data")).tojson())["nodes"][-1])
    mxprivate.replace_child(features, key, _GlobalMeanPool(json.dumps(attrs, sort_keys=True),
                                                           prefix=_prefix_in_place_of(pool)))
    return True


def _prefix_in_place_of(block):
    """The prefix that gives a new block ``block``'s own names: an enclosing name scope (a network being
    built) puts its prefix before a new block's, and ``block.prefix`` has it already."""
    scope = gluon.HybridBlock(prefix="").prefix
    return block.prefix[len(scope):] if block.prefix.startswith(scope) else block.prefix


def _pool_attrs(node):
    return (node.get("attrs") or node.get("attr") or {}).get(POOL_ATTRS)


def unfuse_json(text):
    """Symbol JSON ``text`` with every fused node back as its BatchNorm and ReLU (names as before), and
    every mean that stands for a global average pooling back as that Pooling node."""
    graph = json.loads(text)
    if not any(node["op"] == FUSED_OP or _pool_attrs(node) for node in graph["nodes"]):
        return text

    def emit(index, node, append, new_index):
        if _pool_attrs(node):
            return append({"op": "Pooling", "name": node["name"], "attrs": json.loads(_pool_attrs(node)),
                           "inputs": node["inputs"]})
        if node["op"] != FUSED_OP:
            return append(node)
        node["op"] = "BatchNorm"
        relu_name = _attrs(node).pop(RELU_NAME, node["name"] + "_relu")
        bn = append(node)
        return append({"op": "Activation", "name": relu_name, "attrs": {"act_type": "relu"},
                       "inputs": [[bn, 0, 0]]}, remap=False)
    return _rebuilt(graph, emit)


def _rebuilt(graph, emit):
    """JSON text of ``graph`` rebuilt node by node in its (topological) order.

    ``emit(old index, node, append, new_index)`` returns the new index that readers of the
    old node read; ``append(node)`` adds a node whose inputs (old indices, unless
    ``remap=False``) are mapped to the new ones and returns its new index; ``new_index``
    maps the old indices seen so far to new ones.
    """
    nodes, new_index = [], {}

    def append(node, remap=True):
        if remap:
            node["inputs"] = [[new_index[e[0]]] + list(e[1:]) for e in node["inputs"]]
        nodes.append(node)
        return len(nodes) - 1
    for i, node in enumerate(graph["nodes"]):
        new_index[i] = emit(i, node, append, new_index)
    heads = [[new_index[e[0]]] + list(e[1:]) for e in graph["heads"]]
    arg_nodes = [i for i, node in enumerate(nodes) if node["op"] == "null"]
    return json.dumps({"nodes": nodes, "arg_nodes": arg_nodes, "heads": heads, "attrs": graph.get("attrs", {})})


def unfuse_symbol_file(path):
    """Rewrite the symbol file at ``path`` without fused nodes (nothing when it has none)."""
    with open(path) as f:
        text = f.read()
    plain = unfuse_json(text)
    if plain is not text:
        atomic_write_text(path, plain)

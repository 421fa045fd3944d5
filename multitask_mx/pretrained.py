"""Reading pretrained weights: classic MXNet checkpoints and Gluon ``.params`` files.

A classic checkpoint (``PREFIX-symbol.json`` + ``PREFIX-%04d.params``) carries its
own network, so the trunk is that symbol cut where its classifier begins. The cut
point is found from the graph's structure, not a layer name: the original
multi-task-MXNet looked up ``flatten`` while its own bundled ResNet-50 calls the
layer ``flatten0``.
"""
import json
import logging
import os

import mxnet as mx

from .errors import UserInputError, clean_error_text

_logger = logging.getLogger(__name__)

# Ops that make up a classifier on top of the features, walked back from an output.
_CLASSIFIER_OPS = {"SoftmaxOutput", "softmax", "log_softmax", "SoftmaxActivation", "FullyConnected",
                   "Dropout", "Activation", "relu", "LeakyReLU", "LinearRegressionOutput",
                   "LogisticRegressionOutput", "_copy", "identity"}


def checkpoint_files(prefix, epoch):
    """(symbol file, params file) of an MXNet checkpoint, as mx.model.save_checkpoint names them."""
    return "%s-symbol.json" % prefix, "%s-%04d.params" % (prefix, epoch)


def split_arg_aux(saved):
    """Split a checkpoint's {'arg:x': ..., 'aux:y': ...} into plain {name: array}."""
    return {(k.split(":", 1)[1] if k.startswith(("arg:", "aux:")) else k): v for k, v in saved.items()}


def _load_nd(path):
    try:
        return mx.nd.load(path)
    except mx.base.MXNetError as exc:
        raise UserInputError("%s is truncated or corrupt, or not an MXNet params file: %s"
                             % (path, clean_error_text(exc)))


def feature_node_name(symbol_json):
    """Name of the node whose output feeds the classifier(s) of a symbol graph.

    One output: walk back from it through classifier ops (softmax, FullyConnected,
    dropout, activations) to the first node that is none of these. Several outputs
    (a multi-head network): the deepest node that every output depends on.
    """
    graph = json.loads(symbol_json)
    nodes, heads = graph["nodes"], [h[0] for h in graph["heads"]]
    if len(heads) > 1:
        ancestors = [_ancestors(nodes, h) for h in heads]
        common = set.intersection(*ancestors)
        best = max(i for i in common if nodes[i]["op"] != "null")
        return nodes[best]["name"]
    node, passed_fc = heads[0], False
    while nodes[node]["op"] in _CLASSIFIER_OPS:
        passed_fc = passed_fc or nodes[node]["op"] == "FullyConnected"
        node = nodes[node]["inputs"][0][0]
    if not passed_fc:
        _logger.info("checkpoint has no classifier layer: using its output as features")
        return nodes[heads[0]]["name"]
    return nodes[node]["name"]


def _ancestors(nodes, start):
    seen, todo = set(), [start]
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo.extend(inp[0] for inp in nodes[i]["inputs"])
    return seen


def _first_op_on_input(graph_nodes, input_index):
    return next((n for n in graph_nodes if any(i[0] == input_index for i in n["inputs"])), None)


def detect_normalization(symbol_json, input_name):
    """'raw' when the network normalises its own 0-255 input (BatchNorm first), else 'imagenet'."""
    nodes = json.loads(symbol_json)["nodes"]
    index = next(i for i, n in enumerate(nodes) if n["name"] == input_name)
    first = _first_op_on_input(nodes, index)
    return "raw" if first is not None and first["op"] == "BatchNorm" else "imagenet"


def load_classic_checkpoint(prefix, epoch):
    """Cut an MXNet checkpoint before its classifier.

    Returns (feature symbol, input name, {param name: NDArray}, normalisation name).
    """
    sym_file, params_file = checkpoint_files(prefix, epoch)
    for path, what in ((sym_file, "symbol"), (params_file, "params")):
        if not os.path.isfile(path):
            raise UserInputError("--model %s --epoch %d: the %s file %s does not exist. A classic MXNet "
                                 "checkpoint is PREFIX-symbol.json + PREFIX-%04d.params (see "
                                 "pretrained_model/README.md)." % (prefix, epoch, what, path, epoch))
    try:
        symbol = mx.sym.load(sym_file)
    except mx.base.MXNetError as exc:
        raise UserInputError("%s is not an MXNet symbol file: %s" % (sym_file, clean_error_text(exc)))
    params = split_arg_aux(_load_nd(params_file))
    symbol_json = symbol.tojson()
    feature_name = feature_node_name(symbol_json)
    features = symbol.get_internals()[feature_name + "_output"]
    inputs = [a for a in features.list_arguments() if a not in params]
    if len(inputs) != 1:
        raise UserInputError("%s: expected one image input, found inputs without weights: %s. Are the params "
                             "from this network?" % (sym_file, ", ".join(inputs) or "none"))
    normalization = detect_normalization(symbol_json, inputs[0])
    _logger.info("checkpoint %s: trunk cut at layer %r (input %r, %s pixels)", prefix, feature_name,
                 inputs[0], "raw 0-255" if normalization == "raw" else "mean/std-normalised")
    return features, inputs[0], params, normalization


def load_params_file(path):
    """{name: NDArray} from a Gluon/GluonCV ``.params`` file (checkpoint prefixes stripped)."""
    if not os.path.isfile(path):
        raise UserInputError("--model %s: file does not exist. Give a Gluon/GluonCV .params file, or a "
                             "classic checkpoint as --model PREFIX --epoch N." % path)
    return split_arg_aux(_load_nd(path))


def match_params(block, saved, strip_prefixes=()):
    """Pair a block's parameters with saved arrays; raise listing whatever did not match.

    Saved names are tried as structural names (``features.0.weight``, with each of
    ``strip_prefixes`` removed) and as full parameter names. Returns {Parameter: NDArray}.
    """
    structural = block._collect_params_with_prefix()
    by_name = {p.name: p for p in structural.values()}
    schemes = [{_strip(k, strip_prefixes): v for k, v in saved.items()}, saved]
    scored = [(sum(k in structural or k in by_name for k in s), s) for s in schemes]
    _, chosen = max(scored, key=lambda pair: pair[0])
    pairs, missing, wrong_shape = {}, [], []
    for key, param in structural.items():
        array = chosen.get(key, chosen.get(param.name))
        if array is None:
            missing.append(key)
        elif param.shape and all(param.shape) and tuple(param.shape) != array.shape:
            wrong_shape.append("%s: network %s, file %s" % (key, param.shape, array.shape))
        else:
            pairs[param] = array
    if missing or wrong_shape:
        lines = ["missing in file: %s" % m for m in missing[:10]] + wrong_shape[:10]
        raise UserInputError("the pretrained weights do not fit the network (%d missing, %d of another shape):"
                             "\n  %s\nCheck that --network names the architecture the file was saved from."
                             % (len(missing), len(wrong_shape), "\n  ".join(lines)))
    return pairs


def _strip(key, prefixes):
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key

"""Reading pretrained weights: classic MXNet checkpoints and Gluon ``.params`` files.

A classic checkpoint (``PREFIX-symbol.json`` + ``PREFIX-%04d.params``) carries its
own network, so the trunk is that symbol cut where its classifier begins. The cut
point is found from the graph's structure, not a layer name: the original
multi-task-MXNet looked up ``flatten`` while its own bundled ResNet-50 calls the
layer ``flatten0``.
"""
import contextlib
import io
import json
import logging
import os
import warnings

import mxnet as mx

from ..errors import UserInputError
from .. import mxprivate
from ..mxerrors import clean_mxnet_error

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
                             % (path, clean_mxnet_error(exc)))


def internal_output_shapes(symbol, image_shape, input_name="data"):
    """{internal output name: shape or None} of ``symbol`` for a batch of one ``image_shape`` image.

    Raises MXNetError when the shapes cannot be inferred at all.
    """
    internals = symbol.get_internals()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # MXNet prints on failure
        warnings.simplefilter("ignore")
        _, shapes, _ = internals.infer_shape_partial(**{input_name: (1,) + tuple(image_shape)})
    return dict(zip(internals.list_outputs(), shapes))


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
            raise UserInputError("--model %s --model-epoch %d: the %s file %s does not exist. A classic MXNet "
                                 "checkpoint is PREFIX-symbol.json + PREFIX-%04d.params (see "
                                 "pretrained_model/README.md)." % (prefix, epoch, what, path, epoch))
    try:
        symbol = mx.sym.load(sym_file)
    except mx.base.MXNetError as exc:
        raise UserInputError("%s is not an MXNet symbol file: %s" % (sym_file, clean_mxnet_error(exc)))
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
                             "classic checkpoint as --model PREFIX --model-epoch N." % path)
    return split_arg_aux(_load_nd(path))


def match_params(block, saved, strip_prefixes=()):
    """Pair a block's parameters with saved arrays; raise listing whatever did not match.

    Saved names are tried as structural names (``features.0.weight``, with each of
    ``strip_prefixes`` removed) and as full parameter names. Returns {Parameter: NDArray}.
    """
    structural = mxprivate.structural_params(block)
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


# --- ImageNet weights by network name (--pretrained), through GluonCV's model store ---

STORE_PROBE_TIMEOUT_S = 3.0  # the store's host must answer within this, or we call the machine offline


def _gluoncv_store():
    """GluonCV's model-store table and URL (its private names are read in mxprivate.py).

    Returns ({store name: sha1}, {zoo name: store name}, zip URL format, default repository URL).
    """
    from gluoncv.model_zoo import model_store
    sha1, url_format = mxprivate.gluoncv_store_table()
    # pretrained_model_list() renames a few store entries to their zoo names, keeping the order
    zoo_to_store = dict(zip(model_store.pretrained_model_list(), sha1))
    return sha1, zoo_to_store, url_format, model_store.apache_repo_url


def model_store_root(root=None):
    """The folder GluonCV keeps weights in: $MXNET_HOME/models, else ``root``, else ~/.mxnet/models."""
    if "MXNET_HOME" in os.environ:  # GluonCV's own precedence (model_store.get_model_file)
        return os.path.join(os.environ["MXNET_HOME"], "models")
    return os.path.expanduser(root or os.path.join("~", ".mxnet", "models"))


def zoo_weights_location(network, root=None):
    """(store name, expected file path, full sha1, download URL) of GluonCV's ImageNet weights for ``network``."""
    sha1s, zoo_to_store, url_format, default_repo = _gluoncv_store()
    store_name = zoo_to_store.get(network)
    if store_name is None:
        import difflib
        close = difflib.get_close_matches(network, list(zoo_to_store), n=8, cutoff=0.5)
        raise UserInputError("--pretrained: GluonCV publishes no ImageNet weights for --network %s. Networks "
                             "with weights and a close name: %s (all: gluoncv.model_zoo.pretrained_model_list()); "
                             "or give weights with --model FILE.params." % (network, ", ".join(close) or "none"))
    file_name = "%s-%s" % (store_name, sha1s[store_name][:8])
    repo = os.environ.get("MXNET_GLUON_REPO", default_repo)
    url = url_format.format(repo_url=repo if repo.endswith("/") else repo + "/", file_name=file_name)
    return store_name, os.path.join(model_store_root(root), file_name + ".params"), sha1s[store_name], url


def zoo_weights_file(network, root=None):
    """GluonCV's ImageNet weights for ``network``: the cached file, else fetched through its model store.

    A cached file that passes GluonCV's SHA-1 check is used without any network
    access. Offline, this fails within seconds (STORE_PROBE_TIMEOUT_S) with a
    message naming the file to put where, instead of waiting on a download.
    """
    from gluoncv.utils import check_sha1
    store_name, path, sha1, url = zoo_weights_location(network, root)
    if os.path.isfile(path):
        if not check_sha1(path, sha1):
            raise UserInputError("--pretrained: %s is not the file GluonCV publishes (its SHA-1 differs: damaged, "
                                 "cut short, or other weights). Delete it to fetch it again, or use it anyway "
                                 "with --model %s instead of --pretrained." % (path, path))
        _logger.info("--pretrained: ImageNet weights of %s from the cache %s", network, path)
        return path
    problem = store_unreachable(url)
    if problem:
        raise UserInputError(_offline_message(network, path, url, problem))
    from gluoncv.model_zoo.model_store import get_model_file
    _logger.info("--pretrained: downloading the ImageNet weights of %s from %s to %s", network, url, path)
    try:
        return get_model_file(store_name, root=os.path.dirname(path))
    except Exception as exc:  # requests, zip and hash errors alike: the fix is the same
        raise UserInputError(_offline_message(network, path, url, "%s: %s" % (type(exc).__name__, exc)))


def _offline_message(network, path, url, problem):
    return ("--pretrained: the ImageNet weights of %s are not in the cache and GluonCV's model store could not "
            "be reached (%s). Put the file %s in the folder %s (it is %s unzipped; on a machine with internet, "
            "`python -c \"import gluoncv; gluoncv.model_zoo.get_model('%s', pretrained=True)\"` leaves it in "
            "~/.mxnet/models), or point --model-root at the folder that holds it, or pass the weights file as "
            "--model FILE.params instead of --pretrained."
            % (network, problem, os.path.basename(path), os.path.dirname(path), url, network))


def store_unreachable(url, timeout=STORE_PROBE_TIMEOUT_S):
    """None if a TCP connection to the URL's host (or its proxy) opens within ``timeout`` s, else why not.

    The connection is tried in a daemon thread, so a DNS look-up that hangs
    (getaddrinfo has no timeout of its own) cannot hold up the caller either.
    """
    import socket
    import threading
    import urllib.parse
    import urllib.request
    parts = urllib.parse.urlsplit(url)
    target = parts
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    outcome = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = True
        except OSError as exc:
            outcome["error"] = "%s:%d: %s" % (host, port, exc)
    worker = threading.Thread(target=connect, name="model-store-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if outcome.get("ok"):
        return None
    return outcome.get("error") or "no answer from %s:%d within %g s" % (host, port, timeout)

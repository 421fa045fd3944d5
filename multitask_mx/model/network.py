"""The network: a shared trunk and one softmax head per task.

The trunk is either the ``features`` of a GluonCV model-zoo network, or the
symbol of an MXNet checkpoint cut before its classifier (see pretrained.py).
Heads output logits; softmax is applied by the loss and by predict/evaluate.
"""
import contextlib
import difflib
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import nn

from ..errors import UserInputError
from ..mxerrors import describe_mxnet_error
from .. import mxprivate
from .fusion import fuse_block_bn_relu, fuse_bn_relu, fusion_wanted, mean_for_global_pool, unfuse_symbol_file
from .precision import amp_dtype, amp_symbol
from .pretrained import load_classic_checkpoint, load_params_file, match_params, zoo_weights_file
from ..flagtypes import fraction, non_negative_int

_logger = logging.getLogger(__name__)

NET_PREFIX = "multitask_"
DEFAULT_NETWORK = "resnet50_v1"
TRUNK_SYMBOL_FILE = "trunk-symbol.json"


@dataclass
class TrunkSpec:
    """Where the trunk comes from: a zoo network name, or a symbol (JSON text) and its input."""

    network: str = "resnet50_v1"
    symbol_json: Optional[str] = None
    input_name: str = "data"

    @property
    def from_symbol(self):
        """True for a trunk cut from an MXNet checkpoint's symbol."""
        return self.symbol_json is not None


def zoo_network_names():
    """All GluonCV model-zoo names (for messages)."""
    from gluoncv.model_zoo import get_model_list
    return list(get_model_list())


def _unknown_network(network):
    close = difflib.get_close_matches(network, zoo_network_names(), n=8, cutoff=0.5)
    return UserInputError("--network %r is not a GluonCV model-zoo network. Close names: %s. "
                          "All names: gluoncv.model_zoo.get_model_list()." % (network, ", ".join(close) or "none"))


def _log_fused(pairs):
    if pairs:
        _logger.info("trunk: %d BatchNorm+ReLU pairs run as one oneDNN operator each (fusion.py; saved "
                     "checkpoints keep them apart)", pairs)


def _zoo_trunk(network, fuse_for_shape=None, mean_pool=False):
    from gluoncv.model_zoo import get_model
    try:
        base = get_model(network, pretrained=False)
    except ValueError:
        raise _unknown_network(network)
    if not hasattr(base, "features"):
        raise UserInputError("--network %s has no `features` trunk to share between heads; choose a "
                             "classification network such as resnet50_v1, mobilenetv2_1.0, vgg16." % network)
    if fuse_for_shape is not None:
        _log_fused(fuse_block_bn_relu(base.features, fuse_for_shape))
    if mean_pool and mean_for_global_pool(base.features):
        _logger.info("trunk: its global average pooling runs as a mean over height and width (fusion.py; "
                     "saved checkpoints keep the pooling layer)")
    return base.features


def _symbol_trunk(spec: TrunkSpec, fuse_for_shape=None):
    symbol = amp_symbol(mx.sym.load_json(spec.symbol_json), spec.input_name)  # AMP's patching misses JSON
    if fuse_for_shape is not None:
        symbol, pairs = fuse_bn_relu(symbol, spec.input_name, fuse_for_shape)
        _log_fused(pairs)
    with warnings.catch_warnings():  # "Cannot decide type for ... data": it is float32, set at first call
        warnings.simplefilter("ignore", UserWarning)
        block = gluon.SymbolBlock(symbol, mx.sym.var(spec.input_name))
    # A symbol's parameters carry no initialiser of their own, and Xavier refuses
    # vectors: give BatchNorm/bias vectors theirs (pretrained values replace them).
    for name, param in block.collect_params().items():
        if name.endswith(("gamma", "moving_var", "running_var")):
            param.init = mx.init.One()
        elif name.endswith(("beta", "bias", "moving_mean", "running_mean")):
            param.init = mx.init.Zero()
    return block


class MultiTaskNet(gluon.HybridBlock):
    """Shared trunk -> one Dense head per task; forward returns a tuple of logits.

    ``fuse_for_shape`` (an image shape): the trunk's BatchNorm+ReLU pairs run fused
    (fusion.py), checked for images of that shape; ``mean_pool``: a model-zoo trunk's last
    GlobalAvgPool2D runs as a mean (fusion.py); build_net decides both.
    """

    def __init__(self, trunk_spec: TrunkSpec, task_classes: Sequence[int], task_names: Sequence[str],
                 head_hidden=0, dropout=0.0, fuse_for_shape=None, mean_pool=False, **kwargs):
        super().__init__(prefix=NET_PREFIX, **kwargs)
        self.task_names = list(task_names)
        with self.name_scope():
            self.trunk = _symbol_trunk(trunk_spec, fuse_for_shape) if trunk_spec.from_symbol else \
                _zoo_trunk(trunk_spec.network, fuse_for_shape, mean_pool)
            self.heads = nn.HybridSequential(prefix="")
            for name, classes in zip(task_names, task_classes):
                head = nn.HybridSequential(prefix="head_%s_" % name)
                with head.name_scope():
                    if head_hidden:
                        head.add(nn.Dense(head_hidden, activation="relu"))
                        if dropout:
                            head.add(nn.Dropout(dropout))
                    head.add(nn.Dense(classes))
                self.heads.add(head)

    def hybrid_forward(self, F, x):
        features = self.trunk(x)
        if amp_dtype() == "bfloat16":  # logits back to float32: CPU metrics and argmax have no bf16 kernels
            return tuple(F.amp_cast(head(features), dtype="float32") for head in self.heads)
        return tuple(head(features) for head in self.heads)

    def export(self, path, epoch=0, remove_amp_cast=True):
        """Gluon's export, with the plain graph: fused BatchNorm+ReLU nodes written as the two layers.

        The fused operator runs only on CPUs with oneDNN; the files load anywhere
        (GPUs, INT8 quantization, ONNX) and name their layers as the unfused network does.
        """
        super().export(path, epoch, remove_amp_cast)
        unfuse_symbol_file("%s-symbol.json" % path)

    def trunk_params(self):
        """The trunk's learnable parameters (for freezing and lr multipliers).

        BatchNorm running statistics never take a gradient and are left out, so
        that unfreezing does not give them one.
        """
        if not hasattr(self, "_learnable"):  # decided once, before any freezing changes grad_req
            self._learnable = [p for p in self.trunk.collect_params().values() if p.grad_req != "null"]
        return list(self._learnable)

    def head_params(self):
        """The heads' parameters."""
        return self.heads.collect_params()


def initialize_net(net: MultiTaskNet, ctx, image_shape, defer=False):
    """Give every parameter its initializer and its shape, inferred from the graph (nothing computed).

    With ``defer`` the arrays are made later, by ``materialize``: weights loaded before then
    (``set_params``) are taken as they are, so a pretrained trunk's weights (ResNet-50: 25 M)
    are not first drawn at random only to be overwritten. A batch-1 forward used to resolve
    the shapes: a throw-away pass through the trunk (MKL-DNN kernels made for batch 1).
    """
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), ctx=ctx)
    with contextlib.redirect_stdout(io.StringIO()):  # MXNet prints its arguments when inference fails
        net.infer_shape(mx.nd.zeros((1,) + tuple(image_shape), ctx=ctx[0]))
    if not defer:
        materialize(net)


def materialize(net):
    """Make the arrays of parameters still waiting for them: loaded weights, else their initializer."""
    for param in net.collect_params().values():
        if mxprivate.is_deferred(param):  # otherwise Gluon would make them at the first forward, not before a read
            mxprivate.finish_deferred_init(param)
    mx.nd.waitall()  # initializers and copies have run before anyone reads or sets a weight


def set_params(pairs):
    """Copy arrays into parameters on all their contexts."""
    for param, array in pairs.items():
        param.set_data(array.astype(param.dtype))


def load_pretrained_trunk(net: MultiTaskNet, model_path, classic_params=None):
    """Fill the trunk from pretrained weights: a classic checkpoint's or a ``.params`` file's."""
    if classic_params is not None:
        pairs = match_params(net.trunk, classic_params)
    else:
        saved = load_params_file(model_path)
        prefixes = ("features.", NET_PREFIX + "trunk.", "trunk.")
        pairs = match_params(net.trunk, saved, strip_prefixes=prefixes)
    set_params(pairs)
    materialize(net)  # the heads (and, from build_net(defer=True), nothing else) from their initializer
    _logger.info("loaded %d pretrained trunk arrays from %s; heads are freshly initialised",
                 len(pairs), model_path)


def pretrained_weights(network, model, pretrained, model_root=None):
    """The weights file to start from: ``--model``, or with ``--pretrained`` GluonCV's ImageNet weights of --network.

    The latter come from GluonCV's model store (cache folder ``model_root``), fetched when missing.
    """
    if not pretrained:
        return model
    if model:
        raise UserInputError("--pretrained loads GluonCV's ImageNet weights of --network, --model %s loads other "
                             "weights: use one of the two." % model)
    network = network or DEFAULT_NETWORK
    if network.lower() not in zoo_network_names():
        raise _unknown_network(network)
    return zoo_weights_file(network.lower(), model_root)


def resolve_trunk(network, model, epoch, normalization_flag):
    """Decide trunk and normalisation from --network/--model/--model-epoch/--normalization.

    Returns (TrunkSpec, normalisation name, classic params or None).
    """
    if model and model.endswith(".params"):
        return TrunkSpec(network=network), _normalization(normalization_flag, "imagenet"), None
    if model:
        features, input_name, params, detected = load_classic_checkpoint(model, epoch or 0)
        if network:
            _logger.info("--model %s is a checkpoint with its own network: --network %s does not apply",
                         model, network)
        spec = TrunkSpec(network="symbol:%s" % model, symbol_json=features.tojson(), input_name=input_name)
        return spec, _normalization(normalization_flag, detected), params
    return TrunkSpec(network=network or DEFAULT_NETWORK), _normalization(normalization_flag, "imagenet"), None


def _normalization(flag, detected):
    if flag and flag != "auto":
        if flag != detected:
            _logger.warning("--normalization %s overrides the %s preprocessing detected for these weights",
                            flag, detected)
        return flag
    return detected


def build_net(trunk_spec: TrunkSpec, tasks, ctx, image_shape, head_hidden=0, dropout=0.0, defer=False):
    """Create and initialise a MultiTaskNet for ``tasks`` on ``ctx``.

    ``defer``: weights will be loaded next (load_pretrained_trunk, load_checkpoint_params,
    which then make the arrays); the parameters' arrays do not exist before that. On CPU
    contexts in float32 the trunk's BatchNorm+ReLU pairs are fused and a model-zoo trunk's
    global average pooling runs as a mean (fusion.py).
    """
    fuse_for_shape = tuple(image_shape) if fusion_wanted(ctx, amp_dtype()) else None
    net = MultiTaskNet(trunk_spec, [t.num_classes for t in tasks], [t.name for t in tasks],
                       head_hidden=head_hidden, dropout=dropout, fuse_for_shape=fuse_for_shape,
                       mean_pool=fuse_for_shape is not None)
    try:
        initialize_net(net, ctx, image_shape, defer)
    except (mx.base.MXNetError, ValueError) as exc:  # ValueError: Gluon's "Deferred initialization failed"
        if isinstance(exc, ValueError) and "MXNetError" not in str(exc):
            raise
        raise UserInputError(describe_mxnet_error(
            exc, "building the network %s on %s" % (trunk_spec.network, ctx[0]),
            "the network %s does not accept images of shape %s: %%s" % (trunk_spec.network, image_shape)))
    return net


def load_checkpoint_params(net: MultiTaskNet, params_file):
    """Load one of our own saved ``.params`` (MXNet checkpoint format) into ``net``."""
    saved = load_params_file(params_file)
    set_params(match_params(net, saved))
    materialize(net)


def add_arguments(parser):
    """Model flags."""
    group = parser.add_argument_group("model")
    group.add_argument("--network", default=None,
                       help="GluonCV model-zoo network for the trunk (default resnet50_v1); not used "
                            "with a classic --model checkpoint, which carries its own network")
    group.add_argument("--model", default=None,
                       help="pretrained weights: a classic MXNet checkpoint PREFIX (with --model-epoch), e.g. "
                            "pretrained_model/resnet-50, or a Gluon/GluonCV FILE.params")
    # --epoch is the original's name, kept for its scripts (train_multitask.sh); elsewhere --epoch means N|best|latest
    group.add_argument("--model-epoch", "--epoch", dest="model_epoch", type=non_negative_int, default=0, metavar="N",
                       help="epoch of the classic --model checkpoint (PREFIX-%%04d.params); --epoch is the "
                            "original multi-task-MXNet's name for it, kept as a deprecated alias in train")
    group.add_argument("--pretrained", action="store_true",
                       help="start the trunk from GluonCV's ImageNet weights of --network (from the cache, or "
                            "downloaded through GluonCV's model store when online)")
    group.add_argument("--model-root", default=None, metavar="DIR",
                       help="folder of GluonCV's cached weights for --pretrained (default ~/.mxnet/models; "
                            "$MXNET_HOME/models when MXNET_HOME is set, as in GluonCV)")
    group.add_argument("--head-hidden", type=non_negative_int, default=0, help="hidden Dense+ReLU units per head (0: none)")
    group.add_argument("--head-dropout", type=fraction, default=0.0, help="dropout after the hidden layer")

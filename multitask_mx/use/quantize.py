"""INT8 and bfloat16 inference of a trained model (CPU, oneDNN).

``--precision int8`` quantizes the checkpoint with MXNet's ``quantize_net`` (oneDNN
backend), calibrated on ``--calib-images`` images spread over the training list
(or ``--calib-list``): ``naive`` (the default) takes each layer's min/max, ``entropy``
picks KL-optimal thresholds (it clips outliers, which here cost more top-1 agreement
than it saved). MXNet's ``smart`` quantize mode leaves out the layers it cannot fuse. The
heads stay float32: they cost nothing next to the trunk and decide the top-1. ``--precision bf16`` converts
the graph with ``amp.convert_model`` (weights cast where AMP decides, outputs
float32). ``predict``, ``evaluate`` and ``serve`` all go through ``apply_precision``;
``export --int8`` writes the same INT8 model next to the float32 export. The
float32 checkpoint on disk is never changed.
"""
import logging
import os
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import _runtime
import mxnet as mx
from mxnet import gluon

from ..errors import UserInputError
from ..data.images import read_checked_image
from ..data.lists import read_list
from .graphs import hybridize_for_inference

_logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
CALIB_MODES = ("naive", "entropy")
KEEP_FLOAT32 = ["head_"]  # op names containing these stay float32 (the task heads)


@dataclass
class PrecisionConfig:
    """Which precision to run a trained model in, and how INT8 is calibrated."""

    precision: str = "fp32"
    calib_images: int = 256
    calib_mode: str = "naive"
    calib_list: Optional[str] = None
    calib_root: Optional[str] = None

    @classmethod
    def from_args(cls, flags, precision=None):
        """From the parsed flags (``precision`` overrides ``--precision``, e.g. export's ``--int8``)."""
        if flags.calib_images < 1:
            raise UserInputError("--calib-images %d: give 1 or more (e.g. 64)." % flags.calib_images)
        return cls(precision=precision or flags.precision, calib_images=flags.calib_images,
                   calib_mode=flags.calib_mode, calib_list=flags.calib_list, calib_root=flags.calib_root)


def add_arguments(parser, choose_precision=True):
    """``--precision`` (with ``choose_precision``) and the INT8 calibration flags."""
    group = parser.add_argument_group("precision")
    if choose_precision:
        group.add_argument("--precision", choices=PRECISIONS, default="fp32",
                           help="run the model in fp32, bf16 (CPU with AVX-512; fast with AMX) or int8 (quantized "
                                "here from the fp32 checkpoint, calibrated as below; fast with VNNI/AMX)")
    # Top-1 agreement with fp32 on 500 held-out images, cifar_resnet20_v1 trained 5 epochs on 1,000 images
    # (Fashion-MNIST acc 0.75 / MNIST 0.96): naive 128 images 97.8 / 98.2 %, naive 256 97.8 / 98.6 %,
    # naive 256 smart mode 98.2 / 98.4 %; entropy 128 95.6 / 97.6 %, entropy 256 96.2 / 98.0 %.
    group.add_argument("--calib-images", type=int, default=256,
                       help="INT8: calibration images, spread over the training list (or --calib-list)")
    group.add_argument("--calib-mode", choices=CALIB_MODES, default="naive",
                       help="INT8 calibration: naive = min/max of each layer, entropy = KL-optimal thresholds")
    group.add_argument("--calib-list", default=None, metavar="LST",
                       help="INT8: .lst of calibration images (default: the training list named in config.json)")
    group.add_argument("--calib-root", default=None, metavar="DIR",
                       help="folder the --calib-list paths are relative to (default: the list's folder)")


def calibration_paths(config, cfg: PrecisionConfig):
    """Paths of ``cfg.calib_images`` images spread evenly over the calibration list."""
    if cfg.calib_list:
        lst_path, root = cfg.calib_list, cfg.calib_root
    else:
        train_args = config.get("args", {})
        lst_path, root = train_args.get("data_train"), train_args.get("image_train")
    if not lst_path or not os.path.isfile(lst_path):
        raise UserInputError("INT8 calibration needs images: the training list %s is not here. Pass --calib-list "
                             "LST (a few dozen images like the ones the model will see)." % lst_path)
    entries = read_list(lst_path, root).entries
    step = max(1, len(entries) // cfg.calib_images)
    return [e.path for e in entries[::step][:cfg.calib_images]]


def calibration_batch(model, cfg: PrecisionConfig):
    """The calibration images, preprocessed as for prediction, as one float32 array (N, C, H, W)."""
    transform = model.transform()
    images = []
    for path in calibration_paths(model.config, cfg):
        img, problem = read_checked_image(path, transform.decode_size)
        if img is None:
            _logger.warning("calibration image %s %s: left out", path, problem)
            continue
        images.append(transform(img))
    if not images:
        raise UserInputError("INT8 calibration: none of the calibration images could be read; pass --calib-list.")
    return np.stack(images).astype(np.float32)


def _load_block(symbol, params_file):
    with warnings.catch_warnings():  # "Cannot decide type for data": float32, fixed at the first call
        warnings.simplefilter("ignore", UserWarning)
        return gluon.SymbolBlock.imports(symbol, ["data"], params_file, ctx=mx.cpu())


def quantize_checkpoint(symbol_file, params_file, calib, mode="naive"):
    """An INT8 SymbolBlock of a float32 checkpoint, calibrated on ``calib`` (N, C, H, W) on the CPU.

    ``smart`` mode: as fast as ``full`` on ResNet-50 (105 against 100 img/s, batch 32, 2 cores
    with VNNI) and two more images in 500 agreeing with fp32 on Fashion-MNIST (98.2 against 97.8 %).
    """
    block = _load_block(symbol_file, params_file)
    batches = mx.io.NDArrayIter(calib, batch_size=min(len(calib), 16), data_name="data")
    with warnings.catch_warnings():  # "will be deprecated after MXNet 2.0"
        warnings.simplefilter("ignore", UserWarning)
        return mx.contrib.quantization.quantize_net(
            block, quantized_dtype="auto", quantize_mode="smart", exclude_layers_match=list(KEEP_FLOAT32),
            calib_data=batches,
            calib_mode=mode, num_calib_examples=len(calib), ctx=mx.cpu())


def bf16_checkpoint(symbol_file, params_file):
    """A SymbolBlock of the checkpoint with AMP's bfloat16 casts (float32 outputs)."""
    from mxnet.contrib import amp
    saved = mx.nd.load(params_file)
    arg_params = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    aux_params = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    symbol, arg_params, aux_params = amp.convert_model(mx.sym.load(symbol_file), arg_params, aux_params,
                                                       target_dtype="bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        block = gluon.SymbolBlock(symbol, mx.sym.var("data"))
    weights = dict(list(arg_params.items()) + list(aux_params.items()))  # in the types AMP chose
    block.collect_params().load_dict(weights, mx.cpu(), ignore_extra=True, cast_dtype=True, dtype_source="saved")
    return block


def check_precision(precision, ctxs):
    """Refuse a precision this machine cannot run, before any work."""
    if precision == "fp32":
        return
    if not all(c.device_type == "cpu" for c in ctxs):
        raise UserInputError("--precision %s runs on CPUs (oneDNN kernels); drop --gpus or use fp32." % precision)
    if precision == "bf16" and not _runtime.bf16_supported():
        raise UserInputError("--precision bf16 needs a CPU with AVX-512 (oneDNN has no bfloat16 kernels for this "
                             "one). Use --precision int8 or fp32.")


def apply_precision(model, cfg: PrecisionConfig):
    """``model`` with its network replaced by the bf16 or INT8 one (fp32: unchanged)."""
    check_precision(cfg.precision, model.ctxs)
    if cfg.precision == "fp32":
        return model
    tic = time.time()
    if cfg.precision == "int8":
        calib = calibration_batch(model, cfg)
        net = quantize_checkpoint(model.symbol_file, model.params_file, calib, cfg.calib_mode)
        how = "calibrated (%s) on %d images" % (cfg.calib_mode, len(calib))
    else:
        net = bf16_checkpoint(model.symbol_file, model.params_file)
        how = "AMP casts"
    hybridize_for_inference(net, fuse=False)  # quantize_net's graph is fused already
    model.net, model.precision = net, cfg.precision
    _logger.info("running %s in %s (%s, %.1f s); AMX %s", model.params_file, cfg.precision, how,
                 time.time() - tic, _runtime.CPU_FEATURES.get("amx"))
    return model

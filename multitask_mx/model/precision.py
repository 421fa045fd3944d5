"""Training in lower precision: bfloat16 on CPUs (fast with AMX), float16 on GPUs, through MXNet AMP.

``--dtype bfloat16`` and ``float16`` call ``amp.init`` before the network is built: AMP
patches the operators the network is made of, so convolutions and dense layers run in
the low type while the weights (the optimizer's master copy), BatchNorm statistics,
softmax and the losses stay float32, as AMP's lists decide. Two things AMP's patching
misses are handled here:

- a trunk cut from a classic checkpoint is loaded from JSON, not built from patched
  operators: ``amp_symbol`` converts that symbol with ``amp.convert_symbol``;
- checkpoints stay float32 and load anywhere: ``HybridBlock.export`` bypasses AMP's casts
  that feed another node (``remove_amp_cast=True``, MXNet's default), ``drop_output_casts``
  removes the ones that are outputs (bf16 logits cast back to float32), and the weights
  are float32 master copies.

``--dtype auto`` is chosen by ``dtype_choice`` (it times the network, so it sits above it).
"""
import json
import logging

from .. import _runtime
import mxnet as mx

from ..errors import UserInputError

_logger = logging.getLogger(__name__)

_AMP = {"dtype": None}  # the type amp.init was called with in this process


def check_dtype(dtype, ctxs):
    """Refuse a --dtype the devices cannot run, before any work."""
    on_cpu = all(c.device_type == "cpu" for c in ctxs)
    if dtype == "float16" and on_cpu:
        raise UserInputError("--dtype float16 (mixed precision) needs GPUs; on CPU it would be slower and less "
                             "accurate. Use --dtype bfloat16 on a CPU with AVX-512, or pass --gpus.")
    if dtype == "bfloat16" and not on_cpu:
        raise UserInputError("--dtype bfloat16: MXNet 1.9.1 has bfloat16 kernels for CPUs only; on GPUs use "
                             "--dtype float16.")
    if dtype == "bfloat16" and not _runtime.bf16_supported():
        raise UserInputError("--dtype bfloat16 needs a CPU with AVX-512 (oneDNN has no bfloat16 kernels for this "
                             "one; fast ones need avx512_bf16 or amx_bf16 in /proc/cpuinfo). Drop --dtype.")


def init_amp(dtype):
    """Start MXNet AMP for ``dtype`` (float16/bfloat16); nothing for float32. Call before building the net."""
    if dtype not in ("float16", "bfloat16"):
        return
    from mxnet.contrib import amp
    amp.init(target_dtype=dtype)
    _AMP["dtype"] = dtype
    _logger.info("mixed precision: %s compute through MXNet AMP, float32 weights, BatchNorm, softmax and "
                 "loss%s", dtype, "; dynamic loss scaling" if dtype == "float16" else
                 " (no loss scaling: bfloat16 has float32's range)")


def amp_dtype():
    """The low type AMP runs in this process, or None."""
    return _AMP["dtype"]


def amp_symbol(symbol, input_name="data"):
    """``symbol`` with AMP's casts for the active AMP type (``amp.convert_symbol``); unchanged without AMP.

    A trunk loaded from a checkpoint's JSON is not built from AMP's patched operators, so
    it would stay float32 while the heads run in the low type. The weights stay float32
    (the master copy); casts feed the convolutions. ``tojson()``/``export`` drop AMP's casts
    by default (``remove_amp_cast=True``), which is what keeps our checkpoints float32.
    """
    if amp_dtype() is None:
        return symbol
    from mxnet.contrib import amp
    converted = amp.convert_symbol(symbol, target_dtype=amp_dtype(), data_names=[input_name],
                                   cast_optional_params=False)
    _logger.info("converted the checkpoint trunk's graph to %s compute (AMP casts added)", amp_dtype())
    return converted


def drop_output_casts(symbol_file):
    """Rewrite ``symbol_file`` without the ``amp_cast`` ops that are its outputs; nothing without AMP.

    Under bfloat16 the heads' logits are cast back to float32 (network.py), and those
    casts are the graph's outputs. ``export``'s ``remove_amp_cast`` only bypasses casts
    that feed another node, so they would stay in every checkpoint's symbol file. Without
    them a bf16 run's symbol is exactly the float32 one.
    """
    if amp_dtype() is None:
        return
    symbol = mx.sym.load(symbol_file)
    outputs = [_uncast(out) for out in symbol]
    mx.sym.Group(outputs).save(symbol_file, remove_amp_cast=True)


def _uncast(output):
    """The input of ``output`` if it is an ``amp_cast`` node, else ``output``."""
    last = json.loads(output.tojson())["nodes"][-1]
    return output.get_children()[0] if last["op"] == "amp_cast" else output


def add_arguments(parser):
    """--dtype, the type training computes in."""
    group = parser.add_argument_group("precision")
    group.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "auto"], default="float32",
                       help="float16 = mixed precision (AMP) on GPUs; bfloat16 = AMP on CPUs with AVX-512 (fast "
                            "with AMX); auto = bfloat16 where AMX is on and timed steps show it faster")

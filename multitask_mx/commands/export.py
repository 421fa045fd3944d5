"""``multitask-mx export``: a deployment checkpoint whose outputs are softmax probabilities, and ONNX.

Writes into ``--out``: ``NAME-symbol.json`` + ``NAME-0000.params`` (MXNet checkpoint
format, one softmax output per task, loadable by ``gluon.SymbolBlock.imports`` and
``mx.mod.Module``), ``NAME-preprocess.json`` (what to do to an image before the
network) and, with ``--onnx``, ``NAME.onnx`` checked against MXNet with onnxruntime.
"""
import logging
import os
import sys
import warnings

import numpy as np

from .. import __version__
from ..use import graphs, inference, kind_outputs, quantize
import mxnet as mx
from mxnet import gluon

from ..atomic import (DiskFullError, atomic_prefix, atomic_write_bytes, atomic_write_json, check_output_dir,
                      is_disk_full, temp_prefix)
from ..runfolder import check_save_name
from ..errors import UserInputError
from ..data.images import EVAL_CROP_FRACTION, NORMALIZATIONS, to_chw_float
from ..logs import setup_logging

_logger = logging.getLogger(__name__)


ONNX_OPSET = 13  # the newest opset MXNet 1.9.1's exporter has translations for
TOLERANCE = 1e-4
INSTALL_ONNX = "pip install -c constraints.txt -e '.[onnx]'"


def add_arguments(parser):
    """Export flags."""
    inference.add_arguments(parser, prediction=False)
    group = parser.add_argument_group("export")
    group.add_argument("--out", required=True, help="folder for the exported files")
    group.add_argument("--name", default=None, type=check_save_name,
                       help="file prefix in --out: a plain file-name stem (default: the save name)")
    group.add_argument("--onnx", action="store_true",
                       help="also write NAME.onnx (needs onnx and onnxruntime: %s)" % INSTALL_ONNX)
    group.add_argument("--int8", action="store_true",
                       help="also write NAME-int8-symbol.json/-0000.params: the model quantized to INT8 for CPUs "
                            "(calibrated as below; predict/evaluate/serve --precision int8 do the same in memory)")
    group.add_argument("--quiet", action="store_true", help="warnings only on stderr")
    quantize.add_arguments(parser, choose_precision=False)


def output_name(task_name):
    """Name of a task's probability output (the ONNX output and the MXNet op name)."""
    return "prob_%s" % task_name


def probability_symbol(symbol_file, tasks):
    """The trained network's symbol with a softmax on each task's logits."""
    logits = mx.sym.load(symbol_file)
    if len(logits.list_outputs()) != len(tasks):
        raise UserInputError("%s has %d output(s) but config.json lists %d task(s); the save directory "
                             "mixes two runs." % (symbol_file, len(logits.list_outputs()), len(tasks)))
    return mx.sym.Group([kind_outputs.output_symbol(logits[i], t, output_name(t.name)) for i, t in enumerate(tasks)])


def split_params(params_file):
    """(arg_params, aux_params) of a checkpoint written by HybridBlock.export."""
    saved = mx.nd.load(params_file)
    args = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    return args, aux


def save_checkpoint_atomic(prefix, symbol, args, aux):
    """``mx.model.save_checkpoint(prefix, 0, ...)`` through temporary names and renames."""
    quiet = _ExporterLogFilter()
    logging.getLogger().addFilter(quiet)
    try:
        with atomic_prefix(prefix, ["-symbol.json", "-0000.params"]) as tmp:
            mx.model.save_checkpoint(tmp, 0, symbol, args, aux)
    finally:
        logging.getLogger().removeFilter(quiet)


def preprocessing(model, name, onnx_file=None):
    """What a deployment must do to an image before the network, and what comes out."""
    channels, height, width = model.image_shape
    mean, std = NORMALIZATIONS[model.normalization]
    return {
        "multitask_mx_version": __version__,
        "source": model.describe(),
        "input": {"name": "data", "shape": [None, channels, height, width], "layout": "NCHW",
                  "dtype": "float32", "channel_order": "RGB"},
        "normalization": {"name": model.normalization, "scale": "pixels 0..255",
                          "mean": list(mean), "std": list(std),
                          "formula": "(pixel - mean) / std per channel" if model.normalization != "raw"
                          else "none: the network takes 0..255 pixels"},
        "resize": {"short_side": int(np.ceil(max(height, width) / EVAL_CROP_FRACTION)),
                   "keep_aspect_ratio": True,
                   "interpolation": "bilinear (area when shrinking by more than 2x)",
                   "rule": "resize so the short side is short_side, then take the centre crop"},
        "crop": {"kind": "centre", "height": height, "width": width},
        "decode": "OpenCV, EXIF orientation applied, grey/alpha converted to 3-channel RGB",
        "outputs": [{"task": t.name, "mxnet_output": output_name(t.name) + "_output",
                     "onnx_output": output_name(t.name), "kind": kind_outputs.output_description(t),
                     "classes": model.classes[t.name]} for t in model.tasks],
        "files": {"symbol": name + "-symbol.json", "params": name + "-0000.params", "onnx": onnx_file},
    }


def probe_batch(model, size=2, seed=0):
    """A few random images preprocessed as the model expects (for the output checks)."""
    rng = np.random.RandomState(seed)
    channels, height, width = model.image_shape
    images = [rng.randint(0, 256, (height, width, channels)).astype(np.uint8) for _ in range(size)]
    return np.stack([to_chw_float(img, model.normalization) for img in images])


def reference_probs(model, batch):
    """Softmax (per kind: kind_outputs.output_arrays) of the trained network's outputs for ``batch``."""
    outputs = model.net(mx.nd.array(batch, ctx=model.ctxs[0]))
    outputs = [outputs] if isinstance(outputs, mx.nd.NDArray) else outputs
    return kind_outputs.output_arrays(outputs, model.tasks)


def check_mxnet_export(prefix, batch, reference):
    """Largest difference between the exported checkpoint (via SymbolBlock.imports) and the reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        block = gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    outputs = block(mx.nd.array(batch))
    outputs = [outputs] if isinstance(outputs, mx.nd.NDArray) else outputs
    return max(float(np.abs(o.asnumpy() - r).max()) for o, r in zip(outputs, reference))


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise UserInputError("--onnx needs the onnx package: %s" % INSTALL_ONNX)
    return onnx


def clean_onnx_model(onnx, model_proto):
    """Stamp the opset the nodes were translated for; drop initializers from the graph inputs.

    MXNet's exporter labels the model with the onnx package's newest opset although
    its translations are for opset 13, and lists every weight as a graph input,
    which stops onnxruntime from folding constants.
    """
    for opset in model_proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = ONNX_OPSET
    graph = model_proto.graph
    weights = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    used = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    onnx.checker.check_model(model_proto)
    return model_proto


def export_onnx(prefix, model, path):
    """Convert the exported checkpoint to ONNX (dynamic batch) at ``path``."""
    onnx = _import_onnx()
    tmp = temp_prefix(path)
    shape = (1,) + model.image_shape
    quiet = _ExporterLogFilter()  # it logs the temporary file's name: the final one is printed instead
    logging.getLogger().addFilter(quiet)
    try:
        mx.onnx.export_model(prefix + "-symbol.json", prefix + "-0000.params", [shape], [np.float32], tmp,
                             dynamic=True, dynamic_input_shapes=[(None,) + model.image_shape])
        proto = clean_onnx_model(onnx, onnx.load(tmp))
    except Exception as exc:  # the exporter raises bare AttributeError/KeyError for unsupported ops
        if _disk_full(exc, path):
            raise DiskFullError(os.path.dirname(os.path.abspath(path)), " while writing %s" % os.path.basename(path))
        raise UserInputError("MXNet's ONNX exporter cannot convert network %s: %s: %s. The MXNet checkpoint in "
                             "--out is still usable." % (model.config.get("network"), type(exc).__name__, exc))
    finally:
        logging.getLogger().removeFilter(quiet)
        if os.path.exists(tmp):
            os.remove(tmp)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


class _ExporterLogFilter(logging.Filter):
    """Drops MXNet's root-logger lines that name a temporary file, and its ONNX exporter's progress lines.

    The files are written under temporary names and renamed; run() prints the final names.
    """

    def filter(self, record):
        return "mx2onnx" not in record.pathname.replace(os.sep, "/") and ".tmp-" not in record.getMessage()


def _disk_full(exc, path, room=1 << 20):
    """Whether the exporter's failure is a full disk: by its error, or by the little room left (a cut file)."""
    if is_disk_full(exc):
        return True
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < room


def onnx_probs(path, batch):
    """Outputs of the ONNX model for ``batch`` with onnxruntime, or None if it is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        _logger.warning("onnxruntime is not installed: the ONNX file is not checked (%s)", INSTALL_ONNX)
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch.astype(np.float32)})


def export_int8(model, prefix, cfg):
    """Write ``PREFIX-int8-symbol.json``/``-0000.params`` (softmax outputs), report top-1 agreement with fp32."""
    calib = quantize.calibration_batch(model, cfg)
    qnet = quantize.quantize_checkpoint(prefix + "-symbol.json", prefix + "-0000.params", calib, cfg.calib_mode)
    graphs.hybridize_for_inference(qnet, fuse=False)
    outputs = qnet(mx.nd.array(calib))  # also builds the graph that export() writes
    outputs = [outputs] if isinstance(outputs, mx.nd.NDArray) else outputs
    reference = reference_probs(model, calib)
    int8_prefix = prefix + "-int8"
    tmp = os.path.join(os.path.dirname(prefix), ".tmp-%d-%s" % (os.getpid(), os.path.basename(int8_prefix)))
    qnet.export(tmp, epoch=0)
    os.replace("%s-symbol.json" % tmp, "%s-symbol.json" % int8_prefix)
    os.replace("%s-0000.params" % tmp, "%s-0000.params" % int8_prefix)
    agreement = min(float((o.asnumpy().argmax(1) == r.argmax(1)).mean()) for o, r in zip(outputs, reference))
    print("wrote %s-symbol.json and %s-0000.params (INT8, %s calibration on %d images; top-1 agrees with fp32 on "
          "%.1f%% of them, lowest task)" % (int8_prefix, int8_prefix, cfg.calib_mode, len(calib), 100 * agreement))
    return {"symbol": os.path.basename(int8_prefix) + "-symbol.json",
            "params": os.path.basename(int8_prefix) + "-0000.params",
            "calibration": {"mode": cfg.calib_mode, "images": len(calib)}, "top1_agreement_on_calibration": agreement}


def run(args):
    """Entry point of ``multitask-mx export``."""
    setup_logging(None, quiet=args.quiet)
    check_output_dir(args.out, "--out")  # before the work, not after
    model = inference.load_model(args.save_result, args.save_name, args.epoch, [mx.cpu()],
                                 weights=args.weights)
    name = args.name or model.save_name
    if os.path.realpath(args.out) == os.path.realpath(model.save_dir) and name == model.save_name:
        raise UserInputError("--out %s with name %s would overwrite the training checkpoint's symbol; choose "
                             "another --out folder or --name." % (args.out, name))
    os.makedirs(args.out, exist_ok=True)
    prefix = os.path.join(args.out, name)
    arg_params, aux_params = split_params(model.params_file)
    save_checkpoint_atomic(prefix, probability_symbol(model.symbol_file, model.tasks), arg_params, aux_params)
    batch = probe_batch(model)
    reference = reference_probs(model, batch)
    diff = check_mxnet_export(prefix, batch, reference)
    print("wrote %s-symbol.json and %s-0000.params (softmax outputs: %s; max difference to the trained "
          "model %.2g)" % (prefix, prefix, ", ".join(output_name(t) for t in model.task_names), diff))
    onnx_file, status = None, 0
    if args.onnx:
        onnx_file = export_onnx(prefix, model, prefix + ".onnx")
        outputs = onnx_probs(onnx_file, batch)
        if outputs is not None:
            onnx_diff = max(float(np.abs(o - r).max()) for o, r in zip(outputs, reference))
            print("wrote %s (opset %d; onnxruntime vs MXNet max difference %.2g)" % (onnx_file, ONNX_OPSET,
                                                                                     onnx_diff))
            if not onnx_diff <= TOLERANCE:
                print("error: the ONNX outputs differ from MXNet's by %.3g (> %g); do not deploy %s."
                      % (onnx_diff, TOLERANCE, onnx_file), file=sys.stderr)
                status = 1
    info = preprocessing(model, name, os.path.basename(onnx_file) if onnx_file else None)
    if args.int8:
        info["files"]["int8"] = export_int8(model, prefix, quantize.PrecisionConfig.from_args(args, "int8"))
    atomic_write_json(prefix + "-preprocess.json", info)
    print("wrote %s-preprocess.json (resize short side to %d, centre crop %dx%d, RGB, %s normalisation)"
          % (prefix, info["resize"]["short_side"], info["crop"]["height"], info["crop"]["width"],
             model.normalization))
    return status

"""Using a trained model: load a save directory, predict softmax probabilities per task.

A save directory written by ``multitask-mx train`` holds ``config.json`` (network,
image shape, normalisation, tasks, class names) and MXNet checkpoints whose outputs
are the per-task logits. ``load_model`` picks an epoch and imports it as a
``gluon.SymbolBlock``; ``predict_paths`` decodes images in DataLoader worker
processes with the same evaluation transform as validation during training and
returns log-probabilities per task. An image that cannot be read is recorded with
its reason instead of stopping the run.
"""
import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from .. import _runtime
import mxnet as mx
from mxnet import gluon
from tqdm import tqdm

from ..runfolder import RunDir, check_save_name
from ..data.datasets import SHOWN, make_loader as make_data_loader
from ..devices import parse_contexts, split_batch
from ..errors import UserInputError
from ..data.images import EvalTransform, read_checked_image
from ..data.image_headers import add_max_pixels_flag, set_max_pixels
from ..mxerrors import describe_mxnet_error
from . import graphs, kind_outputs
from .default_epoch import DEFAULT_EPOCH, resolve_default_epoch
from ..data.tasks import Task
from ..flagtypes import non_negative_int, positive_int

_logger = logging.getLogger(__name__)

BEST = "best"
WEIGHTS = ("raw", "ema")  # --weights: the trained weights, or their moving average (train --ema)


@dataclass
class SavedModel:
    """A trained network ready for inference, with what config.json says about it."""

    save_dir: str
    save_name: str
    epoch: object  # an int, or "best"
    params_file: str
    symbol_file: str
    config: dict
    tasks: List[Task]
    classes: Dict[str, List[str]]
    net: gluon.SymbolBlock
    ctxs: list
    weights: str = "raw"  # "ema": the moving average of the weights (train --ema)
    precision: str = "fp32"  # quantize.apply_precision sets bf16 or int8

    @property
    def image_shape(self):
        """Network input (C, H, W)."""
        return tuple(self.config["image_shape"])

    @property
    def normalization(self):
        """Pixel preprocessing preset name ("imagenet" or "raw")."""
        return self.config["normalization"]

    @property
    def task_names(self):
        """Task names in output order."""
        return [t.name for t in self.tasks]

    def transform(self):
        """The evaluation transform the model was validated with."""
        return EvalTransform(self.image_shape[1:], self.normalization)

    def describe(self):
        """JSON-friendly summary of which weights these are."""
        return {"save_result": self.save_dir, "save_name": self.save_name, "epoch": self.epoch,
                "params_file": self.params_file, "weights": self.weights, "network": self.config.get("network"),
                "image_shape": list(self.image_shape), "normalization": self.normalization,
                "precision": self.precision}


def parse_epoch(text):
    """``--epoch`` value: an epoch number, ``best``, or ``latest``/None for the newest on disk."""
    if text is None or text == "latest":
        return None
    if text == DEFAULT_EPOCH:  # argparse passes the flag's default through here too
        return DEFAULT_EPOCH
    if text == BEST:
        return BEST
    if not str(text).isdigit():
        raise UserInputError("--epoch %r: give an epoch number, 'best' or 'latest'." % text)
    return int(text)


def choose_params(save_dir, save_name, epoch):
    """(epoch, params file, symbol file) for ``epoch`` (int, 'best' or None = newest)."""
    saver = RunDir(save_dir, save_name)
    epochs = saver.saved_epochs()
    have_best = os.path.isfile(saver.best_params_file())
    available = ", ".join([str(e) for e in epochs] + ([BEST] if have_best else [])) or "none"
    if not os.path.isfile(saver.symbol_file()):
        names = sorted(f[:-len("-symbol.json")] for f in os.listdir(save_dir) if f.endswith("-symbol.json")
                       and f != "trunk-symbol.json")
        raise UserInputError("%s has no %s-symbol.json. Save names there: %s; pass --save-name."
                             % (save_dir, save_name, ", ".join(names) or "none"))
    if epoch is None:
        if not epochs:
            if have_best:
                return BEST, saver.best_params_file(), saver.symbol_file()
            raise UserInputError("%s has no %s-NNNN.params: training has not finished an epoch yet."
                                 % (save_dir, save_name))
        epoch = epochs[-1]
    elif epoch == BEST:
        if not have_best:
            raise UserInputError("%s has no %s-best.params. Epochs available: %s."
                                 % (save_dir, save_name, available))
        return BEST, saver.best_params_file(), saver.symbol_file()
    elif epoch not in epochs:
        raise UserInputError("--epoch %d: %s has no %s. Epochs available: %s."
                             % (epoch, save_dir, os.path.basename(saver.params_file(epoch)), available))
    return epoch, saver.params_file(epoch), saver.symbol_file()


def choose_weights(save_dir, save_name, epoch, weights="raw"):
    """(epoch, params file, symbol file, "raw"|"ema") for ``--epoch`` and ``--weights``.

    ``best`` is whichever of an epoch's raw and EMA weights validated better
    (best.json says which); ``--weights ema`` with an epoch number or the newest
    epoch picks that epoch's ``-ema.params``.
    """
    epoch, params_file, symbol_file = choose_params(save_dir, save_name, epoch)
    saver = RunDir(save_dir, save_name)
    if epoch == BEST:
        best = saver.read_best() or {}
        chosen = best.get("weights", "raw")
        if weights == "ema" and chosen != "ema":
            raise UserInputError("--epoch best --weights ema: the best checkpoint of %s holds the raw weights of "
                                 "epoch %s (best.json). For that epoch's EMA weights pass --epoch %s --weights ema."
                                 % (save_dir, best.get("epoch"), best.get("epoch")))
        return epoch, params_file, symbol_file, chosen
    if weights == "ema":
        params_file = saver.ema_params_file(epoch)
        if not os.path.isfile(params_file):
            have = [e for e in saver.saved_epochs() if os.path.isfile(saver.ema_params_file(e))]
            raise UserInputError("--weights ema: %s has no %s; EMA weights are saved by `train --ema DECAY`. "
                                 "Epochs with EMA weights: %s." % (save_dir, os.path.basename(params_file),
                                                                   ", ".join(map(str, have)) or "none"))
    return epoch, params_file, symbol_file, weights


def load_model(save_dir, save_name=None, epoch=None, ctxs=None, weights="raw"):
    """Load a trained model from ``save_dir`` onto ``ctxs`` (default CPU).

    ``save_name`` defaults to the one in config.json; ``epoch`` is a number, 'best'
    or None for the newest epoch on disk; ``weights`` "ema" takes the epoch's EMA weights.
    """
    run = RunDir(save_dir, save_name)  # save_name None: the one config.json records
    config = run.read_config()
    save_name = run.save_name
    epoch, why = resolve_default_epoch(save_dir, save_name, epoch, weights)
    epoch, params_file, symbol_file, weights = choose_weights(save_dir, save_name, epoch, weights)
    ctxs = list(ctxs or [mx.cpu()])
    with warnings.catch_warnings():  # "Cannot decide type for data": float32, fixed at the first call
        warnings.simplefilter("ignore", UserWarning)
        try:
            net = gluon.SymbolBlock.imports(symbol_file, ["data"], params_file, ctx=ctxs)
        except mx.base.MXNetError as exc:
            if not run.params_loadable(params_file):
                raise run.damaged_params_error(params_file, "epoch %s" % epoch) from None
            raise UserInputError(describe_mxnet_error(exc, "loading %s on %s" % (params_file, ctxs[0]),
                                                      "cannot load %s with %s: %%s" % (params_file, symbol_file)))
    graphs.hybridize_for_inference(net, ctxs)
    tasks = [Task.from_dict(d) for d in config["tasks"]]
    classes = {t.name: config.get("classes", {}).get(t.name) or [str(c) for c in range(t.num_classes)]
               for t in tasks}
    _logger.info("loaded %s (epoch %s, %s weights; %s) on %s", params_file, epoch, weights, why, ctxs)
    return SavedModel(save_dir, save_name, epoch, params_file, symbol_file, config, tasks, classes, net, ctxs,
                      weights)


class ImagePathDataset(gluon.data.Dataset):
    """Items are (CHW float32 image, error text); a failed image gives zeros and its reason."""

    def __init__(self, paths: Sequence[str], transform: EvalTransform):
        self.paths = list(paths)
        self.transform = transform
        self._pid = None

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, idx):
        if self._pid != os.getpid():
            self._pid = os.getpid()
            cv2.setNumThreads(1)  # in a worker process: the workers are the parallelism
        img, problem = read_checked_image(self.paths[idx], self.transform.decode_size)
        if img is None:
            return np.zeros((3,) + self.transform.out_hw, np.float32), problem
        return self.transform(img), ""


class _Collate:
    """Stack images into one NDArray (in shared memory for worker processes), keep error texts."""

    def __init__(self, shared):
        self.shared = shared

    def __call__(self, samples):
        ctx = mx.Context("cpu_shared", 0) if self.shared else mx.cpu()
        data = mx.nd.array(np.stack([s[0] for s in samples]), ctx=ctx, dtype=np.float32)
        return data, [s[1] for s in samples]


# predict/evaluate --batch-size when not given. INT8 gains from the larger batch where fp32 does not:
# ResNet-50 at 224, 2 cores with VNNI, img/s at batch 32 / 64 (two runs each): INT8 123, 96 / 133, 141;
# fp32 35, 31 / 33, 37.
DEFAULT_BATCH = 32
DEFAULT_INT8_BATCH = 64


@dataclass
class PredictConfig:
    """How to run prediction: batch size, loader workers, flip TTA, progress bar."""

    batch_size: int = 32
    workers: int = 2
    tta: str = "none"
    progress: bool = True


@dataclass
class Predictions:
    """Per-task log-probabilities (N x classes; NaN rows for failed images; other kinds: kind_outputs.py)."""

    paths: List[str]
    log_probs: List[np.ndarray]
    failed: Dict[int, str] = field(default_factory=dict)

    def probs(self, task_index):
        """Softmax probabilities of one task."""
        return np.exp(self.log_probs[task_index])

    def ok(self):
        """Boolean mask of the images that were predicted."""
        mask = np.ones(len(self.paths), bool)
        mask[list(self.failed)] = False
        return mask


def _log_softmax_outputs(net, x, tasks=None):
    outputs = net(x)
    outputs = [outputs] if isinstance(outputs, mx.nd.NDArray) else list(outputs)
    return kind_outputs.head_outputs(outputs, tasks)  # log-softmax of class heads; kind_outputs.py for the others


def _log_mean_exp(a, b):
    top = mx.nd.maximum(a, b)  # log((e^a + e^b) / 2) without underflow
    return top + mx.nd.log((mx.nd.exp(a - top) + mx.nd.exp(b - top)) / 2)


def forward_log_probs(net, data, ctxs, tta="none", tasks=None):
    """Log-probabilities per task (``tasks``' kinds: kind_outputs.py) for one batch over ``ctxs``, on the CPU (async)."""
    parts, _ = split_batch([data], ctxs)
    per_device = []
    for (x,) in parts:
        log_probs = _log_softmax_outputs(net, x, tasks)
        if tta == "flip":  # mean of the probabilities (or values) of the image and its mirror
            mirrored = _log_softmax_outputs(net, mx.nd.flip(x, axis=3), tasks)
            values = [kind_outputs.is_value(t) for t in tasks] if tasks else [False] * len(log_probs)
            log_probs = [(a + b) / 2 if v else _log_mean_exp(a, b) for a, b, v in zip(log_probs, mirrored, values)]
        per_device.append([lp.as_in_context(mx.cpu()) for lp in log_probs])
    size = data.shape[0]
    return [mx.nd.concat(*outs, dim=0)[:size] if len(outs) > 1 else outs[0][:size]
            for outs in zip(*per_device)]


def make_predict_loader(dataset, cfg: PredictConfig):
    """DataLoader over ``dataset``; worker processes only when there is more than a batch."""
    workers = cfg.workers if len(dataset) > cfg.batch_size else 0
    return make_data_loader(dataset, cfg.batch_size, False, workers, "keep", _Collate(shared=workers > 0))


def predict_paths(model: SavedModel, paths: Sequence[str], cfg: Optional[PredictConfig] = None):
    """Predict every image of ``paths`` (in order); failures are collected, not raised."""
    cfg = cfg or PredictConfig()
    if cfg.tta not in ("none", "flip"):
        raise UserInputError("--tta %r: choose none or flip." % cfg.tta)
    paths = list(paths)
    loader = make_predict_loader(ImagePathDataset(paths, model.transform()), cfg)
    bar = tqdm(total=len(paths), desc="predict", unit="img", leave=False, dynamic_ncols=True,
               disable=not (cfg.progress and sys.stderr.isatty() and len(paths) > cfg.batch_size))
    chunks, failed, pending, start = [], {}, None, 0
    for data, errors in loader:
        outputs = forward_log_probs(model.net, data, model.ctxs, cfg.tta, model.tasks)
        if pending is not None:  # read the previous batch while this one computes
            chunks.append([o.asnumpy() for o in pending])
        pending = outputs
        failed.update({start + i: e for i, e in enumerate(errors) if e})
        start += len(errors)
        bar.update(len(errors))
    if pending is not None:
        chunks.append([o.asnumpy() for o in pending])
    bar.close()
    del loader  # ends the worker processes now
    log_probs = [np.concatenate([c[k] for c in chunks]) if chunks else
                 np.zeros((0, t.num_classes), np.float32) for k, t in enumerate(model.tasks)]
    for lp in log_probs:
        lp[list(failed)] = np.nan
    for index, reason in sorted(failed.items())[:SHOWN]:  # all of them are in the output's error column
        _logger.warning("image %s %s: not predicted", paths[index], reason)
    if len(failed) > SHOWN:
        _logger.warning("%d image(s) of %d not predicted, the first %d named above", len(failed), len(paths), SHOWN)
    return Predictions(paths, log_probs, failed)


def _epoch_flag(text):
    try:
        return parse_epoch(text)
    except UserInputError as exc:  # argparse reports this as a usage error, without a traceback
        raise argparse.ArgumentTypeError(str(exc))


def add_arguments(parser, prediction=True):
    """Flags to choose the trained model (and, with ``prediction``, how to run it)."""
    group = parser.add_argument_group("model")
    group.add_argument("--save-result", required=True, help="the folder `multitask-mx train --save-result` wrote")
    group.add_argument("--save-name", default=None, type=check_save_name,
                       help="checkpoint prefix (default: the one in config.json)")
    group.add_argument("--epoch", type=_epoch_flag, default=DEFAULT_EPOCH,
                       help="epoch number, 'best' ({save-name}-best.params) or 'latest' (the newest on disk); "
                            "default: best where the run recorded one, else the newest (as multitask_mx.load)")
    group.add_argument("--weights", choices=WEIGHTS, default="raw",
                       help="ema: the epoch's moving average of the weights (train --ema); 'best' is already "
                            "whichever of the two validated better")
    if prediction:
        add_prediction_arguments(parser)


def add_prediction_arguments(parser):
    """How to run the model: batch, loader workers, test-time augmentation, devices (PredictSettings)."""
    group = parser.add_argument_group("prediction")
    group.add_argument("--batch-size", type=positive_int, default=None,
                       help="images per forward pass (default: %d, %d with --precision int8)"
                            % (DEFAULT_BATCH, DEFAULT_INT8_BATCH))
    group.add_argument("--data-nthreads", type=non_negative_int, default=None,
                       help="image decoding worker processes (default: number of cores, at most 4)")
    group.add_argument("--tta", choices=["none", "flip"], default="none",
                       help="test-time augmentation: flip averages the probabilities of the image and its mirror")
    group.add_argument("--quiet", action="store_true", help="warnings only on stderr, no progress bar")
    add_max_pixels_flag(group)
    group = parser.add_argument_group("devices")
    group.add_argument("--gpus", default="", help="GPU ids, e.g. 0 or 0,1; '' (default) for CPU")
    group.add_argument("--cpus", type=positive_int, default=1, help="CPU contexts when on CPU")


def model_contexts(settings):
    """Devices from ``--gpus``/``--cpus`` of the PredictSettings."""
    return parse_contexts(settings.gpus, settings.cpus)


def predict_config(settings, precision="fp32"):
    """PredictConfig of the PredictSettings; the default batch follows --precision."""
    batch = settings.batch_size
    if batch is None:
        batch = DEFAULT_INT8_BATCH if precision == "int8" else DEFAULT_BATCH
    workers = _runtime.default_loader_workers() if settings.data_nthreads is None else settings.data_nthreads
    set_max_pixels(settings.max_image_pixels)  # before the loader's workers fork
    return PredictConfig(batch_size=batch, workers=workers, tta=settings.tta, progress=not settings.quiet)

"""What each head looks at: Grad-CAM heat maps (Selvaraju et al. 2017) of a saved multi-task network.

The saved symbol is one graph: image -> trunk -> one logit vector per task. Grad-CAM
needs the gradient of a task's class score with respect to the trunk's last spatial
feature map, and autograd gives gradients only for arrays we hold. So the graph is cut
in two at that feature map (``split_at``): the part up to it, and the rest, in which the
feature map becomes an input variable. Both parts are SymbolBlocks loaded from the same
params file; the feature map between them is an NDArray that can ``attach_grad()``.

The map of one image and task is relu(sum_k w_k A_k), with A_k the feature map's
channels and w_k the mean of d(class logit)/dA_k over its positions; it is upsampled
(bilinear) to the network input and scaled to [0, 1] (minimum 0, maximum 1; a flat map is all 0).

The input is exactly the view ``predict`` feeds the network: the short side resized to
size/0.875, then the centre crop. Heat maps are drawn over that same crop (``display_view``),
decoded again at a display size of at least ``DISPLAY_SIDE`` pixels: what was cut off by the
crop was not seen by the network and is not shown.
"""
import base64
import json
import logging
import math
import os
import re
import threading
import warnings
from dataclasses import dataclass
from typing import List, Sequence

import cv2
import numpy as np

import mxnet as mx
from mxnet import autograd, gluon

from ..atomic import atomic_write_bytes, atomic_write_json
from ..data.images import center_crop, decode_image_bytes, read_checked_image, resize_short
from ..errors import UserInputError
from ..model.pretrained import feature_node_name, internal_output_shapes

_logger = logging.getLogger(__name__)

FEATURE_INPUT = "cam_features"  # the feature map, an input variable of the heads' part of the graph
DISPLAY_SIDE = 224  # short side (pixels) of the picture a heat map is drawn on, when the network's is smaller
OVERLAY_ALPHA = 0.5


# ---------------------------------------------------------------- the graph

def find_feature_layer(symbol, image_shape, input_name="data"):
    """Name of the last spatial feature map before the heads: the layer Grad-CAM explains.

    From the node every head depends on (the trunk's output, found as for classic checkpoints),
    walk back along the data path past global pooling and flatten to the first node whose
    output is N x C x H x W with more than one position. A trunk whose last map is 1 x 1 at this
    image size (MobileNet at 32 px) gives the last map before it that still has several positions.
    """
    nodes = json.loads(symbol.tojson())["nodes"]
    index = {n["name"]: i for i, n in enumerate(nodes)}
    shapes = internal_output_shapes(symbol, image_shape, input_name)
    node = index[feature_node_name(symbol.tojson())]
    while nodes[node]["op"] != "null":
        shape = shapes.get(nodes[node]["name"] + "_output")
        if shape and len(shape) == 4 and shape[2] * shape[3] > 1:
            return nodes[node]["name"]
        node = nodes[node]["inputs"][0][0]
    raise UserInputError("the network has no feature map with more than one position at image shape %s, so a "
                         "heat map cannot say where it looked; use a larger --image-shape in train."
                         % ",".join(map(str, image_shape)))


def split_at(symbol, layer):
    """(symbol up to ``layer``'s output, symbol from it to the heads with input ``FEATURE_INPUT``)."""
    features = symbol.get_internals()[layer + "_output"]
    graph = json.loads(symbol.tojson())
    position = next(i for i, n in enumerate(graph["nodes"]) if n["name"] == layer)
    graph["nodes"][position] = {"op": "null", "name": FEATURE_INPUT, "inputs": []}
    graph["arg_nodes"] = sorted(graph["arg_nodes"] + [position])
    graph.pop("node_row_ptr", None)  # output counts per node: MXNet recomputes them; the cut node's changed
    return features, mx.sym.load_json(json.dumps(graph))  # nodes before the cut are unreachable: dropped


def _symbol_block(outputs, input_name, params_file, ctx):
    with warnings.catch_warnings():  # "Cannot decide type for data": float32, fixed at the first call
        warnings.simplefilter("ignore", UserWarning)
        block = gluon.SymbolBlock(outputs, mx.sym.var(input_name))
    block.collect_params().load(params_file, ctx=ctx, ignore_extra=True)  # each part holds some of them
    block.hybridize(static_alloc=True)
    return block


@dataclass
class TaskCams:
    """Heat maps of one task for a batch: maps N x H x W in [0, 1] (network input size), classes, probs."""

    maps: np.ndarray
    classes: np.ndarray
    probs: np.ndarray


class GradCam:
    """A saved network cut at its last spatial feature map, for Grad-CAM of any task and class."""

    def __init__(self, symbol_file, params_file, image_shape, ctx=None, layer=None, input_name="data"):
        symbol = mx.sym.load(symbol_file)
        self.image_shape = tuple(image_shape)
        self.layer = layer or find_feature_layer(symbol, self.image_shape, input_name)
        features, heads = split_at(symbol, self.layer)
        self.ctx = ctx or mx.cpu()
        self.features = _symbol_block(features, input_name, params_file, self.ctx)
        self.heads = _symbol_block(heads, FEATURE_INPUT, params_file, self.ctx)
        self.feature_shape = internal_output_shapes(symbol, self.image_shape, input_name)[self.layer + "_output"][1:]
        _logger.info("Grad-CAM on layer %s (%s)", self.layer, " x ".join(map(str, self.feature_shape)))

    @classmethod
    def for_model(cls, model, layer=None):
        """GradCam of a ``SavedModel`` (``inference.load_model``): its fp32 weights, on its first device."""
        return cls(model.symbol_file, model.params_file, model.image_shape, model.ctxs[0], layer)

    def _logits(self, features):
        outputs = self.heads(features)
        return [outputs] if isinstance(outputs, mx.nd.NDArray) else list(outputs)

    def explain(self, data, classes=None):
        """One ``TaskCams`` per task for a batch (N x C x H x W float32).

        ``classes``: per task, None (the classes the network predicts) or a class index (or None:
        the predicted one) per image.
        """
        features = self.features(data.as_in_context(self.ctx))
        logits = self._logits(features)
        classes = classes or [None] * len(logits)
        features.attach_grad()
        results = []
        for task, chosen in enumerate(classes):
            predicted = logits[task].argmax(axis=1).asnumpy().astype(int)
            if chosen is not None:
                predicted = np.array([p if c is None else int(c) for c, p in zip(chosen, predicted)])
            picked = mx.nd.array(predicted, ctx=self.ctx)
            with autograd.record(train_mode=False):
                score = mx.nd.pick(self._logits(features)[task], picked, axis=1).sum()
            score.backward()  # images are independent (inference mode): one backward gives each its gradient
            weights = features.grad.mean(axis=(2, 3), keepdims=True)
            cams = mx.nd.relu((weights * features).sum(axis=1)).asnumpy()
            probs = mx.nd.pick(mx.nd.softmax(logits[task], axis=1), picked, axis=1).asnumpy()
            results.append(TaskCams(np.stack([self._upsample(c) for c in cams]), predicted, probs))
        return results

    def _upsample(self, cam):
        cam = cv2.resize(cam, (self.image_shape[2], self.image_shape[1]), interpolation=cv2.INTER_LINEAR)
        low, high = float(cam.min()), float(cam.max())
        # min-max, as pytorch-grad-cam shows maps: with few positions the relu'd map is often high
        # everywhere, and divided by its maximum alone it would colour the whole picture alike
        return (cam - low) / (high - low) if high > low else np.zeros_like(cam)


# ---------------------------------------------------------------- images and pictures

def display_view(img, transform, min_side=DISPLAY_SIDE):
    """The centre crop the network saw (``transform``: an EvalTransform) at >= ``min_side`` pixels."""
    scale = _display_scale(transform, min_side)
    out_hw = tuple(int(round(s * scale)) for s in transform.out_hw)
    return center_crop(resize_short(img, display_view_decode_size(transform, min_side)), out_hw)


def _display_scale(transform, min_side):
    return max(1.0, min_side / float(min(transform.out_hw)))


def overlay(view, cam, alpha=OVERLAY_ALPHA):
    """An RGB uint8 picture: ``cam`` (H x W in [0, 1]) as a JET colour map blended over ``view``."""
    cam = cv2.resize(cam, (view.shape[1], view.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)[:, :, ::-1]
    return np.uint8(np.clip((1 - alpha) * view.astype(np.float32) + alpha * heat, 0, 255))


def caption_text(task, class_name, prob):
    """The caption of one heat map: what it explains."""
    return "%s: %s (p=%.2f)" % (task, class_name, prob)


def captioned(rgb, text):
    """A copy of ``rgb`` with ``text`` in white on a darkened band across its top.

    Drawn inside the picture (not on an added strip) so a heat map keeps the size of the view it covers.
    """
    out = rgb.copy()
    height, width = out.shape[:2]
    band = max(12, height // 12)
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    (text_w, text_h), below = cv2.getTextSize(text, font, 1.0, thickness)
    scale = min((band - 3) / float(text_h + below), (width - 6) / float(max(1, text_w)))
    strip = np.ascontiguousarray((out[:band].astype(np.float32) * 0.3).astype(np.uint8))
    cv2.putText(strip, text, (3, 1 + int(round(text_h * scale))), font, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)  # drawn on the band alone: descenders cannot reach the heat map
    out[:band] = strip
    return out


def png_bytes(rgb):
    """PNG-encoded bytes of an RGB uint8 picture."""
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:
        raise RuntimeError("OpenCV could not encode a %s picture as PNG" % (rgb.shape,))
    return buf.tobytes()


def read_views(path, transform):
    """(network input CHW float32, display view RGB) of an image file, or (None, reason)."""
    img, problem = read_checked_image(path, transform.decode_size)  # decoded as predict decodes it
    if img is None:
        return None, problem
    large, _ = read_checked_image(path, display_view_decode_size(transform))
    return transform(img), display_view(large, transform)


def display_view_decode_size(transform, min_side=DISPLAY_SIDE):
    """Short side to decode an image at for ``display_view``."""
    return int(math.ceil(transform.decode_size * _display_scale(transform, min_side)))


# ---------------------------------------------------------------- the Python API

@dataclass
class Cam:
    """Grad-CAM of one image and task: the map (network input size, [0, 1]), the class and its probability."""

    map: np.ndarray
    class_index: int
    prob: float


def grad_cam(model, image_paths: Sequence[str], task, class_index=None, layer=None, batch_size=32) -> List[Cam]:
    """Grad-CAM maps of ``task`` (a name) for image files, one ``Cam`` each, in order.

    ``model``: a ``SavedModel`` (``inference.load_model``). ``class_index``: None for the class
    the network predicts, an int for every image, or one int per image. An image that cannot
    be read raises UserInputError.
    """
    if task not in model.task_names:
        raise UserInputError("task %r: this model's tasks are %s." % (task, ", ".join(model.task_names)))
    position = model.task_names.index(task)
    paths = list(image_paths)
    if class_index is None or np.ndim(class_index) == 0:
        class_index = [class_index] * len(paths)
    check_class_indices(model.tasks[position], [c for c in class_index if c is not None])
    cams, transform, explainer = [], model.transform(), GradCam.for_model(model, layer)
    for start in range(0, len(paths), batch_size):
        inputs = []
        for path in paths[start:start + batch_size]:
            img, problem = read_checked_image(path, transform.decode_size)
            if img is None:
                raise UserInputError("image %s %s." % (path, problem))
            inputs.append(transform(img))
        classes = [None] * len(model.tasks)
        classes[position] = class_index[start:start + batch_size]
        result = explainer.explain(mx.nd.array(np.stack(inputs)), classes)[position]
        cams += [Cam(m, int(c), float(p)) for m, c, p in zip(result.maps, result.classes, result.probs)]
    return cams


def check_class_indices(task, indices):
    """Refuse class indices outside ``task``'s classes."""
    for index in indices:
        if not 0 <= int(index) < task.num_classes:
            raise UserInputError("class %s of task %s: give 0 to %d." % (index, task.name, task.num_classes - 1))


# ---------------------------------------------------------------- predict --cam DIR

def add_arguments(parser):
    """``predict`` flags of the heat maps."""
    group = parser.add_argument_group("heat maps (Grad-CAM)")
    group.add_argument("--cam", default=None, metavar="DIR",
                       help="write a Grad-CAM heat map per image and task to DIR (PNG, plus cams.json)")
    group.add_argument("--cam-class", action="append", default=[], metavar="[TASK=]CLASS",
                       help="the class a heat map explains: an index or class name, for every task or (TASK=) "
                            "one task; repeatable (default: the predicted class)")


def parse_class_choices(values, model):
    """``--cam-class`` values -> {task name: class index or None (the predicted class)}."""
    chosen = {name: None for name in model.task_names}
    for text in values:
        task, _, value = text.rpartition("=")
        names = [task] if task else model.task_names
        if task and task not in chosen:
            raise UserInputError("--cam-class %s: no task %r; this model's tasks are %s."
                                 % (text, task, ", ".join(model.task_names)))
        for name in names:
            chosen[name] = _class_index(model, name, value, text)
    return chosen


def _class_index(model, task, value, text):
    classes = model.classes[task]
    if value in classes:
        return classes.index(value)
    if value.isdigit() and int(value) < len(classes):
        return int(value)
    raise UserInputError("--cam-class %s: task %s has classes 0 to %d (%s)."
                         % (text, task, len(classes) - 1, ", ".join(classes[:20])))


def file_stems(paths):
    """A distinct file-name stem per image: its own, with -2, -3, ... for repeated ones."""
    taken, stems = set(), []
    for path in paths:
        base = _safe_name(os.path.splitext(os.path.basename(path))[0]) or "image"
        stem, n = base, 1
        while stem in taken:
            n += 1
            stem = "%s-%d" % (base, n)
        taken.add(stem)
        stems.append(stem)
    return stems


def _safe_name(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")


def write_cams(model, items, out_dir, choices=None, predicted=None, batch_size=32, layer=None):
    """Write ``out_dir``/<stem>__<task>.png per readable image and task, and ``out_dir``/cams.json.

    ``items``: ``predictions.Item``s; ``choices``: {task: class index or None} (``parse_class_choices``);
    ``predicted``: {task: top class per image} from predict (None: the network's own). Returns cams.json's
    content. Unreadable images are listed there with their reason.
    """
    os.makedirs(out_dir, exist_ok=True)
    explainer, transform = GradCam.for_model(model, layer), model.transform()
    choices, stems = choices or {}, file_stems([i.path for i in items])
    rows = [None] * len(items)
    for start in range(0, len(items), batch_size):
        views = {n: read_views(items[n].path, transform) for n in range(start, min(len(items), start + batch_size))}
        for n, (data, view) in views.items():
            if data is None:
                rows[n] = {"path": items[n].name, "error": view}
        ok = [n for n, (data, _) in views.items() if data is not None]
        if not ok:
            continue
        classes = [[choices.get(t) if choices.get(t) is not None else
                    (int(predicted[t][n]) if predicted else None) for n in ok] for t in model.task_names]
        results = explainer.explain(mx.nd.array(np.stack([views[n][0] for n in ok])), classes)
        for j, n in enumerate(ok):
            rows[n] = {"path": items[n].name, "cams": {}}
            for task, result in zip(model.tasks, results):
                name = "%s__%s.png" % (stems[n], _safe_name(task.name) or "task")
                index = int(result.classes[j])
                text = caption_text(task.name, model.classes[task.name][index], float(result.probs[j]))
                atomic_write_bytes(os.path.join(out_dir, name),
                                   png_bytes(captioned(overlay(views[n][1], result.maps[j]), text)))
                rows[n]["cams"][task.name] = {"file": name, "class_index": index,
                                              "class": model.classes[task.name][index],
                                              "prob": float(result.probs[j]),
                                              "chosen": "--cam-class" if choices.get(task.name) is not None
                                              else "predicted"}
    document = {"model": model.describe(), "layer": explainer.layer, "feature_map": list(explainer.feature_shape),
                "view": "the centre crop the network saw (short side resized to size/0.875)", "images": rows}
    atomic_write_json(os.path.join(out_dir, "cams.json"), document)
    _logger.info("wrote %d heat map(s) to %s (layer %s)", sum(len(r.get("cams", {})) for r in rows), out_dir,
                 explainer.layer)
    return document


# ---------------------------------------------------------------- serve: POST /predict?cam=1

class ServedCams:
    """Heat maps for the server: the GradCam is built at the first request asking for one.

    Requests take turns (a lock): heat maps are a look on request, not the served throughput,
    and the two cached graphs are not run from several threads at once.
    """

    def __init__(self, model):
        self.model = model
        self._explainer = None
        self._lock = threading.Lock()

    def for_upload(self, image, data, classes):
        """{task: {"index", "class", "prob", "png": base64 PNG}} of an upload's network input ``image``
        (CHW float32), its bytes ``data`` (for the picture) and a class index per task."""
        transform = self.model.transform()
        view = display_view(decode_image_bytes(data, display_view_decode_size(transform)), transform)
        with self._lock:
            if self._explainer is None:
                self._explainer = GradCam.for_model(self.model)
            results = self._explainer.explain(mx.nd.array(image[None]), [[int(c)] for c in classes])
        return {task.name: {"index": int(r.classes[0]), "class": self.model.classes[task.name][int(r.classes[0])],
                            "prob": float(r.probs[0]),
                            "png": base64.b64encode(png_bytes(overlay(view, r.maps[0]))).decode("ascii")}
                for task, r in zip(self.model.tasks, results)}

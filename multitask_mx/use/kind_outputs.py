"""What each kind of head outputs at inference: softmax log-probabilities, a value, or attribute probabilities.

``Predictions.log_probs[k]`` (inference.py) holds, per task kind:
``class`` log-softmax over the classes (N x classes); ``regress`` the predicted value
in the target's own units, de-standardised with the training list's mean and std
(N x 1); ``multilabel`` the log of each attribute's sigmoid probability (N x K), so
``Predictions.probs`` gives probabilities for both class and multilabel tasks.
"""
import logging

import mxnet as mx

_logger = logging.getLogger(__name__)


def head_outputs(outputs, tasks=None):
    """Per-kind inference outputs (see the module doc) of the network's raw head outputs."""
    result = []
    for k, out in enumerate(outputs):
        task = tasks[k] if tasks else None
        kind = task.kind if task is not None else "class"
        if kind == "regress":
            result.append(out.astype("float32") * task.std + task.mean)
        elif kind == "multilabel":
            x = out.astype("float32")  # log(sigmoid(x)) without overflow
            result.append(-(mx.nd.log1p(mx.nd.exp(-mx.nd.abs(x))) + mx.nd.relu(-x)))
        else:
            result.append(mx.nd.log_softmax(out, axis=-1))
    return result


def is_value(task):
    """True for a task whose outputs are values, which flip TTA averages as they are (not as probabilities)."""
    return task is not None and task.kind == "regress"


def output_symbol(logits, task, name):
    """The exported output of one head: softmax probabilities, the de-standardised value, or sigmoids."""
    if task.kind == "regress":  # value = standardised output * std + mean, baked into the graph
        scaled = mx.sym._internal._mul_scalar(logits, scalar=task.std)  # scalar ops: ONNX has them
        return mx.sym._internal._plus_scalar(scaled, scalar=task.mean, name=name)
    if task.kind == "multilabel":
        return mx.sym.sigmoid(logits, name=name)
    return mx.sym.softmax(logits, axis=-1, name=name)


def output_arrays(outputs, tasks):
    """What output_symbol gives, computed from the network's NDArray outputs (numpy arrays per task)."""
    out = []
    for o, task in zip(outputs, tasks):
        if task.kind == "regress":
            out.append((o * task.std + task.mean).asnumpy())
        else:
            out.append((mx.nd.sigmoid(o) if task.kind == "multilabel" else mx.nd.softmax(o, axis=-1)).asnumpy())
    return out


def output_description(task):
    """The export's words for one head's output (preprocess.json)."""
    return {"class": "softmax probabilities",
            "regress": "value (mean %.6g + std %.6g x the head's standardised output, baked in)" % (task.mean, task.std),
            "multilabel": "sigmoid probability per attribute (present at 0.5 or more)"}[task.kind]

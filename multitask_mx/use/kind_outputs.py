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

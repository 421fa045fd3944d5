"""Splitting batches across several (CPU) contexts, including batches smaller than the device count."""
import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from multitask_mx import devices
from multitask_mx.errors import UserInputError


def test_cpu_contexts_from_flags():
    assert devices.parse_contexts("", 2) == [mx.cpu(0), mx.cpu(1)]
    assert devices.parse_contexts("cpu") == [mx.cpu(0)]


def test_gpu_request_without_gpus_says_what_to_do():
    if mx.context.num_gpus():
        pytest.skip("this machine has GPUs")
    with pytest.raises(UserInputError, match="--gpus ''"):
        devices.parse_contexts("0,1")
    with pytest.raises(UserInputError, match="GPU ids"):
        devices.parse_contexts("zero")


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_split_pads_small_batches_and_masks_the_padding(size):
    ctxs = [mx.cpu(0), mx.cpu(1), mx.cpu(2)]
    x = mx.nd.arange(size).reshape((size, 1))
    y = mx.nd.arange(size)
    parts, valids = devices.split_batch([x, y], ctxs)
    assert len(parts) == 3 and all(p[0].shape[0] >= 1 for p in parts)
    mask = np.concatenate([v.asnumpy() for v in valids])
    labels = np.concatenate([p[1].asnumpy() for p in parts])
    assert mask.sum() == size
    np.testing.assert_array_equal(labels[mask == 1], np.arange(size))
    assert [p[0].context for p in parts] == ctxs

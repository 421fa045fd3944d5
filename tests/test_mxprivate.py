"""Each private MXNet/GluonCV name that multitask_mx/mxprivate.py reads works on a real object of MXNet 1.9.1.

An MXNet upgrade that renames one fails here, by the accessor's name.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import multitask_mx  # noqa: F401  (numpy shim before mxnet)
import mxnet as mx
from mxnet import gluon

from multitask_mx import mxprivate


def _net(ctxs, defer=False):
    net = gluon.nn.Dense(3, in_units=0 if defer else 4)
    net.initialize(mx.init.Xavier(), ctx=ctxs)
    return net


def _trainer(ctxs, kvstore="device", update_on_kvstore=False):
    net = _net(ctxs)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9,
                                                          "rescale_grad": 0.5},
                            kvstore=kvstore, update_on_kvstore=update_on_kvstore)
    return net, trainer


TWO_CPUS = [mx.cpu(0), mx.cpu(1)]


def test_trainer_kvstore_and_readiness():
    net, trainer = _trainer(TWO_CPUS)
    assert mxprivate.trainer_kvstore(trainer) is None  # created lazily
    assert len(mxprivate.pending_params(trainer)) == 2  # weight and bias
    mxprivate.init_trainer_kvstore(trainer)
    assert mxprivate.trainer_kvstore(trainer).type == "device"
    mxprivate.make_trainer_ready(trainer)
    assert mxprivate.pending_params(trainer) == []
    assert len(mxprivate.trainer_updaters(trainer)) == 2  # one per device
    assert mxprivate.updates_on_kvstore(trainer) is False and mxprivate.trainer_is_distributed(trainer) is False


def test_trainer_grad_scale_and_param_key():
    net, trainer = _trainer([mx.cpu()])
    assert mxprivate.trainer_grad_scale(trainer) == 0.5
    keys = sorted(mxprivate.param_key(trainer, p) for p in net.collect_params().values())
    assert keys == [0, 1]


def test_set_pending_params():
    net, trainer = _trainer([mx.cpu()])
    mxprivate.set_pending_params(trainer, [])
    assert mxprivate.pending_params(trainer) == []


def test_set_trainer_optimizer():
    net, trainer = _trainer([mx.cpu()])
    optimizer = mx.optimizer.create("sgd", learning_rate=0.25)
    mxprivate.set_trainer_optimizer(trainer, optimizer)
    assert trainer.optimizer is optimizer and trainer.learning_rate == 0.25
    assert set(optimizer.param_dict.values()) == set(net.collect_params().values())


def test_deferred_parameters():
    net = _net([mx.cpu()], defer=True)
    assert mxprivate.is_deferred(net.weight)
    net.weight.shape = (3, 4)  # the shape is known now; the arrays are made on request
    mxprivate.finish_deferred_init(net.weight)
    assert not mxprivate.is_deferred(net.weight) and net.weight.data().shape == (3, 4)


def test_has_traced_graph():
    block = mx.gluon.nn.HybridSequential()
    block.add(mx.gluon.nn.Dense(2, in_units=3))
    block.initialize()
    block.hybridize()
    assert not mxprivate.has_traced_graph(block)
    block(mx.nd.ones((1, 3)))
    assert mxprivate.has_traced_graph(block)


def test_structural_params():
    block = gluon.nn.HybridSequential()
    block.add(gluon.nn.Dense(2, in_units=3))
    names = sorted(mxprivate.structural_params(block))
    assert names == ["0.bias", "0.weight"]


def test_kvstore_barrier_and_barrier_before_exit_on_a_local_kvstore():
    kv = mx.kv.create("local")
    mxprivate.kv_barrier(kv)  # one process: returns at once
    mxprivate.set_barrier_before_exit(kv, False)
    mxprivate.set_barrier_before_exit(kv, True)


def test_run_kvstore_node_returns_in_a_worker():
    # Without DMLC_ROLE a process is a worker: the call must return (a scheduler/server would serve and exit).
    code = "import multitask_mx.mxprivate as p; p.run_kvstore_node(); print('returned')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMLC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "returned" in out.stdout, out.stderr


def test_loader_dataset():
    dataset = gluon.data.ArrayDataset(np.arange(4))
    assert mxprivate.loader_dataset(gluon.data.DataLoader(dataset, batch_size=2)) is dataset


def test_gluoncv_store_table():
    pytest.importorskip("gluoncv")
    sha1, url_format = mxprivate.gluoncv_store_table()
    assert len(sha1["resnet18_v1"]) == 40 and "{repo_url}" in url_format


def test_child_blocks_replace_child_and_layer_options():
    block = gluon.nn.HybridSequential()
    block.add(gluon.nn.BatchNorm(), gluon.nn.Activation("relu"))
    (_, bn), (key, act) = mxprivate.child_blocks(block)
    assert mxprivate.activation_type(act) == "relu"
    assert mxprivate.batchnorm_options(bn)["axis"] == 1
    dense = gluon.nn.Dense(2)
    mxprivate.replace_child(block, key, dense)
    assert [child for _, child in mxprivate.child_blocks(block)] == [bn, dense]

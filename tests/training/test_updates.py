"""On CPUs `train` updates each parameter with its own operator: the same weights as MXNet's grouped update."""
import mxnet as mx
import numpy as np
from mxnet import gluon

from multitask_mx import api
from multitask_mx.model import network as model
from multitask_mx.data.tasks import build_tasks
from multitask_mx.training import pipeline

SHAPES = [(64, 3, 7, 7), (64,), (64,), (256, 64, 1, 1), (256,), (4, 2048), (4,), (3, 3, 3, 3), (1,)]


def _arrays(seed):
    rng = np.random.RandomState(seed)
    return [mx.nd.array(rng.uniform(-1, 1, shape)) for shape in SHAPES]


def _updated(group, steps=3):
    """Weights and momentum after ``steps`` SGD updates of SHAPES' arrays, ``group`` arrays per operator."""
    optimizer = mx.optimizer.create("sgd", learning_rate=0.1, momentum=0.9, wd=1e-4, rescale_grad=1 / 16.)
    optimizer.set_lr_mult({3: 0.1})
    optimizer.set_wd_mult({1: 0.0})
    optimizer.idx2name = {i: "p%d" % i for i in range(len(SHAPES))}
    if group == 1:
        pipeline.update_parameters_one_by_one(optimizer)
    else:
        optimizer.aggregate_num = group
    updater = mx.optimizer.get_updater(optimizer)
    weights = _arrays(0)
    for step in range(steps):
        updater(list(range(len(SHAPES))), _arrays(step + 1), weights)
    states = [updater.states[i] for i in range(len(SHAPES))]
    return [w.asnumpy() for w in weights], [s.asnumpy() for s in states]


def test_one_by_one_gives_the_grouped_update_bit_for_bit():
    grouped_weights, grouped_momentum = _updated(4)
    single_weights, single_momentum = _updated(1)
    for a, b in zip(grouped_weights + grouped_momentum, single_weights + single_momentum):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(grouped_weights[0], _arrays(0)[0].asnumpy())  # the updates did happen


def test_only_sgd_is_changed():
    sgd, adam, lamb = mx.optimizer.create("sgd", momentum=0.9), mx.optimizer.create("adam"), mx.optimizer.create("lamb")
    assert sgd.aggregate_num > 1 and adam.aggregate_num == 0 and lamb.aggregate_num > 1
    for optimizer in (sgd, adam, lamb):
        pipeline.update_parameters_one_by_one(optimizer)
    assert (sgd.aggregate_num, adam.aggregate_num, lamb.aggregate_num) == (1, 0, 45)


def _started_trainer(ctxs):
    args = api.parse_flags("train", data_train="unused.lst", save_result="unused", lr=0.01)
    tasks = build_tasks([4])
    net = model.build_net(model.TrunkSpec("resnet18_v1"), tasks, ctxs, (3, 32, 32))
    trainer, _ = pipeline.ready_trainer(args, net, mx.kv.create("device"), (10, 16), (), 0.01, None, "float32")
    return trainer


def test_train_on_a_cpu_updates_one_by_one():
    trainer = _started_trainer([mx.cpu()])
    assert isinstance(trainer, gluon.Trainer)
    assert trainer.optimizer.aggregate_num == 1


def test_several_cpu_contexts_also_update_one_by_one():
    assert _started_trainer([mx.cpu(0), mx.cpu(1)]).optimizer.aggregate_num == 1

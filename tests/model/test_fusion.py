"""BatchNorm+ReLU fusion of a checkpoint trunk (model/fusion.py): same numbers, plain saved graphs."""
import json

import numpy as np
import pytest

import multitask_mx  # noqa: F401  (numpy shim before mxnet)
import mxnet as mx
from mxnet import autograd, gluon

from conftest import CLASSIC_SYMBOL
from multitask_mx.model import network as model
from multitask_mx.data.tasks import build_tasks
from multitask_mx import mxprivate
from multitask_mx.model import fusion
from multitask_mx.model.pretrained import load_classic_checkpoint

SHAPE = (3, 32, 32)


def _classic_trunk_spec(classic_checkpoint):
    features, input_name, params, _ = load_classic_checkpoint(classic_checkpoint, 0)
    return model.TrunkSpec(network="symbol", symbol_json=features.tojson(), input_name=input_name), params


def _trained_once(net, x, labels):
    """(outputs, {param: gradient}, {param: value after one SGD step}) of one training step."""
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
    with autograd.record():
        outputs = net(x)
        loss = sum(gluon.loss.SoftmaxCrossEntropyLoss()(out, labels) for out in outputs)
    loss.backward()
    grads = {name: p.grad().asnumpy() for name, p in net.collect_params().items() if p.grad_req != "null"}
    trainer.step(x.shape[0])
    values = {name: p.data().asnumpy() for name, p in net.collect_params().items()}
    return [out.asnumpy() for out in outputs], grads, values


@pytest.mark.parametrize("trunk,pairs", [("classic", 50), ("resnet18_v1", 9)])
def test_fused_trunk_trains_exactly_like_the_plain_one(trunk, pairs, classic_checkpoint):
    spec = _classic_trunk_spec(classic_checkpoint)[0] if trunk == "classic" else model.TrunkSpec(trunk)
    tasks = build_tasks([4])
    x = mx.nd.random.uniform(-1, 1, shape=(4,) + SHAPE)
    labels = mx.nd.array([0, 1, 2, 3])
    runs, weights = {}, None
    for fused in (False, True):
        net = model.MultiTaskNet(spec, [t.num_classes for t in tasks], [t.name for t in tasks],
                                 fuse_for_shape=SHAPE if fused else None)
        model.initialize_net(net, [mx.cpu()], SHAPE)
        structural = mxprivate.structural_params(net)  # names by position: the same in both networks
        if weights is None:
            weights = {name: p.data().copy() for name, p in structural.items()}
        for name, p in structural.items():
            p.set_data(weights[name])
        net.hybridize(static_alloc=True, static_shape=True)
        assert net(mx.sym.var("data"))[0].tojson().count(fusion.FUSED_OP) == (pairs if fused else 0)
        out, grads, values = _trained_once(net, x, labels)
        runs[fused] = (out, _by_position(net, grads), _by_position(net, values), net(x)[0].asnumpy())
    (plain_out, plain_grads, plain_values, plain_eval), (out, grads, values, evaluated) = runs[False], runs[True]
    np.testing.assert_array_equal(plain_out[0], out[0])
    assert plain_grads.keys() == grads.keys() and len(grads) > 20
    for name in grads:
        np.testing.assert_array_equal(plain_grads[name], grads[name], err_msg=name)
    for name in values:  # weights after the update and BatchNorm running statistics
        np.testing.assert_array_equal(plain_values[name], values[name], err_msg=name)
    np.testing.assert_array_equal(plain_eval, evaluated)  # inference mode uses the running statistics


def _by_position(net, arrays):
    """``arrays`` keyed by parameter name, re-keyed by the parameters' structural names."""
    return {position: arrays[p.name] for position, p in mxprivate.structural_params(net).items() if p.name in arrays}


def test_fuse_then_unfuse_gives_back_the_same_graph():
    symbol = mx.sym.load(CLASSIC_SYMBOL)
    fused, pairs = fusion.fuse_bn_relu(symbol, "data", (3, 224, 224))
    assert pairs == 50
    text = fused.tojson()
    assert text.count(fusion.FUSED_OP) == 50 and '"relu"' not in text
    assert mx.sym.load_json(fusion.unfuse_json(text)).tojson() == symbol.tojson()


def test_only_pairs_the_fused_operator_can_run_are_fused():
    data = mx.sym.var("data")
    conv = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), name="conv")
    good = mx.sym.Activation(mx.sym.BatchNorm(conv, name="bn_good"), act_type="relu", name="relu_good")
    shared = mx.sym.BatchNorm(good, name="bn_shared")  # read by a ReLU and by the sum: its output is needed
    both = mx.sym.Activation(shared, act_type="relu", name="relu_shared") + shared
    sigmoid = mx.sym.Activation(mx.sym.BatchNorm(both, name="bn_sigmoid"), act_type="sigmoid", name="sig")
    dense = mx.sym.FullyConnected(sigmoid, num_hidden=8, name="fc")
    flat = mx.sym.Activation(mx.sym.BatchNorm(dense, name="bn_2d"), act_type="relu", name="relu_2d")  # 2-D input
    fused, pairs = fusion.fuse_bn_relu(flat, "data", (3, 8, 8))
    assert pairs == 1
    ops = {node["name"]: node["op"] for node in json.loads(fused.tojson())["nodes"]}
    assert ops["bn_good"] == fusion.FUSED_OP and "relu_good" not in ops
    assert ops["bn_shared"] == ops["bn_sigmoid"] == ops["bn_2d"] == "BatchNorm"
    assert fusion.fuse_bn_relu(flat, "data", (3, 0, 8))[1] == 0  # shapes that do not infer: nothing fused


def test_fusion_is_wanted_only_where_its_kernels_run(monkeypatch):
    monkeypatch.delenv("MXNET_DISABLE_MKLDNN_BN_RELU_OPT", raising=False)
    assert fusion.fusion_wanted([mx.cpu()])
    assert not fusion.fusion_wanted([mx.gpu(0)])
    assert not fusion.fusion_wanted([mx.cpu()], amp_dtype="bfloat16")
    monkeypatch.setenv("MXNET_DISABLE_MKLDNN_BN_RELU_OPT", "1")
    assert not fusion.fusion_wanted([mx.cpu()])


def test_a_symbol_file_without_fused_nodes_is_left_byte_for_byte(tmp_path):
    path = tmp_path / "net-symbol.json"
    path.write_text(open(CLASSIC_SYMBOL).read())
    before = path.stat().st_mtime_ns
    fusion.unfuse_symbol_file(str(path))
    assert path.stat().st_mtime_ns == before and path.read_text() == open(CLASSIC_SYMBOL).read()


def test_build_net_fuses_a_checkpoint_trunk_on_cpu(classic_checkpoint, monkeypatch):
    monkeypatch.delenv("MXNET_DISABLE_MKLDNN_BN_RELU_OPT", raising=False)
    spec, _ = _classic_trunk_spec(classic_checkpoint)
    net = model.build_net(spec, build_tasks([4]), [mx.cpu()], SHAPE)
    assert net(mx.sym.var("data"))[0].tojson().count(fusion.FUSED_OP) == 50
    monkeypatch.setenv("MXNET_DISABLE_MKLDNN_BN_RELU_OPT", "1")
    net = model.build_net(spec, build_tasks([4]), [mx.cpu()], SHAPE)
    assert fusion.FUSED_OP not in net(mx.sym.var("data"))[0].tojson()


def test_export_writes_the_graph_the_unfused_network_writes(tmp_path, monkeypatch):
    exported = {}
    for switch in ("0", "1"):  # fused, then unfused (MXNet's switch)
        monkeypatch.setenv("MXNET_DISABLE_MKLDNN_BN_RELU_OPT", switch)
        net = model.build_net(model.TrunkSpec("resnet18_v1"), build_tasks([4]), [mx.cpu()], SHAPE)
        net.hybridize()
        net(mx.nd.zeros((1,) + SHAPE))
        assert (fusion.FUSED_OP in net(mx.sym.var("data"))[0].tojson()) == (switch == "0")
        net.export(str(tmp_path / switch))
        graph = json.loads(mx.sym.load(str(tmp_path / ("%s-symbol.json" % switch))).tojson())
        for node in graph["nodes"]:  # an input's third field counts traces of a mutated variable: not the graph
            node["inputs"] = [entry[:2] for entry in node["inputs"]]
        exported[switch] = graph
    assert exported["0"] == exported["1"]


def test_global_pooling_as_a_mean_trains_like_the_pooling_and_is_saved_as_it(tmp_path):
    tasks, runs, weights, graphs = build_tasks([4]), {}, None, {}
    x, labels = mx.nd.random.uniform(-1, 1, shape=(4,) + SHAPE), mx.nd.array([0, 1, 2, 3])
    for mean_pool in (False, True):
        net = model.MultiTaskNet(model.TrunkSpec("cifar_resnet20_v1"), [t.num_classes for t in tasks],
                                 [t.name for t in tasks], mean_pool=mean_pool)
        model.initialize_net(net, [mx.cpu()], SHAPE)
        structural = mxprivate.structural_params(net)
        weights = weights or {name: p.data().copy() for name, p in structural.items()}
        for name, p in structural.items():
            p.set_data(weights[name])
        net.hybridize(static_alloc=True, static_shape=True)
        traced = json.loads(net(mx.sym.var("data"))[0].tojson())["nodes"]
        assert sum(n["op"] == "mean" for n in traced) == int(mean_pool)
        out, grads, values = _trained_once(net, x, labels)
        runs[mean_pool] = (out[0], _by_position(net, grads), _by_position(net, values))
        net.export(str(tmp_path / str(mean_pool)))
        graph = json.loads(mx.sym.load(str(tmp_path / ("%s-symbol.json" % mean_pool))).tojson())
        for node in graph["nodes"]:  # an input's third field counts traces of a mutated variable: not the graph
            node["inputs"] = [entry[:2] for entry in node["inputs"]]
        graphs[mean_pool] = graph
    np.testing.assert_allclose(runs[False][0], runs[True][0], rtol=1e-5, atol=1e-6)
    assert runs[False][1].keys() == runs[True][1].keys() and len(runs[True][1]) > 20
    for name in runs[True][1]:  # the same sums in another order: equal to float32 rounding
        plain = runs[False][1][name]
        np.testing.assert_allclose(plain, runs[True][1][name], rtol=1e-4, atol=1e-4 * np.abs(plain).max(), err_msg=name)
    assert graphs[False] == graphs[True]  # saved with the GlobalAvgPool2D's Pooling node, attributes and name


def test_build_net_runs_the_global_pooling_as_a_mean_only_where_it_fuses(monkeypatch):
    for switch, means in (("0", 1), ("1", 0)):
        monkeypatch.setenv("MXNET_DISABLE_MKLDNN_BN_RELU_OPT", switch)
        net = model.build_net(model.TrunkSpec("resnet18_v1"), build_tasks([4]), [mx.cpu()], SHAPE)
        nodes = json.loads(net(mx.sym.var("data"))[0].tojson())["nodes"]
        assert sum(n["op"] == "mean" for n in nodes) == means

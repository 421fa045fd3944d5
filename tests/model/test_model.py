"""The network: trunk + heads, pretrained loading, structural cut of checkpoints."""

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from conftest import CLASSIC_SYMBOL, make_classic_checkpoint
from multitask_mx.model import network as model, pretrained
from multitask_mx.data import tasks
from multitask_mx.errors import UserInputError

TASKS = tasks.build_tasks([4])


def test_forward_gives_one_logit_array_per_task():
    net = model.build_net(model.TrunkSpec("resnet18_v1"), TASKS, [mx.cpu()], (3, 32, 32), head_hidden=16)
    net.hybridize()
    out = net(mx.nd.random.uniform(shape=(3, 3, 32, 32)))
    assert [o.shape for o in out] == [(3, 4), (3, 2)]
    names = list(net.collect_params().keys())
    assert any(n.startswith("multitask_head_label_") for n in names)
    assert any(n.startswith("multitask_head_label_gt0_") for n in names)
    assert sum("head_label_dense" in n for n in names) == 4  # hidden + output layer, weight + bias


def test_unknown_network_lists_close_names():
    with pytest.raises(UserInputError, match="resnet50_v1"):
        model.build_net(model.TrunkSpec("resnet50_v9"), TASKS, [mx.cpu()], (3, 32, 32))


def test_classic_symbol_is_cut_at_flatten0_and_needs_raw_pixels():
    text = mx.sym.load(CLASSIC_SYMBOL).tojson()
    assert pretrained.feature_node_name(text) == "flatten0"
    assert pretrained.detect_normalization(text, "data") == "raw"


def test_multi_head_symbol_is_cut_at_the_shared_node():
    data = mx.sym.var("data")
    feat = mx.sym.flatten(mx.sym.Pooling(mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), name="c"),
                                         global_pool=True, kernel=(1, 1), pool_type="avg"), name="feat")
    heads = [mx.sym.FullyConnected(mx.sym.Activation(mx.sym.FullyConnected(feat, num_hidden=8, name="h%d" % i),
                                                     act_type="relu"), num_hidden=3, name="o%d" % i)
             for i in range(2)]
    assert pretrained.feature_node_name(mx.sym.Group(heads).tojson()) == "feat"
    # one head with a hidden layer: walk back through the classifier chain
    assert pretrained.feature_node_name(heads[0].tojson()) == "feat"
    assert pretrained.detect_normalization(heads[0].tojson(), "data") == "imagenet"


def test_classic_checkpoint_loads_into_symbol_trunk(tmp_path):
    prefix = make_classic_checkpoint(tmp_path / "resnet-50")
    spec, norm, params = model.resolve_trunk(None, prefix, 0, "auto")
    assert spec.from_symbol and norm == "raw" and "fc1_weight" in params
    net = model.build_net(spec, TASKS, [mx.cpu()], (3, 32, 32))
    model.load_pretrained_trunk(net, prefix, params)
    np.testing.assert_array_equal(net.trunk.collect_params()["conv0_weight"].data().asnumpy(),
                                  params["conv0_weight"].asnumpy())
    out = net(mx.nd.random.uniform(0, 255, shape=(2, 3, 32, 32)))
    assert [o.shape for o in out] == [(2, 4), (2, 2)]


def test_missing_checkpoint_files_are_named(tmp_path):
    with pytest.raises(UserInputError, match="resnet-50-0000.params does not exist"):
        make = str(tmp_path / "resnet-50")
        open(make + "-symbol.json", "w").write(mx.sym.load(CLASSIC_SYMBOL).tojson())
        model.resolve_trunk(None, make, 0, "auto")


def test_params_with_wrong_shapes_are_listed(tmp_path):
    from gluoncv.model_zoo import get_model
    small = get_model("resnet18_v1", pretrained=False, classes=10)
    small.initialize()
    small(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path / "r18.params")
    small.save_parameters(path)
    net = model.build_net(model.TrunkSpec("resnet34_v1"), TASKS, [mx.cpu()], (3, 32, 32))
    with pytest.raises(UserInputError) as err:
        model.load_pretrained_trunk(net, path)
    assert "missing in file" in str(err.value) and "--network" in str(err.value)


def test_normalization_flag_overrides_detection(tmp_path, caplog):
    prefix = make_classic_checkpoint(tmp_path / "resnet-50")
    _, norm, _ = model.resolve_trunk(None, prefix, 0, "imagenet")
    assert norm == "imagenet"
    assert "overrides" in caplog.text

"""Freezing, unfreezing from a stage, lr multipliers."""
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from multitask_mx.model import finetune, network as model
from multitask_mx.data import tasks
from multitask_mx.errors import UserInputError
from multitask_mx.model.settings import ModelSettings


def _net():
    return model.build_net(model.TrunkSpec("resnet18_v1"), tasks.build_tasks([3]), [mx.cpu()], (3, 32, 32))


def _cfg(lr=None, **kw):
    return finetune.FinetuneConfig.settle(_model(**kw), lr)


def _model(**kw):
    """ModelSettings at the flags' defaults, with ``kw`` given."""
    return ModelSettings(**dict(ModelSettings.defaults(), **kw))


def test_freeze_epochs_then_unfreeze_from_stage():
    net, cfg = _net(), _cfg(freeze_epochs=1, unfreeze_from="stage4")
    finetune.apply_freezing(net, cfg, 1)
    assert all(p.grad_req == "null" for p in net.trunk_params())
    assert all(p.grad_req == "write" for p in net.head_params().values())
    assert finetune.apply_freezing(net, cfg, 2)
    reqs = {p.name: p.grad_req for p in net.trunk_params()}
    assert all(r == "write" for n, r in reqs.items() if "stage4" in n)
    assert all(r == "null" for n, r in reqs.items() if "stage1" in n)
    # BatchNorm running statistics never get a gradient
    assert all(p.grad_req == "null" for n, p in net.collect_params().items() if "running" in n)


def test_unknown_stage_lists_stages():
    with pytest.raises(UserInputError, match="stage1, stage2, stage3, stage4"):
        finetune.apply_freezing(_net(), _cfg(unfreeze_from="stage9"), 1)


def test_conflicting_flags():
    with pytest.raises(UserInputError):
        _cfg(freeze_trunk=True, unfreeze_from="stage4")
    with pytest.raises(UserInputError):
        _cfg(freeze_trunk=True, freeze_epochs=2)


def test_trunk_lr_mult_and_no_wd():
    net = _net()
    finetune.apply_rate_multipliers(net, _cfg(trunk_lr_mult=0.1, no_wd_bias_bn=True))
    assert all(p.lr_mult == 0.1 for p in net.trunk_params())
    assert all(p.lr_mult == 1.0 for p in net.head_params().values())
    params = net.collect_params()
    assert all(p.wd_mult == 0.0 for n, p in params.items() if n.endswith(("bias", "gamma", "beta")))
    assert any(p.wd_mult == 1.0 for n, p in params.items() if n.endswith("weight"))


def test_trunk_lr_mult_scales_the_real_sgd_update():
    from mxnet import autograd, gluon
    from multitask_mx.training.loop import MultiTaskLoss

    def update_sizes(mult, head=None):
        mx.random.seed(3)
        net = _net()
        finetune.apply_rate_multipliers(net, _cfg(trunk_lr_mult=mult, head_lr_mult=head))
        trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "wd": 0.0})
        conv = net.trunk_params()[0]  # the first convolution's weight
        head = list(net.head_params().values())[0]
        before = conv.data().asnumpy().copy(), head.data().asnumpy().copy()
        x = mx.nd.random.uniform(shape=(4, 3, 32, 32))
        labels = mx.nd.array([[0, 0], [1, 1], [2, 1], [1, 1]], dtype="int32")
        with autograd.record():
            total = MultiTaskLoss([3, 2])(net(x), labels, mx.nd.ones((4,)))[0]
        total.backward()
        trainer.step(4)
        return (abs(conv.data().asnumpy() - before[0]).sum(), abs(head.data().asnumpy() - before[1]).sum())

    full, tenth, none = update_sizes(1.0), update_sizes(0.1), update_sizes(0.0)
    heads_4x = update_sizes(1.0, head=4.0)
    assert full[0] > 0 and none[0] == 0 and none[1] > 0
    assert abs(tenth[0] / full[0] - 0.1) < 1e-3   # same gradient, a tenth of the step
    assert abs(tenth[1] / full[1] - 1.0) < 1e-3   # the heads keep the full rate
    assert abs(heads_4x[1] / full[1] - 4.0) < 1e-3  # --head-lr-mult 4: four times the heads' step
    assert abs(heads_4x[0] / full[0] - 1.0) < 1e-3  # and the trunk's unchanged


def test_default_head_lr_mult_follows_the_situation():
    assert _cfg().head_lr_mult == 1.0  # from scratch
    assert _cfg(model="trunk.params").head_lr_mult == finetune.FINETUNE_HEAD_LR_MULT == 4.0
    assert _cfg(pretrained=True).head_lr_mult == 4.0
    assert _cfg(model="trunk.params", freeze_trunk=True).head_lr_mult == 1.0  # only the heads learn
    assert _cfg(model="trunk.params", head_lr_mult=1.0).head_lr_mult == 1.0  # the flag wins
    assert _cfg(head_lr_mult=2.5).head_lr_mult == 2.5
    assert _cfg(model="trunk.params", lr=0.01).head_lr_mult == 1.0  # a chosen lr applies to every layer
    assert _cfg(model="trunk.params", lr="auto").head_lr_mult == 1.0
    resumed = finetune.FinetuneConfig.settle(_model(model="trunk.params"), None, 1.0, "resumed")
    assert (resumed.head_lr_mult, resumed.head_lr_reason) == (1.0, "resumed")  # the caller's value over the default rule
    assert finetune.FinetuneConfig.settle(_model(model="t", head_lr_mult=2.0), None, 1.0, "x").head_lr_mult == 2.0

"""Freezing, unfreezing from a stage, lr multipliers."""
import argparse

import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from multitask_mx import finetune, model, tasks
from multitask_mx.errors import UserInputError


def _net():
    return model.build_net(model.TrunkSpec("resnet18_v1"), tasks.build_tasks([3]), [mx.cpu()], (3, 32, 32))


def _cfg(**kw):
    args = dict(freeze_trunk=False, unfreeze_from=None, freeze_epochs=0, trunk_lr_mult=1.0, no_wd_bias_bn=False)
    args.update(kw)
    return finetune.FinetuneConfig.from_args(argparse.Namespace(**args))


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

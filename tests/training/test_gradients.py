"""Task gradients on the trunk: PCGrad's projection, cosine/norm statistics, the per-task backward step."""
import json
import math
import os

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from mxnet import gluon
from multitask_mx.data import tasks
from multitask_mx.model import network as model
from multitask_mx.training import gradients
from multitask_mx.training.loop import LoopConfig, MultiTaskLoss, train_step
from multitask_mx.training.metrics import TaskMetrics

from conftest import make_images, run_cli, write_list

TWO_TASKS = tasks.build_tasks([4, 2], ["a", "b"])


def nd(values):
    return mx.nd.array(values, dtype="float32")


def test_pcgrad_projects_conflicting_gradients_only():
    g1, g2 = nd([1.0, 0.0]), nd([-1.0, 1.0])  # dot -1: they conflict
    p1, p2 = [v.asnumpy() for v in gradients.project_conflicting([g1, g2], [0, 1])]
    np.testing.assert_allclose(p1, [0.5, 0.5], atol=1e-6)  # g1 - (-1 / 2) g2
    np.testing.assert_allclose(p2, [0.0, 1.0], atol=1e-6)  # g2 - (-1 / 1) g1
    assert abs(float(np.dot(p1, [-1.0, 1.0]))) < 1e-6 and abs(float(np.dot(p2, [1.0, 0.0]))) < 1e-6
    np.testing.assert_allclose(gradients.pcgrad([g1, g2], [1, 0]).asnumpy(), [0.5, 1.5], atol=1e-6)
    agree = [nd([1.0, 0.2]), nd([0.5, 1.0])]  # dot > 0: left as they are, the update is the plain sum
    for before, after in zip(agree, gradients.project_conflicting(agree, [1, 0])):
        np.testing.assert_array_equal(after.asnumpy(), before.asnumpy())
    np.testing.assert_allclose(gradients.pcgrad(agree, [0, 1]).asnumpy(), [1.5, 1.2], atol=1e-6)


def test_pcgrad_with_three_tasks_leaves_no_conflict_with_the_originals():
    rng = np.random.RandomState(0)
    vectors = [nd(rng.normal(size=50)) for _ in range(3)]
    vectors[1] = -vectors[0] + nd(rng.normal(scale=0.1, size=50))
    projected = gradients.project_conflicting(vectors, [2, 0, 1])
    # the last projection of each task is against the last other task in the order: no conflict remains there
    assert float(mx.nd.sum(projected[0] * vectors[1]).asscalar()) >= -1e-4
    assert float(mx.nd.sum(projected[1] * vectors[0]).asscalar()) >= -1e-4


def test_cosines_and_norms():
    cos, norms = gradients.cosines_and_norms([nd([3.0, 4.0]), nd([-3.0, -4.0]), nd([4.0, -3.0]), nd([0.0, 0.0])])
    cos = cos.asnumpy()
    np.testing.assert_allclose(norms.asnumpy(), [5, 5, 5, 0], atol=1e-6)
    np.testing.assert_allclose([cos[0, 0], cos[0, 1], cos[0, 2], cos[0, 3]], [1, -1, 0, 0], atol=1e-6)
    assert np.all(np.abs(cos) <= 1 + 1e-6)


def _step(method, stats_every, seed=0):
    """One train_step of resnet18_v1 at 32 px from fixed weights; returns (trunk weights, heads, tracker)."""
    mx.random.seed(seed)
    net = model.build_net(model.TrunkSpec("resnet18_v1"), TWO_TASKS, [mx.cpu()], (3, 32, 32))
    loss_fn = MultiTaskLoss([4, 2])
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "wd": 0.0})
    cfg = gradients.GradientConfig(stats_every, method)
    tracker = gradients.TaskGradients(cfg, ["a", "b"], net.trunk_params(),
                                      [p for p in net.head_params().values()], seed=0) if cfg.active else None
    mx.random.seed(7)
    x = mx.nd.random.uniform(-1, 1, shape=(6, 3, 32, 32))
    labels = mx.nd.array([[0, 1], [1, 0], [2, 1], [3, 0], [1, 1], [0, 0]])
    metrics = TaskMetrics.for_tasks(TWO_TASKS, [mx.cpu()])
    train_step(net, trainer, (x, labels, mx.nd.arange(6)), [mx.cpu()], loss_fn, metrics,
               LoopConfig(task_gradients=tracker), np.random.RandomState(0), 1)
    trunk = np.concatenate([p.data().asnumpy().ravel() for p in net.trunk_params()])
    heads = np.concatenate([p.data().asnumpy().ravel() for p in net.head_params().values()])
    return trunk, heads, tracker


def test_measuring_leaves_the_update_as_it_was_and_pcgrad_changes_only_the_trunk():
    plain_trunk, plain_heads, _ = _step("sum", 0)
    measured_trunk, measured_heads, tracker = _step("sum", 1)
    np.testing.assert_allclose(measured_trunk, plain_trunk, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(measured_heads, plain_heads, rtol=1e-4, atol=1e-5)
    record = tracker.record()
    assert record["grad_batches"] == 1 and -1 <= record["grad_cosine"]["a|b"] <= 1
    assert all(v > 0 for v in record["grad_norm"].values())
    pc_trunk, pc_heads, _ = _step("pcgrad", 0)
    np.testing.assert_allclose(pc_heads, plain_heads, rtol=1e-4, atol=1e-5)  # heads keep their own gradients
    if record["grad_cosine"]["a|b"] < 0:  # conflicting: the trunk's update differs
        assert np.abs(pc_trunk - plain_trunk).max() > 1e-6
    else:
        np.testing.assert_allclose(pc_trunk, plain_trunk, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sum", "pcgrad"])
def test_train_stores_gradient_statistics_and_plots_them(tmp_path, method):
    root = tmp_path / "images"
    items = [(rel, [label, int(label > 0)]) for rel, label in make_images(str(root), 4, seed=1)]
    train = write_list(tmp_path / "train.lst", items)
    proc = run_cli("train", "--data-train", train, "--image-train", root, "--task-names", "shape,any",
                   "--network", "mobilenet0.25", "--image-shape", "3,32,32", "--num-epoch", "2",
                   "--batch-size", "4", "--save-result", tmp_path / "run", "--grad-stats-every", "2",
                   "--grad-method", method, "--disp-batches", "100")
    history = json.load(open(tmp_path / "run" / "history.json"))
    history = history if isinstance(history, list) else history["epochs"]
    for record in history:
        assert record["grad_batches"] == 2  # 16 images / 4 = 4 batches, every 2nd measured
        assert -1.0 <= record["grad_cosine"]["shape|any"] <= 1.0
        assert all(v > 0 and math.isfinite(v) for v in record["grad_norm"].values())
    assert "task gradients on the trunk: cos shape|any" in open(tmp_path / "run" / "train.log").read()
    assert os.path.getsize(tmp_path / "run" / "curves.png") > 0
    assert proc.returncode == 0


def test_grad_flags_refuse_float16(tmp_path, tiny_data):
    proc = run_cli("train", "--data-train", tiny_data["train"], "--image-train", tiny_data["root"],
                   "--network", "mobilenet0.25", "--image-shape", "3,32,32", "--save-result", tmp_path / "run",
                   "--grad-method", "pcgrad", "--dtype", "float16", expect=2)
    assert "--grad-method pcgrad" in proc.stderr and "float32" in proc.stderr


def test_curves_get_a_gradient_panel_only_when_measured(tmp_path):
    from matplotlib.image import imread
    from multitask_mx.training import plots
    record = {"epoch": 1, "lr": 0.1, "train": {"a": {"loss": 1.0, "acc": 0.5}, "b": {"loss": 0.7, "acc": 0.6}}}
    plain = plots.plot_curves([record], str(tmp_path / "plain.png"))
    measured = plots.plot_curves([dict(record, grad_cosine={"a|b": -0.3}, grad_norm={"a": 1.0, "b": 2.0}),
                                  dict(record, epoch=2, grad_cosine={"a|b": 0.1})], str(tmp_path / "grads.png"))
    assert imread(measured).shape[1] > imread(plain).shape[1]

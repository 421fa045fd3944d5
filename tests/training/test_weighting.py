"""Loss weighting and masking: real gradients of the masked loss, fixed/uncertainty/DWA weights, class weights."""
import math

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from mxnet import autograd, gluon
from multitask_mx.model import network as model
from multitask_mx.data import tasks
from multitask_mx.training import weighting
from multitask_mx.errors import UserInputError
from multitask_mx.training.metrics import TaskMetrics
from multitask_mx.training.loop import LoopConfig, MultiTaskLoss, train_step

TWO_TASKS = tasks.build_tasks([4, 3], ["a", "b"])


@pytest.fixture(scope="module")
def batch():
    mx.random.seed(3)
    return mx.nd.random.uniform(-1, 1, shape=(6, 3, 32, 32))


def make_net(seed=0):
    mx.random.seed(seed)
    return model.build_net(model.TrunkSpec("resnet18_v1"), TWO_TASKS, [mx.cpu()], (3, 32, 32))


def head_grads(net, k):
    """{'weight': grad, 'bias': grad} of task k's output layer."""
    params = net.heads[k].collect_params()
    return {name.rsplit("_", 1)[1]: p.grad().asnumpy() for name, p in params.items()}


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---- masked labels: real gradients -----------------------------------------------------------------

def test_task_without_labels_gives_its_head_zero_gradient(batch):
    net = make_net()
    labels = mx.nd.array([[0, -1], [1, -1], [2, -1], [3, -1], [1, -1], [0, -1]])
    with autograd.record():
        total, _, _, masks = MultiTaskLoss([4, 3])(net(batch), labels, mx.nd.ones(6))
    total.backward()
    assert masks[1].sum().asscalar() == 0
    for grad in head_grads(net, 1).values():
        assert not grad.any()  # exactly zero
    for grad in head_grads(net, 0).values():
        assert np.abs(grad).max() > 1e-6
    trunk = [p.grad().asnumpy() for p in net.trunk_params()]
    assert any(np.abs(g).max() > 1e-6 for g in trunk)


def test_masked_samples_add_nothing_to_their_heads_gradient(batch):
    net = make_net()
    # task b: samples 1 and 3 unknown (-1); sample 5 is device padding (valid 0) with known labels
    b_labels = np.array([0, -1, 2, -1, 1, 2])
    labels = mx.nd.array(np.stack([[0, 1, 2, 3, 1, 0], b_labels], axis=1))
    valid = mx.nd.array([1, 1, 1, 1, 1, 0])
    with autograd.record():
        features = net.trunk(batch)
        outputs = net(batch)
        total, _, _, _ = MultiTaskLoss([4, 3])(outputs, labels, valid)
    total.backward()
    keep = np.array([1, 0, 1, 0, 1, 0], np.float64)
    probs = softmax(outputs[1].asnumpy().astype(np.float64))
    d_logits = (probs - np.eye(3)[np.maximum(b_labels, 0)]) * keep[:, None]  # d(cross-entropy)/d(logits)
    grads = head_grads(net, 1)
    np.testing.assert_allclose(grads["bias"], d_logits.sum(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads["weight"], d_logits.T @ features.asnumpy().reshape(6, -1), rtol=1e-3, atol=1e-5)


def test_a_batch_where_a_task_has_no_labels_trains_the_others(batch):
    net = make_net()
    loss_fn = MultiTaskLoss([4, 3])
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "wd": 0.0})
    metrics = TaskMetrics.for_tasks(TWO_TASKS, [mx.cpu()], top_k=2)
    before = {k: {n: p.data().asnumpy() for n, p in net.heads[k].collect_params().items()} for k in (0, 1)}
    labels = mx.nd.array([[0, -1], [1, -1], [2, -1], [3, -1], [1, -1], [0, -1]])
    train_step(net, trainer, (batch, labels, mx.nd.arange(6)), [mx.cpu()], loss_fn, metrics, LoopConfig(),
               np.random.RandomState(0))
    values = metrics.values()
    assert values["a"]["count"] == 6 and math.isfinite(values["a"]["loss"]) and "topk" in values["a"]
    assert values["b"]["count"] == 0 and math.isnan(values["b"]["loss"]) and math.isnan(values["b"]["acc"])
    for name, param in net.heads[1].collect_params().items():
        np.testing.assert_array_equal(param.data().asnumpy(), before[1][name])
    changed = [not np.array_equal(p.data().asnumpy(), before[0][n]) for n, p in net.heads[0].collect_params().items()]
    assert all(changed)


# ---- task weightings -------------------------------------------------------------------------------

def test_fixed_weights_scale_each_task():
    losses = [mx.nd.array([1.0, 2.0]), mx.nd.array([4.0, 0.0])]
    masks = [mx.nd.ones(2), mx.nd.array([1, 0])]
    fixed = weighting.FixedWeighting(["a", "b"], [1.0, 0.5])
    assert fixed.combine(losses, masks, mx.nd.ones(2)).asnumpy().tolist() == [3.0, 2.0]
    assert fixed.record() == {"loss_weights": {"a": 1.0, "b": 0.5}}
    assert MultiTaskLoss([4, 3]).weights == [1.0, 1.0]  # without a weighting: every task weighs 1


@pytest.mark.parametrize("text, names, expected", [(None, ["a", "b"], [1.0, 1.0]), ("1,0.5", ["a", "b"], [1.0, 0.5]),
                                                   (" 2 ", ["a"], [2.0])])
def test_parse_loss_weights(text, names, expected):
    assert weighting.parse_loss_weights(text, names) == expected


@pytest.mark.parametrize("text, message", [("1,0.5,2", "gives 3 weight(s) for 2 task(s) (a, b, in this order)"),
                                           ("1,-1", "0 or more"), ("1,nan", "0 or more"), ("a,b", "expected numbers"),
                                           ("", "expected numbers"), ("0,0", "every weight is 0")])
def test_bad_loss_weights(text, message):
    with pytest.raises(UserInputError, match="--loss-weights") as info:
        weighting.parse_loss_weights(text, ["a", "b"])
    assert message in str(info.value)


def test_dwa_weights_follow_the_last_two_epochs_losses():
    def record(a, b):
        return {"train": {"a": {"loss": a}, "b": {"loss": b}}}

    assert weighting.dwa_factors([], ["a", "b"], 2.0) == [1.0, 1.0]
    assert weighting.dwa_factors([record(2, 1)], ["a", "b"], 2.0) == [1.0, 1.0]
    history = [record(9, 9), record(2.0, 1.0), record(1.0, 0.9)]  # a fell to 0.5x, b only to 0.9x
    ratios = np.array([0.5, 0.9]) / 2.0
    expected = 2 * np.exp(ratios) / np.exp(ratios).sum()
    np.testing.assert_allclose(weighting.dwa_factors(history, ["a", "b"], 2.0), expected)
    assert expected[1] > 1 > expected[0]  # the task learning slower gets more weight
    dwa = weighting.DynamicWeightAverage(["a", "b"], [1.0, 0.5], temperature=2.0)
    dwa.start_epoch(history)
    current = dwa.current()
    assert current["a"] == pytest.approx(expected[0]) and current["b"] == pytest.approx(0.5 * expected[1])
    # a task without labels in an epoch (NaN loss) keeps ratio 1
    assert weighting.dwa_factors([record(1, float("nan")), record(1, 1)], ["a", "b"], 1.0) == [1.0, 1.0]


def test_uncertainty_gradient_is_kendalls(batch):
    net = make_net()
    learned = weighting.UncertaintyWeighting(["a", "b"], ctxs=[mx.cpu()])
    labels = mx.nd.array([[0, -1], [1, 2], [2, -1], [3, 0], [1, 1], [0, -1]])
    with autograd.record():
        _, losses, _, masks = MultiTaskLoss([4, 3], weighting=learned)(net(batch), labels, mx.nd.ones(6))
        total = learned.combine(losses, masks, mx.nd.ones(6))
    total.backward()
    # at s = 0: d/ds_k sum_i (exp(-s_k) L_ik + s_k / 2 mask_ik) = -sum_i L_ik + 0.5 * labelled_k
    expected = [-losses[k].sum().asscalar() + 0.5 * masks[k].sum().asscalar() for k in (0, 1)]
    np.testing.assert_allclose(learned.log_var.grad().asnumpy(), expected, rtol=1e-4)


def test_uncertainty_weights_change_in_training_and_stay_finite(batch):
    net = make_net()
    learned = weighting.UncertaintyWeighting(["a", "b"], [1.0, 0.5], ctxs=[mx.cpu()])
    loss_fn = MultiTaskLoss([4, 3], weighting=learned)
    assert loss_fn.params() == [learned.log_var]
    trainer = gluon.Trainer(list(net.collect_params().values()) + loss_fn.params(), "sgd",
                            {"learning_rate": 0.05, "momentum": 0.9})
    metrics = TaskMetrics.for_tasks(TWO_TASKS, [mx.cpu()])
    labels = mx.nd.array([[0, 0], [1, 1], [2, 2], [3, -1], [1, 0], [0, 1]])
    assert learned.current() == {"a": 1.0, "b": 0.5}
    seen = []
    for step in range(4):
        train_step(net, trainer, (batch, labels, mx.nd.arange(6)), [mx.cpu()], loss_fn, metrics, LoopConfig(),
                   np.random.RandomState(step))
        seen.append(learned.log_variances())
    record = learned.record()
    assert set(record) == {"loss_weights", "log_variance"}
    assert all(math.isfinite(v) for r in seen for v in r.values())
    assert all(math.isfinite(v) and v > 0 for v in record["loss_weights"].values())
    assert seen[0] != seen[-1] and all(abs(v) > 1e-3 for v in seen[-1].values())
    # initial losses are above 1/2, so s rises and each weight falls below its base
    assert record["loss_weights"]["a"] < 1.0 and record["loss_weights"]["b"] < 0.5
    # --resume restores the log-variances from the last epoch record
    again = weighting.UncertaintyWeighting(["a", "b"], ctxs=[mx.cpu()])
    again.restore([{"epoch": 1, "log_variance": {"a": 0.1}}, {"epoch": 2, **record}])
    assert again.log_variances() == pytest.approx(record["log_variance"])


def test_make_weighting_checks_the_weights_against_the_tasks():
    cfg = weighting.WeightingConfig(loss_weights="1,2", method="dwa", temperature=3.0)
    dwa = weighting.make_weighting(cfg, ["a", "b"], [mx.cpu()])
    assert isinstance(dwa, weighting.DynamicWeightAverage) and dwa.temperature == 3.0 and dwa.base == [1.0, 2.0]
    with pytest.raises(UserInputError, match="for 3 task"):
        weighting.make_weighting(cfg, ["a", "b", "c"], [mx.cpu()])


# ---- class weights ---------------------------------------------------------------------------------

def test_inverse_frequency_has_mean_one_over_present_classes():
    weights = weighting.inverse_frequency([30, 10, 0, 20])
    np.testing.assert_allclose(weights[[0, 1, 3]].mean(), 1.0)
    np.testing.assert_allclose(weights[[0, 1, 3]] * [30, 10, 20], 30 * weights[0])  # proportional to 1/count
    assert weights[2] == 1.0
    np.testing.assert_allclose(weighting.inverse_frequency([5, 5]), [1, 1])


def test_auto_class_weights_come_from_the_training_list(tmp_path):
    from conftest import write_list
    from multitask_mx.data.lists import read_list
    rows = [("a.jpg", [0, 1]), ("b.jpg", [0, 1]), ("c.jpg", [0, 0]), ("d.jpg", [1, -1])]
    image_list = read_list(write_list(tmp_path / "t.lst", rows))
    built = tasks.build_tasks([2, 2], derived=[])
    auto = weighting.make_class_weights("auto", built, image_list)
    np.testing.assert_allclose(auto[0], np.array([1 / 3, 1]) / np.mean([1 / 3, 1]))
    np.testing.assert_allclose(auto[1], np.array([1, 1 / 2]) / np.mean([1, 1 / 2]))  # -1 not counted
    assert weighting.make_class_weights(None, built, image_list) is None


def test_class_weights_weigh_training_samples_only():
    out = [mx.nd.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])]
    labels = mx.nd.array([[0], [1], [-1]])
    plain = MultiTaskLoss([2])(out, labels, mx.nd.ones(3))[1][0].asnumpy()
    weighted_fn = MultiTaskLoss([2], class_weights=[np.array([0.5, 3.0])])
    with autograd.record():
        weighted = weighted_fn(out, labels, mx.nd.ones(3))[1][0].asnumpy()
    np.testing.assert_allclose(weighted, plain * [0.5, 3.0, 0.0], rtol=1e-6)
    assert plain[2] == 0.0  # unknown label: masked
    np.testing.assert_allclose(weighted_fn(out, labels, mx.nd.ones(3))[1][0].asnumpy(), plain)  # validation

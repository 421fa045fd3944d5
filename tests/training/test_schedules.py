"""Learning-rate schedules: values at chosen updates, warmup, cyclic decay, resume."""
import argparse
import pickle

import mxnet as mx
import pytest
from mxnet import autograd, gluon

from multitask_mx.training import schedules
from multitask_mx.errors import UserInputError
from multitask_mx.training.schedules import ScheduleConfig, lr_at, lr_curve, make_scheduler

E = 10  # updates per epoch


def cfg(**kw):
    base = dict(name="step", base_lr=0.1, num_epoch=6, step_epochs=(2, 4), factor=0.1)
    base.update(kw)
    return ScheduleConfig(**base)


def test_step_drops_after_each_step_epoch():
    s = make_scheduler(cfg(), E)
    assert [s(u) for u in (1, 20)] == [0.1, 0.1]  # update 20 is the last of epoch 2
    assert s(21) == pytest.approx(0.01) and s(40) == pytest.approx(0.01)
    assert s(41) == pytest.approx(0.001) and s(60) == pytest.approx(0.001)


def test_step_matches_mxnet_multifactor():
    ours = lr_curve(cfg(), epoch_size=E)
    theirs = mx.lr_scheduler.MultiFactorScheduler(step=[2 * E, 4 * E], factor=0.1, base_lr=0.1)
    assert ours == pytest.approx([theirs(u) for u in range(1, 6 * E + 1)])


def test_linear_warmup_ramps_to_the_schedule():
    s = make_scheduler(cfg(warmup_epochs=1), E)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.05)
    assert s(10) == pytest.approx(0.1) and s(11) == pytest.approx(0.1)


def test_fractional_warmup_and_begin_lr():
    s = make_scheduler(cfg(name="cosine", warmup_epochs=0.5, warmup_begin_lr=0.01), E)
    assert s.warmup_steps == 5
    target = lr_at(cfg(name="cosine"), 5, E)
    assert s(0) == pytest.approx(0.01)
    assert s(1) == pytest.approx(0.01 + (target - 0.01) / 5)
    assert s(5) == pytest.approx(target)


def test_cosine():
    c = cfg(name="cosine", num_epoch=4, lr_min=0.001)
    assert lr_at(c, 0, E) == pytest.approx(0.1)
    assert lr_at(c, 20, E) == pytest.approx(0.001 + 0.099 / 2)
    assert lr_at(c, 40, E) == pytest.approx(0.001)
    assert lr_at(c, 50, E) == pytest.approx(0.001)  # past the end: stays at the minimum


def test_poly():
    c = cfg(name="poly", num_epoch=4, power=2.0)
    assert lr_at(c, 20, E) == pytest.approx(0.1 * 0.25)
    assert lr_at(c, 30, E) == pytest.approx(0.1 * 0.0625)
    assert lr_at(cfg(name="poly", num_epoch=4, power=1.0, lr_min=0.02), 20, E) == pytest.approx(0.06)


def test_cyclic_triangular():
    c = cfg(name="cyclic", cycle_epochs=2, lr_min=0.01, num_epoch=8)
    assert [lr_at(c, u, E) for u in (0, 5, 10, 15, 20, 30, 40)] == pytest.approx(
        [0.01, 0.055, 0.1, 0.055, 0.01, 0.1, 0.01])


def test_cyclic_decaying():
    c = cfg(name="cyclic", cycle_epochs=2, lr_min=0.01, cycle_decay=0.5, num_epoch=8)
    peaks = [lr_at(c, u, E) for u in (10, 30, 50, 70)]
    assert peaks == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert lr_at(c, 40, E) == pytest.approx(0.01)  # every cycle starts at --lr-min
    deep = cfg(name="cyclic", cycle_epochs=1, lr_min=0.01, cycle_decay=0.01, num_epoch=8)
    assert lr_at(deep, 25, E) == pytest.approx(0.01)  # a peak never goes below the minimum


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
def test_resume_gives_the_same_lr(name):
    c = cfg(name=name, warmup_epochs=1.5, lr_min=0.001, cycle_epochs=2, cycle_decay=0.7)
    fresh = lr_curve(make_scheduler(c, E, begin_epoch=0))
    resumed = make_scheduler(c, E, begin_epoch=3)
    assert resumed.begin_num_update == 3 * E
    assert [resumed(u) for u in range(3 * E + 1, 6 * E + 1)] == fresh[3 * E:]
    restored = pickle.loads(pickle.dumps(resumed))  # Trainer.save_states pickles the optimizer
    assert lr_curve(restored) == fresh


def _lrs_used(trainer, net, steps):
    """Run SGD steps where every weight's gradient is 1: the change of a weight is the lr."""
    used = []
    for _ in range(steps):
        before = net.weight.data().asnumpy()[0, 0]
        with autograd.record():
            loss = net(mx.nd.ones((1, 1))).sum()
        loss.backward()
        trainer.step(1)
        used.append(float(before - net.weight.data().asnumpy()[0, 0]))
    return used


def _trainer(c, begin_epoch):
    net = gluon.nn.Dense(1, in_units=1)
    net.initialize(mx.init.Constant(1.0))
    params = make_scheduler(c, E, begin_epoch).optimizer_params()
    return net, gluon.Trainer(net.collect_params(), "sgd", params)


def test_gluon_trainer_resume_continues_the_schedule(tmp_path):
    c = cfg(name="cyclic", num_epoch=4, cycle_epochs=1.5, warmup_epochs=0.5, lr_min=0.01, cycle_decay=0.5)
    net, trainer = _trainer(c, 0)
    whole = _lrs_used(trainer, net, 4 * E)
    assert whole == pytest.approx(lr_curve(c, epoch_size=E), rel=1e-4)

    net, trainer = _trainer(c, 0)
    first = _lrs_used(trainer, net, 2 * E)
    trainer.save_states(str(tmp_path / "t.states"))
    net2, with_states = _trainer(c, 2)
    with_states.load_states(str(tmp_path / "t.states"))
    assert first + _lrs_used(with_states, net2, 2 * E) == pytest.approx(whole, rel=1e-4)
    net3, without_states = _trainer(c, 2)  # e.g. --epoch N from a checkpoint with no .states
    assert first + _lrs_used(without_states, net3, 2 * E) == pytest.approx(whole, rel=1e-4)


def test_lr_at_leaves_stateful_mxnet_schedulers_alone():
    theirs = mx.lr_scheduler.MultiFactorScheduler(step=[5], factor=0.5, base_lr=1.0)
    assert lr_at(theirs, 100) == 0.5
    assert theirs(1) == 1.0
    assert len(lr_curve(theirs, 7)) == 7


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UserInputError) as err:
        make_scheduler(cfg(name="exp"), E)
    assert "--lr-scheduler" in str(err.value)
    for name in ("cosine", "cyclic", "poly", "step"):
        assert name in str(err.value)


def _parse(*argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--num-epoch", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None)  # train's, resolved before the schedule is built
    schedules.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_from_args_defaults_and_values():
    c = ScheduleConfig.from_args(_parse("--lr-scheduler", "cyclic", "--cycle-epochs", "4", "--cycle-decay", "0.8",
                                        "--warmup-epochs", "0.5", "--lr-min", "0.001"))
    assert (c.name, c.cycle_epochs, c.cycle_decay, c.warmup_epochs, c.lr_min) == ("cyclic", 4, 0.8, 0.5, 0.001)
    d = ScheduleConfig.from_args(_parse())
    assert (d.name, d.step_epochs, d.factor, d.num_epoch) == ("cosine", (5, 7), 0.1, 10)
    assert ScheduleConfig.from_args(_parse("--lr-step-epochs", "5,10")).step_epochs == (5, 10)


def test_default_step_epochs_scale_with_the_run():
    assert [schedules.default_step_epochs(n) for n in (1, 2, 3, 10, 50)] == [(), (1,), (1, 2), (5, 7), (25, 37)]


def test_default_lr_scales_with_the_batch_from_scratch_and_fine_tuning():
    scratch, why = schedules.default_lr(32, finetune=False)
    assert scratch == pytest.approx(0.025) and "scratch" in why
    assert schedules.default_lr(64, finetune=False)[0] == pytest.approx(2 * scratch)
    tuned, why = schedules.default_lr(32, finetune=True)
    assert tuned == pytest.approx(0.025) and "fine-tuning" in why
    assert _parse("--plot-lr", "lr.png").plot_lr == "lr.png"


@pytest.mark.parametrize("argv, flag", [
    (["--lr-scheduler", "linear"], "--lr-scheduler"),
    (["--lr-step-epochs", "5,x"], "--lr-step-epochs"),
    (["--lr-step-epochs", "10,5"], "--lr-step-epochs"),
    (["--lr-factor", "0"], "--lr-factor"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--warmup-begin-lr", "0.5"], "--warmup-begin-lr"),
    (["--lr-min", "0.2"], "--lr-min"),
    (["--lr-power", "0"], "--lr-power"),
    (["--cycle-epochs", "0"], "--cycle-epochs"),
    (["--cycle-decay", "1.5"], "--cycle-decay"),
])
def test_from_args_rejects_bad_values(argv, flag):
    with pytest.raises(UserInputError, match=flag):
        ScheduleConfig.from_args(_parse(*argv))


def test_resume_through_the_checkpoint_states_on_two_devices(tmp_path):
    from multitask_mx.training.states import load_trainer_states, save_trainer_states

    c = cfg(name="cosine", num_epoch=4, warmup_epochs=1, lr_min=0.001)
    ctxs = [mx.cpu(0), mx.cpu(1)]

    def trainer():
        net = gluon.nn.Dense(1, in_units=1)
        net.initialize(mx.init.Constant(1.0), ctx=ctxs)
        return net, gluon.Trainer(net.collect_params(), "sgd", make_scheduler(c, E).optimizer_params(),
                                  update_on_kvstore=False)

    def steps(net, trainer, n):
        lrs = []
        for _ in range(n):
            with autograd.record():
                losses = [net(mx.nd.ones((1, 1), ctx=ctx)).sum() for ctx in ctxs]
            autograd.backward(losses)
            trainer.step(2)
            lrs.append(trainer.learning_rate)
        return lrs

    net, first = trainer()
    done = steps(net, first, 2 * E)
    save_trainer_states(first, str(tmp_path / "s.states"))
    net2, second = trainer()
    load_trainer_states(second, str(tmp_path / "s.states"))
    assert second.optimizer.num_update == 2 * E
    assert done + steps(net2, second, 2 * E) == pytest.approx(lr_curve(c, epoch_size=E))


def _updates_per_epoch(images):
    return lambda batch: -(-images // batch)


def test_default_batch_gives_a_short_run_enough_updates():
    assert schedules.default_batch_size(_updates_per_epoch(50000), 10)[0] == 32  # long runs keep 32
    assert schedules.default_batch_size(_updates_per_epoch(1000), 5)[0] == 16  # 160 updates at 32, 315 at 16
    batch, why = schedules.default_batch_size(_updates_per_epoch(500), 3)  # 189 even at 8
    assert batch == 8 and "short run" in why and "189 updates" in why
    assert schedules.default_batch_size(_updates_per_epoch(500), 3, devices=4)[0] == 32

"""Optimizer-state files written by earlier versions still load (pickled class paths are kept)."""
import os
import pickle

import mxnet as mx
from mxnet import autograd, gluon

from multitask_mx.training import schedules, states

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "pre-move-schedule.states")


def test_states_pickled_before_the_package_move_unpickle_to_todays_schedule():
    with open(FIXTURE, "rb") as f:
        payload = pickle.loads(f.read())
    optimizer = pickle.loads(payload["devices"][0])[1]
    assert isinstance(optimizer.lr_scheduler, schedules.Schedule)
    assert optimizer.num_update == 3
    # the restored schedule answers as one made today from the same settings
    fresh = schedules.make_scheduler(schedules.ScheduleConfig(name="cosine", base_lr=0.1, num_epoch=4,
                                                              warmup_epochs=1), 5)
    assert [optimizer.lr_scheduler(u) for u in range(1, 21)] == [fresh(u) for u in range(1, 21)]


def test_states_written_before_the_move_load_into_a_trainer():
    net = gluon.nn.Dense(2, in_units=3)
    net.initialize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}, kvstore=None,
                            update_on_kvstore=False)
    with autograd.record():
        loss = net(mx.nd.ones((4, 3))).sum()
    loss.backward()
    states.load_trainer_states(trainer, FIXTURE)
    assert trainer.optimizer.num_update == 3
    assert isinstance(trainer.optimizer.lr_scheduler, schedules.Schedule)

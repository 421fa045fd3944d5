"""Atomic writes, history files, optimizer states of every device, best tracking."""
import json
import os

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from mxnet import autograd, gluon
from multitask_mx import mxprivate
from multitask_mx.training import checkpoints, states
from multitask_mx.training.best import BestTracker
from multitask_mx.training.checkpoints import CheckpointSaver
from multitask_mx.runfolder import ResumePoint
from multitask_mx.errors import UserInputError


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "history.json")
    checkpoints.atomic_write_json(path, [{"epoch": 1}])

    def crash(*args):
        raise KeyboardInterrupt("killed during the save")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.atomic_write_json(path, [{"epoch": 1}, {"epoch": 2}])
    monkeypatch.undo()
    assert json.load(open(path)) == [{"epoch": 1}]


def test_interrupted_epoch_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(3, in_units=2))
    net.initialize()
    net.hybridize()
    net(mx.nd.ones((1, 2)))
    saver = CheckpointSaver(str(tmp_path), "m")
    saver.save_epoch(net, None, 1, {"epoch": 1, "val_loss": 1.0})
    real_replace = os.replace

    def crash_on_params(src, dst):
        if dst.endswith("-0002.params"):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", crash_on_params)
    with pytest.raises(KeyboardInterrupt):
        saver.save_epoch(net, None, 2, {"epoch": 2, "val_loss": 0.5})
    monkeypatch.undo()
    assert not os.path.exists(saver.params_file(2))
    block = gluon.SymbolBlock.imports(saver.symbol_file(), ["data"], saver.params_file(1))
    assert block(mx.nd.ones((1, 2))).shape == (1, 3)
    assert json.load(open(saver.path("history.json")))[-1]["epoch"] == 1


def test_history_csv_has_one_row_per_epoch(tmp_path):
    saver = CheckpointSaver(str(tmp_path), "m")
    for epoch in (1, 2):
        saver.append_history({"epoch": epoch, "train": {"label": {"acc": 0.5 * epoch}}})
    lines = open(saver.path("history.csv")).read().splitlines()
    assert lines[0] == "epoch,train_label_acc" and lines[2] == "2,1.0"


def _trainer(ctxs):
    net = gluon.nn.Dense(2, in_units=3)
    net.initialize(mx.init.One(), ctx=ctxs)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9},
                            kvstore="device", update_on_kvstore=False)
    for _ in range(2):
        for ctx in ctxs:
            with autograd.record():
                loss = net(mx.nd.ones((2, 3), ctx=ctx)).sum()
            loss.backward()
        trainer.step(2)
    return net, trainer


def test_states_of_every_device_are_saved_and_restore_on_fewer_devices(tmp_path):
    _, trainer = _trainer([mx.cpu(0), mx.cpu(1)])
    path = str(tmp_path / "m.states")
    states.save_trainer_states(trainer, path)
    import pickle
    payload = pickle.load(open(path, "rb"))
    assert len(payload["devices"]) == 2
    _, fresh = _trainer([mx.cpu(0)])
    states.load_trainer_states(fresh, path)
    assert fresh.optimizer.num_update == trainer.optimizer.num_update
    momentum = mxprivate.trainer_updaters(fresh)[0].states[0].asnumpy()
    np.testing.assert_allclose(momentum, mxprivate.trainer_updaters(trainer)[1].states[0].asnumpy())
    with pytest.raises(UserInputError):
        open(path, "wb").write(pickle.dumps({"something": "else"}))
        states.load_trainer_states(fresh, path)


def test_best_tracker_metrics():
    record = lambda e, loss, acc: {"epoch": e, "val_loss": loss, "train_loss": loss,
                                   "val": {"label": {"acc": acc, "count": 4}, "label_gt0": {"acc": 1.0, "count": 4}}}
    best = BestTracker("val-acc:label", ["label", "label_gt0"])
    assert [best.update(record(e, 1, a)) for e, a in [(1, 0.5), (2, 0.4), (3, 0.7)]] == [True, False, True]
    assert best.epoch == 3
    loss = BestTracker("val-loss", ["label"])
    assert [loss.update(record(e, l, 0)) for e, l in [(1, 2.0), (2, 1.0), (3, 1.5)]] == [True, True, False]
    assert BestTracker("val-loss", ["label"], has_val=False).metric == "train-loss"
    with pytest.raises(UserInputError, match="val-acc:label"):
        BestTracker("val-acc:nope", ["label"])


def test_a_damaged_run_json_is_named_with_what_to_do(tmp_path):
    from multitask_mx.training.checkpoints import read_json
    from multitask_mx.errors import UserInputError
    path = tmp_path / "config.json"
    path.write_text('{"args": {"batch_size"')  # cut off mid-write by something other than us
    with pytest.raises(UserInputError, match="config.json is damaged .*another --save-result"):
        read_json(str(path))


def _hybrid_trainer():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(3, in_units=2))
    net.initialize(mx.init.One())
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
    with autograd.record():
        loss = net(mx.nd.ones((2, 2))).sum()
    loss.backward()
    trainer.step(2)
    return net, trainer


def test_epoch_files_written_in_the_background_match_a_plain_save(tmp_path):
    net, trainer = _hybrid_trainer()
    plain, early = CheckpointSaver(str(tmp_path / "plain"), "m"), CheckpointSaver(str(tmp_path / "early"), "m")
    plain.save_epoch(net, trainer, 1, {"epoch": 1, "val_loss": 1.0})
    started = early.start_epoch_files(net, trainer, 1)
    out = net(mx.nd.ones((4, 2))).asnumpy()  # the network keeps working meanwhile (validation)
    early.save_epoch(net, trainer, 1, {"epoch": 1, "val_loss": 1.0}, started=started)
    for saver in (plain, early):
        block = gluon.SymbolBlock.imports(saver.symbol_file(), ["data"], saver.params_file(1))
        np.testing.assert_allclose(block(mx.nd.ones((4, 2))).asnumpy(), out, rtol=1e-6)
        assert saver.resume_point() == ResumePoint(1, saver.params_file(1), saver.states_file(1), 0)
    _, fresh = _hybrid_trainer()
    states.load_trainer_states(fresh, early.states_file(1))
    assert fresh.optimizer.num_update == trainer.optimizer.num_update


def test_a_background_write_that_fails_is_reported_by_save_epoch(tmp_path, monkeypatch):
    net, trainer = _hybrid_trainer()
    saver = CheckpointSaver(str(tmp_path), "m")
    saver.save_epoch(net, trainer, 1, {"epoch": 1, "val_loss": 1.0})

    def full_disk(*args, **kwargs):
        raise checkpoints.DiskFullError(str(tmp_path), "")
    monkeypatch.setattr(checkpoints, "save_trainer_states", full_disk)
    started = saver.start_epoch_files(net, trainer, 2)
    with pytest.raises(checkpoints.DiskFullError, match="epoch 2 was not saved; epoch 1 is the last one saved"):
        saver.save_epoch(net, trainer, 2, {"epoch": 2, "val_loss": 0.5}, started=started)
    assert not os.path.exists(saver.params_file(2))  # half an epoch's files are removed
    assert saver.resume_point().epoch == 1 and [r["epoch"] for r in saver.history] == [1]


def test_a_network_not_yet_run_in_this_process_is_saved_after_validation_not_before(tmp_path):
    # a run resumed after an epoch's last batch trains no batch before validation: export needs the traced graph
    net, trainer = _hybrid_trainer()
    net.hybridize()  # a fresh graph, as in a new process
    saver = CheckpointSaver(str(tmp_path), "m")
    assert saver.start_epoch_files(net, trainer, 1) is None
    net(mx.nd.ones((4, 2)))  # validation traces it
    saver.save_epoch(net, trainer, 1, {"epoch": 1, "val_loss": 1.0}, started=None)
    assert saver.resume_point() == ResumePoint(1, saver.params_file(1), saver.states_file(1), 0)

"""Fault injection through the real CLI: bad flags, divergence, full disk, damaged files, signals, mixed runs.

Every case ends with exit 2 (or its documented status: 3 for divergence, 143 for
SIGTERM) and no "Traceback" in the output, or works; no finished epoch is lost.
Cases that train (a few seconds each on mobilenet0.25 at 32 px) are marked slow.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from conftest import REPO, copy_run, is_alive, no_traceback, run_cli, small_lists
from multitask_mx.training.checkpoints import CheckpointSaver

TINY = ["--network", "mobilenet0.25", "--image-shape", "3,32,32", "--batch-size", "8", "--lr", "0.01",
        "--data-nthreads", "1", "--quiet"]


def train_args(data, save, *extra):
    return ["train", "--data-train", data["train"], "--image-train", data["root"], "--data-val", data["val"],
            "--image-val", data["root"], "--num-classes", "4", "--save-result", save, "--save-name", "net"] \
        + TINY + list(extra)


def finite_params(path):
    return all(np.isfinite(v.asnumpy()).all() for v in mx.nd.load(path).values())


def strict_json(path):
    def refuse(name):
        raise ValueError("%s holds %s" % (path, name))
    with open(path) as f:
        return json.loads(f.read(), parse_constant=refuse)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return small_lists(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def run2(data):
    """A finished 2-epoch run; tests that change it work on a copy."""
    save = str(data["tmp"] / "run2")
    run_cli(*train_args(data, save, "--num-epoch", "2"))
    return save


@pytest.mark.parametrize("flags, says", [
    (["--keep-last", "-1"], "--keep-last"), (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-4"], "--batch-size"), (["--num-epoch", "0"], "--num-epoch"),
    (["--lr", "nan"], "--lr"), (["--label-smoothing", "1"], "--label-smoothing"),
    (["--checkpoint-every", "-2"], "--checkpoint-every"), (["--data-nthreads", "-1"], "--data-nthreads"),
])
def test_out_of_range_flags_are_usage_errors(data, tmp_path, flags, says):
    save = str(tmp_path / "save")
    proc = no_traceback(run_cli(*train_args(data, save, *flags), expect=2))
    assert "argument %s" % says in proc.stderr and "usage:" in proc.stderr
    assert not os.path.exists(save)


@pytest.mark.slow
def test_out_of_range_flags_of_other_commands(run2):
    for args in (["predict", "--save-result", run2, "x.jpg", "--show", "0"],
                 ["serve", "--save-result", run2, "--port", "70000"],
                 ["evaluate", "--save-result", run2, "--data", "x.lst", "--batch-size", "0"]):
        proc = no_traceback(run_cli(*args, expect=2))
        assert "usage:" in proc.stderr


@pytest.mark.slow
def test_history_is_strict_json_and_keep_last_zero_keeps_all(run2):
    history = strict_json(os.path.join(run2, "history.json"))
    assert [r["epoch"] for r in history] == [1, 2]
    assert CheckpointSaver(run2, "net").saved_epochs() == [1, 2]


@pytest.mark.slow
def test_training_again_into_a_run_is_refused_then_overwritten(run2, tmp_path, data):
    save = copy_run(run2, tmp_path)
    with open(os.path.join(save, "notes.txt"), "w") as f:
        f.write("mine")
    proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "1"), expect=2))
    assert save in proc.stderr and "--resume" in proc.stderr and "--overwrite" in proc.stderr
    assert os.path.exists(os.path.join(save, "net-0002.params"))
    no_traceback(run_cli(*train_args(data, save, "--num-epoch", "1", "--overwrite")))
    assert not os.path.exists(os.path.join(save, "net-0002.params"))  # nothing of the old run is left to mix
    assert [r["epoch"] for r in strict_json(os.path.join(save, "history.json"))] == [1]
    assert strict_json(os.path.join(save, "best.json"))["epoch"] == 1
    assert open(os.path.join(save, "notes.txt")).read() == "mine"


@pytest.mark.slow
def test_outputs_under_a_file_are_refused_before_the_work(run2, tmp_path, data):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = no_traceback(run_cli(*train_args(data, str(blocker / "save"), "--num-epoch", "1"), expect=2))
    assert "--save-result" in proc.stderr and "is a file" in proc.stderr
    image = os.path.join(data["root"], "circle", os.listdir(os.path.join(data["root"], "circle"))[0])
    proc = no_traceback(run_cli("predict", "--save-result", run2, image, "--csv", blocker / "out.csv",
                                "--quiet", expect=2))
    assert "--csv" in proc.stderr and str(blocker) in proc.stderr
    proc = no_traceback(run_cli("export", "--save-result", run2, "--out", blocker / "exported", expect=2))
    assert "--out" in proc.stderr and "is a file" in proc.stderr


@pytest.mark.slow
def test_damaged_params_name_the_file_and_the_epochs_that_load(run2, tmp_path, data):
    save = copy_run(run2, tmp_path)
    damaged = os.path.join(save, "net-0002.params")
    size = os.path.getsize(damaged)
    with open(damaged, "r+b") as f:
        f.truncate(size // 2)
    proc = no_traceback(run_cli("evaluate", "--save-result", save, "--data", data["val"], "--image-root",
                                data["root"], "--epoch", "2", "--quiet", expect=2))
    assert damaged in proc.stderr and "truncated or corrupt" in proc.stderr
    assert "--epoch N" in proc.stderr and "load: 1" in proc.stderr
    proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "3", "--resume"), expect=2))
    assert damaged in proc.stderr and "--epoch" in proc.stderr
    random_file = tmp_path / "random.params"
    random_file.write_bytes(os.urandom(4096))
    proc = no_traceback(run_cli(*train_args(data, str(tmp_path / "new"), "--model", random_file), expect=2))
    assert str(random_file) in proc.stderr and "truncated or corrupt" in proc.stderr


@pytest.mark.slow
def test_evaluate_says_when_the_list_has_columns_the_model_ignores(run2, tmp_path, data):
    lines = open(data["val"]).read().splitlines()
    wide = tmp_path / "wide.lst"
    wide.write_text("".join("%s\t1.000000\t%s\n" % tuple(line.rsplit("\t", 1)) for line in lines))
    proc = no_traceback(run_cli("evaluate", "--save-result", run2, "--data", wide, "--image-root", data["root"]))
    assert "column(s) 2-2 are ignored" in proc.stderr


@pytest.mark.slow
def test_stale_temporary_files_are_removed_on_resume(run2, tmp_path, data):
    save = copy_run(run2, tmp_path)
    stale = [os.path.join(save, ".tmp-999999-net-0003.params"), os.path.join(save, "history.json.tmp-999999")]
    for path in stale:
        with open(path, "wb") as f:
            f.write(b"\0" * 1000)
    no_traceback(run_cli(*train_args(data, save, "--num-epoch", "3", "--resume")))
    assert not any(os.path.exists(p) for p in stale)
    assert [r["epoch"] for r in strict_json(os.path.join(save, "history.json"))] == [1, 2, 3]


@pytest.mark.slow
def test_divergence_never_writes_nan_weights(data, tmp_path):
    save = str(tmp_path / "save")
    proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "2", "--lr", "1e12", "--checkpoint-every",
                                            "1", "--disp-batches", "100", "--lr-step-epochs", "9"), expect=3))
    assert "NaN or infinite" in proc.stderr
    assert "--resume with a lower --lr restarts from the beginning" in proc.stderr
    assert "NaN or infinite" in open(os.path.join(save, "train.log")).read()
    for name in os.listdir(save):
        if name.endswith(".params"):
            assert finite_params(os.path.join(save, name)), name
    no_traceback(run_cli(*train_args(data, save, "--num-epoch", "2", "--resume", "--lr", "0.01")))
    assert [r["epoch"] for r in strict_json(os.path.join(save, "history.json"))] == [1, 2]
    assert finite_params(os.path.join(save, "net-0002.params"))


@pytest.mark.slow
def test_divergence_keeps_the_last_good_checkpoint_loadable_and_finite(run2, data, tmp_path):
    from multitask_mx.use import inference
    save = copy_run(run2, tmp_path)
    proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "3", "--resume", "--lr", "1e12",
                                            "--checkpoint-every", "1", "--disp-batches", "1"), expect=3))
    assert "NaN or infinite" in proc.stderr and "NaN or infinite" in open(os.path.join(save, "train.log")).read()
    point = CheckpointSaver(save, "net", writer=False).resume_point()
    assert point.epoch == 2  # epoch 3 diverged: epochs 1 and 2 are kept, nothing of epoch 3 replaced them
    assert finite_params(point.params_file)
    model = inference.load_model(save, "net")  # the newest epoch, as evaluate/predict load by default
    assert model.params_file.endswith("net-0002.params")
    images = sorted(os.path.join(data["root"], "circle", n) for n in os.listdir(os.path.join(data["root"], "circle")))
    log_probs = inference.predict_paths(model, images[:4]).log_probs
    assert all(np.isfinite(lp).all() for lp in log_probs)
    assert [r["epoch"] for r in strict_json(os.path.join(save, "history.json"))] == [1, 2]


@pytest.mark.slow
def test_bad_validation_image_keeps_the_epoch(data, tmp_path):
    bad = os.path.join(data["root"], "circle", "garbage_val.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8" + os.urandom(64) + b"\xff\xd9")  # passes the header check, fails to decode
    val = str(tmp_path / "val.lst")
    shutil.copy(data["val"], val)
    with open(val, "a") as f:
        f.write("999\t1.000000\tcircle/garbage_val.jpg\n")
    bad_data = dict(data, val=val)
    save = str(tmp_path / "save")
    proc = no_traceback(run_cli(*train_args(bad_data, save, "--num-epoch", "1"), expect=2))
    assert "garbage_val.jpg" in proc.stderr and "Epoch 1 is saved" in proc.stderr
    assert CheckpointSaver(save, "net").loadable_epochs() == [1]
    no_traceback(run_cli(*train_args(bad_data, save, "--num-epoch", "1", "--skip-bad-images", "--overwrite")))
    assert "validation skipped 1 unreadable image" in open(os.path.join(save, "train.log")).read()


def test_padding_of_a_distributed_shard_is_not_a_duplicate(data):
    from multitask_mx.training import distributed
    from multitask_mx.data.lists import find_duplicates, read_list
    full = read_list(data["train"], data["root"])
    shard = distributed.shard_list(full.take(range(5)), 1, 2)
    assert len(shard) == 3 and shard.entries[2].line == shard.entries[0].line  # rank 1 of 5 images: 2 + 1 padding
    assert not find_duplicates(shard)


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open("/proc/%s/stat" % entry).read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "multitask_mx"] + args, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _wait_for(predicate, proc, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the moment to stop it:\n" + proc.stderr.read()[-3000:]


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_leaves_no_worker(data, tmp_path):
    save = str(tmp_path / "save")
    args = train_args(data, save, "--num-epoch", "20")
    args[args.index("--data-nthreads") + 1] = "2"
    proc = _start(args)
    _wait_for(lambda: os.path.exists(os.path.join(save, "net-0001.states")), proc)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in out + err
    deadline = time.time() + 30  # workers end as their parent does; a loaded machine may take a moment
    while time.time() < deadline and [pid for pid in workers if is_alive(pid)]:
        time.sleep(0.2)
    assert workers and not [pid for pid in workers if is_alive(pid)]
    assert CheckpointSaver(save, "net").loadable_epochs()[:1] == [1]
    assert "terminated (SIGTERM)" in open(os.path.join(save, "train.log")).read()


FORKED_CHILD_SIGTERM = """
import multiprocessing, signal
from multitask_mx import cli
cli._stop_on_sigterm()
def report(queue):
    queue.put(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
child = ctx.Process(target=report, args=(queue,))
child.start()
print(queue.get(timeout=60), signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)
child.join()
"""


def test_forked_children_die_on_sigterm_whichever_thread_receives_it():
    # A loader worker whose main thread waits in the pool's queue lock never ran the inherited Python
    # handler when one of MXNet's engine threads took the signal: pool.terminate() then waited forever
    # (a finished run that never exited). Children must have the default action from the fork on.
    out = subprocess.run([sys.executable, "-c", FORKED_CHILD_SIGTERM], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]


@pytest.mark.slow
def test_sigkill_during_saves_at_several_moments_loses_nothing(data, tmp_path):
    save = str(tmp_path / "save")
    saver = CheckpointSaver(save, "net", writer=False)
    batches = 3  # 24 images, batch 8, one mid-epoch checkpoint per batch
    for delay in (0.0, 0.03, 0.1, 0.3):
        resume = ["--resume"] if os.path.exists(os.path.join(save, "config.json")) else []
        before = saver.resume_point() if resume else None
        proc = _start(train_args(data, save, "--num-epoch", "4", "--checkpoint-every", "1", *resume))
        progress = os.path.join(save, "progress.json")
        start_mtime = os.path.getmtime(progress) if os.path.exists(progress) else 0
        _wait_for(lambda: os.path.exists(progress) and os.path.getmtime(progress) != start_mtime, proc)
        time.sleep(delay)  # a save runs on every batch: the kill lands before, in or after one
        proc.kill()
        proc.communicate()
        point = saver.resume_point()
        assert point is not None
        position = point.epoch * batches + point.batches_done
        history = os.path.join(save, "history.json")
        finished = [r["epoch"] for r in strict_json(history)] if os.path.exists(history) else []
        assert point.epoch == max(finished, default=0) and position >= 1  # no finished epoch lost
        if before is not None:
            assert position >= before.epoch * batches + before.batches_done  # never behind where it resumed from
        assert finite_params(point.params_file)
    proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "4", "--checkpoint-every", "1",
                                            "--resume")))
    log = open(os.path.join(save, "train.log")).read()
    point_text = "resuming after epoch %d" % point.epoch
    assert point_text in log
    if point.batches_done:
        assert "(%d batches into epoch %d)" % (point.batches_done, point.epoch + 1) in log
    assert [r["epoch"] for r in strict_json(os.path.join(save, "history.json"))] == [1, 2, 3, 4]
    assert not [n for n in os.listdir(save) if ".tmp-" in n]


def _mount_tmpfs(path, size_bytes):
    os.makedirs(path)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % size_bytes, "tmpfs", path],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_full_disk_keeps_the_last_good_checkpoint(run2, data, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; this test runs as uid %d" % os.geteuid())
    one_epoch = sum(os.path.getsize(os.path.join(run2, n)) for n in ("net-0001.params", "net-0001.states"))
    others = sum(os.path.getsize(os.path.join(run2, n)) for n in os.listdir(run2)
                 if not n.startswith("net-0") and n != "net-best.params")
    disk = str(tmp_path / "disk")
    # room for epoch 1 and the small files, not for a second epoch's checkpoint
    mounted = _mount_tmpfs(disk, one_epoch * 1.5 + others + 64 * 1024)
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here: %s" % mounted.stderr.strip())
    try:
        save = os.path.join(disk, "save")
        proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "3"), expect=2))
        assert "no space left on %s" % save in proc.stderr and "MB per checkpoint" in proc.stderr
        assert not [n for n in os.listdir(save) if ".tmp-" in n]
        assert CheckpointSaver(save, "net").loadable_epochs() == [1]
        assert [r["epoch"] for r in strict_json(os.path.join(save, "history.json"))] == [1]
        proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "3", "--resume"), expect=2))
        assert "no space left" in proc.stderr and not [n for n in os.listdir(save) if ".tmp-" in n]
    finally:
        subprocess.run(["umount", disk], check=False)


def test_mxnet_error_text_is_cleaned_of_its_traceback(tmp_path):
    from multitask_mx.mxerrors import clean_mxnet_error
    bad = tmp_path / "random.params"
    bad.write_bytes(os.urandom(512))
    with pytest.raises(mx.base.MXNetError) as info:
        mx.nd.load(str(bad))
    assert "Traceback (most recent call last)" in str(info.value)  # what MXNet 1.9 puts in its message
    text = clean_mxnet_error(info.value)
    assert "Traceback" not in text and "Invalid NDArray file format" in text


def test_strict_json_and_stale_temporary_files(tmp_path):
    from multitask_mx import atomic
    path = str(tmp_path / "h.json")
    atomic.atomic_write_json(path, [{"loss": float("nan"), "acc": float("inf"), "n": 1}])
    assert strict_json(path) == [{"loss": None, "acc": None, "n": 1}]
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        live, dead = ".tmp-%d-net-0001.params" % sleeper.pid, "history.json.tmp-999999"
        for name in (live, dead):
            (tmp_path / name).write_bytes(b"x")
        assert atomic.remove_stale_temps(str(tmp_path)) == [dead]  # a running writer's file stays
        assert (tmp_path / live).exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_command_skips_mxnets_teardown_only_when_nothing_needs_an_orderly_exit(monkeypatch):
    import threading
    import mxnet  # noqa: F401  (loaded: the case the fast exit is for)
    from multitask_mx import cli
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    assert not cli._needs_orderly_exit()
    monkeypatch.setenv("DMLC_ROLE", "worker")  # ps-lite tells the scheduler it leaves
    assert cli._needs_orderly_exit()
    monkeypatch.delenv("DMLC_ROLE")
    release = threading.Event()
    writer = threading.Thread(target=release.wait)  # e.g. a file still being written
    writer.start()
    try:
        assert cli._needs_orderly_exit()
    finally:
        release.set()
        writer.join()
    assert not cli._needs_orderly_exit()


def test_a_fast_exit_keeps_the_status_and_everything_printed(tmp_path):
    # stdout piped (buffered) and a user error: exit status 2 and the whole message, after the fast exit
    lines = "\n".join("%d\t0\tmissing_%d.jpg" % (i, i) for i in range(3))
    (tmp_path / "x.lst").write_text(lines + "\n")
    proc = subprocess.run([sys.executable, "-m", "multitask_mx", "evaluate", "--save-result", str(tmp_path / "none"),
                           "--data", str(tmp_path / "x.lst")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr

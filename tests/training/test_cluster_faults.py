"""The faults a cluster has, through `python -m multitask_mx launch` on loopback: a worker, a server or the
scheduler killed with SIGKILL mid-run, a worker stopped with SIGSTOP. Each job must end within a stated time
(never hang), name the process and why, exit non-zero and leave no process; `--resume` with the same command
then continues from the last checkpoint without changing any finished epoch's weights.

Each case trains mobilenet0.25 at 32 px on 80 tiny images (2 workers x 10 batches of 4 an epoch) and is
killed once rank 0 has written epoch 1's checkpoint, i.e. during epoch 2.
"""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, assert_all_gone, launched_pids, make_images, write_list
from multitask_mx.training import cluster, processes

PY = sys.executable
EPOCHS = 3
STALL = 6  # --stall-timeout of these jobs, s
# what a failure may cost, s: detection (at once for an exit, STALL for a stop) + stopping every process
DETECT_EXIT, DETECT_STALL = 15, STALL + 15
TINY = ["--network", "mobilenet0.25", "--image-shape", "3,32,32", "--batch-size", "4", "--lr", "0.01",
        "--data-nthreads", "1", "--seed", "1", "--num-classes", "4", "--save-name", "net", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    root = tmp / "images"
    return {"root": str(root), "tmp": tmp,
            "train": write_list(tmp / "train.lst", make_images(str(root), 20, seed=1)),
            "val": write_list(tmp / "val.lst", make_images(str(root), 2, seed=2), start_index=200)}


# ---------------------------------------------------------------- the watch, with small stand-in processes

def _beating(code, cpu="time.process_time()"):
    """A stand-in node that writes launch's heartbeat every 0.2 s (as cluster.start_heartbeat does) and runs ``code``."""
    beat = ("import os, threading, time\n"
            "def beat():\n"
            "    while True:\n"
            "        os.write(1, ('%s cpu=%%.3f\\n' %% (%s)).encode()); time.sleep(0.2)\n"
            "threading.Thread(target=beat, daemon=True).start()\n" % (cluster.HEARTBEAT_MARK, cpu))
    return beat + code


def _stand_in(role, slot, code):
    return cluster.Node(role, slot, {"PYTHONUNBUFFERED": "1"}, [PY, "-c", code])


def test_a_worker_that_stops_beating_is_named_and_every_process_ends(tmp_path, caplog):
    stops = "time.sleep(1.5); os.kill(os.getpid(), 19); time.sleep(120)"  # SIGSTOP to itself
    busy = "while True: pass"  # keeps its CPU time moving: the job is not stuck, one worker is stopped
    nodes = [_stand_in("scheduler", 0, _beating("time.sleep(120)")),
             _stand_in("worker", 0, _beating(busy)), _stand_in("worker", 1, _beating(stops))]
    tic = time.time()
    code = processes.run_nodes(nodes, str(tmp_path), timeout=60, echo=None, grace=1.0, stall=2.0)
    assert code == 1 and time.time() - tic < 15
    assert "worker 1 sent no heartbeat for 2 s (--stall-timeout 2): it is stopped (state T" in caplog.text
    assert_all_gone(launched_pids(str(tmp_path)))
    assert cluster.HEARTBEAT_MARK not in open(tmp_path / "worker-0.log").read()  # beats stay out of the logs


def test_workers_that_beat_but_use_no_cpu_are_a_stuck_job(tmp_path, caplog):
    idle = _beating("time.sleep(120)", cpu="0.5")  # alive, but waiting: CPU time does not move
    busy_then_idle = _beating("end = time.time() + 1\nwhile time.time() < end: pass\ntime.sleep(120)")
    nodes = [_stand_in("worker", 0, idle), _stand_in("worker", 1, busy_then_idle)]
    tic = time.time()
    assert processes.run_nodes(nodes, str(tmp_path), timeout=60, echo=None, grace=1.0, stall=3.0) == 1
    assert 3 < time.time() - tic < 20
    assert "the job is stuck: for 3 s (--stall-timeout) every worker was alive but none used CPU" in caplog.text
    assert_all_gone(launched_pids(str(tmp_path)))


def test_a_worker_that_said_done_may_fall_silent(tmp_path):
    done = ("import os, time\nos.write(1, b'%s cpu=0.1\\n'); time.sleep(0.3)\n"
            "os.write(1, b'%s done\\n'); time.sleep(4)" % (cluster.HEARTBEAT_MARK, cluster.HEARTBEAT_MARK))
    nodes = [_stand_in("worker", 0, done)]
    assert processes.run_nodes(nodes, str(tmp_path), timeout=60, echo=None, grace=1.0, stall=1.0) == 0


# ---------------------------------------------------------------- real jobs through launch

def launch_argv(data, save, *extra, epochs=EPOCHS):
    return [PY, "-m", "multitask_mx", "launch", "-n", "2", "-s", "1", "--timeout", "150", "--stall-timeout",
            str(STALL), "--", "train", "--kv-store", "dist_sync", "--data-train", data["train"], "--image-train",
            data["root"], "--data-val", data["val"], "--image-val", data["root"], "--save-result", save,
            "--num-epoch", str(epochs)] + TINY + list(extra)


def _wait_for(path, proc, seconds=120):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        assert proc.poll() is None, "launch ended before %s appeared:\n%s" % (path, proc.communicate()[1][-3000:])
        assert time.time() < deadline, "no %s after %d s" % (path, seconds)
        time.sleep(0.05)


def _process(save, role, slot):
    with open(os.path.join(save, "launch", "processes.json")) as f:
        return next(p for p in json.load(f) if p["role"] == role and p["slot"] == slot)


def _checkpoints(save):
    """sha256 of every epoch's .params and .states."""
    return {name: hashlib.sha256(open(os.path.join(save, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(save)) if name.startswith("net-0") and name.endswith((".params", ".states"))}


def fail_during_epoch_2(data, save, role, slot, sig):
    """Start the job, send ``sig`` to one process once epoch 1 is saved: (stderr, seconds from signal to exit)."""
    proc = subprocess.Popen(launch_argv(data, save), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        for name in ("net-0001.params", "net-0001.states", "history.json"):  # epoch 1 is saved: epoch 2 runs
            _wait_for(os.path.join(save, name), proc)
        os.kill(_process(save, role, slot)["pid"], sig)
        tic = time.time()
        _, err = proc.communicate(timeout=120)
        seconds = time.time() - tic
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    assert_all_gone(launched_pids(os.path.join(save, "launch")))
    return err, seconds


def resume_and_check(data, save):
    """`--resume` with the same command: every epoch in the history once, finished epochs' files unchanged."""
    before, history_before = _checkpoints(save), json.load(open(os.path.join(save, "history.json")))
    done = [r["epoch"] for r in history_before]
    assert done and done == list(range(1, len(done) + 1)) and len(done) < EPOCHS
    proc = subprocess.run(launch_argv(data, save, "--resume"), cwd=REPO, capture_output=True, text=True,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.load(open(os.path.join(save, "history.json")))
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert history[:len(done)] == history_before  # the finished epochs' records are kept as they were
    after = _checkpoints(save)
    assert {k: after[k] for k in before} == before  # nothing finished was rewritten
    assert "resuming after epoch %d" % done[-1] in open(os.path.join(save, "train.log")).read()


@pytest.mark.slow
def test_worker_killed_ends_the_job_at_once_and_resume_loses_nothing(data):
    save = str(data["tmp"] / "worker-killed")
    err, seconds = fail_during_epoch_2(data, save, "worker", 1, signal.SIGKILL)
    assert seconds < DETECT_EXIT, seconds
    assert re.search(r"launch: worker (1|\d/2 \(slot 1\)) was killed by SIGKILL; every other process was stopped", err)
    resume_and_check(data, save)


@pytest.mark.slow
@pytest.mark.parametrize("role", ["server", "scheduler"])
def test_server_or_scheduler_killed_ends_the_job_at_once(data, role):
    save = str(data["tmp"] / ("%s-killed" % role))
    err, seconds = fail_during_epoch_2(data, save, role, 0, signal.SIGKILL)
    assert seconds < DETECT_EXIT, seconds
    assert "launch: %s was killed by SIGKILL; every other process was stopped" % \
        ("server 0" if role == "server" else role) in err


@pytest.mark.slow
def test_stopped_worker_is_found_by_its_missing_heartbeat_and_resume_loses_nothing(data):
    save = str(data["tmp"] / "worker-stopped")
    err, seconds = fail_during_epoch_2(data, save, "worker", 0, signal.SIGSTOP)
    assert STALL <= seconds < DETECT_STALL, seconds
    assert re.search(r"launch: worker (0|\d/2 \(slot 0\)) sent no heartbeat for \d+ s", err)
    assert "it is stopped (state T: SIGSTOP" in err
    resume_and_check(data, save)

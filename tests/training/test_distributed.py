"""Distributed training: the launcher's plans and process handling, the kvstore checks, and
real 2-worker + 1-server jobs on loopback through `python -m multitask_mx launch`.

The fast tests start only small Python processes; the slow ones train tiny networks.
"""
import io
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, assert_all_gone, launch_loopback, launched_pids, make_images, write_list
from multitask_mx import cli
from multitask_mx.training import distributed, cluster as launch, processes
from multitask_mx.errors import UserInputError
from multitask_mx.data.lists import ImageList, ListEntry

import mxnet as mx

PY = sys.executable


# ---------------------------------------------------------------- hostfile and plans

def test_hostfile_parses_hosts_ports_users_and_comments(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("# the cluster\n10.0.0.2\n\nalice@node3:2222   # second box\n[fe80::1]:22\n")
    hosts = launch.parse_hostfile(str(path))
    assert hosts == [launch.Host("10.0.0.2", 22), launch.Host("alice@node3", 2222), launch.Host("[fe80::1]", 22)]
    assert [h.address for h in hosts] == ["10.0.0.2", "node3", "fe80::1"]


@pytest.mark.parametrize("line", ["node1:ssh", "node 2", "node3:70000", "node4 slots=4", "node5:"])
def test_bad_hostfile_line_is_named(tmp_path, line):
    path = tmp_path / "hosts"
    path.write_text("10.0.0.2\n# comment\n%s\n" % line)
    with pytest.raises(UserInputError) as err:
        launch.parse_hostfile(str(path))
    assert "%s:3:" % path in str(err.value) and "host:ssh_port" in str(err.value)


def test_empty_or_missing_hostfile(tmp_path):
    (tmp_path / "hosts").write_text("# nothing yet\n\n")
    with pytest.raises(UserInputError, match="lists no host"):
        launch.parse_hostfile(str(tmp_path / "hosts"))
    with pytest.raises(UserInputError, match="does not exist"):
        launch.parse_hostfile(str(tmp_path / "none"))


def test_local_plan_binds_every_node_to_loopback():
    argv = [PY, "-m", "multitask_mx", "train", "--kv-store", "dist_sync"]
    nodes = launch.plan_local(2, 1, argv, worker_threads=1)
    assert [n.label for n in nodes] == ["scheduler", "server 0", "worker 0", "worker 1"]
    root_port = nodes[0].env["DMLC_PS_ROOT_PORT"]
    for node in nodes:
        env = node.env
        assert env["DMLC_ROLE"] == node.role and env["DMLC_PS_ROOT_PORT"] == root_port
        assert env["DMLC_PS_ROOT_URI"] == env["DMLC_NODE_HOST"] == "127.0.0.1" and env["DMLC_INTERFACE"] == "lo"
        assert (env["DMLC_NUM_WORKER"], env["DMLC_NUM_SERVER"]) == ("2", "1")
        assert env["OMP_NUM_THREADS"] == "1" and node.host is None
    ports = [int(root_port)] + [int(n.env["DMLC_PORT"]) for n in nodes[1:]]
    assert len(set(ports)) == 4
    assert nodes[2].argv == argv and nodes[0].argv == launch.node_command()
    fixed = launch.plan_local(2, 1, argv, port=9100)
    assert [n.env.get("DMLC_PORT", n.env["DMLC_PS_ROOT_PORT"]) for n in fixed] == ["9100", "9101", "9102", "9103"]


def test_ssh_plan_builds_quoted_command_lines():
    hosts = [launch.Host("10.0.0.2"), launch.Host("alice@node3", 2222)]
    argv = [PY, "-m", "multitask_mx", "train", "--kv-store", "dist_sync", "--save-result", "/data/my run"]
    nodes = launch.plan_ssh(2, 2, hosts, argv, "10.0.0.1", port=9000, interface="eth0", workdir="/srv/code",
                            python="/opt/venv/bin/python")
    assert [n.label for n in nodes] == ["scheduler", "server 0", "server 1", "worker 0", "worker 1"]
    scheduler = nodes[0]
    assert scheduler.host is None and scheduler.argv == launch.node_command()  # --remote-python is the hosts' one
    assert scheduler.env["DMLC_PS_ROOT_URI"] == scheduler.env["DMLC_NODE_HOST"] == "10.0.0.1"
    assert scheduler.env["DMLC_PS_ROOT_PORT"] == "9000"
    # servers first, then workers, round-robin over the hosts
    assert [n.host.name for n in nodes[1:]] == ["10.0.0.2", "alice@node3", "10.0.0.2", "alice@node3"]
    for i, node in enumerate(nodes[1:]):
        ssh = node.argv
        assert ssh[0] == "ssh" and "-tt" in ssh and "BatchMode=yes" in ssh
        assert ssh[ssh.index("-p") + 1] == str(node.host.port) and ssh[-2] == node.host.name
        remote = shlex.split(ssh[-1])
        assert remote[:5] == ["cd", "/srv/code", "&&", "exec", "env"]
        env = dict(item.split("=", 1) for item in remote[5:] if "=" in item and item.startswith(("DMLC", "PY")))
        assert env["DMLC_ROLE"] == node.role and env["DMLC_PS_ROOT_URI"] == "10.0.0.1"
        assert env["DMLC_PS_ROOT_PORT"] == "9000" and env["DMLC_PORT"] == str(9001 + i)
        assert env["DMLC_INTERFACE"] == "eth0" and env["DMLC_NUM_WORKER"] == "2"
        # an IP address is given to ps-lite to bind to; a host name is not
        assert env.get("DMLC_NODE_HOST") == ("10.0.0.2" if node.host.name == "10.0.0.2" else None)
        command = remote[remote.index("/opt/venv/bin/python"):]
        if node.role == "worker":
            assert command == ["/opt/venv/bin/python"] + argv[1:]  # "/data/my run" stays one argument
        else:
            assert command == launch.node_command("/opt/venv/bin/python")


def test_launch_dry_run_prints_the_ssh_command_lines(tmp_path, capsys):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("10.0.0.2\n10.0.0.3:2200\n")
    code = cli.main(["launch", "-n", "2", "-s", "1", "--launcher", "ssh", "-H", str(hostfile), "--scheduler-host",
                     "10.0.0.1", "--dry-run", "--", "train", "--kv-store", "dist_sync", "--save-result", "out"])
    out = capsys.readouterr().out
    assert code == 0
    lines = [l for l in out.splitlines() if not l.startswith("    ")]
    assert [l.split(":", 1)[0] for l in lines] == ["scheduler", "server 0", "worker 0", "worker 1"]
    assert "ssh -tt" in lines[1] and "-p 2200 10.0.0.3" in lines[2] and "-p 22 10.0.0.2" in lines[3]
    assert "DMLC_ROLE=worker" in lines[3] and "-m multitask_mx train --kv-store dist_sync" in lines[3]


@pytest.mark.parametrize("argv, message", [
    (["-n", "2", "-s", "1", "--", "train", "--save-result", "out"], "needs --kv-store dist_sync"),
    (["-n", "2", "-s", "1", "--", "train", "--kv-store", "device"], "every worker would train alone"),
    (["-n", "2", "-s", "1", "--", "evaluate", "--kv-store", "dist_sync"], "launch runs the train command"),
    (["-n", "2", "--launcher", "ssh", "--", "train", "--kv-store", "dist_sync"], "needs -H HOSTFILE"),
    (["-n", "0", "--", "train", "--kv-store", "dist_sync"], "-n/--num-workers: 0: give 1 or more"),
])
def test_launch_refuses_bad_requests_before_starting_anything(argv, message, capsys):
    assert cli.main(["launch"] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_launch_names_the_bad_hostfile_line(tmp_path, capsys):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("10.0.0.2\nnode 3\n")
    assert cli.main(["launch", "-n", "2", "--launcher", "ssh", "-H", str(hostfile), "--dry-run", "--", "train",
                     "--kv-store", "dist_sync"]) == 2
    assert "%s:2: 'node 3' is not a host" % hostfile in capsys.readouterr().err


# ---------------------------------------------------------------- kvstore checks and sharding

def test_dist_kvstore_without_launcher_points_to_launch(monkeypatch, tiny_data, tmp_path, capsys):
    for name in distributed.DMLC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    code = cli.main(["train", "--data-train", tiny_data["train"], "--save-result", str(tmp_path / "s"),
                     "--kv-store", "dist_sync"])
    err = capsys.readouterr().err
    assert code == 2 and "multitask-mx launch -n WORKERS -s SERVERS" in err and "DMLC_ROLE" in err
    assert not os.path.exists(tmp_path / "s")


def test_unknown_kvstore_and_worker_without_dist_kvstore(monkeypatch):
    with pytest.raises(UserInputError, match="choose one of device, local, nccl, dist_sync"):
        distributed.create_kvstore("dist_snyc")
    monkeypatch.setenv("DMLC_ROLE", "worker")
    with pytest.raises(UserInputError, match="trains alone"):
        distributed.create_kvstore("device")


def _image_list(n):
    return ImageList("train.lst", "/images", [ListEntry(i + 1, i, (i % 4,), "/images/%d.jpg" % i) for i in range(n)])


@pytest.mark.parametrize("n, workers", [(10, 3), (9, 3), (7, 2), (2, 2)])
def test_shards_have_equal_lengths_and_cover_the_list(n, workers):
    shards = [distributed.shard_list(_image_list(n), rank, workers) for rank in range(workers)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // workers)
    assert {e.index for s in shards for e in s.entries} == set(range(n))
    assert distributed.shard_list(_image_list(n), 0, 1).entries == _image_list(n).entries


def test_shard_padding_is_not_reported_as_duplicate_paths(caplog):
    from multitask_mx.data.datasets import preflight_report
    from multitask_mx.data.lists import find_duplicates
    from multitask_mx.data.tasks import build_tasks
    shard = distributed.shard_list(_image_list(7), 1, 2)  # lines 2, 4, 6, then line 2 again as padding
    assert shard.lines.tolist() == [2, 4, 6, 2]
    assert find_duplicates(shard) == {}
    with caplog.at_level(logging.WARNING):
        preflight_report(build_tasks([4]), shard)
    assert "more than one line" not in caplog.text


def test_more_workers_than_images_is_refused():
    with pytest.raises(UserInputError, match="train.lst has 2 image.*3 workers"):
        distributed.shard_list(_image_list(2), 0, 3)


def test_epoch_size_and_gradient_scale_follow_the_kvstore():
    sync = SimpleNamespace(type="dist_sync", num_workers=4, rank=1)
    async_kv = SimpleNamespace(type="dist_async", num_workers=4, rank=1)
    local = SimpleNamespace(type="device", num_workers=1, rank=0)
    assert distributed.updates_per_epoch(1000, 10, sync) == 25  # one update per global batch of 40
    assert distributed.updates_per_epoch(1000, 10, async_kv) == 100  # the servers update on every push
    assert distributed.updates_per_epoch(1000, 10, local) == 100
    assert distributed.gradient_scale(sync) == 0.25 and distributed.gradient_scale(async_kv) == 1.0
    assert distributed.rank_label(sync) == "[worker 1/4]" and distributed.rank_label(local) == ""


# ---------------------------------------------------------------- the launcher with small stand-in processes

def _node(role, slot, code):
    return launch.Node(role, slot, {"PYTHONUNBUFFERED": "1"}, [PY, "-c", code])


def test_successful_job_logs_each_process_and_echoes_with_its_label(tmp_path):
    nodes = [_node("scheduler", 0, "import time; time.sleep(0.5)"),
             _node("worker", 0, "print('[worker 1/2] one'); print('two')"),
             _node("worker", 1, "print('[worker 0/2] three')")]
    echo = io.StringIO()
    assert processes.run_nodes(nodes, str(tmp_path), timeout=30, echo=echo) == 0
    assert open(tmp_path / "worker-0.log").read() == "[worker 1/2] one\ntwo\n"
    lines = echo.getvalue().splitlines()
    assert "[worker 1/2] one" in lines and "[worker 1/2] two" in lines and "[worker 0/2] three" in lines
    assert_all_gone(launched_pids(str(tmp_path)))


def test_failing_worker_stops_every_other_process_and_its_children(tmp_path, caplog):
    child_file = tmp_path / "child.pid"
    spawner = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', "
               "'import time; time.sleep(120)']); open(%r, 'w').write(str(c.pid)); time.sleep(120)" % str(child_file))
    nodes = [_node("scheduler", 0, "import time; time.sleep(120)"),
             _node("server", 0, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"),
             _node("worker", 0, spawner),
             _node("worker", 1, "import sys, time; time.sleep(1.5); print('[worker 1/2] bad flag'); sys.exit(3)")]
    tic = time.time()
    with caplog.at_level(logging.INFO, logger="multitask_mx.training.processes"):
        code = processes.run_nodes(nodes, str(tmp_path / "logs"), timeout=60, echo=None, grace=1.0)
    assert code == 1 and time.time() - tic < 20
    assert "worker 1/2 (slot 1) exited with status 3" in caplog.text and "    [worker 1/2] bad flag" in caplog.text
    assert_all_gone(launched_pids(str(tmp_path / "logs")) + [int(child_file.read_text())])


def test_timeout_stops_a_job_that_hangs(tmp_path, caplog):
    nodes = [_node("scheduler", 0, "import time; time.sleep(120)"), _node("worker", 0, "import time; time.sleep(120)")]
    tic = time.time()
    code = processes.run_nodes(nodes, str(tmp_path), timeout=1.0, echo=None, grace=1.0)
    assert code == 1 and time.time() - tic < 15
    assert "--timeout 1 s passed" in caplog.text
    assert_all_gone(launched_pids(str(tmp_path)))


def test_server_ending_early_is_a_failure(tmp_path, caplog):
    nodes = [_node("server", 0, "print('bind failed')"), _node("worker", 0, "import time; time.sleep(120)")]
    # the server exits 0 while the worker runs; the worker is stopped after the grace period
    assert processes.run_nodes(nodes, str(tmp_path), timeout=60, echo=None, grace=1.0) == 1
    assert "still ran 1 s after the scheduler and servers had ended" in caplog.text
    assert_all_gone(launched_pids(str(tmp_path)))


def test_sigterm_to_the_launcher_stops_every_process(tmp_path):
    script = "\n".join([
        "import sys", "from multitask_mx.training import cluster as launch, processes",
        "sleep = [sys.executable, '-c', 'import time; time.sleep(120)']",
        "nodes = [launch.Node('scheduler', 0, {}, sleep), launch.Node('worker', 0, {}, sleep)]",
        "sys.exit(processes.run_nodes(nodes, %r, echo=None, grace=1.0))" % str(tmp_path)])
    proc = subprocess.Popen([PY, "-c", script], cwd=REPO)
    deadline = time.time() + 30
    while not (tmp_path / "processes.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.terminate()
    assert proc.wait(timeout=30) == 143
    assert_all_gone(launched_pids(str(tmp_path)))


# ---------------------------------------------------------------- real jobs on loopback

SMALL = ["--network", "resnet18_v1", "--image-shape", "3,32,32", "--batch-size", "8", "--lr", "0.001",
         "--data-nthreads", "1", "--seed", "1", "--num-classes", "4", "--save-name", "net"]


def launch_train(data, save, kv_store, *extra, timeout=150, workers=2):
    """`python -m multitask_mx launch -n 2 -s 1 -- train ...` with SMALL: (completed process, seconds)."""
    return launch_loopback(data, save, kv_store, SMALL + list(extra), timeout=timeout, workers=workers)


def load_params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(path).items()}


def assert_same_weights(ranks_dir):
    a, b = (load_params(os.path.join(ranks_dir, "final-%d.params" % r)) for r in (0, 1))
    assert a.keys() == b.keys() and len(a) > 50
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    root = tmp / "images"
    return {"root": str(root), "tmp": tmp,
            "train": write_list(tmp / "train.lst", make_images(str(root), 10, seed=1)),
            "val": write_list(tmp / "val.lst", make_images(str(root), 2, seed=2), start_index=100)}


@pytest.fixture(scope="module")
def sync_run(data):
    """3 epochs of dist_sync on 2 workers + 1 server; each worker also dumps its final weights."""
    save, ranks = str(data["tmp"] / "save"), str(data["tmp"] / "ranks")
    proc, seconds = launch_train(data, save, "dist_sync", "--num-epoch", "3",
                                 "--dump-rank-params", os.path.join(ranks, "final-{rank}.params"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"save": save, "ranks": ranks, "proc": proc, "seconds": seconds}


@pytest.mark.slow
def test_two_workers_finish_with_identical_weights_and_falling_loss(sync_run):
    assert "all 2 worker(s) finished" in sync_run["proc"].stderr
    assert_same_weights(sync_run["ranks"])
    history = json.load(open(os.path.join(sync_run["save"], "history.json")))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    losses = [r["train_loss"] for r in history]
    assert losses[-1] < losses[0], losses
    # train metrics are summed over both workers' batches (a shard has 20 images), validation is rank 0's, whole
    assert all(r["train"]["label"]["count"] % 16 == 0 and r["train"]["label"]["count"] > 20 for r in history)
    assert history[0]["val"]["label"]["count"] == 8
    # the checkpoint rank 0 wrote holds the same weights the workers ended with
    saved = {k.split(":", 1)[-1]: v for k, v in load_params(os.path.join(sync_run["save"], "net-0003.params")).items()}
    final = load_params(os.path.join(sync_run["ranks"], "final-1.params"))
    assert sorted(v.sum() for v in saved.values()) == pytest.approx(sorted(v.sum() for v in final.values()))


@pytest.mark.slow
def test_only_rank_0_wrote_into_the_save_dir(sync_run):
    save = sync_run["save"]
    expected = {"config.json", "history.json", "history.csv", "train.log", "curves.png", "best.json",
                "net-symbol.json", "net-best.params", "launch", ".lock"} | \
        {"net-%04d.%s" % (e, ext) for e in (1, 2, 3) for ext in ("params", "states")}
    assert set(os.listdir(save)) == expected  # no temporary file or second copy of anything
    log = open(os.path.join(save, "train.log")).read()
    assert "[worker 0/2]" in log and "[worker 1/2]" not in log
    logs = set(os.listdir(os.path.join(save, "launch")))
    assert logs == {"launch.log", "processes.json", "scheduler.log", "server-0.log", "worker-0.log", "worker-1.log"}
    worker_logs = "".join(open(os.path.join(save, "launch", "worker-%d.log" % i)).read() for i in (0, 1))
    assert "Traceback" not in worker_logs


@pytest.mark.slow
def test_resume_continues_a_distributed_run_on_every_worker(sync_run, data):
    ranks = str(data["tmp"] / "ranks-resumed")
    proc, _ = launch_train(data, sync_run["save"], "dist_sync", "--num-epoch", "4", "--resume",
                           "--dump-rank-params", os.path.join(ranks, "final-{rank}.params"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    launch_dir = os.path.join(sync_run["save"], "launch")
    for slot in (0, 1):
        assert "resuming after epoch 3" in open(os.path.join(launch_dir, "worker-%d.log" % slot)).read()
    history = json.load(open(os.path.join(sync_run["save"], "history.json")))
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert_same_weights(ranks)


@pytest.mark.slow
def test_failing_worker_stops_the_job_and_every_process(data):
    # the second line is in one worker's shard only: that worker stops at the image check, the other waits for it
    bad = data["tmp"] / "bad.lst"
    lines = open(data["train"]).read().splitlines()
    lines[1] = lines[1].rsplit("\t", 1)[0] + "\tcircle/not_there.jpg"
    bad.write_text("\n".join(lines) + "\n")
    save = str(data["tmp"] / "failed")
    proc, seconds = launch_train(dict(data, train=str(bad)), save, "dist_sync", "--num-epoch", "1", timeout=120)
    assert proc.returncode == 1 and seconds < 60
    assert "exited with status 2; every other process was stopped" in proc.stderr
    assert "not_there.jpg does not exist" in proc.stderr.split("Last lines of")[-1]
    assert_all_gone(launched_pids(os.path.join(save, "launch")))


@pytest.mark.slow
def test_dist_async_trains_and_resumes(data):
    save = str(data["tmp"] / "async")
    proc, _ = launch_train(data, save, "dist_async", "--num-epoch", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, _ = launch_train(data, save, "dist_async", "--num-epoch", "2", "--resume", "--lr-scheduler", "cosine")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the lr schedule continues from update 5" in open(os.path.join(save, "train.log")).read()
    assert [r["epoch"] for r in json.load(open(os.path.join(save, "history.json")))] == [1, 2]


@pytest.mark.slow
def test_dist_device_sync_trains_to_identical_weights_on_cpu_workers(data):
    # dist_device_sync sums on the workers' devices before the servers (GPUs in practice); on CPU the same
    # code path runs with cpu contexts, so the two workers must still end with the same weights
    save, ranks = str(data["tmp"] / "device_sync"), str(data["tmp"] / "ranks-device-sync")
    proc, _ = launch_train(data, save, "dist_device_sync", "--num-epoch", "2",
                           "--dump-rank-params", os.path.join(ranks, "final-{rank}.params"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "kvstore dist_device_sync" in open(os.path.join(save, "train.log")).read()
    assert_same_weights(ranks)
    history = json.load(open(os.path.join(save, "history.json")))
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(r["train"]["label"]["count"] > 20 for r in history)  # both workers' batches are counted

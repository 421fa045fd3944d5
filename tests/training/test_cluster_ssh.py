"""`launch --launcher ssh` across three hosts made of network namespaces (tests/cluster/netns.sh): a real
ssh hop to each host, real TCP between them, and the requirements of docs/distributed.md broken for real
(a host that refuses ssh, a wrong --remote-python, a list missing on one host, a firewall between a worker and
a server). Each failing job must end within its stated time, name the host, and leave no process on any host.
A dist_sync run across the hosts must end bit for bit like the same run on loopback, and Horovod (launch --engine
horovod --launcher ssh) must train across two hosts and end a job whose worker fails on one of them.

Needs root, iproute2 and Debian's openssh-server (CI installs them); elsewhere every test skips, saying why.
Traffic goes only to the namespaces' addresses (10.213.7.0/24, routed through their bridge: netns.sh checks).
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO, launch_loopback, make_images, needs_horovod, why_no_namespaces, write_list

PY = sys.executable
NETNS = os.path.join(REPO, "tests", "cluster", "netns.sh")
STATE = "/tmp/mtx-netns-test"
ME = "10.213.7.1"  # this machine on the bridge: the scheduler's address
H1, H2, H3 = "10.213.7.2", "10.213.7.3", "10.213.7.4"
STALL = 10
TINY = ["--network", "mobilenet0.25", "--image-shape", "3,32,32", "--batch-size", "4", "--lr", "0.01",
        "--data-nthreads", "1", "--seed", "1", "--num-classes", "4", "--save-name", "net", "--quiet"]


def _host_processes():
    """{namespace: pids other than its sshd} of the three hosts."""
    left = {}
    for i in (1, 2, 3):
        pids = subprocess.run(["ip", "netns", "pids", "mtx-h%d" % i], capture_output=True, text=True).stdout.split()
        sshd = open(os.path.join(STATE, "sshd_%d.pid" % i)).read().strip()
        others = [p for p in pids if p != sshd]
        if others:
            left["mtx-h%d" % i] = others
    return left


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    reason = why_no_namespaces()
    if reason:
        pytest.skip(reason)
    up = subprocess.run(["bash", NETNS, "up", STATE], capture_output=True, text=True, timeout=120)
    try:
        if up.returncode:
            pytest.skip("netns.sh up failed (%d): %s" % (up.returncode, up.stderr.strip()[-500:]))
        tmp = tmp_path_factory.mktemp("ssh")
        root = tmp / "images"
        yield {"root": str(root), "tmp": tmp, "config": os.path.join(STATE, "ssh_config"),
               "train": write_list(tmp / "train.lst", make_images(str(root), 10, seed=1)),
               "val": write_list(tmp / "val.lst", make_images(str(root), 2, seed=2), start_index=100)}
    finally:
        subprocess.run(["bash", NETNS, "down", STATE], capture_output=True, timeout=60)


def hostfile(data, *names):
    path = data["tmp"] / ("hosts-%s.txt" % "-".join(n.rsplit(".", 1)[-1].replace(":", "p") for n in names))
    path.write_text("".join(n + "\n" for n in names))
    return str(path)


def train_command(data, save, kv_store, epochs, train=None):
    """The train command after launch's ``--``: TINY on the fixture's lists."""
    train_flags = train if train is not None else ["--data-train", data["train"]]
    return ["train", "--kv-store", kv_store, "--image-train", data["root"], "--data-val", data["val"],
            "--image-val", data["root"], "--save-result", save, "--num-epoch", str(epochs)] + train_flags + TINY


def run_on_hosts(argv, timeout, env=None):
    """Run ``argv`` (a launch) to its end, then check that it left no process on the hosts: (process, seconds)."""
    tic = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=dict(os.environ, **(env or {})))
    assert not _host_processes(), "processes left on the hosts: %s" % _host_processes()
    return proc, time.time() - tic


def launch(data, hosts_txt, save, kv_store="dist_sync", workers=2, launch_flags=(), train=None, timeout=150,
           epochs=2, env=None):
    """`launch --launcher ssh` as a user runs it: (completed process, seconds)."""
    argv = [PY, "-m", "multitask_mx", "launch", "-n", str(workers), "-s", "1", "--launcher", "ssh", "-H",
            hosts_txt, "--ssh-config", data["config"], "--scheduler-host", ME, "--timeout", str(timeout - 30),
            "--stall-timeout", str(STALL)] + list(launch_flags) + ["--"] + \
        train_command(data, save, kv_store, epochs, train)
    return run_on_hosts(argv, timeout, env)


def assert_evaluate_matches_history(data, save, name):
    """`evaluate` of epoch 1's checkpoint (rank 0's) gives the loss and accuracy rank 0 validated."""
    report = str(data["tmp"] / ("evaluate-%s.json" % name))
    out = subprocess.run([PY, "-m", "multitask_mx", "evaluate", "--save-result", save, "--epoch", "1", "--data",
                          data["val"], "--image-root", data["root"], "--json", report, "--quiet"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    history = json.load(open(os.path.join(save, "history.json")))
    label = json.load(open(report))["tasks"]["label"]
    assert label["accuracy"] == history[-1]["val"]["label"]["acc"]
    assert label["loss"] == pytest.approx(history[-1]["val"]["label"]["loss"], rel=1e-4)


# One OpenMP thread per worker, where the loopback run is compared with the one across hosts: oneDNN's kernels
# split their sums by thread, so another thread count gives other last digits.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def sync_across_hosts(hosts):
    """One epoch of dist_sync: the scheduler here, the server and a worker on host 1, the other worker on host 2."""
    save = str(hosts["tmp"] / "sync")
    proc, _ = launch(hosts, hostfile(hosts, H1, H2), save, epochs=1, env=ONE_THREAD)
    return {"save": save, "proc": proc}


@pytest.mark.slow
def test_dist_sync_across_hosts_trains_and_evaluate_loads_its_checkpoint(hosts, sync_across_hosts):
    proc, save = sync_across_hosts["proc"], sync_across_hosts["save"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "server 0 (pid" in proc.stderr and "on %s" % H1 in proc.stderr and "on %s" % H2 in proc.stderr
    history = json.load(open(os.path.join(save, "history.json")))
    assert [r["epoch"] for r in history] == [1] and history[0]["train"]["label"]["count"] == 40
    # rank 0's checkpoint is the model it validated: the same loss and accuracy on the same images
    assert_evaluate_matches_history(hosts, save, "sync")


@pytest.mark.slow
def test_dist_sync_across_hosts_validates_like_the_loopback_run(hosts, sync_across_hosts):
    assert sync_across_hosts["proc"].returncode == 0, sync_across_hosts["proc"].stderr[-3000:]
    save = str(hosts["tmp"] / "sync-loopback")
    proc, _ = launch_loopback(hosts, save, "dist_sync", ["--num-epoch", "1"] + TINY, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    across, here = (json.load(open(os.path.join(s, "history.json")))[-1] for s in (sync_across_hosts["save"], save))
    # The tolerance is zero: both runs have the same seed, shards, start weights and one thread per worker, and the
    # server adds the same two gradients (a sum of two is the same in either order), so the network in between
    # changes no bit. Another thread count is not noise to allow for: it changes the last digits of every step, and
    # this tiny network's validation loss then ends far away after one epoch.
    assert (across["val"], across["train_loss"]) == (here["val"], here["train_loss"]), (across, here)
    params = [open(os.path.join(s, "net-0001.params"), "rb").read() for s in (sync_across_hosts["save"], save)]
    assert params[0] == params[1], "the checkpoints differ, not only in the metrics"


def launch_horovod(data, hosts_txt, save, train=None):
    """`launch --engine horovod --launcher ssh`, run on host 1 as one runs horovodrun on a node of the cluster.

    horovodrun's rendezvous listens on --interface, which every host has (eth0) and this machine (mtxbr0) has not.
    """
    argv = ["ip", "netns", "exec", "mtx-h1", PY, "-m", "multitask_mx", "launch", "--engine", "horovod", "-n", "2",
            "--launcher", "ssh", "-H", hosts_txt, "--ssh-config", data["config"], "--interface", "eth0",
            "--timeout", "90", "--stall-timeout", str(STALL), "--"] + train_command(data, save, "horovod", 1, train)
    return run_on_hosts(argv, 120)


@needs_horovod
@pytest.mark.slow
def test_horovod_across_hosts_trains_and_evaluate_loads_rank_0_checkpoint(hosts):
    save = str(hosts["tmp"] / "horovod")
    proc, _ = launch_horovod(hosts, hostfile(hosts, H2, H3), save)  # rank 0 on host 2, rank 1 on host 3
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    history = json.load(open(os.path.join(save, "history.json")))
    assert [r["epoch"] for r in history] == [1] and history[0]["train"]["label"]["count"] == 40
    log = open(os.path.join(save, "train.log")).read()
    assert "kvstore horovod" in log and "[worker 0/2]" in log and "[worker 1/2]" not in log
    assert_evaluate_matches_history(hosts, save, "horovod")


@needs_horovod
@pytest.mark.slow
def test_horovod_worker_failing_on_one_host_ends_the_job_everywhere(hosts):
    # the list is missing on host 3 only: rank 1 stops, and horovodrun ends rank 0 on host 2 through its ssh
    hidden = os.path.join(STATE, "hidden", "train.lst")
    shutil.copy(hosts["train"], hidden)
    proc, seconds = launch_horovod(hosts, hostfile(hosts, H2, H3), str(hosts["tmp"] / "horovod-missing"),
                                   train=["--data-train", hidden])
    assert proc.returncode == 1 and seconds < 60, (seconds, proc.stderr[-2000:])
    assert "[1]<stdout>:error: list file '%s' does not exist" % hidden in proc.stdout + proc.stderr


@pytest.mark.slow
def test_dist_async_across_hosts(hosts):
    save = str(hosts["tmp"] / "async")
    proc, _ = launch(hosts, hostfile(hosts, H2, H1), save, kv_store="dist_async", epochs=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["epoch"] for r in json.load(open(os.path.join(save, "history.json")))] == [1]


@pytest.mark.slow
def test_host_that_refuses_ssh_is_named_with_what_to_do(hosts):
    # nothing listens on port 2299 of host 1: ssh is refused at once
    proc, seconds = launch(hosts, hostfile(hosts, H1 + ":2299", H2), str(hosts["tmp"] / "refused"), timeout=60)
    assert proc.returncode == 1 and seconds < 30, (seconds, proc.stderr[-2000:])
    assert "On host %s: ssh to %s failed" % (H1, H1) in proc.stderr and "ssh -p 2299 %s true" % H1 in proc.stderr
    assert "Connection refused" in proc.stderr


@pytest.mark.slow
def test_wrong_remote_python_is_named_with_the_host(hosts):
    proc, seconds = launch(hosts, hostfile(hosts, H1, H2), str(hosts["tmp"] / "python"), timeout=60,
                           launch_flags=["--remote-python", "/opt/no-such-venv/bin/python"])
    assert proc.returncode == 1 and seconds < 30, (seconds, proc.stderr[-2000:])
    assert "the command was not found on" in proc.stderr and "check --remote-python" in proc.stderr


@pytest.mark.slow
def test_list_missing_on_one_host_names_the_host_and_the_file(hosts):
    # STATE/hidden is an empty tmpfs on host 3 only: the list is there for this machine and hosts 1-2
    hidden = os.path.join(STATE, "hidden", "train.lst")
    shutil.copy(hosts["train"], hidden)
    proc, seconds = launch(hosts, hostfile(hosts, H1, H3), str(hosts["tmp"] / "missing"), timeout=90,
                           train=["--data-train", hidden])
    assert proc.returncode == 1 and seconds < 60, (seconds, proc.stderr[-2000:])
    assert "exited with status 2" in proc.stderr and "On host %s." % H3 in proc.stderr
    assert hidden in proc.stderr.split("Last lines of")[-1]


@pytest.mark.slow
def test_firewall_between_worker_and_server_ends_the_stuck_job(hosts):
    # the worker on host 2 cannot reach the server on host 1; ssh (from this machine) still works
    rule = ["OUTPUT", "-d", H1, "-j", "DROP"]
    added = subprocess.run(["ip", "netns", "exec", "mtx-h2", "iptables", "-A"] + rule, capture_output=True, text=True)
    if added.returncode:
        pytest.skip("iptables cannot add a rule in a namespace here: %s" % added.stderr.strip())
    try:
        proc, seconds = launch(hosts, hostfile(hosts, H1, H2), str(hosts["tmp"] / "firewall"), workers=1,
                               timeout=120)
    finally:
        subprocess.run(["ip", "netns", "exec", "mtx-h2", "iptables", "-D"] + rule, capture_output=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "the job is stuck: for %d s" % STALL in proc.stderr and H1 in proc.stderr and H2 in proc.stderr
    assert seconds < 90, seconds

"""Horovod as the second engine: `launch --engine horovod -- train --kv-store horovod` runs horovodrun with Gloo
on loopback (across hosts with --launcher ssh: tests/training/test_cluster_ssh.py). Two processes must end with
identical weights (allreduce of gradients, rank 0's start weights broadcast, BatchNorm statistics averaged), rank 0
alone writes the files, and --resume continues.

The training tests need Horovod built for MXNet (.ci/run builds it; docs/distributed.md says how); without it they
skip, saying so. The refusals run everywhere.
"""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from conftest import REPO, make_images, needs_horovod, write_list
from multitask_mx import cli

PY = sys.executable
TINY = ["--network", "mobilenet0.25", "--image-shape", "3,32,32", "--batch-size", "4", "--lr", "0.01",
        "--data-nthreads", "1", "--seed", "1", "--num-classes", "4", "--save-name", "net", "--quiet"]


def test_horovod_kvstore_outside_horovodrun_points_to_launch(monkeypatch, tiny_data, tmp_path, capsys):
    for name in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(name, raising=False)
    code = cli.main(["train", "--data-train", tiny_data["train"], "--save-result", str(tmp_path / "s"),
                     "--kv-store", "horovod"])
    err = capsys.readouterr().err
    assert code == 2 and "not started by horovodrun" in err and "launch --engine horovod" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--engine", "horovod", "-n", "2", "--", "train", "--kv-store", "dist_sync"], "needs --kv-store horovod"),
    (["-n", "2", "--", "train", "--kv-store", "horovod"], "needs --kv-store dist_sync"),
])
def test_launch_matches_engine_and_kvstore(argv, message, capsys):
    assert cli.main(["launch"] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@needs_horovod
def test_launch_over_ssh_plans_horovodrun_with_the_hosts_and_an_ssh_wrapper(tmp_path, capsys):
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.2:2222\n10.0.0.3:2222\n")
    code = cli.main(["launch", "--engine", "horovod", "-n", "3", "--launcher", "ssh", "-H", str(hosts), "--interface",
                     "eth0", "--dry-run", "--", "train", "--kv-store", "horovod", "--save-result", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 0
    assert "-H 10.0.0.2:2,10.0.0.3:1 -p 2222 --network-interface eth0" in out
    assert "env -u OMP_NUM_THREADS" in out  # each host's train picks its own threads
    assert "PATH=%s:" % (tmp_path / "s" / "launch" / "ssh-bin") in out


@pytest.mark.parametrize("lines, flags, message", [
    ("alice@10.0.0.2\n", [], "without user@"),
    ("10.0.0.2\n10.0.0.3:2222\n", [], "one ssh port for all hosts"),
    ("10.0.0.2\n", ["--remote-dir", "/srv"], "--remote-dir cannot be passed on"),
])
@needs_horovod
def test_launch_over_ssh_refuses_what_horovodrun_cannot_carry(tmp_path, capsys, lines, flags, message):
    (tmp_path / "hosts").write_text(lines)
    assert cli.main(["launch", "--engine", "horovod", "-n", "2", "--launcher", "ssh", "-H", str(tmp_path / "hosts"),
                     "--dry-run"] + flags + ["--", "train", "--kv-store", "horovod"]) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("horovod")
    root = tmp / "images"
    return {"root": str(root), "tmp": tmp,
            "train": write_list(tmp / "train.lst", make_images(str(root), 10, seed=1)),
            "val": write_list(tmp / "val.lst", make_images(str(root), 2, seed=2), start_index=100)}


def launch_horovod(data, save, *extra):
    argv = [PY, "-m", "multitask_mx", "launch", "--engine", "horovod", "-n", "2", "--timeout", "150", "--",
            "train", "--kv-store", "horovod", "--data-train", data["train"], "--image-train", data["root"],
            "--data-val", data["val"], "--image-val", data["root"], "--save-result", save] + TINY + list(extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=200, cwd=REPO)


def _params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(path).items()}


@needs_horovod
@pytest.mark.slow
def test_two_horovod_workers_train_alike_rank_0_saves_and_resume_continues(data):
    save, ranks = str(data["tmp"] / "run"), str(data["tmp"] / "ranks")
    proc = launch_horovod(data, save, "--num-epoch", "1", "--dump-rank-params",
                          os.path.join(ranks, "final-{rank}.params"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (_params(os.path.join(ranks, "final-%d.params" % r)) for r in (0, 1))
    assert a.keys() == b.keys() and len(a) > 50
    for name in a:  # start weights broadcast, gradients summed, BatchNorm statistics averaged
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    history = json.load(open(os.path.join(save, "history.json")))
    assert history[0]["train"]["label"]["count"] == 40  # both shards of 20 images counted
    assert not any(n.endswith(".tmp") for n in os.listdir(save))
    log = open(os.path.join(save, "train.log")).read()
    assert "[worker 0/2]" in log and "[worker 1/2]" not in log and "kvstore horovod" in log
    proc = launch_horovod(data, save, "--num-epoch", "2", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["epoch"] for r in json.load(open(os.path.join(save, "history.json")))] == [1, 2]
    assert "resuming after epoch 1" in open(os.path.join(save, "train.log")).read()

"""Slurm's task variables mapped onto MXNet's DMLC_* settings (cluster.slurm_env, run_slurm_task), and the
example of docs/distributed.md run for real: four "srun tasks" on loopback, as srun would start them
(SLURM_PROCID 0..3), train one epoch of dist_sync.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, make_images, write_list
from multitask_mx.errors import UserInputError
from multitask_mx.training import cluster

PY = sys.executable


@pytest.mark.parametrize("text, names", [
    ("node1", ["node1"]),
    ("node[01-03,07],gpu5", ["node01", "node02", "node03", "node07", "gpu5"]),
    ("a[8-10]-ib", ["a8-ib", "a9-ib", "a10-ib"]),
])
def test_slurm_nodelist_expands_like_scontrol(text, names):
    assert cluster.expand_nodelist(text) == names


def test_slurm_tasks_become_scheduler_servers_and_workers():
    base = {"SLURM_NTASKS": "5", "SLURM_JOB_NODELIST": "localhost,node[2-3]"}
    roles = [cluster.slurm_env(dict(base, SLURM_PROCID=str(i)), num_servers=2, port=9400) for i in range(5)]
    assert [r["DMLC_ROLE"] for r in roles] == ["scheduler", "server", "server", "worker", "worker"]
    assert {(r["DMLC_PS_ROOT_URI"], r["DMLC_PS_ROOT_PORT"], r["DMLC_NUM_WORKER"], r["DMLC_NUM_SERVER"])
            for r in roles} == {("127.0.0.1", "9400", "2", "2")}
    with pytest.raises(UserInputError, match="-n 4 or more"):
        cluster.slurm_env(dict(base, SLURM_PROCID="0", SLURM_NTASKS="3"), num_servers=2)
    with pytest.raises(UserInputError, match="runs under srun"):
        cluster.slurm_env({"SLURM_NTASKS": "4"})


@pytest.mark.slow
def test_four_srun_tasks_train_dist_sync(tmp_path):
    root = tmp_path / "images"
    train = write_list(tmp_path / "train.lst", make_images(str(root), 4, seed=1))
    save = str(tmp_path / "save")
    port = cluster.free_ports(1)[0]
    command = [PY, "-c", "from multitask_mx.commands.node import run_slurm_task; run_slurm_task()", "train",
               "--kv-store", "dist_sync", "--data-train", train, "--image-train", str(root), "--save-result", save,
               "--network", "mobilenet0.25", "--image-shape", "3,32,32", "--batch-size", "4", "--num-epoch", "1",
               "--data-nthreads", "1", "--num-classes", "4", "--quiet"]
    tasks = []
    for task in range(4):  # what srun -n 4 does, on one node; the DMLC_* binding to loopback is this test's
        env = dict(os.environ, SLURM_PROCID=str(task), SLURM_NTASKS="4", SLURM_JOB_NODELIST="localhost",
                   MULTITASK_MX_PORT=str(port), DMLC_INTERFACE="lo", DMLC_NODE_HOST="127.0.0.1", OMP_NUM_THREADS="1")
        tasks.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        outputs = [t.communicate(timeout=150)[0] for t in tasks]
    finally:
        for t in tasks:
            if t.poll() is None:
                t.kill()
    assert [t.returncode for t in tasks] == [0, 0, 0, 0], "\n".join(o[-1500:] for o in outputs)
    history = json.load(open(os.path.join(save, "history.json")))
    assert [r["epoch"] for r in history] == [1] and history[0]["train"]["label"]["count"] == 16

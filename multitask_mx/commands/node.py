"""Entry points of a job's processes that cluster tools start, each ending in ``multitask-mx``'s main.

``srun python -c "from multitask_mx.commands.node import run_slurm_task; run_slurm_task()" train ...``
makes each Slurm task a node of a dist job (docs/distributed.md); ``launch --engine horovod`` has
horovodrun start ``run_horovod_worker``. Here, in the commands layer, because they call the CLI.
"""
import json
import os
import sys

from .. import cli
from ..training.cluster import HEARTBEAT_ENV, run_node, slurm_env
from ..training.horovod_kv import WORKER_ARGV_ENV


def run_slurm_task(argv=None):
    """``srun python -c "...run_slurm_task()" train ...``: be this task's node of a dist job under Slurm.

    MULTITASK_MX_SERVERS (default 1) and MULTITASK_MX_PORT (default 9091) set the
    servers and the scheduler's port; a worker runs the train command given after it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    env = slurm_env(os.environ, int(os.environ.get("MULTITASK_MX_SERVERS", "1")),
                    int(os.environ.get("MULTITASK_MX_PORT", "9091")))
    os.environ.update(env)
    if env["DMLC_ROLE"] != "worker":
        os.environ[HEARTBEAT_ENV] = "0"
        run_node()
    sys.exit(cli.main(argv))


def run_horovod_worker():
    """What horovodrun starts for ``launch --engine horovod``: ``multitask-mx`` with the command in the environment."""
    sys.exit(cli.main(json.loads(os.environ[WORKER_ARGV_ENV])))

"""``multitask-mx launch``: run ``train`` on several workers with MXNet's parameter server.

    multitask-mx launch -n 2 -s 1 -- train --kv-store dist_sync --data-train ... --save-result out
    multitask-mx launch -n 4 -s 2 --launcher ssh -H hosts.txt -- train --kv-store dist_sync ...
    multitask-mx launch --engine horovod -n 2 -- train --kv-store horovod ...
"""
import argparse
import json
import logging
import os
import shlex
import sys

from .. import _runtime
from ..training import distributed
from ..errors import UserInputError
from ..training.horovod_kv import WORKER_ARGV_ENV
from ..training.cluster import Node, parse_hostfile, plan_local, plan_ssh, this_host_address
from ..training.processes import run_nodes
from ..logs import setup_logging
from ..flagtypes import non_negative_float, port, positive_int

_logger = logging.getLogger(__name__)

DIST_KV_STORES = [k for k in distributed.KV_STORES if k.startswith("dist")]


def add_arguments(parser):
    """Launch flags; everything after ``--`` is the train command."""
    parser.add_argument("-n", "--num-workers", type=positive_int, required=True, help="worker processes (each trains)")
    parser.add_argument("-s", "--num-servers", type=positive_int, default=1, help="parameter-server processes")
    parser.add_argument("--engine", choices=["ps-lite", "horovod"], default="ps-lite",
                        help="ps-lite: MXNet's parameter server (scheduler, servers, workers; --kv-store dist_*); "
                             "horovod: horovodrun with Gloo, allreduce among the workers (--kv-store horovod; "
                             "local launcher)")
    parser.add_argument("--launcher", choices=["local", "ssh"], default="local",
                        help="local: every process on this machine, on loopback; ssh: on the hosts of -H")
    parser.add_argument("-H", "--hostfile", default=None, help="ssh: file of hosts, one [user@]host[:ssh_port] a line")
    parser.add_argument("--timeout", type=non_negative_float, default=0, metavar="S",
                        help="stop every process and fail after S seconds (0: no limit)")
    parser.add_argument("--stall-timeout", type=non_negative_float, default=120, metavar="S",
                        help="stop the job when a process sends no heartbeat for S seconds (stopped, frozen, host "
                             "lost) or no worker uses CPU for S seconds (they wait on a node they cannot reach); "
                             "0: never")
    parser.add_argument("--port", type=port, default=None,
                        help="scheduler port; servers and workers take the next ones. None: free ports here, and "
                             "ps-lite's choice on ssh hosts")
    parser.add_argument("--log-dir", default=None,
                        help="folder for one log file per process. None: SAVE_RESULT/launch of the train command")
    group = parser.add_argument_group("ssh launcher")
    group.add_argument("--scheduler-host", default=None,
                       help="this machine's address as the hosts reach it. None: found from its hostname")
    group.add_argument("--interface", default=None,
                       help="network interface ps-lite uses on the hosts (DMLC_INTERFACE), e.g. eth0")
    group.add_argument("--remote-dir", default=None, help="folder to run in on the hosts. None: this folder's path")
    group.add_argument("--ssh-config", default=None, metavar="FILE",
                       help="ssh client configuration for the hosts (ssh -F FILE: User, IdentityFile, "
                            "UserKnownHostsFile, ProxyJump ...). None: ssh's own (~/.ssh/config)")
    group.add_argument("--remote-python", default=None,
                       help="Python on the hosts, with multitask_mx installed. None: this Python's path")
    parser.add_argument("--gpus-per-worker", type=int, default=0, metavar="N",
                        help="give each worker on a host its own N GPUs (worker k: GPUs k*N..k*N+N-1), replacing "
                             "the train command's --gpus; 0: every worker gets the command's --gpus")
    parser.add_argument("--dry-run", action="store_true", help="print each process's command line and exit")
    parser.add_argument("train_command", nargs=argparse.REMAINDER, metavar="-- train ARGS",
                        help="the train command and its flags, with --kv-store dist_sync|dist_device_sync|dist_async")


def _flag_value(argv, flag):
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def train_arguments(args):
    """The train command after ``--``, checked: ``train`` with a dist --kv-store."""
    command = list(args.train_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if command[:1] != ["train"]:
        raise UserInputError("launch runs the train command: multitask-mx launch -n %d -s %d -- train "
                             "--kv-store dist_sync --data-train ... (got %r after the launch flags)."
                             % (args.num_workers, args.num_servers, " ".join(command[:3]) or "nothing"))
    kv_store = _flag_value(command, "--kv-store")
    if args.engine == "horovod":
        if kv_store != "horovod":
            raise UserInputError("launch --engine horovod: the train command needs --kv-store horovod (got %s)."
                                 % (kv_store or "the default, device"))
        return command
    if kv_store not in DIST_KV_STORES:
        raise UserInputError("launch: the train command needs --kv-store %s (got %s); with another kvstore "
                             "every worker would train alone on all the data."
                             % ("|".join(DIST_KV_STORES), kv_store or "the default, device"))
    return command


def check_counts(args):
    """Workers, servers and the launcher's own flags."""
    if args.num_workers < 1 or args.num_servers < 1:
        raise UserInputError("launch: -n and -s need at least 1 (got -n %d -s %d)."
                             % (args.num_workers, args.num_servers))
    if args.launcher == "ssh" and not args.hostfile:
        raise UserInputError("launch --launcher ssh needs -H HOSTFILE (one host a line).")
    if args.ssh_config and not os.path.isfile(args.ssh_config):
        raise UserInputError("launch --ssh-config %s: no such file. Give an ssh client configuration (ssh -F), "
                             "or leave the flag out to use ~/.ssh/config." % args.ssh_config)
    if args.launcher == "local" and args.hostfile:
        raise UserInputError("launch: -H is for --launcher ssh; local runs every process on this machine.")
    if args.gpus_per_worker < 0:
        raise UserInputError("launch --gpus-per-worker %d: give 1 or more GPUs, or 0 to keep the train command's "
                             "--gpus." % args.gpus_per_worker)
    if args.timeout < 0:
        raise UserInputError("launch --timeout %g: give seconds, or 0 for no limit." % args.timeout)


def make_plan(args, command):
    """The nodes to start, local or over ssh."""
    worker_argv = [sys.executable, "-m", "multitask_mx"] + command
    # the OMP_NUM_THREADS that cli set for this process is the launcher's, not the user's
    user_threads = "set by user" in _runtime.THREAD_SETTINGS.get("OMP_NUM_THREADS", "")
    if args.engine == "horovod":
        return [horovod_node(args, worker_argv, user_threads)]
    if args.launcher == "local":
        threads = None if user_threads else max(1, _runtime.usable_cores() // args.num_workers)
        return plan_local(args.num_workers, args.num_servers, worker_argv, args.port, threads,
                          gpus_per_worker=args.gpus_per_worker)
    hosts = parse_hostfile(args.hostfile)
    return plan_ssh(args.num_workers, args.num_servers, hosts, worker_argv, args.scheduler_host or
                    this_host_address(), port=args.port, interface=args.interface, workdir=args.remote_dir,
                    python=args.remote_python,
                    extra_env={"OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]} if user_threads else None,
                    gpus_per_worker=args.gpus_per_worker, ssh_config=args.ssh_config)


def horovod_node(args, worker_argv, user_threads):
    """One node, horovodrun with Gloo on loopback, which starts and watches the workers itself."""
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    if not os.path.exists(horovodrun):
        raise UserInputError("launch --engine horovod: no %s. Install Horovod built for MXNet (pip install "
                             "wheel && HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 "
                             "HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 pip install "
                             "--no-build-isolation -c constraints.txt horovod; docs/distributed.md)." % horovodrun)
    if args.launcher != "local":
        raise UserInputError("launch --engine horovod runs on this machine only; for several machines run "
                             "horovodrun --gloo -H host1:N,host2:N ... yourself (docs/distributed.md).")
    threads = os.environ["OMP_NUM_THREADS"] if user_threads else \
        str(max(1, _runtime.usable_cores() // args.num_workers))
    argv = [horovodrun, "--gloo", "-np", str(args.num_workers), "-H", "localhost:%d" % args.num_workers,
            "--network-interface", "lo", "--gloo-timeout-seconds", str(int(args.stall_timeout or 30)),
            "--disable-cache", sys.executable, "-c", "from multitask_mx.commands.node import run_horovod_worker; "
            "run_horovod_worker()"]
    # the train flags travel in the environment: horovodrun's parser takes --network for its --network-interface
    env = {"OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1", "HOROVOD_GLOO_IFACE": "lo",
           WORKER_ARGV_ENV: json.dumps(worker_argv[3:]),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    return Node("worker", 0, env, argv)


def run(args):
    """Entry point of ``multitask-mx launch``."""
    check_counts(args)
    command = train_arguments(args)
    save_result = _flag_value(command, "--save-result")
    log_dir = args.log_dir or os.path.join(save_result or ".", "launch")
    nodes = make_plan(args, command)
    if args.dry_run:
        for node in nodes:
            sys.stdout.write("%s: %s\n" % (node.label, " ".join(shlex.quote(a) for a in node.argv)))
            if node.host is None:
                sys.stdout.write("    env: %s\n" % " ".join("%s=%s" % kv for kv in sorted(node.env.items())))
        return 0
    setup_logging(os.path.join(log_dir, "launch.log"))
    if args.engine == "horovod":
        _logger.info("launch: %d worker(s) under horovodrun (Gloo); logs in %s", args.num_workers, log_dir)
        return run_nodes(nodes, log_dir, timeout=args.timeout or None)
    _logger.info("launch: %d worker(s), %d server(s), %s launcher; logs in %s", args.num_workers,
                 args.num_servers, args.launcher, log_dir)
    return run_nodes(nodes, log_dir, timeout=args.timeout or None, stall=args.stall_timeout or None)

"""``multitask-mx launch``: run ``train`` on several workers with MXNet's parameter server.

    multitask-mx launch -n 2 -s 1 -- train --kv-store dist_sync --data-train ... --save-result out
    multitask-mx launch -n 4 -s 2 --launcher ssh -H hosts.txt -- train --kv-store dist_sync ...
    multitask-mx launch --engine horovod -n 2 -- train --kv-store horovod ...
    multitask-mx launch --engine horovod -n 2 --launcher ssh -H hosts.txt --interface eth0 -- train --kv-store horovod ...
"""
import argparse
import collections
import json
import logging
import os
import shlex
import shutil
import sys

from .. import _runtime
from ..training import distributed
from ..errors import UserInputError
from ..training.horovod_kv import WORKER_ARGV_ENV
from ..training.cluster import SSH_OPTIONS, Node, parse_hostfile, plan_local, plan_ssh, this_host_address
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
                             "horovod: horovodrun with Gloo, allreduce among the workers (--kv-store horovod)")
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
                       help="network interface the hosts talk over, e.g. eth0: ps-lite's DMLC_INTERFACE; for "
                            "horovod, Gloo's --network-interface, which this machine must have too (horovodrun's "
                            "rendezvous listens on it). None: ps-lite's and horovodrun's own choice")
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


def make_plan(args, command, log_dir):
    """The nodes to start, local or over ssh."""
    worker_argv = [sys.executable, "-m", "multitask_mx"] + command
    # the OMP_NUM_THREADS that cli set for this process is the launcher's, not the user's
    user_threads = "set by user" in _runtime.THREAD_SETTINGS.get("OMP_NUM_THREADS", "")
    if args.engine == "horovod":
        return [horovod_node(args, worker_argv, user_threads, log_dir)]
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


def horovod_node(args, worker_argv, user_threads, log_dir):
    """One node, horovodrun with Gloo, which starts and watches the workers itself (here, or on -H's hosts by ssh)."""
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    if not os.path.exists(horovodrun):
        raise UserInputError("launch --engine horovod: no %s. Install Horovod built for MXNet (pip install "
                             "wheel && HOROVOD_WITH_MXNET=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 "
                             "HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 pip install "
                             "--no-build-isolation -c constraints.txt horovod; docs/distributed.md)." % horovodrun)
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    if args.launcher == "local":
        threads = os.environ["OMP_NUM_THREADS"] if user_threads else \
            str(max(1, _runtime.usable_cores() // args.num_workers))
        prefix, python = [], sys.executable
        where = ["-H", "localhost:%d" % args.num_workers, "--network-interface", "lo"]
        env = {"OMP_NUM_THREADS": threads, "HOROVOD_GLOO_IFACE": "lo"}
    else:
        # horovodrun hands its whole environment to every worker: without the user's OMP_NUM_THREADS, drop the
        # launcher's own, so that each host's train picks its threads from its own cores (as ps-lite's ssh does)
        prefix = [] if user_threads else ["env", "-u", "OMP_NUM_THREADS"]
        python, where, env = args.remote_python or sys.executable, horovod_hosts(args), {}
        path = ssh_wrapper_dir(log_dir) + os.pathsep + path  # horovodrun runs plain `ssh` from PATH
    argv = prefix + [horovodrun, "--gloo", "-np", str(args.num_workers)] + where + [
        "--gloo-timeout-seconds", str(int(args.stall_timeout or 30)), "--disable-cache", python, "-c",
        "from multitask_mx.commands.node import run_horovod_worker; run_horovod_worker()"]
    # the train flags travel in the environment: horovodrun's parser takes --network for its --network-interface
    env.update({"PYTHONUNBUFFERED": "1", WORKER_ARGV_ENV: json.dumps(worker_argv[3:]), "PATH": path})
    return Node("worker", 0, env, argv)


def horovod_hosts(args):
    """horovodrun's -H (and -p, --network-interface) for -H's hosts: workers round-robin, as ps-lite's ssh puts them."""
    hosts = parse_hostfile(args.hostfile)
    if args.remote_dir:
        raise UserInputError("launch --engine horovod: --remote-dir cannot be passed on; horovodrun runs the "
                             "workers in this folder's path (%s) on every host." % os.getcwd())
    named = [h.name for h in hosts if "@" in h.name]
    if named:
        raise UserInputError("launch --engine horovod: horovodrun takes host names without user@ (got %s); "
                             "set the user in an ssh config (User, --ssh-config FILE)." % named[0])
    ports = sorted({h.port for h in hosts})
    if len(ports) > 1:
        raise UserInputError("launch --engine horovod: horovodrun uses one ssh port for all hosts (got %s in "
                             "%s); give every host the same port." % (", ".join(map(str, ports)), args.hostfile))
    slots = collections.OrderedDict()
    for k in range(args.num_workers):
        name = hosts[k % len(hosts)].name
        slots[name] = slots.get(name, 0) + 1
    where = ["-H", ",".join("%s:%d" % item for item in slots.items())]
    if ports != [22]:
        where += ["-p", str(ports[0])]
    if args.interface:
        where += ["--network-interface", args.interface]
    return where


def ssh_wrapper_dir(log_dir):
    """The folder of the ``ssh`` that horovodrun finds first on its PATH (written by ``write_ssh_wrapper``)."""
    return os.path.join(os.path.abspath(log_dir), "ssh-bin")


def write_ssh_wrapper(log_dir, ssh_config):
    """Write LOG_DIR/ssh-bin/ssh: the real ssh with ps-lite's options and ``-F ssh_config``, for horovodrun.

    horovodrun has no flag for an ssh config, and its ssh gives the remote worker no terminal: stopped, it
    would leave the worker running on its host. ``-tt`` (in SSH_OPTIONS) makes the worker get SIGHUP instead,
    and ssh takes the first value of an option, so BatchMode and accept-new win over horovodrun's own -o.
    """
    ssh = shutil.which("ssh")
    if not ssh:
        raise UserInputError("launch --launcher ssh: no ssh client on this machine (apt-get install "
                             "openssh-client).")
    options = (["-F", os.path.abspath(ssh_config)] if ssh_config else []) + SSH_OPTIONS
    folder = ssh_wrapper_dir(log_dir)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "ssh.tmp"), "w") as f:
        f.write(_SSH_WRAPPER % (sys.executable, ssh, ssh, options))
    os.chmod(os.path.join(folder, "ssh.tmp"), 0o755)
    os.replace(os.path.join(folder, "ssh.tmp"), os.path.join(folder, "ssh"))


# horovodrun's ssh call ends with the remote command. The terminal would end its lines in CR LF, and horovodrun
# takes a CR for a line end of its own (progress bars), printing an empty prefixed line after each: stty -onlcr.
_SSH_WRAPPER = """#!%s
import os, sys
args = sys.argv[1:]
args[-1] = "stty -onlcr 2>/dev/null; " + args[-1]
os.execv(%r, [%r] + %r + args)
"""


def run(args):
    """Entry point of ``multitask-mx launch``."""
    check_counts(args)
    command = train_arguments(args)
    save_result = _flag_value(command, "--save-result")
    log_dir = args.log_dir or os.path.join(save_result or ".", "launch")
    nodes = make_plan(args, command, log_dir)
    if args.dry_run:
        for node in nodes:
            sys.stdout.write("%s: %s\n" % (node.label, " ".join(shlex.quote(a) for a in node.argv)))
            if node.host is None:
                sys.stdout.write("    env: %s\n" % " ".join("%s=%s" % kv for kv in sorted(node.env.items())))
        return 0
    setup_logging(os.path.join(log_dir, "launch.log"))
    if args.engine == "horovod":
        if args.launcher == "ssh":
            write_ssh_wrapper(log_dir, args.ssh_config)
        _logger.info("launch: %d worker(s) under horovodrun (Gloo), %s launcher; logs in %s", args.num_workers,
                     args.launcher, log_dir)
        return run_nodes(nodes, log_dir, timeout=args.timeout or None)
    _logger.info("launch: %d worker(s), %d server(s), %s launcher; logs in %s", args.num_workers,
                 args.num_servers, args.launcher, log_dir)
    return run_nodes(nodes, log_dir, timeout=args.timeout or None, stall=args.stall_timeout or None)

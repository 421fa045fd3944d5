"""Start and watch a parameter-server job: one scheduler, servers and workers.

MXNet's ``dist_*`` kvstores find each other through ``DMLC_*`` variables
(``DMLC_ROLE``, ``DMLC_PS_ROOT_URI``/``_PORT``, ``DMLC_NUM_SERVER``/``_WORKER``).
``plan_local`` and ``plan_ssh`` turn a job into a list of ``Node``s (role, slot,
environment, command line); ``processes.run_nodes`` starts and watches them.

Scheduler and servers run ``run_node``: with ``DMLC_ROLE`` set to ``scheduler``
or ``server``, MXNet's kvstore-server module runs the node until the job ends.
"""
import collections
import importlib
import ipaddress
import logging
import os
import re
import shlex
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..errors import UserInputError

_logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# ServerAlive*: ssh ends (status 255) when its host stops answering for 3 x 5 s, so the launcher sees a lost host
SSH_OPTIONS = ["-tt", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=10",
               "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
# Every node of a launched job writes a heartbeat line (HEARTBEAT_MARK cpu=SECONDS) every HEARTBEAT_ENV seconds.
# The launcher takes a node that stops sending them for a stopped or lost one, and a job whose workers all send
# them but use no CPU for --stall-timeout seconds for a stuck one (e.g. a firewall between a worker and a server).
HEARTBEAT_ENV = "MULTITASK_MX_HEARTBEAT"
HEARTBEAT_MARK = "@@multitask-mx-heartbeat"
HEARTBEAT_SECONDS = 1
_heartbeat_done = threading.Event()
_HOST_LINE = re.compile(r"^(?P<name>(?:[A-Za-z0-9_.-]+@)?(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]))"
                        r"(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Host:
    """One line of a hostfile: ``[user@]host[:ssh port]``."""

    name: str
    port: int = 22

    @property
    def address(self):
        """The host without ``user@`` or brackets."""
        return self.name.split("@", 1)[-1].strip("[]")


@dataclass
class Node:
    """One process of the job: what it is, where it runs and how it starts."""

    role: str  # scheduler, server or worker
    slot: int  # 0.. within its role (not the kvstore rank, which ps-lite gives as workers connect)
    env: Dict[str, str]  # the DMLC_* and thread variables it gets
    argv: List[str]  # the command it runs (on ``host``)
    host: Optional[Host] = None  # None: this machine

    @property
    def label(self):
        """``scheduler``, ``server 0``, ``worker 1``."""
        return self.role if self.role == "scheduler" else "%s %d" % (self.role, self.slot)

    @property
    def log_name(self):
        """Its log file's name: ``scheduler.log``, ``server-0.log``, ``worker-1.log``."""
        return "%s.log" % (self.role if self.role == "scheduler" else "%s-%d" % (self.role, self.slot))


def parse_hostfile(path):
    """Hosts from a file of ``[user@]host[:port]`` lines; ``#`` starts a comment. UserInputError names bad lines."""
    if not os.path.isfile(path):
        raise UserInputError("hostfile %s does not exist. Write one host per line: host or host:ssh_port." % path)
    hosts = []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            match = _HOST_LINE.match(text)
            port = int(match.group("port") or 22) if match else 0
            if not match or not 0 < port < 65536:
                raise UserInputError("%s:%d: %r is not a host. Write one host per line as host or host:ssh_port "
                                     "(e.g. 10.0.0.2 or node2:2222; user@host and [IPv6] allowed; # comments)."
                                     % (path, number, raw.strip()))
            hosts.append(Host(match.group("name"), port))
    if not hosts:
        raise UserInputError("hostfile %s lists no host. Write one host per line: host or host:ssh_port." % path)
    return hosts


def free_ports(count, host=LOOPBACK):
    """``count`` distinct TCP ports free on ``host`` now, ascending."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return sorted(ports)


def dmlc_env(role, root_uri, root_port, num_workers, num_servers):
    """The variables every node of the job needs."""
    return {"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": root_uri, "DMLC_PS_ROOT_PORT": str(root_port),
            "DMLC_NUM_SERVER": str(num_servers), "DMLC_NUM_WORKER": str(num_workers)}


def node_command(python=None):
    """What scheduler and servers run: ``run_node``."""
    return [python or sys.executable, "-c", "from multitask_mx.training.cluster import run_node; run_node()"]


def run_node():
    """Be the scheduler or a server (``DMLC_ROLE``) until the job ends.

    MXNet runs the node while ``import mxnet`` is still going on, when a server
    could not unpickle the optimizer that dist_async workers send (its lr schedule
    subclasses ``mx.lr_scheduler.LRScheduler``). So mxnet and our schedules are
    imported first, with the role hidden, and the node is started afterwards.
    """
    role = os.environ.pop("DMLC_ROLE")
    start_heartbeat()
    importlib.import_module(__package__ + ".schedules")  # imports mxnet; the classes the servers unpickle
    os.environ["DMLC_ROLE"] = role
    from ..mxprivate import run_kvstore_node
    run_kvstore_node()  # returns only for a worker, which this is not
    raise UserInputError("DMLC_ROLE=%s: run_node is for the scheduler and servers." % role)


def start_heartbeat():
    """Write a heartbeat line to stdout every ``$MULTITASK_MX_HEARTBEAT`` seconds, from a daemon thread.

    Nothing when the variable is not set (a process not started by launch). The
    line carries the process's CPU seconds: a worker blocked in a kvstore wait keeps
    beating but its CPU stands still. A stopped process (SIGSTOP) stops beating.
    """
    interval = float(os.environ.get(HEARTBEAT_ENV) or 0)
    if interval <= 0:
        return None

    def beat():
        while not _heartbeat_done.is_set():
            # one os.write of a short line is atomic on a pipe or terminal: never mixed into a log line
            os.write(1, ("%s cpu=%.3f\n" % (HEARTBEAT_MARK, time.process_time())).encode())
            time.sleep(interval)

    thread = threading.Thread(target=beat, name="launch-heartbeat", daemon=True)
    thread.start()
    return thread


def end_heartbeat():
    """Tell the launcher that this process has finished its work and only exits now.

    A finished worker waits at exit for the others (the kvstore's barrier), and
    Python stops its daemon threads while it exits: without this line the launcher
    would take the silence for a stopped process.
    """
    if float(os.environ.get(HEARTBEAT_ENV) or 0) > 0 and not _heartbeat_done.is_set():
        _heartbeat_done.set()
        os.write(1, ("%s done\n" % HEARTBEAT_MARK).encode())


def with_worker_gpus(argv, local_index, per_worker):
    """``argv`` with ``--gpus`` set to this worker's own GPUs: worker k of a host gets k*N .. k*N+N-1."""
    if not per_worker:
        return list(argv)
    ids = ",".join(str(local_index * per_worker + i) for i in range(per_worker))
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--gpus="):
            skip = False
            continue
        if arg == "--gpus":
            skip = True
            continue
        out.append(arg)
    return out + ["--gpus", ids]


def plan_local(num_workers, num_servers, worker_argv, port=None, worker_threads=None, gpus_per_worker=0):
    """Nodes for a job on this machine, all bound to loopback.

    Ports: the scheduler's is ``port`` and servers and workers take the next ones,
    or all are free ports found now. ps-lite numbers the workers (their kvstore
    rank) as they connect, so a worker's slot is not always its rank.
    """
    ports = [port + i for i in range(1 + num_servers + num_workers)] if port else \
        free_ports(1 + num_servers + num_workers)
    nodes = []
    roles = [("scheduler", 0)] + [("server", i) for i in range(num_servers)] + \
        [("worker", i) for i in range(num_workers)]
    for (role, slot), node_port in zip(roles, ports):
        env = dmlc_env(role, LOOPBACK, ports[0], num_workers, num_servers)
        env.update({"DMLC_INTERFACE": "lo", "DMLC_NODE_HOST": LOOPBACK, "PYTHONUNBUFFERED": "1",
                    HEARTBEAT_ENV: str(HEARTBEAT_SECONDS)})
        if role != "scheduler":
            env["DMLC_PORT"] = str(node_port)
        if role != "worker":
            env["OMP_NUM_THREADS"] = "1"  # servers only add arrays; leave the cores to the workers
        elif worker_threads:
            env["OMP_NUM_THREADS"] = str(worker_threads)
        argv = with_worker_gpus(worker_argv, slot, gpus_per_worker) if role == "worker" else node_command()
        nodes.append(Node(role, slot, env, argv))
    return nodes


def plan_ssh(num_workers, num_servers, hosts, worker_argv, scheduler_host, port=None, interface=None,
             workdir=None, python=None, extra_env=None, gpus_per_worker=0, ssh_config=None):
    """Nodes for a job over ssh: the scheduler here (this Python), servers then workers round-robin over ``hosts``.

    Every host must reach this machine at ``scheduler_host`` and each other; the
    code, the Python environment (``python``) and the data must be at the same
    paths there (``workdir``, default the current folder). ``extra_env`` (e.g. a
    user's OMP_NUM_THREADS) goes to every remote process; ``ssh_config`` is an
    ssh client configuration file (``ssh -F``: keys, users, known hosts, jump hosts).
    """
    workdir = workdir or os.getcwd()
    root_port = port or free_ports(1, "")[0]
    common = dict({"PYTHONUNBUFFERED": "1", HEARTBEAT_ENV: str(HEARTBEAT_SECONDS)}, **(extra_env or {}))
    if interface:
        common["DMLC_INTERFACE"] = interface
    scheduler_env = dict(dmlc_env("scheduler", scheduler_host, root_port, num_workers, num_servers),
                         DMLC_NODE_HOST=scheduler_host, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                         **{HEARTBEAT_ENV: str(HEARTBEAT_SECONDS)})
    nodes = [Node("scheduler", 0, scheduler_env, node_command())]  # here: this Python, not the hosts' one
    roles = [("server", i) for i in range(num_servers)] + [("worker", i) for i in range(num_workers)]
    remote_python = python or sys.executable
    workers_on = collections.Counter()  # host -> workers placed there so far (their GPUs do not overlap)
    for i, (role, slot) in enumerate(roles):
        host = hosts[i % len(hosts)]
        env = dict(common, **dmlc_env(role, scheduler_host, root_port, num_workers, num_servers))
        if _is_ip(host.address):
            env["DMLC_NODE_HOST"] = host.address  # ps-lite binds to it, which it cannot do to a host name
        if port:
            env["DMLC_PORT"] = str(port + 1 + i)
        if role == "worker":
            argv = with_worker_gpus([remote_python] + list(worker_argv[1:]), workers_on[host], gpus_per_worker)
            workers_on[host] += 1
        else:
            argv = node_command(remote_python)
        nodes.append(Node(role, slot, env, ssh_command(host, env, argv, workdir, ssh_config), host=host))
    return nodes


def ssh_command(host, env, argv, workdir, ssh_config=None):
    """``ssh ... host 'cd WORKDIR && env K=V ... exec ARGV'``, every part shell-quoted.

    ``-tt`` gives the remote command a terminal, so that it gets SIGHUP and ends
    when the launcher stops this ssh; ``BatchMode`` makes ssh fail instead of
    asking for a password.
    """
    remote = "cd %s && exec env %s %s" % (shlex.quote(workdir), " ".join(
        "%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items())), " ".join(shlex.quote(a) for a in argv))
    config = ["-F", ssh_config] if ssh_config else []
    return ["ssh"] + config + SSH_OPTIONS + ["-p", str(host.port), host.name, remote]


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def this_host_address():
    """This machine's address as other hosts see it (for the scheduler in ssh mode)."""
    try:
        address = socket.gethostbyname(socket.getfqdn())
    except OSError:
        address = LOOPBACK
    if address.startswith("127."):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
                address = sock.getsockname()[0]
            except OSError:
                pass
    return address


def expand_nodelist(text):
    """Slurm's compact host list (``node[01-03,07],gpu1``) as names, in order (``scontrol show hostnames``)."""
    names = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", text):
        match = re.match(r"^(.*?)\[([^\]]*)\](.*)$", part)
        if not match:
            names.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            low, _, high = item.partition("-")
            for number in range(int(low), int(high or low) + 1):
                names.append("%s%0*d%s" % (prefix, len(low), number, suffix))
    return names


def slurm_env(environ, num_servers=1, port=9091):
    """The DMLC_* settings of this Slurm task: task 0 the scheduler, the next ``num_servers`` servers, the rest workers.

    The scheduler is task 0, which Slurm places on the first node of SLURM_JOB_NODELIST.
    """
    try:
        task, tasks = int(environ["SLURM_PROCID"]), int(environ["SLURM_NTASKS"])
        nodes = expand_nodelist(environ.get("SLURM_JOB_NODELIST") or environ["SLURM_NODELIST"])
    except (KeyError, ValueError) as exc:
        raise UserInputError("run_slurm_task runs under srun, which sets SLURM_PROCID, SLURM_NTASKS and "
                             "SLURM_JOB_NODELIST (missing or bad: %s)." % exc) from None
    if tasks < num_servers + 2:
        raise UserInputError("srun -n %d: the job needs 1 scheduler + %d server(s) + at least 1 worker, i.e. "
                             "-n %d or more." % (tasks, num_servers, num_servers + 2))
    role = "scheduler" if task == 0 else "server" if task <= num_servers else "worker"
    env = dmlc_env(role, socket.gethostbyname(nodes[0]), port, tasks - 1 - num_servers, num_servers)
    env.update({"PYTHONUNBUFFERED": "1"})
    return env

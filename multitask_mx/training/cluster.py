"""Start and watch a parameter-server job: one scheduler, servers and workers.

MXNet's ``dist_*`` kvstores find each other through ``DMLC_*`` variables
(``DMLC_ROLE``, ``DMLC_PS_ROOT_URI``/``_PORT``, ``DMLC_NUM_SERVER``/``_WORKER``).
``plan_local`` and ``plan_ssh`` turn a job into a list of ``Node``s (role, slot,
environment, command line); ``run_nodes`` starts them, writes each one's output
to its own log file and echoes it with a ``[worker 1]`` prefix. It never hangs:
if any process exits non-zero, a server or the scheduler exits while workers
still run, or the timeout passes, every process group gets SIGTERM, then SIGKILL,
and the failure is reported with the last lines of the failed process's log.

Scheduler and servers run ``run_node``: with ``DMLC_ROLE`` set to ``scheduler``
or ``server``, MXNet's kvstore-server module runs the node until the job ends.
"""
import collections
import ipaddress
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..atomic import atomic_write_json
from ..errors import UserInputError

_logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SSH_OPTIONS = ["-tt", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=20"]
TAIL_LINES = 20
_RANK_LABEL = re.compile(r"^\[worker (\d+/\d+)\] ")  # distributed.rank_label
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
    from . import schedules  # noqa: F401  (imports mxnet; the classes the servers unpickle)
    os.environ["DMLC_ROLE"] = role
    from ..mxprivate import run_kvstore_node
    run_kvstore_node()  # returns only for a worker, which this is not
    raise UserInputError("DMLC_ROLE=%s: run_node is for the scheduler and servers." % role)


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
        env.update({"DMLC_INTERFACE": "lo", "DMLC_NODE_HOST": LOOPBACK, "PYTHONUNBUFFERED": "1"})
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
             workdir=None, python=None, extra_env=None, gpus_per_worker=0):
    """Nodes for a job over ssh: the scheduler here, servers then workers round-robin over ``hosts``.

    Every host must reach this machine at ``scheduler_host`` and each other; the
    code, the Python environment (``python``) and the data must be at the same
    paths there (``workdir``, default the current folder). ``extra_env`` (e.g. a
    user's OMP_NUM_THREADS) goes to every remote process.
    """
    workdir = workdir or os.getcwd()
    root_port = port or free_ports(1, "")[0]
    common = dict({"PYTHONUNBUFFERED": "1"}, **(extra_env or {}))
    if interface:
        common["DMLC_INTERFACE"] = interface
    scheduler_env = dict(dmlc_env("scheduler", scheduler_host, root_port, num_workers, num_servers),
                         DMLC_NODE_HOST=scheduler_host, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    nodes = [Node("scheduler", 0, scheduler_env, node_command(python))]
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
        nodes.append(Node(role, slot, env, ssh_command(host, env, argv, workdir), host=host))
    return nodes


def ssh_command(host, env, argv, workdir):
    """``ssh ... host 'cd WORKDIR && env K=V ... exec ARGV'``, every part shell-quoted.

    ``-tt`` gives the remote command a terminal, so that it gets SIGHUP and ends
    when the launcher stops this ssh; ``BatchMode`` makes ssh fail instead of
    asking for a password.
    """
    remote = "cd %s && exec env %s %s" % (shlex.quote(workdir), " ".join(
        "%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items())), " ".join(shlex.quote(a) for a in argv))
    return ["ssh"] + SSH_OPTIONS + ["-p", str(host.port), host.name, remote]


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


class _Process:
    """A started node: its Popen, log file and last lines (read by a thread)."""

    def __init__(self, node: Node, log_dir, echo, lock):
        self.node = node
        self.log_path = os.path.join(log_dir, node.log_name)
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.rank = None  # "1/2", read from the worker's log lines (ps-lite numbers workers as they connect)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DMLC_")}
        if node.host is None:
            env.update(node.env)
        # its own session, i.e. process group: stopping the group also stops its DataLoader workers
        self.popen = subprocess.Popen(node.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.reader = threading.Thread(target=self._read, args=(echo, lock), daemon=True)
        self.reader.start()

    @property
    def label(self):
        """``worker 1/2`` once the worker has logged the rank MXNet gave it, else the node's label."""
        return "worker %s" % self.rank if self.rank else self.node.label

    def _read(self, echo, lock):
        with open(self.log_path, "w", encoding="utf-8") as log:
            for raw in self.popen.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                log.write(line + "\n")
                log.flush()
                self.tail.append(line)
                if self.rank is None and self.node.role == "worker":
                    found = _RANK_LABEL.match(line)
                    self.rank = found.group(1) if found else None
                if echo is not None:
                    prefix = "" if line.startswith("[%s]" % self.label) else "[%s] " % self.label
                    with lock:
                        echo.write(prefix + line + "\n")
                        echo.flush()

    def signal_group(self, sig):
        """Send ``sig`` to the process group: the node and its children, even after the node ended."""
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def describe_exit(self):
        """'exited with status 2' or 'was killed by SIGKILL'."""
        code = self.popen.returncode
        if code is not None and code < 0:
            return "was killed by %s" % signal.Signals(-code).name
        return "exited with status %s" % code


class _StopSignals:
    """While active, SIGINT and SIGTERM only set ``received``: the watch loop then stops every process."""

    def __init__(self):
        self.received = None
        self._saved = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.received = signal.Signals(signum)

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def run_nodes(nodes, log_dir, timeout=None, echo=sys.stdout, grace=10.0, poll=0.2):
    """Start ``nodes`` and watch them to the end: 0 when every worker succeeded, else non-zero (logged).

    Whatever happens, every process group is stopped before this returns.
    """
    os.makedirs(log_dir, exist_ok=True)
    lock, running, outcome = threading.Lock(), [], None
    with _StopSignals() as stop:
        try:
            for node in nodes:
                try:
                    running.append(_Process(node, log_dir, echo, lock))
                except OSError as exc:
                    raise UserInputError("launch: cannot start %s (%s): %s" % (node.label, node.argv[0], exc))
                _logger.info("launch: started %s (pid %d)%s, log %s", node.label, running[-1].popen.pid,
                             " on %s" % node.host.name if node.host else "", running[-1].log_path)
            _write_process_table(running, log_dir)
            outcome = _watch(running, timeout, stop, grace, poll)
        finally:
            stop_all(running, grace)
    for process in running:
        process.reader.join(2.0)  # the rest of its output, for the report
    if outcome is None:
        _logger.info("launch: all %d worker(s) finished", sum(p.node.role == "worker" for p in running))
        return 0
    _logger.error("%s", _report(*outcome))
    return 128 + stop.received if stop.received else 1


def _watch(running, timeout, stop, grace, poll):
    """None when all workers exit 0; else (failed process or None, what happened)."""
    deadline = time.monotonic() + timeout if timeout else None
    workers = [p for p in running if p.node.role == "worker"]
    others = [p for p in running if p.node.role != "worker"]
    others_done = None
    while True:
        if stop.received:
            return None, "launch was stopped by %s" % stop.received.name
        for process in running:
            if process.popen.poll() not in (None, 0):
                return process, process.describe_exit()
        if all(p.popen.poll() == 0 for p in workers):
            _wait_for(others, grace)  # they end when rank 0 tells them; stop_all ends any that does not
            return None
        if all(p.popen.poll() == 0 for p in others):  # rank 0 stopped them: the workers are ending too
            others_done = others_done or time.monotonic()
            if time.monotonic() > others_done + grace:
                late = next(p for p in workers if p.popen.poll() is None)
                return late, "still ran %g s after the scheduler and servers had ended" % grace
        if deadline is not None and time.monotonic() > deadline:
            return None, "--timeout %g s passed before the workers finished" % timeout
        time.sleep(poll)


def _wait_for(processes, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(p.popen.poll() is None for p in processes):
        time.sleep(0.1)


def stop_all(running, grace=10.0):
    """SIGTERM every process group, SIGKILL what is left after ``grace`` seconds, and reap them."""
    alive = [p for p in running if p.popen.poll() is None]
    for process in alive:
        _logger.info("launch: stopping %s (pid %d)", process.label, process.popen.pid)
        process.signal_group(signal.SIGTERM)
    _wait_for(alive, grace)
    for process in running:  # also groups whose leader ended: a DataLoader worker may outlive it
        process.signal_group(signal.SIGKILL)
    for process in running:
        try:
            process.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _logger.error("launch: %s (pid %d) did not end after SIGKILL", process.label, process.popen.pid)


def _report(process, what):
    if process is None:
        return "launch: %s; every process was stopped." % what
    hint = ""
    if any("bind failed" in line for line in process.tail):
        hint = " A port is taken: pass another --port (or none, for free ports)."
    who = process.label + (" (slot %d)" % process.node.slot if process.rank else "")
    return "launch: %s %s; every other process was stopped.%s Last lines of %s:\n%s" % (
        who, what, hint, process.log_path, "\n".join("    " + line for line in process.tail))


def _write_process_table(running, log_dir):
    """processes.json: role, slot, pid (= process group), host and log of each process, for operators."""
    table = [{"role": p.node.role, "slot": p.node.slot, "pid": p.popen.pid,
              "host": p.node.host.name if p.node.host else None, "log": p.log_path} for p in running]
    atomic_write_json(os.path.join(log_dir, "processes.json"), table)

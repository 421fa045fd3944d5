"""Run a job's processes (cluster.py's ``Node``s) and watch them until the job ends.

``run_nodes`` starts them, writes each one's output to its own log file and echoes
it with a ``[worker 1]`` prefix. It never hangs: if any process exits non-zero, a
server or the scheduler exits while workers still run, or the timeout passes, every
process group gets SIGTERM, then SIGKILL, and the failure is reported with the last
lines of the failed process's log.

With a ``stall`` limit it also finds the jobs that hang without exiting, from the
heartbeat lines every node writes (cluster.start_heartbeat): a node that stops
beating (stopped by SIGSTOP, frozen, its host lost) and a job whose workers all
beat but none uses CPU (they wait for each other: a node that cannot be reached).
"""
import collections
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

from ..atomic import atomic_write_json
from ..errors import UserInputError
from .cluster import HEARTBEAT_MARK, HEARTBEAT_SECONDS, Node

_logger = logging.getLogger(__name__)

TAIL_LINES = 20
_RANK_LABEL = re.compile(r"^\[worker (\d+/\d+)\] ")  # distributed.rank_label
# After a failure the other workers wait inside MXNet for the lost node, where their SIGTERM handler (cli.py)
# never runs: SIGKILL follows sooner than after a stop asked for by the user (files are written atomically).
FAILURE_GRACE = 3.0
_BUSY_SHARE = 0.1  # a worker that used less than 10% of a core over the stall window is waiting, not working
_SSH_HINTS = {255: "ssh to %s failed (refused, unreachable, or no key): check that `ssh -p %d %s true` works "
                   "from here without a password, or take the host out of the hostfile.",
              127: "the command was not found on %s: check --remote-python (a Python with multitask_mx) "
                   "there; ssh port %d, host %s.",
              126: "the command cannot run on %s: check --remote-python there (not executable); ssh port %d, "
                   "host %s."}


class _Process:
    """A started node: its Popen, log file and last lines (read by a thread)."""

    def __init__(self, node: Node, log_dir, echo, lock):
        self.node = node
        self.log_path = os.path.join(log_dir, node.log_name)
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.rank = None  # "1/2", read from the worker's log lines (ps-lite numbers workers as they connect)
        self.beats = collections.deque()  # (monotonic time, CPU seconds) of its recent heartbeats
        self.first_beat = None
        self.done = False  # it said its work is over (cluster.end_heartbeat)
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
                mark = line.find(HEARTBEAT_MARK)
                if mark >= 0:
                    self._heartbeat(line[mark:])
                    line = line[:mark]
                    if not line:
                        continue
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

    def _heartbeat(self, text):
        if text.rstrip().endswith(" done"):  # cluster.end_heartbeat: it only exits now, silently
            self.done = True
            return
        try:
            cpu = float(text.rsplit("cpu=", 1)[1])
        except (IndexError, ValueError):
            return
        now = time.monotonic()
        self.first_beat = self.first_beat or now
        self.beats.append((now, cpu))
        while len(self.beats) > 2 and self.beats[1][0] < now - 600:  # keep 10 minutes: the longest window
            self.beats.popleft()

    def silent_for(self, now):
        """Seconds since its last heartbeat; None before its first one."""
        return now - self.beats[-1][0] if self.beats else None

    def cpu_since(self, start):
        """CPU seconds it used since ``start`` (by its heartbeats)."""
        beats = list(self.beats)  # one atomic copy: the reader thread appends meanwhile
        before = [cpu for t, cpu in beats if t <= start]
        return beats[-1][1] - (before[-1] if before else beats[0][1])

    def why_silent(self):
        """What a missing heartbeat means for this process."""
        if self.node.host is None and _proc_state(self.popen.pid) in ("T", "t"):
            return "it is stopped (state T: SIGSTOP, Ctrl-Z or a debugger)"
        where = "its host %s does not answer, or " % self.node.host.name if self.node.host else ""
        return "%sit is frozen (stopped, or swapping)" % where

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


def run_nodes(nodes, log_dir, timeout=None, echo=sys.stdout, grace=10.0, poll=0.2, stall=None):
    """Start ``nodes`` and watch them to the end: 0 when every worker succeeded, else non-zero (logged).

    ``stall``: seconds without a heartbeat from a node, or without CPU use by any
    worker, after which the job counts as hung (None: not watched). Whatever
    happens, every process group is stopped before this returns.
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
            outcome = _watch(running, timeout, stop, grace, poll, stall)
        finally:
            found = time.monotonic()
            failed = outcome is not None and not stop.received
            stop_all(running, min(grace, FAILURE_GRACE) if failed else grace)
            if outcome is not None:
                _logger.info("launch: every process was stopped %.1f s after the failure was found",
                             time.monotonic() - found)
    for process in running:
        process.reader.join(2.0)  # the rest of its output, for the report
    if outcome is None:
        _logger.info("launch: all %d worker(s) finished", sum(p.node.role == "worker" for p in running))
        return 0
    _logger.error("%s", _report(*outcome))
    return 128 + stop.received if stop.received else 1


def _watch(running, timeout, stop, grace, poll, stall=None):
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
        if others and all(p.popen.poll() == 0 for p in others):  # rank 0 stopped them: workers end too
            others_done = others_done or time.monotonic()
            if time.monotonic() > others_done + grace:
                late = next(p for p in workers if p.popen.poll() is None)
                return late, "still ran %g s after the scheduler and servers had ended" % grace
        if deadline is not None and time.monotonic() > deadline:
            return None, "--timeout %g s passed before the workers finished" % timeout
        hung = _hung(running, workers, stall) if stall else None
        if hung:
            return hung
        time.sleep(poll)


def _hung(running, workers, stall):
    """(process or None, what) for a node that stopped beating or workers that all wait; None if all is well."""
    now = time.monotonic()
    for process in running:
        silent = process.silent_for(now)
        if silent is not None and silent > stall and process.popen.poll() is None and not process.done:
            return process, "sent no heartbeat for %.0f s (--stall-timeout %g): %s" % (
                silent, stall, process.why_silent())
    working = [p for p in workers if not p.done and p.popen.poll() is None]
    beating = [p for p in working if p.first_beat is not None]
    if not beating or len(beating) < len(working) or now - max(p.first_beat for p in beating) < stall:
        return None
    if any(p.cpu_since(now - stall) >= _BUSY_SHARE * stall for p in beating):
        return None
    quiet = [(p.silent_for(now), p) for p in running if p.popen.poll() is None and not p.done and p.beats]
    silent, culprit = max(quiet, key=lambda item: item[0])
    if silent >= 3 * HEARTBEAT_SECONDS:  # the others wait for one that stopped beating: name it
        return culprit, "sent no heartbeat for %.0f s and the other workers wait for it: %s" % (
            silent, culprit.why_silent())
    where = ", ".join(sorted({p.node.host.name for p in running if p.node.host})) or "this machine"
    return None, ("the job is stuck: for %g s (--stall-timeout) every worker was alive but none used CPU, so they "
                  "wait for a node they cannot reach (a firewall or a route between hosts: %s; ps-lite needs "
                  "every host to reach every other on the launch ports)" % (stall, where))


def _proc_state(pid):
    """The state letter of a local process (R, S, T, Z, ...), or '' if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


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
        process.signal_group(signal.SIGCONT)  # a stopped process acts on SIGTERM only once it runs again
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
    host = process.node.host
    if host is not None and process.popen.returncode in _SSH_HINTS:
        hint = " On host %s: " % host.name + _SSH_HINTS[process.popen.returncode] % (host.name, host.port, host.name)
    elif host is not None:
        hint = " On host %s." % host.name + hint
    who = process.label + (" (slot %d)" % process.node.slot if process.rank else "")
    return "launch: %s %s; every other process was stopped.%s Last lines of %s:\n%s" % (
        who, what, hint, process.log_path, "\n".join("    " + line for line in process.tail))


def _write_process_table(running, log_dir):
    """processes.json: role, slot, pid (= process group), host and log of each process, for operators."""
    table = [{"role": p.node.role, "slot": p.node.slot, "pid": p.popen.pid,
              "host": p.node.host.name if p.node.host else None, "log": p.log_path} for p in running]
    atomic_write_json(os.path.join(log_dir, "processes.json"), table)

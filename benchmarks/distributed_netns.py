"""bench_distributed.py --scaling across hosts: the three network namespaces of tests/cluster/netns.sh (each a veth
pair on one bridge, with its own address and sshd), and the nodes of an exchange job placed on them as a user's
`launch --launcher ssh` would place them. distributed_scaling.py runs the jobs and reads their figures.

The hosts share this machine's kernel, cores and files: traffic crosses the veth pairs and the bridge as TCP
between addresses, ssh included, but no wire, NIC or switch, so the figures show what the hops and the protocols
cost, not what a network's bandwidth and latency would.
"""
import contextlib
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
NETNS = os.path.join(REPO, "tests", "cluster", "netns.sh")
STATE = "/tmp/mtx-netns-bench"  # not the tests' folder: a leftover of either never mixes keys with the other
NAMESPACES = ("mtx-h1", "mtx-h2", "mtx-h3")
ME = "10.213.7.1"  # this machine on the bridge: ps-lite's scheduler
H1, H2, H3 = "10.213.7.2", "10.213.7.3", "10.213.7.4"


class HostsUnavailable(RuntimeError):
    """netns.sh could not bring the hosts up: the mode is skipped, saying why."""


def why_not():
    """Why the hosts cannot be made here (the tests' reasons, or the namespaces already in use), or None."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from conftest import why_no_namespaces
    reason = why_no_namespaces()
    if reason:
        return reason
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    taken = [ns for ns in NAMESPACES if any(line.split(" ")[0] == ns for line in listed)]
    if taken:  # netns.sh up would first tear them down, with whatever test is running on them
        return "namespace %s exists already (a test of tests/cluster/netns.sh running?); left alone" % taken[0]
    return None


@contextlib.contextmanager
def hosts():
    """Bring the hosts up for the block and always down after it; yields the ssh config (or raises HostsUnavailable)."""
    # the sshds pass PYTHONPATH on: the hosts import this checkout, as this machine does
    paths = [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != REPO]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    try:
        up = subprocess.run(["bash", NETNS, "up", STATE], capture_output=True, text=True, timeout=120, env=env)
        if up.returncode:
            raise HostsUnavailable("netns.sh up failed (%d): %s" % (up.returncode, up.stderr.strip()[-500:]))
        yield os.path.join(STATE, "ssh_config")
    finally:
        subprocess.run(["bash", NETNS, "down", STATE], capture_output=True, timeout=60)


def hosts_cpu_seconds():
    """CPU seconds of the hosts' sshds and every process they ran and reaped (utime, stime, cutime, cstime).

    The jobs' processes on the hosts are the sshds' descendants, not this process's: without this, common's
    quiet check would count them as other work.
    """
    total = 0
    for i in range(1, len(NAMESPACES) + 1):
        with open(os.path.join(STATE, "sshd_%d.pid" % i)) as f:
            pid = f.read().strip()
        with open("/proc/%s/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15])
    return total / float(os.sysconf("SC_CLK_TCK"))


def settle():
    """Give the hosts' sshds a moment to reap the sessions of a job that just ended."""
    time.sleep(1.0)


def ps_lite_nodes(worker_argv, env, ssh_config):
    """The scheduler here, the server on host 1 and the 2 workers on hosts 2 and 3, over ssh (plan_ssh's nodes)."""
    from multitask_mx.training import cluster
    return cluster.plan_ssh(2, 1, [cluster.Host(h) for h in (H1, H2, H3)], worker_argv, ME, extra_env=env,
                            ssh_config=ssh_config)


def horovod_node(worker_argv, env, ssh_config, log_dir):
    """horovodrun (Gloo), run on host 1, with its 2 workers on hosts 2 and 3 over ssh, as the tests run it.

    Started from host 1, not here: horovodrun's rendezvous listens on the --network-interface, which the hosts
    have (eth0) and this machine (mtxbr0) has not (tests/training/test_cluster_ssh.py, launch_horovod).
    """
    from multitask_mx.commands.launch import ssh_wrapper_dir, write_ssh_wrapper
    from multitask_mx.training import cluster
    write_ssh_wrapper(log_dir, ssh_config)  # horovodrun's plain `ssh` with the hosts' config
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    argv = ["ip", "netns", "exec", NAMESPACES[0], horovodrun, "--gloo", "-np", "2", "-H", "%s:1,%s:1" % (H2, H3),
            "--network-interface", "eth0", "--disable-cache"] + worker_argv
    path = ssh_wrapper_dir(log_dir) + os.pathsep + os.environ.get("PATH", "")
    return [cluster.Node("worker", 0, dict(env, PATH=path, PYTHONUNBUFFERED="1"), argv)]

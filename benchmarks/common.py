"""What every benchmark prints at its top: the machine, the versions and the threads."""
import os
import platform

from multitask_mx import _runtime


def cpu_name():
    """The CPU's model name from /proc/cpuinfo (or 'unknown CPU')."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine_header(devices=None):
    """Lines: machine and load, versions and MXNet build, thread settings (call after mxnet is imported)."""
    from multitask_mx.commands.doctor import build_features, versions
    v = versions()
    return [
        "machine: %s, %d usable of %d cores, %s; load average %.2f %.2f %.2f%s"
        % ((cpu_name(), _runtime.usable_cores(), os.cpu_count(), platform.machine()) + os.getloadavg()
           + ("; devices %s" % devices if devices else "",)),
        "versions: python %s, mxnet %s, gluoncv %s, numpy %s, opencv %s"
        % (v["python"], v["mxnet"], v["gluoncv"], v["numpy"], v["opencv"]),
        "mxnet build: " + ", ".join(k for k, on in build_features().items() if on),
        "threads: " + ", ".join("%s=%s" % kv for kv in sorted(_runtime.THREAD_SETTINGS.items())),
    ]

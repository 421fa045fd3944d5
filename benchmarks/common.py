"""What every benchmark records: the machine, versions, threads and load, and its result file.

Each benchmark script imports this module first (its import time is the run's start: load
average and CPU counters are read then), accepts ``--smoke`` (a few seconds of work, to show
it still runs) and ends with ``write_result(name, figures)``, which stores
``benchmarks/results/<name>.json`` (``benchmarks/results/smoke/<name>.json`` for smoke runs,
a git-ignored folder: smoke figures are never published). ``benchmarks/report.py`` builds the
README's speed section from those files.

Quiet or not: a run is ``quiet`` when, at its start and averaged over the run, other processes
kept at most QUIET_OTHERS_PER_CORE of the machine's cores busy. This is measured from
/proc/stat's busy time minus this process tree's own CPU time, not from the load average:
the 1-minute load at the end counts the benchmark's own threads (2 on 2 cores) and, in
``make bench``, the previous benchmark's decaying load, so a load threshold would mark every
run busy. Both load averages are stored beside it for the reader.
"""
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone

from multitask_mx import _runtime

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# Other processes may use at most this share of the cores (on average) for a run to count as quiet.
QUIET_OTHERS_PER_CORE = 0.1
CPU_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MXNET_CPU_WORKER_NTHREADS", "MXNET_ENGINE_TYPE",
                    "MXNET_USE_OPERATOR_TUNING", "KMP_AFFINITY", "DNNL_MAX_CPU_ISA", "MXNET_MKLDNN_ENABLED")

_START = {}
_OWN_ELSEWHERE = [0.0]  # CPU seconds of this run's processes that are not its descendants (count_own_cpu)


def _busy_seconds():
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its reaped children)."""
    busy = None
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / float(os.sysconf("SC_CLK_TCK"))  # guest time is already in user
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system + _OWN_ELSEWHERE[0]


def count_own_cpu(seconds):
    """Count ``seconds`` of CPU as this run's own: processes it had started through a daemon (an sshd), which
    os.times() does not see, so that the quiet check does not take them for other work."""
    _OWN_ELSEWHERE[0] += seconds


def _others_busy_cores(start, end, wall):
    """Cores kept busy by other processes between two _busy_seconds samples (None where unknown)."""
    if start[0] is None or end[0] is None or wall <= 0:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / wall)


def start_run(sample_seconds=0.5):
    """Mark the run's start: load average, CPU counters, and others' CPU use over a short idle sample."""
    first = _busy_seconds()
    t0 = time.time()
    if sample_seconds > 0:
        time.sleep(sample_seconds)
    second = _busy_seconds()
    _START.update(wall=time.time(), counters=second, loadavg=os.getloadavg(),
                  others_at_start=_others_busy_cores(first, second, time.time() - t0))
    return _START


def cpu_name():
    """The CPU's model name from /proc/cpuinfo (or 'unknown CPU')."""
    return _cpuinfo().get("model name", "unknown CPU")


def _cpuinfo():
    """The first processor's fields from /proc/cpuinfo ({} where there is none)."""
    fields = {}
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    return fields


def machine_info():
    """CPU model, the AVX-512/AMX flags that matter to MXNet's oneDNN, cores and memory."""
    flags = set(_cpuinfo().get("flags", "").split())
    memory_gb = None
    if os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory_gb = round(int(line.split()[1]) / 1024.0 ** 2, 1)
    return {"cpu": cpu_name(), "arch": platform.machine(), "flags": {k: k in flags for k in CPU_FLAGS},
            "usable_cores": _runtime.usable_cores(), "cpu_count": os.cpu_count(), "memory_gb": memory_gb,
            "node": platform.node(), "os": platform.platform()}


def versions():
    """Versions of the stack, read without importing mxnet where it is not loaded yet."""
    from importlib import metadata
    out = {"python": platform.python_version()}
    for name, dists in (("mxnet", ("mxnet",)), ("gluoncv", ("gluoncv",)), ("numpy", ("numpy",)),
                        ("opencv", ("opencv-python", "opencv-python-headless", "opencv-contrib-python"))):
        module = sys.modules.get("cv2" if name == "opencv" else name)
        out[name] = getattr(module, "__version__", None)
        for dist in dists if out[name] is None else ():
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def thread_settings():
    """What configure_threads chose, and the thread variables in this process's environment."""
    out = {"chosen": dict(_runtime.THREAD_SETTINGS)}
    out["environment"] = {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}
    return out


def is_smoke(argv=None):
    """True when the command line asks for a smoke run."""
    return "--smoke" in (sys.argv if argv is None else argv)


def write_result(name, figures, command=None, notes=None, machine=None, smoke=None, results_dir=None):
    """Store one benchmark's figures with its machine, load, versions and command; returns the path.

    ``figures`` is any JSON-able dict or list of rows; ``machine`` adds to (or overrides) the
    machine description (e.g. devices). One file per ``name``: a rerun replaces it. Smoke runs
    (``--smoke`` on the command line unless ``smoke`` says otherwise) go to results/smoke/.
    """
    if not _START:
        start_run(0)
    end_counters, end_wall = _busy_seconds(), time.time()
    wall = end_wall - _START["wall"]
    during = _others_busy_cores(_START["counters"], end_counters, wall)
    cores = _runtime.usable_cores()
    limit = QUIET_OTHERS_PER_CORE * cores
    known = [x for x in (_START["others_at_start"], during) if x is not None]
    smoke = is_smoke() if smoke is None else smoke
    record = {
        "name": name, "smoke": smoke,
        "utc": datetime.fromtimestamp(end_wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command or _command_line(),
        "machine": dict(machine_info(), **(machine or {})),
        "versions": versions(), "threads": thread_settings(),
        "load_average": {"start": [round(x, 2) for x in _START["loadavg"]],
                         "end": [round(x, 2) for x in os.getloadavg()]},
        "others_busy_cores": {"start": _rnd(_START["others_at_start"]), "during": _rnd(during), "limit": limit},
        "quiet": bool(known) and all(x <= limit for x in known),
        "run_seconds": round(wall, 1), "notes": notes, "figures": figures,
    }
    folder = results_dir or os.environ.get("BENCH_RESULTS_DIR") or RESULTS_DIR
    folder = os.path.join(folder, "smoke") if smoke else folder
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "%s.json" % name)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % name, suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w") as f:  # write then rename: a reader never sees half a file
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    print("result: %s (quiet: %s)" % (os.path.relpath(path), record["quiet"]), file=sys.stderr)
    return path


def _command_line():
    """sys.argv as a command to paste in the repository root (script path made relative to it)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = list(sys.argv)
    if argv and os.path.exists(argv[0]):
        argv[0] = os.path.relpath(os.path.abspath(argv[0]), root)
    return " ".join([".venv/bin/python"] + argv)


def _rnd(x):
    return None if x is None else round(x, 2)


def machine_header(devices=None):
    """Lines: machine and load, versions and MXNet build, thread settings (call after mxnet is imported)."""
    from multitask_mx.commands.doctor import build_features, versions as stack_versions
    v = stack_versions()
    return [
        "machine: %s, %d usable of %d cores, %s; load average %.2f %.2f %.2f%s"
        % ((cpu_name(), _runtime.usable_cores(), os.cpu_count(), platform.machine()) + os.getloadavg()
           + ("; devices %s" % devices if devices else "",)),
        "versions: python %s, mxnet %s, gluoncv %s, numpy %s, opencv %s"
        % (v["python"], v["mxnet"], v["gluoncv"], v["numpy"], v["opencv"]),
        "mxnet build: " + ", ".join(k for k, on in build_features().items() if on),
        "threads: " + ", ".join("%s=%s" % kv for kv in sorted(_runtime.THREAD_SETTINGS.items())),
    ]


start_run(0)  # importing this module starts the run; scripts may call start_run() again for an idle sample


def train_config(flags):
    """The TrainConfig of `train`'s argv ``flags`` (e.g. ["--data-train", path, "--save-result", "unused"])."""
    import argparse
    from multitask_mx.commands import train as train_command
    from multitask_mx.training.config import TrainConfig
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return TrainConfig.from_args(parser.parse_args(list(flags)))


def train_dataset(train_list, tasks, flags, normalization="imagenet", uint8=False):
    """`train`'s own training dataset of ``train_list`` under train's argv ``flags``: the augmentation `train`
    would choose for it, and that transform preset."""
    from multitask_mx.training import inputs
    config = train_config(flags)
    shape = config.data.shape()
    recipe = inputs.choose_augmentation(config.augment, config.model.is_finetuning(), config.optim.num_epoch,
                                        train_list, tasks, shape, config.optim.batch_size)
    return inputs.build_datasets(config.data, train_list, None, tasks, shape, normalization, recipe.config,
                                 uint8=uint8)[0]

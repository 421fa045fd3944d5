"""bench_distributed.py --scaling: (c) gradient-exchange cost against the number of workers, ps-lite and Horovod,
and (d) what a failure costs. See bench_distributed.py's docstring; the result is bench_distributed_scaling.
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import distributed_netns as netns

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKER_ENV = "BENCH_DISTRIBUTED_EXCHANGE"  # "ps-lite" or "horovod": this process is an exchange worker
NETWORKS = ("cifar_resnet20_v1", "resnet50_v1")
WORKERS = (2, 3, 4)
FAULTS = (("worker", 1, signal.SIGKILL), ("server", 0, signal.SIGKILL), ("scheduler", 0, signal.SIGKILL),
          ("worker", 0, signal.SIGSTOP))
STALL = 10
SMOKE_SKIP = "about 80 s on 2 cores"  # the namespaces part of a full run, for --smoke's note
HOSTS_NOTE = ("ps-lite's scheduler on this machine (the bridge, %s), its server on host 1 and the 2 "
              "workers on hosts 2 and 3; horovodrun on host 1, its 2 workers on hosts 2 and 3; tests/cluster/netns.sh"
              % netns.ME)


def _gradient_arrays(network):
    import mxnet as mx
    from gluoncv.model_zoo import get_model
    net = get_model(network, pretrained=False, classes=10 if network.startswith("cifar") else 1000)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32) if network.startswith("cifar") else (1, 3, 224, 224)))
    return [mx.nd.ones(p.shape) for p in net.collect_params().values() if p.grad_req != "null"]


def exchange_worker(engine, iterations):
    """Run as a launched worker: ms per exchange of each network's gradients, as gluon.Trainer does them."""
    import mxnet as mx
    from multitask_mx.training import distributed
    kv = distributed.create_kvstore("horovod" if engine == "horovod" else "dist_sync")
    out, base = {}, 0
    for network in NETWORKS:
        arrays = _gradient_arrays(network)
        keys = list(range(base, base + len(arrays)))
        base += len(arrays)
        distributed.init_keys(kv, keys, [a.copy() for a in arrays])
        times = []
        for _ in range(iterations + 2):  # the first two warm up
            tic = time.time()
            for key, array in zip(keys, arrays):
                kv.pushpull(key, array, priority=-key)
            mx.nd.waitall()
            times.append((time.time() - tic) * 1000)
        out[network] = {"ms": times[2:], "floats": sum(a.size for a in arrays), "arrays": len(arrays)}
    print("EXCHANGE %s" % json.dumps({"rank": kv.rank, "results": out}), flush=True)
    distributed.finish(kv, None)


def exchange_nodes(engine, workers, argv, log_dir, ssh_config=None):
    """The nodes of one exchange job: all on loopback, or (``ssh_config`` given) on the namespaces' hosts."""
    from multitask_mx import _runtime
    from multitask_mx.training import cluster
    # the same threads on loopback and across the hosts, which share this machine's cores
    env = {"OMP_NUM_THREADS": str(max(1, _runtime.usable_cores() // workers)), WORKER_ENV: engine}
    if ssh_config and engine == "horovod":
        return netns.horovod_node(argv, env, ssh_config, log_dir)
    if ssh_config:
        return netns.ps_lite_nodes(argv, env, ssh_config)
    if engine == "horovod":
        command = [os.path.join(os.path.dirname(sys.executable), "horovodrun"), "--gloo", "-np", str(workers),
                   "-H", "localhost:%d" % workers, "--network-interface", "lo", "--disable-cache"] + argv
        return [cluster.Node("worker", 0, dict(env, HOROVOD_GLOO_IFACE="lo"), command)]
    nodes = cluster.plan_local(workers, 1, argv, worker_threads=int(env["OMP_NUM_THREADS"]))
    for node in nodes:
        node.env[WORKER_ENV] = engine
    return nodes


def run_exchange(engine, workers, iterations, log_dir, ssh_config=None):
    """One job of ``workers`` exchange workers (on the namespaces' hosts with ``ssh_config``); rank 0's results."""
    from multitask_mx.training import processes
    argv = [sys.executable, os.path.join(HERE, "bench_distributed.py"), "--iterations", str(iterations)]
    nodes = exchange_nodes(engine, workers, argv, log_dir, ssh_config)
    if processes.run_nodes(nodes, log_dir, timeout=900, echo=None) != 0:
        raise SystemExit("the %s exchange job with %d workers failed; logs in %s" % (engine, workers, log_dir))
    for name in sorted(os.listdir(log_dir)):
        if not name.endswith(".log"):
            continue
        for line in open(os.path.join(log_dir, name)):
            text = line[line.find("EXCHANGE "):] if "EXCHANGE " in line else ""
            if text and json.loads(text[9:])["rank"] == 0:
                return json.loads(text[9:])["results"]
    raise SystemExit("no EXCHANGE line from rank 0 in %s" % log_dir)


def exchange_rows(engine, workers, where, results):
    """One table row per network: the median, min and max ms of rank 0's exchanges."""
    return [{"engine": engine, "workers": workers, "where": where, "network": network,
             "mfloats": round(r["floats"] / 1e6, 2), "ms_median": round(statistics.median(r["ms"]), 1),
             "ms_min": round(min(r["ms"]), 1), "ms_max": round(max(r["ms"]), 1)}
            for network, r in ((n, results[n]) for n in NETWORKS)]


def across_hosts(engines, iterations, root, smoke):
    """(c) with 2 workers on the namespaces' hosts: (rows, None), or ([], why nothing was measured)."""
    import common
    if smoke:
        return [], "not run in --smoke: it brings up three hosts and runs a job per engine (%s)" % SMOKE_SKIP
    reason = netns.why_not()
    if reason:
        return [], reason
    rows = []
    try:
        with netns.hosts() as ssh_config:
            before = netns.hosts_cpu_seconds()
            try:
                for engine in engines:
                    print("measuring (c) %s, 2 workers across the namespaces ..." % engine, file=sys.stderr, flush=True)
                    results = run_exchange(engine, 2, iterations, os.path.join(root, "hosts-" + engine), ssh_config)
                    rows += exchange_rows(engine, 2, "namespaces", results)
            finally:
                netns.settle()
                common.count_own_cpu(netns.hosts_cpu_seconds() - before)
    except netns.HostsUnavailable as exc:
        return [], str(exc)
    return rows, None


def fault_cost(root, role, slot, sig):
    """Seconds from ``sig`` to one process of a 2-worker job (in epoch 2) to the launcher's exit."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from conftest import make_images, write_list
    images = os.path.join(root, "images")
    train = os.path.join(root, "train.lst")
    if not os.path.exists(train):
        write_list(train, make_images(images, 20, seed=1))
    save = os.path.join(root, "fault-%s-%d-%s" % (role, slot, sig.name))
    argv = [sys.executable, "-m", "multitask_mx", "launch", "-n", "2", "-s", "1", "--timeout", "300",
            "--stall-timeout", str(STALL), "--", "train", "--kv-store", "dist_sync", "--data-train", train,
            "--image-train", images, "--save-result", save, "--num-epoch", "5", "--network", "mobilenet0.25",
            "--image-shape", "3,32,32", "--batch-size", "4", "--data-nthreads", "1", "--num-classes", "4", "--quiet"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not os.path.exists(os.path.join(save, "history.json")):
        if proc.poll() is not None:
            raise SystemExit("the fault job ended early:\n" + proc.stderr.read()[-2000:])
        time.sleep(0.05)
    with open(os.path.join(save, "launch", "processes.json")) as f:
        pid = next(p["pid"] for p in json.load(f) if p["role"] == role and p["slot"] == slot)
    os.kill(pid, sig)
    tic = time.time()
    err = proc.communicate(timeout=300)[1]
    seconds = time.time() - tic
    said = [line.split(" E launch: ", 1)[1][:160] for line in err.splitlines() if " E launch: " in line]
    return {"fault": "%s %s %d" % (sig.name, role, slot), "seconds": round(seconds, 1), "exit": proc.returncode,
            "reported": said[0] if said else ""}


def _horovod_available():
    try:
        import horovod.mxnet  # noqa: F401
        return os.path.exists(os.path.join(os.path.dirname(sys.executable), "horovodrun"))
    except ImportError:
        return False


def main(args):
    """Measure (c), on loopback and across the namespaces' hosts, and (d); print the tables, store the result."""
    import common
    common.start_run()
    print("# bench_distributed.py --scaling %s" % time.strftime("%Y-%m-%d %H:%M"))
    print("\n".join(common.machine_header()), flush=True)
    engines = ["ps-lite"] + (["horovod"] if _horovod_available() else [])
    exchange, faults = [], []
    with tempfile.TemporaryDirectory(prefix="bench_distributed_scaling_") as root:
        for engine in engines:
            for workers in WORKERS:
                print("measuring (c) %s, %d workers ..." % (engine, workers), file=sys.stderr, flush=True)
                results = run_exchange(engine, workers, args.iterations, os.path.join(root, "%s%d" % (engine, workers)))
                exchange += exchange_rows(engine, workers, "loopback", results)
        rows, skipped = across_hosts(engines, args.iterations, root, args.smoke)
        exchange += rows
        for role, slot, sig in FAULTS:
            print("measuring (d) %s of %s %d ..." % (sig.name, role, slot), file=sys.stderr, flush=True)
            faults.append(fault_cost(root, role, slot, sig))
    print_tables(exchange, faults, skipped)
    common.write_result("bench_distributed_scaling", {"exchange": exchange, "faults": faults, "settings": {
        "iterations": args.iterations, "stall": STALL, "namespaces": HOSTS_NOTE}},
        notes="namespaces part not measured: %s" % skipped if skipped else None)
    return 0


def print_tables(exchange, faults, skipped):
    """(c) and (d) as the run's tables."""
    print("\n%-8s %-10s %-18s %8s %10s %10s %10s" % ("engine", "where", "parameters", "workers", "M floats",
                                                     "ms/exch", "min"))
    for row in exchange:
        print("%-8s %-10s %-18s %8d %10.2f %10.1f %10.1f" % (row["engine"], row["where"], row["network"],
                                                            row["workers"], row["mfloats"], row["ms_median"],
                                                            row["ms_min"]))
    print("across the namespaces: " + HOSTS_NOTE if not skipped else "namespaces part not measured: %s" % skipped)
    print("\n%-22s %8s %5s  %s" % ("fault (stall %d s)" % STALL, "s to end", "exit", "what launch reported"))
    for row in faults:
        print("%-22s %8.1f %5d  %s" % (row["fault"], row["seconds"], row["exit"], row["reported"]))
    print("load average %.2f %.2f %.2f at the end" % os.getloadavg())

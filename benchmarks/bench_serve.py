#!/usr/bin/env python
"""Load test of ``multitask-mx serve`` on loopback: batching on against off, in one run.

The same server (a subprocess, random weights, photo-sized JPEG uploads) is started
twice: with ``--max-batch 16`` (the default: the model thread batches concurrent
requests) and with ``--max-batch 1`` (one image per forward pass). Each gets a warm-up
of ``--warmup`` requests, then ``--requests`` POST /predict from ``--clients`` threads,
each on its own keep-alive connection. Any non-200 answer counts as an error. The
clients share the machine's cores with the server, as a local load test must.

Each configuration runs with ``OMP_WAIT_POLICY=PASSIVE`` (what docs/serving.md
recommends) and, with ``--wait-policy both`` (the default), also with OpenMP's default
spinning wait, which stalls one-image forward passes when request threads share the cores.

    python benchmarks/bench_serve.py                  # resnet18_v1 at 224, 200 requests, 8 clients
    python benchmarks/bench_serve.py --network resnet50_v1 --requests 100
    python benchmarks/bench_serve.py --smoke          # seconds: resnet18_v1 at 32, 8 requests, PASSIVE only
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_predict import make_photos, make_save_dir, machine_lines  # noqa: E402  (configures threads first)
import common  # noqa: E402

from multitask_mx.devices import parse_contexts  # noqa: E402


def parse_args(argv=None):
    """Benchmark flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="resnet18_v1", help="GluonCV network of the trunk")
    parser.add_argument("--size", type=int, default=224, help="network input side")
    parser.add_argument("--photo", default="500x375", help="WIDTHxHEIGHT of the uploaded JPEGs")
    parser.add_argument("--images", type=int, default=16, help="distinct JPEGs the clients cycle through")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per server configuration")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--warmup", type=int, default=16, help="untimed requests first")
    parser.add_argument("--max-batch", type=int, default=16, help="--max-batch of the batching server")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="--max-wait-ms of the batching server")
    parser.add_argument("--wait-policy", choices=["passive", "both"], default="both",
                        help="OMP_WAIT_POLICY of the servers: PASSIVE only, or PASSIVE and OpenMP's default")
    parser.add_argument("--gpus", default="", help="GPU id for the server ('' for CPU)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: resnet18_v1 at 32, 8 requests of 64x48 JPEGs from 2 clients, PASSIVE only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.network, args.size, args.photo, args.images, args.requests, args.clients, args.warmup = \
            "resnet18_v1", 32, "64x48", 4, 8, 2, 2
        args.wait_policy = "passive"
    return args


class Server:
    """``python -m multitask_mx serve --port 0`` in a subprocess; ``url`` once /health answers."""

    def __init__(self, save_dir, log_dir, flags, env):
        self.log = open(os.path.join(log_dir, "serve-%s.log" % uuid.uuid4().hex[:6]), "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "multitask_mx", "serve", "--save-result", save_dir,
                                      "--port", "0", "--quiet"] + flags, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=env)
        deadline = time.time() + 300
        self.url = None
        while self.url is None and time.time() < deadline and self.proc.poll() is None:
            time.sleep(0.2)
            self.log.seek(0)
            self.url = next((line.split(" on ", 1)[1].strip() for line in self.log.read().splitlines()
                             if line.startswith("serving ")), None)
        if self.url is None:
            self.stop()
            self.log.seek(0)
            raise RuntimeError("the server did not start:\n" + self.log.read()[-3000:])

    def health(self):
        """GET /health as a dict."""
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("GET", "/health")
        body = json.loads(conn.getresponse().read())
        conn.close()
        return body

    def stop(self):
        """SIGTERM, then wait."""
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def multipart_bodies(paths):
    """(body, headers) of a multipart upload for each JPEG."""
    bodies = []
    for path in paths:
        boundary = uuid.uuid4().hex
        head = ('--%s\r\nContent-Disposition: form-data; name="image"; filename="%s"\r\n'
                'Content-Type: image/jpeg\r\n\r\n' % (boundary, os.path.basename(path))).encode()
        body = head + open(path, "rb").read() + ("\r\n--%s--\r\n" % boundary).encode()
        bodies.append((body, {"Content-Type": "multipart/form-data; boundary=" + boundary}))
    return bodies


def load(url, bodies, total, clients):
    """Send ``total`` uploads from ``clients`` threads; (seconds, latencies in s, error texts)."""
    parts = urllib.parse.urlsplit(url)
    counter = iter(range(total))
    lock = threading.Lock()
    latencies, errors = [], []

    def client():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            body, headers = bodies[n % len(bodies)]
            tic = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    errors.append("%d %s" % (response.status, data[:200]))
            except (OSError, http.client.HTTPException) as exc:
                errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
            latencies.append(time.perf_counter() - tic)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    tic = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - tic, latencies, errors


def server_env(wait_policy):
    """This process's environment with OMP_WAIT_POLICY set (or removed, for OpenMP's default)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONUNBUFFERED"] = "1"
    if wait_policy != "default":
        env["OMP_WAIT_POLICY"] = wait_policy
    return env


def measure(save_dir, log_dir, bodies, args, flags, wait_policy):
    """One server configuration: warm-up, timed load, batch sizes; a dict of figures."""
    server = Server(save_dir, log_dir, flags, server_env(wait_policy))
    try:
        load(server.url, bodies, args.warmup, args.clients)
        before = server.health()["batches"]
        seconds, latencies, errors = load(server.url, bodies, args.requests, args.clients)
        after = server.health()["batches"]
    finally:
        server.stop()
    sizes = {int(k): v - before.get(k, 0) for k, v in after.items()}
    forwards = sum(sizes.values())
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / seconds, "p50": 1000 * cuts[49], "p95": 1000 * cuts[94], "errors": errors,
            "mean_batch": sum(k * v for k, v in sizes.items()) / max(1, forwards), "forwards": forwards}


def main(argv=None):
    """Generate the images and the model, load-test both servers, print one table."""
    args = parse_args(argv)
    ctxs = parse_contexts(args.gpus)
    width, height = (int(v) for v in args.photo.lower().split("x"))
    batching = [("batching on", ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]),
                ("batching off", ["--max-batch", "1"])]
    policies = ["PASSIVE"] + (["default"] if args.wait_policy == "both" else [])
    configs = [(name, flags, policy) for policy in policies for name, flags in batching]
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        os.makedirs(os.path.join(tmp, "images"))
        bodies = multipart_bodies(make_photos(os.path.join(tmp, "images"), args.images, width, height))
        save_dir = make_save_dir(os.path.join(tmp, "run"), args.network, args.size, ctxs[0])
        gpu_flags = ["--gpus", args.gpus] if args.gpus else []
        results = [measure(save_dir, tmp, bodies, args, flags + gpu_flags, policy) for _, flags, policy in configs]
    lines = machine_lines(ctxs)
    lines.append("%s at %dx%d, random weights, 2 tasks; %d requests (multipart JPEG %dx%d) from %d clients "
                 "on loopback, after %d warm-up requests" % (args.network, args.size, args.size, args.requests,
                                                             width, height, args.clients, args.warmup))
    lines.append("")
    lines.append("%-14s %9s %15s %7s %8s %8s %8s %11s" % ("server", "max batch", "OMP_WAIT_POLICY", "errors",
                                                            "req/s", "p50 ms", "p95 ms", "mean batch"))
    for r, (name, flags, policy) in zip(results, configs):
        lines.append("%-14s %9s %15s %7d %8.1f %8.1f %8.1f %11.2f" % (
            name, flags[1], policy, len(r["errors"]), r["rps"], r["p50"], r["p95"], r["mean_batch"]))
    print("\n".join(lines))
    rows = [{"server": name, "max_batch": int(flags[1]), "omp_wait_policy": policy, "errors": len(r["errors"]),
             "req_s": round(r["rps"], 1), "p50_ms": round(r["p50"]), "p95_ms": round(r["p95"]),
             "mean_batch": round(r["mean_batch"], 2)} for r, (name, flags, policy) in zip(results, configs)]
    common.write_result("bench_serve", {"rows": rows, "network": args.network, "size": args.size,
                                        "requests": args.requests, "clients": args.clients, "photo": args.photo,
                                        "warmup": args.warmup})
    failures = [e for r in results for e in r["errors"]]
    if failures:
        print("errors (first 5):\n  " + "\n  ".join(failures[:5]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

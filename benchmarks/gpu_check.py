"""The GPU checks of issue 14, as one script for a machine with an NVIDIA GPU (a few minutes).

    python benchmarks/gpu_check.py                 # writes benchmarks/results/gpu_check-<host>.json
    python benchmarks/gpu_check.py --quick         # skips the loader benchmark and the float16 runs

Needs a GPU build in this Python: ``pip uninstall -y mxnet && pip install -c constraints.txt -e ".[cu112,test]"``.
Each step runs the real CLI in a child process and records its exit code, its time, the lines that
matter and its figures; nothing stops the script, so one failure still leaves the other answers:

1. nvidia-smi and ``doctor --gpus 0`` (driver, each GPU's sm_XY and whether the wheel has kernels,
   missing CUDA libraries, NVRTC/fusion, speed at a batch that fills the GPU);
2. the raw first GPU operation, outside our checks: on an H100/H200 with the pip wheel this stores
   MXNet's real "no kernel image" text, and whether ``mxerrors`` classifies it;
3. tiny real trainings on GPU 0: float32 (uint8 loader, pinned memory), float16 on a zoo network and
   on a classic-checkpoint trunk (AMP casts), ``--resume`` onto another GPU set when there are two GPUs;
4. the loader benchmark (img/s per worker, uint8 against float32).
"""
import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))


def run(name, argv, timeout=600, env=None):
    """Run a command; returns its record (exit code, seconds, last lines)."""
    tic = time.time()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=REPO, **(env or {})))
        code, out = proc.returncode, proc.stdout + proc.stderr
    except OSError as exc:  # e.g. no nvidia-smi
        code, out = "not run", str(exc)
    except subprocess.TimeoutExpired as exc:
        code, out = "timeout", (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else str(exc.stdout or "")
    record = {"step": name, "command": " ".join(argv), "exit": code, "seconds": round(time.time() - tic, 1),
              "tail": [line for line in out.splitlines() if "legacy_json_util" not in line][-25:]}
    print("[%s] exit %s in %.0f s" % (name, code, record["seconds"]), flush=True)
    return record


def speeds(record):
    """The 'Speed: N samples/sec' and '(N img/s)' figures of a training log tail."""
    text = "\n".join(record["tail"])
    return [float(v) for v in re.findall(r"\(([\d.]+) img/s\)", text)]


def first_gpu_op():
    """MXNet's own error (or success) for one operation on gpu(0), cleaned and classified by mxerrors."""
    code = ("import json, multitask_mx, mxnet as mx\n"
            "from multitask_mx.mxerrors import clean_mxnet_error, device_error_kind\n"
            "try:\n    (mx.nd.ones((1,), ctx=mx.gpu(0)) + 1).asnumpy(); print(json.dumps({'ok': True}))\n"
            "except mx.base.MXNetError as e:\n"
            "    print(json.dumps({'ok': False, 'raw': str(e), 'clean': clean_mxnet_error(e),"
            " 'kind': (device_error_kind(e) or [None])[0]}))\n")
    return run("first GPU operation (no checks)", [sys.executable, "-c", code], timeout=300)


def training_steps(tmp, quick):
    """Tiny trainings on the GPU(s) through the real CLI."""
    from conftest import make_classic_checkpoint, make_images, write_list
    root = os.path.join(tmp, "images")
    train = write_list(os.path.join(tmp, "train.lst"), make_images(root, 64, size=96, seed=1))
    val = write_list(os.path.join(tmp, "val.lst"), make_images(root, 8, size=96, seed=2), start_index=1000)
    common = [sys.executable, "-m", "multitask_mx", "train", "--data-train", train, "--image-train", root,
              "--data-val", val, "--image-val", root, "--num-classes", "4", "--image-shape", "3,96,96",
              "--batch-size", "64", "--num-epoch", "2", "--quiet", "--disp-batches", "1"]
    steps = [run("train float32 resnet18_v1 gpu 0", common + ["--network", "resnet18_v1", "--gpus", "0",
                                                                "--save-result", os.path.join(tmp, "fp32")])]
    if not quick:
        steps.append(run("train float16 resnet18_v1 gpu 0", common + [
            "--network", "resnet18_v1", "--gpus", "0", "--dtype", "float16", "--save-result", os.path.join(tmp, "fp16")]))
        classic = make_classic_checkpoint(os.path.join(tmp, "resnet-50"))
        steps.append(run("train float16 classic resnet-50 trunk gpu 0", common + [
            "--model", classic, "--gpus", "0", "--dtype", "float16", "--save-result", os.path.join(tmp, "classic")]))
    import multitask_mx  # noqa: F401  (loads the pip CUDA libraries before mxnet)
    import mxnet as mx
    if mx.context.num_gpus() >= 2:
        save = os.path.join(tmp, "moved")
        steps.append(run("train gpus 0,1", common + ["--network", "resnet18_v1", "--gpus", "0,1", "--save-result", save]))
        steps.append(run("resume on gpu 1 only", [a if a != "2" else "3" for a in common] + [
            "--network", "resnet18_v1", "--gpus", "1", "--save-result", save, "--resume"]))
    for step in steps:
        step["img_s"] = speeds(step)
    return steps


def main():
    """Run every step and store the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results",
                                                      "gpu_check-%s.json" % socket.gethostname()))
    args = parser.parse_args()
    record = {"command": " ".join(sys.argv), "host": socket.gethostname(), "platform": platform.platform(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_before": os.getloadavg()}
    record["nvidia_smi"] = run("nvidia-smi", ["nvidia-smi", "--query-gpu=index,name,compute_cap,driver_version,"
                                               "memory.total", "--format=csv"], timeout=60)
    record["doctor"] = run("doctor --gpus 0", [sys.executable, "-m", "multitask_mx", "doctor", "--gpus", "0",
                                               "--seconds", "20"])
    record["first_gpu_op"] = first_gpu_op()
    if record["doctor"]["exit"] == 0:
        with tempfile.TemporaryDirectory() as tmp:
            record["training"] = training_steps(tmp, args.quick)
        if not args.quick:
            out = os.path.join(tempfile.gettempdir(), "bench_loader_gpu_check.json")
            record["loader"] = run("bench_loader", [sys.executable, "benchmarks/bench_loader.py", "--json", out])
            if os.path.exists(out):
                with open(out) as f:
                    record["loader"]["figures"] = json.load(f)
    else:
        record["training"] = "skipped: doctor refused this GPU or failed (see doctor's tail)"
    record["load_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print("wrote %s" % args.out)


if __name__ == "__main__":
    main()

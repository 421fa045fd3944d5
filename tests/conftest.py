"""Shared fixtures: tiny real JPEG datasets, .lst files and pretrained params files."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import multitask_mx  # noqa: F401  (numpy shim before mxnet)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
CLASSIC_SYMBOL = os.path.join(FIXTURES, "resnet-50-symbol.json")
CLASS_NAMES = ["background", "circle", "square", "triangle"]


def _drawing_module():
    path = os.path.join(REPO, "data_example", "make_data_example.py")
    spec = importlib.util.spec_from_file_location("make_data_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_images(root, per_class, size=32, seed=0, classes=4):
    """Draw ``per_class`` JPEGs per class under root/<class>/; returns [(relpath, label)]."""
    draw = _drawing_module().draw_image
    rng = np.random.RandomState(seed)
    items = []
    for label in range(classes):
        folder = os.path.join(root, CLASS_NAMES[label])
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            img = cv2.resize(draw(label, rng), (size, size), interpolation=cv2.INTER_AREA)
            rel = "%s/%s_%d_%03d.jpg" % (CLASS_NAMES[label], CLASS_NAMES[label], seed, i)
            cv2.imwrite(os.path.join(root, rel), img)
            items.append((rel, label))
    return items


def write_list(path, items, start_index=0):
    """Write an MXNet .lst: index, labels (float format, like im2rec), path."""
    with open(path, "w") as f:
        for i, (rel, labels) in enumerate(items):
            labels = labels if isinstance(labels, (list, tuple)) else [labels]
            f.write("%d\t%s\t%s\n" % (start_index + i, "\t".join("%f" % l for l in labels), rel))
    return str(path)


@pytest.fixture
def tiny_data(tmp_path):
    """Train/val lists of tiny 32x32 images (4 classes) under tmp_path/images."""
    root = tmp_path / "images"
    train = make_images(str(root), 6, seed=1)
    val = make_images(str(root), 2, seed=2)
    return {"root": str(root),
            "train": write_list(tmp_path / "train.lst", train),
            "val": write_list(tmp_path / "val.lst", val, start_index=len(train))}


def make_classic_checkpoint(prefix, seed=0):
    """Save params matching the classic ResNet-50 symbol (fixture) as PREFIX-0000.params."""
    import mxnet as mx
    sym = mx.sym.load(CLASSIC_SYMBOL)
    arg_shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, 224, 224))
    mx.random.seed(seed)
    args = {n: mx.nd.random.normal(0, 0.02, s) for n, s in zip(sym.list_arguments(), arg_shapes)
            if n not in ("data", "softmax_label")}
    aux = {n: (mx.nd.ones(s) if n.endswith("var") else mx.nd.zeros(s))
           for n, s in zip(sym.list_auxiliary_states(), aux_shapes)}
    mx.model.save_checkpoint(str(prefix), 0, sym, args, aux)
    return str(prefix)


@pytest.fixture(scope="session")
def classic_checkpoint(tmp_path_factory):
    """A classic MXNet ResNet-50 checkpoint (the real symbol, generated weights)."""
    return make_classic_checkpoint(tmp_path_factory.mktemp("pretrained") / "resnet-50")


def run_cli(*args, expect=0, timeout=600, env=None):
    """Run ``python -m multitask_mx ARGS`` and return the completed process."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "multitask_mx"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)
    if expect is not None and proc.returncode != expect:
        raise AssertionError("exit %d (wanted %d)\nstdout:\n%s\nstderr:\n%s"
                             % (proc.returncode, expect, proc.stdout[-4000:], proc.stderr[-6000:]))
    return proc


def is_alive(pid):
    """True while ``pid`` is a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def group_members(pgid):
    """Live processes whose process group is ``pgid`` (each launched node leads its own group)."""
    members = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(name))
    return members


def launched_pids(log_dir):
    """The pids `launch` (or run_nodes) recorded in LOG_DIR/processes.json."""
    with open(os.path.join(log_dir, "processes.json")) as f:
        return [p["pid"] for p in json.load(f)]


def assert_all_gone(pids):
    """Fail naming any of ``pids``, or a member of their process groups, still running."""
    left = {pid: group_members(pid) for pid in pids if is_alive(pid) or group_members(pid)}
    assert not left, "processes still running: %s" % left


def no_traceback(proc):
    """``proc`` (a completed CLI run), after checking that neither stream holds a Python traceback."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    return proc


def small_lists(tmp):
    """Train (24) and val (8) lists of drawn 32x32 images under ``tmp``: {"root", "tmp", "train", "val"}."""
    root = tmp / "images"
    return {"root": str(root), "tmp": tmp,
            "train": write_list(tmp / "train.lst", make_images(str(root), 6, seed=1)),
            "val": write_list(tmp / "val.lst", make_images(str(root), 2, seed=2), start_index=100)}


def copy_run(run, tmp_path):
    """A copy of the run folder ``run`` at tmp_path/save, for tests that change it."""
    save = str(tmp_path / "save")
    shutil.copytree(run, save)
    return save


def horovod_missing():
    """Why the Horovod training tests cannot run here, or None."""
    try:
        import horovod.mxnet  # noqa: F401
    except ImportError as exc:
        return "Horovod for MXNet is not installed (%s); .ci/run builds it, docs/distributed.md says how" % exc
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "horovodrun")):
        return "no horovodrun beside %s" % sys.executable
    return None


needs_horovod = pytest.mark.skipif(horovod_missing() is not None, reason=str(horovod_missing()))


def why_no_namespaces():
    """Why tests/cluster/netns.sh cannot make its hosts here (not root, a tool missing, a sandbox), or None."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces (ip netns add)"
    for tool in ("ip", "sshd", "ssh", "ssh-keygen", "unshare"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            return "%s is missing: apt-get install iproute2 openssh-server openssh-client util-linux" % tool
    probe = subprocess.run(["ip", "netns", "add", "mtx-probe"], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", "mtx-probe"], capture_output=True)
    if probe.returncode:
        return "this sandbox cannot make network namespaces: %s" % probe.stderr.strip()
    return None


def launch_loopback(data, save, kv_store, train_flags, timeout=150, workers=2, env=None):
    """`python -m multitask_mx launch -n WORKERS -s 1 -- train ...` on loopback: (completed process, seconds).

    ``data`` holds the "train", "val" lists and their image "root"; ``train_flags`` are the rest of the train command;
    ``env`` adds to this process's environment.
    """
    args = [sys.executable, "-m", "multitask_mx", "launch", "-n", str(workers), "-s", "1", "--timeout",
            str(timeout - 30), "--", "train", "--kv-store", kv_store, "--data-train", data["train"], "--image-train",
            data["root"], "--data-val", data["val"], "--image-val", data["root"], "--save-result", save] + \
        list(train_flags)
    tic = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    return proc, time.time() - tic

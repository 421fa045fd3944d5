"""Hostile input and signals through the real CLI and API (issue 23): a table of cases, each asserting
the documented exit status (never 0 on failure), no "Traceback" on stdout or stderr, no temporary file
left, no child process left; and that the one trained run they share keeps its finished epoch intact.

The decompression bomb is an 8x8 PNG whose header says 60000 x 60000 (86 bytes). Training cases use
mobilenet0.25 at 32 px; the run the table uses is trained once, from a named pipe (a list that is not a
regular file is read once).
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import cv2
import numpy as np
import pytest

import multitask_mx  # noqa: F401
from conftest import REPO, is_alive, make_images, run_cli, write_list
from multitask_mx.data import image_headers
from multitask_mx.errors import UserInputError, shorten

TINY = ["--network", "mobilenet0.25", "--image-shape", "3,32,32", "--batch-size", "8", "--lr", "0.01",
        "--data-nthreads", "1", "--quiet", "--save-name", "net", "--num-classes", "4"]


def bomb_png(path, width=60000, height=60000):
    """A valid 8x8 PNG whose IHDR declares ``width`` x ``height`` (CRC fixed): OpenCV refuses to decode it."""
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    with open(path, "wb") as f:
        f.write(bytes(data))
    return str(path)


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def run_watched(args, stop=None, timeout=300):
    """Run the CLI, noting its child processes while it runs; ``stop(proc, stderr so far)`` may signal it.

    Returns (returncode, stdout, stderr, children seen). Asserts that none of the children outlive it.
    """
    proc = subprocess.Popen([sys.executable, "-m", "multitask_mx"] + [str(a) for a in args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    err_lines, seen = [], set()
    reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        seen.update(_children(proc.pid))
        if stop is not None and stop(proc, "".join(err_lines)):
            stop = None
        time.sleep(0.02)
    out = proc.communicate(timeout=60)[0]
    reader.join(30)
    end = time.time() + 20  # children end with their parent; a loaded machine may take a moment
    while time.time() < end and [pid for pid in seen if is_alive(pid)]:
        time.sleep(0.1)
    assert not [pid for pid in seen if is_alive(pid)], "child processes outlived the command"
    return proc.returncode, out, "".join(err_lines), seen


def no_temporary_files(*folders):
    left = [os.path.join(d, n) for d in folders if os.path.isdir(d) for n in os.listdir(d) if ".tmp-" in n]
    assert not left, left


def digest(folder):
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(folder)) if n.endswith((".params", ".states", ".json"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny images, lists, a bomb, and a 1-epoch run trained from a named pipe (FIFO)."""
    tmp = tmp_path_factory.mktemp("hostile")
    root = str(tmp / "images")
    train_items = make_images(root, 6, seed=1)
    val_items = make_images(root, 2, seed=2)
    train = write_list(tmp / "train.lst", train_items)
    val = write_list(tmp / "val.lst", val_items, start_index=100)
    bomb_png(os.path.join(root, "bomb.png"))
    fifo = str(tmp / "train.fifo")
    os.mkfifo(fifo)
    text = open(train).read()

    def feed():
        with open(fifo, "w") as f:  # blocks until the trainer opens the pipe
            f.write(text)
    threading.Thread(target=feed, daemon=True).start()
    save = str(tmp / "run")
    proc = run_cli("train", "--data-train", fifo, "--image-train", root, "--data-val", val, "--image-val", root,
                   "--save-result", save, "--num-epoch", "1", *TINY)
    assert "Traceback" not in proc.stderr
    return {"tmp": tmp, "root": root, "train": train, "val": val, "items": train_items, "val_items": val_items,
            "save": save, "digest": digest(save), "bomb": os.path.join(root, "bomb.png")}


def _list_with(world, name, extra_line, source="train"):
    path = str(world["tmp"] / name)
    shutil.copy(world[source], path)
    with open(path, "a") as f:
        f.write(extra_line)
    return path


def _train(world, save, *extra, data_train=None, data_val=None):
    args = ["train", "--data-train", data_train or world["train"], "--image-train", world["root"],
            "--save-result", str(world["tmp"] / save)] + TINY + ["--num-epoch", "1"] + list(extra)
    if data_val:
        args += ["--data-val", data_val, "--image-val", world["root"]]
    return args


def _table(world):
    """(case, argv, exit status, texts stderr must hold) for the hostile-input table."""
    bomb_list = _list_with(world, "bomb.lst", "999\t1.000000\tbomb.png\n")
    digits = str(world["tmp"] / "digits.lst")
    with open(digits, "w") as f:
        f.write("0\t%s\tcircle/x.jpg\n" % ("9" * 100000))
    fold = str(world["tmp"] / "folders")
    for name in ("cat\tdog", "bird"):
        os.makedirs(os.path.join(fold, name))
        shutil.copy(os.path.join(world["root"], world["items"][0][0]), os.path.join(fold, name, "a.jpg"))
    model = ["--save-result", world["save"]]
    good = os.path.join(world["root"], world["items"][0][0])
    return [
        ("bomb, header check", _train(world, "t1", "--check-images", "header", data_train=bomb_list), 2,
         ["bomb.lst:25", "declares 60000 x 60000", "--max-image-pixels", "--skip-bad-images"]),
        ("list is /dev/zero", _train(world, "t3", data_train="/dev/zero"), 2, ["/dev/zero", "character device"]),
        ("100,000-digit label", _train(world, "t4", data_train=digits), 2, ["is not a number", "characters)"]),
        ("predict a bomb", ["predict"] + model + [world["bomb"], good, "--quiet"], 1,
         ["declares 60000 x 60000", "the others were predicted"]),
        ("evaluate a list with a bomb", ["evaluate"] + model + ["--data", _list_with(
            world, "valbomb.lst", "999\t1.000000\tbomb.png\n", "val"), "--image-root", world["root"], "--quiet"],
         1, ["declares 60000 x 60000", "left out"]),
        ("serve --host nosuch.invalid", ["serve"] + model + ["--host", "nosuch.invalid"], 2, ["--host nosuch.invalid"]),
        ("serve --host 999.1.1.1", ["serve"] + model + ["--host", "999.1.1.1"], 2, ["not a valid IPv4 address"]),
        ("make-list, a tab in a class folder", ["make-list", str(world["tmp"] / "ml"), fold], 2,
         ["class folder 'cat\\tdog'", "tab"]),
    ]


@pytest.mark.slow
def test_hostile_input_table(world):
    failures = []
    for case, args, status, texts in _table(world):
        code, out, err, _ = run_watched(args)
        problems = [] if code == status else ["exit %d, wanted %d" % (code, status)]
        problems += ["Traceback"] if "Traceback" in out + err else []
        problems += ["no %r" % t for t in texts if t not in err + out]
        problems += ["%d characters echoed" % len(err)] if len(err) > 20000 else []
        if problems:
            failures.append("%s: %s\n%s" % (case, "; ".join(problems), err[-1500:]))
    assert not failures, "\n\n".join(failures)
    no_temporary_files(world["save"], str(world["tmp"]))
    assert not os.path.exists(str(world["tmp"] / "ml_train.lst"))  # make-list wrote nothing
    assert digest(world["save"]) == world["digest"]  # the finished epoch is intact


def _when_logged(path, text, signum):
    """A ``stop`` for run_watched: send ``signum`` once ``text`` is in the log file at ``path``."""
    def stop(proc, err):
        if os.path.exists(path) and text in open(path).read():
            proc.send_signal(signum)
            return True
        return False
    return stop


@pytest.mark.slow
@pytest.mark.parametrize("signum, status, name", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                  (signal.SIGHUP, 129, "hangup (SIGHUP)")])
def test_stop_signal_after_the_last_epoch(world, signum, status, name):
    # Also: a bomb in both lists skipped mid-epoch (no check), a validation list whose labels are
    # all -1 (masked), and --data-nthreads far above the cores.
    train = str(world["tmp"] / ("train_bomb_%d.lst" % signum))  # 24 lines: one epoch sees each, none rolls over
    write_list(train, world["items"][:-1] + [("bomb.png", 1)])
    val = str(world["tmp"] / ("val_masked_%d.lst" % signum))
    write_list(val, [(rel, -1) for rel, _ in world["val_items"]] + [("bomb.png", -1)], start_index=100)
    save = str(world["tmp"] / ("stopped_%d" % signum))
    code, out, err, seen = run_watched(
        _train(world, "stopped_%d" % signum, "--check-images", "none", "--skip-bad-images", "--data-nthreads",
               "200", data_train=train, data_val=val), stop=_when_logged(os.path.join(save, "train.log"),
                                                                         "phase finish", signum))
    assert code == status and name in err and "Traceback" not in out + err and "Exception ignored" not in err, err
    assert seen, "the loader's workers were not seen"
    log = open(os.path.join(save, "train.log")).read()
    assert name in log and "capped at" in log
    assert log.count("has no labelled image for task label ") == 1  # the warning, once
    assert "val-loss = 0" not in log and not os.path.exists(os.path.join(save, "best.json"))
    history = json.load(open(os.path.join(save, "history.json")))
    assert [r["epoch"] for r in history] == [1] and os.path.exists(os.path.join(save, "net-0001.params"))
    assert history[0]["val_loss"] is None and history[0]["val"]["label"]["acc"] is None
    assert history[0]["skipped_images"] == 2 and history[0]["val_skipped_images"] == 1
    no_temporary_files(save)


@pytest.mark.slow
def test_predict_stopped_says_what_it_leaves(world):
    paths = [os.path.join(world["root"], rel) for rel, _ in world["items"]] * 40
    out_json = str(world["tmp"] / "pred.json")

    def stop(proc, err):  # once the model is loaded: the images are being predicted
        if " I loaded " in err:
            proc.send_signal(signal.SIGTERM)
            return True
        return False
    code, out, err, _ = run_watched(["predict", "--save-result", world["save"], *paths, "--json", out_json,
                                     "--data-nthreads", "2", "--batch-size", "4"], stop=stop)
    assert code == 143 and "no partial output" in err and "--resume" not in err and "Traceback" not in err, err
    assert not os.path.exists(out_json)
    no_temporary_files(str(world["tmp"]))


@pytest.mark.slow
def test_api_predict_takes_one_path_and_refuses_top_k_below_one(world):
    from pathlib import Path
    import multitask_mx as mtx
    model = mtx.load(world["save"], epoch="latest")
    good = os.path.join(world["root"], world["items"][0][0])
    for one in (good, Path(good)):
        rows = model.predict(one, top_k=2)
        assert len(rows) == 1 and rows[0]["path"] == good and len(rows[0]["tasks"]["label"]) == 2
    rows = model.predict([world["bomb"]])
    assert "declares 60000 x 60000" in rows[0]["error"]
    for bad in (0, -1, 1.5):
        with pytest.raises(UserInputError, match="top_k"):
            model.predict(good, top_k=bad)


@pytest.mark.slow
def test_serve_answers_health_while_idle_connections_pile_up(world):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "use"))
    from test_serve import ServerProcess, request  # tests/use/test_serve.py, whichever tests are collected
    logs = world["tmp"] / "serve_logs"
    logs.mkdir()
    server = ServerProcess(world["save"], str(logs), "--idle-timeout", 1, "--connection-limit", 100)
    idle = []
    try:
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        for _ in range(150):  # a slow client's connections: opened, nothing sent
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        tic = time.time()
        status, _, body = request(server.url + "health", timeout=20)
        assert status == 200 and body["status"] == "ok" and time.time() - tic < 15
        image = open(os.path.join(world["root"], world["items"][0][0]), "rb").read()
        status, _, body = request(server.url + "predict", "POST", image, {"Content-Type": "image/jpeg"})
        assert status == 200 and body["show"] == 3 and body["top_k"] == 3  # the flag's name, and the old key
        status, _, body = request(server.url + "predict", "POST", open(world["bomb"], "rb").read(),
                                  {"Content-Type": "image/png"})
        assert status == 413 and "--max-image-pixels" in body["error"]
    finally:
        for conn in idle:
            conn.close()
        assert server.stop() == 0
    assert "Traceback" not in server.logs()


def test_declared_sizes_and_the_limit(tmp_path):
    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".ppm"):
        data = cv2.imencode(ext, img)[1]
        assert image_headers.declared_size(image_headers.bytes_reader(data)) == (53, 37), ext
    bomb = open(bomb_png(tmp_path / "b.png"), "rb").read()
    assert image_headers.declared_size(image_headers.bytes_reader(bomb)) == (60000, 60000)
    assert "--max-image-pixels" in image_headers.size_problem(image_headers.bytes_reader(bomb))
    assert image_headers.size_problem(image_headers.bytes_reader(bomb), limit=60000 * 60000) is None
    from multitask_mx.data.images import ImageTooLarge, decode_image, read_checked_image
    with pytest.raises(ImageTooLarge, match="b.png declares 60000 x 60000"):
        decode_image(str(tmp_path / "b.png"))
    assert read_checked_image(str(tmp_path / "b.png"))[1].startswith("declares 60000 x 60000")


def test_long_image_paths_are_cut_in_messages(tmp_path):
    from multitask_mx.data.datasets import check_images_or_skip
    from multitask_mx.data.lists import read_list
    lst = write_list(tmp_path / "long.lst", [("y" * 200000 + ".jpg", 1)])
    with pytest.raises(UserInputError) as caught:
        check_images_or_skip(read_list(lst, str(tmp_path)), skip_bad=False)
    assert len(str(caught.value)) < 2000 and " characters)" in str(caught.value)


@pytest.mark.parametrize("host, says", [("", "--host is empty"), ("999.1.1.1", "not a valid IPv4"),
                                        ("1.2.3", "not a valid IPv4")])
def test_serve_refuses_a_host_that_is_no_address(host, says):
    from multitask_mx.commands.serve import check_host
    with pytest.raises(UserInputError, match=says):
        check_host(host)
    check_host("127.0.0.1")


def test_shorten_cuts_long_values_and_says_how_long():
    assert shorten("abc") == "abc"
    text = shorten("x" * 200000, 200)
    assert len(text) < 220 and "(200000 characters)" in text


def test_total_loss_of_tasks_without_labelled_images_is_nan_not_zero():
    from multitask_mx.training.metrics import total_loss
    nan = float("nan")
    assert np.isnan(total_loss({"a": {"loss": nan, "count": 0}, "b": {"loss": nan, "count": 0}}))
    assert total_loss({"a": {"loss": 0.5, "count": 3}, "b": {"loss": nan, "count": 0}}) == 0.5
    assert np.isnan(total_loss({"a": {"loss": nan, "count": 3}, "b": {"loss": 0.5, "count": 3}}))  # divergence


@pytest.mark.slow
def test_full_disk_while_writing_onnx_is_reported_as_a_full_disk(world):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; this test runs as uid %d" % os.geteuid())
    pytest.importorskip("onnx")
    disk = str(world["tmp"] / "disk")
    os.makedirs(disk)
    room = sum(os.path.getsize(os.path.join(world["save"], n)) for n in ("net-0001.params", "net-symbol.json"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % (room + 200 * 1024), "tmpfs", disk],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here: %s" % mounted.stderr.strip())
    try:  # room for the MXNet checkpoint, not for the ONNX file after it
        out = os.path.join(disk, "exp")
        code, stdout, err, _ = run_watched(["export", "--save-result", world["save"], "--out", out, "--onnx"])
        assert code == 2 and "no space left on %s" % out in err and "cannot convert" not in err, err
        assert "Traceback" not in stdout + err and ".tmp-" not in stdout + err  # nor a temporary file's name
        no_temporary_files(out)
    finally:
        subprocess.run(["umount", disk], check=False)

"""serve.py and ``multitask-mx serve``: upload checks, the Batcher, and a real server on loopback.

The end-to-end tests train one tiny model for the module, start ``python -m multitask_mx
serve --port 0`` as a subprocess (the kernel picks a free port, the server prints it),
wait for /health and kill it at the end.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import zlib

import cv2
import numpy as np
import pytest

from conftest import REPO, make_images, run_cli, write_list
from multitask_mx.use import inference, server as serve, uploads
from multitask_mx.data.images import read_checked_image

CLASSES = ["background", "circle", "square", "triangle"]


# ---------------------------------------------------------------- helpers (also used by test_serve_browser.py)

def train_tiny_model(base):
    """A 1-epoch resnet18_v1 at 32x32 on 4 classes of drawn shapes; returns (save dir, image root)."""
    root = str(base / "photos")
    items = make_images(root, 4, seed=1)
    write_list(base / "train.lst", items)
    (base / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    save = str(base / "run")
    run_cli("train", "--network", "resnet18_v1", "--image-shape", "3,32,32", "--num-epoch", 1, "--batch-size", 8,
            "--data-train", base / "train.lst", "--image-train", root, "--classes", base / "classes.txt",
            "--save-result", save, "--quiet", "--seed", 1)
    return save, root


class ServerProcess:
    """``python -m multitask_mx serve --port 0 ...`` in a subprocess, ready once /health answers."""

    def __init__(self, save_dir, log_dir, *flags, timeout=180):
        self.out_path, self.err_path = os.path.join(log_dir, "serve.out"), os.path.join(log_dir, "serve.err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "multitask_mx", "serve", "--save-result", save_dir,
                                          "--port", "0"] + [str(f) for f in flags],
                                         stdout=out, stderr=err, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.url = self._wait_for_url(timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if request(self.url + "health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("no /health from %s:\n%s" % (self.url, self.logs()))

    def _wait_for_url(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in open(self.out_path).read().splitlines():
                if line.startswith("serving ") and " on http://" in line:
                    return line.split(" on ", 1)[1].strip()
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError("the server did not start:\n%s" % self.logs())

    def logs(self):
        """stdout and stderr so far."""
        return open(self.out_path).read() + open(self.err_path).read()

    def stop(self, sig=signal.SIGTERM):
        """Stop the server (SIGTERM, then SIGKILL after 20 s); returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def request(url, method="GET", body=None, headers=None, timeout=60):
    """(status, content type, parsed JSON or raw bytes) of one request on a fresh connection."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    ctype = response.getheader("Content-Type", "")
    return response.status, ctype, json.loads(data) if ctype.startswith("application/json") else data


def multipart(data, field="image", filename="photo.jpg", content_type="image/jpeg"):
    """(body, headers) of a multipart/form-data upload of ``data``."""
    boundary = uuid.uuid4().hex
    head = ('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\nContent-Type: %s\r\n\r\n'
            % (boundary, field, filename, content_type)).encode()
    return head + data + ("\r\n--%s--\r\n" % boundary).encode(), \
        {"Content-Type": "multipart/form-data; boundary=" + boundary}


def post_image(url, data, raw=False, content_type="image/jpeg"):
    """POST /predict with ``data`` as a multipart upload, or as the raw body."""
    if raw:
        return request(url + "predict", "POST", data, {"Content-Type": content_type})
    body, headers = multipart(data, content_type=content_type)
    return request(url + "predict", "POST", body, headers)


def encode(img, ext=".jpg"):
    """An image array encoded in memory."""
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def png_header_only(width, height):
    """A PNG whose IHDR claims ``width`` x ``height``, with a tiny IDAT: a decompression bomb's header."""
    def chunk(kind, payload):
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def jpeg_claiming(width, height):
    """A small real JPEG whose SOF marker is patched to claim ``width`` x ``height``."""
    data = bytearray(encode(np.full((16, 16, 3), 128, np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


# ---------------------------------------------------------------- upload checks (fast)

GOOD_JPEG = encode(np.random.RandomState(0).randint(0, 255, (40, 30, 3)).astype(np.uint8))


@pytest.mark.parametrize("data, status, fragment", [
    (b"", 400, "empty"),
    (b"hello, I am text", 415, "not an image"),
    (GOOD_JPEG[:len(GOOD_JPEG) // 2], 400, "truncated JPEG"),
    (png_header_only(8000, 8000), 413, "8000 x 8000"),
    (jpeg_claiming(9000, 9000), 413, "at most 50 megapixels"),
    (png_header_only(60000, 60000), 413, "more than 179 megapixels"),  # Pillow's own bomb limit
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40 + b"IEND", 400, "header cannot be read"),
])
def test_bad_bytes_are_refused_before_decoding(data, status, fragment):
    with pytest.raises(uploads.BadUpload) as caught:
        uploads.decode_upload(data, 37, 50_000_000)
    assert caught.value.status == status and fragment in str(caught.value)


def test_good_uploads_decode_like_predict_decodes_files(tmp_path):
    rng = np.random.RandomState(1)
    big = rng.randint(0, 255, (150, 200, 3)).astype(np.uint8)  # 150 // 4 >= 37: decoded at 1/4 by libjpeg
    for name, data in [("a.jpg", encode(big)), ("b.png", encode(big[:50, :40], ".png")),
                       ("c.png", encode(np.dstack([big[:30, :30], big[:30, :30, :1]]), ".png")),
                       ("d.bmp", encode(big[:20, :20, 0], ".bmp"))]:
        (tmp_path / name).write_bytes(data)
        from_file, problem = read_checked_image(str(tmp_path / name), 37)
        assert problem is None
        np.testing.assert_array_equal(uploads.decode_upload(data, 37, 50_000_000), from_file)


def test_motion_photo_trailer_is_not_a_truncated_jpeg():
    data = GOOD_JPEG + b"\0\0\0\x18ftypmp42" + b"\0" * 200
    assert uploads.decode_upload(data, 37, 50_000_000).shape == (40, 30, 3)


# ---------------------------------------------------------------- Batcher (fast, no model)

def doubling(calls):
    def forward(batch):
        calls.append(len(batch))
        return [batch * 2, batch.sum(axis=-1)]
    return forward


def test_concurrent_requests_share_a_batch_and_get_their_own_rows():
    calls = []
    batcher = serve.Batcher(doubling(calls), max_batch=8, max_wait_ms=2000, queue_size=8).start()
    results = {}
    start = threading.Barrier(4)

    def client(i):
        with batcher.arriving():
            start.wait()
            time.sleep(0.005 * i)  # decoding takes a while: the batch waits for the ones still decoding
            future = batcher.submit(np.full((2, 3), float(i), np.float32))
        results[i] = future.result(10)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert calls == [4]
    for i in range(4):
        np.testing.assert_array_equal(results[i][0], np.full((2, 3), 2.0 * i))
        assert results[i][1].shape == (2,) and results[i][1][0] == 3.0 * i


def test_a_lone_request_does_not_wait_for_a_batch():
    batcher = serve.Batcher(doubling([]), max_batch=16, max_wait_ms=5000, queue_size=4).start()
    tic = time.time()
    batcher.submit(np.zeros((1,), np.float32)).result(10)
    assert time.time() - tic < 1.0
    batcher.close()


def wait_until_taken(batcher):
    """Wait until the model thread has taken every queued image (and now runs, or waits in, forward)."""
    deadline = time.time() + 30
    while batcher.queued() and time.time() < deadline:
        time.sleep(0.01)
    assert batcher.queued() == 0


def test_full_queue_refuses_and_a_failed_batch_does_not_stop_the_thread():
    release = threading.Event()

    def forward(batch):
        release.wait(10)
        if batch[0, 0] < 0:
            raise ValueError("bad batch")
        return [batch]

    batcher = serve.Batcher(forward, max_batch=1, max_wait_ms=0, queue_size=2).start()
    running = batcher.submit(np.full((1, 1), -1.0, np.float32))
    wait_until_taken(batcher)
    queued = [batcher.submit(np.full((1, 1), float(i), np.float32)) for i in range(2)]
    with pytest.raises(serve.QueueFull):
        batcher.submit(np.zeros((1, 1), np.float32))
    release.set()
    with pytest.raises(ValueError):
        running.result(10)
    assert [float(f.result(10)[0][0, 0]) for f in queued] == [0.0, 1.0]
    assert batcher.alive()
    batcher.close()
    assert not batcher.alive()


# ---------------------------------------------------------------- a real server (slow)

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The module's tiny model: (save dir, image root, base folder)."""
    base = tmp_path_factory.mktemp("serve")
    save, root = train_tiny_model(base)
    return {"save": save, "root": root, "base": base}


@pytest.fixture(scope="module")
def server(trained):
    """The server on loopback with a 1 MiB upload limit, stopped (SIGTERM) at the end."""
    logs = trained["base"] / "server_logs"
    logs.mkdir()
    # --max-wait-ms: time for concurrent uploads still being decoded to join a batch on a busy test machine
    proc = ServerProcess(trained["save"], str(logs), "--max-upload-mb", 1, "--show", 3, "--max-wait-ms", 500)
    yield proc
    assert proc.stop() == 0, proc.logs()
    assert "Traceback" not in proc.logs(), proc.logs()


@pytest.mark.slow
def test_binds_loopback_and_describes_the_model(server):
    assert server.url.startswith("http://127.0.0.1:")
    status, ctype, health = request(server.url + "health")
    assert status == 200 and health["status"] == "ok"
    assert health["model"] == {"save_name": "multitask", "epoch": 1, "network": "resnet18_v1",
                               "image_shape": [3, 32, 32], "tasks": ["label", "label_gt0"]}


@pytest.mark.slow
def test_predictions_equal_predict_json_one_by_one_and_batched(server, trained, tmp_path):
    rng = np.random.RandomState(5)
    paths = [os.path.join(trained["root"], c, "%s_1_%03d.jpg" % (c, i)) for c in CLASSES for i in (0, 1)]
    extra = {"wide.jpg": encode(rng.randint(0, 255, (150, 200, 3)).astype(np.uint8)),
             "small.png": encode(rng.randint(0, 255, (50, 40, 3)).astype(np.uint8), ".png")}
    for name, data in extra.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    proc = run_cli("predict", "--save-result", trained["save"], *paths, "--json", "-", "--show", 3, "--quiet")
    expected = {row["path"]: row["tasks"] for row in json.loads(proc.stdout)["predictions"]}
    uploads = {p: open(p, "rb").read() for p in paths}

    def check(path, answer):
        status, _, body = answer
        assert status == 200, body
        assert body["model"]["epoch"] == 1 and body["model"]["save_name"] == "multitask"
        assert list(body["tasks"]) == list(expected[path]) == ["label", "label_gt0"]
        for task, classes in body["tasks"].items():
            assert [c["class"] for c in classes] == [c["class"] for c in expected[path][task]]
            assert [c["index"] for c in classes] == [c["index"] for c in expected[path][task]]
            np.testing.assert_allclose([c["prob"] for c in classes], [c["prob"] for c in expected[path][task]],
                                       atol=1e-5)

    for path in paths:  # one at a time, as a form upload and as a raw body
        ctype = "image/png" if path.endswith(".png") else "image/jpeg"
        check(path, post_image(server.url, uploads[path], content_type=ctype))
        check(path, post_image(server.url, uploads[path], raw=True, content_type=ctype))

    before = request(server.url + "health")[2]["batches"]
    assert before.get("1", 0) >= 2 * len(paths)  # one at a time: each upload was a batch of one
    answers = {}  # all at once from 10 clients: batches of several images
    threads = [threading.Thread(target=lambda p=p: answers.update({p: post_image(server.url, uploads[p])}))
               for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for path in paths:
        check(path, answers[path])
    after = request(server.url + "health")[2]["batches"]
    batched = {int(k): n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
    assert sum(k * n for k, n in batched.items()) == len(paths)  # every concurrent image went through a batch
    assert max(batched) > 1, after  # and some batches held several images


def oversized_header_only(url, length):
    """Send only the headers of an upload of ``length`` bytes; (status, body) of the answer."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Type", "image/jpeg")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


JPEG_HEAD = GOOD_JPEG[:200]
BAD_UPLOADS = {
    "not an image": (lambda url: post_image(url, b"just some text, no pixels"), 415, "not an image"),
    "not an image, raw": (lambda url: post_image(url, b"GIF? no.", raw=True), 415, "not an image"),
    "truncated JPEG": (lambda url: post_image(url, GOOD_JPEG[:len(GOOD_JPEG) // 2]), 400, "truncated JPEG"),
    "0 bytes": (lambda url: post_image(url, b""), 400, "empty"),
    "0 bytes, raw": (lambda url: post_image(url, b"", raw=True), 400, "empty"),
    "over the size limit": (lambda url: post_image(url, JPEG_HEAD + b"\0" * (1 << 20) + b"\xff\xd9"), 413,
                            "1.0 MiB limit"),
    "over the size limit, raw": (lambda url: post_image(url, JPEG_HEAD + b"\0" * (1 << 20) + b"\xff\xd9", raw=True),
                                 413, "1.0 MiB limit"),
    "wrong content type": (lambda url: post_image(url, GOOD_JPEG, raw=True, content_type="text/plain"), 415,
                           "Content-Type text/plain"),
    "wrong part type": (lambda url: post_image(url, GOOD_JPEG, content_type="application/pdf"), 415,
                        "application/pdf"),
    "no image field": (lambda url: request(url + "predict", "POST", *multipart(GOOD_JPEG, field="other")), 400,
                       "'image' or 'file'"),
    "absurd size": (lambda url: post_image(url, png_header_only(8000, 8000), content_type="image/png"), 413,
                    "megapixels"),
    "GET": (lambda url: request(url + "predict"), 405, "not allowed"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_gets_4xx_json_and_the_server_keeps_answering(server, case):
    send, status, fragment = BAD_UPLOADS[case]
    answer_status, ctype, body = send(server.url)
    assert (answer_status, ctype) == (status, "application/json"), body
    assert body["status"] == status and fragment in body["error"], body
    assert request(server.url + "health")[0] == 200
    assert post_image(server.url, GOOD_JPEG)[0] == 200


@pytest.mark.slow
def test_far_too_large_body_is_refused_before_it_is_read(server):
    status, body = oversized_header_only(server.url, 500 << 20)
    assert status == 413, body
    assert request(server.url + "health")[0] == 200


@pytest.mark.slow
def test_upload_page_is_self_contained(server):
    status, ctype, html = request(server.url)
    assert status == 200 and ctype.startswith("text/html")
    page = html.decode()
    assert 'type="file"' in page and "/static/app.js" in page
    for asset in ("static/app.js", "static/style.css"):
        text = request(server.url + asset)[2].decode()
        assert "/predict" in text or asset.endswith(".css")
        page += text
    assert "http://" not in page and "https://" not in page and "//" + "cdn" not in page


# ---------------------------------------------------------------- the app in-process (slow: loads the model)

@pytest.fixture(scope="module")
def model(trained):
    """The module's model loaded in this process, for Flask's test client."""
    return inference.load_model(trained["save"])


@pytest.mark.slow
def test_full_queue_answers_503_json(model):
    release = threading.Event()
    batcher = serve.Batcher(lambda batch: [batch] if release.wait(10) else [], max_batch=1, queue_size=1).start()
    client = serve.create_app(model, batcher, serve.ServeConfig(queue_size=1, max_batch=1)).test_client()
    batcher.submit(np.zeros(model.image_shape, np.float32))
    wait_until_taken(batcher)
    batcher.submit(np.zeros(model.image_shape, np.float32))  # fills the queue
    response = client.post("/predict", data=GOOD_JPEG, content_type="image/jpeg")
    assert response.status_code == 503 and "busy" in response.get_json()["error"]
    release.set()
    batcher.close()


@pytest.mark.slow
def test_multipart_uploads_are_never_spooled_to_disk(model, monkeypatch):
    import tempfile
    import werkzeug.formparser

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile"):
        monkeypatch.setattr(werkzeug.formparser, name, no_disk, raising=False)
        monkeypatch.setattr(tempfile, name, no_disk)
    batcher = serve.start_batcher(model, serve.ServeConfig())
    client = serve.create_app(model, batcher, serve.ServeConfig()).test_client()
    big = encode(np.random.RandomState(2).randint(0, 255, (700, 700, 3)).astype(np.uint8), ".png")
    assert len(big) > 1 << 20  # larger than werkzeug's 500 KB in-memory limit
    body, headers = multipart(big, content_type="image/png")
    response = client.post("/predict", data=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    assert list(response.get_json()["tasks"]) == ["label", "label_gt0"]
    batcher.close()

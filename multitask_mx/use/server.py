"""Serving a trained model over HTTP: upload checks, a batching model thread, the Flask app, waitress.

A request thread of waitress reads an upload, checks it (size, format, header
dimensions, truncation) and decodes it from memory with the same decoder and
evaluation transform as ``multitask-mx predict``, then hands the image to the
``Batcher``. One model thread takes queued images, up to ``max_batch`` at a time,
runs the network on them together and answers each request's future. It waits up
to ``max_wait_ms`` for a fuller batch only while other requests are still being
decoded, so a lone request is never delayed. A full queue answers 503; no request
can stop the model thread or the server.
"""
import collections
import contextlib
import io
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from .. import _runtime
from . import cam, inference, predictions
from .uploads import BadUpload, decode_upload  # noqa: F401  (the app answers BadUpload with its status)
from ..errors import UserInputError
from ..data.image_headers import DEFAULT_MAX_PIXELS

import mxnet as mx

try:
    import flask
    import waitress.server
    from werkzeug.exceptions import HTTPException
except ImportError:  # without the "serve" extra every other command still works; serve says what to install
    flask = None

_logger = logging.getLogger(__name__)

UPLOAD_FIELDS = ("image", "file")
# Bytes a multipart body may carry beyond the image itself (boundaries, part headers).
MULTIPART_ALLOWANCE = 64 * 1024
# Bodies up to this much over the limit are read and refused by the app (413 JSON); larger ones
# are refused by waitress from their Content-Length alone, before it reads them (413, plain text).
READ_ALLOWANCE = 1024 * 1024


class QueueFull(Exception):
    """The model's queue holds ``queue_size`` images already."""


# ---------------------------------------------------------------- batching

@dataclass
class _Job:
    image: np.ndarray
    future: Future


class Batcher:
    """A model thread fed by a bounded queue; ``forward(batch) -> [per-task array]`` runs there alone."""

    def __init__(self, forward, max_batch=16, max_wait_ms=5.0, queue_size=64):
        self.forward = forward
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.queue_size = max(1, queue_size)
        self._jobs = collections.deque()
        self._arriving = 0
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="model", daemon=True)
        self.batches = collections.Counter()  # batch size -> count, for /health

    def start(self):
        """Start the model thread."""
        self._thread.start()
        return self

    def alive(self):
        """Whether the model thread runs."""
        return self._thread.is_alive()

    def queued(self):
        """Images waiting for the model."""
        return len(self._jobs)

    @contextlib.contextmanager
    def arriving(self):
        """Mark a request as being decoded: the model thread waits for it to fill a batch."""
        with self._cond:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cond:
                self._arriving -= 1
                self._cond.notify_all()

    def submit(self, image):
        """Queue one image; a Future of its per-task outputs. Raises QueueFull."""
        job = _Job(image, Future())
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._jobs) >= self.queue_size:
                raise QueueFull("%d images are waiting for the model already" % len(self._jobs))
            self._jobs.append(job)
            self._cond.notify_all()
        return job.future

    def close(self, timeout=10.0):
        """Finish the queued images, then stop the model thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _take_batch(self):
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait
            while len(self._jobs) < self.max_batch and self._arriving > 0 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken = [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]
        return [j for j in taken if j.future.set_running_or_notify_cancel()]  # drop timed-out requests

    def _loop(self):
        while True:
            jobs = self._take_batch()
            if not jobs:
                if self._closed and not self._jobs:
                    return
                continue
            try:
                outputs = self.forward(np.stack([j.image for j in jobs]))
                rows = [[o[i] for o in outputs] for i in range(len(jobs))]
            except Exception as exc:  # noqa: BLE001  (the thread must outlive any batch)
                _logger.exception("the model failed on a batch of %d", len(jobs))
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            self.batches[len(jobs)] += 1
            for job, row in zip(jobs, rows):
                job.future.set_result(row)


def model_forward(model, tta="none"):
    """``forward`` for the Batcher: a stacked CHW float32 batch -> per-task log-probabilities."""
    def forward(batch):
        data = mx.nd.array(batch, dtype=np.float32)
        return [lp.asnumpy() for lp in inference.forward_log_probs(model.net, data, model.ctxs, tta, model.tasks)]
    return forward


def start_batcher(model, cfg):
    """A running Batcher for ``model``, warmed up by one forward pass in its thread."""
    batcher = Batcher(model_forward(model, cfg.tta), cfg.max_batch, cfg.max_wait_ms, cfg.queue_size).start()
    batcher.submit(np.zeros(model.image_shape, np.float32)).result()
    return batcher


# ---------------------------------------------------------------- the app

@dataclass
class ServeConfig:
    """What the server accepts and how it batches, from the ``serve`` flags."""

    host: str = "127.0.0.1"
    port: int = 8080
    threads: int = 0  # 0: queue_size + max_batch, so that the bounded queue, not waitress, holds the waiting
    connection_limit: int = 100
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    top_k: int = 3
    idle_timeout_s: int = 10  # a connection without a request is closed after this: slow or idle clients
    max_batch: int = 16
    max_wait_ms: float = 5.0
    queue_size: int = 64
    timeout_s: float = 60.0
    tta: str = "none"

    @property
    def worker_threads(self):
        """Waitress threads: --threads, or enough for every queued and running request."""
        return self.threads or self.queue_size + self.max_batch


def require_web_stack():
    """Raise a UserInputError saying what to install when Flask or waitress is missing."""
    if flask is None:
        raise UserInputError("multitask-mx serve needs Flask and waitress: pip install -c constraints.txt "
                             "'multitask_mx[serve]' (or -e '.[serve]' in a checkout).")


def _in_memory_request_class():
    class InMemoryRequest(flask.Request):
        """Multipart uploads are parsed into memory, never spooled to a temporary file."""

        def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
            return io.BytesIO()
    return InMemoryRequest


def model_summary(model):
    """What a client is told about the weights (no server paths)."""
    return {"save_name": model.save_name, "epoch": model.epoch, "network": model.config.get("network"),
            "image_shape": list(model.image_shape), "tasks": model.task_names}


def read_request_image(max_bytes):
    """The uploaded bytes: a multipart field "image" or "file", or a raw body with an image/* type."""
    request = flask.request
    if request.mimetype == "multipart/form-data":
        upload = next((request.files[f] for f in UPLOAD_FIELDS if f in request.files), None)
        if upload is None:
            raise BadUpload(400, "no file in the form: send it in a field named 'image' or 'file'")
        if upload.mimetype and not upload.mimetype.startswith("image/") \
                and upload.mimetype != "application/octet-stream":
            raise BadUpload(415, "the uploaded file is %s, not an image/* type" % upload.mimetype)
        data = upload.stream.read(max_bytes + 1)
    elif request.mimetype.startswith("image/"):
        data = request.get_data(cache=False)
    else:
        raise BadUpload(415, "Content-Type %s: send multipart/form-data with an 'image' field, or the image "
                        "itself with an image/* type" % (request.mimetype or "(none)"))
    if len(data) > max_bytes:
        raise BadUpload(413, "the image is over the %.1f MiB limit (--max-upload-mb)" % (max_bytes / 2 ** 20))
    return data


def error_response(status, message):
    """A JSON error body with its status."""
    response = flask.jsonify({"error": message, "status": status})
    response.status_code = status
    return response


def create_app(model, batcher, cfg: ServeConfig):
    """The Flask app: GET / (upload page), GET /health, POST /predict (?cam=1: Grad-CAM heat maps too)."""
    require_web_stack()
    app = flask.Flask(__name__, static_folder="../static", static_url_path="/static")  # multitask_mx/static
    app.request_class = _in_memory_request_class()
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_upload_bytes + MULTIPART_ALLOWANCE
    app.json.sort_keys = False  # tasks in the model's order, as predict writes them
    summary = model_summary(model)
    transform = model.transform()
    decode_slots = threading.BoundedSemaphore(_runtime.usable_cores())  # bounds memory of big decodes
    heat_maps = cam.ServedCams(model)

    @app.get("/")
    def index():
        return app.send_static_file("index.html")

    @app.get("/health")
    def health():
        ok = batcher.alive()
        body = {"status": "ok" if ok else "model thread stopped", "model": summary, "queued": batcher.queued(),
                "queue_size": batcher.queue_size, "max_batch": batcher.max_batch,
                "batches": {str(k): v for k, v in sorted(batcher.batches.items())}}
        return flask.jsonify(body), 200 if ok else 503

    @app.post("/predict")
    def predict():
        with batcher.arriving():
            data = read_request_image(cfg.max_upload_bytes)
            with decode_slots:
                image = transform(decode_upload(data, transform.decode_size, cfg.max_pixels))
            future = batcher.submit(image)
        try:
            log_probs = future.result(timeout=cfg.timeout_s)
        except FutureTimeout:
            future.cancel()
            return error_response(503, "the model did not answer within %.0f s" % cfg.timeout_s)
        body = {"model": summary, "show": cfg.top_k, "top_k": cfg.top_k, "tta": cfg.tta,  # top_k: the old name
                "tasks": predictions.task_answers(model, log_probs, cfg.top_k)}
        if flask.request.args.get("cam", "").lower() in ("1", "true", "yes"):  # of the top class of each task
            body["cams"] = heat_maps.for_upload(image, data, [int(np.argmax(lp)) for lp in log_probs])
        return flask.jsonify(body)

    _add_error_handlers(app, cfg)
    _add_logging_and_headers(app)
    return app


def _add_error_handlers(app, cfg):
    """Every error a JSON body: refused uploads, a full queue, HTTP errors, and bugs (500, logged)."""
    @app.errorhandler(BadUpload)
    def bad_upload(exc):
        return error_response(exc.status, str(exc))

    @app.errorhandler(QueueFull)
    def queue_full(exc):
        return error_response(503, "busy: %s; retry shortly" % exc)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if exc.code == 413:
            return error_response(413, "the upload is over the %.1f MiB limit (--max-upload-mb)"
                                  % (cfg.max_upload_bytes / 2 ** 20))
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc):
        _logger.exception("%s %s failed", flask.request.method, flask.request.path)
        return error_response(500, "internal error: %s" % type(exc).__name__)


def _add_logging_and_headers(app):
    """One log line per /predict; headers that keep the page to this server's own files."""
    request = flask.request

    @app.before_request
    def start_clock():
        flask.g.tic = time.perf_counter()

    @app.after_request
    def log_and_harden(response):
        if request.path == "/predict":
            status = response.status_code
            error = (response.get_json(silent=True) or {}).get("error", "") if status >= 400 else ""
            _logger.log(logging.INFO if status < 500 else logging.WARNING, "%s POST /predict %d %.1f ms %s",
                        request.remote_addr, status, 1000 * (time.perf_counter() - flask.g.get("tic", 0)), error)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' blob:; "
                                                       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        return response


def create_server(app, cfg: ServeConfig):
    """A waitress server for ``app`` (not yet running); its socket is bound already."""
    body_limit = cfg.max_upload_bytes + MULTIPART_ALLOWANCE + READ_ALLOWANCE
    try:  # idle connections closed after idle_timeout_s (checked every second): idle clients cannot lock others out
        return waitress.server.create_server(
            app, host=cfg.host, port=cfg.port, threads=cfg.worker_threads, connection_limit=cfg.connection_limit,
            max_request_body_size=body_limit, inbuf_overflow=body_limit + 1,  # in memory, no temporary files
            channel_timeout=cfg.idle_timeout_s, cleanup_interval=1, ident="multitask-mx",
            clear_untrusted_proxy_headers=True)
    except OSError as exc:
        raise UserInputError("cannot listen on %s port %d: %s. Choose another --port (or --host)."
                             % (cfg.host, cfg.port, exc.strerror or exc))


def listening_urls(server):
    """http://HOST:PORT/ of every socket the server listens on."""
    single = getattr(server, "effective_port", None) is not None  # else a MultiSocketServer (e.g. "localhost")
    pairs = [(server.effective_host, server.effective_port)] if single else server.effective_listen
    return ["http://%s:%s/" % ("[%s]" % h if ":" in h else h, p) for h, p in pairs]

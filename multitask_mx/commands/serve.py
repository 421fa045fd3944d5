"""``multitask-mx serve``: an HTTP server with an upload page that predicts with a trained model."""
import logging
import signal
import sys

from .. import inference, serve
from ..devices import parse_contexts
from ..logs import setup_logging

_logger = logging.getLogger(__name__)

DESCRIPTION = "serve a trained model over HTTP: POST /predict, GET /health and an upload page at /"


def add_arguments(parser):
    """Serve flags: the model, its device, the server, uploads and batching."""
    inference.add_arguments(parser, prediction=False)
    group = parser.add_argument_group("devices")
    group.add_argument("--gpus", default="", help="GPU ids, e.g. 0 or 0,1; '' (default) for CPU")
    serve.add_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="warnings only on stderr (no per-request lines)")


def _exit_on_sigterm(signum, frame):
    sys.exit(0)  # waitress shuts down cleanly on SystemExit; SIGTERM is what `systemctl stop` sends


def run(args):
    """Entry point of ``multitask-mx serve``: load the model once, then serve until stopped."""
    setup_logging(None, quiet=args.quiet)
    cfg = serve.serve_config(args)
    serve.require_web_stack()
    model = inference.load_model(args.save_result, args.save_name, args.epoch, parse_contexts(args.gpus))
    batcher = serve.start_batcher(model, cfg)
    try:
        server = serve.create_server(serve.create_app(model, batcher, cfg), cfg)
        for url in serve.listening_urls(server):
            print("serving %s (epoch %s) on %s" % (model.save_name, model.epoch, url), flush=True)
        _logger.info("%d request threads, batches of up to %d, a queue of %d, uploads up to %.1f MiB",
                     cfg.worker_threads, cfg.max_batch, cfg.queue_size, cfg.max_upload_bytes / 2 ** 20)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            server.run()
        finally:
            server.close()
    finally:
        batcher.close()
    _logger.info("stopped")
    return 0

"""``multitask-mx serve``: an HTTP server with an upload page that predicts with a trained model."""
import logging
import signal
import sys

from ..use import inference, quantize, server as serve
from ..use.predictions import add_show_flag
from ..devices import parse_contexts
from ..errors import UserInputError
from ..logs import setup_logging
from ..flagtypes import non_negative_float, non_negative_int, port, positive_float, positive_int

_logger = logging.getLogger(__name__)


def add_arguments(parser):
    """Serve flags: the model and its device, the server, the uploads, the batching."""
    inference.add_arguments(parser, prediction=False)
    quantize.add_arguments(parser)
    group = parser.add_argument_group("devices")
    group.add_argument("--gpus", default="", help="GPU ids, e.g. 0 or 0,1; '' for CPU")
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; 0.0.0.0 exposes the server to the network")
    group.add_argument("--port", type=port, default=8080, help="TCP port (0: any free port, printed at start)")
    group.add_argument("--threads", type=non_negative_int, default=0, help="waitress request threads; 0: --queue-size + --max-batch")
    group.add_argument("--connection-limit", type=positive_int, default=100,
                       help="open connections at most; each may hold one upload in memory")
    group.add_argument("--timeout", type=positive_float, default=60.0, help="seconds a request waits for the model")
    group.add_argument("--quiet", action="store_true", help="warnings only on stderr (no line per request)")
    group = parser.add_argument_group("uploads")
    group.add_argument("--max-upload-mb", type=positive_float, default=10.0, help="largest upload accepted, in MiB (413)")
    group.add_argument("--max-megapixels", type=positive_float, default=50.0,
                       help="largest image accepted, in millions of pixels, read from its header (413)")
    add_show_flag(group, "returned")
    group.add_argument("--tta", choices=["none", "flip"], default="none", help="test-time augmentation, as in predict")
    group = parser.add_argument_group("batching")
    group.add_argument("--max-batch", type=positive_int, default=16, help="images per forward pass at most (1: no batching)")
    group.add_argument("--max-wait-ms", type=non_negative_float, default=5.0,
                       help="how long a batch waits for requests that are still being decoded")
    group.add_argument("--queue-size", type=positive_int, default=64, help="images waiting for the model at most (then 503)")


def serve_config(args):
    """ServeConfig from the parsed flags, with a clear error for a value out of range."""
    checks = [("--port", args.port, 0 <= args.port <= 65535, "0 to 65535"),
              ("--threads", args.threads, args.threads >= 0, "0 or more"),
              ("--max-wait-ms", args.max_wait_ms, args.max_wait_ms >= 0, "0 or more")]
    checks += [(flag, value, value > 0, "a positive number") for flag, value in (
        ("--max-batch", args.max_batch), ("--queue-size", args.queue_size),
        ("--max-upload-mb", args.max_upload_mb), ("--max-megapixels", args.max_megapixels),
        ("--connection-limit", args.connection_limit), ("--timeout", args.timeout))]
    for flag, value, ok, wanted in checks:
        if not ok:
            raise UserInputError("%s %s: give %s." % (flag, value, wanted))
    return serve.ServeConfig(
        host=args.host, port=args.port, threads=args.threads, connection_limit=args.connection_limit,
        max_upload_bytes=int(args.max_upload_mb * 2 ** 20), max_pixels=int(args.max_megapixels * 1e6),
        top_k=args.show, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
        timeout_s=args.timeout, tta=args.tta)


def _exit_on_sigterm(signum, frame):
    sys.exit(0)  # waitress shuts down cleanly on SystemExit; SIGTERM is what `systemctl stop` sends


def run(args):
    """Entry point of ``multitask-mx serve``: load the model once, then serve until stopped."""
    setup_logging(None, quiet=args.quiet)
    cfg = serve_config(args)
    serve.require_web_stack()
    model = inference.load_model(args.save_result, args.save_name, args.epoch, parse_contexts(args.gpus),
                                 weights=args.weights)
    model = quantize.apply_precision(model, quantize.PrecisionConfig.from_args(args))
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

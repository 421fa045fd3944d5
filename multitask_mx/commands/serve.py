"""``multitask-mx serve``: an HTTP server with an upload page that predicts with a trained model."""
import logging
import signal
import socket
import sys

from ..use import inference, quantize, server
from ..use.predictions import add_show_flag
from ..devices import parse_contexts
from ..errors import UserInputError, shorten
from ..logs import setup_logging
from ..data.image_headers import FLAG as MAX_PIXELS_FLAG, add_max_pixels_flag, set_max_pixels
from ..flagtypes import DeprecatedAlias, non_negative_float, non_negative_int, port, positive_float, positive_int

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
    group.add_argument("--idle-timeout", type=positive_int, default=10,
                       help="seconds a connection may stay open without sending anything (idle or slow clients "
                            "then cannot hold every connection)")
    group.add_argument("--quiet", action="store_true", help="warnings only on stderr (no line per request)")
    group = parser.add_argument_group("uploads")
    group.add_argument("--max-upload-mb", type=positive_float, default=10.0, help="largest upload accepted, in MiB (413)")
    add_max_pixels_flag(group)
    group.add_argument("--max-megapixels", dest="max_image_pixels", type=_megapixels, action=DeprecatedAlias,
                       new_flag=MAX_PIXELS_FLAG, note="one pixel limit for train, predict, evaluate and serve")
    add_show_flag(group, "returned")
    group.add_argument("--tta", choices=["none", "flip"], default="none", help="test-time augmentation, as in predict")
    group = parser.add_argument_group("batching")
    group.add_argument("--max-batch", type=positive_int, default=16, help="images per forward pass at most (1: no batching)")
    group.add_argument("--max-wait-ms", type=non_negative_float, default=5.0,
                       help="how long a batch waits for requests that are still being decoded")
    group.add_argument("--queue-size", type=positive_int, default=64, help="images waiting for the model at most (then 503)")


def _megapixels(text):
    """--max-megapixels M (the old flag): M millions of pixels."""
    return int(positive_float(text) * 1e6)


def serve_config(args):
    """ServeConfig from the parsed flags, with a clear error for a value out of range."""
    checks = [("--port", args.port, 0 <= args.port <= 65535, "0 to 65535"),
              ("--threads", args.threads, args.threads >= 0, "0 or more"),
              ("--max-wait-ms", args.max_wait_ms, args.max_wait_ms >= 0, "0 or more")]
    checks += [(flag, value, value > 0, "a positive number") for flag, value in (
        ("--max-batch", args.max_batch), ("--queue-size", args.queue_size),
        ("--max-upload-mb", args.max_upload_mb), (MAX_PIXELS_FLAG, args.max_image_pixels),
        ("--connection-limit", args.connection_limit), ("--timeout", args.timeout))]
    for flag, value, ok, wanted in checks:
        if not ok:
            raise UserInputError("%s %s: give %s." % (flag, value, wanted))
    check_host(args.host)
    return server.ServeConfig(
        host=args.host, port=args.port, threads=args.threads, connection_limit=args.connection_limit,
        max_upload_bytes=int(args.max_upload_mb * 2 ** 20), max_pixels=args.max_image_pixels,
        top_k=args.show, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
        timeout_s=args.timeout, tta=args.tta, idle_timeout_s=args.idle_timeout)


def check_host(host):
    """Refuse, before the model loads, a --host that is not an address or a name this machine resolves."""
    hint = "Give an address such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface), or a host name."
    if not host or not host.strip():
        raise UserInputError("--host is empty. %s" % hint)
    if all(part.isdigit() for part in host.split(".")):  # looks numeric: never sent to a name server
        try:
            socket.inet_pton(socket.AF_INET, host)
        except OSError:
            raise UserInputError("--host %s is not a valid IPv4 address. %s" % (shorten(host, 80), hint))
        return
    try:
        socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UserInputError("--host %s cannot be resolved to an address of this machine (%s). %s"
                             % (shorten(host, 80), getattr(exc, "strerror", None) or exc, hint))


def _exit_on_sigterm(signum, frame):
    sys.exit(0)  # waitress shuts down cleanly on SystemExit; SIGTERM is what `systemctl stop` sends


def run(args):
    """Entry point of ``multitask-mx serve``: load the model once, then serve until stopped."""
    setup_logging(None, quiet=args.quiet)
    cfg = serve_config(args)
    set_max_pixels(cfg.max_pixels)  # the decoder's own check, as in predict
    server.require_web_stack()
    model = inference.load_model(args.save_result, args.save_name, args.epoch, parse_contexts(args.gpus),
                                 weights=args.weights)
    model = quantize.apply_precision(model, quantize.PrecisionConfig.from_args(args))
    batcher = server.start_batcher(model, cfg)
    try:
        http = server.create_server(server.create_app(model, batcher, cfg), cfg)
        for url in server.listening_urls(http):
            print("serving %s (epoch %s) on %s" % (model.save_name, model.epoch, url), flush=True)
        _logger.info("%d request threads, batches of up to %d, a queue of %d, uploads up to %.1f MiB",
                     cfg.worker_threads, cfg.max_batch, cfg.queue_size, cfg.max_upload_bytes / 2 ** 20)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            http.run()
        finally:
            http.close()
    finally:
        batcher.close()
    _logger.info("stopped")
    return 0

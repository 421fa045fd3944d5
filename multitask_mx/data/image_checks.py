"""Checking every image of a list before training, spread over the cores.

The header check (images.image_file_problem: one open, one stat, one or two small
reads per file) is Python work between system calls, so threads would share one
core: it runs in forked worker processes, each checking ranges of positions of
the list it inherited, and sending back only the bad ones. The full check decodes
every image in OpenCV, which releases the GIL, so it runs in threads. Either way
the work goes out in chunks: no Python object per image is made up front (a
future per image cost 1.5 GB for a 1,000,000-line list).
"""
import itertools
import logging
import multiprocessing
import signal
from concurrent.futures import ThreadPoolExecutor

from .images import image_file_problem, read_checked_image, readable_formats

_logger = logging.getLogger(__name__)

CHUNK = 4096  # positions per task sent to a worker
PROCESSES_FROM = 20000  # shorter lists are checked in this process: starting workers would cost more
_LISTS = {}  # the lists being checked, read by the forked workers (they inherit this module's state)


def bad_positions(image_list, full_decode=False, workers=4, processes_from=PROCESSES_FROM):
    """{position in the list: reason} for the entries whose image cannot be used."""
    workers = max(1, workers)
    count = len(image_list)
    if full_decode:
        chunk = max(1, min(CHUNK, -(-count // (4 * workers))))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = pool.map(lambda start: _check_range(image_list, start, min(start + chunk, count), True),
                             range(0, count, chunk))
            return dict(itertools.chain.from_iterable(parts))
    readable_formats()  # probe OpenCV once here, so that the forked workers know the answer
    if workers == 1 or count < processes_from or "fork" not in multiprocessing.get_all_start_methods():
        return dict(_check_range(image_list, 0, count))
    return _in_processes(image_list, workers)


def _check_range(image_list, start, stop, full_decode=False):
    """[(position, reason)] of the bad images among positions start..stop-1."""
    bad = []
    for position in range(start, stop):
        path = image_list.path_at(position)
        reason = read_checked_image(path)[1] if full_decode else image_file_problem(path)
        if reason:
            bad.append((position, reason))
    return bad


def _in_processes(image_list, workers):
    key = id(image_list)
    _LISTS[key] = image_list
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals)
    try:
        tasks = [(key, start, min(start + CHUNK, len(image_list))) for start in range(0, len(image_list), CHUNK)]
        bad = dict(itertools.chain.from_iterable(pool.imap_unordered(_check_chunk, tasks)))
        pool.close()
        return bad
    finally:
        pool.terminate()
        pool.join()
        del _LISTS[key]


def _check_chunk(task):
    key, start, stop = task
    return _check_range(_LISTS[key], start, stop)


def _worker_signals():
    # Ctrl-C reaches the whole process group: the trainer stops the pool, the workers stay quiet.
    # SIGTERM is how the pool stops them: default action, whatever handler the trainer installed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

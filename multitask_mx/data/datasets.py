"""Datasets and loaders: list entries -> decoded, transformed images + task labels.

Loading runs in ``--data-nthreads`` worker processes of Gluon's DataLoader.
A bad image found mid-epoch either raises a UserInputError naming it, or, with
``skip_bad``, comes back as a blank sample whose labels are all BAD_SAMPLE, which
the training loop masks out, counts and logs by name.
"""
import copy
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import cv2
import numpy as np

import mxnet as mx
from mxnet import gluon

from ..errors import UserInputError, shorten
from .image_checks import bad_positions
from .image_files import add_check_images_flag
from .image_headers import add_max_pixels_flag
from .images import NORMALIZATIONS, decode_image
from .lists import ImageList, drop_entries, find_duplicates, find_overlap, first_few
from .task_kinds import has_kinds, kind_histograms, slot_matrix
from .tasks import Task, class_histograms, task_label_matrix
from ..flagtypes import non_negative_int, positive_int

_logger = logging.getLogger(__name__)

BAD_SAMPLE = -2  # label value that marks a sample whose image failed to decode
SHOWN = 10  # bad images or duplicate paths named in a message; the rest are counted


class Uint8Output:
    """A transform whose samples leave the worker as CHW uint8; ``device_normalize`` applies the mean/std.

    A quarter of float32's bytes through the workers' shared memory and to the GPU, and
    the normalisation runs there instead of in the workers. Only for transforms whose
    output is whole pixel values (``uint8_capable``): PCA lighting adds fractions.
    """

    dtype = np.uint8

    def __init__(self, transform):
        self.inner = copy.copy(transform)
        self.inner.normalization = "raw"  # to_chw_float then only converts and transposes
        self.normalization = transform.normalization
        self.out_hw = transform.out_hw

    @property
    def decode_size(self):
        """The wrapped transform's."""
        return getattr(self.inner, "decode_size", None)

    def reseed(self, seed):
        """The wrapped transform's."""
        if hasattr(self.inner, "reseed"):
            self.inner.reseed(seed)

    def __call__(self, img):
        return self.inner(img).astype(np.uint8)


def uint8_capable(transform):
    """Whether ``transform``'s output before normalisation is whole 0-255 pixel values."""
    augment = getattr(transform, "augment", None)
    return augment is None or not getattr(augment, "pca_lighting", 0)


_DEVICE_NORM = {}  # (normalization, context) -> (mean, 1/std) arrays, uploaded once


def device_normalize(x, normalization):
    """A uint8 NCHW batch on its device -> float32 normalised as the workers would have; float input unchanged."""
    if x.dtype != np.uint8:
        return x
    x = x.astype("float32")
    if normalization == "raw":
        return x
    key = (normalization, x.context)
    if key not in _DEVICE_NORM:
        mean, std = NORMALIZATIONS[normalization]
        _DEVICE_NORM[key] = (mx.nd.array(mean, ctx=x.context).reshape((1, 3, 1, 1)),
                             mx.nd.array([1.0 / v for v in std], ctx=x.context).reshape((1, 3, 1, 1)))
    mean, inv_std = _DEVICE_NORM[key]
    return mx.nd.broadcast_mul(mx.nd.broadcast_sub(x, mean), inv_std)


class LstDataset(gluon.data.Dataset):
    """Items are (CHW float32 image, or uint8 with Uint8Output, int32 task labels, int32 position in the list)."""

    def __init__(self, image_list: ImageList, tasks: Sequence[Task], transform, skip_bad=False):
        self.image_list = image_list
        self.tasks = list(tasks)
        self.transform = transform
        self.skip_bad = skip_bad
        # softmax tasks only: int32 labels, one per task; with other kinds float32 slots (task_kinds.py)
        self._labels = slot_matrix(self.tasks, image_list.labels) if has_kinds(self.tasks) else \
            task_label_matrix(self.tasks, image_list.labels)
        self._pid = None
        self.augment_seed = None  # set by make_loader for a run with --seed: see EpochTaggedBatches
        self._cache = None

    def cache_images(self, threads=4):
        """Decode every image once into RAM (small datasets); returns the bytes used.

        Done before the loader forks its workers, which then share the arrays.
        """
        size = getattr(self.transform, "decode_size", None)

        def load(path):
            try:
                return decode_image(path, size)
            except UserInputError:
                return None  # reported (or skipped) by __getitem__ as usual
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            self._cache = list(pool.map(load, self.image_list.paths()))
        used = sum(img.nbytes for img in self._cache if img is not None)
        _logger.info("cached %d decoded images of %s in RAM: %.1f MB", len(self._cache),
                     self.image_list.source, used / 1e6)
        return used

    def _image(self, idx):
        if self._cache is not None and self._cache[idx] is not None:
            return self._cache[idx]
        return decode_image(self.image_list.path_at(idx), getattr(self.transform, "decode_size", None))

    def __len__(self):
        return len(self.image_list)

    def _per_process_setup(self):
        # Workers are forked: one OpenCV thread each (they are the parallelism), and
        # a random stream per process so that workers do not repeat each other's crops.
        self._pid = os.getpid()
        cv2.setNumThreads(1)
        if hasattr(self.transform, "reseed"):
            self.transform.reseed(int.from_bytes(os.urandom(4), "little"))

    def __getitem__(self, key):
        """Item ``key``: a position in the list, or (position, epoch) from EpochTaggedBatches."""
        idx, epoch = key if isinstance(key, tuple) else (key, None)
        if self._pid != os.getpid():
            self._per_process_setup()
        if epoch is not None and self.augment_seed is not None and hasattr(self.transform, "reseed"):
            self.transform.reseed(sample_seed(self.augment_seed, epoch, idx))
        try:
            data = self.transform(self._image(idx))
        except UserInputError as exc:
            if not self.skip_bad:
                raise UserInputError("%s (%s)" % (exc, self.image_list.where_at(idx)))
            shape = (3,) + tuple(self.transform.out_hw)
            return (np.zeros(shape, getattr(self.transform, "dtype", np.float32)),
                    np.full(self._labels.shape[1], BAD_SAMPLE, self._labels.dtype), np.int32(idx))
        return data, self._labels[idx], np.int32(idx)


def sample_seed(seed, epoch, idx):
    """The augmentation stream's seed of image ``idx`` in ``epoch`` of a run with ``seed``."""
    return ((seed * 1000003 + epoch) * 1000003 + idx) % (1 << 63)


class EpochTaggedBatches:
    """A batch sampler whose batches hold (position, epoch) pairs instead of positions.

    With ``--seed`` each image's augmentation then draws from a stream fixed by (seed,
    epoch, position), so a run repeats its crops whichever worker process decodes which
    image (per-process streams made two runs with the same seed differ: 0.337 and 0.441
    held-out accuracy for one 48-update bench_learning run). The order comes from
    numpy's global generator, which the seed fixes too.
    """

    def __init__(self, batch_sampler):
        self.inner, self.epoch = batch_sampler, 0

    def __iter__(self):
        self.epoch += 1
        for batch in self.inner:
            yield [(i, self.epoch) for i in batch]

    def __len__(self):
        return len(self.inner)


def make_loader(dataset, batch_size, shuffle, num_workers, last_batch="keep", batchify_fn=None, pin_memory=False,
                seed=None):
    """A Gluon DataLoader over ``dataset`` with ``num_workers`` worker processes.

    ``pin_memory`` (for GPUs; a CPU build has no pinned memory) puts batches in page-locked
    memory, from which the copy to the GPU is faster and asynchronous. ``seed`` (shuffled
    LstDataset only) makes the augmentation repeatable (EpochTaggedBatches).
    """
    order = dict(batch_size=batch_size, shuffle=shuffle, last_batch=last_batch)
    if shuffle and seed is not None and hasattr(dataset, "augment_seed"):
        dataset.augment_seed = seed
        order = dict(batch_sampler=EpochTaggedBatches(gluon.data.BatchSampler(
            gluon.data.RandomSampler(len(dataset)), batch_size, last_batch)))
    # The DataLoader forks its workers here. A child forked while OpenCV's thread pool
    # runs (after any cv2 call in this process, e.g. --check-images full) hangs in the
    # worker's cv2.setNumThreads(1): it joins a stale thread id that MXNet's re-created
    # engine threads now own. So the pool is stopped for the fork and restored after.
    threads = cv2.getNumThreads()
    if num_workers:
        cv2.setNumThreads(1)
    try:
        return gluon.data.DataLoader(dataset, num_workers=num_workers, batchify_fn=batchify_fn,
                                     prefetch=2 * num_workers if num_workers else None, pin_memory=pin_memory,
                                     **order)
    finally:
        cv2.setNumThreads(threads)


def find_bad_images(image_list: ImageList, full_decode=False, threads=4):
    """{line: reason} for entries whose image is missing, unreadable or truncated.

    The default check reads only each file's first and last bytes; ``full_decode``
    also decodes every image (image_checks spreads the work over ``threads`` workers).
    """
    bad = bad_positions(image_list, full_decode, threads)
    return {int(image_list.lines[p]): reason for p, reason in bad.items()}


def check_images_or_skip(image_list: ImageList, skip_bad, full_decode=False, threads=4):
    """Return the list without bad images (with skip_bad) or raise naming the first ones."""
    bad = bad_positions(image_list, full_decode, threads)
    if not bad:
        return image_list
    positions = sorted(bad)
    described = ["%s: image %s %s" % (image_list.where_at(p), shorten(image_list.path_at(p)), bad[p])
                 for p in positions[:SHOWN]]
    more = "\n  ... and %d more" % (len(bad) - SHOWN) if len(bad) > SHOWN else ""
    if len(bad) == len(image_list):
        raise UserInputError("none of the %d images of %s can be used (is --image-train/--image-val "
                             "the folder the paths are relative to? It is %s).\n  %s"
                             % (len(bad), shorten(image_list.source), shorten(image_list.image_root),
                                "\n  ".join(described[:5])))
    if not skip_bad:
        raise UserInputError("%d bad image(s) in %s:\n  %s%s\nFix or remove them, or pass --skip-bad-images "
                             "to leave them out (counted and logged)."
                             % (len(bad), shorten(image_list.source), "\n  ".join(described), more))
    for text in described:
        _logger.warning("skipping bad image: %s", text)
    _logger.warning("skipped %d bad image(s) of %d in %s%s", len(bad), len(image_list), image_list.source,
                    " (the first %d are named above)" % SHOWN if len(bad) > SHOWN else "")
    return drop_entries(image_list, {int(image_list.lines[p]) for p in positions})


def preflight_report(tasks: Sequence[Task], train: ImageList, val: ImageList = None):
    """Log per-task class histograms, duplicate paths and train/val overlap; return them."""
    histograms = kind_histograms if has_kinds(tasks) or train.labels.dtype.kind == "f" else class_histograms
    report = {"train": histograms(tasks, train.labels)}
    if val is not None:
        report["val"] = histograms(tasks, val.labels)
    for split, hist in report.items():
        for name, h in hist.items():
            missing = ", %d unknown" % h["missing"] if h["missing"] else ""
            counted = "mean %.4g std %.4g over %d values" % (h["mean"], h["std"], h["counts"][0]) if "mean" in h \
                else "%s counts %s" % ("positives" if "negatives" in h else "class", first_few(h["counts"], 100))
            _logger.info("preflight %s %s: %s%s", split, name, counted, missing)
            empty = [c for c, n in enumerate(h["counts"]) if n == 0]
            if split == "train" and empty and "mean" not in h:
                _logger.warning("preflight: task %s has no training images of class(es) %s", name, first_few(empty, 20))
    for name, h in report.get("val", {}).items():
        if not _labelled(h):
            _logger.warning("preflight: %s has no labelled image for task %s (all its labels are -1 or empty): "
                            "its validation loss and accuracy are null, not 0, and cannot choose the best epoch",
                            shorten(val.source), name)
    for image_list in filter(None, (train, val)):
        _warn_duplicates(image_list)
    if val is not None:
        overlap = find_overlap(train, val)
        report["overlap"] = overlap
        if overlap:
            _logger.warning("preflight: %d image(s) are in both the training and validation lists, "
                            "which inflates validation accuracy; first: %s", len(overlap), overlap[0])
    return report


def _labelled(histogram):
    """How many images of a list a task's histogram counts as labelled."""
    if "mean" in histogram:
        return histogram["counts"][0]
    return sum(histogram["counts"]) + sum(histogram.get("negatives", []) or [])


def _warn_duplicates(image_list):
    """One warning for all paths listed on several lines: how many, and the first few with their lines."""
    duplicates = sorted(find_duplicates(image_list).items(), key=lambda item: item[1][0])
    if duplicates:
        shown = ["%s on lines %s" % (path, first_few(lines)) for path, lines in duplicates[:SHOWN]]
        more = "; and %d more" % (len(duplicates) - SHOWN) if len(duplicates) > SHOWN else ""
        _logger.warning("preflight: %s lists %d image(s) on more than one line (%d lines in all): %s%s",
                        image_list.source, len(duplicates), sum(len(lines) for _, lines in duplicates),
                        "; ".join(shown), more)


def add_arguments(parser):
    """Data flags (the original's names first)."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-train", required=True, help="training .lst file")
    group.add_argument("--image-train", default=None, help="folder the training list's paths are relative to "
                       "(default: the list's folder)")
    group.add_argument("--data-val", default=None, help="validation .lst file (optional)")
    group.add_argument("--image-val", default=None, help="folder the validation list's paths are relative to")
    group.add_argument("--image-shape", default="3,224,224", help="network input C,H,W")
    group.add_argument("--num-examples", type=positive_int, default=None,
                       help="images per epoch for the lr schedule (default: counted from --data-train)")
    group.add_argument("--data-nthreads", type=non_negative_int, default=None,
                       help="loader worker processes (default on CPU: the cores, at most 4; with GPUs: every core but one per GPU)")
    group.add_argument("--cache-images", action="store_true",
                       help="keep decoded images in RAM (small datasets: no decoding after the first pass)")
    group.add_argument("--skip-bad-images", action="store_true",
                       help="leave out missing/unreadable images (counted and logged) instead of stopping")
    add_check_images_flag(group, "header", "a bad image stops training (see --skip-bad-images)")
    add_max_pixels_flag(group)
    group.add_argument("--normalization", choices=["auto", "imagenet", "raw"], default="auto",
                       help="pixel preprocessing: auto follows the weights (raw 0-255 for classic MXNet "
                            "checkpoints that start with bn_data, ImageNet mean/std otherwise)")

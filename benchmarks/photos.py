"""Photo-like JPEG files and .lst files for the benchmarks (cv2 drawing and noise, no downloads)."""
import os

import cv2
import numpy as np


def draw_photo(rng, width, height):
    """A photo-like BGR image: gradient, blurred shapes and lines, sensor noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = rng.uniform(30, 220, 3).astype(np.float32) + (xx[..., None] / width) * rng.uniform(-60, 60, 3) \
        + (yy[..., None] / height) * rng.uniform(-60, 60, 3)
    img = np.ascontiguousarray(img, dtype=np.float32)
    for _ in range(rng.randint(6, 14)):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        r = int(rng.uniform(0.03, 0.3) * min(width, height))
        kind = rng.randint(3)
        if kind == 0:
            cv2.circle(img, (x, y), r, color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (x - r, y - r // 2), (x + r, y + r // 2), color, -1)
        else:
            cv2.line(img, (x, y), (int(rng.uniform(0, width)), int(rng.uniform(0, height))), color,
                     rng.randint(1, 6), cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 2.0))
    img += rng.normal(0, rng.uniform(4, 12), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_photos(root, count, size, classes, seed=0):
    """Write ``count`` JPEGs (quality 90) under root/images; returns [(relative path, label)], labels cycling."""
    rng = np.random.RandomState(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    items = []
    for i in range(count):
        rel = "images/photo_%04d.jpg" % i
        cv2.imwrite(os.path.join(root, rel), draw_photo(rng, *size), [cv2.IMWRITE_JPEG_QUALITY, 90])
        items.append((rel, i % classes))
    return items


class Lists:
    """.lst files that cycle over the generated images, one per length asked for."""

    def __init__(self, root, items):
        self.root, self.items, self._paths = root, items, {}

    def path(self, entries):
        """Path of a list with ``entries`` lines (index, float label, relative path)."""
        if entries not in self._paths:
            path = os.path.join(self.root, "cycle_%d.lst" % entries)
            with open(path, "w") as f:
                for i in range(entries):
                    rel, label = self.items[i % len(self.items)]
                    f.write("%d\t%f\t%s\n" % (i, label, rel))
            self._paths[entries] = path
        return self._paths[entries]

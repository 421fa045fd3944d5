"""Draw a small "faces-like" data set for task kinds: a regression and two softmax tasks, plus attributes.

Each image is a coloured blob on a noisy background. Its size is the "age" (a real
number, 10-80), its colour a class (``colour``: 0 red, 1 green, 2 blue) and its
outline another class (``shape``: 0 circle, 1 square, 2 diamond). Three yes/no
attributes are drawn too (``dot``: a white dot, ``frame``: a border, ``bar``: a
dark bar), for ``multilabel:3``. Written as train.csv / val.csv (a header naming the
columns, the image path in ``path``) next to an images/ folder:

    python examples/age_gender_race/make_data.py OUT_DIR [--train 300 --val 100 --size 48]
"""
import argparse
import csv
import logging
import os

import cv2
import numpy as np

_logger = logging.getLogger(__name__)

COLOURS = [(40, 40, 220), (40, 200, 40), (220, 60, 40)]  # BGR: red, green, blue
HEADER = ["path", "age", "colour", "shape", "dot", "frame", "bar"]


def draw(age, colour, shape, attributes, rng, size=48):
    """One BGR image: a blob whose radius grows with ``age`` (10-80), of ``colour`` and ``shape``."""
    img = rng.randint(90, 150, (size, size, 3)).astype(np.uint8)
    radius = size * (0.12 + 0.28 * (age - 10) / 70.0)
    cx, cy = size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2)
    paint = tuple(int(c + rng.randint(-20, 20)) for c in COLOURS[colour])
    if shape == 0:
        cv2.circle(img, (int(cx), int(cy)), int(round(radius)), paint, -1)
    elif shape == 1:
        cv2.rectangle(img, (int(cx - radius), int(cy - radius)), (int(cx + radius), int(cy + radius)), paint, -1)
    else:
        points = np.array([(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)], np.int32)
        cv2.fillPoly(img, [points], paint)
    dot, frame, bar = attributes
    if dot:  # attributes big enough to be seen at 32 px
        cv2.circle(img, (size // 6, size // 6), max(3, size // 9), (255, 255, 255), -1)
    if frame:
        cv2.rectangle(img, (0, 0), (size - 1, size - 1), (0, 255, 255), max(2, size // 14))
    if bar:
        cv2.rectangle(img, (0, size - size // 6), (size - 1, size - 1), (20, 20, 20), -1)
    return img


def make_split(out_dir, name, count, rng, size=48):
    """Draw ``count`` images into OUT_DIR/images and write OUT_DIR/NAME.csv; returns its path."""
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    rows = []
    for i in range(count):
        age = float(rng.uniform(10, 80))
        colour, shape = int(rng.randint(3)), int(rng.randint(3))
        attributes = [int(v) for v in rng.rand(3) < (0.5, 0.3, 0.4)]
        rel = "images/%s_%04d.png" % (name, i)
        cv2.imwrite(os.path.join(out_dir, rel), draw(age, colour, shape, attributes, rng, size))
        rows.append([rel, "%.2f" % age, colour, shape] + attributes)
    path = os.path.join(out_dir, "%s.csv" % name)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def main(argv=None):
    """Command line: OUT_DIR [--train N --val N --size PX --seed S]."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.RandomState(args.seed)
    for name, count in (("train", args.train), ("val", args.val)):
        print(make_split(args.out_dir, name, count, rng, args.size))


if __name__ == "__main__":
    main()

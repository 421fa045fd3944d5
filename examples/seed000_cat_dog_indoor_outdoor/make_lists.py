#!/usr/bin/env python
"""Two-column .lst files from data_example/: column 1 the shape, column 2 a bright/dark background.

Seed 000 labels every image twice, independently: cat or dog, and indoor or outdoor.
data_example/ has one label (the shape), so this script derives a second, independent
one from the pixels: is the image's background bright? It takes the median grey level
of a 4-pixel border ring (the background; shapes sit mostly inside the image):

    bright_bg = 1 if median >= 128 + MARGIN, 0 if median < 128 - MARGIN, else -1 (unknown)

Backgrounds within MARGIN of mid-grey are left unknown (-1), so the lists also show
missing labels: those images still train the shape head. The output is deterministic.

    python examples/seed000_cat_dog_indoor_outdoor/make_lists.py [--data data_example] [--out DIR]

writes DIR/train.lst, DIR/val.lst (index, shape, bright_bg, path relative to
data_example/images) and DIR/classes.txt (class names in [task] sections).
"""
import argparse
import os

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BORDER = 4  # pixels of the ring whose median is the background's grey level
MARGIN = 10  # grey levels either side of 128 that count as neither bright nor dark
CLASSES = "[shape]\nbackground\ncircle\nsquare\ntriangle\n[bright_bg]\ndark\nbright\n"


def background_grey(path):
    """Median grey level (0-255) of the image's border ring."""
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SystemExit("cannot read image %s" % path)
    ring = np.concatenate([img[:BORDER].ravel(), img[-BORDER:].ravel(),
                           img[BORDER:-BORDER, :BORDER].ravel(), img[BORDER:-BORDER, -BORDER:].ravel()])
    return float(np.median(ring))


def bright_label(grey):
    """1 bright, 0 dark, -1 too close to mid-grey to say."""
    if grey >= 128 + MARGIN:
        return 1
    if grey < 128 - MARGIN:
        return 0
    return -1


def convert(src, dst, image_root):
    """Copy a one-column list to ``dst`` with the bright_bg column added; returns the column's counts."""
    counts = {-1: 0, 0: 0, 1: 0}
    with open(src, encoding="utf-8") as f_in, open(dst, "w", encoding="utf-8") as f_out:
        for line in f_in:
            index, shape, rel = line.rstrip("\n").split("\t")
            bright = bright_label(background_grey(os.path.join(image_root, rel)))
            counts[bright] += 1
            f_out.write("%s\t%s\t%f\t%s\n" % (index, shape, bright, rel))
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(REPO, "data_example"), help="the data_example folder")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "seed000_lists"), help="output folder")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    images = os.path.join(args.data, "images")
    for split, name in (("train", "train_data.lst"), ("val", "val_data.lst")):
        counts = convert(os.path.join(args.data, name), os.path.join(args.out, split + ".lst"), images)
        print("%s: bright_bg dark %d, bright %d, unknown %d" % (split, counts[0], counts[1], counts[-1]))
    with open(os.path.join(args.out, "classes.txt"), "w", encoding="utf-8") as f:
        f.write(CLASSES)
    print("wrote %s/{train,val}.lst and classes.txt" % args.out)


if __name__ == "__main__":
    main()

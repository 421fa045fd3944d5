#!/usr/bin/env python
"""Generate the synthetic example dataset shipped in ``data_example/``.

Draws small 64x64 RGB JPEG images of four classes and writes MXNet ``.lst``
files for them:

    0 background  textured / noisy background, faint blobs and lines only
    1 circle      a filled circle
    2 square      a filled (slightly rotated) square
    3 triangle    a filled, randomly rotated triangle

Every image has a random background colour, a mild linear gradient and mild
noise; shapes get a random colour that contrasts with the background, a random
size of 35-70% of the image side and a random position (fully or mostly
inside the image). All images also carry a few faint, small distractors so
that "has faint clutter" is not a shortcut for the background class.

The output is deterministic: running the script again rewrites every file
byte-for-byte identically (fixed seeds, numpy RandomState, cv2 only).

Usage::

    python data_example/make_data_example.py [--out data_example]

Writes, under ``--out``:

    images/<class>/<class>_<NNN>.jpg   (JPEG quality 90)
    train_data.lst, val_data.lst       (index<TAB>label<TAB>relative/path)
    classes.txt                        (class names, one per line, label order)
"""

import argparse
import os

import cv2
import numpy as np

CLASSES = ["background", "circle", "square", "triangle"]
IMG_SIZE = 64
N_TRAIN = 60  # per class
N_VAL = 20  # per class
SEED = 20240601
JPEG_QUALITY = 90
SHIFT = 4  # sub-pixel bits for cv2 drawing calls
SCALE = 1 << SHIFT


def _luma(color):
    b, g, r = [float(c) for c in color]
    return 0.114 * b + 0.587 * g + 0.299 * r


def _background(rng):
    """Random base colour + linear gradient + mild gaussian noise (float32 BGR)."""
    base = rng.uniform(20, 235, size=3)
    yy, xx = np.mgrid[0:IMG_SIZE, 0:IMG_SIZE].astype(np.float32) / (IMG_SIZE - 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)).astype(np.float32)
    amp = rng.uniform(10, 35, size=3)
    img = base[None, None, :] + ramp[:, :, None] * amp[None, None, :]
    # low-frequency texture: coarse noise upsampled
    coarse = rng.normal(0, 1, size=(8, 8, 1)).astype(np.float32)
    coarse = cv2.resize(coarse, (IMG_SIZE, IMG_SIZE), interpolation=cv2.INTER_CUBIC)
    img = img + coarse[:, :, None] * rng.uniform(3, 8)
    return img.astype(np.float32), base


def _contrast_color(rng, bg_color):
    """Random colour clearly distinct from bg_color (in luma and in RGB)."""
    bg_l = _luma(bg_color)
    for _ in range(1000):
        c = rng.randint(0, 256, size=3)
        if abs(_luma(c) - bg_l) >= 60 and np.linalg.norm(c - bg_color) >= 110:
            return c.astype(np.float64)
    # fallback (practically unreachable): black or white, whichever is further
    return np.full(3, 0.0 if bg_l > 127 else 255.0)


def _faint_distractors(rng, img, bg_color, n):
    """Blend a few small, low-contrast blobs and lines into img (in place)."""
    for _ in range(n):
        layer = np.zeros((IMG_SIZE, IMG_SIZE), np.uint8)
        kind = rng.randint(0, 2)
        if kind == 0:  # small soft blob (ellipse)
            cx, cy = rng.uniform(0, IMG_SIZE, size=2)
            ax = rng.uniform(2, 7, size=2)
            cv2.ellipse(layer, (int(cx * SCALE), int(cy * SCALE)),
                        (int(ax[0] * SCALE), int(ax[1] * SCALE)),
                        float(rng.uniform(0, 180)), 0, 360, 255, -1,
                        cv2.LINE_AA, SHIFT)
            layer = cv2.GaussianBlur(layer, (5, 5), 1.2)
        else:  # thin line
            p1 = rng.uniform(0, IMG_SIZE, size=2)
            p2 = p1 + rng.uniform(-30, 30, size=2)
            cv2.line(layer, (int(p1[0] * SCALE), int(p1[1] * SCALE)),
                     (int(p2[0] * SCALE), int(p2[1] * SCALE)), 255, 1,
                     cv2.LINE_AA, SHIFT)
        color = np.clip(bg_color + rng.uniform(-70, 70, size=3), 0, 255)
        alpha = (layer.astype(np.float32) / 255.0) * rng.uniform(0.15, 0.35)
        img += alpha[:, :, None] * (color[None, None, :] - img)


def _shape_polygon(rng, label, size, cx, cy):
    """Vertices (float, Nx2) of a square or triangle centred near (cx, cy)."""
    if label == 2:  # square, side = size, small random rotation
        half = size / 2.0
        pts = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        theta = np.deg2rad(rng.uniform(-15, 15))
    else:  # triangle: near-equilateral, circumscribed diameter = size
        r = size / 2.0
        angles = np.deg2rad(np.array([90.0, 210.0, 330.0]) + rng.uniform(-12, 12, size=3))
        radii = r * rng.uniform(0.9, 1.0, size=3)
        pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        pts -= pts.mean(axis=0)  # centroid at origin
        theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return pts @ rot.T + np.array([cx, cy])


def draw_image(label, rng):
    """Draw one 64x64 BGR uint8 image of class `label`."""
    img, bg_color = _background(rng)
    n_faint = rng.randint(3, 7) if label == 0 else rng.randint(0, 3)
    _faint_distractors(rng, img, bg_color, n_faint)

    if label > 0:
        size = rng.uniform(0.35, 0.70) * IMG_SIZE
        # centre so the shape is fully or mostly (>= ~85%) inside
        margin = 0.42 * size
        cx, cy = rng.uniform(margin, IMG_SIZE - margin, size=2)
        color = _contrast_color(rng, bg_color)
        mask = np.zeros((IMG_SIZE, IMG_SIZE), np.uint8)
        if label == 1:
            cv2.circle(mask, (int(round(cx * SCALE)), int(round(cy * SCALE))),
                       int(round(size / 2.0 * SCALE)), 255, -1, cv2.LINE_AA, SHIFT)
        else:
            pts = _shape_polygon(rng, label, size, cx, cy)
            pts = np.round(pts * SCALE).astype(np.int32).reshape(-1, 1, 2)
            cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, SHIFT)
        alpha = mask.astype(np.float32) / 255.0
        # slight shading on the shape so it is not a perfectly flat colour
        shade = color[None, None, :] * (1.0 + 0.06 * rng.normal(0, 1, size=(IMG_SIZE, IMG_SIZE, 1)))
        img = img * (1.0 - alpha[:, :, None]) + shade * alpha[:, :, None]

    img += rng.normal(0, rng.uniform(2.0, 6.0), size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="output folder (default: the folder of this script)")
    args = parser.parse_args()
    out = args.out
    img_root = os.path.join(out, "images")

    per_class = N_TRAIN + N_VAL
    train, val = [], []
    index = 0
    for label, name in enumerate(CLASSES):
        cls_dir = os.path.join(img_root, name)
        os.makedirs(cls_dir, exist_ok=True)
        for n in range(per_class):
            rng = np.random.RandomState(SEED + 1000 * label + n)
            img = draw_image(label, rng)
            fname = "%s_%03d.jpg" % (name, n)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError("JPEG encoding failed for %s" % fname)
            with open(os.path.join(cls_dir, fname), "wb") as f:
                f.write(buf.tobytes())
            item = (index, float(label), "%s/%s" % (name, fname))
            (train if n < N_TRAIN else val).append(item)
            index += 1

    shuffle_rng = np.random.RandomState(SEED)
    for fname, items in (("train_data.lst", train), ("val_data.lst", val)):
        order = shuffle_rng.permutation(len(items))
        with open(os.path.join(out, fname), "w", newline="\n") as f:
            for i in order:
                idx, lab, path = items[i]
                # same layout as MXNet's im2rec: '%d\t' index, '%f\t' label, '%s\n' path
                f.write("%d\t%f\t%s\n" % (idx, lab, path))

    with open(os.path.join(out, "classes.txt"), "w", newline="\n") as f:
        f.write("".join(name + "\n" for name in CLASSES))

    print("wrote %d train + %d val images of %d classes to %s"
          % (len(train), len(val), len(CLASSES), os.path.abspath(out)))


if __name__ == "__main__":
    main()

"""Decoding images with OpenCV and the train/eval transform presets.

Everything here works on numpy arrays so that it runs in the loader's worker
processes, away from the MXNet engine.
"""
import logging
import math
import os
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Tuple

import cv2
import numpy as np

from .errors import UserInputError

_logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# name -> (mean, std) on the 0-255 scale. "raw" is for networks that normalise
# inside (the classic MXNet ResNet starts with a BatchNorm `bn_data` on 0-255 pixels).
NORMALIZATIONS = {
    "imagenet": (tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD)),
    "raw": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
EVAL_CROP_FRACTION = 0.875  # resize to 256, crop 224: the usual ImageNet evaluation

_MAGIC = {
    b"\xff\xd8": "jpeg", b"\x89PNG": "png", b"BM": "bmp", b"GIF8": "gif",
    b"II*\x00": "tiff", b"MM\x00*": "tiff", b"RIFF": "webp",
}


def sniff_format(head: bytes) -> Optional[str]:
    """The image format named by a file's first bytes, or None."""
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def check_image_file(path):
    """Cheap check without decoding: exists, known format, not truncated.

    Returns None when the file looks fine, else a short reason. A truncated JPEG
    still decodes in OpenCV (grey lower half, a warning on stderr), so the check
    looks for the end-of-image marker instead.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - 32))
            tail = f.read()
    except OSError as exc:
        return "cannot be read (%s)" % (exc.strerror or exc)
    if size == 0:
        return "is empty (0 bytes)"
    kind = sniff_format(head)
    if kind is None:
        return "is not an image OpenCV reads (unknown format)"
    if kind == "jpeg" and b"\xff\xd9" not in tail:
        return "is a truncated JPEG (no end-of-image marker)"
    if kind == "png" and b"IEND" not in tail:
        return "is a truncated PNG (no IEND chunk)"
    return None


def _to_rgb8(img):
    """Any decoded image -> HxWx3 uint8 RGB (grayscale, 16-bit, float and alpha handled)."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _reduction_flag(data, min_short_side):
    """cv2 flag that decodes a big JPEG at 1/2, 1/4 or 1/8 size when that is still large enough."""
    if not min_short_side or not data[:2].tobytes() == b"\xff\xd8":
        return cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    height, width = jpeg_size(data)
    short = min(height, width) if height else 0
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if short // factor >= min_short_side:
            return flag
    return cv2.IMREAD_COLOR


def jpeg_size(data):
    """(height, width) from a JPEG's SOF marker, or (0, 0) if not found; reads no pixels."""
    buf = data.tobytes() if hasattr(data, "tobytes") else data
    i = 2
    while i + 9 < len(buf):
        if buf[i] != 0xFF:
            i += 1
            continue
        marker = buf[i + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return (buf[i + 5] << 8) | buf[i + 6], (buf[i + 7] << 8) | buf[i + 8]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + ((buf[i + 2] << 8) | buf[i + 3])
    return 0, 0


def decode_image(path, min_short_side=None):
    """Read an image file as HxWx3 uint8 RGB.

    EXIF orientation is applied. With ``min_short_side``, large JPEGs are decoded
    directly at a reduced size that still has at least that many pixels on the
    short side, which is several times faster for phone photos.
    Raises UserInputError naming the file if it cannot be decoded.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise UserInputError("image %s cannot be read: %s" % (path, exc.strerror or exc))
    img = cv2.imdecode(data, _reduction_flag(data, min_short_side)) if data.size else None
    if img is None:
        raise UserInputError("image %s cannot be decoded by OpenCV (empty, corrupt or not an image). "
                             "Remove it from the list or pass --skip-bad-images." % path)
    return _to_rgb8(img)


def decode_image_bytes(data: bytes, max_pixels=None):
    """Decode an in-memory image (e.g. an upload) to RGB uint8; None if it is not an image."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if max_pixels and sniff_format(data[:16]) == "jpeg":
        height, width = jpeg_size(buf)
        if height * width > max_pixels:
            return None
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if buf.size else None
    return None if img is None else _to_rgb8(img)


def resize_short(img, size, interpolation=cv2.INTER_LINEAR):
    """Resize so that the short side is ``size``, keeping the aspect ratio."""
    h, w = img.shape[:2]
    scale = size / float(min(h, w))
    new = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    if new == (w, h):
        return img
    interp = cv2.INTER_AREA if scale < 0.5 else interpolation
    return cv2.resize(img, new, interpolation=interp)


def center_crop(img, out_hw):
    """Crop the centre ``out_hw`` window (the image must be at least that large)."""
    h, w = img.shape[:2]
    th, tw = out_hw
    top, left = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    crop = img[top:top + th, left:left + tw]
    if crop.shape[:2] != (th, tw):
        crop = cv2.resize(crop, (tw, th), interpolation=cv2.INTER_LINEAR)
    return crop


def random_resized_crop_box(h, w, scale, ratio, rng):
    """Inception-style crop box (top, left, height, width) of random area and aspect."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    side = min(h, w)  # fallback: the central square
    return (h - side) // 2, (w - side) // 2, side, side


def to_chw_float(img, normalization, offset=None):
    """HWC uint8 RGB -> CHW float32, normalised by the named preset's mean and std.

    ``offset`` (per RGB channel, 0-255 scale) is added first, in the same pass:
    that is how PCA lighting costs no extra pass over the image.
    """
    mean, std = NORMALIZATIONS[normalization]
    out = img.astype(np.float32)
    shift = np.asarray(mean, np.float32) - (0.0 if offset is None else np.asarray(offset, np.float32))
    if normalization != "raw" or offset is not None:
        out -= shift
    if normalization != "raw":
        out *= np.asarray([1.0 / s for s in std], np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


# AlexNet-style PCA lighting: ImageNet's RGB eigenvalues (0-255 scale) and eigenvectors
# (as mx.image.LightingAug and GluonCV's ImageNet training use them).
IMAGENET_EIGVAL = np.array([55.46, 4.794, 1.148], np.float32)
IMAGENET_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]], np.float32)


@dataclass
class AugmentConfig:
    """Training augmentation settings; each one is off at 0 / False.

    Colour strengths are torchvision's: a factor drawn from [1-x, 1+x] (hue: a
    shift of up to ``hue`` of the colour circle). ``rotate`` is the largest angle in
    degrees, ``aspect_stretch`` s stretches one axis by up to 1+s, ``pca_lighting``
    is the standard deviation of AlexNet's PCA colour noise (0.1 in the paper).
    """

    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: bool = True
    vflip: bool = False
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    random_crop: bool = True
    hue: float = 0.0
    rotate: float = 0.0
    aspect_stretch: float = 0.0
    pca_lighting: float = 0.0

    @classmethod
    def off(cls):
        """No augmentation at all: the centre crop of the resized image."""
        return cls(random_crop=False, hflip=False, vflip=False, brightness=0.0, contrast=0.0,
                   saturation=0.0, hue=0.0, rotate=0.0, aspect_stretch=0.0, pca_lighting=0.0)

    @classmethod
    def from_args(cls, args):
        """The config from the "augmentation" flags, checked (UserInputError naming the flag)."""
        if args.no_augment:
            given = [flag for flag, value in (("--vflip", args.vflip), ("--hue", args.hue), ("--rotate", args.rotate),
                     ("--aspect-stretch", args.aspect_stretch), ("--pca-lighting", args.pca_lighting)) if value]
            if given:
                raise UserInputError("--no-augment turns every augmentation off, but %s asks for one; "
                                     "drop one or the other." % ", ".join(given))
            return cls.off()
        cfg = cls(scale=_parse_range("--rand-crop-scale", args.rand_crop_scale),
                  ratio=_parse_range("--rand-crop-ratio", args.rand_crop_ratio),
                  hflip=not args.no_hflip, vflip=args.vflip, brightness=args.brightness,
                  contrast=args.contrast, saturation=args.saturation, random_crop=not args.no_rand_crop,
                  hue=args.hue, rotate=args.rotate, aspect_stretch=args.aspect_stretch,
                  pca_lighting=args.pca_lighting)
        cfg.check()
        return cfg

    def check(self):
        """Raise UserInputError for a value outside the range the transform can use."""
        low, high = self.scale
        _require(0 < low <= high <= 1, "--rand-crop-scale %g,%g: give MIN,MAX with 0 < MIN <= MAX <= 1 "
                 "(fractions of the image area), such as 0.08,1." % (low, high))
        low, high = self.ratio
        _require(0 < low <= high, "--rand-crop-ratio %g,%g: give MIN,MAX with 0 < MIN <= MAX (width/height), "
                 "such as 3/4,4/3." % (low, high))
        for flag, value, top in (("--brightness", self.brightness, 1), ("--contrast", self.contrast, 1),
                                 ("--saturation", self.saturation, 1), ("--hue", self.hue, 0.5),
                                 ("--rotate", self.rotate, 180), ("--aspect-stretch", self.aspect_stretch, 1),
                                 ("--pca-lighting", self.pca_lighting, 1)):
            _require(0 <= value <= top and not (flag == "--aspect-stretch" and value == top),
                     "%s %g: give a value from 0 (off) to %s%g." % (
                         flag, value, "below " if flag == "--aspect-stretch" else "", top))


def _require(condition, message):
    if not condition:
        raise UserInputError(message)


def _parse_range(flag, text):
    """'0.08,1' or '3/4,4/3' -> (0.08, 1.0)."""
    try:
        low, high = (float(Fraction(v.strip())) for v in text.split(","))
    except (ValueError, ZeroDivisionError):
        raise UserInputError("%s %r: expected MIN,MAX such as 0.08,1 or 3/4,4/3." % (flag, text))
    return low, high


def _lut(scale, offset):
    """256-entry uint8 table for x -> clip(x * scale + offset)."""
    return np.clip(np.arange(256, dtype=np.float32) * scale + offset + 0.5, 0, 255).astype(np.uint8)


def adjust_brightness(img, factor):
    """Multiply the pixels by ``factor`` (uint8 in and out)."""
    return cv2.LUT(img, _lut(factor, 0.0))


def adjust_contrast(img, factor):
    """Blend with the mean grey level (as torchvision): factor 0 is flat grey."""
    mean = float(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).mean())
    return cv2.LUT(img, _lut(factor, (1.0 - factor) * mean))


def adjust_saturation(img, factor):
    """Blend with the grey image: factor 0 is greyscale, above 1 more saturated."""
    gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(img, factor, gray, 1.0 - factor, 0.0)


def adjust_hue(img, shift):
    """Rotate the hue by ``shift`` of the colour circle (-0.5..0.5), in 8-bit HSV."""
    steps = int(round(shift * 180)) % 180  # OpenCV's 8-bit hue runs 0..179
    if not steps:
        return img
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = cv2.LUT(hsv[..., 0], ((np.arange(256) + steps) % 180).astype(np.uint8))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def jitter_colour(img, cfg: AugmentConfig, rng):
    """Random brightness, contrast, saturation and hue in random order (as torchvision's ColorJitter)."""
    ops = [(adjust_brightness, cfg.brightness), (adjust_contrast, cfg.contrast),
           (adjust_saturation, cfg.saturation)]
    ops = [(op, rng.uniform(max(0.0, 1 - s), 1 + s)) for op, s in ops if s > 0]
    if cfg.hue > 0:
        ops.append((adjust_hue, rng.uniform(-cfg.hue, cfg.hue)))
    rng.shuffle(ops)
    for op, amount in ops:
        img = op(img, amount)
    return img


def warp_matrix(hw, angle, stretch):
    """2x3 affine map: stretch one axis by ``stretch`` (x if > 1, y if < 1), then rotate, about the centre."""
    h, w = hw
    center = ((w - 1) / 2.0, (h - 1) / 2.0)
    sx, sy = max(stretch, 1.0), max(1.0 / stretch, 1.0)
    scale = np.array([[sx, 0, center[0] * (1 - sx)], [0, sy, center[1] * (1 - sy)], [0, 0, 1]])
    rotation = np.vstack([cv2.getRotationMatrix2D(center, angle, 1.0), [0, 0, 1]])
    return (rotation @ scale)[:2]


def random_warp(img, cfg: AugmentConfig, rng):
    """Random rotation within +-``rotate`` degrees and aspect stretch; borders reflected."""
    angle = rng.uniform(-cfg.rotate, cfg.rotate) if cfg.rotate > 0 else 0.0
    stretch = 1.0
    if cfg.aspect_stretch > 0:
        stretch = math.exp(rng.uniform(math.log(1 - cfg.aspect_stretch), math.log(1 + cfg.aspect_stretch)))
    if angle == 0.0 and stretch == 1.0:
        return img
    h, w = img.shape[:2]
    return cv2.warpAffine(img, warp_matrix((h, w), angle, stretch), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def pca_lighting_offset(alphastd, rng):
    """AlexNet's PCA colour noise: one RGB offset (0-255 scale) for the whole image."""
    alpha = np.array([rng.gauss(0.0, alphastd) for _ in range(3)], np.float32)
    return IMAGENET_EIGVEC @ (alpha * IMAGENET_EIGVAL)


class TrainTransform:
    """Random resized crop, flips, rotation/stretch, colour jitter and PCA lighting, then CHW float32.

    Everything but the normalisation runs on uint8 with OpenCV; the lighting offset is
    folded into the normalisation, so there is one float pass over the image.
    """

    def __init__(self, out_hw, normalization="imagenet", augment: Optional[AugmentConfig] = None):
        self.out_hw = tuple(out_hw)
        self.normalization = normalization
        self.augment = augment or AugmentConfig()
        self._rng = random.Random()

    @property
    def decode_size(self):
        """Short side worth decoding at: enough pixels for the smallest crop at full detail."""
        return int(max(self.out_hw) / math.sqrt(max(self.augment.scale[0], 0.25)))

    def reseed(self, seed):
        """Give this copy of the transform its own random stream (one per worker)."""
        self._rng.seed(seed)

    def _crop(self, img):
        cfg = self.augment
        if not cfg.random_crop:
            return center_crop(resize_short(img, max(self.out_hw)), self.out_hw)
        h, w = img.shape[:2]
        top, left, ch, cw = random_resized_crop_box(h, w, cfg.scale, cfg.ratio, self._rng)
        interp = cv2.INTER_AREA if ch > 2 * self.out_hw[0] else cv2.INTER_LINEAR
        return cv2.resize(img[top:top + ch, left:left + cw], self.out_hw[::-1], interpolation=interp)

    def _augment(self, img):
        """(augmented uint8 HWC image, RGB lighting offset or None)."""
        cfg, rng = self.augment, self._rng
        img = self._crop(img)
        if cfg.hflip and rng.random() < 0.5:
            img = cv2.flip(img, 1)
        if cfg.vflip and rng.random() < 0.5:
            img = cv2.flip(img, 0)
        if cfg.rotate > 0 or cfg.aspect_stretch > 0:
            img = random_warp(img, cfg, rng)
        if cfg.brightness > 0 or cfg.contrast > 0 or cfg.saturation > 0 or cfg.hue > 0:
            img = jitter_colour(img, cfg, rng)
        offset = pca_lighting_offset(cfg.pca_lighting, rng) if cfg.pca_lighting > 0 else None
        return img, offset

    def augment_uint8(self, img):
        """The augmented HWC uint8 RGB image the network sees, before normalisation (for previews)."""
        img, offset = self._augment(img)
        if offset is None:
            return img
        return np.clip(img.astype(np.float32) + offset, 0, 255).astype(np.uint8)

    def __call__(self, img):
        img, offset = self._augment(img)
        return to_chw_float(img, self.normalization, offset)


def preview_samples(images, transform: TrainTransform, count, seed=0):
    """``count`` augmented uint8 samples, cycling over ``images`` (arrays, or paths to decode)."""
    transform.reseed(seed)
    decoded = [decode_image(im, transform.decode_size) if isinstance(im, str) else im for im in images]
    if not decoded:
        return []
    return [transform.augment_uint8(decoded[i % len(decoded)]) for i in range(count)]


def augment_arguments(parser):
    """The "augmentation" flags (defaults: crop, horizontal flip and colour jitter on)."""
    group = parser.add_argument_group("augmentation")
    group.add_argument("--rand-crop-scale", default="0.08,1", metavar="MIN,MAX",
                       help="random resized crop: range of the crop's fraction of the image area")
    group.add_argument("--rand-crop-ratio", default="3/4,4/3", metavar="MIN,MAX",
                       help="random resized crop: range of the crop's width/height (0.75,1.333 = 3/4,4/3)")
    group.add_argument("--no-rand-crop", action="store_true", help="centre crop instead of the random resized crop")
    group.add_argument("--no-hflip", action="store_true", help="no random left-right flip")
    group.add_argument("--vflip", action="store_true", help="random up-down flip too")
    for name, default in (("brightness", 0.4), ("contrast", 0.4), ("saturation", 0.4)):
        group.add_argument("--" + name, type=float, default=default,
                           help="random %s factor in [1-x, 1+x] (0: off; default %g)" % (name, default))
    group.add_argument("--hue", type=float, default=0.0, help="random hue shift up to x of the colour circle "
                       "(0..0.5; default 0: off)")
    group.add_argument("--rotate", type=float, default=0.0, metavar="DEGREES",
                       help="random rotation in +-DEGREES, borders reflected (default 0: off)")
    group.add_argument("--aspect-stretch", type=float, default=0.0,
                       help="stretch width or height by a random factor up to 1+x (0..<1; default 0: off)")
    group.add_argument("--pca-lighting", type=float, default=0.0, metavar="STD",
                       help="AlexNet PCA lighting noise with this std (0.1 is usual; default 0: off)")
    group.add_argument("--no-augment", action="store_true", help="no augmentation at all (centre crop)")
    group.add_argument("--preview-augmentation", type=int, default=0, metavar="N",
                       help="write a grid of N augmented training samples to --preview-out and exit")
    group.add_argument("--preview-out", default="augmentation-preview.png", metavar="FILE.png",
                       help="where --preview-augmentation writes its grid (default: %(default)s)")


def preview_settings(args):
    """(count, path) asked for by --preview-augmentation / --preview-out, or None; checked."""
    if args.preview_augmentation == 0:
        return None
    _require(args.preview_augmentation > 0, "--preview-augmentation %d: give a number of samples, such as 16."
             % args.preview_augmentation)
    _require(args.preview_out.lower().endswith(".png"), "--preview-out %s: the preview is a PNG image; "
             "give a name ending in .png." % args.preview_out)
    return args.preview_augmentation, args.preview_out


class EvalTransform:
    """Resize the short side to out/0.875 and take the centre crop, then normalise."""

    def __init__(self, out_hw, normalization="imagenet"):
        self.out_hw = tuple(out_hw)
        self.normalization = normalization

    @property
    def decode_size(self):
        """Short side worth decoding at."""
        return int(math.ceil(max(self.out_hw) / EVAL_CROP_FRACTION))

    def __call__(self, img):
        img = resize_short(img, self.decode_size)
        return to_chw_float(center_crop(img, self.out_hw), self.normalization)

    def flipped(self, img):
        """The same view mirrored left-right (for flip test-time augmentation)."""
        return self(img[:, ::-1])


def parse_image_shape(text):
    """'3,224,224' -> (3, 224, 224), with a clear error for anything else."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or shape[0] != 3 or min(shape) <= 0:
        raise UserInputError("--image-shape %r: expected 3,HEIGHT,WIDTH such as 3,224,224." % text)
    return shape

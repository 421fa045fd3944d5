"""Training augmentation: the random crop, flips, colour, rotation, stretch and lighting.

Each augmentation can be switched off; ``TrainTransform`` chains them on uint8
images with OpenCV and normalises once at the end (``images.to_chw_float``).
Also the "augmentation" flags and the preview of what the network sees.
"""
import logging
import dataclasses
import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Tuple

import cv2
import numpy as np

from ..errors import UserInputError
from .images import center_crop, decode_image, resize_short, to_chw_float
from ..flagtypes import finite_float

_logger = logging.getLogger(__name__)


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
    ``pad_crop`` p > 0 replaces the random resized crop by CIFAR's crop: the image
    resized to the output, padded by p of each side (reflected) and cropped back at a
    random offset, so the whole object stays in view at its own scale.
    """

    scale: Tuple[float, float] = (0.08, 1.0)
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: bool = True
    vflip: bool = False
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    random_crop: bool = True
    pad_crop: float = 0.0
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
    def from_args(cls, settings, base=None):
        """``base`` (default: this class's defaults) with every augmentation flag the user gave applied, checked.

        A flag left out (None, or False for the switches) keeps ``base``'s value, so
        a preset (augment_presets.py) supplies the defaults and explicit flags win.
        Raises UserInputError naming the flag for a value the transform cannot use.
        """
        if settings.no_augment:
            given = explicit_flags(settings)
            if given:
                raise UserInputError("--no-augment turns every augmentation off, but %s asks for one; "
                                     "drop one or the other (or use --augment none %s)."
                                     % (", ".join(given), " ".join(given)))
            return cls.off()
        changes = {name: value for name, value in _flag_values(settings).items() if value is not None}
        if "scale" in changes or "ratio" in changes:
            changes.setdefault("pad_crop", 0.0)  # asking for the resized crop's ranges means that crop
        if "scale" in changes or "ratio" in changes or (changes.get("pad_crop") or 0) > 0:
            # a crop asked for on a base without one (--augment none) means that crop, unless --no-rand-crop
            changes.setdefault("random_crop", True)
        cfg = dataclasses.replace(base if base is not None else cls(), **changes)
        cfg.check()
        return cfg

    def check(self):
        """Raise UserInputError for a value outside the range the transform can use."""
        low, high = self.scale
        _require(0 < low <= high <= 1, "--rand-crop-scale %g,%g: give MIN,MAX with 0 < MIN <= MAX <= 1 "
                 "(fractions of the image area), such as 0.08,1." % (low, high))
        low, high = self.ratio
        _require(0 <= self.pad_crop <= 0.5, "--crop-pad %g: give a fraction of the side from 0 (off) to 0.5, "
                 "such as 0.125 (4 pixels at 32)." % self.pad_crop)
        _require(0 < low <= high, "--rand-crop-ratio %g,%g: give MIN,MAX with 0 < MIN <= MAX (width/height), "
                 "such as 3/4,4/3." % (low, high))
        for flag, value, top in (("--brightness", self.brightness, 1), ("--contrast", self.contrast, 1),
                                 ("--saturation", self.saturation, 1), ("--hue", self.hue, 0.5),
                                 ("--rotate", self.rotate, 180), ("--aspect-stretch", self.aspect_stretch, 1),
                                 ("--pca-lighting", self.pca_lighting, 1)):
            _require(0 <= value <= top and not (flag == "--aspect-stretch" and value == top),
                     "%s %g: give a value from 0 (off) to %s%g." % (
                         flag, value, "below " if flag == "--aspect-stretch" else "", top))


# flag -> (AugmentConfig field, how the flag's value becomes the field's); None = not given
_FLAGS = {
    "rand_crop_scale": ("scale", lambda v: _parse_range("--rand-crop-scale", v)),
    "rand_crop_ratio": ("ratio", lambda v: _parse_range("--rand-crop-ratio", v)),
    "crop_pad": ("pad_crop", float),
    "no_rand_crop": ("random_crop", lambda v: not v),
    "no_hflip": ("hflip", lambda v: not v),
    "vflip": ("vflip", bool),
    "brightness": ("brightness", float), "contrast": ("contrast", float), "saturation": ("saturation", float),
    "hue": ("hue", float), "rotate": ("rotate", float), "aspect_stretch": ("aspect_stretch", float),
    "pca_lighting": ("pca_lighting", float),
}


def _given(settings, dest):
    value = getattr(settings, dest)
    return value is not None and value is not False  # switches are store_true: False = not given


def explicit_flags(settings):
    """The augmentation flags given on the command line, as the user typed them (e.g. ['--rotate'])."""
    return ["--" + dest.replace("_", "-") for dest in _FLAGS if _given(settings, dest)]


def _flag_values(settings):
    """{AugmentConfig field: value} for each flag given; None for the others."""
    return {field: convert(getattr(settings, dest)) if _given(settings, dest) else None
            for dest, (field, convert) in _FLAGS.items()}


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


def pad_and_crop(img, fraction, rng):
    """CIFAR's crop: pad ``fraction`` of each side (reflected), crop the original size at a random offset."""
    h, w = img.shape[:2]
    py, px = int(round(fraction * h)), int(round(fraction * w))
    if not (py or px):
        return img
    padded = cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_REFLECT_101)
    top, left = rng.randint(0, 2 * py), rng.randint(0, 2 * px)
    return np.ascontiguousarray(padded[top:top + h, left:left + w])


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
        if not self.augment.random_crop or self.augment.pad_crop > 0:
            return max(self.out_hw)  # both only resize the whole image to the output size
        return int(max(self.out_hw) / math.sqrt(max(self.augment.scale[0], 0.25)))

    def reseed(self, seed):
        """Give this copy of the transform its own random stream (one per worker)."""
        self._rng.seed(seed)

    def _crop(self, img):
        cfg = self.augment
        if not cfg.random_crop:
            return center_crop(resize_short(img, max(self.out_hw)), self.out_hw)
        if cfg.pad_crop > 0:
            return pad_and_crop(center_crop(resize_short(img, max(self.out_hw)), self.out_hw), cfg.pad_crop,
                                self._rng)
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


def add_override_arguments(group):
    """The flags that override the parts of --augment's preset (augment_presets.add_arguments declares both).

    Every override defaults to None ("the preset's"), so the preset can tell what the
    user asked for from what they left out.
    """
    group.add_argument("--rand-crop-scale", default=None, metavar="MIN,MAX",
                       help="random resized crop: range of the crop's fraction of the image area (e.g. 0.08,1)")
    group.add_argument("--rand-crop-ratio", default=None, metavar="MIN,MAX",
                       help="random resized crop: range of the crop's width/height (e.g. 3/4,4/3)")
    group.add_argument("--crop-pad", type=float, default=None, metavar="FRACTION",
                       help="CIFAR-style crop instead: pad this fraction of the side, crop at a random offset "
                       "(0.125 = 4 px at 32)")
    group.add_argument("--no-rand-crop", action="store_true", help="centre crop instead of the random crop")
    group.add_argument("--no-hflip", action="store_true", help="no random left-right flip")
    group.add_argument("--vflip", action="store_true", help="random up-down flip too")
    for name in ("brightness", "contrast", "saturation"):
        group.add_argument("--" + name, type=finite_float, default=None,
                           help="random %s factor in [1-x, 1+x] (0: off)" % name)
    group.add_argument("--hue", type=finite_float, default=None, help="random hue shift up to x of the colour circle "
                       "(0..0.5; 0: off)")
    group.add_argument("--rotate", type=finite_float, default=None, metavar="DEGREES",
                       help="random rotation in +-DEGREES, borders reflected (0: off)")
    group.add_argument("--aspect-stretch", type=finite_float, default=None,
                       help="stretch width or height by a random factor up to 1+x (0..<1; 0: off)")
    group.add_argument("--pca-lighting", type=finite_float, default=None, metavar="STD",
                       help="AlexNet PCA lighting noise with this std (0.1 is usual; 0: off)")
    group.add_argument("--no-augment", action="store_true", help="no augmentation at all (= --augment none)")
    group.add_argument("--preview-augmentation", type=int, default=0, metavar="N",
                       help="write a grid of N augmented training samples to --preview-out and exit")
    group.add_argument("--preview-out", default="augmentation-preview.png", metavar="FILE.png",
                       help="where --preview-augmentation writes its grid (default: %(default)s)")


def preview_settings(settings):
    """(count, path) asked for by --preview-augmentation / --preview-out, or None; checked."""
    if settings.preview_augmentation == 0:
        return None
    _require(settings.preview_augmentation > 0, "--preview-augmentation %d: give a number of samples, such as 16."
             % settings.preview_augmentation)
    _require(settings.preview_out.lower().endswith(".png"), "--preview-out %s: the preview is a PNG image; "
             "give a name ending in .png." % settings.preview_out)
    return settings.preview_augmentation, settings.preview_out

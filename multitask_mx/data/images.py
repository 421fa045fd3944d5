"""Decoding images with OpenCV, geometry helpers, normalisation and the eval transform.

Everything here works on numpy arrays so that it runs in the loader's worker
processes, away from the MXNet engine.
"""
import errno
import logging
import math
import os
import stat
from typing import Optional

import cv2
import numpy as np

from ..errors import UserInputError, shorten
from .image_headers import bytes_reader, size_problem

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
_WHOLE_FILE = 16384  # files up to this size are checked with one read

# (format, signature at the file's start, extra (offset, bytes) or None, file extension to probe with):
# OpenCV's own signatures (imgcodecs' grfmt_*.cpp). Which of them this cv2 build decodes is
# found out at run time (readable_formats): GIF, for one, is not decoded before OpenCV 4.11.
_SIGNATURES = (
    ("JPEG", b"\xff\xd8", None, ".jpg"), ("PNG", b"\x89PNG\r\n\x1a\n", None, ".png"), ("BMP", b"BM", None, ".bmp"),
    ("TIFF", b"II*\x00", None, ".tiff"), ("TIFF", b"MM\x00*", None, ".tiff"), ("WebP", b"RIFF", (8, b"WEBP"), ".webp"),
    ("GIF", b"GIF87a", None, None), ("GIF", b"GIF89a", None, None),
    ("JPEG 2000", b"\x00\x00\x00\x0cjP  \r\n\x87\n", None, ".jp2"), ("JPEG 2000", b"\xff\x4f\xff\x51", None, None),
    ("PNM", b"P5", None, ".pgm"), ("PNM", b"P6", None, ".ppm"), ("PNM", b"P1", None, None), ("PNM", b"P2", None, None),
    ("PNM", b"P3", None, None), ("PNM", b"P4", None, None), ("PFM", b"PF", None, ".pfm"), ("PFM", b"Pf", None, None),
    ("Sun raster", b"\x59\xa6\x6a\x95", None, ".ras"), ("Radiance HDR", b"#?RADIANCE\n", None, ".hdr"),
    ("OpenEXR", b"\x76\x2f\x31\x01", None, ".exr"),
)
# The smallest GIF (1x1, one colour): OpenCV has no GIF encoder to make a sample with.
_GIF_SAMPLE = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
               b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
_READABLE = {}  # format -> whether this cv2 decodes it (filled once per process)
_READABLE_SET = []  # [the readable formats as a frozenset], once known


def sniff_format(head: bytes) -> Optional[str]:
    """The image format named by a file's first bytes (16 are enough), or None."""
    for name, magic, extra, _ in _SIGNATURES:
        if head.startswith(magic) and (extra is None or head[extra[0]:extra[0] + len(extra[1])] == extra[1]):
            return name
    return None


def _sample(extension):
    """A small image in ``extension``'s format made by cv2 (None where it cannot write one)."""
    img = np.full((64, 64, 1 if extension == ".pgm" else 3), 120, np.uint8)  # JPEG 2000 needs 64x64
    if extension in (".pfm", ".hdr", ".exr"):
        img = img.astype(np.float32) / 255.0
    if extension == ".exr" and not os.environ.get("OPENCV_IO_ENABLE_OPENEXR"):
        return None  # disabled in opencv-python: cv2 would only print a warning about it
    try:
        ok, buf = cv2.imencode(extension, img)
    except cv2.error:
        return None
    return buf.tobytes() if ok else None


def readable_formats():
    """The formats of _SIGNATURES that this cv2 decodes: a sample of each is decoded once per process."""
    if not _READABLE_SET:
        for name, magic, _, extension in _SIGNATURES:
            if not _READABLE.get(name):
                sample = _GIF_SAMPLE if name == "GIF" else _sample(extension) if extension else None
                _READABLE[name] = bool(sample) and sample.startswith(magic) and decode_image_bytes(sample) is not None
        _READABLE_SET.append(frozenset(name for name, readable in _READABLE.items() if readable))
    return _READABLE_SET[0]


def _open_for_check(path):
    """(file descriptor, None), or (None, reason); never blocks on a FIFO."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, "does not exist"
        return None, "cannot be read (%s)" % (exc.strerror or exc)


def _pread(fd, count, offset):
    if hasattr(os, "pread"):
        return os.pread(fd, count, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, count)


def _opened_file_problem(fd, folder_reason):
    """The checks of check_image_file on an open file: one stat and one or two reads."""
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        return folder_reason
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    size = info.st_size
    if size == 0:
        return "is empty (0 bytes)"
    if size <= _WHOLE_FILE:  # one read for small files
        data = _pread(fd, size, 0)
        return image_bytes_problem(data[:16], data[-32:], lambda: data) or size_problem(bytes_reader(data))
    return (image_bytes_problem(_pread(fd, 16, 0), _pread(fd, 32, size - 32), lambda: _pread(fd, size, 0))
            or size_problem(lambda offset, count: _pread(fd, count, offset)))


def _file_problem(path, missing_reason, folder_reason):
    fd, reason = _open_for_check(path)
    if fd is None:
        return missing_reason if reason == "does not exist" and missing_reason else reason
    try:
        return _opened_file_problem(fd, folder_reason)
    except OSError as exc:
        return "cannot be read (%s)" % (exc.strerror or exc)
    finally:
        os.close(fd)


def check_image_file(path):
    """Cheap check without decoding: readable, a format this OpenCV decodes, not truncated.

    Returns None when the file looks fine, else a short reason.
    """
    return _file_problem(path, "cannot be read (No such file or directory)", "cannot be read (Is a directory)")


def image_file_problem(path):
    """None if ``path`` looks like a complete image (no decoding), else a short reason."""
    return _file_problem(path, None, "is a folder, not an image")


def read_checked_image(path, decode_size=None):
    """(HxWx3 uint8 RGB, None), or (None, reason) for a file that cannot be used.

    Decodes first (the common case costs one decode), and asks the cheap checks
    why only when that fails, or whether a decoded JPEG/PNG was truncated:
    OpenCV decodes those with a grey lower part.
    """
    try:
        img = decode_image(path, decode_size)
    except UserInputError:
        return None, image_file_problem(path) or "cannot be decoded by OpenCV"
    problem = check_image_file(path)
    if problem and "truncated" in problem:
        return None, problem
    return img, None


def image_bytes_problem(head, tail, read_all):
    """None if an image's first and last bytes look complete, else a short reason.

    A truncated JPEG still decodes in OpenCV (grey lower half, a warning on stderr),
    so the end-of-image marker is looked for instead. ``read_all()`` gives all the
    bytes; it is only called for a JPEG whose end holds something else: phone
    "motion photos" append a video (an MP4 'ftyp' box) after a complete image.
    """
    kind = sniff_format(head)
    if kind is None:
        return "is not an image OpenCV reads (unknown format)"
    if kind not in readable_formats():
        return ("is a %s image, which this OpenCV (%s) cannot decode; convert it to PNG or JPEG"
                % (kind, cv2.__version__))
    if kind == "JPEG" and b"\xff\xd9" not in tail:
        data = read_all()
        end = data.rfind(b"\xff\xd9")
        if end <= 0 or b"ftyp" not in data[end:end + 64]:
            return "is a truncated JPEG (no end-of-image marker)"
    if kind == "PNG" and b"IEND" not in tail:
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
        raise UserInputError("image %s cannot be read: %s" % (shorten(path), exc.strerror or exc))
    try:
        img = decode_image_bytes(data, min_short_side)
    except ImageTooLarge as exc:
        raise ImageTooLarge("image %s %s. Remove it from the list or pass --skip-bad-images." % (shorten(path), exc))
    if img is None:
        raise UserInputError("image %s cannot be decoded by OpenCV (empty, corrupt or not an image). "
                             "Remove it from the list or pass --skip-bad-images." % shorten(path))
    return img


class ImageTooLarge(UserInputError):
    """An image whose header declares more pixels than --max-image-pixels allows."""


def decode_image_bytes(data, min_short_side=None):
    """Decode in-memory image bytes (e.g. an upload) as ``decode_image`` does; None if not an image.

    Raises ImageTooLarge, before decoding, for an image that declares more pixels than the limit.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if not buf.size:
        return None
    problem = size_problem(bytes_reader(buf))
    if problem:
        raise ImageTooLarge(problem)
    try:
        img = cv2.imdecode(buf, _reduction_flag(buf, min_short_side))
    except cv2.error:  # OpenCV's own limit (CV_IO_MAX_IMAGE_PIXELS) for a format not parsed in image_headers
        return None
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

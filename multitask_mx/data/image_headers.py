"""An image's declared size from its header (no decoding), and the one limit on it: ``--max-image-pixels``.

A small file can declare a huge image (a "decompression bomb": a 3.5 MB PNG that says
60000 x 60000). OpenCV refuses those above its own CV_IO_MAX_IMAGE_PIXELS by raising
``cv2.error``, and decodes anything below it, however much memory that takes. So every
reader (the list checks, the loader, predict, evaluate, serve, the Python API) asks
``size_problem`` first, with one limit for all of them. No mxnet, no cv2 here.
"""
import struct

# serve's limit since its first version (150 MB of RGB once decoded); a larger photo is refused with
# this flag's name, so that whoever trains on 100-megapixel images raises it knowingly
DEFAULT_MAX_PIXELS = 50_000_000
_LIMIT = [DEFAULT_MAX_PIXELS]  # this process's limit; forked loader workers inherit it
FLAG = "--max-image-pixels"


def set_max_pixels(pixels):
    """Set this process's limit (the commands call it with their flag's value)."""
    _LIMIT[0] = int(pixels)


def max_pixels():
    """The limit in force in this process."""
    return _LIMIT[0]


def _pixel_count(text):
    import argparse
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError("%r: give a number of pixels, 1 or more (e.g. 150e6)" % text[:40])
    return int(value)


def add_max_pixels_flag(group):
    """``--max-image-pixels N``, declared once for train, predict, evaluate and serve."""
    group.add_argument(FLAG, type=_pixel_count, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help="refuse an image whose header declares more than N pixels (width x height; e.g. "
                            "150e6) before decoding it: a small file can declare a huge image. In train, "
                            "--skip-bad-images leaves such images out; predict gives an error row; serve "
                            "answers 413")


def _png(read):
    head = read(12, 12)
    if len(head) == 12 and head[:4] == b"IHDR":
        return struct.unpack(">II", head[4:12])
    return None


def _gif(read):
    head = read(6, 4)
    return struct.unpack("<HH", head) if len(head) == 4 else None


def _bmp(read):
    head = read(14, 12)
    if len(head) < 12:
        return None
    if struct.unpack("<I", head[:4])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", head[4:8])
    width, height = struct.unpack("<ii", head[4:12])
    return abs(width), abs(height)


def _webp(read):
    chunk = read(12, 18)
    if len(chunk) < 18:
        return None
    kind, body = chunk[:4], chunk[8:]
    if kind == b"VP8 ":
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L":
        bits = struct.unpack("<I", body[1:5])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        return int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(read, max_markers=64):
    """The SOF marker's size; one small read per segment before it (EXIF, ICC profiles, ...)."""
    offset = 2
    for _ in range(max_markers):
        head = read(offset, 9)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _SOF:
            return (struct.unpack(">HH", head[5:9])[::-1]) if len(head) == 9 else None
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            offset += 2
            continue
        offset += 2 + struct.unpack(">H", head[2:4])[0]
    return None


def _pnm(read):
    words, text = [], read(2, 64)
    for line in text.split(b"\n"):
        words += line.split(b"#")[0].split()
        if len(words) >= 2:
            try:
                return int(words[0]), int(words[1])
            except ValueError:
                return None
    return None


_READERS = ((b"\x89PNG\r\n\x1a\n", _png), (b"GIF8", _gif), (b"BM", _bmp), (b"RIFF", _webp), (b"\xff\xd8", _jpeg),
            (b"P1", _pnm), (b"P2", _pnm), (b"P3", _pnm), (b"P4", _pnm), (b"P5", _pnm), (b"P6", _pnm))


def declared_size(read):
    """(width, height) an image's header declares, or None where the format is not parsed here.

    ``read(offset, count)`` returns the bytes at ``offset`` (fewer at the end). Formats
    not parsed here (TIFF, JPEG 2000, ...) are left to OpenCV's own limit, whose error
    the decoders catch.
    """
    head = read(0, 8)
    for magic, reader in _READERS:
        if head.startswith(magic):
            try:
                return reader(read)
            except (struct.error, ValueError):
                return None
    return None


def bytes_reader(data):
    """``read(offset, count)`` over bytes in memory (or a numpy uint8 array: only the slices read are copied)."""
    return lambda offset, count: bytes(data[offset:offset + count])


def size_problem(read, limit=None):
    """None, or a reason such as 'declares 60000 x 60000 pixels (3600 megapixels), over --max-image-pixels ...'."""
    limit = max_pixels() if limit is None else limit
    size = declared_size(read)
    if size is None or size[0] * size[1] <= limit:
        return None
    return ("declares %d x %d pixels (%.0f megapixels), over the %s limit of %d (a decompression bomb, "
            "or raise the limit)" % (size[0], size[1], size[0] * size[1] / 1e6, FLAG, limit))

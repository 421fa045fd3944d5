"""Uploads to ``multitask-mx serve``: refused without decoding when empty, unknown, truncated or too large,
else decoded in memory exactly as ``predict`` decodes files. Errors are ``BadUpload`` (an HTTP status and a
message for the client).
"""
import io

from PIL import Image

from ..data.images import decode_image_bytes, image_bytes_problem


class BadUpload(Exception):
    """An upload the server refuses: an HTTP status (4xx) and a message for the client."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status



def header_size(data):
    """(width, height) read from an image's header by Pillow, which decodes no pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Image.DecompressionBombError:
        return None  # more than Pillow's own limit (179 megapixels): absurd here too
    except Exception:  # noqa: BLE001  (any parse error of untrusted bytes means "not readable")
        raise BadUpload(400, "the image header cannot be read: the file is corrupt or not an image")


def check_upload(data, max_pixels):
    """Refuse, without decoding, empty, unknown, truncated or too large images (BadUpload)."""
    if not data:
        raise BadUpload(400, "the upload is empty (0 bytes)")
    problem = image_bytes_problem(data[:16], data[-32:], lambda: data)
    if problem and "unknown format" in problem:
        raise BadUpload(415, "not an image: the bytes are not JPEG, PNG, BMP, TIFF or WebP")
    if problem:
        raise BadUpload(400, "the upload %s" % problem)
    size = header_size(data)
    if size is None or size[0] * size[1] > max_pixels:
        described = "%d x %d pixels" % size if size else "more than 179 megapixels"
        raise BadUpload(413, "the image is %s; this server accepts at most %.0f megapixels "
                        "(--max-image-pixels)" % (described, max_pixels / 1e6))


def decode_upload(data, min_short_side, max_pixels):
    """Checked upload bytes -> HxWx3 uint8 RGB, decoded in memory exactly as ``predict`` decodes files."""
    check_upload(data, max_pixels)
    img = decode_image_bytes(data, min_short_side)  # its own pixel check agrees with check_upload's (same limit)
    if img is None:
        raise BadUpload(400, "the image cannot be decoded (corrupt, or a variant OpenCV does not read)")
    return img

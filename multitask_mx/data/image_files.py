"""Finding image files on disk by extension (no decoding, no mxnet: make-list's --help stays fast)."""
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def find_image_files(folder, extensions=IMAGE_EXTENSIONS, recursive=True):
    """Image files under ``folder`` (by extension, case-insensitive), sorted; hidden entries skipped."""
    extensions = tuple(e.lower() for e in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in filenames
                  if not f.startswith(".") and f.lower().endswith(extensions)]
        if not recursive:
            break
    return sorted(found)


CHECK_IMAGES = ("header", "full", "none")


def add_check_images_flag(group, default, what):
    """``--check-images header|full|none``, declared once for train and make-list.

    ``what`` says what happens to a bad image in that command. A bare
    ``--check-images`` means ``full`` (make-list's original on/off flag decoded every image).
    """
    group.add_argument("--check-images", choices=CHECK_IMAGES, default=default, nargs="?", const="full",
                       help="check every image before use: header (file header/trailer, no decoding), full "
                            "(decode every image; a bare --check-images means full) or none; %s" % what)

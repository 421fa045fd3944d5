"""images: decoding real files written with OpenCV, the file checks and the transform presets."""
import os

import cv2
import numpy as np
import pytest

from multitask_mx.errors import UserInputError
from multitask_mx.data.augment import AugmentConfig, TrainTransform
from multitask_mx.data.images import (IMAGENET_MEAN, IMAGENET_STD, EvalTransform, check_image_file, decode_image,
    decode_image_bytes, jpeg_size, parse_image_shape)


def write_image(path, img, params=()):
    """Write ``img`` (BGR/BGRA/gray, as cv2 expects) and return the path as a string."""
    assert cv2.imwrite(str(path), img, list(params))
    return str(path)


def noise(h, w, seed=0):
    """A smooth random BGR image (compresses like a photo, not like pure noise)."""
    small = np.random.RandomState(seed).randint(0, 256, (max(1, h // 10), max(1, w // 10), 3), np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def truncate(path, keep=0.5):
    """Cut a file to ``keep`` of its length (a half-copied download)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:int(len(data) * keep)])
    return path


# ---- decoding ---------------------------------------------------------------------------------

def test_decode_colour_order_is_rgb(tmp_path):
    red = np.zeros((12, 20, 3), np.uint8)
    red[..., 2] = 255  # BGR: red is the last channel for OpenCV
    for ext in ("png", "bmp"):
        img = decode_image(write_image(tmp_path / ("red." + ext), red))
        assert img.shape == (12, 20, 3) and img.dtype == np.uint8
        assert img[..., 0].min() == 255 and img[..., 1:].max() == 0
    img = decode_image(write_image(tmp_path / "red.jpg", red, [cv2.IMWRITE_JPEG_QUALITY, 100]))
    assert img[..., 0].mean() > 245 and img[..., 1:].mean() < 10


def test_decode_grayscale(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (7, 1))
    img = decode_image(write_image(tmp_path / "gray.png", gray))
    assert img.shape == (7, 25, 3) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)


def test_decode_16bit_png(tmp_path):
    gray16 = (np.arange(6 * 9, dtype=np.uint16).reshape(6, 9) * 1200)
    img = decode_image(write_image(tmp_path / "gray16.png", gray16))
    assert img.shape == (6, 9, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 1], (gray16 >> 8).astype(np.uint8))

    colour16 = np.zeros((5, 4, 3), np.uint16)
    colour16[..., 0] = 65535  # blue in BGR
    colour16[..., 1] = 32768
    img = decode_image(write_image(tmp_path / "colour16.png", colour16))
    assert img.dtype == np.uint8
    assert tuple(img[0, 0]) == (0, 128, 255)


def test_decode_bgra_png_drops_alpha(tmp_path):
    bgra = np.zeros((8, 6, 4), np.uint8)
    bgra[..., 1] = 200  # green
    bgra[..., 3] = 40   # mostly transparent
    img = decode_image(write_image(tmp_path / "alpha.png", bgra))
    assert img.shape == (8, 6, 3) and img.dtype == np.uint8
    assert tuple(img[3, 3]) == (0, 200, 0)


def test_reduced_size_jpeg_decoding(tmp_path):
    path = write_image(tmp_path / "big.jpg", noise(1200, 1600))
    with open(path, "rb") as f:
        assert jpeg_size(f.read()) == (1200, 1600)
    assert jpeg_size(np.fromfile(path, np.uint8)) == (1200, 1600)
    full = decode_image(path)
    assert full.shape == (1200, 1600, 3)
    reduced = decode_image(path, min_short_side=256)
    assert 256 <= min(reduced.shape[:2]) < 1200
    assert reduced.shape[1] * 3 == reduced.shape[0] * 4  # aspect kept
    # colours survive the reduced decode
    small = cv2.resize(full, reduced.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reduced.astype(int)).mean() < 6
    # no reduction possible: full size
    assert decode_image(path, min_short_side=1000).shape == (1200, 1600, 3)


def test_reduced_decode_leaves_small_and_non_jpeg_alone(tmp_path):
    png = write_image(tmp_path / "big.png", noise(600, 800))
    assert decode_image(png, min_short_side=64).shape == (600, 800, 3)
    jpg = write_image(tmp_path / "small.jpg", noise(40, 30))
    assert decode_image(jpg, min_short_side=256).shape == (40, 30, 3)


def test_jpeg_size_progressive_and_embedded_thumbnail(tmp_path):
    path = write_image(tmp_path / "prog.jpg", noise(90, 130), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    with open(path, "rb") as f:
        data = f.read()
    assert jpeg_size(data) == (90, 130)
    # An APP1 (EXIF-like) segment holding a thumbnail's SOF must be skipped, not read.
    fake_sof = b"\xff\xc0\x00\x11\x08\x00\x10\x00\x20\x03" + b"\x00" * 9
    app1 = b"\xff\xe1" + (2 + len(fake_sof)).to_bytes(2, "big") + fake_sof
    assert jpeg_size(data[:2] + app1 + data[2:]) == (90, 130)
    assert jpeg_size(b"\xff\xd8\xff\xe0\x00\x10") == (0, 0)


def test_decode_corrupt_file_names_it(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8" + np.random.RandomState(0).bytes(500))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    for path in (garbage, empty, text):
        with pytest.raises(UserInputError, match="cannot be decoded") as info:
            decode_image(str(path), min_short_side=64)
        assert str(path) in str(info.value)
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(UserInputError, match="cannot be read") as info:
        decode_image(missing)
    assert missing in str(info.value)


def test_decode_image_bytes(tmp_path):
    ok, buf = cv2.imencode(".png", np.full((4, 5, 3), (0, 0, 255), np.uint8))
    img = decode_image_bytes(buf.tobytes())
    assert img.shape == (4, 5, 3) and tuple(img[0, 0]) == (255, 0, 0)
    assert decode_image_bytes(b"hello") is None
    ok, jpg = cv2.imencode(".jpg", noise(1200, 1600))
    assert decode_image_bytes(jpg.tobytes()).shape == (1200, 1600, 3)
    reduced = decode_image_bytes(jpg.tobytes(), min_short_side=256)  # the same reduced decode as files
    assert 256 <= min(reduced.shape[:2]) < 1200


# ---- cheap file checks --------------------------------------------------------------------------

def test_check_image_file_passes_good_files(tmp_path):
    img = noise(40, 50)
    for ext in ("jpg", "png", "bmp"):
        assert check_image_file(write_image(tmp_path / ("good." + ext), img)) is None
    assert check_image_file(write_image(tmp_path / "prog.jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])) is None


def test_check_image_file_flags_bad_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert "empty" in check_image_file(str(empty))
    text = tmp_path / "text.jpg"
    text.write_text("hello, I am not a picture")
    assert "unknown format" in check_image_file(str(text))
    jpg = truncate(write_image(tmp_path / "cut.jpg", noise(120, 160)))
    assert "truncated JPEG" in check_image_file(jpg)
    png = truncate(write_image(tmp_path / "cut.png", noise(120, 160)))
    assert "truncated PNG" in check_image_file(png)
    assert "cannot be read" in check_image_file(str(tmp_path / "missing.jpg"))
    assert "cannot be read" in check_image_file(str(tmp_path))


def test_truncated_jpeg_still_decodes_which_is_why_the_check_exists(tmp_path):
    jpg = truncate(write_image(tmp_path / "cut.jpg", noise(120, 160)))
    assert decode_image(jpg).shape == (120, 160, 3)
    png = truncate(write_image(tmp_path / "cut.png", noise(120, 160)))
    with pytest.raises(UserInputError, match="cut.png"):
        decode_image(png)


# ---- transform presets ----------------------------------------------------------------------------

def test_train_transform_shape_and_randomness():
    img = cv2.cvtColor(noise(90, 120, seed=3), cv2.COLOR_BGR2RGB)
    transform = TrainTransform((32, 48))
    transform.reseed(0)
    outputs = [transform(img) for _ in range(4)]
    for out in outputs:
        assert out.shape == (3, 32, 48) and out.dtype == np.float32
        assert out.flags["C_CONTIGUOUS"]
    assert not all(np.array_equal(outputs[0], o) for o in outputs[1:])
    # reseeding replays the same stream
    transform.reseed(0)
    np.testing.assert_array_equal(transform(img), outputs[0])


def test_train_transform_crops_differ_without_jitter():
    img = cv2.cvtColor(noise(80, 80, seed=4), cv2.COLOR_BGR2RGB)
    augment = AugmentConfig(hflip=False, brightness=0, contrast=0, saturation=0)
    transform = TrainTransform((16, 16), "raw", augment)
    crops = {transform(img).tobytes() for _ in range(6)}
    assert len(crops) > 1


def test_train_transform_hflip():
    img = cv2.cvtColor(noise(24, 24, seed=5), cv2.COLOR_BGR2RGB)
    augment = AugmentConfig(hflip=True, brightness=0, contrast=0, saturation=0, random_crop=False)
    transform = TrainTransform((24, 24), "raw", augment)
    plain = img.transpose(2, 0, 1).astype(np.float32)
    mirrored = plain[:, :, ::-1]
    seen = set()
    for _ in range(30):
        out = transform(img)
        if np.array_equal(out, plain):
            seen.add("plain")
        elif np.array_equal(out, mirrored):
            seen.add("mirrored")
        else:
            pytest.fail("output is neither the image nor its mirror")
    assert seen == {"plain", "mirrored"}
    no_flip = TrainTransform((24, 24), "raw", AugmentConfig(hflip=False, brightness=0, contrast=0,
                                                             saturation=0, random_crop=False))
    for _ in range(5):
        np.testing.assert_array_equal(no_flip(img), plain)


def test_normalisation_maths():
    img = np.empty((8, 8, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 128, 250
    augment = AugmentConfig(hflip=False, brightness=0, contrast=0, saturation=0, random_crop=False)
    raw = TrainTransform((8, 8), "raw", augment)(img)
    np.testing.assert_array_equal(raw[:, 0, 0], [10.0, 128.0, 250.0])  # 0-255 kept
    imagenet = TrainTransform((8, 8), "imagenet", augment)(img)
    expected = [(v / 255.0 - m) / s for v, m, s in zip((10, 128, 250), IMAGENET_MEAN, IMAGENET_STD)]
    np.testing.assert_allclose(imagenet[:, 3, 3], expected, rtol=1e-5)
    np.testing.assert_allclose(EvalTransform((8, 8))(img)[:, 0, 0], expected, rtol=1e-5)
    np.testing.assert_array_equal(EvalTransform((8, 8), "raw")(img)[:, 0, 0], [10.0, 128.0, 250.0])


def test_eval_transform_is_deterministic_centre_crop():
    # A white square in the middle of black; the centre crop keeps it centred and symmetric.
    img = np.zeros((64, 96, 3), np.uint8)
    img[16:48, 32:64] = 255
    transform = EvalTransform((28, 28), "raw")
    assert transform.decode_size == 32
    out = transform(img)
    assert out.shape == (3, 28, 28) and out.dtype == np.float32
    np.testing.assert_array_equal(out, transform(img))
    # resized to 32x48, crop rows 2..30, columns 10..38: the square spans rows 6..22, columns 6..22 of the crop
    mask = out[0] > 127
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 21, 6, 21)
    np.testing.assert_array_equal(transform.flipped(img), out[:, :, ::-1])


def test_eval_transform_on_tall_image_crops_the_middle():
    img = np.zeros((300, 100, 3), np.uint8)
    img[:100] = (255, 0, 0)    # top third red
    img[100:200] = (0, 255, 0)  # middle third green
    img[200:] = (0, 0, 255)
    out = EvalTransform((56, 56), "raw")(img)  # resize to 64x192, crop 56x56 from the middle
    assert out.shape == (3, 56, 56)
    assert out[1].min() == 255 and out[0].max() == 0 and out[2].max() == 0


@pytest.mark.parametrize("text, shape", [("3,224,224", (3, 224, 224)), ("3, 32, 48", (3, 32, 48))])
def test_parse_image_shape(text, shape):
    assert parse_image_shape(text) == shape


@pytest.mark.parametrize("text", ["224,224", "1,224,224", "3,224", "3,a,224", "3,0,224", "3,224,224,1", ""])
def test_parse_image_shape_bad(text):
    with pytest.raises(UserInputError, match="--image-shape"):
        parse_image_shape(text)


def test_motion_photo_with_video_after_the_jpeg_is_not_truncated(tmp_path):
    import cv2
    import numpy as np
    from multitask_mx.data.images import check_image_file
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    path = tmp_path / "motion.jpg"
    path.write_bytes(buf.tobytes() + b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    assert check_image_file(str(path)) is None
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.tobytes()[: len(buf) // 2])
    assert "truncated" in check_image_file(str(cut))


# ---- which formats the check accepts: exactly those this OpenCV decodes ----------------------------

def write_gif(path):
    """A real GIF written by Pillow (OpenCV cannot write one)."""
    from PIL import Image
    Image.fromarray(noise(20, 30)[:, :, ::-1]).save(str(path), format="GIF")
    return str(path)


def test_gif_is_accepted_only_if_opencv_decodes_it(tmp_path):
    from multitask_mx.data.images import image_file_problem, read_checked_image, readable_formats
    path = write_gif(tmp_path / "anim.gif")
    decodes = cv2.imread(path) is not None
    assert ("GIF" in readable_formats()) == decodes
    if decodes:
        assert check_image_file(path) is None
    else:  # OpenCV before 4.11
        problem = image_file_problem(path)
        assert "GIF" in problem and "cannot decode" in problem and "PNG or JPEG" in problem
        assert check_image_file(path) == problem
        assert read_checked_image(path) == (None, problem)


@pytest.mark.parametrize("ext", ["ppm", "pgm", "ras", "tiff", "webp", "hdr", "pfm"])
def test_other_formats_opencv_decodes_pass_the_check(tmp_path, ext):
    from multitask_mx.data.images import readable_formats, sniff_format
    img = noise(24, 32)
    if ext == "pgm":
        img = img[:, :, 0]
    elif ext in ("hdr", "pfm"):
        img = img.astype(np.float32) / 255.0
    path = write_image(tmp_path / ("x." + ext), img)
    with open(path, "rb") as f:
        kind = sniff_format(f.read(16))
    assert kind in readable_formats() and cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) is not None
    assert check_image_file(path) is None
    assert decode_image(path).shape == (24, 32, 3)


def test_files_that_are_not_images_the_check_refuses(tmp_path):
    from multitask_mx.data.images import image_file_problem
    riff = tmp_path / "sound.webp"  # RIFF, but a WAV, not a WebP
    riff.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 64)
    assert "unknown format" in image_file_problem(str(riff))
    fifo = str(tmp_path / "pipe.jpg")
    os.mkfifo(fifo)
    assert image_file_problem(fifo) == "is not a regular file"  # and it did not wait for a writer
    assert image_file_problem(str(tmp_path)) == "is a folder, not an image"
    assert image_file_problem(str(riff / "x.jpg")) == "does not exist"  # a file as a folder
    big = write_image(tmp_path / "big.jpg", noise(600, 800), [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert os.path.getsize(big) > 16384 and check_image_file(big) is None  # head and tail read apart
    assert "truncated JPEG" in check_image_file(truncate(big, 0.9))

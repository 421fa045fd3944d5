"""data: the dataset, the loader, the image checks and the preflight report on tiny real images."""
import json
import logging
import os

import cv2
import numpy as np
import pytest

from multitask_mx.data.datasets import (BAD_SAMPLE, LstDataset, check_images_or_skip, find_bad_images, make_loader,
    preflight_report)
from multitask_mx.errors import UserInputError
from multitask_mx.data.augment import TrainTransform
from multitask_mx.data.images import EvalTransform
from multitask_mx.data.lists import read_list
from multitask_mx.data.tasks import build_tasks

from conftest import make_images, run_cli, write_list


def cut_in_half(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


@pytest.fixture
def train_list(tiny_data):
    return read_list(tiny_data["train"], tiny_data["root"])


# ---- dataset ----------------------------------------------------------------------------------

def test_dataset_items(train_list):
    tasks = build_tasks([4], derived=["x=label in {2,3}"])
    dataset = LstDataset(train_list, tasks, EvalTransform((24, 24)))
    assert len(dataset) == 24
    for idx in (0, 7, 23):
        data, labels, position = dataset[idx]
        label = train_list.entries[idx].labels[0]
        assert data.shape == (3, 24, 24) and data.dtype == np.float32
        assert labels.dtype == np.int32 and labels.tolist() == [label, int(label in (2, 3))]
        assert position == idx and position.dtype == np.int32
    assert [dataset[i][1][0] for i in range(0, 24, 6)] == [0, 1, 2, 3]


def test_dataset_with_train_transform_and_missing_labels(tmp_path):
    root = tmp_path / "images"
    items = make_images(str(root), 1, size=40, classes=2)
    path = write_list(tmp_path / "a.lst", [(items[0][0], -1), (items[1][0], 1)])
    dataset = LstDataset(read_list(path, str(root)), build_tasks([2]), TrainTransform((16, 16)))
    data, labels, _ = dataset[0]
    assert data.shape == (3, 16, 16) and data.dtype == np.float32
    assert labels.tolist() == [-1, -1]
    assert dataset[1][1].tolist() == [1, 1]


def _seeded_epochs(train_list, seed, workers, epochs=2):
    """Every batch (images, positions) of ``epochs`` epochs of a shuffled, augmented loader built after np seed 0."""
    from multitask_mx.data.augment import AugmentConfig
    np.random.seed(0)  # the order: train seeds numpy's global generator with --seed
    dataset = LstDataset(train_list, build_tasks([4]), TrainTransform((16, 16), "raw", AugmentConfig(pad_crop=0.25)))
    loader = make_loader(dataset, 8, True, workers, last_batch="rollover", seed=seed)
    return [[(batch[0].asnumpy(), batch[2].asnumpy()) for batch in loader] for _ in range(epochs)]


def test_a_seed_repeats_the_augmentation_whichever_worker_decodes_an_image(train_list):
    first, again = _seeded_epochs(train_list, 7, 2), _seeded_epochs(train_list, 7, 1)
    for epoch_a, epoch_b in zip(first, again):
        assert len(epoch_a) == len(epoch_b) == 3
        for (images_a, positions_a), (images_b, positions_b) in zip(epoch_a, epoch_b):
            assert positions_a.tolist() == positions_b.tolist()
            assert np.array_equal(images_a, images_b)
    # a new epoch draws new crops for the same image; another seed other crops
    by_position = [{int(p): img for images, positions in epoch for p, img in zip(positions, images)} for epoch in first]
    assert any(not np.array_equal(by_position[0][p], by_position[1][p]) for p in by_position[0])
    other = _seeded_epochs(train_list, 8, 2, epochs=1)[0]
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first[0], other))


def test_unreadable_image_mid_epoch_names_image_and_line(tiny_data, train_list):
    bad = train_list.entries[4]
    with open(bad.path, "wb") as f:
        f.write(b"this is no longer a JPEG")
    dataset = LstDataset(train_list, build_tasks([4]), EvalTransform((16, 16)))
    assert dataset[3][0].shape == (3, 16, 16)
    with pytest.raises(UserInputError) as info:
        dataset[4]
    message = str(info.value)
    assert bad.path in message and "%s:5" % tiny_data["train"] in message
    assert "--skip-bad-images" in message
    os.remove(train_list.entries[5].path)
    with pytest.raises(UserInputError, match="%s:6" % tiny_data["train"]):
        dataset[5]


def test_skip_bad_returns_a_blank_bad_sample(train_list):
    os.remove(train_list.entries[2].path)
    dataset = LstDataset(train_list, build_tasks([4]), TrainTransform((16, 20)), skip_bad=True)
    data, labels, position = dataset[2]
    assert data.shape == (3, 16, 20) and data.dtype == np.float32 and not data.any()
    assert labels.tolist() == [BAD_SAMPLE, BAD_SAMPLE] and labels.dtype == np.int32
    assert position == 2
    assert dataset[3][1].tolist() == [0, 0]


# ---- image checks -------------------------------------------------------------------------------

def test_find_bad_images(train_list):
    assert find_bad_images(train_list) == {}
    os.remove(train_list.entries[1].path)
    cut_in_half(train_list.entries[6].path)
    with open(train_list.entries[9].path, "wb"):
        pass
    bad = find_bad_images(train_list, threads=2)
    assert bad == {2: "does not exist", 7: "is a truncated JPEG (no end-of-image marker)", 10: "is empty (0 bytes)"}


def test_find_bad_images_full_decode(train_list):
    path = train_list.entries[3].path
    with open(path, "r+b") as f:  # header and trailer intact, the middle destroyed
        data = bytearray(f.read())
        data[2:-2] = b"\x00" * (len(data) - 4)
        f.seek(0)
        f.write(data)
    assert find_bad_images(train_list) == {}
    assert find_bad_images(train_list, full_decode=True, threads=2) == {4: "cannot be decoded by OpenCV"}


def test_check_images_stops_with_lines_named(tiny_data, train_list):
    assert check_images_or_skip(train_list, skip_bad=False) is train_list
    missing = train_list.entries[0].path
    os.remove(missing)
    cut_in_half(train_list.entries[10].path)
    with pytest.raises(UserInputError) as info:
        check_images_or_skip(train_list, skip_bad=False)
    message = str(info.value)
    assert "2 bad image(s) in %s" % tiny_data["train"] in message
    assert "%s:1: image %s does not exist" % (tiny_data["train"], missing) in message
    assert "%s:11: image " % tiny_data["train"] in message and "truncated JPEG" in message
    assert "--skip-bad-images" in message


def test_check_images_skip_mode_drops_bad_lines(train_list, caplog):
    os.remove(train_list.entries[0].path)
    cut_in_half(train_list.entries[10].path)
    with caplog.at_level(logging.WARNING, logger="multitask_mx.data.datasets"):
        kept = check_images_or_skip(train_list, skip_bad=True, threads=2)
    assert len(kept) == 22 and len(train_list) == 24
    assert [e.line for e in kept.entries] == [n for n in range(2, 25) if n != 11]
    assert kept.source == train_list.source and kept.image_root == train_list.image_root
    assert "skipped 2 bad image(s) of 24" in caplog.text


def test_all_images_missing_mentions_image_root(tmp_path, tiny_data):
    wrong_root = tmp_path / "wrong"
    wrong_root.mkdir()
    image_list = read_list(tiny_data["train"], str(wrong_root))
    for skip in (False, True):
        with pytest.raises(UserInputError) as info:
            check_images_or_skip(image_list, skip_bad=skip)
        message = str(info.value)
        assert "none of the 24 images" in message and str(wrong_root) in message
        assert "--image-train" in message and "does not exist" in message


# ---- loader --------------------------------------------------------------------------------------

def start_opencv_threads():
    """Make OpenCV's thread pool run in this process, as a parent's own cv2 work does."""
    cv2.setNumThreads(2)
    cv2.resize(np.zeros((600, 800, 3), np.uint8), (400, 300))


def workers_loader(dataset, batch_size, shuffle=False):
    """make_loader with 2 workers; a hung worker fails the test in 20 s, not in 120 s per batch."""
    loader = make_loader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=2)
    loader._timeout = 20  # Gluon's per-batch wait; not exposed by make_loader
    return loader


def test_make_loader_with_workers(train_list):
    start_opencv_threads()  # used to deadlock every worker in cv2.setNumThreads(1)
    dataset = LstDataset(train_list, build_tasks([4]), TrainTransform((16, 16)))
    loader = workers_loader(dataset, batch_size=5, shuffle=True)
    assert cv2.getNumThreads() == 2  # the parent keeps its OpenCV threads
    shapes, positions = [], []
    for data, labels, position in loader:
        shapes.append((data.shape, labels.shape))
        assert data.dtype == np.float32 and labels.dtype == np.int32
        labels, position = labels.asnumpy(), position.asnumpy()
        np.testing.assert_array_equal(labels[:, 0], [dataset._labels[p][0] for p in position])
        np.testing.assert_array_equal(labels[:, 1], (labels[:, 0] > 0).astype(np.int32))
        positions.extend(position.tolist())
    assert shapes == [((5, 3, 16, 16), (5, 2))] * 4 + [((4, 3, 16, 16), (4, 2))]
    assert sorted(positions) == list(range(24))


def test_make_loader_in_process_keeps_order(train_list):
    dataset = LstDataset(train_list, build_tasks([4], derived=[]), EvalTransform((8, 8)))
    batches = list(make_loader(dataset, batch_size=10, shuffle=False, num_workers=0, last_batch="discard"))
    assert len(batches) == 2
    assert batches[0][2].asnumpy().tolist() == list(range(10))
    assert batches[1][1].shape == (10, 1)


# ---- preflight -------------------------------------------------------------------------------------

def test_preflight_report_histograms(tiny_data):
    train = read_list(tiny_data["train"])
    val = read_list(tiny_data["val"])
    report = preflight_report(build_tasks([4]), train, val)
    assert report["train"] == {"label": {"counts": [6, 6, 6, 6], "missing": 0},
                               "label_gt0": {"counts": [6, 18], "missing": 0}}
    assert report["val"]["label"] == {"counts": [2, 2, 2, 2], "missing": 0}
    assert report["overlap"] == []
    assert "val" not in preflight_report(build_tasks([4]), train)


def test_preflight_report_overlap_duplicates_and_empty_classes(tmp_path, tiny_data, caplog):
    root = tiny_data["root"]
    train = read_list(tiny_data["train"], root)
    rel = [os.path.relpath(e.path, root) for e in train.entries]
    val_path = write_list(tmp_path / "leaky_val.lst", [(rel[0], 0), (rel[7], 1), (rel[0], 0), (rel[20], -1)])
    val = read_list(val_path, root)
    with caplog.at_level(logging.INFO, logger="multitask_mx.data.datasets"):
        report = preflight_report(build_tasks([4]), train, val)
    assert report["overlap"] == sorted(os.path.realpath(os.path.join(root, rel[i])) for i in (0, 7, 20))
    assert report["val"]["label"] == {"counts": [2, 1, 0, 0], "missing": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("3 image(s) are in both the training and validation lists" in w for w in warnings)
    assert any(val_path in w and "lines [1, 3]" in w for w in warnings)
    assert not any("has no training images" in w for w in warnings)  # val's empty classes are fine


def test_preflight_warns_about_classes_without_training_images(tmp_path, tiny_data, caplog):
    root = tiny_data["root"]
    rows = [(os.path.relpath(e.path, root), e.labels[0]) for e in read_list(tiny_data["train"], root).entries
            if e.labels[0] != 2]
    train = read_list(write_list(tmp_path / "no2.lst", rows), root)
    with caplog.at_level(logging.WARNING, logger="multitask_mx.data.datasets"):
        report = preflight_report(build_tasks([4]), train)
    assert report["train"]["label"]["counts"] == [6, 6, 0, 6]
    assert "task label has no training images of class(es) [2]" in caplog.text


def test_bad_image_in_a_worker_reaches_the_caller(tiny_data, train_list):
    os.remove(train_list.entries[8].path)
    start_opencv_threads()
    dataset = LstDataset(train_list, build_tasks([4]), EvalTransform((8, 8)))
    with pytest.raises(UserInputError, match="%s:9" % tiny_data["train"]):
        for _ in workers_loader(dataset, batch_size=6):
            pass
    dataset = LstDataset(train_list, build_tasks([4]), EvalTransform((8, 8)), skip_bad=True)
    labels = np.concatenate([b[1].asnumpy() for b in workers_loader(dataset, batch_size=6)])
    assert labels.shape == (24, 2)
    assert (labels[8] == BAD_SAMPLE).all() and (labels[np.arange(24) != 8] >= 0).all()


# ---- many lines: summarised warnings, the check in worker processes ---------------------------------

def test_gif_is_refused_at_preflight_naming_file_and_line(tmp_path, tiny_data, train_list):
    from PIL import Image
    gif = os.path.join(tiny_data["root"], "anim.gif")
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(gif, format="GIF")
    if cv2.imread(gif) is not None:
        pytest.skip("this OpenCV (%s) decodes GIF, so the preflight accepts it" % cv2.__version__)
    with open(tiny_data["train"], "a") as f:
        f.write("99\t1.000000\tanim.gif\n")
    image_list = read_list(tiny_data["train"], tiny_data["root"])
    with pytest.raises(UserInputError) as info:
        check_images_or_skip(image_list, skip_bad=False)
    message = str(info.value)
    assert "%s:25: image %s is a GIF image" % (tiny_data["train"], gif) in message
    assert "cannot decode" in message and "--skip-bad-images" in message


def test_the_check_in_worker_processes_finds_what_one_process_finds(train_list):
    from multitask_mx.data.image_checks import bad_positions
    os.remove(train_list.entries[3].path)
    cut_in_half(train_list.entries[17].path)
    serial = bad_positions(train_list, workers=1)
    assert sorted(serial) == [3, 17]
    assert bad_positions(train_list, workers=2, processes_from=0) == serial
    assert bad_positions(train_list, full_decode=True, workers=2)[3] == "does not exist"


def test_a_100k_line_list_gets_one_short_warning_per_kind(tmp_path, tiny_data, caplog):
    # 100,000 lines: 80,000 over the 24 images (every path on thousands of lines) and, skipped
    # with --skip-bad-images, 20,000 missing images. The log stays a few short lines.
    root = tiny_data["root"]
    rel = [os.path.relpath(e.path, root) for e in read_list(tiny_data["train"], root).entries]
    good, missing = 80000, 20000
    with open(tmp_path / "big.lst", "w") as f:
        f.writelines("%d\t%d\t%s\n" % (i, i % 4, rel[i % 24]) for i in range(good))
        f.writelines("%d\t%d\tmissing/%d.jpg\n" % (i, i % 4, i) for i in range(good, good + missing))
    image_list = read_list(str(tmp_path / "big.lst"), root)
    with caplog.at_level(logging.INFO, logger="multitask_mx.data.datasets"):
        kept = check_images_or_skip(image_list, skip_bad=True, threads=2)
        preflight_report(build_tasks([4]), kept)
    assert len(kept) == good and kept.skipped == missing
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) <= 12 and len(caplog.text) < 8000
    assert "skipped %d bad image(s) of %d" % (missing, good + missing) in caplog.text
    duplicate = [w for w in warnings if "more than one line" in w]
    assert len(duplicate) == 1 and "lists 24 image(s) on more than one line (%d lines in all)" % good in duplicate[0]
    assert "on lines [1, 25, 49, 73, 97, ... and %d more]" % (good // 24 - 5 + 1) in duplicate[0]


@pytest.mark.slow
def test_images_skipped_at_preflight_are_counted_in_history(tiny_data, tmp_path):
    from PIL import Image
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(os.path.join(tiny_data["root"], "a.gif"))
    with open(tiny_data["train"], "a") as f:
        f.write("98\t1.000000\tnot_there.jpg\n99\t2.000000\ta.gif\n")
    save = str(tmp_path / "save")
    run_cli("train", "--data-train", tiny_data["train"], "--image-train", tiny_data["root"], "--num-classes", "4",
            "--save-result", save, "--network", "mobilenet0.25", "--image-shape", "3,32,32", "--batch-size", "8",
            "--num-epoch", "1", "--data-nthreads", "1", "--quiet", "--skip-bad-images")
    history = json.load(open(os.path.join(save, "history.json")))
    gif_skipped = cv2.imread(os.path.join(tiny_data["root"], "a.gif")) is None
    assert history[0]["skipped_images"] == 1 + gif_skipped

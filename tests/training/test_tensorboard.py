"""--tensorboard: event files read back (TFRecord framing + tensorboardX's own protobufs) hold the run."""
import glob
import json
import os
import struct

import pytest

from conftest import make_images, run_cli, write_list

pytest.importorskip("tensorboardX")
from tensorboardX.crc32c import crc32c  # noqa: E402
from tensorboardX.proto import event_pb2  # noqa: E402


def _masked_crc(data):
    """TFRecord's masked CRC-32C (the same rule tensorboardX writes with)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path):
    """Every Event of one event file; each record's length and data CRCs are checked."""
    events = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert header_crc == _masked_crc(header)
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert body_crc == _masked_crc(body)
        event = event_pb2.Event()
        event.ParseFromString(body)
        events.append(event)
        pos += 16 + length
    return events


def _two_task_lists(tmp_path):
    root = tmp_path / "images"
    train = [(rel, [label, int(label > 0)]) for rel, label in make_images(str(root), 4, seed=1)]
    val = [(rel, [label, int(label > 0)]) for rel, label in make_images(str(root), 2, seed=2)]
    return str(root), write_list(tmp_path / "train.lst", train), write_list(tmp_path / "val.lst", val, 100)


@pytest.mark.slow
def test_event_files_hold_scalars_images_and_hparams(tmp_path):
    root, train, val = _two_task_lists(tmp_path)
    board = tmp_path / "tb"
    run_cli("train", "--data-train", train, "--image-train", root, "--data-val", val, "--image-val", root,
            "--task-names", "shape,any", "--network", "mobilenet0.25", "--image-shape", "3,32,32",
            "--num-epoch", "2", "--batch-size", "8", "--save-result", tmp_path / "run", "--quiet",
            "--tensorboard", board, "--grad-stats-every", "1")
    files = glob.glob(str(board / "events.out.tfevents.*"))
    assert len(files) == 1  # hparams in the same run, not a sub-folder
    events = read_events(files[0])
    scalars, images, plugins = {}, {}, set()
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
            elif value.HasField("image"):
                images.setdefault(value.tag, []).append((event.step, value.image))
            if value.metadata.plugin_data.plugin_name:
                plugins.add(value.metadata.plugin_data.plugin_name)
    history = json.load(open(tmp_path / "run" / "history.json"))
    history = history if isinstance(history, list) else history["epochs"]
    for record in history:
        epoch = record["epoch"]
        for split in ("train", "val"):
            for task in ("shape", "any"):
                for key in ("loss", "acc"):
                    assert scalars["%s/%s/%s" % (split, task, key)][epoch] == pytest.approx(
                        record[split][task][key], rel=1e-5)
        assert scalars["lr"][epoch] == pytest.approx(record["lr"], rel=1e-5)
        assert scalars["speed_img_s"][epoch] == pytest.approx(record["speed_img_s"], rel=1e-5)
        assert scalars["loss_weights/shape"][epoch] == 1.0
        assert scalars["grad_cosine/shape_vs_any"][epoch] == pytest.approx(record["grad_cosine"]["shape|any"])
    for tag in ("confusion/shape", "confusion/any"):
        assert [step for step, _ in images[tag]] == [1, 2]
        image = images[tag][-1][1]
        assert image.height > 100 and image.width > 100 and image.encoded_image_string[:4] == b"\x89PNG"
    preview = images["augmentation_preview"][0][1]
    assert preview.encoded_image_string[:4] == b"\x89PNG" and preview.width > 32 * 4
    assert "hparams" in plugins
    assert os.path.isfile(board / "confusion" / "shape.png")


def test_tensorboard_without_the_package_exits_2(tmp_path, tiny_data):
    # a sitecustomize that hides tensorboardX, as if it were not installed
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "tensorboardX.py").write_text("raise ImportError('hidden by the test')\n")
    proc = run_cli("train", "--data-train", tiny_data["train"], "--image-train", tiny_data["root"],
                   "--network", "mobilenet0.25", "--image-shape", "3,32,32", "--num-epoch", "1",
                   "--save-result", tmp_path / "run", "--tensorboard", tmp_path / "tb", expect=2,
                   env={"PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])})
    assert "pip install" in proc.stderr and "tensorboardX" in proc.stderr
    assert not os.path.exists(tmp_path / "run" / "multitask-0001.params")

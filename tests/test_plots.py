"""PNG pictures: curves, lr schedule and augmentation grid are whole images of the set size."""
import math
import os

import cv2
import numpy as np

from multitask_mx.training import plots
from multitask_mx.training.schedules import ScheduleConfig, lr_curve


def _history(epochs, with_val=True):
    history = []
    for e in range(1, epochs + 1):
        values = {"label": {"loss": 1.0 / e, "acc": 1 - 0.5 / e, "count": 24},
                  "label_gt0": {"loss": 0.5 / e, "acc": 0.9, "count": 18}}
        record = {"epoch": e, "lr": 0.01 * 0.5 ** e, "train": values, "speed_img_s": 10.0, "train_loss": 1.5 / e}
        if with_val:
            record["val"] = {"label": {"loss": 1.2 / e, "acc": 0.6, "count": 8},
                             "label_gt0": {"loss": float("nan"), "acc": float("nan"), "count": 0}}
        history.append(record)
    return history


def _png_shape(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(path))
    assert img is not None
    return img.shape


def test_curves_png(tmp_path):
    path = tmp_path / "curves.png"
    width, height = plots.CURVES_SIZE
    for history in (_history(1), _history(5), _history(3, with_val=False), []):
        assert plots.plot_curves(history, str(path)) == str(path)
        assert _png_shape(path) == (height, width, 3)
    assert os.listdir(tmp_path) == ["curves.png"]  # no temporary file left behind


def test_lr_schedule_png(tmp_path):
    epoch_size = 7
    lrs = lr_curve(ScheduleConfig(name="cyclic", base_lr=0.1, num_epoch=12, cycle_epochs=3, cycle_decay=0.6,
                                  warmup_epochs=1), epoch_size=epoch_size)
    path = plots.plot_lr_schedule(lrs, epoch_size, str(tmp_path / "lr.png"))
    width, height = plots.LR_PLOT_SIZE
    assert _png_shape(path) == (height, width, 3)


def test_augmentation_grid_png(tmp_path):
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 256, (32, 48, 3)).astype(np.uint8) for _ in range(5)]
    path = plots.plot_augmentation_grid(images, str(tmp_path / "preview.png"), cols=3)
    pad = plots.GRID_PAD
    assert _png_shape(path) == (2 * (32 + pad) + pad, 3 * (48 + pad) + pad, 3)
    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    top, left = pad + 32 + pad, pad + (48 + pad)  # the fifth image: second row, second column
    assert np.array_equal(rgb[top:top + 32, left:left + 48], images[4])
    assert (rgb[top:top + 32, -(48 + pad):] == 255).all()  # the empty cell is white


def test_grid_narrower_than_cols(tmp_path):
    images = [np.zeros((10, 10, 3), np.uint8)] * 2
    path = plots.plot_augmentation_grid(images, str(tmp_path / "p.png"), cols=8)
    assert _png_shape(path) == (10 + 2 * plots.GRID_PAD, 2 * 10 + 3 * plots.GRID_PAD, 3)
    assert math.isfinite(float(cv2.imread(path).mean()))

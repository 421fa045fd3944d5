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


def test_curves_writer_redraws_at_most_its_share_of_the_time_and_finishes_current(tmp_path, caplog):
    path = tmp_path / "curves.png"
    writer = plots.CurvesWriter(str(path), share=1e-6)  # after one drawing, the next is due in days
    assert writer.update(_history(1))
    writer.wait()  # drawn in a background thread
    first = path.read_bytes()
    assert not writer.update(_history(2))  # not due: the picture still shows epoch 1
    assert path.read_bytes() == first
    writer.finish(_history(2))  # the end of the run draws what is not shown yet
    assert path.read_bytes() != first
    drawn = path.read_bytes()
    writer.finish(_history(2))  # already shown: nothing to draw
    assert path.read_bytes() == drawn
    writer = plots.CurvesWriter(str(path), share=1.0)
    assert writer.update(_history(3))  # a large share: due at once
    writer.finish(_history(3))
    assert path.read_bytes() != drawn
    broken = plots.CurvesWriter(str(tmp_path / "no such folder" / "curves.png"))
    assert broken.update(_history(1))  # the drawing fails in its thread: a warning, not an error
    broken.finish(_history(1))
    assert "could not draw" in caplog.text
    none = plots.CurvesWriter(None)  # a worker that writes no files
    assert not none.update(_history(1)) and none.finish(_history(1)) is None


def _lines(ax):
    return {line.get_label(): list(line.get_xdata()) for line in ax.lines}


def test_curves_draw_one_line_per_task_and_split_with_values():
    loss_ax, acc_ax, lr_ax = plots.curves_figure(_history(5)).axes
    # label_gt0 has no labelled validation images (NaN): no line for it, not a line of NaN
    expected = {"train label": [1, 2, 3, 4, 5], "val label": [1, 2, 3, 4, 5], "train label_gt0": [1, 2, 3, 4, 5]}
    assert _lines(loss_ax) == expected and _lines(acc_ax) == expected
    assert list(loss_ax.lines[0].get_ydata()) == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert len(lr_ax.lines) == 1 and list(lr_ax.lines[0].get_ydata()) == [0.01 * 0.5 ** e for e in range(1, 6)]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == list(expected)
    loss_ax, acc_ax, lr_ax = plots.curves_figure(_history(3, with_val=False)).axes
    assert sorted(_lines(loss_ax)) == ["train label", "train label_gt0"]
    assert [len(ax.lines) for ax in plots.curves_figure([]).axes] == [0, 0, 0]


def test_lr_schedule_png(tmp_path):
    epoch_size = 7
    lrs = lr_curve(ScheduleConfig(name="cyclic", base_lr=0.1, num_epoch=12, cycle_epochs=3, cycle_decay=0.6,
                                  warmup_epochs=1), epoch_size=epoch_size)
    path = plots.plot_lr_schedule(lrs, epoch_size, str(tmp_path / "lr.png"))
    width, height = plots.LR_PLOT_SIZE
    assert _png_shape(path) == (height, width, 3)
    (line,) = plots.lr_schedule_figure(lrs, epoch_size).axes[0].lines  # one curve, one point per update
    assert len(line.get_xdata()) == 12 * epoch_size and line.get_xdata()[-1] == 12
    assert list(line.get_ydata()) == list(lrs) and 0.09 < max(lrs) <= 0.1


def test_lr_finder_figure_marks_the_suggestion():
    lrs = [1e-4 * 10 ** (i / 10) for i in range(40)]
    losses = [2.0 - 0.04 * i if i < 30 else float("inf") for i in range(40)]
    ax = plots.lr_finder_figure(lrs, losses, [min(v, 9.0) for v in losses], 0.01).axes[0]
    points, smoothed, mark = ax.lines
    assert len(points.get_xdata()) == 30 and len(smoothed.get_xdata()) == 40  # infinite losses are not drawn
    assert list(mark.get_xdata()) == [0.01, 0.01] and "0.01" in mark.get_label()


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

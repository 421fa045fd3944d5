"""What a run tells a person (issue 25): the machine line, the console's flag summary and the end-of-run
summary, the derived-task notice, progress lines in a log, captions on Grad-CAM pictures, the log-scale loss
panel, the confusion PNG's name, and doctor's reference figures checked against the stored benchmarks."""
import json
import logging
import os

import numpy as np
import pytest

import multitask_mx  # noqa: F401  (numpy/mxnet set-up before mxnet is imported)
import mxnet as mx
from mxnet import gluon

from multitask_mx import _runtime, logs
from multitask_mx.commands import doctor, evaluate
from multitask_mx.data import tasks as tasks_mod
from multitask_mx.model import network as model
from multitask_mx.training import loop, plots, summary
from multitask_mx.training.metrics import TaskMetrics
from multitask_mx.use import cam

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CPUINFO = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw\n"


def test_machine_summary_names_cores_vector_extensions_and_load():
    line = _runtime.machine_summary(CPUINFO, (1.5, 0.25, 0.0))
    assert line.startswith("machine: Test CPU 9000, %d usable of" % _runtime.usable_cores())
    assert "vector extensions: AVX2, AVX-512 (no AMX)" in line and "load average 1.50 0.25 0.00" in line
    bare = _runtime.machine_summary("model name : Old\nflags : fpu sse2\n", (0.0, 0.0, 0.0))
    assert "none of AVX2/AVX-512 (no AVX-512, no AMX)" in bare


def test_console_shows_the_main_flags_and_only_the_log_file_gets_every_flag(tmp_path, capsys):
    log = tmp_path / "train.log"
    logs.setup_logging(str(log))
    try:
        flags = {"network": "cifar_resnet20_v1", "image_shape": "3,32,32", "data_train": "t.lst", "batch_size": None,
                 "lr": 0.1, "num_epoch": 3, "augment": "auto", "pretrained": False, "derived_task": None,
                 "mom": 0.9, "wd": 0.0001, "dump_rank_params": None}
        summary.log_start(flags)
    finally:
        logs.setup_logging()  # the console alone again: the file handler is closed
    console, written = capsys.readouterr().err, log.read_text()
    assert "machine: " in console and "machine: " in written
    assert "--network cifar_resnet20_v1 --image-shape 3,32,32 --data-train t.lst --batch-size (chosen below) " \
           "--lr 0.1 --augment auto --num-epoch 3" in console
    assert '"mom": 0.9' not in console and "pretrained" not in console and "dump_rank_params" not in console
    assert json.loads(written.split("multitask-mx train ", 1)[1].splitlines()[0]) == flags


def _history():
    def values(acc, loss):
        return {"label": {"acc": acc, "loss": loss, "count": 8}, "label_gt0": {"acc": 1.0, "loss": 0.1, "count": 8}}
    return [{"epoch": 1, "train": values(0.5, 1.0), "val": values(0.375, 9.0)},
            {"epoch": 2, "train": values(0.75, 0.5), "val": values(0.625, 0.7)},
            {"epoch": 3, "train": values(0.875, 0.2), "val": values(0.5, 0.9)}]


def test_run_summary_gives_the_best_epoch_its_figures_the_files_and_the_next_commands():
    flags = {"data_val": "data/my val.lst", "image_val": "photos", "data_train": "data/train.lst"}
    lines = summary.summary_lines(_history(), {"epoch": 2, "metric": "val-loss", "weights": "raw"}, "runs/x",
                                  "multitask", flags)
    assert lines[0] == "finished 3 epoch(s); best epoch 2 by val-loss"
    assert lines[1] == "  val label: acc 0.625, loss 0.7000" and lines[2].startswith("  val label_gt0: acc 1.000")
    assert "runs/x" in lines[3] and "multitask-best.params" in lines[3]
    text = "\n".join(lines)
    assert "multitask-mx evaluate --save-result runs/x --data 'data/my val.lst' --image-root photos" in text
    assert "multitask-mx predict --save-result runs/x photos" in text
    assert "multitask-mx serve --save-result runs/x" in text
    no_best = summary.summary_lines(_history(), None, "r", "m", {})
    assert no_best[0] == "finished 3 epoch(s); best epoch 3 by the last epoch" and "TEST.lst" in no_best[-3]


def test_default_derived_task_is_announced_once_with_how_to_change_it(caplog):
    tasks_mod._ANNOUNCED.clear()
    with caplog.at_level(logging.INFO, logger="multitask_mx.data.tasks"):
        assert [t.name for t in tasks_mod.build_tasks([4])] == ["label", "label_gt0"]
        tasks_mod.build_tasks([4])
        tasks_mod.build_tasks([4], derived=[])
        tasks_mod.build_tasks([4, 2])
    notices = [r.getMessage() for r in caplog.records if "one label column" in r.getMessage()]
    assert len(notices) == 1
    assert "label_gt0 = label > 0" in notices[0] and "--no-derived-task" in notices[0]
    assert "--derived-task" in notices[0] and "--num-classes 4,2" in notices[0]


@pytest.mark.parametrize("log_seconds, expected", [(0.0, 5), (1e9, 2)])
def test_a_log_without_a_terminal_gets_progress_lines_by_time_as_well_as_by_batches(caplog, log_seconds, expected):
    two = tasks_mod.build_tasks([4, 2], ["a", "b"])
    mx.random.seed(0)
    net = model.build_net(model.TrunkSpec("mobilenet0.25"), two, [mx.cpu()], (3, 32, 32))
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01})
    data = gluon.data.ArrayDataset(mx.nd.random.uniform(-1, 1, shape=(20, 3, 32, 32)),
                                   mx.nd.array(np.stack([np.arange(20) % 4, np.arange(20) % 2], axis=1)),
                                   mx.nd.arange(20))
    loader = gluon.data.DataLoader(data, batch_size=4)
    cfg = loop.LoopConfig(log_every=2, log_seconds=log_seconds, progress_bar=False)
    with caplog.at_level(logging.INFO, logger="multitask_mx.training.loop"):
        loop.train_one_epoch(net, trainer, loader, [mx.cpu()], loop.MultiTaskLoss([4, 2]),
                             TaskMetrics.for_tasks(two, [mx.cpu()]), 1, cfg)
    lines = [r.getMessage() for r in caplog.records if "Batch [" in r.getMessage()]
    assert len(lines) == expected  # 5 batches: every batch once 0 s are due, else batches 2 and 4
    assert loop.report_due(3, cfg, 1e10, has_bar=True) is False  # a terminal's bar shows progress itself


def test_grad_cam_caption_names_task_class_and_probability_inside_the_picture():
    assert cam.caption_text("label", "circle", 0.9763) == "label: circle (p=0.98)"
    picture = np.full((224, 224, 3), 128, np.uint8)
    out = cam.captioned(picture, cam.caption_text("label", "circle", 0.9763))
    band = max(12, 224 // 12)
    assert out.shape == picture.shape and (out[band:] == picture[band:]).all()
    assert out[:band].max() > 200 and out[:band].min() < 60  # white text on a darkened band
    assert (picture == 128).all()  # the input is not drawn on


def test_curves_loss_panel_is_log_scale_and_says_so():
    history = [{"epoch": e, "lr": 0.1, "train": {"label": {"loss": 1.0 / e, "acc": 0.5, "count": 4}},
                "val": {"label": {"loss": 50.0 if e == 1 else 1.0 / e, "acc": 0.5, "count": 4}}} for e in (1, 2, 3)]
    loss_ax = plots.curves_figure(history).axes[0]
    assert loss_ax.get_yscale() == "log" and loss_ax.get_title() == "loss (log scale)"
    history[0]["val"]["label"]["loss"] = 0.0  # a value a log axis cannot show: linear, titled plainly
    loss_ax = plots.curves_figure(history).axes[0]
    assert loss_ax.get_yscale() == "linear" and loss_ax.get_title() == "loss"


def test_confusion_png_of_several_tasks_says_where_each_went():
    paths = evaluate.confusion_paths("out/cm.png", ["label", "label_gt0"])
    assert paths == {"label": "out/cm_label.png", "label_gt0": "out/cm_label_gt0.png"}
    line = evaluate.confusion_notice("out/cm.png", "label", paths["label"])
    assert "out/cm_label.png" in line and "one file per task" in line and "--confusion-png out/cm.png" in line
    assert evaluate.confusion_notice("cm.png", "label", "cm.png") == "wrote label's confusion matrix to cm.png"


def _stored(name):
    with open(os.path.join(REPO, "benchmarks", "results", name + ".json")) as f:
        return json.load(f)


def test_doctor_reference_figures_are_the_stored_benchmark_results():
    (low, high, batch, machine, where), = doctor.THROUGHPUT_REFERENCE[("resnet50_v1", "3,224,224")]
    measured = [r["img_s"] for r in _stored("bench_training")["figures"] if r["name"].startswith("(b)")]
    measured += [r[k] for r in _stored("bench_fusion")["figures"]["rows"] if r["trunk"] == "resnet50_v1"
                 and r["measurement"] == "training step" for k in ("plain_img_s", "fused_img_s")]
    measured.append(_stored("bench_precision")["figures"]["training img/s (resnet50_v1, 224 px, batch 16)"]["float32"])
    assert round(min(measured), 2) == low and round(max(measured), 2) == high
    small = _stored("bench_small_net")
    ours = [r["img/s"] for r in small["figures"]["rows"] if r["side"] == "ours (MXNet)" and "img/s" in r]
    assert small["machine"]["flags"]["avx512f"] and round(ours[0], 1) == 763.4
    avx2 = _stored("bench_small_net_avx2")
    old = [r["img/s"] for r in avx2["figures"]["rows"] if r["side"] == "ours (MXNet)" and "img/s" in r]
    assert not avx2["machine"]["flags"]["avx512f"] and round(old[0], 1) == 503.5
    assert [r[0] for r in doctor.THROUGHPUT_REFERENCE[("cifar_resnet20_v1", "3,32,32")]] == [503.5, 763.4]
    lines = doctor.reference_lines("resnet50_v1", (3, 224, 224))
    assert "9.7-12.0 img/s at batch 16" in lines[1] and "AVX-512" in lines[1]
    assert "no stored benchmark" in doctor.reference_lines("vgg11", (3, 64, 64))[0]

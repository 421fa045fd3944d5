"""The Python API: multitask_mx.train(**flags), multitask_mx.load(run_dir).predict(paths)."""
import json
import os
import subprocess
import sys

import pytest

import multitask_mx as mtx
from multitask_mx.errors import UserInputError

TINY = dict(network="mobilenet0.25", image_shape=(3, 32, 32), batch_size=8, num_epoch=2, seed=1, quiet=True)


@pytest.mark.slow
def test_train_then_load_and_predict_through_the_api(tiny_data, tmp_path):
    save = str(tmp_path / "run")
    history = mtx.train(data_train=tiny_data["train"], image_train=tiny_data["root"], data_val=tiny_data["val"],
                        image_val=tiny_data["root"], save_result=save, **TINY)
    assert [r["epoch"] for r in history] == [1, 2]
    with open(os.path.join(save, "config.json")) as f:
        recorded = json.load(f)["args"]
    assert recorded["image_shape"] == "3,32,32" and recorded["num_epoch"] == 2  # the CLI's flags, same names
    model = mtx.load(save, epoch="best")
    images = sorted(os.path.join(tiny_data["root"], "circle", n) for n in os.listdir(
        os.path.join(tiny_data["root"], "circle")))[:3]
    rows = model.predict(images + [str(tmp_path / "missing.jpg")], top_k=2)
    assert [r["path"] for r in rows] == images + [str(tmp_path / "missing.jpg")]
    assert "error" in rows[-1]
    for row in rows[:3]:
        assert list(row["tasks"]) == model.task_names == ["label", "label_gt0"]
        probs = [c["prob"] for c in row["tasks"]["label"]]
        assert len(probs) == 2 and probs[0] >= probs[1] and 0 < sum(probs) <= 1.0001


def test_unknown_keyword_names_the_closest_flags():
    with pytest.raises(TypeError, match="did you mean num_epoch"):
        mtx.parse_flags("train", data_train="x.lst", save_result="r", num_epochs=3)


def test_flag_values_are_checked_like_the_cli():
    with pytest.raises(UserInputError, match="batch_size"):
        mtx.parse_flags("train", data_train="x.lst", save_result="r", batch_size=0)
    with pytest.raises(UserInputError, match="missing keyword argument"):
        mtx.parse_flags("train", data_train="x.lst")
    args = mtx.parse_flags("train", data_train="x.lst", save_result="r", image_shape=(3, 64, 64), resume=True)
    assert args.image_shape == "3,64,64" and args.resume is True and args.num_epoch == 10


def test_importing_the_package_loads_no_mxnet_and_documents_the_api():
    code = "import sys, multitask_mx as m; assert 'mxnet' not in sys.modules; print(m.train.__doc__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Keyword arguments are ``multitask-mx train``'s flags" in out

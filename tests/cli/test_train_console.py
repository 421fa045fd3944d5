"""A real run through the CLI as a newcomer sees it (issue 25): what the console shows at the start and at the
end, and that the CLI's commands and the Python API load the same epoch by default."""
import json
import os

import pytest

import multitask_mx as mtx
from conftest import run_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(save dir, image folder, train's stderr) of a 2-epoch run on tiny images, one label column."""
    from conftest import make_images, write_list
    base = tmp_path_factory.mktemp("console")
    root = str(base / "images")
    train = write_list(base / "train.lst", make_images(root, 6, seed=1))
    val = write_list(base / "val.lst", make_images(root, 2, seed=2), start_index=24)
    save = str(base / "run")
    proc = run_cli("train", "--network", "mobilenet0.25", "--image-shape", "3,32,32", "--num-epoch", 2,
                   "--batch-size", 8, "--seed", 1, "--data-train", train, "--image-train", root, "--data-val", val,
                   "--image-val", root, "--save-result", save)
    return save, root, proc.stderr


@pytest.mark.slow
def test_console_opens_with_machine_and_main_flags_and_ends_with_a_summary(run):
    save, root, console = run
    lines = console.splitlines()
    assert any(" machine: " in line and "usable of" in line and "load average" in line for line in lines)
    assert any(" train: --network mobilenet0.25 --image-shape 3,32,32" in line for line in lines)
    assert not any('"mom": 0.9' in line for line in lines)  # the flags' JSON is in train.log only
    with open(os.path.join(save, "train.log")) as f:
        assert '"mom": 0.9' in f.read()
    assert sum("one label column: adding" in line and "--no-derived-task" in line for line in lines) == 1
    phases = max(i for i, line in enumerate(lines) if " phases: " in line)
    tail = "\n".join(lines[phases + 1:])
    assert "best epoch" in tail and "val label: acc" in tail and "val label_gt0: acc" in tail
    assert "multitask-mx evaluate --save-result %s" % save in tail and "multitask-mx serve --save-result" in tail


@pytest.mark.slow
def test_cli_and_api_load_the_same_epoch_by_default_and_say_which(run, tmp_path):
    save, root, _ = run
    image = os.path.join(root, "circle", sorted(os.listdir(os.path.join(root, "circle")))[0])
    out = tmp_path / "p.json"
    proc = run_cli("predict", "--save-result", save, image, "--json", out)
    with open(os.path.join(save, "best.json")) as f:
        best = json.load(f)["epoch"]
    loaded = [line for line in proc.stderr.splitlines() if " loaded " in line]
    assert len(loaded) == 1 and "multitask-%04d.params" % best in loaded[0]  # the best epoch's own file
    assert "the default: the best epoch, %d by val-loss" % best in loaded[0]
    model = mtx.load(save)
    assert model.saved.params_file.endswith("multitask-%04d.params" % best)  # the same file as the CLI
    cli_rows = json.loads(out.read_text())
    cli_rows = cli_rows["predictions"] if isinstance(cli_rows, dict) else cli_rows
    api_row = model.predict([image])[0]
    assert abs(cli_rows[0]["tasks"]["label"][0]["prob"] - api_row["tasks"]["label"][0]["prob"]) < 1e-5
    latest = run_cli("predict", "--save-result", save, image, "--epoch", "latest")
    assert "multitask-0002.params" in latest.stderr and "--epoch latest" in latest.stderr

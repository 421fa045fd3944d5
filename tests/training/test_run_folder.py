"""The run folder's guards, through the real CLI: one writer (an OS lock), a plain --save-name, resume that
never overwrites a finished epoch silently, outputs that never destroy inputs, run files or special files.

Each case is a defect an adversarial run reproduced on the code before ``RunDir``.
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from conftest import REPO, copy_run, is_alive, no_traceback, run_cli, small_lists
from multitask_mx.errors import UserInputError
from multitask_mx.runfolder import LOCK_FILE, RunDir, check_save_name

TINY = ["--network", "mobilenet0.25", "--image-shape", "3,32,32", "--batch-size", "8", "--lr", "0.01",
        "--data-nthreads", "1", "--quiet"]


def train_args(data, save, *extra):
    return ["train", "--data-train", data["train"], "--image-train", data["root"], "--data-val", data["val"],
            "--image-val", data["root"], "--num-classes", "4", "--save-result", save] + TINY + list(extra)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return small_lists(tmp_path_factory.mktemp("runfolder"))


@pytest.fixture(scope="module")
def run2(data):
    """A finished 2-epoch run; tests that change it work on a copy."""
    save = str(data["tmp"] / "run2")
    run_cli(*train_args(data, save, "--num-epoch", "2"))
    return save


def read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


# ---- the lock ---------------------------------------------------------------------------------------------

def _start_train(argv):
    return subprocess.Popen([sys.executable, "-m", "multitask_mx"] + argv, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _wait_for_lock_holder(save, proc, seconds=120):
    deadline = time.time() + seconds
    lock = os.path.join(save, LOCK_FILE)
    while time.time() < deadline:
        if os.path.exists(lock) and read(lock, "r").strip() == str(proc.pid):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("train never locked %s" % save)


@pytest.mark.slow
def test_a_second_train_into_a_locked_folder_is_refused_with_the_holders_pid_and_sigkill_frees_it(data, tmp_path):
    save = str(tmp_path / "save")
    first = _start_train(train_args(data, save, "--num-epoch", "30"))
    try:
        _wait_for_lock_holder(save, first)
        second = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "1"), expect=2))
        assert "in use by another multitask-mx train (process %d)" % first.pid in second.stderr
        resumed = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "2", "--resume"), expect=2))
        assert "process %d" % first.pid in resumed.stderr
        assert "train.log" not in os.listdir(save) or str(second.stderr) not in read(os.path.join(save, "train.log"),
                                                                                    "r")
    finally:
        first.kill()
        first.communicate()
    deadline = time.time() + 10  # the kernel frees the lock with the process; loader workers do not hold it
    while time.time() < deadline and any(is_alive(p) for p in _children_of(first.pid)):
        time.sleep(0.1)
    with RunDir(save).lock():  # free again: a SIGKILLed run never leaves the folder locked
        pass


def _children_of(pid):
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if read("/proc/%s/stat" % name, "r").rsplit(")", 1)[1].split()[1] == str(pid):
                    found.append(int(name))
            except OSError:
                pass
    return found


def test_the_lock_is_reentrant_in_one_process_and_refused_to_another(tmp_path):
    folder = str(tmp_path / "run")
    with RunDir(folder).lock():
        with RunDir(folder).lock():  # the API trains twice in one process: its own lock, held once more
            pass
        assert read(os.path.join(folder, LOCK_FILE), "r").strip() == str(os.getpid())
        other = subprocess.run([sys.executable, "-c", "import sys; from multitask_mx.runfolder import RunDir\n"
                                "try:\n    RunDir(sys.argv[1]).lock()\nexcept Exception as e:\n    print(e)",
                                folder], capture_output=True, text=True, cwd=REPO)
        assert "process %d" % os.getpid() in other.stdout
    with RunDir(folder).lock():  # released
        pass


# ---- --save-name ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../victim/multitask", "a/b", "", ".", "..", "-x", "x\ny", "/abs"])
def test_save_name_must_be_a_plain_stem(name):
    with pytest.raises(UserInputError, match="plain file-name stem"):
        check_save_name(name)


@pytest.mark.slow
def test_a_save_name_that_climbs_out_is_refused_before_any_work(data, tmp_path, run2):
    victim = copy_run(run2, tmp_path)
    before = read(os.path.join(victim, "multitask-0001.params"))
    attacker = str(tmp_path / "attacker")
    for name in ("../save/multitask", "a/b", ""):
        proc = no_traceback(run_cli(*train_args(data, attacker, "--num-epoch", "1", "--save-name", name), expect=2))
        assert "--save-name" in proc.stderr
    assert read(os.path.join(victim, "multitask-0001.params")) == before
    assert not os.path.exists(attacker)  # refused at parse time: nothing was created


# ---- resume -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_lost_states_file_is_named_and_resume_continues_only_as_asked(data, tmp_path, run2):
    save = copy_run(run2, tmp_path)
    os.remove(os.path.join(save, "multitask-0002.states"))
    epoch2 = read(os.path.join(save, "multitask-0002.params"))
    proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "3", "--resume"), expect=2))
    assert "multitask-0002.states is missing" in proc.stderr
    assert "--resume-epoch 1" in proc.stderr and "--fresh-optimizer" in proc.stderr
    assert read(os.path.join(save, "multitask-0002.params")) == epoch2  # the finished epoch is untouched
    no_traceback(run_cli(*train_args(data, save, "--num-epoch", "3", "--resume", "--fresh-optimizer")))
    history = json.loads(read(os.path.join(save, "history.json"), "r"))
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert read(os.path.join(save, "multitask-0002.params")) == epoch2  # continued after it, not over it
    assert "fresh optimizer state" in read(os.path.join(save, "train.log"), "r")


@pytest.mark.slow
def test_resume_epoch_goes_back_to_a_complete_epoch_when_asked(data, tmp_path, run2):
    save = copy_run(run2, tmp_path)
    os.remove(os.path.join(save, "multitask-0002.states"))
    proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "2", "--resume", "--resume-epoch", "1")))
    assert "trained again" in proc.stderr + read(os.path.join(save, "train.log"), "r")
    assert os.path.exists(os.path.join(save, "multitask-0002.states"))
    history = json.loads(read(os.path.join(save, "history.json"), "r"))
    assert [r["epoch"] for r in history] == [1, 2]


@pytest.mark.parametrize("flags, says", [
    (["--resume", "--overwrite"], "give one of them"),
    (["--resume-epoch", "1"], "add --resume"),
    (["--fresh-optimizer"], "add --resume"),
    (["--resume", "--resume-epoch", "1", "--fresh-optimizer"], "give one of them"),
])
def test_contradicting_resume_flags_are_refused_before_any_work(data, tmp_path, flags, says):
    save = str(tmp_path / "save")
    proc = no_traceback(run_cli(*train_args(data, save, "--num-epoch", "1", *flags), expect=2))
    assert says in proc.stderr
    assert not os.path.exists(os.path.join(save, "train.log"))


def test_files_written_before_the_run_folder_rewrite_still_resume_and_load(tmp_path):
    # a run folder written by the code before RunDir (commit d27ee46): config, history, epoch 1's files
    fixture = os.path.join(REPO, "tests", "fixtures", "run-before-rundir")
    save = str(tmp_path / "old")
    shutil.copytree(fixture, save)
    run = RunDir(save)
    assert run.save_name == "old" and run.read_config()["network"] == "cifar_resnet20_v1"
    point = run.resume_point()
    assert point.epoch == 1 and point.params_file.endswith("old-0001.params") and point.states_file
    from multitask_mx.use import inference
    model = inference.load_model(save)
    assert model.epoch == 1 and model.task_names == ["label", "label_gt0"]
    images = os.path.join(REPO, "tests", "fixtures", "run-before-rundir-images")
    if os.path.isdir(images):
        names = sorted(os.listdir(images))[:2]
        assert len(inference.predict_paths(model, [os.path.join(images, n) for n in names]).log_probs) == 2


@pytest.mark.slow
def test_files_written_before_the_run_folder_rewrite_continue_training(tmp_path, data):
    fixture = os.path.join(REPO, "tests", "fixtures", "run-before-rundir")
    save = str(tmp_path / "old")
    shutil.copytree(fixture, save)
    no_traceback(run_cli("train", "--data-train", data["train"], "--image-train", data["root"], "--num-classes", "4",
                         "--save-result", save, "--save-name", "old", "--network", "cifar_resnet20_v1",
                         "--image-shape", "3,32,32", "--batch-size", "8", "--data-nthreads", "1", "--quiet",
                         "--num-epoch", "2", "--resume"))
    assert [r["epoch"] for r in json.loads(read(os.path.join(save, "history.json"), "r"))] == [1, 2]


# ---- outputs ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_outputs_never_replace_inputs_run_files_or_special_files(data, tmp_path, run2):
    save = copy_run(run2, tmp_path)
    config = read(os.path.join(save, "config.json"))
    image = os.path.join(data["root"], "circle", sorted(os.listdir(os.path.join(data["root"], "circle")))[0])
    listed = read(data["val"])
    cases = [
        (["evaluate", "--save-result", save, "--data", data["val"], "--image-root", data["root"],
          "--json", os.path.join(save, "config.json")], "a file of the run"),
        (["evaluate", "--save-result", save, "--data", data["val"], "--image-root", data["root"],
          "--json", data["val"]], "this command's input"),
        (["predict", "--save-result", save, data["val"], "--image-root", data["root"], "--csv", data["val"]],
         "this command's input"),
        (train_args(data, str(tmp_path / "new"), "--plot-lr", data["train"]), "this command's input"),
        (train_args(data, save, "--plot-lr", os.path.join(save, "history.json")), "a file of the run"),
    ]
    for argv, says in cases:
        proc = no_traceback(run_cli(*argv, expect=2))
        assert says in proc.stderr, (argv, proc.stderr)
    assert read(os.path.join(save, "config.json")) == config and read(data["val"]) == listed
    # a symlink, a FIFO and a device node are refused, not replaced by a regular file
    target = tmp_path / "target.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    fifo = str(tmp_path / "fifo.json")
    os.mkfifo(fifo)
    for path, kind in ((str(link), "symbolic link"), (fifo, "FIFO"), ("/dev/null", "device")):
        proc = no_traceback(run_cli("predict", "--save-result", save, image, "--json", path, expect=2))
        assert kind in proc.stderr, proc.stderr
    assert os.path.islink(link) and target.read_text() == "old" and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    proc = no_traceback(run_cli(*train_args(data, str(tmp_path / "p"), "--plot-lr", "/dev/null"), expect=2))
    assert "device" in proc.stderr and stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.slow
def test_json_to_standard_output_and_a_killed_writes_temporary_file_is_cleaned(data, tmp_path, run2):
    common = ["evaluate", "--save-result", run2, "--data", data["val"], "--image-root", data["root"], "--quiet"]
    for name in ("-", "/dev/stdout"):
        proc = no_traceback(run_cli(*common, "--json", name))
        document = json.loads(proc.stdout[proc.stdout.index("{"):])
        assert "tasks" in document
    out = tmp_path / "ev.json"
    stale = tmp_path / ("ev.json.tmp-%d" % _dead_pid())
    stale.write_text("half")
    no_traceback(run_cli(*common, "--json", str(out)))
    assert json.loads(out.read_text())["num_images"] == 8 and not stale.exists()


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid

"""`multitask-mx doctor` and the console entry points."""
import os
import subprocess
import sys

from conftest import run_cli


def test_doctor_prints_versions_threads_and_a_real_throughput():
    proc = run_cli("doctor", "--network", "resnet18_v1", "--image-shape", "3,32,32", "--seconds", "1")
    out = proc.stdout
    for word in ("mxnet", "gluoncv", "numpy", "opencv", "MKLDNN", "OMP_NUM_THREADS", "usable CPU core"):
        assert word in out, word
    speed = float(out.split("img/s")[0].split()[-1])
    assert speed > 0


def test_console_script_and_module_agree():
    script = os.path.join(os.path.dirname(sys.executable), "multitask-mx")
    a = subprocess.run([script, "--version"], capture_output=True, text=True)
    b = subprocess.run([sys.executable, "-m", "multitask_mx", "--version"], capture_output=True, text=True)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout and "multitask-mx" in a.stdout


def test_user_errors_exit_2_without_traceback(tmp_path):
    proc = run_cli("train", "--data-train", str(tmp_path / "nope.lst"), "--save-result", str(tmp_path / "s"),
                   expect=2)
    assert "nope.lst" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr

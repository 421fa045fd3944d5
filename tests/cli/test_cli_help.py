"""`multitask-mx --help` and `make-list --help` stay light: no mxnet, no flask, well under a second."""
import resource
import subprocess
import sys

from conftest import REPO

# Run in a fresh interpreter: other tests in this process have imported mxnet already.
_PROBE = """
import sys
from multitask_mx import cli
for argv in (["--help"], ["make-list", "--help"]):
    try:
        cli.build_parser([cli.chosen_command(argv)]).parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, exc.code
print(sorted(m for m in ("mxnet", "flask", "cv2", "matplotlib") if m in sys.modules))
"""


def test_top_level_and_make_list_help_import_no_mxnet_or_flask():
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "make .lst files" in proc.stdout and "--check-images" in proc.stdout


def test_help_through_the_cli_is_fast():
    # CPU seconds of the child, not wall time: the test machine may be busy with other work
    for argv in (["--help"], ["make-list", "--help"]):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, "-m", "multitask_mx"] + argv, cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert proc.returncode == 0, proc.stderr
        assert cpu < 1.0, "%s took %.2f CPU seconds" % (" ".join(argv), cpu)


def test_only_the_chosen_subcommand_is_built():
    from multitask_mx import cli
    assert cli.chosen_command(["--version"]) is None
    assert cli.chosen_command(["make-list", "p", "r"]) == "make-list"
    assert cli.chosen_command(["nonsense"]) is None
    parser = cli.build_parser(["make-list"])
    args = parser.parse_args(["make-list", "p", "root", "--split", "1"])
    assert args.split == "1" and callable(args.run)

#!/usr/bin/env python
"""Reading and checking a 1,000,000-line .lst: wall time, peak memory and log size (issue 11, item 11).

The list has ``--lines`` lines (one float label column, 5 classes, as im2rec writes them) over as
many distinct paths: ``--files`` real JPEGs (photos.py, 64x48) hard-linked into folders of 1000,
so that every line names its own directory entry (a real path look-up, no two lines the same file
by path) while the data fit in the page cache, as on a machine that has read its dataset once.
``--duplicates`` of the lines (1% by default) repeat an earlier line's path, as real lists do,
which exercises the duplicate-path warning. The tree is kept in ``--workdir`` for the next run.

Each case runs in its own process (``--case``), so its peak RSS is its own:

    read_list   multitask_mx.data.lists.read_list alone
    header      read_list + data.check_images_or_skip (the default header check, loader-worker count)
    train_none  ``multitask-mx train ... --check-images none --plot-lr F.png``: the whole preflight as
                train runs it (lists, tasks, label checks, preflight report, loss), stopped before the
                network is built by --plot-lr, which writes the lr curve and exits
    train       the same with the default --check-images header

Peak RSS is the case process's own (VmHWM); ``children_rss_mb`` is the largest of its child
processes (a header check in worker processes), whose pages are mostly shared with it.

    python benchmarks/bench_lists.py                 # 1,000,000 lines
    python benchmarks/bench_lists.py --smoke         # 20,000 lines, seconds
    python benchmarks/bench_lists.py --code DIR --name bench_lists_before   # another checkout's code
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if "--case" not in sys.argv:  # a case process imports multitask_mx from --code (its PYTHONPATH)
    sys.path.insert(0, REPO)
import common  # noqa: E402  (first: its import time is the run's start)

CASES = ("read_list", "header", "train_none", "train")
PER_FOLDER = 1000


def parse_args(argv=None):
    """Flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20,000 lines: a few seconds per case")
    parser.add_argument("--lines", type=int, default=None, help="lines of the list (default 1,000,000)")
    parser.add_argument("--files", type=int, default=4000, help="distinct JPEG files behind the paths")
    parser.add_argument("--duplicates", type=float, default=0.01, help="share of lines that repeat a path")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "multitask_mx_bench_lists"),
                        help="where the images and lists are made (kept for later runs)")
    parser.add_argument("--code", default=REPO, help="checkout whose multitask_mx the cases run (default: this)")
    parser.add_argument("--name", default="bench_lists", help="result file name under benchmarks/results/")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of %s" % ", ".join(CASES))
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # child process: run one case
    parser.add_argument("--lst", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lines is None:
        args.lines = 20000 if args.smoke else 1000000
    return args


# --- the data ---------------------------------------------------------------------------------------

def make_tree(workdir, lines, files, duplicates):
    """The image tree (hard links) and the .lst; returns (list path, image root). Reused when present."""
    root = os.path.join(workdir, "images")
    lst = os.path.join(workdir, "train_%d_%d_%g.lst" % (lines, files, duplicates))
    marker = os.path.join(root, ".done_%d_%d" % (lines, files))
    if not os.path.exists(marker):
        _link_tree(workdir, root, lines, files)
        open(marker, "w").close()
    if not os.path.exists(lst):
        tmp = lst + ".tmp"
        repeats = int(lines * duplicates)
        step = lines // repeats if repeats else 0
        fresh = 0
        with open(tmp, "w") as f:
            for i in range(lines):
                if step and i % step == step - 1 and fresh:  # repeat an earlier line's path
                    j = (i * 7919) % fresh
                else:
                    j, fresh = fresh, fresh + 1
                f.write("%d\t%f\t%s\n" % (i, j % 5, _rel(j)))
        os.replace(tmp, lst)
    return lst, root


def _rel(j):
    return "d%04d/%07d.jpg" % (j // PER_FOLDER, j)


def _link_tree(workdir, root, count, files):
    import cv2
    from photos import draw_photo
    import numpy as np
    src = os.path.join(workdir, "src")
    os.makedirs(src, exist_ok=True)
    rng = np.random.RandomState(0)
    sources = []
    for k in range(files):
        path = os.path.join(src, "%05d.jpg" % k)
        if not os.path.exists(path):
            cv2.imwrite(path, draw_photo(rng, 64, 48), [cv2.IMWRITE_JPEG_QUALITY, 90])
        sources.append(path)
    for j in range(count):
        path = os.path.join(root, _rel(j))
        if j % PER_FOLDER == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            os.link(sources[j % files], path)


def warm_cache(root):
    """Read every directory and the source files once: the cases then find them in the page cache."""
    count = 0
    for entry in os.scandir(root):
        if entry.is_dir():
            for item in os.scandir(entry.path):
                item.stat()
                count += 1
    src = os.path.join(os.path.dirname(root), "src")
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f:
            f.read()
    return count


# --- the cases (child processes) --------------------------------------------------------------------

def run_case(case, lst, root, out_dir):
    """Run one case in this process; returns its figures (imports timed apart from the work)."""
    from multitask_mx import _runtime
    _runtime.configure_threads()
    tic = time.time()
    from multitask_mx import cli
    from multitask_mx.data import datasets as data, lists
    parser = cli.build_parser()  # imports every command module (and mxnet), as `multitask-mx` does
    imported = time.time()
    if case == "read_list":
        n = len(lists.read_list(lst, root))
    elif case == "header":
        threads = _runtime.default_loader_workers()
        n = len(data.check_images_or_skip(lists.read_list(lst, root), False, False, threads))
    else:
        flags = ["--check-images", "none"] if case == "train_none" else []
        args = parser.parse_args(["train", "--data-train", lst, "--image-train", root, "--save-result", out_dir,
                                  "--plot-lr", os.path.join(out_dir, "lr.png"), "--num-epoch", "2"] + flags)
        try:
            args.run(args)
        except Exception as exc:  # UserInputError included: the case failed
            raise SystemExit("train failed: %s" % exc)
        n = None
    used = os.times()
    return {"import_seconds": round(imported - tic, 2), "case_seconds": round(time.time() - imported, 2),
            "cpu_seconds": round(used.user + used.system, 2),
            "children_cpu_seconds": round(used.children_user + used.children_system, 2),
            "entries": n, "rss_mb": _mb(_vm_hwm_kb()),
            "children_rss_mb": _mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)}


def _vm_hwm_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _mb(kb):
    return round(kb / 1024.0, 1)


def measure(case, args, lst, root):
    """One case in a fresh process: its figures plus the whole process's wall time and log size."""
    with tempfile.TemporaryDirectory(prefix="bench_lists_") as out:
        env = dict(os.environ, PYTHONPATH=args.code)
        tic = time.time()
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", case, "--lst", lst,
                               "--workdir", out, "--code", args.code], env=env, cwd=args.code,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.time() - tic
        if proc.returncode:
            raise SystemExit("case %s failed:\n%s" % (case, proc.stderr.decode(errors="replace")[-3000:]))
        figures = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        log = os.path.join(out, "train.log")
        figures.update(case=case, process_seconds=round(wall, 2), stderr_bytes=len(proc.stderr),
                       longest_stderr_line=max((len(x) for x in proc.stderr.splitlines()), default=0),
                       log_file_bytes=os.path.getsize(log) if os.path.exists(log) else None)
    return figures


def main(argv=None):
    """Make the data, run the cases one by one, print a table and store the result."""
    args = parse_args(argv)
    if args.case:
        root = os.path.join(os.path.dirname(args.lst), "images")
        print(json.dumps(run_case(args.case, args.lst, root, args.workdir)))
        return 0
    common.start_run()
    from multitask_mx import _runtime
    _runtime.configure_threads()
    tic = time.time()
    lst, root = make_tree(args.workdir, args.lines, args.files, args.duplicates)
    print("data: %s (%d lines, %d distinct JPEGs, made or reused in %.0f s; %d paths warmed)"
          % (lst, args.lines, args.files, time.time() - tic, warm_cache(root)), flush=True)
    print("\n".join(common.machine_header()), flush=True)
    rows = []
    print("%-11s %9s %9s %9s %9s %8s %9s %12s"
          % ("case", "process_s", "import_s", "case_s", "cpu_s", "rss_MB", "child_MB", "stderr_bytes"))
    for case in args.cases.split(","):
        row = measure(case, args, lst, root)
        row["load_after"] = [round(x, 2) for x in os.getloadavg()]
        rows.append(row)
        print("%-11s %9.1f %9.1f %9.1f %9.1f %8.0f %9.0f %12d"
              % (case, row["process_seconds"], row["import_seconds"], row["case_seconds"],
                 row["cpu_seconds"] + row["children_cpu_seconds"], row["rss_mb"], row["children_rss_mb"],
                 row["stderr_bytes"]), flush=True)
    notes = {"lines": args.lines, "distinct_files": args.files, "duplicate_share": args.duplicates,
             "code": os.path.relpath(args.code, REPO) if args.code != REPO else ".",
             "list": "hard links to %d JPEGs of 64x48 in folders of %d; page cache warm" % (args.files, PER_FOLDER)}
    common.write_result(args.name, rows, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

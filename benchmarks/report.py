#!/usr/bin/env python
"""Write the benchmark figures into docs/benchmarks.md (and README.md, docs/serving.md) from benchmarks/results/*.json.

Every figure in those files' generated blocks comes from a stored result (write_result in
common.py), and each block names its result file, machine, date and command. A result whose
run was not quiet (other processes busy on the cores) is listed as "under load, not published"
with no figures. Smoke results (results/smoke/) are never used; results in EXCLUDED are listed
with the reason they are left out.

Blocks sit between marker comments; the start marker may name the results it shows:

    <!-- bench:start -->                 every result, in RESULT_ORDER
    <!-- bench:start bench_serve -->     only bench_serve.json
    <!-- bench:start quickstart -->      the README's few lines: the demo's time and accuracy, make test
    <!-- bench:end -->

    python benchmarks/report.py            # rewrite the blocks in the files of TARGETS that exist
    python benchmarks/report.py --check    # exit 1 if a block is not what the results give
"""
import argparse
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
# docs/learning.md (learning-quality tables) is written by hand around its blocks and may not exist yet
TARGETS = ("README.md", os.path.join("docs", "benchmarks.md"), os.path.join("docs", "serving.md"),
           os.path.join("docs", "learning.md"))
BLOCK = re.compile(r"(<!-- bench:start([^>]*?)-->\n)(.*?)(<!-- bench:end -->)", re.S)
RESULT_ORDER = ("bench_training", "bench_original", "bench_fusion", "bench_small_net", "bench_small_net_avx2",
                "bench_precision", "bench_finetune",
                "bench_loader", "bench_predict", "bench_serve", "bench_distributed", "bench_task_gradients",
                "bench_lists")
# stored results the report leaves out, and why (the file stays in results/ for the record)
EXCLUDED = {
    "bench_learning_grid": "the learning grid (issue 24) has its own generated page, docs/learning.md "
                           "(benchmarks/learning_report.py), with its development and confirmation datasets",
    "bench_lists_before": "the list code before its rewrite (commit be0700e), kept to compare with: it ran with other "
                          "work on a host without AVX-512 (load average 14.7, 1.64 other cores busy), so its times "
                          "say nothing against bench_lists' quiet run; rerun `benchmarks/bench_lists.py --code "
                          "<checkout of be0700e> --name bench_lists_before` on a quiet machine to compare",
}
# result name -> (title, where its rows are in "figures", [(column key, header)], extra lines)
LAYOUTS = {
    "bench_training": ("Training speed: real loader, synthetic batches, loaders, the original's training loop",
                       None, [("name", "measurement"), ("img_s", "img/s"), ("img_s_per_core", "img/s per core"),
                              ("ratio", "ratio"), ("target", "target")]),
    "bench_original": ("The original's job, whole process, equal threads", "rows",
                       [("side", "side"), ("omp_num_threads", "OMP_NUM_THREADS"), ("loader", "loader"),
                        ("wall_s", "wall s"), ("cpu_s", "CPU s"), ("train_img_s", "img/s"),
                        ("train_img_s_per_core", "img/s per core"),
                        ("speedup_vs_original_equal_threads", "vs original, equal threads (ratio of medians)"),
                        ("paired_speedups", "vs original, run by run"),
                        ("paired_speedup_median", "vs original, median of runs")]),
    "bench_fusion": ("BatchNorm+ReLU fused on the CPU: the same network with and without", "rows",
                     [("trunk", "trunk"), ("measurement", "measurement"), ("image", "image"), ("batch", "batch"),
                      ("plain_img_s", "plain img/s"), ("fused_img_s", "fused img/s"),
                      ("ratio", "fused / plain (paired rounds)")]),
    "bench_precision": ("Lower precision on the CPU: INT8 inference, bf16 training, accuracy parity", "rows",
                        [("measurement", "measurement"), ("value", "measured"), ("target", "target"),
                         ("met", "met")]),
    "bench_finetune": ("Fine-tuning: --freeze-trunk, --cache-images", "rows",
                       [("name", "measurement"), ("img_s", "img/s"), ("ratio", "ratio")]),
    "bench_predict": ("predict: batched against one image at a time", "rows",
                      [("path", "path"), ("batch", "batch"), ("img_s", "img/s"), ("vs_loop", "vs loop"),
                       ("baseline", "baseline")]),
    "bench_serve": ("serve: load test, batching on and off", "rows",
                    [("server", "server"), ("max_batch", "max batch"), ("omp_wait_policy", "OMP_WAIT_POLICY"),
                     ("req_s", "req/s"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("mean_batch", "mean batch"),
                     ("errors", "errors")]),
    "bench_small_net": ("A small network against a plain PyTorch script, equal threads", "rows",
                        [("measurement", "measurement"), ("side", "side"), ("img/s", "img/s"), ("s", "wall s"),
                         ("acc", "held-out accuracy"), ("vs_pytorch", "ours vs PyTorch (>1: faster)")]),
    "bench_loader": ("The training loader alone: img/s per worker process, float32 and uint8 batches", "rows",
                     [("workers", "worker processes"), ("dtype", "batch dtype"), ("img_s", "img/s"),
                      ("img_s_per_worker", "img/s per worker")]),
    "bench_task_gradients": ("Task gradients: plain summed loss, statistics every batch, PCGrad", "methods",
                             [("method", "method"), ("img_s", "img/s"), ("relative_to_sum", "relative to plain"),
                              ("epochs_measured", "epochs measured")]),
    "bench_lists": ("A 1,000,000-line list: reading, the header check, training start", None,
                    [("case", "case"), ("case_seconds", "case s"), ("process_seconds", "process s"),
                     ("cpu_seconds", "CPU s"), ("children_cpu_seconds", "workers' CPU s"), ("rss_mb", "peak MB"),
                     ("children_rss_mb", "workers' peak MB"), ("entries", "entries"),
                     ("log_file_bytes", "train.log bytes"), ("longest_stderr_line", "longest console line")]),
    "bench_distributed": ("Distributed training on one machine", "jobs",
                          [("name", "job"), ("img_s", "samples/s"), ("epoch_s", "s/epoch"), ("job_s", "command s")]),
    "bench_distributed_scaling": ("Gradient exchange against the workers, on loopback and across network namespaces",
                                  "exchange", [("engine", "engine"), ("where", "where"), ("network", "parameters"),
                                               ("mfloats", "M floats"), ("workers", "workers"),
                                               ("ms_median", "ms per exchange"), ("ms_min", "min"), ("ms_max", "max")]),
    "bench_demo": ("`make demo` on data_example/: the script as shipped against the one before", "rows",
                   [("side", "side"), ("flags", "flags appended"), ("epochs", "epochs"),
                    ("label_runs", "`label` per seed"), ("label", "`label` mean"), ("label_gt0", "`label_gt0` mean"),
                    ("seconds_runs", "seconds per seed"), ("seconds", "seconds mean")]),
    "bench_learning": ("Learning quality: held-out `label` accuracy, train's defaults against other recipes", "rows",
                       [("dataset", "dataset"), ("budget", "train images x epochs"), ("default", "default flags"),
                        ("none", "--augment none"), ("light", "--augment light"),
                        ("standard", "--augment standard"), ("light-noflip", "light, no flip"),
                        ("standard-noflip", "standard, no flip"), ("none-lr0.0125", "none, lr 0.0125"),
                        ("none-lr0.05", "none, lr 0.05"), ("original", "original's recipe"), ("tuned", "tuned"),
                        ("best_preset", "best preset"),
                        ("default_within_0.02", "default within 0.02 of best preset"),
                        ("default_minus_best_other", "default - best of all")]),
}
# Accuracy does not depend on how busy the cores were (only the run time does): published under load too,
# with a note. These results have their own block (<!-- bench:start bench_learning -->), not the speed one.
LOAD_INDEPENDENT = ("bench_learning",)
# results restored from the repository's history under another file name, and what they measured
RESTORED = {"bench_small_net_avx2": "stored at commit 37facfd, with the code before 976783b's mean pooling "
                                    "(which took the AVX-512 host from 29.6 s to 17.2 s)"}
# results shown only in their own block (README's quick start), not in the speed section's
OWN_BLOCK = LOAD_INDEPENDENT + ("bench_demo",)


def load_results(folder=RESULTS):
    """{name: record} for every results/*.json (not the smoke folder)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            record = json.load(f)
        record["_file"] = os.path.relpath(path, REPO)
        # keyed by file name: a result restored from the history under another name keeps its record as stored
        out[os.path.splitext(os.path.basename(path))[0]] = record
    return out


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return "%.3f" % value if abs(value) < 10 else "%.1f" % value
    if isinstance(value, list):  # per-seed or per-repeat figures
        return " / ".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|")


# results stored as {name: {figures}} rather than a list of rows: the column their names go in
KEYED_ROWS = {"bench_task_gradients": ("method", {"sum": "plain (one summed backward)",
                                                  "stats_every_1": "--grad-stats-every 1",
                                                  "pcgrad": "--grad-method pcgrad"})}


def _rows(record, where):
    figures = record["figures"]
    if record.get("name") in KEYED_ROWS:
        column, labels = KEYED_ROWS[record["name"]]
        keys = [k for k in labels if k in figures] + [k for k in figures if k not in labels]
        return [dict(figures[key], **{column: labels.get(key, key)}) for key in keys if isinstance(figures[key], dict)]
    if where is None:
        return figures if isinstance(figures, list) else figures.get("rows", [])
    return figures.get(where, [])


def machine_line(record):
    """'AMD EPYC, 2 usable cores, 23.5 GB; AVX-512: no, AMX: no' from a record's machine."""
    m = record.get("machine", {})
    if not isinstance(m, dict):  # a hand-made or older result: its machine as written there
        return str(m)
    flags = m.get("flags", {})
    isa = [name for name in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if flags.get(name)]
    return "%s, %s usable of %s cores, %s GB, CPU flags: %s" % (
        m.get("cpu", "?"), m.get("usable_cores", "?"), m.get("cpu_count", "?"), m.get("memory_gb", "?"),
        ", ".join(isa) if isa else "no AVX-512/AMX")


def render_one(name, record):
    """Markdown for one result: title, provenance, then its table (or the under-load note)."""
    title, where, columns = LAYOUTS.get(name) or LAYOUTS.get(record.get("name"), (name, None, None))
    if name in RESTORED:
        title = "%s: `%s`, %s" % (title, name, RESTORED[name])
    v = record.get("versions", {})
    lines = ["#### %s" % title, "",
             "`%s` (from `%s`, %s UTC); %s; python %s, mxnet %s, numpy %s, opencv %s; threads %s." % (
                 record["_file"], record.get("command", "?"), record.get("utc", "?").replace("T", " ").rstrip("Z"),
                 machine_line(record),
                 v.get("python"), v.get("mxnet"), v.get("numpy"), v.get("opencv"),
                 ", ".join("%s=%s" % kv for kv in sorted(record.get("threads", {}).get("environment", {}).items()))
                 or "the program's own choice (see the table)"), ""]
    if not record.get("quiet") and name in LOAD_INDEPENDENT:
        lines += ["Run under load (load average %s at the start): these figures are accuracies, which do not "
                  "depend on it." % " ".join("%.2f" % x for x in record.get("load_average", {}).get("start", [])), ""]
    elif not record.get("quiet"):
        busy = record.get("others_busy_cores", {})
        lines += ["**Under load, not published**: other processes kept %s cores busy during the run (limit %s; "
                  "load average %s at the start). Rerun it on a quiet machine." % (
                      busy.get("during"), busy.get("limit"),
                      " ".join("%.2f" % x for x in record.get("load_average", {}).get("start", []))), ""]
        return lines
    rows = _rows(record, where)
    if columns is None:  # a result this script does not know: every key of its rows
        columns = [(k, k) for k in dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], (list, dict)))]
    lines += ["| " + " | ".join(h for _, h in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    lines.append("")
    lines += extra_lines(name, record)
    return lines


def extra_lines(name, record):
    """What a result carries beside its table (notes, our phase breakdown, pushpull times)."""
    figures, out = record["figures"], []
    if name == "bench_original" and figures.get("our_phases_s"):
        out.append("Our side's phases (train.log, medians): " + ", ".join(
            "%s %.1f s" % kv for kv in figures["our_phases_s"].items()) + ".")
    if name == "bench_precision":
        for key, values in figures.items():
            if key.startswith(("inference", "training")):
                out.append("%s, medians: %s." % (key[0].upper() + key[1:], ", ".join(
                    "%s %s" % (k, v) for k, v in values.items() if isinstance(v, (int, float)) and "/" not in k)))
        acc = figures.get("accuracy", {})
        if acc:
            out.append("Accuracy: %s; %s, %s epochs: %s." % (acc.get("data"), acc.get("network"), acc.get("epochs"),
                       ", ".join("%s %s" % (k, v) for k, v in acc.items() if "accuracy" in k or "agreement" in k)))
    if name == "bench_fusion" and figures.get("update"):
        u = figures["update"]
        out.append("SGD update of the %s's %d parameters: %.1f ms grouped 4 per operator (MXNet's default), %.1f ms "
                   "one by one (what `train` does on CPUs); grouped / one by one %.3f (paired rounds)."
                   % (u["trunk"], u["parameters"], u["grouped_ms"], u["one_by_one_ms"], u["grouped_over_one_by_one"]))
    if name == "bench_distributed":
        out += ["%s: %.1f ms per pushpull of %d arrays" % (p["name"], p["ms_median"], p["arrays"])
                for p in figures.get("pushpull", [])]
    if name == "bench_distributed_scaling":
        hosts = figures.get("settings", {}).get("namespaces")
        out += ["Across the namespaces: %s." % hosts] if hosts and record.get("notes") is None else []
        out += ["%s: the launcher ended the job %.1f s after it (exit %d)." % (f["fault"], f["seconds"], f["exit"])
                for f in figures.get("faults", [])]
    if name == "bench_learning":
        trunks = ["%s %s per class x %s epochs, held-out accuracy %.3f" % (
            (ds,) + tuple(ft["pretrain"].split("x")) + (ft["pretrain_val_acc"],))
            for ds, ft in ((d, r.get("finetune") or {}) for d, r in figures.get("results", {}).items())
            if "pretrain_val_acc" in ft]
        out += ["Fine-tuning a trunk pretrained on classes 0-4 (GluonCV-style `.params`, `--model FILE.params`%s) "
                "against scratch on classes 5-9, same budget and flags (heads-1x and heads-10x: the default with "
                "`--head-lr-mult 1` or `10` instead of 4, against the default's scratch runs; tuned-heads-4x: "
                "the tuned recipe with `--head-lr-mult 4`, against tuned's):"
                % ("; " + "; ".join(trunks) if trunks else ""), "",
                "| dataset | images x epochs | recipe | scratch | fine-tune | fine-tune beats scratch |",
                "| --- | --- | --- | --- | --- | --- |"]
        out += ["| %s | %s | %s | %s | %s | %s |" % (r["dataset"], r["budget"], r["recipe"], _cell(r["scratch"]),
                                                    _cell(r["finetune"]), r["finetune_beats_scratch"])
                for r in figures.get("finetune_rows", [])]
        out += ["", "Recipes' flags: " + "; ".join("%s: `%s`" % (k, " ".join(v or []) or "(none)")
                                                  for k, v in figures.get("recipes", {}).items()) + ".",
                "Data: " + "; ".join("%s: %s" % kv for kv in figures.get("datasets", {}).items()) + "."]
    notes = record.get("notes")
    if notes:
        if isinstance(notes, dict):
            notes = ["%s: %s" % kv for kv in notes.items()]
        out.append("Notes: " + ("; ".join(notes) if isinstance(notes, list) else str(notes)) + ".")
    return out + ([""] if out else [])


def render(results, names=None):
    """The block's text for ``names`` (default: every result, known ones first, then the ones left out and why)."""
    if names == ["quickstart"]:
        return quickstart(results)
    chosen = names or [n for n in RESULT_ORDER if n in results] + sorted(set(results) - set(RESULT_ORDER)
                                                                      - set(OWN_BLOCK) - set(EXCLUDED))
    lines = []
    for name in chosen:
        if name in EXCLUDED:
            lines += ["`benchmarks/results/%s.json` is not shown: %s." % (name, EXCLUDED[name]), ""]
        elif name in results:
            lines += render_one(name, results[name])
        else:
            lines += ["`benchmarks/results/%s.json`: no stored run yet (see benchmarks/README.md)." % name, ""]
    if not names:
        lines += ["`benchmarks/results/%s.json` is not shown: %s." % kv for kv in sorted(EXCLUDED.items())
                  if kv[0] in results]
        lines += [""] if lines and lines[-1] else []
    if not lines:
        lines = ["No stored benchmark run yet: see benchmarks/README.md.", ""]
    return "\n".join(lines)


def _span(values, fmt="%.3f"):
    """'a-b' of the smallest and largest of ``values`` (one value: itself)."""
    low, high = min(values), max(values)
    return fmt % low if fmt % low == fmt % high else (fmt + "-" + fmt) % (low, high)


def _machine_short(record):
    m = record.get("machine", {})
    flags = m.get("flags", {})
    isa = "AMX" if flags.get("amx_tile") else "AVX-512" if flags.get("avx512f") else "no AVX-512"
    return "%s cores of an %s (%s)%s" % (m.get("usable_cores", "?"), m.get("cpu", "?"), isa,
                                         "" if record.get("quiet") else ", with other work running")


def quickstart(results):
    """The README's expectations: the demo's time and accuracy, the same network on each machine measured."""
    lines = []
    demo = results.get("bench_demo")
    row = next((r for r in (demo or {}).get("figures", {}).get("rows", []) if r.get("side") == "demo"), None)
    if row:
        lines.append("- `make demo` (%s epochs of ResNet-20 at 32x32 on data_example/'s 240 images): %s s per run "
                     "and held-out `label` accuracy %s, `label_gt0` %s, over %d seeds on %s (`%s`)." % (
                         row["epochs"], _span(row["seconds_runs"], "%.0f"), _span(row["label_runs"]),
                         _span([row["label_gt0"]], "%.2f"), len(row["label_runs"]), _machine_short(demo),
                         demo["_file"]))
    jobs = []
    for name in sorted(n for n in results if n.startswith("bench_small_net")):
        record = results[name]
        wall = [r["s"] for r in record["figures"].get("rows", []) if r.get("side") == "ours (MXNet)" and "s" in r]
        if wall:
            jobs.append("%.1f s on %s (`%s`%s)" % (wall[0], _machine_short(record), record["_file"],
                                                    "; " + RESTORED[name] if name in RESTORED else ""))
    if jobs:
        lines.append("- The same network, 2,000 images x 5 epochs + validation: " + "; ".join(jobs) + ".")
    return "\n".join(lines + [""]) if lines else "No stored demo run yet: see benchmarks/README.md.\n"


def update_text(text, results):
    """``text`` with every bench block regenerated from ``results``."""
    def block(match):
        names = match.group(2).split() or None
        return match.group(1) + render(results, names) + match.group(4)
    return BLOCK.sub(block, text)


def main(argv=None):
    """Rewrite (or --check) the generated blocks of the target files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=RESULTS, help="folder of result files")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    parser.add_argument("files", nargs="*", default=[os.path.join(REPO, t) for t in TARGETS])
    args = parser.parse_args(argv)
    argv_files = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")
                  and a != args.results]
    results, stale = load_results(args.results), []
    for path in args.files:
        if not os.path.exists(path) and not argv_files:  # an optional target (docs/learning.md) not written yet
            continue
        with open(path) as f:
            text = f.read()
        new = update_text(text, results)
        if new != text:
            stale.append(path)
            if not args.check:
                with open(path, "w") as f:
                    f.write(new)
    print(("stale: " if args.check else "updated: ") + (", ".join(os.path.relpath(p) for p in stale) or "none"))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())

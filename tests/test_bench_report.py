"""benchmarks/common.write_result and benchmarks/report.py on small stored results (no benchmark runs)."""
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import common  # noqa: E402
import report  # noqa: E402

DOC = "# Title\n\ntext before\n\n<!-- bench:start -->\nold figures 99.9\n<!-- bench:end -->\n\n" \
      "## Serving\n\n<!-- bench:start bench_serve -->\n<!-- bench:end -->\nafter\n"


def store(folder, name, figures, quiet):
    """A real result file from write_result, then its quiet flag set as a run on a (not) busy machine would."""
    path = common.write_result(name, figures, command="python benchmarks/%s.py" % name, smoke=False,
                               results_dir=str(folder))
    with open(path) as f:
        record = json.load(f)
    record["quiet"] = quiet
    with open(path, "w") as f:
        json.dump(record, f)
    return path


def test_write_result_records_machine_load_versions_and_command(tmp_path):
    path = common.write_result("bench_x", {"rows": [{"img_s": 1.5}]}, notes="n", smoke=False,
                               results_dir=str(tmp_path))
    assert path == str(tmp_path / "bench_x.json")
    record = json.loads(open(path).read())
    assert record["figures"] == {"rows": [{"img_s": 1.5}]}
    assert set(record["machine"]["flags"]) == set(common.CPU_FLAGS)
    assert record["machine"]["usable_cores"] >= 1 and record["machine"]["cpu"]
    assert len(record["load_average"]["start"]) == 3 and len(record["load_average"]["end"]) == 3
    assert record["versions"]["numpy"] and record["versions"]["python"]
    assert isinstance(record["quiet"], bool) and record["utc"].endswith("Z")
    assert record["command"].startswith(".venv/bin/python")
    smoke = common.write_result("bench_x", [], smoke=True, results_dir=str(tmp_path))
    assert smoke == str(tmp_path / "smoke" / "bench_x.json")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # written through a renamed temp file


def test_report_shows_quiet_figures_and_hides_runs_under_load(tmp_path):
    store(tmp_path, "bench_serve", {"rows": [{"server": "batching on", "max_batch": 16, "omp_wait_policy": "PASSIVE",
                                              "req_s": 41.7, "p50_ms": 180, "p95_ms": 230, "mean_batch": 4.0,
                                              "errors": 0}]}, quiet=True)
    store(tmp_path, "bench_original", {"rows": [{"side": "ours", "wall_s": 12.25}], "our_phases_s": {"lists": 0.1}},
          quiet=False)
    results = report.load_results(str(tmp_path))
    text = report.update_text(DOC, results)
    assert "old figures 99.9" not in text and text.startswith("# Title\n\ntext before") and text.endswith("after\n")
    top, serving = text.split("## Serving")
    assert "41.7" in top and "41.7" in serving  # one stored run feeds both places
    assert "bench_serve.json" in serving and "python benchmarks/bench_serve.py" in serving
    # the busy run's row is withheld (its figure 12.25 alone could match the load average the note prints)
    assert "Under load, not published" in top and "| ours |" not in top and "| side |" not in top
    assert "bench_original" not in serving
    assert report.update_text(text, results) == text  # regenerating changes nothing


def test_report_check_flags_a_stale_file(tmp_path):
    store(tmp_path / "results", "bench_predict", {"rows": [{"path": "(a)", "batch": 32, "img_s": 30.5}]}, quiet=True)
    doc = tmp_path / "README.md"
    doc.write_text(DOC)
    args = ["--results", str(tmp_path / "results"), str(doc)]
    assert report.main(args + ["--check"]) == 1
    assert report.main(args) == 0 and "30.5" in doc.read_text()
    assert report.main(args + ["--check"]) == 0


def test_report_leaves_files_without_markers_alone():
    assert report.update_text("no markers at all\n", {}) == "no markers at all\n"


def test_phases_add_up_repeated_phases_and_bench_original_reads_the_summary(tmp_path, caplog):
    import logging
    import bench_original
    from multitask_mx.training import phases

    timer = phases.Phases()
    with caplog.at_level(logging.DEBUG, logger="multitask_mx.training.phases"):
        timer.start()
        for _ in range(2):
            timer.switch("training loop")
            timer.switch("validation")
        totals = timer.finish()
    assert list(totals)[0] == phases.STARTUP and totals[phases.STARTUP] > 0  # this test process's own age
    assert timer.counts == {phases.STARTUP: 1, "training loop": 2, "validation": 2}
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("phases: ")]
    assert len(summary) == 1 and "training loop" in summary[0] and "(x2)" in summary[0]
    log = tmp_path / "train.log"
    log.write_text("2026-01-01 00:00:00 I %s\n" % summary[0])
    parsed = bench_original.read_phases(str(log))
    assert list(parsed) == list(totals)
    # %.1f rounds by at most 0.05; the slack covers float error at the test process's age (hundreds of s)
    assert all(abs(parsed[k] - totals[k]) <= 0.05 + 1e-6 for k in totals)


def test_keyed_figures_render_as_rows_and_excluded_results_say_why(tmp_path):
    store(tmp_path, "bench_task_gradients", {"pcgrad": {"img_s": 182.3, "relative_to_sum": 0.388, "epochs_measured": 4},
                                             "sum": {"img_s": 469.6, "relative_to_sum": 1.0, "epochs_measured": 4}},
          quiet=True)
    store(tmp_path, "bench_lists_before", [{"case": "read_list", "case_seconds": 29.1}], quiet=False)
    text = report.render(report.load_results(str(tmp_path)))
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[2].startswith("| plain (one summed backward) | 469.6 | 1.000 | 4 |")  # plain first, then the others
    assert table[3].startswith("| --grad-method pcgrad | 182.3 | 0.388 | 4 |")
    assert "`benchmarks/results/bench_lists_before.json` is not shown: the list code before" in text
    assert "29.1" not in text


def test_exchange_rows_say_where_they_ran_and_faults_follow_the_table(tmp_path):
    row = {"engine": "ps-lite", "workers": 2, "network": "resnet50_v1", "mfloats": 25.58, "ms_median": 1241.1,
           "ms_min": 1195.4, "ms_max": 1406.8}
    store(tmp_path, "bench_distributed_scaling", {
        "exchange": [dict(row, where="loopback"), dict(row, where="namespaces", ms_median=1302.5)],
        "faults": [{"fault": "SIGKILL worker 1", "seconds": 4.1, "exit": 1, "reported": "worker 1 was killed"}],
        "settings": {"iterations": 10, "stall": 10, "namespaces": "the server on host 1"}}, quiet=True)
    text = report.render(report.load_results(str(tmp_path)))
    assert "| ps-lite | loopback | resnet50_v1 | 25.6 | 2 | 1241.1 |" in text
    assert "| ps-lite | namespaces | resnet50_v1 | 25.6 | 2 | 1302.5 |" in text
    assert "Across the namespaces: the server on host 1." in text
    assert "SIGKILL worker 1: the launcher ended the job 4.1 s after it (exit 1)." in text


def test_cpu_counted_as_own_is_not_taken_for_other_work():
    # processes a run starts through an sshd are not its descendants: os.times() misses their CPU
    before = common._busy_seconds()
    common.count_own_cpu(5.0)
    try:
        assert common._busy_seconds()[1] - before[1] >= 5.0 - 1e-6
        assert common._others_busy_cores((10.0, before[1]), (16.0, common._busy_seconds()[1]), 1.0) <= 1.0
    finally:
        common._OWN_ELSEWHERE[0] -= 5.0


def test_the_repository_s_generated_blocks_are_current_and_name_their_machines():
    assert report.main(["--check"]) == 0  # README.md, docs/benchmarks.md, docs/serving.md match results/
    with open(os.path.join(REPO, "docs", "benchmarks.md")) as f:
        page = f.read()
    sections = page.split("\n#### ")[1:]
    assert len(sections) >= 14
    for section in sections:  # the line after each title: file, command, date, then the machine
        provenance = section.split("\n")[2]
        assert ".json` (from `" in provenance and " usable of " in provenance and "CPU flags:" in provenance
    for name in ("bench_loader", "bench_task_gradients", "bench_lists", "bench_small_net_avx2", "bench_demo"):
        assert "benchmarks/results/%s.json` (from" % name in page, name
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    quick = readme.split("<!-- bench:start quickstart -->")[1].split("<!-- bench:end -->")[0]
    assert "`make demo`" in quick and "AVX-512" in quick and "no AVX-512" in quick

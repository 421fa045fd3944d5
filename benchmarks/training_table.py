"""bench_training.py's table: its rows, their text and their JSON (no mxnet here)."""
import statistics
from dataclasses import dataclass


@dataclass
class Row:
    """One line of the table: a figure's runs; a pair's ratio and target sit on its first row."""

    name: str
    runs: list
    ratio: float = None
    target: float = None
    note: str = ""
    cores: int = None  # (c): cores the loader can keep busy (its processes, at most the usable cores)

    @property
    def speed(self):
        """The median of the runs (img/s)."""
        return statistics.median(self.runs)


def pair(first, second, target=None):
    """Two rows ((name, runs) each), the ratio of their medians on the first."""
    rows = [Row(*first), Row(*second)]
    rows[0].ratio, rows[0].target = rows[0].speed / rows[1].speed, target
    return rows


def proc_field(path, key):
    """The value after ``key:`` in a /proc file such as /proc/cpuinfo, or '?'."""
    try:
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), "?")
    except OSError:
        return "?"


def table_lines(rows):
    """The figures: measurement, img/s (median), ratio, target, pass/fail, and the runs' range."""
    out = ["%-78s %9s %9s %6s %8s %6s  %s" % ("measurement", "img/s", "img/s/core", "ratio", "target", "result",
                                               "runs (img/s)")]
    for row in rows:
        ratio = "%.3f" % row.ratio if row.ratio is not None else ""
        target = ">= %.1f" % row.target if row.target is not None else ("-" if row.ratio is not None else "")
        result = ("pass" if row.ratio >= row.target else "FAIL") if row.target is not None else target
        spread = "%.2f-%.2f" % (min(row.runs), max(row.runs)) if len(row.runs) > 1 else ""
        per_core = "%.1f" % (row.speed / row.cores) if row.cores else ""
        out.append("%-78s %9.2f %9s %6s %8s %6s  %s" % (row.name, row.speed, per_core, ratio, target, result, spread))
    out.append("ratio: (a)/(b); (c) ours/ImageIter; (d) ours/original, the training loop's speed-up; on an "
               "'as shipped' row: ours/that row. img/s/core: (c) img/s / min(loader processes, usable cores)")
    notes = {}
    for row in rows:
        if row.note:
            notes.setdefault(row.note, []).append(row.name.split()[0])
    out += ["note %s: %s" % (", ".join(names), note) for note, names in notes.items()]
    return out


def row_figures(row):
    """One table row as JSON: name, median img/s, runs, ratio, target, img/s per core, note."""
    return {"name": row.name, "img_s": round(row.speed, 2), "runs": [round(x, 2) for x in row.runs],
            "ratio": None if row.ratio is None else round(row.ratio, 3), "target": row.target,
            "img_s_per_core": round(row.speed / row.cores, 2) if row.cores else None, "note": row.note}

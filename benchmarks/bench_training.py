#!/usr/bin/env python
"""Training speed on this machine: one table, every figure measured side by side in one run.

(a) training img/s of our real pipeline: LstDataset + make_loader (real JPEG files,
    TrainTransform, worker processes) feeding training.train_one_epoch (hybridized
    MultiTaskNet, MultiTaskLoss, TaskMetrics, gluon.Trainer);
(b) the same network, batch and train_one_epoch on in-memory synthetic batches;
(c) our loader alone against mx.image.ImageIter set up as the original (in the baseline's
    subprocess) on the same files;
(d) the training loop on the classic ResNet-50 symbol: our trainer (--model PREFIX path)
    against the original multi-task-MXNet (original_baseline.py, a subprocess).

Equal threads: the original's subprocess gets this process's OMP_NUM_THREADS (and no other
thread variable), so (c) and (d) compare code, not thread settings; the original as shipped
(MXNet's default threads: 1 OpenMP thread on 2 cores) is measured beside it and shown on its
own row. The whole job, process start to end, is bench_original.py's.

Targets (issue 2, on 2 CPU cores, resnet50_v1 at 224): (a)/(b) >= 0.9, (c) >= 1.5.
Each figure is one whole epoch of the real loop over ``--batches`` batches (or about
``--seconds``) after untimed warm-up epochs, as ``train_one_epoch`` reports it.

    python benchmarks/bench_training.py            # full run (resnet50_v1, 224, batch 16)
    python benchmarks/bench_training.py --quick    # about a minute: small images, few batches
    python benchmarks/bench_training.py --smoke    # seconds: resnet18_v1 at 32, (a)-(c) only; shows it runs
"""
import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from multitask_mx import _runtime  # noqa: E402  (does not import mxnet)

BASELINE_SCRIPT = os.path.join(REPO, "benchmarks", "original_baseline.py")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS", "MXNET_OMP_MAX_THREADS",
                    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# The baseline's environment as shipped: as this process was started, minus every thread setting.
SHIPPED_ENV = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
import common  # noqa: E402  (benchmarks/: the run's machine, load and result file)
_runtime.configure_threads()  # OpenMP reads OMP_NUM_THREADS once, when mxnet loads: before the imports below
# ... and at equal threads: the same OMP_NUM_THREADS (and OpenMP wait policy) as ours.
EQUAL_ENV = dict(SHIPPED_ENV, **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ})

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import gluon  # noqa: E402

from multitask_mx.model import network as model
from multitask_mx.training import loop as training  # noqa: E402
from multitask_mx.training import pipeline  # noqa: E402
from multitask_mx.commands.doctor import build_features, versions  # noqa: E402
from multitask_mx.data.datasets import make_loader  # noqa: E402
from multitask_mx.data.lists import read_list  # noqa: E402
from multitask_mx.training.metrics import TaskMetrics  # noqa: E402
from multitask_mx.data.tasks import build_tasks  # noqa: E402
from photos import Lists, make_photos  # noqa: E402  (benchmarks/, the script's folder)
from training_table import Row, pair, proc_field, row_figures, table_lines  # noqa: E402

CLASSIC_SYMBOL = os.path.join(REPO, "tests", "fixtures", "resnet-50-symbol.json")
NUM_CLASSES = 4
PRESETS = {  # flag -> (full run, --quick, --smoke)
    "size": (224, 64, 32), "batch_size": (16, 8, 8), "images": (96, 32, 16), "photo": ("500x375", "256x192", "64x48"),
    "batches": (20, 8, 2), "warmup": (3, 2, 1), "loader_batches": (60, 20, 4),
}


@dataclass(frozen=True)
class Settings:
    """What to measure, from the flags and the preset they leave open."""

    network: str
    size: int
    batch_size: int
    images: int
    photo: tuple
    batches: int
    seconds: float
    warmup: int
    loader_batches: int
    workers: int
    repeats: int
    skip: frozenset
    classic_symbol: str
    as_shipped: bool = True
    smoke: bool = False


def parse_settings(argv=None):
    """Flags -> Settings; flags left out take the full or the --quick preset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a run of about a minute (small sizes)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: resnet18_v1 at 32, (d) and the as-shipped runs left out; result in results/smoke/")
    parser.add_argument("--no-as-shipped", dest="as_shipped", action="store_false",
                        help="leave out the original with MXNet's default threads (shown beside equal threads)")
    parser.add_argument("--network", default="resnet50_v1", help="GluonCV network for (a) and (b)")
    parser.add_argument("--size", type=int, help="network input side (full 224, quick 64)")
    parser.add_argument("--batch-size", type=int, help="batch (full 16, quick 8)")
    parser.add_argument("--images", type=int, help="distinct JPEG files generated (full 96, quick 32)")
    parser.add_argument("--photo", help="WIDTHxHEIGHT of the generated JPEGs (full 500x375, quick 256x192)")
    parser.add_argument("--batches", type=int, help="timed training batches per figure (full 20, quick 8)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="time each figure for about this long instead of --batches")
    parser.add_argument("--warmup", type=int, help="untimed batches before each figure (full 3, quick 2)")
    parser.add_argument("--loader-batches", type=int, help="timed batches for (c) (full 60, quick 20)")
    parser.add_argument("--workers", type=int, default=min(4, _runtime.usable_cores()),
                        help="loader worker processes (train's --data-nthreads default: cores, at most 4)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each pair this many times, alternating; the table shows medians")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: ab, c, d")
    parser.add_argument("--classic-symbol", default=CLASSIC_SYMBOL,
                        help="the classic MXNet resnet-50-symbol.json for (d) (weights are generated)")
    args = parser.parse_args(argv)
    preset = 2 if args.smoke else int(args.quick)
    chosen = {k: getattr(args, k) if getattr(args, k) is not None else v[preset] for k, v in PRESETS.items()}
    photo = tuple(int(v) for v in chosen.pop("photo").lower().split("x"))
    skip = frozenset(filter(None, args.skip.split(","))) | (frozenset(["d"]) if args.smoke else frozenset())
    return Settings(network="resnet18_v1" if args.smoke else args.network, photo=photo, seconds=args.seconds,
                    workers=args.workers, repeats=1 if args.smoke else max(1, args.repeats), skip=skip,
                    classic_symbol=args.classic_symbol, as_shipped=args.as_shipped and not args.smoke,
                    smoke=args.smoke, **chosen)


# --- measuring ------------------------------------------------------------------------------------

def measure(epochs_of, s: Settings, batches):
    """img/s of one timed epoch; ``epochs_of(n)`` gives a ready source whose call runs an n-batch epoch.

    A warm-up epoch of --warmup batches comes first (memory planning, file cache) and
    sets the number of batches when --seconds is given.
    """
    speed = epochs_of(s.warmup)()
    if s.seconds:
        batches = max(3, int(round(s.seconds * speed / s.batch_size)))
    speed = epochs_of(batches)()
    gc.collect()  # end the figure's loader and its worker processes before the next figure
    return speed


def alternate(named_sources, s: Settings, batches):
    """Measure each (name, epochs_of) in turn, ``repeats`` times; {name: [img/s, ...]}."""
    speeds = {name: [] for name, _ in named_sources}
    for _ in range(s.repeats):
        for name, epochs_of in named_sources:
            speeds[name].append(measure(epochs_of, s, batches))
            print("  %s: %.2f img/s (load average %.1f)" % (name, speeds[name][-1], os.getloadavg()[0]),
                  file=sys.stderr, flush=True)
    return speeds


def train_args(s: Settings, lst_path):
    """`multitask-mx train`'s argv with this run's list, batch and image shape (every other flag at its default)."""
    return ["--data-train", lst_path, "--save-result", "unused", "--batch-size", str(s.batch_size),
            "--image-shape", "3,%d,%d" % (s.size, s.size)]


def train_config(s: Settings, lst_path):
    """The TrainConfig of ``train_args``."""
    return common.train_config(train_args(s, lst_path))


def real_loader(lists, tasks, normalization, s: Settings, batches):
    """Our training loader as `train` builds it (dataset, transform preset, workers) over ``batches`` batches."""
    path = lists.path(batches * s.batch_size)
    dataset = common.train_dataset(read_list(path, lists.root), tasks, train_args(s, path), normalization)
    return make_loader(dataset, s.batch_size, True, s.workers, last_batch="rollover")


def synthetic_batches(tasks, s: Settings, batches):
    """``batches`` references to one in-memory batch shaped like the loader's."""
    labels = np.random.randint(0, NUM_CLASSES, s.batch_size)
    columns = [labels if t.derive is None else (labels > 0) for t in tasks]
    batch = (mx.nd.random.uniform(-2, 2, shape=(s.batch_size, 3, s.size, s.size)),
             mx.nd.array(np.stack(columns, axis=1), dtype="int32"),
             mx.nd.arange(s.batch_size, dtype="int32"))
    return [batch] * batches


class TrainEpochs:
    """Our training step on ``net`` as `train` sets it up: one Trainer, loss and metrics for every data source."""

    def __init__(self, net, tasks, config):
        self.net, self.ctxs = net, [mx.cpu()]
        # As train's make_trainer and start_trainer: SGD with momentum and wd, no kvstore for one device,
        # each parameter updated by its own operator on a CPU.
        optim = config.optim
        self.trainer = gluon.Trainer(net.collect_params(), optim.optimizer,
                                     {"learning_rate": optim.lr, "momentum": optim.mom, "wd": optim.wd},
                                     kvstore=None, update_on_kvstore=False)
        pipeline.update_parameters_one_by_one(self.trainer.optimizer)
        self.loss_fn = training.MultiTaskLoss([t.num_classes for t in tasks], label_smoothing=optim.label_smoothing)
        self.metrics = TaskMetrics([t.name for t in tasks], self.ctxs)
        self.cfg = training.LoopConfig(log_every=config.monitor.disp_batches, progress_bar=False)

    def epoch(self, batches):
        """img/s of one train_one_epoch over ``batches``, timed from an idle engine to an idle engine."""
        seen = []

        def counted():
            for batch in batches:
                seen.append(batch[0].shape[0])
                yield batch
        mx.nd.waitall()  # nothing from before (warm-up, priming) runs into the timing
        tic = time.time()
        training.train_one_epoch(self.net, self.trainer, counted(), self.ctxs, self.loss_fn, self.metrics, 0,
                                 self.cfg)
        mx.nd.waitall()  # the last batch's backward and update are done, not only queued
        return sum(seen) / (time.time() - tic)

    def sources(self, make_batches):
        """epochs_of(n): the same n batches (one loader, one worker pool) for every epoch, as in `train`."""
        def epochs_of(n):
            batches = make_batches(n)
            if isinstance(batches, gluon.data.DataLoader):
                self._prime(batches)
            return lambda: self.epoch(batches)
        return epochs_of

    def _prime(self, loader):
        # Starting the worker pool forks this process: then the first write to each page
        # of the training buffers copies it (about 100,000 page faults for ResNet-50 at
        # 64x64). `train` pays that once per run, so it is paid here before any timing.
        batches = iter(loader)
        self.epoch(itertools.islice(batches, 1))
        for _ in batches:
            pass


def loading_sources(make_loader_for):
    """epochs_of(n): img/s of iterating one loader of n batches, after an untimed pass."""
    def epochs_of(n):
        loader = make_loader_for(n)

        def run_epoch():
            mx.nd.waitall()
            tic, seen = time.time(), 0
            for batch in loader:
                batch[0].wait_to_read()
                seen += batch[0].shape[0]
            mx.nd.waitall()
            return seen / (time.time() - tic)
        run_epoch()
        return run_epoch
    return epochs_of


def make_classic_checkpoint(symbol_file, prefix):
    """PREFIX-symbol.json + PREFIX-0000.params: the classic ResNet-50 symbol, Xavier/BN-default weights."""
    sym = mx.sym.load(symbol_file)
    arg_shapes, _, aux_shapes = sym.infer_shape(data=(1, 3, 224, 224))
    init = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)

    def filled(name, shape):
        array = mx.nd.zeros(shape)
        init(mx.init.InitDesc(name), array)  # weight -> Xavier, gamma -> 1, beta/bias -> 0
        return array
    args = {n: filled(n, s) for n, s in zip(sym.list_arguments(), arg_shapes) if n not in ("data", "softmax_label")}
    aux = {n: (mx.nd.ones(s) if n.endswith("var") else mx.nd.zeros(s))
           for n, s in zip(sym.list_auxiliary_states(), aux_shapes)}
    mx.model.save_checkpoint(prefix, 0, sym, args, aux)
    return prefix


def run_original(lists, s: Settings, batches, our_speed, prefix=None, env=None):
    """The original's training (or with no ``prefix`` its ImageIter alone) in a subprocess with
    ``env``'s threads (default: ours); its JSON result. With --seconds the list has room for 3x our speed."""
    cap = batches if not s.seconds else max(batches, int(3 * s.seconds * our_speed / s.batch_size) + 3)
    entries = (s.warmup + cap + 2) * s.batch_size  # + the batch Module.fit loads ahead
    cmd = [sys.executable, BASELINE_SCRIPT, "--lst", lists.path(entries), "--root", lists.root,
           "--num-classes", str(NUM_CLASSES), "--size", str(s.size), "--batch-size", str(s.batch_size),
           "--warmup", str(s.warmup), "--batches", str(cap), "--seconds", str(s.seconds)]
    cmd += ["--prefix", prefix] if prefix else ["--loader-only"]
    proc = subprocess.run(cmd, env=EQUAL_ENV if env is None else env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("original_baseline.py failed:\n%s" % proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def against_original(names, our_source, lists, s: Settings, batches, target=None, prefix=None):
    """Our figure and the original's at equal threads, alternating ``repeats`` times (and the original as
    shipped, with MXNet's default threads, when that differs); the table's rows."""
    ours, original, shipped = [], [], []
    for _ in range(s.repeats):
        ours.append(measure(our_source, s, batches))
        result = run_original(lists, s, batches, ours[-1], prefix)
        original.append(result["img_s"])
        if s.as_shipped:
            as_shipped = run_original(lists, s, batches, ours[-1], prefix, env=SHIPPED_ENV)
            shipped.append(as_shipped["img_s"])
        print("  ours: %.2f img/s, original: %.2f img/s%s (load average %.1f)"
              % (ours[-1], original[-1], ", as shipped %.2f img/s" % shipped[-1] if shipped else "",
                 os.getloadavg()[0]), file=sys.stderr, flush=True)
    rows = pair((names[0], ours), (names[1] + ", equal threads", original), target)
    rows[1].note = "equal threads: the original ran with %s OpenMP thread(s); %s" % (
        result["omp_max_threads"], ", ".join("%s=%s" % kv for kv in sorted(result["environment"].items())))
    if shipped and as_shipped["omp_max_threads"] != result["omp_max_threads"]:
        rows.append(Row(names[1] + ", as shipped", shipped, ratio=statistics.median(ours) / statistics.median(shipped),
                        note="as shipped: MXNet's default threads, %s OpenMP thread(s)" % as_shipped["omp_max_threads"]))
    return rows


# --- the three comparisons ------------------------------------------------------------------------

def bench_loaders(lists, tasks, s: Settings):
    """(c) our loader alone against the original's ImageIter alone, on the same files."""
    ours = loading_sources(lambda n: real_loader(lists, tasks, "imagenet", s, n))
    rows = against_original(("(c) loader alone: ours (LstDataset, %d worker processes)" % s.workers,
                             "(c) loader alone: original (mx.image.ImageIter, 1 process)"), ours, lists, s,
                            s.loader_batches, target=1.5)
    rows[0].cores = min(max(1, s.workers), _runtime.usable_cores())
    for row in rows[1:]:
        row.cores = 1  # ImageIter decodes in the training process, one image after another
    return rows


def bench_real_vs_synthetic(lists, tasks, s: Settings):
    """(a) real loader and (b) synthetic batches feeding the same hybridized net and step."""
    net = model.build_net(model.TrunkSpec(network=s.network), tasks, [mx.cpu()], (3, s.size, s.size))
    net.hybridize(static_alloc=True, static_shape=True)
    step = TrainEpochs(net, tasks, train_config(s, lists.path(s.batch_size)))
    speeds = alternate([
        ("b", step.sources(lambda n: synthetic_batches(tasks, s, n))),
        ("a", step.sources(lambda n: real_loader(lists, tasks, "imagenet", s, n)))], s, s.batches)
    return pair(("(a) train %s, real loader (%d workers)" % (s.network, s.workers), speeds["a"]),
                ("(b) train %s, synthetic in-memory batches" % s.network, speeds["b"]), 0.9)


def bench_original(lists, tasks, s: Settings, root):
    """(d) our trainer on a classic checkpoint (--model PREFIX) against the original's job."""
    if not os.path.isfile(s.classic_symbol):
        print("(d) skipped: no classic symbol at %s (--classic-symbol)" % s.classic_symbol, file=sys.stderr)
        return []
    prefix = make_classic_checkpoint(s.classic_symbol, os.path.join(root, "resnet-50"))
    spec, normalization, classic_params = model.resolve_trunk(None, prefix, 0, "auto")
    net = model.build_net(spec, tasks, [mx.cpu()], (3, s.size, s.size))
    model.load_pretrained_trunk(net, prefix, classic_params)
    net.hybridize(static_alloc=True, static_shape=True)
    step = TrainEpochs(net, tasks, train_config(s, lists.path(s.batch_size)))
    ours = step.sources(lambda n: real_loader(lists, tasks, normalization, s, n))
    return against_original(("(d) training loop, classic resnet-50: ours (--model PREFIX)",
                             "(d) training loop, classic resnet-50: original (Module API)"), ours, lists, s,
                            s.batches, prefix=prefix)


# --- report ---------------------------------------------------------------------------------------

def machine_lines(s: Settings):
    """Machine, versions, threads and settings, for the top of the report."""
    v = versions()
    timed = "~%gs per figure" % s.seconds if s.seconds else "%d timed batches, (c) %d" % (s.batches, s.loader_batches)
    return [
        "machine: %s; %d usable of %d cores; memory %s; load average %.2f %.2f %.2f at start"
        % ((proc_field("/proc/cpuinfo", "model name"), _runtime.usable_cores(), os.cpu_count(),
            proc_field("/proc/meminfo", "MemTotal")) + os.getloadavg()),
        "versions: python %s, mxnet %s, gluoncv %s, numpy %s, opencv %s; %s"
        % (v["python"], v["mxnet"], v["gluoncv"], v["numpy"], v["opencv"], v["platform"]),
        "mxnet build: " + ", ".join(k for k, on in build_features().items() if on),
        "threads, ours: " + ", ".join("%s=%s" % kv for kv in sorted(_runtime.THREAD_SETTINGS.items()))
        + "".join(", %s=%s" % (k, os.environ[k]) for k in THREAD_VARIABLES[3:] if k in os.environ)
        + "; loader: %d worker processes, 1 OpenCV thread each" % s.workers,
        "threads, original ((c) ImageIter, (d) job): a subprocess with OMP_NUM_THREADS=%s as ours (equal "
        "threads), and%s as shipped (no thread variable: MXNet's defaults)"
        % (os.environ.get("OMP_NUM_THREADS"), "" if s.as_shipped else " (not measured this time)"),
        "settings: %s at %dx%d, batch %d; %d JPEGs of %dx%d; %s after %d warm-up batches; %d repeat(s), medians"
        % (s.network, s.size, s.size, s.batch_size, s.images, s.photo[0], s.photo[1], timed, s.warmup, s.repeats)]


def main(argv=None):
    """Measure everything asked for and print the header and the table."""
    s = parse_settings(argv)
    started = time.time()
    print("\n".join(["# bench_training.py %s" % time.strftime("%Y-%m-%d %H:%M")] + machine_lines(s)), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_training_") as root:
        lists = Lists(root, make_photos(root, s.images, s.photo, NUM_CLASSES))
        tasks = build_tasks([NUM_CLASSES])
        parts = [("c", bench_loaders, (lists, tasks, s)), ("ab", bench_real_vs_synthetic, (lists, tasks, s)),
                 ("d", bench_original, (lists, tasks, s, root))]
        for key, bench, bench_args in parts:
            if key not in s.skip:
                print("measuring (%s) ..." % key, file=sys.stderr, flush=True)
                rows += bench(*bench_args)
    order = {"(a)": 0, "(b)": 1, "(c)": 2, "(d)": 3}
    rows.sort(key=lambda r: order[r.name[:3]])
    print("\n".join([""] + table_lines(rows)))
    print("took %.0f s; load average %.2f %.2f %.2f at the end" % ((time.time() - started,) + os.getloadavg()))
    common.write_result("bench_training", [row_figures(r) for r in rows], notes=machine_lines(s)[3:])



if __name__ == "__main__":
    main()

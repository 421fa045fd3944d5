"""Lower precision: the AMX request, bf16 training (AMP), --dtype auto, INT8/bf16 inference."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from multitask_mx import _runtime
from multitask_mx.model import dtype_choice
from conftest import REPO, make_images, run_cli, write_list

AMX_CPUINFO = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse avx2 avx512f "
               "avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n")
PLAIN_CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma\n"
BF16_CPU = _runtime.bf16_supported()


@pytest.fixture
def fresh_amx_state(monkeypatch):
    """An empty AMX decision for this test (the process's real one is restored after)."""
    saved = dict(_runtime.CPU_FEATURES)
    _runtime.CPU_FEATURES.clear()
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    yield
    _runtime.CPU_FEATURES.clear()
    _runtime.CPU_FEATURES.update(saved)


def test_amx_is_requested_only_when_the_cpu_lists_it(fresh_amx_state):
    calls = []
    status = _runtime.request_amx(PLAIN_CPUINFO, syscall=lambda *a: calls.append(a) or 0)
    assert calls == [] and status.startswith("not requested") and not _runtime.amx_enabled()
    assert "DNNL_MAX_CPU_ISA" not in os.environ
    _runtime.CPU_FEATURES.clear()
    status = _runtime.request_amx(AMX_CPUINFO, syscall=lambda *a: calls.append(a) or 0)
    assert calls == [(158, 0x1023, 18)]  # arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
    assert _runtime.amx_enabled() and os.environ["DNNL_MAX_CPU_ISA"] == "AVX512_CORE_AMX", status
    _runtime.request_amx(AMX_CPUINFO, syscall=lambda *a: calls.append(a) or 0)
    assert len(calls) == 1  # once per process


def test_a_refused_amx_request_leaves_onednn_alone(fresh_amx_state):
    status = _runtime.request_amx(AMX_CPUINFO, syscall=lambda *a: -1)
    assert "refused" in status and not _runtime.amx_enabled() and "DNNL_MAX_CPU_ISA" not in os.environ


def test_cpu_support_reads_bf16_vnni_and_amx_flags():
    amx = _runtime.cpu_support(_runtime.read_cpu_flags(AMX_CPUINFO))
    plain = _runtime.cpu_support(_runtime.read_cpu_flags(PLAIN_CPUINFO))
    assert all(amx.values()) and not any(plain.values())


def test_checkpoint_trunk_graph_gets_amp_casts():
    # amp.init patches mxnet for the whole process: look at the graph in a process of its own.
    code = """
import json, mxnet as mx
from multitask_mx.model import network as model, precision
from gluoncv.model_zoo import get_model
base = get_model("resnet18_v1"); base.hybridize()
trunk = base.features(mx.sym.var("data"))
spec = model.TrunkSpec(network="symbol:x", symbol_json=trunk.tojson(), input_name="data")
precision.init_amp("float16")  # the graph only: nothing runs, so any CPU will do
out = mx.sym.Group(list(model.MultiTaskNet(spec, [3], ["a"])(mx.sym.var("data"))))
nodes = json.loads(out.tojson(remove_amp_cast=False))["nodes"]
conv = [n for n in nodes if n["op"] == "Convolution"]
print(json.dumps([[nodes[e[0]]["op"] for e in n["inputs"][:2]] for n in conv]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    conv_inputs = json.loads(done.stdout.strip().splitlines()[-1])
    assert conv_inputs[0] == ["amp_cast", "amp_cast"]  # the image and the first weights
    assert all(weight == "amp_cast" for _, weight in conv_inputs)  # float32 master weights, cast per step


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Tiny real images: 10 per class for training, 4 for validation."""
    base = tmp_path_factory.mktemp("precision")
    root = str(base / "images")
    train = make_images(root, 10, seed=1)
    val = make_images(root, 4, seed=2)
    return {"base": base, "root": root, "train": write_list(base / "train.lst", train),
            "val": write_list(base / "val.lst", val, start_index=len(train))}


def train_args(shapes, save, *extra):
    return ["train", "--network", "resnet18_v1", "--image-shape", "3,32,32", "--batch-size", 8, "--lr", 0.01,
            "--data-train", shapes["train"], "--image-train", shapes["root"], "--data-val", shapes["val"],
            "--image-val", shapes["root"], "--save-result", save, "--quiet", "--seed", 1,
            "--no-derived-task"] + list(extra)


@pytest.fixture(scope="module")
def trained(shapes):
    """A resnet18_v1 trained 3 epochs in float32 with --dtype auto (which logs its choice)."""
    save = str(shapes["base"] / "fp32")
    run_cli(*train_args(shapes, save, "--num-epoch", 3, "--dtype", "auto"))
    return save


def test_dtype_auto_logs_its_decision(trained):
    log = open(os.path.join(trained, "train.log")).read()
    assert "--dtype auto: " in log
    if not dtype_choice.native_bf16():
        assert "--dtype auto: float32 (no native bf16" in log
    else:  # timed both: resnet18_v1 at this small size is faster in float32
        assert "img/s, bfloat16" in log


@pytest.mark.skipif(BF16_CPU, reason="this CPU runs bf16")
def test_bf16_is_refused_on_a_cpu_without_avx512(shapes):
    proc = run_cli(*train_args(shapes, str(shapes["base"] / "refused"), "--num-epoch", 1, "--dtype", "bfloat16"),
                   expect=2)
    assert "--dtype bfloat16 needs a CPU with AVX-512" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not BF16_CPU, reason="oneDNN has no bf16 kernels for this CPU (needs AVX-512)")
def test_bf16_training_checkpoint_loads_and_evaluates_in_fp32(shapes):
    save = str(shapes["base"] / "bf16")
    run_cli(*train_args(shapes, save, "--num-epoch", 1, "--dtype", "bfloat16"))
    assert "mixed precision: bfloat16" in open(os.path.join(save, "train.log")).read()
    symbol = open(os.path.join(save, "multitask-symbol.json")).read()
    assert "amp_cast" not in symbol and "bfloat16" not in symbol
    import mxnet as mx
    assert {v.dtype for v in mx.nd.load(os.path.join(save, "multitask-0001.params")).values()} == {np.float32}
    proc = run_cli("evaluate", "--save-result", save, "--data", shapes["val"], "--image-root", shapes["root"],
                   "--quiet")
    assert "accuracy" in proc.stdout
    proc = run_cli("predict", shapes["val"], "--image-root", shapes["root"], "--save-result", save,
                   "--precision", "bf16", "--quiet")
    assert "circle" in proc.stdout


def predicted(proc):
    rows = json.loads(proc.stdout)["predictions"]
    return np.array([[c["prob"] for c in sorted(r["tasks"]["label"], key=lambda c: c["index"])] for r in rows])


def test_int8_export_and_predict_agree_with_fp32(trained, shapes):
    out = str(shapes["base"] / "deploy")
    proc = run_cli("export", "--save-result", trained, "--out", out, "--int8", "--calib-images", 16, "--quiet")
    assert "INT8, naive calibration on 16 images" in proc.stdout
    info = json.load(open(os.path.join(out, "multitask-preprocess.json")))
    assert info["files"]["int8"]["symbol"] == "multitask-int8-symbol.json"
    common = ["predict", shapes["val"], "--image-root", shapes["root"], "--save-result", trained, "--json", "-",
              "--show", 4, "--quiet"]
    fp32 = predicted(run_cli(*common))
    int8 = predicted(run_cli(*common + ["--precision", "int8", "--calib-images", 16]))
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.9
    assert np.abs(fp32 - int8).mean() < 0.08, np.abs(fp32 - int8).mean()  # a few images may move more (tiny model)
    import mxnet as mx
    block = mx.gluon.SymbolBlock.imports(os.path.join(out, "multitask-int8-symbol.json"), ["data"],
                                         os.path.join(out, "multitask-int8-0000.params"))
    probs = block(mx.nd.random.uniform(-1, 1, (2, 3, 32, 32))).asnumpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-3)  # softmax outputs, as the fp32 export


INT8_CALLS = """
import sys
import mxnet as mx
from multitask_mx.use import inference, quantize
model = quantize.apply_precision(inference.load_model(sys.argv[1]),
                                 quantize.PrecisionConfig(precision="int8", calib_images=8))
batch = mx.nd.random.uniform(-1, 1, (4, 3, 32, 32))
for call in range(3):
    print("=== call %d" % call, flush=True)
    model.net(batch)[0].wait_to_read()
    mx.nd.waitall()
"""


def test_int8_model_quantizes_its_weights_once_not_on_every_call(trained):
    # oneDNN's verbose log lists every primitive run; a weight reorder (fp32 -> s8) per convolution in every
    # call is what MXNet 1.9's CachedOp does without static_shape (graphs.hybridize_for_inference)
    env = dict(os.environ, DNNL_VERBOSE="1", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", INT8_CALLS, trained], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = proc.stdout.split("=== call ")
    convs = [line for line in calls[3].splitlines() if line.startswith("dnnl_verbose,exec,cpu,convolution")]
    reorders = [line for line in calls[3].splitlines() if line.startswith("dnnl_verbose,exec,cpu,reorder")]
    assert len(convs) >= 15 and all("int8" in c or "vnni" in c or "s8" in c for c in convs), convs[:3]
    assert len(reorders) <= 3, "%d reorders in the third call: %s" % (len(reorders), reorders[:4])
    first = [line for line in calls[1].splitlines() if line.startswith("dnnl_verbose,exec,cpu,reorder")]
    assert len(first) > len(convs)  # the first call does quantize every weight: the check can see it


def test_evaluate_reports_the_int8_change_against_fp32(trained, shapes, tmp_path):
    report = str(tmp_path / "eval.json")
    proc = run_cli("evaluate", "--save-result", trained, "--data", shapes["val"], "--image-root", shapes["root"],
                   "--precision", "int8", "--calib-images", 16, "--json", report, "--quiet")
    change = json.load(open(report))["precision_change"]["label"]
    assert "label in int8: accuracy" in proc.stdout
    assert abs(change["change"] - (change["accuracy"] - change["fp32_accuracy"])) < 1e-9
    assert change["num_images"] == 16 and change["top1_agreement"] >= 0.9


def test_int8_calibration_without_images_is_a_clear_error(trained, shapes):
    proc = run_cli("predict", shapes["val"], "--image-root", shapes["root"], "--save-result", trained,
                   "--precision", "int8", "--calib-list", str(shapes["base"] / "missing.lst"), "--quiet", expect=2)
    assert "INT8 calibration needs images" in proc.stderr and "--calib-list" in proc.stderr


def test_doctor_reports_bf16_vnni_amx_and_the_bf16_speed():
    out = run_cli("doctor", "--network", "resnet18_v1", "--image-shape", "3,32,32", "--seconds", "0.5").stdout
    assert "low precision on this CPU:" in out and "int8 VNNI" in out and "AMX       bf16" in out
    assert _runtime.CPU_FEATURES["amx"] in out  # the request's outcome, as this process decided it too
    if BF16_CPU:
        assert "bf16 training speed: " in out and "against fp32" in out
    else:
        assert "bf16 training speed: not measured (this CPU has no AVX-512)" in out

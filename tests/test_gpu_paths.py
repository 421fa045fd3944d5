"""The GPU paths that can run without a GPU: the capability check with a stub of the driver's answer,
MXNet error cleaning on real MXNet errors, optimizer states moved between devices, AMP casts in a
classic-checkpoint trunk, the refusals, and uint8 batches normalised on the device.

What needs a GPU (real kernels, pinned memory, fusion, speed) is in benchmarks/gpu_check.py.
"""
import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

import multitask_mx  # noqa: F401
import mxnet as mx
from conftest import REPO, run_cli
from multitask_mx import _runtime, cli, cuda_libs, devices
from multitask_mx.data import datasets as data, tasks
from multitask_mx.model import network as model
from multitask_mx.data.augment import AugmentConfig, TrainTransform
from multitask_mx.errors import UserInputError
from multitask_mx.data.images import EvalTransform, decode_image
from multitask_mx.mxerrors import clean_mxnet_error, device_error_kind, is_device_error

CU112 = ("mxnet-cu112", "1.9.1")


def driver_with(*gpus, cuda=12040):
    """A stub of the device query: the driver's answer for these (name, (major, minor)) GPUs."""
    found = cuda_libs.CudaDevices(driver_cuda=cuda, gpus=[cuda_libs.GpuInfo(i, name, cap, 80 * 2 ** 30)
                                                          for i, (name, cap) in enumerate(gpus)])
    return lambda: found


H200 = driver_with(("NVIDIA H200", (9, 0)))
A10 = driver_with(("NVIDIA A10", (8, 6)))
L4 = driver_with(("NVIDIA L4", (8, 9)))


def test_a_gpu_without_kernels_in_the_wheel_is_refused_with_what_to_do(monkeypatch):
    monkeypatch.delenv("MXNET_USE_FUSION", raising=False)
    with pytest.raises(UserInputError) as err:
        devices.check_gpus([0], query=H200, dist=CU112)
    text = str(err.value)
    assert "NVIDIA H200" in text and "sm_90" in text and "no kernel image" in text
    assert "docs/gpu.md" in text and "MXNET_CUDA_ARCH" in text and "older GPU" in text


@pytest.mark.parametrize("query, support", [(A10, "yes"), (L4, "yes (runs sm_86 code)")])
def test_gpus_the_wheel_has_kernels_for_pass(monkeypatch, query, support):
    monkeypatch.setenv("MXNET_USE_FUSION", "1")  # the fusion decision is not under test here
    found = devices.check_gpus([0], query=query, dist=CU112)
    assert devices.gpu_support(found.gpus[0], devices.kernel_archs(CU112)) == support


def test_a_source_build_is_not_refused_and_an_unknown_gpu_is_left_alone(monkeypatch):
    monkeypatch.setenv("MXNET_USE_FUSION", "1")
    devices.check_gpus([0], query=H200, dist=("mxnet", "1.9.1"))  # kernels unknown: the first operation tells
    devices.check_gpus([1], query=H200, dist=CU112)  # GPU 1 is not asked for


def test_a_driver_too_old_is_named_as_the_driver():
    old = driver_with(("Tesla V100", (7, 0)), cuda=10020)
    with pytest.raises(UserInputError, match="driver supports CUDA 10.2 only.*the MXNet build is fine"):
        devices.check_gpus([0], query=old, dist=CU112)


def test_fusion_switched_off_where_nvrtc_cannot_compile_for_the_gpu(monkeypatch):
    monkeypatch.delenv("MXNET_USE_FUSION", raising=False)
    gpu = L4().gpus
    nvrtc_112 = [35, 37, 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86]  # CUDA 11.2's nvrtcGetSupportedArchs
    reason = devices.configure_fusion(gpu, L4(), archs=nvrtc_112)
    assert "sm_89" in reason and os.environ["MXNET_USE_FUSION"] == "0"
    monkeypatch.delenv("MXNET_USE_FUSION")
    assert devices.configure_fusion(gpu, L4(), archs=nvrtc_112 + [89, 90]) is None
    assert "MXNET_USE_FUSION" not in os.environ


def test_driver_sees_gpus_but_mxnet_is_the_cpu_build():
    if mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("a GPU build of MXNet")
    with pytest.raises(UserInputError, match="CPU build.*cu112"):
        devices.parse_contexts("0", query=A10)


def test_train_and_doctor_stop_on_an_h200_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(devices, "GPU_QUERY", H200)
    monkeypatch.setattr(cuda_libs, "mxnet_distribution", lambda: CU112)
    save = str(tmp_path / "save")
    status = cli.main(["train", "--gpus", "0", "--data-train", str(tmp_path / "absent.lst"), "--save-result", save])
    assert status == 2
    err = capsys.readouterr().err
    assert "NVIDIA H200" in err and "no kernel image" in err and "Traceback" not in err
    status = cli.main(["doctor", "--gpus", "0", "--seconds", "0.1"])
    out, err = capsys.readouterr()
    assert status == 2 and "GPU 0: NVIDIA H200, sm_90" in out and "NO (this MXNet has kernels for sm_50" in out


def _real_mxnet_error(fn):
    with pytest.raises(mx.base.MXNetError) as err:
        fn()
    return err.value


def test_mxnet_errors_lose_their_traceback_and_keep_the_message():
    exc = _real_mxnet_error(lambda: mx.nd.dot(mx.nd.ones((2, 3)), mx.nd.ones((4, 5))).wait_to_read())
    assert str(exc).startswith("Traceback")  # MXNet 1.9.1's own text: why the cleaning exists
    text = clean_mxnet_error(exc)
    assert not text.startswith("Traceback") and "dot shape error: [2,3] X [4,5]" in text and "File " not in text
    assert not is_device_error(exc)


def test_a_cpu_build_asked_for_a_gpu_is_a_device_error():
    if mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("a GPU build of MXNet")
    exc = _real_mxnet_error(lambda: mx.nd.zeros((1,)).copyto(mx.gpu(0)))
    assert device_error_kind(exc)[0] == "a CPU build of MXNet"
    with pytest.raises(UserInputError) as err:  # at network build: a device error, not a shape error
        model.build_net(model.TrunkSpec(network="mobilenet0.25"), tasks.build_tasks([3]), [mx.gpu(0)], (3, 32, 32))
    assert "does not accept images" not in str(err.value) and "CPU build" in str(err.value)


def test_a_real_shape_problem_is_still_a_shape_error():
    with pytest.raises(UserInputError) as err:
        model.build_net(model.TrunkSpec(network="alexnet"), tasks.build_tasks([3]), [mx.cpu()], (3, 8, 8))
    text = str(err.value)
    assert text.startswith("the network alexnet does not accept images of shape (3, 8, 8): ")
    assert "Traceback" not in text and "File \"" not in text


# CUDA's error strings (cudaGetErrorString) as MXNet 1.9.1 wraps them (include/mxnet/base.h CHECK_EQ,
# storage/pooled_storage_manager.h, operator/fusion/fused_op.cu): these cannot be raised without a GPU;
# benchmarks/gpu_check.py records the real ones.
CUDA_TEXTS = {
    "no kernel for this GPU": 'Traceback (most recent call last):\n  File "../src/operator/tensor/./elemwise_binary_op'
                              '.h", line 89\nMXNetError: Check failed: err == cudaSuccess (209 vs. 0) : Name: '
                              'mxnet_generic_kernel ErrStr:no kernel image is available for execution on the device',
    "GPU out of memory": 'Traceback (most recent call last):\n  File "../src/storage/./pooled_storage_manager.h", '
                         'line 161\nMXNetError: cudaMalloc retry failed: out of memory',
    "NVIDIA driver too old": 'Traceback (most recent call last):\n  File "../include/mxnet/base.h", line 458\n'
                             'MXNetError: Check failed: e == cudaSuccess (35 vs. 0) :  CUDA: CUDA driver version is '
                             'insufficient for CUDA runtime version',
    "no such GPU": 'Traceback (most recent call last):\n  File "../include/mxnet/base.h", line 483\nMXNetError: '
                   'Check failed: e == cudaSuccess (101 vs. 0) :  CUDA: invalid device ordinal',
    "fused kernels failed to compile": 'Traceback (most recent call last):\n  File "../src/operator/fusion/'
                                       'fused_op.cu", line 673\nMXNetError: NVRTC Compilation failed. Please set '
                                       'environment variable MXNET_USE_FUSION to 0.',
}


@pytest.mark.parametrize("kind", sorted(CUDA_TEXTS))
def test_cuda_errors_are_classified(kind):
    text = CUDA_TEXTS[kind]
    assert device_error_kind(text)[0] == kind
    assert not clean_mxnet_error(text).startswith(("Traceback", "File", "MXNetError"))


def _state_bytes(ctx):
    """A real SGD momentum state (Updater.get_states) of an array on ``ctx``."""
    updater = mx.optimizer.get_updater(mx.optimizer.SGD(momentum=0.9, learning_rate=0.1))
    weight = mx.nd.ones((2, 3), ctx=ctx)
    updater(0, mx.nd.ones((2, 3), ctx=ctx), weight)
    return updater.states[0], updater.get_states(dump_optimizer=True)


def _saved_context(raw):
    """(device type, device id) in a pickled NDArray of a dense 2-d array (NDArray::Save's header)."""
    return struct.unpack_from("<ii", raw, 8 + 4 + 8 * 2)


def test_states_saved_on_gpu_7_are_moved_to_the_cpu():
    momentum, state = _state_bytes(mx.cpu(3))
    saved = bytes(momentum.__getstate__()["handle"])
    assert _saved_context(saved) == (1, 3) and saved in state
    raw = bytearray(saved)
    struct.pack_into("<ii", raw, 8 + 4 + 16, 2, 7)  # as a run on --gpus 4,5,6,7 saved it: gpu(7)
    assert _saved_context(devices._raw_ndarray_on_cpu(bytearray(raw))) == (1, 0)
    moved, optimizer = pickle.loads(devices.states_on_cpu(state.replace(saved, bytes(raw))))
    assert _saved_context(bytearray(moved[0].__getstate__()["handle"])) == (1, 0)
    assert type(moved[0]) is mx.nd.NDArray and moved[0].context == mx.cpu(0)
    np.testing.assert_array_equal(moved[0].asnumpy(), momentum.asnumpy())
    assert optimizer.momentum == 0.9


@pytest.mark.slow
def test_resume_on_fewer_devices_than_the_run_had(tiny_data, tmp_path):
    save = str(tmp_path / "save")
    common = ["train", "--data-train", tiny_data["train"], "--image-train", tiny_data["root"], "--num-classes", "4",
              "--save-result", save, "--save-name", "net", "--network", "mobilenet0.25", "--image-shape", "3,32,32",
              "--batch-size", "8", "--data-nthreads", "0", "--quiet", "--check-images", "none"]
    run_cli(*common, "--cpus", "4", "--num-epoch", "1")
    run_cli(*common, "--cpus", "2", "--num-epoch", "2", "--resume")
    with open(os.path.join(save, "train.log")) as f:
        log = f.read()
    assert "resuming on 2 device(s) from states of 4" in log
    assert len(pickle.loads(open(os.path.join(save, "net-0002.states"), "rb").read())["devices"]) == 2


def test_float16_converts_a_classic_trunk(classic_checkpoint):
    # amp.init patches MXNet for the rest of a process: in a child process of its own
    code = ("import json, sys; import mxnet as mx; from multitask_mx.model import network as model, precision\n"
            "precision.init_amp('float16')\n"
            "spec, _, _ = model.resolve_trunk(None, sys.argv[1], 0, 'auto')\n"
            "net = model.MultiTaskNet(spec, [3], ['label'])\n"
            "graph = json.loads(net.trunk._cached_graph[1].tojson(remove_amp_cast=False))\n"
            "print(json.dumps(sorted({n['op'] for n in graph['nodes']})))\n")
    proc = subprocess.run([sys.executable, "-c", code, classic_checkpoint], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ops = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "amp_cast" in ops or "amp_multicast" in ops
    assert "Convolution" in ops


def _args(**kw):
    """The TrainConfig of float16 with dist_async, ``kw`` given on top."""
    from multitask_mx import api
    from multitask_mx.training.config import TrainConfig
    flags = dict({"dtype": "float16", "kv_store": "dist_async"}, **kw)
    return TrainConfig.from_args(api.parse_flags("train", data_train="x.lst", save_result="r", **flags))


def test_float16_refusals():
    from multitask_mx.training.pipeline import check_devices_and_dtype
    with pytest.raises(UserInputError, match="dist_async.*loss scaling"):
        check_devices_and_dtype(_args(), [mx.gpu(0)])  # a Context object; nothing runs on it
    with pytest.raises(UserInputError, match="needs GPUs"):
        check_devices_and_dtype(_args(kv_store="device"), [mx.cpu()])
    check_devices_and_dtype(_args(kv_store="dist_device_sync"), [mx.gpu(0)])


def test_uint8_batches_normalise_on_the_device_to_the_same_tensor(tiny_data):
    path = os.path.join(tiny_data["root"], sorted(os.listdir(tiny_data["root"]))[0])
    img = decode_image(os.path.join(path, sorted(os.listdir(path))[0]))
    for normalization in ("imagenet", "raw"):
        for make in (lambda: EvalTransform((24, 24), normalization),
                     lambda: TrainTransform((24, 24), normalization, AugmentConfig(brightness=0.3, hflip=True))):
            floats, uint8 = make(), data.Uint8Output(make())
            floats.reseed(7) if hasattr(floats, "reseed") else None
            uint8.reseed(7)
            sample = uint8(img)
            assert sample.dtype == np.uint8 and sample.shape == (3, 24, 24)
            on_device = data.device_normalize(mx.nd.array(sample[None], dtype="uint8"), normalization)
            np.testing.assert_array_equal(on_device.asnumpy()[0], floats(img))
    already = mx.nd.ones((1, 3, 2, 2))
    assert data.device_normalize(already, "imagenet") is already  # CPU training's float batches: unchanged
    assert not data.uint8_capable(TrainTransform((24, 24), "imagenet", AugmentConfig(pca_lighting=0.1)))


def test_loader_workers_leave_one_core_per_gpu(monkeypatch):
    monkeypatch.setattr(_runtime, "usable_cores", lambda: 16)
    assert _runtime.default_loader_workers() == 4
    assert _runtime.default_loader_workers(gpus=4) == 12
    monkeypatch.setattr(_runtime, "usable_cores", lambda: 2)
    assert _runtime.default_loader_workers(gpus=8) == 1


def test_launch_gives_each_worker_on_a_host_its_own_gpus(tmp_path):
    proc = run_cli("launch", "-n", "2", "-s", "1", "--gpus-per-worker", "2", "--dry-run", "--", "train",
                   "--kv-store", "dist_device_sync", "--gpus", "0", "--data-train", "x.lst",
                   "--save-result", str(tmp_path))
    workers = [line for line in proc.stdout.splitlines() if line.startswith("worker")]
    assert workers[0].endswith("--gpus 0,1") and workers[1].endswith("--gpus 2,3")
    assert all(line.count("--gpus") == 1 for line in workers)


def test_doctor_batch_fills_the_free_memory():
    from multitask_mx.commands.doctor import batch_filling_memory
    assert batch_filling_memory(80 * 2 ** 30, 90 * 2 ** 20) == 256
    assert batch_filling_memory(16 * 2 ** 30, 90 * 2 ** 20) == 128
    assert batch_filling_memory(2 ** 30, 90 * 2 ** 20) == 8


def test_ssh_plan_numbers_the_gpus_per_host():
    from multitask_mx.training.cluster import Host, plan_ssh
    argv = [sys.executable, "-m", "multitask_mx", "train", "--kv-store", "dist_device_sync", "--gpus", "0"]
    nodes = plan_ssh(4, 1, [Host("a"), Host("b")], argv, "10.0.0.1", port=9000, gpus_per_worker=2)
    workers = [(n.host.name, " ".join(n.argv)) for n in nodes if n.role == "worker"]
    # round-robin after the server (on a): workers 0, 2 on b, workers 1, 3 on a
    assert [(host, cmd.split("--gpus ")[-1].split()[0].strip("'")) for host, cmd in workers] == \
        [("b", "0,1"), ("a", "0,1"), ("b", "2,3"), ("a", "2,3")]


def test_a_device_error_mid_run_is_reported_without_traceback(monkeypatch, capsys):
    if mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("a GPU build of MXNet")
    from multitask_mx.commands import doctor

    def fails_on_the_device(args):
        mx.nd.zeros((1,)).copyto(mx.gpu(0)).wait_to_read()  # a real MXNet device error
    monkeypatch.setattr(doctor, "run", fails_on_the_device)
    assert cli.main(["doctor"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: doctor failed: a CPU build of MXNet") and "Traceback" not in err

"""--pretrained: GluonCV's ImageNet weights by network name, from the cache or its model store, never hanging."""
import hashlib
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import multitask_mx  # noqa: F401  (numpy shim before mxnet)
import mxnet as mx

from conftest import REPO, run_cli
from multitask_mx import mxprivate
from multitask_mx.model import network as model, pretrained
from multitask_mx.errors import UserInputError
from multitask_mx.data.tasks import build_tasks

UNROUTABLE_REPO = "http://192.0.2.1/"  # TEST-NET-1 (RFC 5737): nothing answers there
R18_FILE = "resnet18_v1-a0666292.params"


def test_gluoncv_store_names_we_rely_on():
    sha1s, zoo_to_store, url_format, repo = pretrained._gluoncv_store()
    assert sha1s["resnet18_v1"].startswith("a0666292")
    assert zoo_to_store["resnet18_v1"] == "resnet18_v1"
    assert zoo_to_store["resnet50_v1d_0.11"] == "resnet50_v1d_8.8x"  # the store's renames are undone
    assert "{file_name}" in url_format and "{repo_url}" in url_format and repo.startswith("https://")


def test_location_follows_gluoncv_cache_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("MXNET_HOME", raising=False)
    monkeypatch.delenv("MXNET_GLUON_REPO", raising=False)
    name, path, sha1, url = pretrained.zoo_weights_location("resnet18_v1", str(tmp_path))
    assert path == os.path.join(str(tmp_path), R18_FILE) and len(sha1) == 40
    assert url.endswith("gluon/models/resnet18_v1-a0666292.zip")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pretrained.zoo_weights_location("resnet18_v1")[1] == os.path.join(str(tmp_path), ".mxnet", "models",
                                                                             R18_FILE)
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mx"))  # GluonCV's own precedence
    assert pretrained.zoo_weights_location("resnet18_v1", "/elsewhere")[1] == str(tmp_path / "mx" / "models" /
                                                                                  R18_FILE)


def test_probe_gives_up_within_its_timeout_and_sees_a_listening_server():
    tic = time.time()
    problem = pretrained.store_unreachable(UNROUTABLE_REPO + "gluon/models/x.zip", timeout=1.0)
    assert problem and time.time() - tic < 3
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        assert pretrained.store_unreachable("http://127.0.0.1:%d/x.zip" % server.getsockname()[1]) is None
    finally:
        server.close()


def test_flag_mistakes_are_named():
    with pytest.raises(UserInputError, match="use one of the two"):
        model.pretrained_weights("resnet18_v1", "weights.params", True)
    with pytest.raises(UserInputError, match="Close names: .*resnet18_v1"):
        model.pretrained_weights("resnet18_v9", None, True)
    with pytest.raises(UserInputError, match="publishes no ImageNet weights for --network cifar_resnext29_32x4d"):
        model.pretrained_weights("cifar_resnext29_32x4d", None, True)
    assert model.pretrained_weights("resnet18_v1", "w.params", False) == "w.params"


def zoo_params_file(folder, seed=0):
    """A resnet18_v1 saved the way GluonCV's store files are (save_parameters), under the store's name."""
    from gluoncv.model_zoo import get_model
    mx.random.seed(seed)
    net = get_model("resnet18_v1", pretrained=False)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, R18_FILE)
    net.save_parameters(path)
    return path


def sha1_of(path):
    return hashlib.sha1(open(path, "rb").read()).hexdigest()


def cache_with_own_sha1(folder, seed=0):
    """A zoo file named as GluonCV names a file of its SHA-1: (path, sha1).

    GluonCV's real file cannot be downloaded here, so the tests give the store's
    table this file's SHA-1 (which also sets the file name's 8-digit suffix).
    """
    made = zoo_params_file(folder, seed)
    sha1 = sha1_of(made)
    path = os.path.join(folder, "resnet18_v1-%s.params" % sha1[:8])
    os.replace(made, path)
    return path, sha1


def test_cached_file_that_fails_the_sha1_check_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("MXNET_HOME", raising=False)
    path = zoo_params_file(str(tmp_path))
    with pytest.raises(UserInputError, match="SHA-1 differs.*--model %s" % path):
        model.pretrained_weights("resnet18_v1", None, True, str(tmp_path))


def test_cached_file_loads_into_the_trunk_without_network(tmp_path, monkeypatch):
    # the repository points nowhere, so any download attempt would fail the test
    from gluoncv.model_zoo import model_store
    monkeypatch.delenv("MXNET_HOME", raising=False)
    monkeypatch.setenv("MXNET_GLUON_REPO", UNROUTABLE_REPO)
    path, sha1 = cache_with_own_sha1(str(tmp_path))
    monkeypatch.setitem(model_store._model_sha1, "resnet18_v1", sha1)
    tic = time.time()
    assert model.pretrained_weights("resnet18_v1", None, True, str(tmp_path)) == path
    assert time.time() - tic < 2
    spec = model.TrunkSpec("resnet18_v1")
    net = model.build_net(spec, build_tasks([4]), [mx.cpu()], (3, 32, 32))
    model.load_pretrained_trunk(net, path)
    saved = mx.nd.load(path)
    trunk = mxprivate.structural_params(net.trunk)
    assert len(trunk) == len([k for k in saved if k.startswith("features.")])
    for key, param in trunk.items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved["features." + key].asnumpy())


@pytest.mark.slow
def test_train_pretrained_offline_fails_fast_naming_the_file(tiny_data, tmp_path):
    if "MXNET_HOME" in os.environ:
        pytest.skip("MXNET_HOME decides GluonCV's cache folder here")
    url = pretrained.zoo_weights_location("resnet18_v1")[3]
    if pretrained.store_unreachable(url) is None:
        pytest.skip("GluonCV's model store is reachable: this test is about an offline machine")
    home = tmp_path / "home"  # an empty cache, whatever this machine holds
    tic = time.time()
    proc = run_cli("train", "--data-train", tiny_data["train"], "--image-train", tiny_data["root"],
                   "--num-classes", "4", "--save-result", str(tmp_path / "save"), "--network", "resnet18_v1",
                   "--pretrained", "--image-shape", "3,32,32", "--quiet", expect=2, env={"HOME": str(home)})
    assert time.time() - tic < 60  # a DNS or TCP timeout would be minutes; mostly this is import time
    # from the command's first log line to its error: the probe's 3 s at most, plus reading the tiny lists
    stamps = [time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
              for line in open(os.path.join(str(tmp_path / "save"), "train.log")) if line[:2] == "20"]
    assert stamps[-1] - stamps[0] <= 8
    assert "Traceback" not in proc.stderr
    assert "Put the file %s in the folder %s" % (R18_FILE, home / ".mxnet" / "models") in proc.stderr
    assert "--model FILE.params" in proc.stderr


@pytest.mark.slow
def test_train_pretrained_uses_the_cached_file(tiny_data, tmp_path):
    cache = str(tmp_path / "cache")
    path, sha1 = cache_with_own_sha1(cache, seed=4)
    save = str(tmp_path / "save")
    args = ["train", "--data-train", tiny_data["train"], "--image-train", tiny_data["root"], "--num-classes", "4",
            "--save-result", save, "--save-name", "net", "--network", "resnet18_v1", "--pretrained",
            "--model-root", cache, "--freeze-trunk", "--image-shape", "3,32,32", "--batch-size", "8",
            "--num-epoch", "1", "--data-nthreads", "0", "--quiet"]
    # the real CLI, with the store's table given our file's SHA-1 (see above) and no reachable repository
    code = ("import sys; from gluoncv.model_zoo import model_store; model_store._model_sha1['resnet18_v1'] = %r; "
            "from multitask_mx.cli import main; sys.exit(main(%r))" % (sha1, args))
    env = {k: v for k, v in os.environ.items() if k != "MXNET_HOME"}
    env["MXNET_GLUON_REPO"] = UNROUTABLE_REPO
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = open(os.path.join(save, "train.log")).read()
    assert "ImageNet weights of resnet18_v1 from the cache %s" % path in log
    spec = model.TrunkSpec("resnet18_v1")
    net = model.build_net(spec, build_tasks([4]), [mx.cpu()], (3, 32, 32))
    model.load_checkpoint_params(net, os.path.join(save, "net-0001.params"))
    original = mx.nd.load(path)
    learned = {k: p for k, p in mxprivate.structural_params(net.trunk).items()
               if not k.endswith(("running_mean", "running_var"))}  # statistics move even in a frozen trunk
    assert learned
    for key, param in learned.items():  # the frozen trunk still holds the file's weights
        np.testing.assert_array_equal(param.data().asnumpy(), original["features." + key].asnumpy())

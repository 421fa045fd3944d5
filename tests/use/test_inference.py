"""inference.py (loading a save directory, batched prediction) and reports.py (evaluation metrics)."""
import os

import numpy as np
import pytest

from conftest import make_images, run_cli, write_list
from multitask_mx.data.image_files import find_image_files
from multitask_mx.use import inference, predictions, reports
from multitask_mx.errors import UserInputError

import mxnet as mx


# ---------------------------------------------------------------- reports (no model needed)

def test_confusion_and_per_class_scores_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2])
    confusion = reports.confusion_matrix(labels, predicted, 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    scores = reports.per_class_scores(confusion, ["a", "b", "c"])
    assert scores[1] == pytest.approx({"index": 1, "class": "b", "precision": 2 / 3, "recall": 2 / 3,
                                       "f1": 2 / 3, "support": 3})
    assert scores[2]["precision"] == 0.5 and scores[2]["recall"] == 1.0
    avg = reports.averages(scores)
    assert avg["macro_avg"]["recall"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert avg["weighted_avg"]["recall"] == pytest.approx((2 * 0.5 + 3 * 2 / 3 + 1) / 6)


def test_class_never_predicted_scores_zero_not_nan():
    scores = reports.per_class_scores(reports.confusion_matrix([0, 1], [0, 0], 3), ["a", "b", "c"])
    assert scores[1]["precision"] == 0.0 and scores[2]["support"] == 0 and scores[2]["f1"] == 0.0


def test_task_report_ignores_missing_labels_and_counts_top_k():
    log_probs = np.log(np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]))
    labels = np.array([0, 2, -1, 1])
    report = reports.task_report(log_probs, labels, ["a", "b", "c"], ks=(1, 2, 5))
    assert report["num_labelled"] == 3 and report["num_missing"] == 1
    assert report["accuracy"] == pytest.approx(1 / 3)
    assert report["top_k"] == pytest.approx({"1": 1 / 3, "2": 2 / 3})  # k >= classes is left out
    assert report["loss"] == pytest.approx(-(np.log(0.7) + np.log(0.3) + np.log(0.1)) / 3)
    assert sum(map(sum, report["confusion"])) == 3
    text = reports.format_task_report("label", report)
    assert "accuracy 0.3333" in text and "top-2 0.6667" in text and "weighted avg" in text


@pytest.mark.slow
def test_confusion_png_for_200_classes_is_large_enough_to_read(tmp_path):
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 200, 3000)
    predicted = np.where(rng.rand(3000) < 0.8, labels, rng.randint(0, 200, 3000))
    path = tmp_path / "c.png"
    reports.plot_confusion(reports.confusion_matrix(labels, predicted, 200),
                           ["class_%03d" % i for i in range(200)], str(path))
    import cv2
    height, width = cv2.imread(str(path)).shape[:2]
    assert height >= 200 * 15 and width >= 200 * 15  # at least 15 px per class row and column


# ---------------------------------------------------------------- a trained save directory

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model trained by the real CLI for 2 epochs, and images to predict."""
    base = tmp_path_factory.mktemp("inference")
    root = str(base / "images")
    train = make_images(root, 4, seed=1)
    val = make_images(root, 2, seed=2)
    write_list(base / "train.lst", train)
    write_list(base / "val.lst", val, start_index=100)
    save = str(base / "run")
    run_cli("train", "--network", "mobilenet0.25", "--image-shape", "3,32,32", "--num-epoch", 2,
            "--batch-size", 8, "--data-train", base / "train.lst", "--image-train", root,
            "--data-val", base / "val.lst", "--image-val", root, "--save-result", save, "--quiet", "--seed", 3)
    return {"base": base, "root": root, "save": save,
            "paths": [os.path.join(root, rel) for rel, _ in val]}


def gluon_reference(model, paths, flip=False):
    """Log-probabilities from the training network class (MultiTaskNet) rebuilt from config.json."""
    from multitask_mx.data.images import decode_image
    from multitask_mx.model.network import TrunkSpec, build_net, load_checkpoint_params
    net = build_net(TrunkSpec(network=model.config["network"]), model.tasks, [mx.cpu()], model.image_shape)
    load_checkpoint_params(net, model.params_file)
    transform = model.transform()
    batch = np.stack([transform(decode_image(p, transform.decode_size)) for p in paths])
    if flip:
        batch = batch[:, :, :, ::-1]
    return [mx.nd.log_softmax(o).asnumpy() for o in net(mx.nd.array(batch))]


@pytest.mark.slow
def test_config_missing_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="has no config.json"):
        inference.load_model(str(tmp_path))
    with pytest.raises(UserInputError, match="is not a folder"):
        inference.load_model(str(tmp_path / "nope"))


@pytest.mark.slow
def test_epoch_choice_latest_number_best_and_missing(trained):
    save = trained["save"]
    assert inference.choose_params(save, "multitask", None)[0] == 2
    assert inference.choose_params(save, "multitask", 1)[1].endswith("multitask-0001.params")
    assert inference.choose_params(save, "multitask", "best")[1].endswith("multitask-best.params")
    with pytest.raises(UserInputError, match=r"Epochs available: 1, 2, best"):
        inference.choose_params(save, "multitask", 7)
    with pytest.raises(UserInputError, match="Save names there: multitask"):
        inference.choose_params(save, "other", None)
    assert inference.parse_epoch("best") == "best" and inference.parse_epoch("latest") is None
    assert inference.parse_epoch("3") == 3
    with pytest.raises(UserInputError):
        inference.parse_epoch("last-one")


@pytest.mark.slow
def test_batched_prediction_matches_the_training_network(trained):
    model = inference.load_model(trained["save"], epoch=2)
    assert model.save_name == "multitask" and model.image_shape == (3, 32, 32)
    predictions = inference.predict_paths(model, trained["paths"], inference.PredictConfig(batch_size=3, workers=0))
    assert not predictions.failed
    for ours, ref in zip(predictions.log_probs, gluon_reference(model, trained["paths"])):
        np.testing.assert_allclose(np.exp(ours), np.exp(ref), atol=1e-5)


@pytest.mark.slow
def test_worker_processes_and_two_devices_give_the_same_result(trained):
    paths = trained["paths"]
    model = inference.load_model(trained["save"])
    inline = inference.predict_paths(model, paths, inference.PredictConfig(batch_size=3, workers=0))
    pooled = inference.predict_paths(model, paths, inference.PredictConfig(batch_size=3, workers=2))
    two = inference.load_model(trained["save"], ctxs=[mx.cpu(0), mx.cpu(1)])
    split = inference.predict_paths(two, paths[:1] + paths, inference.PredictConfig(batch_size=1, workers=0))
    for a, b, c in zip(inline.log_probs, pooled.log_probs, split.log_probs):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, c[1:], atol=1e-5)


@pytest.mark.slow
def test_flip_tta_averages_the_probabilities_of_the_mirrored_crop(trained):
    model = inference.load_model(trained["save"])
    paths = trained["paths"][:4]
    tta = inference.predict_paths(model, paths, inference.PredictConfig(batch_size=4, workers=0, tta="flip"))
    plain, mirrored = gluon_reference(model, paths), gluon_reference(model, paths, flip=True)
    for ours, a, b in zip(tta.log_probs, plain, mirrored):
        np.testing.assert_allclose(np.exp(ours), (np.exp(a) + np.exp(b)) / 2, atol=1e-5)


@pytest.mark.slow
def test_unreadable_images_are_collected_and_the_rest_predicted(trained, tmp_path):
    good = trained["paths"][:2]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(good[0], "rb").read()[:300])
    paths = [good[0], str(corrupt), str(tmp_path / "missing.jpg"), str(truncated), str(tmp_path), good[1]]
    model = inference.load_model(trained["save"])
    predictions = inference.predict_paths(model, paths, inference.PredictConfig(batch_size=4, workers=0))
    assert sorted(predictions.failed) == [1, 2, 3, 4]
    assert predictions.failed[2] == "does not exist"
    assert "truncated" in predictions.failed[3] and "folder" in predictions.failed[4]
    assert predictions.ok().tolist() == [True, False, False, False, False, True]
    clean = inference.predict_paths(model, good, inference.PredictConfig(batch_size=4, workers=0))
    np.testing.assert_allclose(predictions.probs(0)[[0, 5]], clean.probs(0), atol=1e-6)
    assert np.isnan(predictions.log_probs[0][1]).all()


def test_top_k_and_find_image_files(tmp_path):
    assert predictions.top_k(np.array([0.1, 0.5, 0.2, 0.2]), 3).tolist() == [1, 2, 3]
    assert predictions.top_k(np.array([0.6, 0.4]), 5).tolist() == [0, 1]
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/x.JPG", "a/deep/y.png", "a/notes.txt", "a/.hidden.jpg", "z.jpeg"):
        (tmp_path / name).write_bytes(b"")
    found = [os.path.relpath(p, tmp_path) for p in find_image_files(str(tmp_path))]
    assert found == ["a/deep/y.png", "a/x.JPG", "z.jpeg"]
    assert find_image_files(str(tmp_path), recursive=False) == [str(tmp_path / "z.jpeg")]


def test_default_batch_follows_the_precision_and_the_flag_wins():
    import argparse
    from multitask_mx.commands import predict
    from multitask_mx.use.settings import PredictSettings
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    for extra, batch in (([], 32), (["--precision", "int8"], 64), (["--precision", "int8", "--batch-size", "8"], 8),
                         (["--precision", "bf16"], 32)):
        args = parser.parse_args(["x.jpg", "--save-result", "runs/x"] + extra)
        assert inference.predict_config(PredictSettings.from_args(args), args.precision).batch_size == batch, extra

"""Training augmentation: each one changes the image when on and nothing when off; flags checked."""
import argparse
import dataclasses
import json
import os

import cv2
import numpy as np
import pytest

from conftest import run_cli
from multitask_mx.data import augment as images, augment_presets
from multitask_mx.data.augment import AugmentConfig, TrainTransform, preview_samples
from multitask_mx.data.augment_presets import PRESETS, Situation, choose_preset, resolve_augmentation
from multitask_mx.errors import UserInputError
from multitask_mx.data.images import NORMALIZATIONS, to_chw_float

OUT_HW = (40, 56)


@pytest.fixture(scope="module")
def picture():
    """A colourful, asymmetric 90x120 image with smooth areas and edges."""
    rng = np.random.RandomState(3)
    img = cv2.resize(rng.randint(20, 235, (5, 7, 3)).astype(np.uint8), (120, 90), interpolation=cv2.INTER_LINEAR)
    cv2.rectangle(img, (10, 10), (40, 30), (250, 30, 30), -1)
    return img


ONE_AT_A_TIME = [("random_crop", True), ("pad_crop", 0.125), ("hflip", True), ("vflip", True), ("brightness", 0.4),
                 ("contrast", 0.4),
                 ("saturation", 0.4), ("hue", 0.2), ("rotate", 30.0), ("aspect_stretch", 0.3),
                 ("pca_lighting", 0.1)]


def _samples(cfg, img, seeds=range(8), normalization="imagenet"):
    transform = TrainTransform(OUT_HW, normalization, cfg)
    out = []
    for seed in seeds:
        transform.reseed(seed)
        out.append(transform(img))
    return out


@pytest.mark.parametrize("field, value", ONE_AT_A_TIME)
def test_each_augmentation_changes_the_image_only_when_on(picture, field, value):
    plain = _samples(AugmentConfig.off(), picture)[0]
    assert all(np.array_equal(plain, s) for s in _samples(AugmentConfig.off(), picture))
    changes = {field: value, "random_crop": field in ("random_crop", "pad_crop")}
    on = _samples(dataclasses.replace(AugmentConfig.off(), **changes), picture)
    assert any(not np.allclose(plain, s, atol=1e-3) for s in on)
    for s in on:
        assert s.shape == (3,) + OUT_HW and s.dtype == np.float32


def test_everything_on_keeps_shapes_and_types(picture):
    cfg = AugmentConfig(vflip=True, hue=0.1, rotate=15, aspect_stretch=0.2, pca_lighting=0.1)
    transform = TrainTransform(OUT_HW, "raw", cfg)
    for seed in range(4):
        transform.reseed(seed)
        x = transform(picture[:, ::-1])  # a non-contiguous view, as a flipped input would be
        assert x.shape == (3,) + OUT_HW and x.dtype == np.float32 and x.flags.c_contiguous
        transform.reseed(seed)
        u8 = transform.augment_uint8(picture)
        assert u8.shape == OUT_HW + (3,) and u8.dtype == np.uint8


def test_same_seed_same_sample(picture):
    cfg = AugmentConfig(hue=0.1, rotate=15, aspect_stretch=0.2, pca_lighting=0.1)
    a, b = _samples(cfg, picture, [5]), _samples(cfg, picture, [5])
    assert np.array_equal(a[0], b[0])


def test_lighting_is_folded_into_the_normalisation(picture):
    offset = np.array([10.5, -3.0, 7.25], np.float32)
    for norm in ("imagenet", "raw"):
        folded = to_chw_float(picture, norm, offset)
        mean, std = NORMALIZATIONS[norm]
        expected = ((picture.astype(np.float32) + offset - mean) / np.asarray(std, np.float32)).transpose(2, 0, 1)
        assert np.allclose(folded, expected, atol=1e-4)
    assert np.array_equal(to_chw_float(picture, "raw"), picture.astype(np.float32).transpose(2, 0, 1))


def test_colour_operations(picture):
    assert np.array_equal(images.adjust_brightness(picture, 1.0), picture)
    assert np.array_equal(images.adjust_hue(picture, 0.0), picture)
    grey = images.adjust_saturation(picture, 0.0)
    assert (np.ptp(grey.astype(int), axis=2) <= 1).all()
    flat = images.adjust_contrast(picture, 0.0)
    assert np.ptp(flat) == 0
    brighter = images.adjust_brightness(picture, 1.3)
    assert brighter.mean() > picture.mean() and brighter.dtype == np.uint8
    assert images.adjust_hue(picture, 0.25)[15, 20].argmax() != 0  # the red square is no longer red


def test_rotation_reflects_the_border():
    img = np.full((40, 40, 3), 200, np.uint8)
    rotated = cv2.warpAffine(img, images.warp_matrix((40, 40), 45, 1.0), (40, 40),
                             borderMode=cv2.BORDER_REFLECT_101)
    assert rotated.min() == 200  # no black corners


def test_preview_samples_from_arrays_and_paths(picture, tmp_path):
    path = str(tmp_path / "p.png")
    cv2.imwrite(path, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    transform = TrainTransform(OUT_HW, "imagenet", AugmentConfig(rotate=10))
    samples = preview_samples([picture, path], transform, 5, seed=1)
    assert len(samples) == 5
    assert all(s.shape == OUT_HW + (3,) and s.dtype == np.uint8 for s in samples)
    assert np.array_equal(samples[0], preview_samples([picture], transform, 1, seed=1)[0])


def _parse(*argv):
    parser = argparse.ArgumentParser()
    augment_presets.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_from_args_defaults_match_the_dataclass():
    assert AugmentConfig.from_args(_parse()) == AugmentConfig()
    assert AugmentConfig.from_args(_parse("--no-augment")) == AugmentConfig.off()


def test_from_args_values():
    cfg = AugmentConfig.from_args(_parse("--rand-crop-scale", "0.3,0.9", "--rand-crop-ratio", "0.5,2",
                                         "--no-hflip", "--vflip", "--brightness", "0", "--hue", "0.05",
                                         "--rotate", "12", "--aspect-stretch", "0.2", "--pca-lighting", "0.1",
                                         "--no-rand-crop"))
    assert cfg == AugmentConfig(scale=(0.3, 0.9), ratio=(0.5, 2.0), hflip=False, vflip=True, brightness=0.0,
                                hue=0.05, rotate=12.0, aspect_stretch=0.2, pca_lighting=0.1, random_crop=False)


@pytest.mark.parametrize("argv, flag", [
    (["--rand-crop-scale", "0.5,0.2"], "--rand-crop-scale"),
    (["--rand-crop-scale", "0,1"], "--rand-crop-scale"),
    (["--rand-crop-scale", "big"], "--rand-crop-scale"),
    (["--rand-crop-ratio", "2,1"], "--rand-crop-ratio"),
    (["--rand-crop-ratio", "1/0,2"], "--rand-crop-ratio"),
    (["--brightness", "-0.1"], "--brightness"),
    (["--contrast", "1.5"], "--contrast"),
    (["--saturation", "2"], "--saturation"),
    (["--hue", "0.7"], "--hue"),
    (["--rotate", "-5"], "--rotate"),
    (["--aspect-stretch", "1"], "--aspect-stretch"),
    (["--pca-lighting", "-1"], "--pca-lighting"),
    (["--no-augment", "--rotate", "10"], "--rotate"),
    (["--crop-pad", "0.7"], "--crop-pad"),
])
def test_from_args_rejects_bad_values(argv, flag):
    with pytest.raises(UserInputError, match=flag):
        AugmentConfig.from_args(_parse(*argv))


def test_preview_settings():
    assert images.preview_settings(_parse()) is None
    assert images.preview_settings(_parse("--preview-augmentation", "16")) == (16, "augmentation-preview.png")
    with pytest.raises(UserInputError, match="--preview-out"):
        images.preview_settings(_parse("--preview-augmentation", "4", "--preview-out", "grid.jpg"))
    with pytest.raises(UserInputError, match="--preview-augmentation"):
        images.preview_settings(_parse("--preview-augmentation", "-2"))


def test_pad_crop_shifts_the_whole_image_by_at_most_the_padding(picture):
    rng = __import__("random").Random(0)
    small = cv2.resize(picture, (32, 32))
    shifted = [images.pad_and_crop(small, 0.125, rng) for _ in range(20)]
    assert all(s.shape == small.shape and s.dtype == np.uint8 for s in shifted)
    assert any(not np.array_equal(s, small) for s in shifted)
    # a shift of (dy, dx) within 4 px leaves the inner 24x24 of the image in view
    assert all(any(np.array_equal(s[4 + dy:28 + dy, 4 + dx:28 + dx], small[4:28, 4:28])
                   for dy in range(-4, 5) for dx in range(-4, 5)) for s in shifted)


def _situation(side, finetune, epochs, per_class, updates=5000):
    return Situation(image_side=side, finetune=finetune, num_epoch=epochs, images_per_class=per_class,
                     num_updates=updates)


SITUATIONS = [  # (situation, preset auto picks, a word of the reason)
    (_situation(32, False, 3, 50, updates=48), "light", "short run"),
    (_situation(224, False, 90, 10, updates=149), "light", "short run"),
    (_situation(224, True, 90, 1000, updates=100000), "light", "fine-tuning"),
    (_situation(224, True, 3, 10, updates=20), "light", "fine-tuning"),
    (_situation(32, False, 5, 100, updates=160), "standard", "from scratch of 160 updates"),
    (_situation(224, False, 90, 1300, updates=150), "standard", "from scratch"),
]


@pytest.mark.parametrize("situation, preset, reason", SITUATIONS)
def test_auto_picks_the_documented_preset(situation, preset, reason):
    chosen, why = choose_preset(situation)
    assert (chosen, reason in why) == (preset, True)


@pytest.mark.parametrize("argv", [[], ["--brightness", "0.1"]])
def test_auto_leaves_out_the_flip_and_says_why(argv):
    recipe = resolve_augmentation(_parse(*argv), SHORT_RUN)
    assert recipe.preset == "standard" and not recipe.config.hflip and "mirror" in recipe.reason
    assert recipe.config == dataclasses.replace(PRESETS["standard"], hflip=False, **(
        {"brightness": 0.1} if argv else {}))
    assert resolve_augmentation(_parse("--augment", "standard"), SHORT_RUN).config.hflip


def test_presets_are_what_the_readme_says():
    assert PRESETS["none"] == AugmentConfig.off()
    assert PRESETS["imagenet"] == AugmentConfig()
    light, standard = PRESETS["light"], PRESETS["standard"]
    assert light.pad_crop == 0.125 and light.hflip and light.brightness == 0 and not light.vflip
    assert standard.pad_crop == 0 and standard.scale == (0.35, 1.0) and standard.brightness == 0.2


SHORT_RUN = _situation(32, False, 5, 100, updates=1000)
NO_FLIP = {"hflip": False}


@pytest.mark.parametrize("argv, preset, expected", [
    ([], "standard", dataclasses.replace(PRESETS["standard"], **NO_FLIP)),
    (["--augment", "light", "--brightness", "0.3"], "light", dataclasses.replace(PRESETS["light"], brightness=0.3)),
    (["--rand-crop-scale", "0.5,1"], "standard", dataclasses.replace(PRESETS["standard"], scale=(0.5, 1.0), **NO_FLIP)),
    (["--augment", "light", "--rand-crop-scale", "0.5,1"], "light",
     dataclasses.replace(PRESETS["light"], pad_crop=0.0, scale=(0.5, 1.0))),
    (["--augment", "standard", "--no-hflip"], "standard", dataclasses.replace(PRESETS["standard"], hflip=False)),
    (["--augment", "none", "--rotate", "10"], "none", dataclasses.replace(AugmentConfig.off(), rotate=10.0)),
    (["--augment", "imagenet", "--crop-pad", "0.1"], "imagenet", dataclasses.replace(AugmentConfig(), pad_crop=0.1)),
    (["--no-augment"], "none", AugmentConfig.off()),
])
def test_explicit_flags_override_the_preset(argv, preset, expected):
    recipe = resolve_augmentation(_parse(*argv), SHORT_RUN)
    assert (recipe.preset, recipe.config) == (preset, expected)
    assert recipe.to_dict()["params"]["pad_crop"] == expected.pad_crop


def test_no_augment_contradicting_a_preset_is_refused():
    with pytest.raises(UserInputError, match="--no-augment"):
        resolve_augmentation(_parse("--no-augment", "--augment", "light"), SHORT_RUN)


@pytest.mark.slow
def test_auto_through_the_cli_logs_its_choice_and_records_the_recipe(tiny_data, tmp_path):
    save = str(tmp_path / "save")
    proc = run_cli("train", "--network", "resnet18_v1", "--image-shape", "3,32,32", "--batch-size", "8",
                   "--num-epoch", "1", "--data-train", tiny_data["train"], "--image-train", tiny_data["root"],
                   "--save-result", save, "--seed", "1", "--quiet", "--data-nthreads", "1", "--saturation", "0.2")
    log = open(os.path.join(save, "train.log")).read()
    assert "augmentation: light (short run from scratch (3 updates < 150)" in log and "mirror" in log
    assert "overridden by --saturation" in log
    recipe = json.load(open(os.path.join(save, "config.json")))["augmentation"]
    assert (recipe["preset"], recipe["overrides"]) == ("light", ["--saturation"])
    assert recipe["params"]["pad_crop"] == 0.125 and recipe["params"]["hflip"] is False
    assert recipe["params"]["saturation"] == 0.2
    # the default lr policy is logged with its reason: 0.2 x 8 / 256 from scratch
    assert "lr 0.00625: --lr not given, the default policy (from scratch" in log, proc.stderr[-2000:]


@pytest.mark.parametrize("argv, field, value", [
    (["--crop-pad", "0.125"], "pad_crop", 0.125),
    (["--rand-crop-scale", "0.5,1"], "scale", (0.5, 1.0)),
])
def test_a_crop_flag_on_a_base_without_crop_turns_the_crop_on(argv, field, value):
    """--augment none --crop-pad 0.125 means the pad-and-crop alone, not a centre crop that ignores it."""
    cfg = AugmentConfig.from_args(_parse(*argv), base=AugmentConfig.off())
    assert cfg.random_crop and getattr(cfg, field) == value and not cfg.hflip
    assert not AugmentConfig.from_args(_parse("--crop-pad", "0"), base=AugmentConfig.off()).random_crop

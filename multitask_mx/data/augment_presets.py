"""Augmentation presets (--augment) and the rule that picks one for ``auto``.

A preset is a whole ``AugmentConfig``; the explicit augmentation flags are applied on
top of it (``AugmentConfig.from_args(args, base=preset)``), so any flag the user gives
wins over the preset. The rule for ``auto`` comes from issue 10's measurements: the
ImageNet-from-scratch recipe (crops down to 8 % of the image, colour jitter 0.4) took
a 5-epoch ResNet-20 at 32 px from 0.78-0.80 (no augmentation) down to 0.49-0.56, and
fine-tuning from 0.81 to 0.40, while CIFAR's pad-crop + flip reached 0.80-0.82.
"""
import dataclasses
import logging
from dataclasses import dataclass

from .augment import AugmentConfig, explicit_flags
from ..errors import UserInputError

_logger = logging.getLogger(__name__)

PRESETS = {
    # resize + centre crop: what evaluation sees
    "none": AugmentConfig.off(),
    # the original multi-task-MXNet's and CIFAR's recipe: shift by up to 1/8 of the side, mirror
    "light": AugmentConfig(pad_crop=0.125, brightness=0.0, contrast=0.0, saturation=0.0),
    # a random resized crop that keeps at least a third of the image, mild colour jitter
    "standard": AugmentConfig(scale=(0.35, 1.0), brightness=0.2, contrast=0.2, saturation=0.2),
    # ImageNet from scratch for ~90 epochs (the defaults before issue 10)
    "imagenet": AugmentConfig(),
}
PRESET_NAMES = ["auto"] + list(PRESETS)

# ``auto`` picks "none" for runs of fewer optimizer updates than this: they end before the network
# fits its training images, so augmentation only slows learning. Measured (val acc of `label`): digits
# at 32 px, ResNet-20, 600 images, 3 epochs = 57 updates: none 0.72, light 0.44; data_example (make demo),
# resnet18_v1 from scratch, 15 epochs = 120 updates: none 0.56 and 0.46, light 0.49 (noise); issue 10's photo run,
# 5 epochs of 2,000 images (~310 updates), gained from pad-crop + flip: 0.80-0.82 vs 0.78-0.80.
NONE_BELOW_UPDATES = 300
# ``auto`` picks "standard" only for runs at least this long, ...
STANDARD_MIN_EPOCHS = 30
# ... on images at least this large (short side of --image-shape), ...
STANDARD_MIN_SIDE = 64
# ... with at least this many training images per class (first task).
STANDARD_MIN_PER_CLASS = 200


@dataclass(frozen=True)
class Situation:
    """What ``auto`` knows about the run."""

    image_side: int
    finetune: bool
    num_epoch: int
    images_per_class: float
    num_updates: int


@dataclass(frozen=True)
class Recipe:
    """The resolved augmentation: preset name, why it was chosen, the settings used (overrides included)."""

    preset: str
    reason: str
    config: AugmentConfig
    overrides: tuple = ()

    def to_dict(self):
        """JSON-friendly form for config.json."""
        return {"preset": self.preset, "reason": self.reason, "overrides": list(self.overrides),
                "params": dataclasses.asdict(self.config)}


def choose_preset(situation: Situation):
    """(preset, reason) that ``--augment auto`` picks; never "imagenet".

    None for very short runs; otherwise light unless every condition for standard holds: heavy crops and colour changes
    need many epochs and images to pay off, small images lose the object in a crop,
    and a pretrained trunk's features and BatchNorm statistics suffer from them.
    """
    s = situation
    if s.num_updates < NONE_BELOW_UPDATES:
        return "none", "very short run (%d updates < %d): it ends before augmentation could pay off" % (
            s.num_updates, NONE_BELOW_UPDATES)
    if s.finetune:
        return "light", "fine-tuning pretrained weights: keep the images close to what the trunk knows"
    if s.num_epoch < STANDARD_MIN_EPOCHS:
        return "light", "short run (%d epochs < %d): strong augmentation would not pay off" % (
            s.num_epoch, STANDARD_MIN_EPOCHS)
    if s.image_side < STANDARD_MIN_SIDE:
        return "light", "small images (%d px < %d): a resized crop would lose the object" % (
            s.image_side, STANDARD_MIN_SIDE)
    if s.images_per_class < STANDARD_MIN_PER_CLASS:
        return "light", "few images per class (%.0f < %d)" % (s.images_per_class, STANDARD_MIN_PER_CLASS)
    return "standard", "long run from scratch (%d epochs) on %d px images, %.0f images per class" % (
        s.num_epoch, s.image_side, s.images_per_class)


def check_flags(args):
    """Refuse contradicting or out-of-range augmentation flags (UserInputError), before any work."""
    if args.no_augment and args.augment not in ("auto", "none"):
        raise UserInputError("--no-augment is --augment none, but --augment %s asks for augmentation; "
                             "give one of them." % args.augment)
    AugmentConfig.from_args(args, base=PRESETS[args.augment if args.augment != "auto" else "standard"])


def resolve_augmentation(args, situation: Situation):
    """The Recipe for the parsed flags: --augment (or --no-augment) as the base, explicit flags on top.

    Logs the choice and its reason in one line. Raises UserInputError for contradicting flags.
    """
    check_flags(args)
    if args.no_augment:
        preset, reason = "none", "--no-augment"
    elif args.augment == "auto":
        preset, reason = choose_preset(situation)
    else:
        preset, reason = args.augment, "--augment %s" % args.augment
    overrides = tuple(explicit_flags(args))
    recipe = Recipe(preset, reason, AugmentConfig.from_args(args, base=PRESETS[preset]), overrides)
    _logger.info("augmentation: %s (%s)%s", preset, reason,
                 "; overridden by %s" % " ".join(overrides) if overrides else "")
    return recipe

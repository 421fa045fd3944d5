"""Augmentation presets (--augment) and the rule that picks one for ``auto``.

A preset is a whole ``AugmentConfig``; the explicit augmentation flags are applied on
top of it (``AugmentConfig.from_args(args, base=preset)``), so any flag the user gives
wins over the preset. The rule for ``auto`` comes from measurements (issue 10 and
benchmarks/bench_learning.py): the ImageNet-from-scratch recipe (crops down to 8 % of the
image, colour jitter 0.4) took a 5-epoch ResNet-20 at 32 px from 0.78-0.80 (no augmentation)
down to 0.49-0.56, and fine-tuning from 0.81 to 0.40, while CIFAR's pad-crop + flip reached
0.80-0.82; without the flip the milder presets beat no augmentation from 160 updates on (at 48 they tie).
"""
import dataclasses
import logging
from dataclasses import dataclass

from .augment import AugmentConfig, add_override_arguments, explicit_flags
from ..errors import UserInputError

_logger = logging.getLogger(__name__)

PRESETS = {
    # resize + centre crop: what evaluation sees
    "none": AugmentConfig.off(),
    # the original multi-task-MXNet's and CIFAR's recipe: shift by up to 1/8 of the side, mirror
    "light": AugmentConfig(pad_crop=0.125, brightness=0.0, contrast=0.0, saturation=0.0),
    # a random resized crop that keeps at least a third of the image, mild colour jitter
    "standard": AugmentConfig(scale=(0.35, 1.0), brightness=0.2, contrast=0.2, saturation=0.2),
    # ImageNet from scratch for ~90 epochs: strong crops and colour jitter
    "imagenet": AugmentConfig(),
}
PRESET_NAMES = ["auto"] + list(PRESETS)

# ``auto`` picks "standard" for runs from scratch of at least this many optimizer updates, "light" for shorter
# ones: below it the presets were within the seeds' noise and light is the milder (docs/reference.md "Defaults
# that learn" has the runs; the rule held at a user's own batch and lr too: docs/learning.md).
STANDARD_MIN_UPDATES = 150

# ``auto`` leaves out the mirror flip: it cannot tell whether a mirror changes the class (digits, letters).
AUTO_NO_FLIP = "without the mirror flip (auto cannot tell whether a mirror changes a class: digits, text; " \
    "--augment %s keeps it)"


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


def auto_preset(finetune, num_updates):
    """(preset, reason) of ``--augment auto``: "light" or "standard", never "none" or "imagenet".

    Fine-tuning gets light (a pretrained trunk's features and BatchNorm statistics suffer from strong
    crops and colour changes); a run from scratch gets standard once it has STANDARD_MIN_UPDATES
    updates, light before, whatever the lr. ``resolve_augmentation`` then leaves out the flip (AUTO_NO_FLIP).
    """
    if finetune:
        return "light", "fine-tuning pretrained weights: keep the images close to what the trunk knows"
    if num_updates < STANDARD_MIN_UPDATES:
        return "light", "short run from scratch (%d updates < %d)" % (num_updates, STANDARD_MIN_UPDATES)
    return "standard", "run from scratch of %d updates (>= %d)" % (num_updates, STANDARD_MIN_UPDATES)


def choose_preset(situation: Situation):
    """(preset, reason) that ``--augment auto`` picks for the run: ``auto_preset`` of its situation."""
    return auto_preset(situation.finetune, situation.num_updates)


def check_flags(settings):
    """Refuse contradicting or out-of-range augmentation flags (UserInputError), before any work."""
    if settings.no_augment and settings.augment not in ("auto", "none"):
        raise UserInputError("--no-augment is --augment none, but --augment %s asks for augmentation; "
                             "give one of them." % settings.augment)
    AugmentConfig.from_args(settings, base=PRESETS[settings.augment if settings.augment != "auto" else "standard"])


def resolve_augmentation(settings, situation: Situation):
    """The Recipe for the parsed flags: --augment (or --no-augment) as the base, explicit flags on top.

    Logs the choice and its reason in one line. Raises UserInputError for contradicting flags.
    """
    check_flags(settings)
    if settings.no_augment:
        preset, reason = "none", "--no-augment"
    elif settings.augment == "auto":
        preset, reason = choose_preset(situation)
    else:
        preset, reason = settings.augment, "--augment %s" % settings.augment
    base = PRESETS[preset]
    if settings.augment == "auto" and not settings.no_augment:
        base, reason = dataclasses.replace(base, hflip=False), "%s; %s" % (reason, AUTO_NO_FLIP % preset)
    overrides = tuple(explicit_flags(settings))
    recipe = Recipe(preset, reason, AugmentConfig.from_args(settings, base=base), overrides)
    _logger.info("augmentation: %s (%s)%s", preset, reason,
                 "; overridden by %s" % " ".join(overrides) if overrides else "")
    return recipe


def add_arguments(parser):
    """The "augmentation" flags: a preset (--augment, one of PRESET_NAMES) and the flags that override its parts."""
    group = parser.add_argument_group("augmentation")
    group.add_argument("--augment", default="auto", choices=PRESET_NAMES,
                       help="augmentation preset (docs/reference.md 'Defaults that learn'); auto: light when "
                       "fine-tuning or for runs from scratch of under 150 updates, standard for longer ones, both "
                       "without the mirror flip; the log says why")
    add_override_arguments(group)

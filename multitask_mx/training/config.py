"""A training run's configuration: one typed settings object per stage, read from the flags once.

``TrainConfig.from_args`` turns the parsed ``train`` (or ``find-lr``) flags into the stage settings
(``DataSettings``, ``AugmentSettings``, ``ModelSettings``, ``OptimSettings``, ``CheckpointSettings``,
``MonitorSettings``, ``DistSettings``, ``PrecisionSettings``), each checked by its own stage, then the
checks that span stages. Every flag belongs to exactly one stage (tests/training/test_config.py);
stage functions are handed their stage's settings, never the Namespace.
"""
import os
from dataclasses import dataclass, fields
from typing import Optional

from ..atomic import check_output_file
from ..data.settings import AugmentSettings, DataSettings
from ..model.settings import ModelSettings, PrecisionSettings
from ..runfolder import RunDir
from .settings import CheckpointSettings, DistSettings, MonitorSettings, OptimSettings
from ..data import augment
from . import early_stopping, flag_rules, gradients


@dataclass(frozen=True)
class TrainConfig:
    """The settings of every stage of a run, and the --config it repeats (if any)."""

    data: DataSettings
    augment: AugmentSettings
    model: ModelSettings
    optim: OptimSettings
    checkpoint: CheckpointSettings
    monitor: MonitorSettings
    dist: DistSettings
    precision: PrecisionSettings
    config: Optional[str] = None  # the config.json whose flags this run repeats

    @classmethod
    def stages(cls):
        """{field name: settings class} of the stages, in the order their flags are declared."""
        return {f.name: f.type for f in fields(cls) if f.name != "config"}

    @classmethod
    def add_arguments(cls, parser):
        """Every stage's flags (and --config) on ``parser``."""
        for stage in cls.stages().values():
            stage.add_arguments(parser)
        parser.add_argument("--config", default=None, metavar="CONFIG_JSON",
                            help="repeat the run of this config.json (runs/x/config.json): its flags, overridden "
                            "by those given here; --save-result defaults to a new folder beside it")

    @classmethod
    def from_args(cls, args, command="train"):
        """The checked configuration of parsed flags; UserInputError naming the flag when one cannot run.

        ``command``: train or find-lr (a flag that does nothing in one may act in the other).
        """
        config = cls(config=getattr(args, "config", None),
                     **{name: stage.from_args(args) for name, stage in cls.stages().items()})
        config.check(command)
        return config

    @classmethod
    def defaults(cls):
        """{flag dest: argparse default} of every stage's flags."""
        values = {}
        for stage in cls.stages().values():
            values.update(stage.defaults())
        return values

    def check(self, command="train"):
        """The checks that need more than one stage's settings (each stage checked its own already)."""
        check_early_stopping(self)
        gradients.GradientConfig.from_args(self.optim).check_precision(self.precision.dtype)
        check_train_outputs(self)
        flag_rules.check_flag_effects(self.flags(), self.defaults(), command)

    def flags(self):
        """{flag dest: value} of every flag, sorted: config.json's "args", the flags a run logs."""
        values = {"config": self.config}
        for name in self.stages():
            values.update(getattr(self, name).to_dict())
        return dict(sorted(values.items()))

    def run_dir(self):
        """The RunDir of --save-result and --save-name."""
        return RunDir(self.checkpoint.save_result, self.checkpoint.save_name)

    def continues_run(self):
        """--resume, or --model SAVE_RESULT/SAVE_NAME (the original's way to continue a run)."""
        return bool(self.checkpoint.resume or self.model_is_own_prefix())

    def model_is_own_prefix(self):
        """True when --model names this run's own checkpoint prefix (SAVE_RESULT/SAVE_NAME)."""
        return bool(self.model.model) and \
            os.path.abspath(self.model.model) == os.path.abspath(self.run_dir().prefix)

    def draws_only(self):
        """True for --plot-lr and --preview-augmentation: the run writes its PNG(s) and trains nothing."""
        return bool(self.optim.plot_lr or augment.preview_settings(self.augment))


class Settled:
    """The values a run settles before training, each with why: given by its flag, the resumed run's, or
    chosen by a policy. Logged as each is settled; config.json records them ("settled")."""

    def __init__(self):
        self.values = {}

    def record(self, name, value, why):
        """Keep ``value`` of ``name`` with ``why``; returns ``value``."""
        self.values[name] = {"value": value, "why": why}
        return value


def check_early_stopping(config: TrainConfig):
    """--early-stop with the other stages' --best-metric, --data-val and --kv-store."""
    early_stopping.check_early_stop(config.checkpoint.early_stop, config.checkpoint.best_metric,
                                    config.data.data_val, config.dist.kv_store)


def check_train_outputs(config: TrainConfig):
    """--plot-lr and --preview-augmentation's PNGs: never a list, an image folder's file or the run's own file."""
    inputs = (("--data-train", config.data.data_train), ("--data-val", config.data.data_val),
              ("--config", config.config))
    preview = augment.preview_settings(config.augment)
    drawings = (("--plot-lr", config.optim.plot_lr), ("--preview-augmentation", preview[1] if preview else None))
    for flag, path in drawings:
        if path:
            check_output_file(path, flag, inputs, config.run_dir())

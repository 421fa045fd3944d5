"""The model stage's settings (trunk, heads, fine-tuning) and the precision stage's, from their flags."""
from dataclasses import dataclass
from typing import Optional

from ..settings import Settings
from . import finetune, network, precision


@dataclass(frozen=True)
class ModelSettings(Settings):
    """Which trunk, from which weights, the heads on it, and which parameters train at what rate."""

    network: Optional[str]
    model: Optional[str]
    model_epoch: int
    pretrained: bool
    model_root: Optional[str]
    head_hidden: int
    head_dropout: float
    freeze_trunk: bool
    unfreeze_from: Optional[str]
    freeze_epochs: int
    trunk_lr_mult: float
    head_lr_mult: Optional[float]
    no_wd_bias_bn: bool

    FLAGS = (network.add_arguments, finetune.add_arguments)
    CHECKS = (finetune.check_freezing,)

    def is_finetuning(self):
        """True when the trunk starts from pretrained weights (--model, --pretrained) rather than from scratch."""
        return bool(self.model or self.pretrained)

    def from_classic_checkpoint(self):
        """True when --model names a classic MXNet checkpoint prefix (not a Gluon .params file)."""
        return bool(self.model) and not self.model.endswith(".params")


@dataclass(frozen=True)
class PrecisionSettings(Settings):
    """--dtype: the type training computes in (``auto`` is settled by timing, model/dtype_choice.py)."""

    dtype: str

    FLAGS = (precision.add_arguments,)

"""Transfer-learning controls: which parameters train, and at what rate.

Frozen parameters get ``grad_req='null'``: no gradient is computed or stored for
them and the trainer skips them, so feature extraction costs no trunk backward.
"""
import logging
from dataclasses import dataclass
from typing import Optional

from ..errors import UserInputError
from ..flagtypes import non_negative_float, non_negative_int

_logger = logging.getLogger(__name__)

NO_WD_PATTERN = ".*gamma|.*beta|.*bias|.*running_mean|.*running_var|.*moving_mean|.*moving_var"

# The new heads' lr multiplier when fine-tuning a trunk at the default lr: the heads start from random weights,
# the trunk from good ones (4x was ahead of 1x and 10x on every seed: docs/reference.md "Defaults that learn").
FINETUNE_HEAD_LR_MULT = 4.0


def default_head_lr_mult(model, lr):
    """(multiplier, reason) for the heads' lr when --head-lr-mult is not given (``model``: the ModelSettings)."""
    if not model.is_finetuning():
        return 1.0, "from scratch: heads and trunk learn at the same rate"
    if model.freeze_trunk:
        return 1.0, "--freeze-trunk: only the heads learn, at --lr"
    if lr is not None:
        # part of the default lr policy only: at a chosen, higher --lr, heads at 4x lost (docs/reference.md)
        return 1.0, "--lr %s given: every layer learns at it" % lr
    return FINETUNE_HEAD_LR_MULT, "fine-tuning at the default lr: the new heads start from random weights, " \
        "the trunk from pretrained ones"


def check_freezing(model):
    """Refuse freezing flags of ``model`` (the ModelSettings) that contradict each other."""
    if model.freeze_trunk and model.unfreeze_from:
        raise UserInputError("--freeze-trunk trains no trunk layer, --unfreeze-from %s trains some: use one. "
                             "(--freeze-epochs N with --unfreeze-from does both in sequence.)" % model.unfreeze_from)
    if model.freeze_epochs < 0 or (model.freeze_trunk and model.freeze_epochs):
        raise UserInputError("--freeze-epochs N trains the heads alone for N epochs, then fine-tunes; "
                             "it cannot be combined with --freeze-trunk (frozen throughout).")
    if model.trunk_lr_mult < 0:
        raise UserInputError("--trunk-lr-mult must be 0 or more (0.1 = the trunk learns 10x slower).")


@dataclass
class FinetuneConfig:
    """Freezing and learning-rate settings of a run, with the heads' multiplier settled."""

    freeze_trunk: bool = False
    unfreeze_from: Optional[str] = None
    freeze_epochs: int = 0
    trunk_lr_mult: float = 1.0
    no_wd_bias_bn: bool = False
    head_lr_mult: float = 1.0
    head_lr_reason: str = "--head-lr-mult"

    @classmethod
    def settle(cls, model, lr, head_lr_mult=None, head_lr_reason=None):
        """The FinetuneConfig of ``model`` (the ModelSettings) when training at --lr ``lr`` (None: not given).

        ``head_lr_mult`` (with its reason): the heads' multiplier when --head-lr-mult is not given, decided
        by the caller (a resumed run's, find-lr's); else ``default_head_lr_mult``.
        """
        check_freezing(model)
        if model.head_lr_mult is not None:
            head_mult, reason = model.head_lr_mult, "--head-lr-mult"
        elif head_lr_mult is not None:
            head_mult, reason = head_lr_mult, head_lr_reason
        else:
            head_mult, reason = default_head_lr_mult(model, lr)
        return cls(model.freeze_trunk, model.unfreeze_from, model.freeze_epochs, model.trunk_lr_mult,
                   model.no_wd_bias_bn, head_mult, reason)

    def frozen_at(self, epoch):
        """What is frozen in (1-based) ``epoch``: 'trunk', 'below' (under unfreeze_from) or None."""
        if self.freeze_trunk or (self.freeze_epochs and epoch <= self.freeze_epochs):
            return "trunk"
        return "below" if self.unfreeze_from else None


def trainable_split(net, unfreeze_from):
    """(frozen, trainable) trunk parameter lists: trainable from the first name containing ``unfreeze_from``."""
    params = net.trunk_params()
    start = next((i for i, p in enumerate(params) if _matches(p.name, unfreeze_from)), None)
    if start is None:
        stages = sorted({_stage_of(p.name) for p in params if _stage_of(p.name)})
        raise UserInputError("--unfreeze-from %r matches no trunk layer. Stages of this network: %s; or give a "
                             "layer-name prefix such as %r." % (unfreeze_from, ", ".join(stages) or "none",
                                                                 _short(params[-1].name)))
    return params[:start], params[start:]


def _short(name):
    from .network import NET_PREFIX
    return name[len(NET_PREFIX):] if name.startswith(NET_PREFIX) else name


def _matches(name, wanted):
    short = _short(name)
    return short.startswith(wanted) or ("_%s" % wanted) in short or short.split("_", 1)[-1].startswith(wanted)


def _stage_of(name):
    for part in _short(name).split("_"):
        if part.startswith("stage") or part.startswith("layer"):
            return part
    return None


def apply_freezing(net, cfg: FinetuneConfig, epoch):
    """Set grad_req for ``epoch``; returns True if it changed (the graph must be re-hybridized)."""
    mode = cfg.frozen_at(epoch)
    frozen, trainable = [], net.trunk_params()
    if mode == "trunk":
        frozen, trainable = trainable, []
    elif mode == "below":
        frozen, trainable = trainable_split(net, cfg.unfreeze_from)
    changed = False
    for param, req in [(p, "null") for p in frozen] + [(p, "write") for p in trainable]:
        if param.grad_req != req:
            param.grad_req = req
            changed = True
    for param in net.head_params().values():
        param.grad_req = "write"
    if changed or epoch == 1:
        describe_trainable(net, frozen, trainable, epoch)
    return changed


def describe_trainable(net, frozen, trainable, epoch):
    """Log which layers train from ``epoch`` on."""
    if not frozen:
        _logger.info("epoch %d: all layers train (%d trunk parameters + heads)", epoch, len(trainable))
    elif not trainable:
        _logger.info("epoch %d: trunk frozen (%d parameters), only the heads train", epoch, len(frozen))
    else:
        _logger.info("epoch %d: trunk frozen up to %s; training %s .. %s and the heads", epoch,
                     _short(frozen[-1].name), _short(trainable[0].name), _short(trainable[-1].name))


def apply_rate_multipliers(net, cfg: FinetuneConfig):
    """Per-parameter lr_mult for the trunk and the heads, and wd_mult 0 for biases and BatchNorm if asked."""
    if cfg.trunk_lr_mult != 1.0:
        for param in net.trunk_params():
            param.lr_mult = cfg.trunk_lr_mult
        _logger.info("trunk learns at %g x --lr", cfg.trunk_lr_mult)
    if cfg.head_lr_mult != 1.0:
        net.head_params().setattr("lr_mult", cfg.head_lr_mult)
        _logger.info("heads learn at %g x --lr (%s)", cfg.head_lr_mult, cfg.head_lr_reason)
    if cfg.no_wd_bias_bn:
        net.collect_params(NO_WD_PATTERN).setattr("wd_mult", 0.0)
        _logger.info("no weight decay on biases and BatchNorm parameters")


def add_arguments(parser):
    """Fine-tuning flags."""
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--freeze-trunk", action="store_true", help="train only the heads (feature extraction)")
    group.add_argument("--unfreeze-from", default=None, metavar="STAGE",
                       help="train the heads and the trunk from this stage up (e.g. stage4, or a layer prefix)")
    group.add_argument("--freeze-epochs", type=non_negative_int, default=0,
                       help="heads only for N epochs, then fine-tune (all, or from --unfreeze-from)")
    group.add_argument("--trunk-lr-mult", type=non_negative_float, default=1.0, help="trunk learning rate = this x --lr")
    group.add_argument("--head-lr-mult", type=non_negative_float, default=None,
                       help="heads' learning rate = this x --lr (default: %g when fine-tuning a trunk that "
                            "trains at the default lr, else 1)" % FINETUNE_HEAD_LR_MULT)
    group.add_argument("--no-wd-bias-bn", action="store_true", help="no weight decay on biases and BatchNorm")

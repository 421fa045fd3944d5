"""The settings of running a trained model (evaluate, predict), from their flags."""
from dataclasses import dataclass
from typing import Optional

from ..settings import Settings
from . import inference


@dataclass(frozen=True)
class PredictSettings(Settings):
    """How evaluate and predict run the model: batch, loader workers, test-time augmentation, devices."""

    batch_size: Optional[int]
    data_nthreads: Optional[int]
    tta: str
    quiet: bool
    max_image_pixels: int
    gpus: str
    cpus: int

    FLAGS = (inference.add_prediction_arguments,)

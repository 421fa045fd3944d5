"""The data stage's settings (lists, images, tasks) and the augmentation stage's, from their flags."""
from dataclasses import dataclass
from typing import List, Optional

from ..settings import Settings
from . import augment, augment_presets, datasets, task_kinds, tasks
from .images import parse_image_shape


@dataclass(frozen=True)
class DataSettings(Settings):
    """The lists, where their images are, how they are read, and the tasks their labels make."""

    data_train: str
    image_train: Optional[str]
    data_val: Optional[str]
    image_val: Optional[str]
    image_shape: str
    num_examples: Optional[int]
    data_nthreads: Optional[int]
    cache_images: bool
    skip_bad_images: bool
    check_images: str
    max_image_pixels: int
    normalization: str
    num_classes: Optional[str]
    task_names: Optional[str]
    derived_task: Optional[List[str]]
    no_derived_task: bool
    classes: Optional[str]
    task_types: Optional[str]
    regress_loss: str
    pos_weight: str

    FLAGS = (datasets.add_arguments, tasks.add_arguments, task_kinds.add_arguments)
    CHECKS = (lambda s: parse_image_shape(s.image_shape), lambda s: tasks.parse_num_classes(s.num_classes))

    def shape(self):
        """--image-shape as (C, H, W)."""
        return parse_image_shape(self.image_shape)


@dataclass(frozen=True)
class AugmentSettings(Settings):
    """--augment's preset, the flags that change it one by one, and --preview-augmentation."""

    augment: str
    rand_crop_scale: Optional[str]
    rand_crop_ratio: Optional[str]
    crop_pad: Optional[float]
    no_rand_crop: bool
    no_hflip: bool
    vflip: bool
    brightness: Optional[float]
    contrast: Optional[float]
    saturation: Optional[float]
    hue: Optional[float]
    rotate: Optional[float]
    aspect_stretch: Optional[float]
    pca_lighting: Optional[float]
    no_augment: bool
    preview_augmentation: int
    preview_out: str

    FLAGS = (augment_presets.add_arguments,)
    CHECKS = (augment_presets.check_flags, augment.preview_settings)

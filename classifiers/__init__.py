"""Classifiers on CNN features (classical heads) and end-to-end fine-tuning of the CNN itself."""

from classifiers.augment import AUGMENTATIONS, get_augmentation
from classifiers.finetune import FineTunedCNN
from classifiers.heads import (
    HEADS,
    BlockStandardScaler,
    default_grid,
    list_heads,
    make_head,
    pixels_baseline,
    selected_blocks,
)

__all__ = [
    "AUGMENTATIONS",
    "HEADS",
    "BlockStandardScaler",
    "FineTunedCNN",
    "default_grid",
    "get_augmentation",
    "list_heads",
    "make_head",
    "pixels_baseline",
    "selected_blocks",
]

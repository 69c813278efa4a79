"""Classifiers on CNN features (classical heads) and end-to-end fine-tuning of the CNN itself."""

from classifiers.augment import AUGMENTATIONS, get_augmentation
from classifiers.finetune import FineTunedCNN
from classifiers.heads import (
    HEADS,
    SELECTIONS,
    BlockStandardScaler,
    HeadSpec,
    default_grid,
    list_heads,
    make_head,
    make_tuned_head,
    pixels_baseline,
    register_head,
    selected_blocks,
)
from classifiers.surgery import STRATEGIES, build_adapted
from classifiers.training import OPTIMIZERS, SCHEDULES, EarlyStopping

__all__ = [
    "AUGMENTATIONS",
    "HEADS",
    "OPTIMIZERS",
    "SCHEDULES",
    "SELECTIONS",
    "STRATEGIES",
    "BlockStandardScaler",
    "EarlyStopping",
    "FineTunedCNN",
    "HeadSpec",
    "build_adapted",
    "default_grid",
    "get_augmentation",
    "list_heads",
    "make_head",
    "make_tuned_head",
    "pixels_baseline",
    "register_head",
    "selected_blocks",
]

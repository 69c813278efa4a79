"""Classifiers on CNN features (classical heads) and end-to-end fine-tuning of the CNN itself.

``heads`` (the classical heads and their inner-CV tuning), ``blocks`` (the multi-layer head's per-block scaling and
feature selection), ``augment`` (augmentation policies), ``batches`` (mini-batches of images, of cached activations
and of augmented views), ``training`` (the fine-tuning loop and its callbacks), ``probe`` (the linear probe LP-FT
starts from), ``inputs`` (cached inputs of the frozen part), ``candidates`` (the candidates of one fit and the
choice), ``surgery`` (strategies, freezing), ``options`` (option names), ``persistence`` (saving a fitted estimator)
and ``finetune`` (the ``FineTunedCNN`` estimator).  Names are imported on first use, so a command can parse its
arguments before torch is imported.
"""

from featurize.lazy import lazy_exports

__getattr__, _NAMES = lazy_exports(__name__, {
    "classifiers.augment": ("AUGMENTATIONS", "get_augmentation"),
    "classifiers.finetune": ("FineTunedCNN",),
    "classifiers.options": ("HEAD_INITS", "BN_MODES", "STRATEGIES"),
    "classifiers.heads": ("HEADS", "HeadSpec", "default_grid", "list_heads", "make_head", "make_tuned_head",
        "pixels_baseline", "register_head"),
    "classifiers.blocks": ("SELECTIONS", "BlockStandardScaler", "selected_blocks"),
    "classifiers.surgery": ("build_adapted",),
    "classifiers.training": ("OPTIMIZERS", "SCHEDULES", "EarlyStopping"),
})


__all__ = sorted(_NAMES)

"""Classifiers on CNN features (classical heads) and end-to-end fine-tuning of the CNN itself.

``heads`` (the classical heads and their inner-CV tuning), ``blocks`` (the multi-layer head's per-block scaling and
feature selection), ``augment`` (augmentation policies), ``batches`` (mini-batches of images, of cached activations
and of augmented views), ``training`` (the fine-tuning loop and its callbacks), ``probe`` (the linear probe LP-FT
starts from), ``inputs`` (cached inputs of the frozen part), ``candidates`` (the candidates of one fit and the
choice), ``surgery`` (strategies, freezing), ``options`` (option names), ``persistence`` (saving a fitted estimator)
and ``finetune`` (the ``FineTunedCNN`` estimator).  Names are imported on first use, so a command can parse its
arguments before torch is imported.
"""

from importlib import import_module

_EXPORTS = {
    "AUGMENTATIONS": "augment", "get_augmentation": "augment",
    "FineTunedCNN": "finetune", "HEAD_INITS": "options", "BN_MODES": "options",
    "HEADS": "heads", "SELECTIONS": "blocks", "BlockStandardScaler": "blocks", "HeadSpec": "heads",
    "default_grid": "heads", "list_heads": "heads", "make_head": "heads", "make_tuned_head": "heads",
    "pixels_baseline": "heads", "register_head": "heads", "selected_blocks": "blocks",
    "STRATEGIES": "options", "build_adapted": "surgery",
    "OPTIMIZERS": "training", "SCHEDULES": "training", "EarlyStopping": "training",
}


def __getattr__(name: str):
    """Public names, imported on first use."""
    if name in _EXPORTS:
        return getattr(import_module(f"classifiers.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'classifiers' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

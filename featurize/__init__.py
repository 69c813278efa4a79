"""Pretrained CNN backbones with named cut points, one-pass multi-cut extraction, HDF5 activation cache, and
sharded extraction (``torchrun -m featurize.extract``, see :mod:`featurize.shards`)."""

from importlib import import_module

_EXPORTS = {
    "BackboneSpec": "spec", "CutPoint": "spec", "get_backbone_spec": "backbones", "is_backbone": "backbones",
    "list_backbones": "backbones", "list_cut_points": "backbones", "load_model": "backbones",
    "resolve_weights": "backbones", "weights_file": "backbones",
    "BackboneFamily": "families", "FAMILIES": "families", "register_family": "families",
    "CacheKeyError": "cache", "FeatureCache": "cache",
    "resolve_device": "devices",
    "POOLINGS": "multicut", "MultiCutExtractor": "multicut", "pool": "multicut",
    "UnreadableImagesWarning": "images",
    "CNNFeaturizer": "transformer",
    "Preprocessing": "preprocessing", "ResolvedWeights": "weights",
}


def __getattr__(name: str):
    """Public names, imported on first use (so ``python -m featurize.extract`` does not import itself twice)."""
    if name in _EXPORTS:
        return getattr(import_module(f"featurize.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'featurize' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

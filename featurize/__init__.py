"""Pretrained CNN backbones with named cut points, one-pass multi-cut extraction, HDF5 activation cache, and
sharded extraction (``torchrun -m featurize.extract``, see :mod:`featurize.shards`)."""

from importlib import import_module

_EXPORTS = {
    "BackboneSpec": "backbones", "CutPoint": "backbones", "get_backbone_spec": "backbones",
    "list_backbones": "backbones", "list_cut_points": "backbones",
    "CacheKeyError": "cache", "FeatureCache": "cache",
    "resolve_device": "devices",
    "POOLINGS": "extract", "MultiCutExtractor": "extract", "pool": "extract",
    "UnreadableImagesWarning": "images",
    "CNNFeaturizer": "transformer",
    "Preprocessing": "weights", "ResolvedWeights": "weights", "load_model": "weights", "resolve_weights": "weights",
}


def __getattr__(name: str):
    """Public names, imported on first use (so ``python -m featurize.extract`` does not import itself twice)."""
    if name in _EXPORTS:
        return getattr(import_module(f"featurize.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'featurize' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)

"""Pretrained CNN backbones with named cut points, one-pass multi-cut extraction, HDF5 activation cache, and
sharded extraction (``torchrun -m featurize.extract``, see :mod:`featurize.shards`)."""

from featurize.lazy import lazy_exports

__getattr__, _NAMES = lazy_exports(__name__, {
    "featurize.spec": ("BackboneSpec", "CutPoint"),
    "featurize.backbones": ("get_backbone_spec", "is_backbone", "list_backbones", "list_cut_points", "load_model",
        "resolve_weights", "weights_file"),
    "featurize.families": ("BackboneFamily", "FAMILIES", "register_family"),
    "featurize.cache": ("CacheKeyError", "FeatureCache"),
    "featurize.devices": ("resolve_device",),
    "featurize.multicut": ("POOLINGS", "MultiCutExtractor", "pool"),
    "featurize.images": ("UnreadableImagesWarning",),
    "featurize.transformer": ("CNNFeaturizer",),
    "featurize.preprocessing": ("Preprocessing",),
    "featurize.weights": ("ResolvedWeights",),
})


__all__ = sorted(_NAMES)

"""Pretrained CNN backbones with named cut points, one-pass multi-cut extraction, HDF5 activation cache."""

from featurize.backbones import BackboneSpec, CutPoint, get_backbone_spec, list_backbones, list_cut_points
from featurize.cache import CacheKeyError, FeatureCache
from featurize.devices import resolve_device
from featurize.extract import POOLINGS, MultiCutExtractor, pool
from featurize.images import UnreadableImagesWarning
from featurize.transformer import CNNFeaturizer
from featurize.weights import Preprocessing, ResolvedWeights, load_model, resolve_weights

__all__ = [
    "BackboneSpec",
    "CNNFeaturizer",
    "CacheKeyError",
    "CutPoint",
    "FeatureCache",
    "MultiCutExtractor",
    "POOLINGS",
    "Preprocessing",
    "ResolvedWeights",
    "UnreadableImagesWarning",
    "get_backbone_spec",
    "list_backbones",
    "list_cut_points",
    "load_model",
    "pool",
    "resolve_device",
    "resolve_weights",
]

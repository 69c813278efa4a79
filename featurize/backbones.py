"""Backbone registry: torchvision ResNet/VGG models, and any timm model as ``timm:<model name>``, with named cut points.

A cut point is a friendly name (``layer3``, ``conv4_2``, ``fc7``) bound to the torchvision module path whose
output it denotes (``layer3``, ``features.19``, ``classifier.4``).  Convolution cut points of VGG denote the
activation after the ReLU (and BatchNorm for the ``_bn`` variants); ``fc6``/``fc7`` are post-ReLU too, ``fc8`` is
the logits.  ResNet's ``conv1`` is the stem activation (conv1 → bn1 → relu), before the max pool.

Backbones named ``timm:<model name>`` (``timm:convnext_tiny.fb_in22k``) come from the optional timm package; their
cut points are read from the model's own ``feature_info`` (see :mod:`featurize.timm_source`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import pandas as pd
import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

__all__ = [
    "CutPoint",
    "BackboneSpec",
    "get_backbone_spec",
    "list_backbones",
    "list_cut_points",
    "cut_point_table",
    "spatial_sizes",
    "set_module",
    "TIMM_PREFIX",
]

TIMM_PREFIX = "timm:"
"""Backbone names starting with this are timm models (``timm:vit_small_patch14_dinov2.lvd142m``)."""


@dataclass(frozen=True)
class CutPoint:
    """A named place to cut a backbone.

    Parameters
    ----------
    name : str
        Friendly name (``layer4``, ``conv5_3``, ``fc7``).
    module : str
        Dotted torchvision module path whose output is the cut point's activation.
    channels : int
        Number of channels (or units, for fully-connected cut points).
    stride : int
        Total spatial reduction from the input; 0 for vector outputs (fully-connected layers, global pooling).
    spatial : tuple of int
        Output spatial size (H, W) for a 224 × 224 input; ``(1, 1)`` for vector outputs.
    prefix_tokens : int or None
        For token activations (B, prefix + H·W, C) of vision transformers: how many prefix tokens (class token,
        registers) precede the H × W patch tokens; None for feature maps and vectors.
    cls_token : bool
        Whether the first prefix token is a class token (what the ``cls`` poolings take).
    """

    name: str
    module: str
    channels: int
    stride: int
    spatial: tuple[int, int]
    prefix_tokens: int | None = None
    cls_token: bool = False

    @property
    def is_tokens(self) -> bool:
        """Whether the activation is a token sequence (B, prefix + H·W, C) rather than a map or a vector."""
        return self.prefix_tokens is not None

    @property
    def is_spatial(self) -> bool:
        """Whether the activation is a feature map (N, C, H, W) rather than a vector (N, C)."""
        return self.stride > 0


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build a backbone and cut it.

    Parameters
    ----------
    name : str
        Backbone name (``resnet18``, ``vgg16_bn``, ``timm:convnext_atto``).
    family : str
        ``"resnet"``, ``"vgg"`` or ``"timm"``.
    builder : callable
        Builds the network (random init), called as ``builder(weights=None)``.
    weights_enum : type of WeightsEnum or None
        The torchvision weights enum of this model; None for timm models.
    cut_points : tuple of CutPoint
        Standard cut points, from the input side to the output side.
    classifier : str
        Module path of the final classification layer (replaced by fine-tuning).
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    weights_enum: type[WeightsEnum] | None
    cut_points: tuple[CutPoint, ...]
    classifier: str

    @property
    def source(self) -> str:
        """Where the model comes from: ``"timm"`` or ``"torchvision"``."""
        return "timm" if self.name.startswith(TIMM_PREFIX) else "torchvision"

    @property
    def cut_names(self) -> list[str]:
        """Names of the standard cut points, shallow to deep."""
        return [c.name for c in self.cut_points]

    def cut(self, name: str) -> CutPoint:
        """Look a cut point up by friendly name (or module path).

        Raises
        ------
        ValueError
            If ``name`` is not a cut point of this backbone; the message lists the valid ones.
        """
        for c in self.cut_points:
            if name in (c.name, c.module):
                return c
        raise ValueError(
            f"Unknown cut point {name!r} for backbone {self.name!r}; valid cut points: {', '.join(self.cut_names)}"
        )

    def index(self, name: str) -> int:
        """Depth rank of a cut point (0 = shallowest)."""
        return self.cut_points.index(self.cut(name))


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` (``layer4``, ``features.30``) by ``module``."""
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def _resnet_paths(model: nn.Module) -> list[tuple[str, str]]:
    del model
    return [
        ("conv1", "relu"),
        ("layer1", "layer1"),
        ("layer2", "layer2"),
        ("layer3", "layer3"),
        ("layer4", "layer4"),
        ("avgpool", "avgpool"),
        ("fc", "fc"),
    ]


def _vgg_paths(model: nn.Module) -> list[tuple[str, str]]:
    paths = []
    block, conv = 1, 0
    pending_conv = False
    for idx, layer in enumerate(model.features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
            pending_conv = True
        elif isinstance(layer, nn.ReLU) and pending_conv:
            paths.append((f"conv{block}_{conv}", f"features.{idx}"))
            pending_conv = False
        elif isinstance(layer, nn.MaxPool2d):
            paths.append((f"pool{block}", f"features.{idx}"))
            block, conv = block + 1, 0
    paths += [("fc6", "classifier.1"), ("fc7", "classifier.4"), ("fc8", "classifier.6")]
    return paths


_FAMILY_PATHS = {"resnet": _resnet_paths, "vgg": _vgg_paths}
_FAMILY_CLASSIFIER = {"resnet": "fc", "vgg": "classifier.6"}

_MODELS = {
    "resnet18": (models.resnet18, models.ResNet18_Weights),
    "resnet34": (models.resnet34, models.ResNet34_Weights),
    "resnet50": (models.resnet50, models.ResNet50_Weights),
    "resnet101": (models.resnet101, models.ResNet101_Weights),
    "resnet152": (models.resnet152, models.ResNet152_Weights),
    "vgg11": (models.vgg11, models.VGG11_Weights),
    "vgg11_bn": (models.vgg11_bn, models.VGG11_BN_Weights),
    "vgg13": (models.vgg13, models.VGG13_Weights),
    "vgg13_bn": (models.vgg13_bn, models.VGG13_BN_Weights),
    "vgg16": (models.vgg16, models.VGG16_Weights),
    "vgg16_bn": (models.vgg16_bn, models.VGG16_BN_Weights),
    "vgg19": (models.vgg19, models.VGG19_Weights),
    "vgg19_bn": (models.vgg19_bn, models.VGG19_BN_Weights),
}


class BackboneNames(list):
    """The registered torchvision names, in order; membership also holds for every ``timm:<model name>``.

    timm's models are too many to list: ``"timm:convnext_atto" in list_backbones()`` is True (whether the model
    exists and timm is installed is checked when the backbone is built), iteration gives the torchvision names.
    """

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name.startswith(TIMM_PREFIX) or super().__contains__(name))


def list_backbones() -> list[str]:
    """Names of the registered torchvision backbones; ``in`` also accepts ``timm:<model name>`` (any timm model)."""
    return BackboneNames(_MODELS)


def _measure(
    model: nn.Module, paths: list[tuple[str, str]], size: int = 224, tokens: tuple[int, bool] | None = None
) -> list[CutPoint]:
    """Shapes of every cut point from one forward on the meta device (no memory, no compute).

    A 1 × 1 map (ResNet's ``avgpool``) counts as a vector: it has no spatial extent to pool.  ``tokens`` =
    (prefix tokens, class token?) of a vision transformer: its (1, N, C) outputs are token sequences over a square
    patch grid.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        model.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, path=path: shapes.__setitem__(path, tuple(out.shape))
        )
        for _, path in paths
    ]
    try:
        model(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    cuts = []
    for name, path in paths:
        shape = shapes[path]
        if tokens is not None and len(shape) == 3:
            side = math.isqrt(shape[1] - tokens[0])
            cuts.append(CutPoint(name=name, module=path, channels=shape[2], stride=size // side, spatial=(side, side),
                                 prefix_tokens=tokens[0], cls_token=tokens[1]))
            continue
        if len(shape) == 4 and shape[2] * shape[3] > 1:
            channels, h, w = shape[1], shape[2], shape[3]
            stride = size // h if h > 1 else size
            spatial = (h, w)
        else:
            channels, stride, spatial = shape[1], 0, (1, 1)
        cuts.append(CutPoint(name=name, module=path, channels=channels, stride=stride, spatial=spatial))
    return cuts


def _meta_model(builder: Callable[..., nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return builder(weights=None).eval()


@lru_cache(maxsize=None)
def spatial_sizes(name: str, size: int) -> dict[str, tuple[int, int]]:
    """Output (H, W) of every cut point for a ``size`` × ``size`` input (``(1, 1)`` for vector cut points).

    Parameters
    ----------
    name : str
        Backbone name.
    size : int
        Input side in pixels.

    Returns
    -------
    dict
        Cut point name → (H, W).

    Raises
    ------
    ValueError
        For a vision transformer, when ``size`` is not a multiple of its patch size.
    """
    spec = get_backbone_spec(name)
    token_cut = next((c for c in spec.cut_points if c.is_tokens), None)
    tokens = None if token_cut is None else (token_cut.prefix_tokens, token_cut.cls_token)
    if token_cut is not None and size % token_cut.stride:
        raise ValueError(f"image size {size} is not a multiple of the patch size {token_cut.stride} of {name}; "
                         f"use image_size={size // token_cut.stride * token_cut.stride or token_cut.stride} or another "
                         "multiple")
    measured = _measure(_meta_model(spec.builder), [(c.name, c.module) for c in spec.cut_points], size, tokens)
    return {
        c.name: (m.spatial if c.is_spatial else (1, 1)) for c, m in zip(spec.cut_points, measured)
    }


@lru_cache(maxsize=None)
def get_backbone_spec(name: str) -> BackboneSpec:
    """Return the registry entry of a backbone.

    Parameters
    ----------
    name : str
        One of :func:`list_backbones` (``resnet18`` … ``resnet152``, ``vgg11`` … ``vgg19_bn``), or
        ``timm:<model name>`` for any timm model (optional extra, see :mod:`featurize.timm_source`).

    Returns
    -------
    BackboneSpec

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid names.
    ImportError
        For a ``timm:`` name when timm is not installed; the message names the extra to install.
    """
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        from featurize.timm_source import timm_spec  # optional extra: imported on first use

        return timm_spec(name)
    if name not in _MODELS:
        raise ValueError(f"Unknown backbone {name!r}; valid backbones: {', '.join(_MODELS)}")
    builder, weights_enum = _MODELS[name]
    family = "resnet" if name.startswith("resnet") else "vgg"
    model = _meta_model(builder)
    paths = _FAMILY_PATHS[family](model)
    return BackboneSpec(
        name=name,
        family=family,
        builder=builder,
        weights_enum=weights_enum,
        cut_points=tuple(_measure(model, paths)),
        classifier=_FAMILY_CLASSIFIER[family],
    )


def list_cut_points(backbone: str) -> pd.DataFrame:
    """Table of a backbone's standard cut points.

    Parameters
    ----------
    backbone : str
        Backbone name.

    Returns
    -------
    pandas.DataFrame
        One row per cut point, shallow to deep: ``name``, ``module`` (torchvision path), ``channels``, ``stride``
        (0 for vector outputs), ``spatial_224`` (``"HxW"`` for a 224² input), ``dim_avg`` (pooled feature dimension
        with ``avg``/``max`` pooling) and ``dim_flatten`` (with ``flatten``).
    """
    spec = get_backbone_spec(backbone)
    return pd.DataFrame(
        [
            {
                "name": c.name,
                "module": c.module,
                "channels": c.channels,
                "stride": c.stride,
                "spatial_224": f"{c.spatial[0]}x{c.spatial[1]}",
                "dim_avg": c.channels,
                "dim_flatten": c.channels * c.spatial[0] * c.spatial[1],
            }
            for c in spec.cut_points
        ]
    )


def cut_point_table() -> pd.DataFrame:
    """:func:`list_cut_points` of every registered torchvision backbone, with a ``backbone`` column."""
    return pd.concat(
        [list_cut_points(b).assign(backbone=b) for b in _MODELS], ignore_index=True
    )[["backbone", "name", "module", "channels", "stride", "spatial_224", "dim_avg", "dim_flatten"]]

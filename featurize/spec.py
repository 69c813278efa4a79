"""What a backbone is, as data: its cut points (name, module path, channels, stride), how to build it, and where a
fine-tuning head goes (:class:`Adaptation`); measured once on the meta device (no memory, no compute)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["Adaptation", "BackboneSpec", "CutPoint", "measure_cut_points", "meta_model", "set_module"]


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
        Name of its :class:`featurize.families.BackboneFamily` (``"resnet"``, ``"vgg"``, ``"timm"``,
        ``"efficientnet_lite"``), which knows how to load its weights and adapt it.
    builder : callable
        Builds the network (random init), called as ``builder(weights=None)``.
    weights_enum : type of torchvision WeightsEnum or None
        The torchvision weights enum of this model; None for the other families.
    cut_points : tuple of CutPoint
        Standard cut points, from the input side to the output side.
    classifier : str
        Module path of the final classification layer (replaced by fine-tuning).
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    weights_enum: type | None
    cut_points: tuple[CutPoint, ...]
    classifier: str

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


def measure_cut_points(
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


def meta_model(builder: Callable[..., nn.Module]) -> nn.Module:
    with torch.device("meta"):
        return builder(weights=None).eval()


@dataclass(frozen=True)
class Adaptation:
    """Where the new head of a fine-tuned network sits and how the kept network splits into stages (shallow to deep).

    Attributes
    ----------
    head : str
        Module path of the new ``Linear`` head.
    stages : tuple of tuple of str
        Per stage, the module (or parameter) paths it trains.
    feature_cut : str
        The cut point whose pooled activation enters the head.
    """

    head: str
    stages: tuple[tuple[str, ...], ...]
    feature_cut: str

    def trainable(self, n_unfrozen: int) -> list[str]:
        """Module paths of the ``n_unfrozen`` deepest stages (the head not included)."""
        return [path for stage in self.stages[len(self.stages) - n_unfrozen :] for path in stage]

    def depths(self, n_unfrozen: int) -> list[int]:
        """For each path of :meth:`trainable`, how many stages lie between its stage and the deepest one."""
        stages = self.stages[len(self.stages) - n_unfrozen :]
        return [len(stages) - 1 - i for i, stage in enumerate(stages) for _ in stage]

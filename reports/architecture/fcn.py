"""Fully convolutional versions of torchvision VGG and ResNet (course questions 6–8).

A fully-connected layer reading a ``C × h × w`` feature map is a convolution with an ``h × w`` kernel and no
padding: its weight matrix ``(out, C·h·w)`` reshaped to ``(out, C, h, w)`` (PyTorch flattens channel-major).
Applied to a larger map it slides, producing one score vector per window: a spatial map of class scores.

- VGG: ``fc6`` (reading pool5's ``512 × 7 × 7``) becomes a ``7 × 7`` convolution, ``fc7``/``fc8`` ``1 × 1``
  convolutions.  On an ``H × W`` input the map is ``(⌊H/32⌋ − 6) × (⌊W/32⌋ − 6)``; on 224² it is ``1 × 1`` and
  equals the logits.  torchvision's ``AdaptiveAvgPool2d((7, 7))`` is dropped (on 224² it is the identity).
- ResNet: ``avgpool`` + ``fc`` become a ``1 × 1`` convolution over ``layer4``: the map is
  ``⌈H/32⌉ × ⌈W/32⌉`` and, the layer being linear, its spatial mean equals the original logits at any size.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["FullyConvolutionalNet", "convolutionalize", "linear_to_conv", "try_stages"]


def linear_to_conv(linear: nn.Linear, in_channels: int) -> nn.Conv2d:
    """The convolution equivalent to a fully-connected layer reading an ``in_channels × k × k`` map.

    Parameters
    ----------
    linear : torch.nn.Linear
        The layer; ``in_features`` must be ``in_channels · k²``.
    in_channels : int
        Channels of the map it reads.

    Returns
    -------
    torch.nn.Conv2d
        ``k × k`` kernel, stride 1, no padding, same weights.

    Raises
    ------
    ValueError
        If ``in_features / in_channels`` is not a perfect square.
    """
    area, rest = divmod(linear.in_features, in_channels)
    k = round(area**0.5)
    if rest or k * k != area:
        raise ValueError(
            f"in_features={linear.in_features} of the linear layer is not in_channels={in_channels} × a square"
        )
    conv = nn.Conv2d(in_channels, linear.out_features, k, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, in_channels, k, k))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv.to(linear.weight.device, linear.weight.dtype)


class FullyConvolutionalNet(nn.Module):
    """A CNN whose classifier is convolutional: ``forward`` returns a map of class scores (B, K, h, w).

    Parameters
    ----------
    trunk : torch.nn.Module
        The convolutional feature extractor.
    head : torch.nn.Sequential
        The convolutionalized classifier.
    family : str
        ``"vgg"`` or ``"resnet"``.
    """

    def __init__(self, trunk: nn.Module, head: nn.Sequential, family: str) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.family = family

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score map (B, K, h, w)."""
        return self.head(self.trunk(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial mean of the score map (B, K): the original logits for ResNet at any size, for VGG at 224²."""
        return self(x).mean(dim=(2, 3))


def _resnet_trunk(model: nn.Module) -> nn.Sequential:
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return nn.Sequential(*(copy.deepcopy(getattr(model, n)) for n in names))


def convolutionalize(model: nn.Module) -> FullyConvolutionalNet:
    """Turn a torchvision VGG or ResNet into an equivalent fully convolutional network.

    Parameters
    ----------
    model : torch.nn.Module
        A torchvision ``VGG`` (``features``/``avgpool``/``classifier``) or ``ResNet`` (``layer4``/``avgpool``/``fc``).

    Returns
    -------
    FullyConvolutionalNet
        A copy (the model is not modified), in the model's train/eval mode.  VGG: trunk ``features``, head fc6 →
        ``7 × 7`` conv, fc7/fc8 → ``1 × 1`` convs (ReLU/Dropout kept).  ResNet: trunk up to ``layer4``, head ``fc``
        → ``1 × 1`` conv.

    Raises
    ------
    ValueError
        For another kind of model.
    """
    if hasattr(model, "features") and hasattr(model, "classifier"):
        convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
        channels = convs[-1].out_channels
        layers: list[nn.Module] = []
        for layer in model.classifier:
            if isinstance(layer, nn.Linear):
                layers.append(linear_to_conv(layer, channels))
                channels = layer.out_features
            else:
                layers.append(copy.deepcopy(layer))
        fcn = FullyConvolutionalNet(copy.deepcopy(model.features), nn.Sequential(*layers), "vgg")
    elif hasattr(model, "layer4") and isinstance(getattr(model, "fc", None), nn.Linear):
        head = nn.Sequential(linear_to_conv(model.fc, model.fc.in_features))
        fcn = FullyConvolutionalNet(_resnet_trunk(model), head, "resnet")
    else:
        raise ValueError(
            f"convolutionalize takes a torchvision VGG or ResNet; got {type(model).__name__} "
            "(no features/classifier nor layer4/fc)"
        )
    return fcn.train(model.training)


def try_stages(
    model: nn.Module, x: torch.Tensor, replace: dict[str, nn.Module] | None = None
) -> list[dict[str, object]]:
    """Run an unmodified VGG/ResNet stage by stage on an input and record which stages run.

    Stages are the model's top-level children in forward order (the ``torch.flatten`` of torchvision's forward
    is applied before the first ``Linear``/``classifier``); a ``Sequential`` classifier is split into its layers.

    Parameters
    ----------
    model : torch.nn.Module
        A torchvision VGG or ResNet (not modified).
    x : torch.Tensor
        Input batch (B, 3, H, W).
    replace : dict or None
        Top-level stages to run in place of the model's, e.g. ``{"avgpool": nn.Identity()}`` for the original VGG
        (no adaptive pooling before the classifier).

    Returns
    -------
    list of dict
        One dict per stage: ``stage`` (module path), ``ok`` (bool), ``output`` (shape string, or the error
        message).  Stages after the first failure are reported as not run.
    """
    replace = replace or {}
    stages: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        child = replace.get(name, child)
        if isinstance(child, nn.Sequential) and name == "classifier":
            stages += [(f"{name}.{i}", layer) for i, layer in enumerate(child)]
        else:
            stages.append((name, child))
    rows: list[dict[str, object]] = []
    failed = False
    with torch.no_grad():
        for name, module in stages:
            if failed:
                rows.append({"stage": name, "ok": False, "output": "not run (an earlier stage failed)"})
                continue
            if isinstance(module, nn.Linear) and x.dim() > 2:
                x = torch.flatten(x, 1)
            try:
                x = module(x)
            except RuntimeError as exc:
                failed = True
                rows.append({"stage": name, "ok": False, "output": str(exc).splitlines()[0]})
                continue
            rows.append({"stage": name, "ok": True, "output": "×".join(map(str, x.shape))})
    return rows

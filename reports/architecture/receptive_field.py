"""Question 3: receptive fields of the cut points of VGG and ResNet, analytic and measured.

Analytic recursion, layer by layer along the main path (``r`` field size, ``j`` jump = distance in input pixels
between adjacent output units, ``start`` = input coordinate of the centre of the first output unit's field)::

    r ← r + (k − 1)·d·j        start ← start + ((k − 1)·d/2 − p)·j        j ← j·s

A ResNet block's field is the max over its paths: the main path (its 3×3 convolutions enlarge it); the identity or
1×1 downsample shortcut does not.  The measurement back-propagates from one central output unit of a copy of the
model made linear and positive (convolutions with positive constant weights, zero biases, batch norm with identity
statistics, ReLU replaced by identity, max pooling replaced by the average pooling of the same window), so no
gradient cancels and the non-zero support of the input gradient is exactly the receptive field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from featurize.backbones import BackboneSpec, get_backbone_spec, set_module
from featurize.multicut import StopForward
from reports.architecture.conv_arith import tf_same_left_padding

__all__ = [
    "ReceptiveField",
    "module_receptive_fields",
    "receptive_field_table",
    "linearized_copy",
    "measure_receptive_field",
    "input_gradient",
    "forward_to",
    "effective_receptive_field",
    "mass_square",
]


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a feature map's units along one spatial axis (both axes are equal for these models).

    Attributes
    ----------
    size : int
        Side of the (square) field in input pixels.
    jump : int
        Input-pixel distance between adjacent units (effective stride).
    start : float
        Input coordinate (0-based pixel index) of the centre of unit 0's field; may be negative (padding).
    """

    size: int = 1
    jump: int = 1
    start: float = 0.0

    def through(self, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> "ReceptiveField":
        """The field after one convolution or pooling layer."""
        return ReceptiveField(
            size=self.size + (kernel - 1) * dilation * self.jump,
            jump=self.jump * stride,
            start=self.start + ((kernel - 1) * dilation / 2 - padding) * self.jump,
        )

    def centre(self, index: int) -> float:
        """Input coordinate of the centre of unit ``index``'s field."""
        return self.start + index * self.jump


def _first(v: int | tuple[int, ...]) -> int:
    return v if isinstance(v, int) else int(v[0])


def _walk(module: nn.Module, prefix: str, rf: ReceptiveField, out: dict[str, ReceptiveField]) -> ReceptiveField:
    if not rf.size:
        for name, _ in module.named_modules():
            out[f"{prefix}{name}".rstrip(".")] = rf
        return rf
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        dilation = _first(getattr(module, "dilation", 1))
        same = tf_same_left_padding(module)
        padding = same if same is not None else _first(module.padding)
        rf = rf.through(_first(module.kernel_size), _first(module.stride), padding, dilation)
    elif isinstance(module, (BasicBlock, Bottleneck)):
        main = rf
        for name in ("conv1", "conv2", "conv3"):
            if hasattr(module, name):
                main = _walk(getattr(module, name), f"{prefix}{name}.", main, out)
        short = _walk(module.downsample, f"{prefix}downsample.", rf, out) if module.downsample is not None else rf
        if short.jump != main.jump or short.start != main.start:
            raise ValueError(f"{prefix}: main path and shortcut are not aligned ({main} vs {short})")
        rf = max(main, short, key=lambda f: f.size)
    elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear, nn.Flatten)):
        rf = ReceptiveField(size=0, jump=0, start=float("nan"))
    else:
        for name, child in module.named_children():
            rf = _walk(child, f"{prefix}{name}.", rf, out)
    out[prefix.rstrip(".")] = rf
    return rf


def module_receptive_fields(model: nn.Module) -> dict[str, ReceptiveField]:
    """Analytic receptive field at the output of every module of a VGG or ResNet (main path).

    Parameters
    ----------
    model : torch.nn.Module
        A torchvision VGG or ResNet (only hyper-parameters are read; the meta device is fine).

    Returns
    -------
    dict
        Module path → :class:`ReceptiveField`; global modules (adaptive pooling, linear layers and everything after
        them) get ``size=0`` meaning "the whole image".
    """
    out: dict[str, ReceptiveField] = {}
    _walk(model, "", ReceptiveField(), out)
    out.pop("", None)
    return out


def receptive_field_table(backbone: str) -> pd.DataFrame:
    """Analytic receptive field of every standard cut point of a backbone.

    Parameters
    ----------
    backbone : str
        A name from :func:`featurize.backbones.list_backbones`.

    Returns
    -------
    pandas.DataFrame
        ``cut``, ``module``, ``stride`` (registry), ``rf_size`` (0 = global), ``jump``, ``start``, ``spatial_224``
        and ``coverage_224`` (field side / 224).
    """
    spec = get_backbone_spec(backbone)
    with torch.device("meta"):
        model = spec.builder(weights=None)
    fields = module_receptive_fields(model)
    rows = []
    for cut in spec.cut_points:
        rf = fields[cut.module]
        rows.append(
            {
                "cut": cut.name,
                "module": cut.module,
                "stride": cut.stride,
                "rf_size": rf.size,
                "jump": rf.jump,
                "start": rf.start,
                "spatial_224": f"{cut.spatial[0]}x{cut.spatial[1]}",
                "coverage_224": rf.size / 224 if rf.size else float("nan"),
            }
        )
    return pd.DataFrame(rows)


_ACTIVATIONS = (nn.ReLU, nn.Hardtanh, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish)
"""Element-wise activations a linearized copy replaces by the identity (``nn.Hardtanh`` covers ``nn.ReLU6``, whose
clamp at 6 would zero the gradient of a saturated unit)."""

_GATES = (nn.Sigmoid, nn.Hardsigmoid)
"""Gates (squeeze-excitation) a linearized copy opens for good: a constant 1, so the gate neither passes gradient
through its global pooling nor multiplies a unit by itself."""


class _OpenGate(nn.Module):
    """A gate that always lets everything through (output 1, no gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)



def linearized_copy(model: nn.Module) -> nn.Module:
    """A copy of a CNN whose input gradients cannot cancel: the tool of the receptive-field measurement.

    Convolutions get weights ``1 / (k·k·z)`` and zero bias, batch norms identity statistics, element-wise
    activations (ReLU, ReLU6, SiLU, …) become identity, squeeze-excitation gates a constant 1 and max poolings the
    average pooling over the same window, so every unit is a positive weighted sum of all the pixels of its field.
    A model on the meta device is materialised on the CPU (layers other than convolutions and batch norms are left
    uninitialised: only the convolutional trunk is meant to run; layer norms, as in ConvNeXt or ViT, are not
    linearized, so their fields are not measured this way).
    """
    model = copy.deepcopy(model)
    if any(p.is_meta for p in model.parameters()):
        model = model.to_empty(device="cpu")
    model = model.float().eval().requires_grad_(False)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Conv2d):
            with torch.no_grad():
                mod.weight.fill_(1.0 / mod.weight[0].numel())
                if mod.bias is not None:
                    mod.bias.zero_()
        elif isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
                mod.weight.fill_(1.0)
                mod.bias.zero_()
        elif isinstance(mod, _ACTIVATIONS):
            set_module(model, name, nn.Identity())
        elif isinstance(mod, _GATES):
            set_module(model, name, _OpenGate())
        elif isinstance(mod, nn.MaxPool2d):
            set_module(
                model, name, nn.AvgPool2d(mod.kernel_size, mod.stride, mod.padding, ceil_mode=mod.ceil_mode)
            )
    return model


def forward_to(model: nn.Module, module: str, x: torch.Tensor) -> torch.Tensor:
    """Run a model up to a module and return that module's output (the rest of the forward is skipped)."""
    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        raise StopForward(out)

    handle = model.get_submodule(module).register_forward_hook(hook)
    try:
        model(x)
    except StopForward as stop:
        return stop.output
    finally:
        handle.remove()
    raise RuntimeError(f"module {module!r} was not called in the forward pass")


def input_gradient(
    model: nn.Module, module: str, x: torch.Tensor, unit: tuple[int, int] | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Gradient of one output unit (summed over channels) of a module w.r.t. the input.

    Parameters
    ----------
    model : torch.nn.Module
        The CNN.
    module : str
        Module path of the output.
    x : torch.Tensor
        Input batch (B, 3, H, W); gradients of the B images are summed.
    unit : pair of int or None
        Output position; default the central unit.

    Returns
    -------
    grad : torch.Tensor
        (H, W) sum over images and channels of the gradient.
    unit : pair of int
        The output position used.
    """
    x = x.detach().clone().requires_grad_(True)
    out = forward_to(model, module, x)
    if unit is None:
        unit = (out.shape[2] // 2, out.shape[3] // 2)
    out[:, :, unit[0], unit[1]].sum().backward()
    return x.grad.sum(dim=(0, 1)), unit


def _support(mask: np.ndarray) -> tuple[int, int]:
    idx = np.flatnonzero(mask)
    return int(idx[0]), int(idx[-1])


def measure_receptive_field(
    backbone: str | BackboneSpec,
    cut: str,
    size: int | None = None,
    model: nn.Module | None = None,
    linearized: bool = False,
) -> dict[str, object]:
    """Measure a cut point's receptive field as the support of the input gradient of its central unit.

    Parameters
    ----------
    backbone : str or BackboneSpec
        The backbone.
    cut : str
        A spatial cut point.
    size : int or None
        Input side; default: large enough that the field is not clipped by the borders.
    model : torch.nn.Module or None
        A built model (its weights are irrelevant); default one built on the meta device.
    linearized : bool
        ``model`` is already a :func:`linearized_copy` (saves the copy when measuring many cut points).

    Returns
    -------
    dict
        ``cut``, ``input_size``, ``unit``, ``measured_size`` (extent of the support, rows and columns alike),
        ``measured_centre`` (centre of the support, input pixels), ``analytic_size``, ``analytic_centre``,
        ``clipped`` (the support touches a border), ``match``.

    Raises
    ------
    ValueError
        For a global cut point (its field is the whole image).
    """
    spec = backbone if isinstance(backbone, BackboneSpec) else get_backbone_spec(backbone)
    point = spec.cut(cut)
    if model is None:
        with torch.device("meta"):
            model = spec.builder(weights=None)
    rf = module_receptive_fields(model)[point.module]
    if not rf.size:
        raise ValueError(f"cut point {cut!r} of {spec.name} is global (its receptive field is the whole image)")
    if size is None:
        size = int(np.ceil((rf.size + 4 * rf.jump) / rf.jump) * rf.jump)
    probe = model if linearized else linearized_copy(model)
    grad, unit = input_gradient(probe, point.module, torch.ones(1, 3, size, size))
    if not torch.isfinite(grad).all():
        raise RuntimeError(f"the input gradient of {spec.name} {cut!r} is not finite in its linearized copy (a layer "
                           "overflows): its receptive field cannot be measured this way")
    nonzero = grad.abs() > 0
    if not nonzero.any():
        raise RuntimeError(f"the input gradient of {spec.name} {cut!r} is zero everywhere: a layer of the model "
                           "saturates or cancels in its linearized copy (see linearized_copy)")
    r0, r1 = _support(nonzero.any(dim=1).numpy())
    c0, c1 = _support(nonzero.any(dim=0).numpy())
    measured = r1 - r0 + 1
    centre = ((r0 + r1) / 2, (c0 + c1) / 2)
    analytic_centre = (rf.centre(unit[0]), rf.centre(unit[1]))
    clipped = min(r0, c0) == 0 or max(r1, c1) == size - 1
    return {
        "cut": cut,
        "input_size": size,
        "unit": unit,
        "measured_size": measured if measured == c1 - c0 + 1 else -1,
        "measured_centre": centre,
        "analytic_size": rf.size,
        "analytic_centre": analytic_centre,
        "clipped": clipped,
        "match": (not clipped) and measured == rf.size == c1 - c0 + 1 and centre == analytic_centre,
    }


def effective_receptive_field(
    model: nn.Module, module: str, size: int, n_samples: int = 4, seed: int = 0
) -> torch.Tensor:
    """Effective receptive field: mean |input gradient| of the central unit over random normal inputs.

    Parameters
    ----------
    model : torch.nn.Module
        The CNN with its real (or random-init) weights, in eval mode.
    module : str
        Module path of the feature map.
    size : int
        Input side.
    n_samples : int
        Number of random inputs averaged.
    seed : int
        Seed of the inputs.

    Returns
    -------
    torch.Tensor
        (size, size) map, normalised to a maximum of 1.
    """
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(size, size)
    for _ in range(n_samples):
        x = torch.randn(1, 3, size, size, generator=gen)
        x = x.detach().requires_grad_(True)
        out = forward_to(model, module, x)
        unit = (out.shape[2] // 2, out.shape[3] // 2)
        out[:, :, unit[0], unit[1]].sum().backward()
        total += x.grad[0].abs().sum(dim=0)
    return total / total.max().clamp_min(1e-30)


def mass_square(grad: torch.Tensor, fraction: float = 0.95) -> int:
    """Side of the smallest square centred on the map's centre of mass holding ``fraction`` of its total mass."""
    g = grad.double()
    total = g.sum()
    h, w = g.shape
    ys, xs = torch.arange(h, dtype=torch.double), torch.arange(w, dtype=torch.double)
    cy = float((g.sum(1) * ys).sum() / total)
    cx = float((g.sum(0) * xs).sum() / total)
    for side in range(1, max(h, w) + 1):
        r0, c0 = max(0, round(cy - (side - 1) / 2)), max(0, round(cx - (side - 1) / 2))
        if g[r0 : r0 + side, c0 : c0 + side].sum() >= fraction * total:
            return side
    return max(h, w)

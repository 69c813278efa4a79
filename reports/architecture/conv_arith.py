"""Question 1: output size and weight count of convolution / pooling layers, checked on real models.

For one spatial dimension of size ``n``, kernel ``k``, padding ``p``, stride ``s`` and dilation ``d`` the output
size is ``floor((n + 2p - d(k - 1) - 1) / s) + 1`` (``ceil`` instead of ``floor`` for a pooling in ``ceil_mode``,
where a last window starting inside the padding is dropped).  A convolution with ``C`` filters on an
``x × y × z`` input learns ``k·k·z·C`` weights (``+ C`` biases); a fully-connected layer producing the same
``x' × y' × C`` output from the same input needs ``(x·y·z)·(x'·y'·C)`` weights (``+ x'·y'·C`` biases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

__all__ = ["LayerArithmetic", "conv_output_size", "layer_arithmetic", "layer_table", "savings_summary"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_output_size(
    n: int, kernel: int, padding: int = 0, stride: int = 1, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output size along one spatial dimension of a convolution or pooling.

    Parameters
    ----------
    n : int
        Input size along the dimension.
    kernel, padding, stride, dilation : int
        Layer hyper-parameters along the dimension.
    ceil_mode : bool
        Pooling ``ceil_mode`` (PyTorch semantics: the last window must start inside the input or left padding).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        If the (dilated) kernel does not fit in the padded input, or a parameter is out of range.
    """
    if kernel < 1 or stride < 1 or dilation < 1 or padding < 0 or n < 1:
        raise ValueError(
            f"invalid layer: n={n}, kernel={kernel}, padding={padding}, stride={stride}, dilation={dilation} "
            "(need n, kernel, stride, dilation >= 1 and padding >= 0)"
        )
    span = n + 2 * padding - dilation * (kernel - 1) - 1
    if span < 0:
        raise ValueError(
            f"kernel {kernel} (dilation {dilation}) does not fit an input of size {n} with padding {padding}"
        )
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= n + padding:
        out -= 1
    return out


@dataclass(frozen=True)
class LayerArithmetic:
    """Shapes and weight counts of one convolution or pooling layer.

    Attributes
    ----------
    input_shape, output_shape : tuple of int
        ``(x, y, z)`` — height, width, channels, as in the course text.
    weights : int
        Learned kernel weights ``k_h·k_w·z·C/groups`` (0 for pooling).
    biases : int
        Learned biases (``C`` for a convolution with bias, 0 otherwise).
    fc_weights : int
        Weights of a fully-connected layer mapping the flattened input to the flattened output (no bias).
    fc_biases : int
        Biases of that fully-connected layer (one per output unit).
    """

    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    weights: int
    biases: int
    fc_weights: int
    fc_biases: int

    @property
    def weights_with_bias(self) -> int:
        """Kernel weights plus biases."""
        return self.weights + self.biases

    @property
    def ratio(self) -> float:
        """How many times more weights the fully-connected equivalent needs (``inf`` for pooling)."""
        return self.fc_weights / self.weights if self.weights else math.inf


def layer_arithmetic(
    input_shape: tuple[int, int, int],
    kernel: int | tuple[int, int],
    filters: int | None = None,
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    bias: bool = True,
    groups: int = 1,
    pooling: bool = False,
    ceil_mode: bool = False,
) -> LayerArithmetic:
    """Answer Q1 for one layer: output shape, weights, and weights of the fully-connected equivalent.

    Parameters
    ----------
    input_shape : tuple of int
        ``(x, y, z)``: height, width, channels.
    kernel, padding, stride, dilation : int or pair of int
        Layer hyper-parameters (a pair is ``(along x, along y)``).
    filters : int or None
        Number of filters ``C``; ignored (the channel count is kept) for pooling.
    bias : bool
        Whether the convolution has a bias.
    groups : int
        Convolution groups (1 = ordinary convolution).
    pooling : bool
        A pooling layer: no weights, channels unchanged.
    ceil_mode : bool
        Pooling ``ceil_mode``.

    Returns
    -------
    LayerArithmetic

    Raises
    ------
    ValueError
        For a convolution without ``filters``, or a kernel that does not fit.
    """
    x, y, z = input_shape
    k, p, s, d = _pair(kernel), _pair(padding), _pair(stride), _pair(dilation)
    xo = conv_output_size(x, k[0], p[0], s[0], d[0], ceil_mode)
    yo = conv_output_size(y, k[1], p[1], s[1], d[1], ceil_mode)
    if pooling:
        c, weights, biases = z, 0, 0
    else:
        if filters is None:
            raise ValueError("filters (number of output channels C) is required for a convolution")
        if z % groups or filters % groups:
            raise ValueError(f"groups={groups} must divide input channels {z} and filters {filters}")
        c, weights, biases = filters, k[0] * k[1] * (z // groups) * filters, filters if bias else 0
    n_out = xo * yo * c
    return LayerArithmetic((x, y, z), (xo, yo, c), weights, biases, x * y * z * n_out, n_out)


def tf_same_left_padding(module: nn.Module) -> int | None:
    """For a TensorFlow-style "SAME" convolution (timm's ``Conv2dSame``, padded at run time to ``ceil(n / s)``
    outputs), the padding before the input along one axis, for inputs divisible by the stride (the total
    ``k_eff − s`` split as TensorFlow does: the smaller half first); None for any other layer."""
    try:
        from timm.layers import Conv2dSame
    except ImportError:
        return None
    if not isinstance(module, Conv2dSame):
        return None
    k_eff = (_pair(module.kernel_size)[0] - 1) * _pair(module.dilation)[0] + 1
    return max(k_eff - _pair(module.stride)[0], 0) // 2


def _arith_of_module(module: nn.Module, input_shape: tuple[int, int, int]) -> LayerArithmetic:
    if tf_same_left_padding(module) is not None:
        x, y, z = input_shape
        s, k = _pair(module.stride), _pair(module.kernel_size)
        c = module.out_channels
        out = (math.ceil(x / s[0]), math.ceil(y / s[1]), c)
        n_out = out[0] * out[1] * c
        return LayerArithmetic(input_shape, out, k[0] * k[1] * (z // module.groups) * c,
                               c if module.bias is not None else 0, x * y * z * n_out, n_out)
    if isinstance(module, nn.Conv2d):
        if not isinstance(module.padding, tuple):
            raise ValueError(f"string padding {module.padding!r} is not supported")
        return layer_arithmetic(
            input_shape, module.kernel_size, module.out_channels, module.padding, module.stride, module.dilation,
            bias=module.bias is not None, groups=module.groups,
        )
    dilation = getattr(module, "dilation", 1)
    return layer_arithmetic(
        input_shape, module.kernel_size, padding=module.padding, stride=module.stride, dilation=dilation,
        pooling=True, ceil_mode=module.ceil_mode,
    )


def layer_table(model: nn.Module, size: int | tuple[int, int] = 224) -> pd.DataFrame:
    """Q1 over every convolution and (max/average) pooling layer of a model, checked against a real forward.

    Parameters
    ----------
    model : torch.nn.Module
        A torchvision CNN (weights do not matter; a model built on the meta device costs no compute).
    size : int or pair of int
        Input height and width.

    Returns
    -------
    pandas.DataFrame
        One row per layer in forward order: ``layer`` (module path), ``type``, ``kernel``, ``stride``,
        ``padding``, ``input`` / ``output`` (``"x×y×z"``), ``weights``, ``biases``, ``fc_weights`` (FC-equivalent,
        no bias), ``ratio``, ``shape_ok`` (computed output shape equals the hooked one) and ``params_ok`` (computed
        weight + bias count equals the module's parameters).
    """
    h, w = _pair(size)
    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    seen: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def hook(name: str):
        def record(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            seen.append((name, mod, tuple(args[0].shape), tuple(out.shape)))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name, mod, in_shape, out_shape in seen:
        arith = _arith_of_module(mod, (in_shape[2], in_shape[3], in_shape[1]))
        real_out = (out_shape[2], out_shape[3], out_shape[1])
        n_params = sum(p.numel() for p in mod.parameters())
        rows.append(
            {
                "layer": name,
                "type": type(mod).__name__,
                "kernel": "×".join(map(str, _pair(mod.kernel_size))),
                "stride": "×".join(map(str, _pair(mod.stride))),
                "padding": "same" if tf_same_left_padding(mod) is not None else "×".join(map(str, _pair(mod.padding))),
                "input": "×".join(map(str, arith.input_shape)),
                "output": "×".join(map(str, arith.output_shape)),
                "weights": arith.weights,
                "biases": arith.biases,
                "fc_weights": arith.fc_weights,
                "ratio": arith.ratio,
                "shape_ok": arith.output_shape == real_out,
                "params_ok": arith.weights_with_bias == n_params,
            }
        )
    return pd.DataFrame(rows)


def savings_summary(table: pd.DataFrame) -> dict[str, float]:
    """Totals of a :func:`layer_table` over its convolutions: weights, FC-equivalent weights and their ratio."""
    conv = table[table["type"] == "Conv2d"]
    weights = int(conv["weights"].sum() + conv["biases"].sum())
    fc = int(conv["fc_weights"].sum())
    return {"conv_layers": len(conv), "conv_weights": weights, "fc_equivalent_weights": fc, "ratio": fc / weights}

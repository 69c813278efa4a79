"""Q1 arithmetic against torch: output shapes and weight counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reports.architecture.conv_arith import conv_output_size, layer_arithmetic, layer_table, savings_summary


def _random_configs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < n:
        x, y = (int(v) for v in rng.integers(1, 24, 2))
        z, c = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        k, s, d, p = (tuple(int(v) for v in rng.integers(lo, hi, 2)) for lo, hi in ((1, 6), (1, 4), (1, 3), (0, 3)))
        if x + 2 * p[0] - d[0] * (k[0] - 1) - 1 < 0 or y + 2 * p[1] - d[1] * (k[1] - 1) - 1 < 0:
            continue
        configs.append(((x, y, z), k, s, d, p, c, bool(rng.integers(0, 2))))
    return configs


@pytest.mark.parametrize("seed", range(3))
def test_conv_matches_torch(seed):
    torch.manual_seed(seed)
    for (x, y, z), k, s, d, p, c, bias in _random_configs(100, seed):
        conv = nn.Conv2d(z, c, k, stride=s, padding=p, dilation=d, bias=bias)
        out = conv(torch.zeros(1, z, x, y))
        a = layer_arithmetic((x, y, z), k, c, p, s, d, bias=bias)
        assert a.output_shape == (out.shape[2], out.shape[3], out.shape[1])
        assert a.weights_with_bias == sum(q.numel() for q in conv.parameters())
        assert (a.fc_weights, a.fc_biases) == (x * y * z * out.numel(), out.numel())


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_maxpool_matches_torch(ceil_mode):
    rng = np.random.default_rng(7)
    checked = 0
    while checked < 150:
        x, y = (int(v) for v in rng.integers(1, 30, 2))
        k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
        if x + 2 * p[0] - d[0] * (k[0] - 1) - 1 < 0 or y + 2 * p[1] - d[1] * (k[1] - 1) - 1 < 0:
            continue
        pool = nn.MaxPool2d(k, s, p, dilation=d, ceil_mode=ceil_mode)
        out = pool(torch.zeros(1, 2, x, y))
        a = layer_arithmetic((x, y, 2), k, padding=p, stride=s, dilation=d, pooling=True, ceil_mode=ceil_mode)
        assert a.output_shape == (out.shape[2], out.shape[3], 2), (x, y, k, s, d, p)
        assert a.weights == a.biases == 0
        checked += 1


def test_avgpool_ceil_mode_matches_torch():
    for n in range(3, 20):
        for k, s, p in [(3, 2, 1), (2, 2, 0), (3, 3, 1), (5, 3, 2)]:
            out = nn.AvgPool2d(k, s, p, ceil_mode=True)(torch.zeros(1, 1, n, n))
            assert conv_output_size(n, k, p, s, ceil_mode=True) == out.shape[2]


def test_course_formula_example():
    a = layer_arithmetic((224, 224, 3), 3, 64, padding=1)
    assert a.output_shape == (224, 224, 64)
    assert (a.weights, a.biases) == (3 * 3 * 3 * 64, 64)
    assert a.fc_weights == (224 * 224 * 3) * (224 * 224 * 64)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="does not fit"):
        conv_output_size(3, 5)
    with pytest.raises(ValueError, match="filters"):
        layer_arithmetic((8, 8, 3), 3)


@pytest.mark.parametrize("builder", ["vgg16", "resnet18"])
def test_layer_table_on_real_models(builder):
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, builder)()
    table = layer_table(model, (224, 192))
    assert table["shape_ok"].all() and table["params_ok"].all()
    assert set(table["type"]) == {"Conv2d", "MaxPool2d"}
    summary = savings_summary(table)
    assert summary["conv_layers"] == (13 if builder == "vgg16" else 20)
    assert summary["ratio"] > 1000

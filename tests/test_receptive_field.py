"""Q3: analytic receptive fields equal the measured gradient support."""

from __future__ import annotations

import pytest
import torch

from featurize.backbones import get_backbone_spec
from reports.architecture.receptive_field import (
    ReceptiveField,
    effective_receptive_field,
    linearized_copy,
    mass_square,
    measure_receptive_field,
    receptive_field_table,
)

VGG16_REFERENCE = {"conv1_1": 3, "conv1_2": 5, "pool1": 6, "conv5_3": 196, "pool5": 212}


def test_vgg16_reference_values():
    table = receptive_field_table("vgg16").set_index("cut")
    for cut, size in VGG16_REFERENCE.items():
        assert table.loc[cut, "rf_size"] == size
    assert table.loc["pool5", "jump"] == 32
    assert table.loc["fc6", "rf_size"] == 0  # global


def test_resnet_main_path_values():
    table = receptive_field_table("resnet18").set_index("cut")
    assert list(table.loc[["conv1", "layer1", "layer2", "layer3", "layer4"], "rf_size"]) == [7, 43, 99, 211, 435]
    assert list(table.loc[["conv1", "layer4"], "jump"]) == [2, 32]


def test_recursion_step():
    rf = ReceptiveField().through(3, 1, 1).through(3, 1, 1).through(2, 2, 0)
    assert (rf.size, rf.jump, rf.start) == (6, 2, 0.5)


@pytest.fixture(scope="module")
def probes():
    out = {}
    for name in ("vgg11", "resnet18"):
        with torch.device("meta"):
            model = get_backbone_spec(name).builder(weights=None)
        out[name] = linearized_copy(model)
    return out


@pytest.mark.parametrize(
    "backbone,cut",
    [
        ("vgg11", "conv1_1"),
        ("vgg11", "pool1"),
        ("vgg11", "conv2_1"),
        ("vgg11", "pool2"),
        ("vgg11", "conv3_2"),
        ("resnet18", "conv1"),
        ("resnet18", "layer1"),
        ("resnet18", "layer2"),
    ],
)
def test_analytic_equals_gradient_support(probes, backbone, cut):
    result = measure_receptive_field(backbone, cut, model=probes[backbone], linearized=True)
    assert not result["clipped"]
    assert result["measured_size"] == result["analytic_size"]
    assert result["measured_centre"] == result["analytic_centre"]
    assert result["match"]


def test_small_input_is_reported_clipped(probes):
    result = measure_receptive_field("resnet18", "layer1", size=32, model=probes["resnet18"], linearized=True)
    assert result["clipped"] and not result["match"]


def test_global_cut_raises(probes):
    with pytest.raises(ValueError, match="global"):
        measure_receptive_field("vgg11", "fc6", model=probes["vgg11"], linearized=True)


def test_effective_rf_within_theoretical():
    torch.manual_seed(0)
    spec = get_backbone_spec("vgg11")
    model = spec.builder(weights=None).eval()
    erf = effective_receptive_field(model, spec.cut("conv2_1").module, 24, n_samples=1)
    nz = erf.nonzero()
    assert (nz.max(0).values - nz.min(0).values + 1).max() <= 8
    assert mass_square(erf) <= 8

"""Q3: analytic receptive fields equal the measured gradient support."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featurize.backbones import get_backbone_spec
from reports.architecture.receptive_field import (
    ReceptiveField,
    effective_receptive_field,
    input_gradient,
    linearized_copy,
    mass_square,
    measure_receptive_field,
    receptive_field_table,
)

VGG16_REFERENCE = {"conv1_1": 3, "conv1_2": 5, "pool1": 6, "conv5_3": 196, "pool5": 212}

# (size, jump, start) of every spatial cut point, derived by hand from the architectures (r += (k-1)·j, j *= s,
# start += ((k-1)/2 - p)·j); torchvision ResNets (v1.5) stride in the 3×3 convolution of each stage's first block.
EXACT = {
    "vgg16": {
        "conv1_1": (3, 1, 0), "conv1_2": (5, 1, 0), "pool1": (6, 2, 0.5), "conv2_1": (10, 2, 0.5),
        "conv2_2": (14, 2, 0.5), "pool2": (16, 4, 1.5), "conv3_1": (24, 4, 1.5), "conv3_2": (32, 4, 1.5),
        "conv3_3": (40, 4, 1.5), "pool3": (44, 8, 3.5), "conv4_1": (60, 8, 3.5), "conv4_2": (76, 8, 3.5),
        "conv4_3": (92, 8, 3.5), "pool4": (100, 16, 7.5), "conv5_1": (132, 16, 7.5), "conv5_2": (164, 16, 7.5),
        "conv5_3": (196, 16, 7.5), "pool5": (212, 32, 15.5),
    },
    "resnet18": {"conv1": (7, 2, 0), "layer1": (43, 4, 0), "layer2": (99, 8, 0), "layer3": (211, 16, 0),
                 "layer4": (435, 32, 0)},
    "resnet50": {"conv1": (7, 2, 0), "layer1": (35, 4, 0), "layer2": (91, 8, 0), "layer3": (267, 16, 0),
                 "layer4": (427, 32, 0)},
    # timm's tf_efficientnet_lite0 at 224 px: TF "same" padding puts the odd padding pixel of a stride-2 convolution
    # on the right/bottom (left pad 0 for k=3, 1 for k=5 at these sizes), so each stride 2 moves start.
    "efficientnet_lite0": {"blocks_0": (7, 2, 1), "blocks_1": (19, 4, 3), "blocks_2": (67, 8, 7),
                           "blocks_4": (339, 16, 15), "blocks_6": (851, 32, 31)},
}


def check_exact_fields(backbone: str) -> None:
    """Every spatial cut point's analytic (size, jump, start) equals the hand-derived value; the rest is global."""
    table = receptive_field_table(backbone).set_index("cut")
    got = {cut: (int(r.rf_size), int(r.jump), float(r.start)) for cut, r in table.iterrows() if r.rf_size}
    assert got == EXACT[backbone]
    assert (table.drop(index=list(EXACT[backbone]))["rf_size"] == 0).all()


def check_measured_equals_analytic(backbone: str, cut: str, probe) -> None:
    """The gradient support of the central unit equals the analytic field and the hand-derived size."""
    result = measure_receptive_field(backbone, cut, model=probe, linearized=True)
    assert not result["clipped"]
    assert result["measured_size"] == result["analytic_size"] == EXACT[backbone][cut][0]
    assert result["measured_centre"] == result["analytic_centre"]
    assert result["match"]


def test_vgg16_reference_values():
    table = receptive_field_table("vgg16").set_index("cut")
    for cut, size in VGG16_REFERENCE.items():
        assert table.loc[cut, "rf_size"] == size
    assert table.loc["pool5", "jump"] == 32
    assert table.loc["fc6", "rf_size"] == 0  # global


@pytest.mark.parametrize("backbone", sorted(EXACT))
def test_exact_values_of_every_cut_point(backbone):
    check_exact_fields(backbone)


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
    for name in ("vgg11", "vgg16", "resnet18", "resnet50", "efficientnet_lite0"):
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


@pytest.mark.parametrize(
    "backbone,cut",
    [("vgg16", "conv1_1"), ("vgg16", "conv1_2"), ("vgg16", "pool1"), ("vgg16", "pool2"), ("vgg16", "conv3_3"),
     ("resnet50", "conv1"), ("resnet50", "layer1"),
     ("efficientnet_lite0", "blocks_0"), ("efficientnet_lite0", "blocks_1"), ("efficientnet_lite0", "blocks_2"),
     ("efficientnet_lite0", "blocks_4")],
)
def test_measured_support_is_the_exact_field(probes, backbone, cut):
    check_measured_equals_analytic(backbone, cut, probes[backbone])


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


class _SqueezeExcitation(nn.Module):
    """A 3×3 convolution whose output is scaled by a sigmoid gate over its global average (as in EfficientNet-B0)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        y = self.conv(x)
        return y * self.gate(y.mean(dim=(2, 3), keepdim=True))


def test_a_squeeze_excitation_gate_is_opened_so_the_measured_field_is_the_convolutions():
    """Linearized, the gate is a constant 1: the central unit's gradient covers its 3×3 window, not the whole image
    through the gate's global average."""
    probe = linearized_copy(nn.Sequential(_SqueezeExcitation()))
    grad, unit = input_gradient(probe, "0", torch.ones(1, 3, 11, 11))
    rows, cols = torch.nonzero(grad.abs() > 0, as_tuple=True)
    assert unit == (5, 5)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (4, 6, 4, 6)

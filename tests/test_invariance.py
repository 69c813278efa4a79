"""Q2/Q4 measured: a conv net is exactly equivariant to shifts by its total stride; pooling buys stability."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from reports.architecture.invariance import pooling_stability, translation_equivariance
from reports.architecture.receptive_field import module_receptive_fields

# cut name = module path; "5" is the output of the second pooling: total stride (jump) 4, field 10 px
SPEC = SimpleNamespace(cut=lambda name: SimpleNamespace(module=name))


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).eval()


def smooth_image(size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return F.interpolate(torch.randn(1, 3, 12, 12, generator=g), size=(size, size), mode="bicubic",
                         align_corners=False)[0]


def check_translation_equivariance(net: nn.Module, image: torch.Tensor) -> None:
    """Shift by the jump: reported exact; shift by 1 px: reported not equivariant, with a clear error."""
    fields = module_receptive_fields(net)
    assert (fields["5"].size, fields["5"].jump) == (10, 4)
    table = translation_equivariance(net, SPEC, ["5"], image).set_index("shift_px")
    assert table.loc[4, "shift_units"] == 1 and table.loc[8, "shift_units"] == 2
    assert table.loc[4, "rel_error"] < 1e-6 and table.loc[8, "rel_error"] < 1e-6
    assert table.loc[4, "equivariant"] and table.loc[8, "equivariant"]
    assert table.loc[1, "rel_error"] > 0.05 and not table.loc[1, "equivariant"]


def check_pooling_stability(net: nn.Module, image: torch.Tensor) -> None:
    """For every shift, the relative change falls as the pooling window grows; global pooling is the most stable."""
    table = pooling_stability(net, SPEC, "1", image, size=64).pivot(index="pooling", columns="shift_px",
                                                                     values="rel_change")
    order = ["none", "max 2x2", "max 4x4", "max 8x8"]
    for shift in table.columns:
        column = table[shift]
        assert all(column[a] > column[b] for a, b in zip(order, order[1:])), column
        assert max(column["global max"], column["global avg"]) < column["max 8x8"]
    # the unpooled value is the plain relative change of the feature map, computed here independently
    source = F.interpolate(image[None], size=(68, 68), mode="bilinear", align_corners=False)
    with torch.no_grad():
        a, b = net[:2](source[..., :64, :64]), net[:2](source[..., 2:66, 2:66])
    assert table.loc["none", 2] == pytest.approx(float((b - a).norm() / a.norm()), rel=1e-5)
    assert table.loc["none", 1] > 0.1


def test_shift_by_total_stride_is_exact_in_the_valid_region():
    check_translation_equivariance(tiny_net(), smooth_image())


def test_equivariance_holds_only_in_the_valid_region():
    # independent of the function under test: a 4-px shift moves the map by one unit, exactly, away from borders
    net, image = tiny_net(), torch.randn(1, 3, 68, 68, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fa, fb = net(image[..., :64, :64]), net(image[..., 4:68, :64])
    torch.testing.assert_close(fb[:, :, 2:13, 2:14], fa[:, :, 3:14, 2:14], rtol=0, atol=1e-5)
    assert not torch.allclose(fb[:, :, :15], fa[:, :, 1:16], atol=1e-3)  # the border units see the zero padding


def test_pooling_stability_grows_with_the_window():
    check_pooling_stability(tiny_net(), smooth_image())

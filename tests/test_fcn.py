"""Q6–Q8: convolutionalized VGG/ResNet equal the originals on 224² and give score maps on larger inputs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from reports.architecture.fcn import convolutionalize, linear_to_conv, try_stages


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: getattr(torchvision.models, name)().eval() for name in ("vgg11", "resnet18")}


@pytest.mark.parametrize(
    "name,family,expected", [("vgg11", "vgg", (1000, 2, 4)), ("resnet18", "resnet", (1000, 8, 10))]
)
def test_equal_on_224_and_map_on_larger(models, name, family, expected):
    model = models[name]
    fcn = convolutionalize(model).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
        scores = fcn(x)
        big = fcn(torch.randn(1, 3, 256, 320))
    assert scores.shape[:2] == (1, 1000)
    assert scores.shape[2:] == ((1, 1) if name == "vgg11" else (7, 7))
    torch.testing.assert_close(scores.mean(dim=(2, 3)), ref, rtol=0, atol=1e-4 * max(1.0, float(ref.abs().max())))
    assert tuple(big.shape[1:]) == expected
    assert fcn.family == family and not fcn.training


def test_linear_to_conv_is_exact():
    torch.manual_seed(0)
    lin = nn.Linear(4 * 3 * 3, 5)
    conv = linear_to_conv(lin, 4)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(conv(x).flatten(1), lin(x.flatten(1)))
    with pytest.raises(ValueError, match="in_features"):
        linear_to_conv(nn.Linear(10, 2), 4)


def test_convolutionalize_rejects_other_models():
    with pytest.raises(ValueError, match="VGG or ResNet"):
        convolutionalize(nn.Sequential(nn.Linear(2, 2)))


def test_try_stages_original_vgg_fails_at_fc6(models):
    x = torch.randn(1, 3, 256, 320)
    torchvision_rows = try_stages(models["vgg11"], x)
    assert all(r["ok"] for r in torchvision_rows)
    original = try_stages(models["vgg11"], x, replace={"avgpool": nn.Identity()})
    status = {r["stage"]: r["ok"] for r in original}
    assert status["features"] and status["avgpool"] and not status["classifier.0"]
    assert isinstance(models["vgg11"].avgpool, nn.AdaptiveAvgPool2d)

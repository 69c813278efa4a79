import pytest
import torch
import torchvision

from featurize import get_backbone_spec, list_backbones, list_cut_points
from featurize.backbones import spatial_sizes


def test_registry_covers_resnets_and_vggs():
    names = set(list_backbones())
    assert {f"resnet{d}" for d in (18, 34, 50, 101, 152)} <= names
    assert {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")} <= names


def test_resnet18_cut_point_table():
    table = list_cut_points("resnet18")
    assert list(table.columns) == ["name", "module", "channels", "stride", "spatial_224", "dim_avg", "dim_flatten"]
    assert table["name"].tolist() == ["conv1", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    row = table.set_index("name").loc["layer3"]
    assert (row.channels, row.stride, row.spatial_224, row.dim_flatten) == (256, 16, "14x14", 256 * 14 * 14)
    assert table.set_index("name").loc["fc", "channels"] == 1000


@pytest.mark.parametrize("name,n_conv", [("vgg11", 8), ("vgg16", 13), ("vgg19_bn", 16)])
def test_vgg_cut_points_follow_the_paper_names(name, n_conv):
    spec = get_backbone_spec(name)
    convs = [c for c in spec.cut_names if c.startswith("conv")]
    assert len(convs) == n_conv
    assert spec.cut_names[-3:] == ["fc6", "fc7", "fc8"]
    assert [c for c in spec.cut_names if c.startswith("pool")] == [f"pool{i}" for i in range(1, 6)]
    model = getattr(torchvision.models, name)()
    for cut in spec.cut_points:
        module = model.get_submodule(cut.module)
        if cut.name.startswith("conv") or cut.name in ("fc6", "fc7"):
            assert isinstance(module, torch.nn.ReLU), cut
        elif cut.name.startswith("pool"):
            assert isinstance(module, torch.nn.MaxPool2d), cut
    assert spec.cut("conv5_3" if name != "vgg11" else "conv5_2").spatial == (14, 14)
    assert spec.cut("pool5").channels == 512 and spec.cut("fc7").channels == 4096


def test_vgg16_conv_paths_match_torchvision_indices():
    spec = get_backbone_spec("vgg16")
    assert spec.cut("conv1_1").module == "features.1"
    assert spec.cut("conv5_3").module == "features.29"
    assert spec.cut("pool5").module == "features.30"
    assert spec.cut("features.29").name == "conv5_3"


def test_spatial_sizes_at_other_input_sizes():
    sizes = spatial_sizes("resnet18", 64)
    assert sizes["conv1"] == (32, 32) and sizes["layer4"] == (2, 2) and sizes["fc"] == (1, 1)


def test_unknown_backbone_and_cut_point_list_the_choices():
    with pytest.raises(ValueError, match="resnet18.*vgg16"):
        get_backbone_spec("alexnet")
    with pytest.raises(ValueError, match="layer1, layer2"):
        get_backbone_spec("resnet18").cut("layer5")

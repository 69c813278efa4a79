"""Extraction against a reference computed with torchvision's own feature extractor and preset transform."""

import multiprocessing

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.transforms._presets import ImageClassification

from featurize import CNNFeaturizer, MultiCutExtractor, get_backbone_spec, pool
from featurize.backbones import CutPoint
from featurize.multicut import POOLINGS, Pooling, parse_pooling, pooled_dim, pooling_label

SIZE = 64


def reference_features(backbone, images, cuts, size=SIZE, seed=0):
    """Module outputs from create_feature_extractor (FX graph, not hooks) on torchvision's preset applied to PIL
    images (as for the weights' evaluation), pooled by hand."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, backbone)(weights=None).eval()
    spec = get_backbone_spec(backbone)
    nodes = {spec.cut(c).module: c for c in cuts}
    extractor = create_feature_extractor(model, return_nodes=dict(nodes))
    preset = ImageClassification(crop_size=size, resize_size=round(size * 256 / 224))
    batch = torch.stack([preset(Image.fromarray(img)) for img in images])
    with torch.no_grad():
        outs = extractor(batch)
    pooled = []
    for c in cuts:
        t = outs[c]
        pooled.append(t.mean(dim=(2, 3)) if t.ndim == 4 and spec.cut(c).is_spatial else t.flatten(1))
    return torch.cat(pooled, 1).numpy()


@pytest.mark.parametrize(
    "backbone,cuts,size",
    [
        ("resnet18", ["conv1", "layer2", "layer4", "fc"], 64),
        ("resnet18", ["layer3", "avgpool"], 96),
        ("vgg11", ["conv1_1", "pool2", "conv4_2", "fc7"], 64),
        ("vgg11", ["pool5", "fc8"], 80),
    ],
)
def test_features_equal_torchvision_reference(two_class_arrays, backbone, cuts, size):
    images = two_class_arrays[0][:4]
    ours = CNNFeaturizer(backbone, layers=cuts, weights=None, image_size=size, random_state=0).fit().transform(images)
    ref = reference_features(backbone, images, cuts, size)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_one_pass_with_four_cuts_equals_four_passes(two_class_arrays):
    images = two_class_arrays[0][:5]
    cuts = ["conv1", "layer1", "layer3", "fc"]
    kw = dict(weights=None, image_size=SIZE, pooling="avgmax")
    together = CNNFeaturizer("resnet18", layers=cuts, **kw).fit().transform(images)
    apart = np.concatenate([CNNFeaturizer("resnet18", layers=c, **kw).fit().transform(images) for c in cuts], 1)
    np.testing.assert_array_equal(together, apart)


def test_forward_stops_after_the_deepest_cut():
    spec = get_backbone_spec("resnet18")
    model = torchvision.models.resnet18().eval()
    ran = []
    for name in ("layer3", "layer4", "fc"):
        model.get_submodule(name).register_forward_hook(lambda *_, name=name: ran.append(name))
    with torch.inference_mode():
        MultiCutExtractor(model, [spec.cut("layer2"), spec.cut("conv1")], "avg")(torch.randn(2, 3, 64, 64))
    assert ran == []


def test_captures_are_copies_that_inplace_ops_cannot_overwrite():
    model = torchvision.models.resnet18().eval()
    bn1 = CutPoint("bn1", "bn1", 64, 2, (32, 32))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ours = MultiCutExtractor(model, [bn1], "flatten")(x)["bn1"]
        expected = model.bn1(model.conv1(x)).flatten(1)
    assert (expected < 0).any(), "the in-place ReLU after bn1 would have zeroed these"
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("pooling,dim",
                         [("avg", 8), ("max", 8), ("avgmax", 16), ("flatten", 8 * 6 * 5), ("grid:2", 32)])
def test_pooling_values_and_dims(pooling, dim):
    x = torch.randn(3, 8, 6, 5)
    out = pool(x, pooling)
    assert out.shape == (3, dim)
    expected = {
        "avg": x.mean((2, 3)),
        "max": torch.stack([x[b, c].max() for b in range(3) for c in range(8)]).reshape(3, 8),
        "avgmax": torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1),
        "flatten": x.reshape(3, -1),
        "grid:2": F.adaptive_avg_pool2d(x, 2).flatten(1),
    }[pooling]
    torch.testing.assert_close(out, expected)
    assert pool(torch.randn(3, 10), pooling).shape == (3, 10)


def check_max_pooling_is_the_maximum():
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 1, 2] = 5.0
    x[0, 1] = -1.0
    x[0, 1, 3, 3] = 2.0
    torch.testing.assert_close(pool(x, "max"), torch.tensor([[5.0, 2.0]]))
    torch.testing.assert_close(pool(x, "avgmax"), torch.tensor([[5 / 16, -13 / 16, 5.0, 2.0]]))


def test_max_pooling_is_the_maximum_not_the_mean():
    check_max_pooling_is_the_maximum()


def test_a_pooling_is_one_table_entry(monkeypatch):
    """Adding a pooling is one entry of POOLINGS: name parsing, dimension and values follow from it."""
    monkeypatch.setitem(POOLINGS, "minmax", Pooling("minmax", lambda c, hw, k: 2 * c,
                                                    lambda x, k: torch.cat([x.amin((2, 3)), x.amax((2, 3))], 1)))
    x = torch.randn(2, 4, 3, 3)
    assert parse_pooling("minmax") == ("minmax", 0) and pooling_label("minmax") == "minmax"
    torch.testing.assert_close(pool(x, "minmax"), torch.cat([x.amin((2, 3)), x.amax((2, 3))], 1))
    assert pooled_dim(get_backbone_spec("resnet18").cut("layer1"), "minmax", (8, 8)) == 128
    with pytest.raises(ValueError, match="minmax"):
        parse_pooling("median")


def test_unknown_pooling_lists_choices():
    with pytest.raises(ValueError, match="avg, max, avgmax, flatten, grid:k"):
        parse_pooling("median")
    with pytest.raises(ValueError):
        parse_pooling("grid:0")


def test_auto_workers_use_the_cpus_but_one_and_none_for_one_batch(monkeypatch):
    from featurize import images

    monkeypatch.setattr(images.os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    assert images.resolve_workers("auto", 100, 32) == 3
    assert images.resolve_workers("auto", 32, 32) == 0
    assert images.resolve_workers(5, 1, 32) == 5
    monkeypatch.setattr(images.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert images.resolve_workers("auto", 1000, 32) == images.MAX_AUTO_WORKERS


def test_features_do_not_depend_on_the_loader_workers(image_folder):
    """Decoding in 0, 1 or 2 worker processes gives bit-identical features (and the default 'auto' too)."""
    _, paths, _ = image_folder
    items = [str(p) for p in paths[:10]]
    outs = [CNNFeaturizer("resnet18", layers=["layer2", "fc"], weights=None, image_size=32, batch_size=4,
                          num_workers=w).fit().transform(items) for w in (0, 1, 2, "auto")]
    for other in outs[1:]:
        np.testing.assert_array_equal(outs[0], other)


def test_a_model_builder_is_called_once_after_the_loader_starts(two_class_arrays):
    """iter_features accepts a builder, called once (after the workers start), with the module's results."""
    from featurize.multicut import iter_features
    from featurize.preprocessing import Preprocessing

    images = two_class_arrays[0][:6]
    spec = get_backbone_spec("resnet18")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    prep = Preprocessing().with_size(32)
    calls = []

    before = {p.pid for p in multiprocessing.active_children()}

    def build():
        calls.append(len({p.pid for p in multiprocessing.active_children()} - before))
        return model

    kwargs = dict(batch_transform=prep.normalize, batch_size=4, num_workers=1)
    built = [b.features["layer3"] for b in iter_features(images, build, [spec.cut("layer3")], "avg", prep.geometry,
                                                         **kwargs)]
    given = [b.features["layer3"] for b in iter_features(images, model, [spec.cut("layer3")], "avg", prep.geometry,
                                                         **kwargs)]
    assert calls == [1], "built once, while the loader's worker was already running"
    np.testing.assert_array_equal(np.concatenate(built), np.concatenate(given))


def test_auto_workers_are_none_inside_a_daemonic_process(monkeypatch):
    from featurize import images

    monkeypatch.setattr(images.multiprocessing.current_process(), "daemon", True)
    assert images.resolve_workers("auto", 1000, 32) == 0

"""timm models as backbones: cut points, features against timm's own outputs, weights, cache keys, sklearn checks."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

timm = pytest.importorskip("timm")

import featurize.families.timm as timm_family  # noqa: E402
import featurize.transformer as transformer_module  # noqa: E402
from featurize import CNNFeaturizer, get_backbone_spec, is_backbone, list_backbones, list_cut_points  # noqa: E402
from featurize.multicut import MultiCutExtractor  # noqa: E402
from featurize.backbones import load_model, resolve_weights  # noqa: E402
from test_transformer import INAPPLICABLE, _TabularAsImages  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

CONVNEXT, VIT, DINO = "timm:convnext_atto", "timm:vit_tiny_patch16_224", "timm:vit_small_patch14_reg4_dinov2.lvd142m"
TV_PAIRS = {"conv1": "act1", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4",
            "avgpool": "pre_logits", "fc": "head"}
"""torchvision resnet18 cut point -> the same activation in timm's resnet18."""


def _random_model(backbone: str):
    spec = get_backbone_spec(backbone)
    return spec, load_model(spec, resolve_weights(spec, None))


def _batch(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _by_hand(x: torch.Tensor, pooling: str) -> torch.Tensor:
    return {"avg": x.mean((2, 3)), "max": x.amax((2, 3)), "grid:2": F.adaptive_avg_pool2d(x, 2).flatten(1),
            "flatten": x.flatten(1)}[pooling]


def test_timm_names_are_backbones_and_unknown_ones_are_clear():
    assert is_backbone(CONVNEXT) and is_backbone("resnet18") and not is_backbone("alexnet")
    assert "resnet18" in list_backbones() and not any(name.startswith("timm:") for name in list_backbones())
    with pytest.raises(ValueError, match="Unknown timm model 'no_such_net'"):
        get_backbone_spec("timm:no_such_net")
    with pytest.raises(ValueError, match="bogus.*resnet18.tv_in1k"):
        get_backbone_spec("timm:resnet18.bogus")


def test_missing_timm_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setattr(timm_family, "timm_spec", timm_family.timm_spec.__wrapped__)
    get_backbone_spec.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install -e \."):
            get_backbone_spec(CONVNEXT)
        with pytest.raises(ImportError, match=r"pip install -e \."):
            CNNFeaturizer(CONVNEXT, weights=None).fit()
    finally:
        get_backbone_spec.cache_clear()


def test_cnn_cut_points_come_from_feature_info():
    table = list_cut_points(CONVNEXT)
    assert list(table.columns) == list(list_cut_points("resnet18").columns)
    info = timm.create_model("convnext_atto", pretrained=False).feature_info
    spatial = table[table.stride > 0]
    assert spatial.module.tolist() == [i["module"] for i in info] == [f"stages.{i}" for i in range(4)]
    assert spatial.channels.tolist() == [i["num_chs"] for i in info]
    assert spatial.stride.tolist() == [i["reduction"] for i in info]
    assert table.name.tolist()[-2:] == ["pre_logits", "head"]
    assert get_backbone_spec(CONVNEXT).cut("stages.2").name == "stages_2"


def test_vit_cut_points_are_blocks_then_pre_logits_and_head():
    table = list_cut_points(VIT).set_index("name")
    assert table.index.tolist() == [f"blocks_{i}" for i in range(12)] + ["pre_logits", "head"]
    assert table.loc["blocks_11"].tolist() == ["blocks.11", 192, 16, "14x14", 192, 192 * 14 * 14]
    assert table.loc["head", "channels"] == 1000
    cut = get_backbone_spec(DINO).cut("blocks.3")
    assert (cut.prefix_tokens, cut.cls_token, cut.stride, cut.spatial) == (5, True, 14, (16, 16))


@pytest.mark.parametrize("backbone", [CONVNEXT, "timm:resnet10t", "timm:efficientnet_b0"])
@pytest.mark.parametrize("pooling", ["avg", "max", "grid:2", "flatten"])
def test_cnn_features_equal_timm_forward_intermediates_pooled_by_hand(backbone, pooling):
    spec, model = _random_model(backbone)
    x = _batch(64)
    got = MultiCutExtractor(model, spec.cut_points, pooling)(x)
    with torch.no_grad():
        maps = model.forward_intermediates(x, indices=list(range(len(model.feature_info))), intermediates_only=True)
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    spatial = [c for c in spec.cut_points if c.is_spatial]
    assert len(spatial) == len(maps)
    for cut, expected in zip(spatial, maps):
        torch.testing.assert_close(got[cut.name], _by_hand(expected, pooling), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["pre_logits"], pre_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["head"], logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone,size", [(VIT, 64), (DINO, 56)])
def test_vit_features_equal_forward_intermediates_pooled_by_hand(backbone, size):
    spec, model = _random_model(backbone)
    x = _batch(size)
    indices = [0, 5, 11]
    with torch.no_grad():
        grids, prefixes = zip(*model.forward_intermediates(x, indices=indices, norm=False, return_prefix_tokens=True,
                                                           intermediates_only=True))
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
    cuts = [spec.cut(f"blocks.{i}") for i in indices] + [spec.cut("pre_logits")]
    expected = {
        "cls": lambda g, p: p[:, 0],
        "mean": lambda g, p: g.mean((2, 3)),
        "cls+mean": lambda g, p: torch.cat([p[:, 0], g.mean((2, 3))], 1),
        **{name: lambda g, p, name=name: _by_hand(g, name) for name in ("avg", "max", "grid:2", "flatten")},
    }
    assert prefixes[0].shape[1] == model.num_prefix_tokens
    for pooling, by_hand in expected.items():
        got = MultiCutExtractor(model, cuts, pooling)(x)
        for cut, grid, prefix in zip(cuts, grids, prefixes):
            torch.testing.assert_close(got[cut.name], by_hand(grid, prefix), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got["pre_logits"], pre_logits, rtol=1e-5, atol=1e-5)


def test_class_token_poolings_are_refused_without_a_class_token():
    with pytest.raises(ValueError, match="class token.*'stages_3'"):
        CNNFeaturizer(CONVNEXT, layers="stages_3", pooling="cls", weights=None).fit()
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        CNNFeaturizer(DINO, layers="blocks_11", weights=None, image_size=64).fit()


@pytest.fixture(scope="module")
def tv_resnet18_file(tmp_path_factory):
    """A random-init torchvision resnet18 state dict saved as a .pth file."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_timm_resnet18_has_torchvision_resnet18_cut_point_table():
    tv, tm = list_cut_points("resnet18"), list_cut_points("timm:resnet18.tv_in1k")
    assert [TV_PAIRS[n] for n in tv.name] == tm.name.tolist()
    columns = ["channels", "stride", "spatial_224", "dim_avg", "dim_flatten"]
    assert tv[columns].equals(tm[columns])


def test_timm_resnet18_with_torchvision_state_dict_gives_torchvision_features(tv_resnet18_file, two_class_arrays):
    images = two_class_arrays[0][:4]
    common = dict(weights=str(tv_resnet18_file), image_size=64, pooling="avg")
    tv = CNNFeaturizer("resnet18", layers=list(TV_PAIRS), **common).fit()
    tm = CNNFeaturizer("timm:resnet18.tv_in1k", layers=list(TV_PAIRS.values()), **common).fit()
    assert tv.preprocessing_ == tm.preprocessing_ and tm.weights_.pretrained
    np.testing.assert_allclose(tm.transform(images), tv.transform(images), rtol=1e-4, atol=1e-5)
    assert tv.cache_key() != tm.cache_key()
    assert tv.cache_key()["backbone"] == "resnet18" and tm.cache_key()["backbone"] == "timm:resnet18.tv_in1k"


def test_cache_keys_differ_between_sources_with_random_init():
    tv = CNNFeaturizer("resnet18", weights=None, layers="layer4").fit().cache_key()
    tm = CNNFeaturizer("timm:resnet18.tv_in1k", weights=None, layers="layer4").fit().cache_key()
    assert tv["backbone"] != tm["backbone"] and tv["weights"] != tm["weights"]
    assert tv["preprocessing"] == tm["preprocessing"], "same torchvision preset: the source alone tells them apart"


def test_random_init_is_flagged_and_preprocessing_comes_from_timm_config(caplog):
    with caplog.at_level(logging.WARNING):
        fz = CNNFeaturizer("timm:vit_tiny_patch16_224", weights=None, layers="blocks_0", random_state=7).fit()
    assert fz.weights_.pretrained is False and "RANDOM-INIT" in fz.weights_.label
    assert "RANDOM-INIT" in caplog.text
    config = timm.data.resolve_model_data_config(timm.create_model("vit_tiny_patch16_224", pretrained=False))
    p = fz.preprocessing_
    assert (p.crop, p.resize, p.interpolation) == (224, int(224 / config["crop_pct"]), config["interpolation"])
    assert (p.mean, p.std) == (tuple(config["mean"]), tuple(config["std"]))
    with pytest.raises(ValueError, match="timm backbones take 'DEFAULT'"):
        CNNFeaturizer(CONVNEXT, layers="stages_3", weights="IMAGENET1K_V1").fit()


@pytest.mark.parametrize("backbone", ["convnext_atto", "vit_tiny_patch16_224", "resnet18.tv_in1k"])
def test_preprocessing_is_timms_eval_transform_bit_for_bit(backbone):
    """On a PIL photo, the featurizer's preprocessing gives exactly what timm's own eval transform gives."""
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
    config = timm.data.resolve_model_data_config(timm.create_model(backbone, pretrained=False))
    reference = timm.data.create_transform(**config, is_training=False)
    ours = CNNFeaturizer(f"timm:{backbone}", weights=None, layers="pre_logits").fit().preprocessing_
    assert torch.equal(ours(image), reference(image))


def _fake_hf_cache(root, hub_id: str, state: dict) -> None:
    from safetensors.torch import save_file

    repo = root / "hub" / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, repo / "snapshots" / "abc123" / "model.safetensors")


def test_default_weights_come_from_the_hf_cache_or_an_error_says_where(tmp_path, monkeypatch, two_class_arrays):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"convnext_atto\.d2_in1k.*timm/convnext_atto\.d2_in1k.*weights=None"):
        CNNFeaturizer(CONVNEXT, layers="pre_logits").fit()
    torch.manual_seed(5)
    state = timm.create_model("convnext_atto", pretrained=False).state_dict()
    _fake_hf_cache(tmp_path, "timm/convnext_atto.d2_in1k", state)
    fz = CNNFeaturizer(CONVNEXT, layers="pre_logits", image_size=64).fit()
    assert fz.weights_.kind == "timm" and fz.weights_.identity.startswith("timm:convnext_atto.d2_in1k:sha256=")
    reference = timm.create_model("convnext_atto", pretrained=False)
    reference.load_state_dict(state)
    x = torch.stack([fz.preprocessing_(torch.from_numpy(im).permute(2, 0, 1)) for im in two_class_arrays[0][:3]])
    with torch.no_grad():
        expected = reference.eval().forward_head(reference.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(fz.transform(two_class_arrays[0][:3]), expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone,layers,pooling", [(CONVNEXT, ["stages_1", "pre_logits"], "avg"),
                                                      (VIT, ["blocks_5", "pre_logits"], "cls")])
def test_cached_featurizer_on_timm_backbones(tmp_path, monkeypatch, two_class_arrays, backbone, layers, pooling):
    images = two_class_arrays[0][:6]
    kw = dict(layers=layers, pooling=pooling, weights=None, image_size=64, batch_size=4)
    plain = CNNFeaturizer(backbone, **kw).fit().transform(images)
    cached = CNNFeaturizer(backbone, cache=tmp_path, **kw).fit()
    np.testing.assert_allclose(cached.transform(images), plain, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(transformer_module, "load_model", lambda *a: pytest.fail("a cached transform built a model"))
    np.testing.assert_array_equal(cached.transform(images), cached.transform(images))
    other = CNNFeaturizer(backbone, cache=tmp_path, **{**kw, "layers": get_backbone_spec(backbone).cut_names[:2]}).fit()
    assert other.transform(images).shape == (6, sum(other.feature_dims_.values()))


def test_sklearn_estimator_checks_with_a_timm_backbone():
    results = check_estimator(
        _TabularAsImages(backbone=CONVNEXT, layers=["stages_1", "pre_logits"], weights=None, image_size=32,
                         batch_size=8),
        expected_failed_checks=INAPPLICABLE, on_fail=None, on_skip=None,
    )
    failed = {r["check_name"]: str(r["exception"])[:200] for r in results if r["status"] == "failed"}
    assert failed == {}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {"check_estimators_pickle", "check_methods_sample_order_invariance", "check_fit_idempotent",
            "check_transformer_preserve_dtypes", "check_no_attributes_set_in_init"} <= passed


@pytest.mark.parametrize("backbone,layers", [("resnet18", "avgpool"), ("timm:convnext_atto", "pre_logits")])
def test_class_token_pooling_with_a_cache_stores_only_the_cuts_it_applies_to(tmp_path, two_class_arrays, backbone,
                                                                            layers):
    """The cached pass stores every standard cut point the pooling applies to: with 'cls', no feature map of a
    model without a class token (the vector cut points are not pooled)."""
    images = two_class_arrays[0][:3]
    fz = CNNFeaturizer(backbone, layers=layers, pooling="cls", weights=None, image_size=64, cache=tmp_path).fit()
    out = fz.transform(images)
    assert out.shape[0] == 3 and np.isfinite(out).all()
    assert all(not get_backbone_spec(backbone).cut(c).is_spatial for c in fz.cache_key()["cuts"])

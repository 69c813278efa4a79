import hashlib
import os

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

from featurize import get_backbone_spec, load_model, resolve_weights
from featurize.preprocessing import Preprocessing
from featurize.weights import file_sha256


@pytest.fixture(scope="module")
def spec():
    return get_backbone_spec("resnet18")


def test_default_and_enum_names_resolve_without_building(spec):
    default = resolve_weights(spec, "DEFAULT")
    assert default.kind == "torchvision" and default.pretrained
    assert default.identity == "ResNet18_Weights.IMAGENET1K_V1"
    assert resolve_weights(spec, "IMAGENET1K_V1").identity == default.identity
    assert resolve_weights(spec, torchvision.models.ResNet18_Weights.IMAGENET1K_V1).identity == default.identity
    assert default.preprocessing == Preprocessing(256, 224)


def test_weights_preprocessing_follows_the_enum():
    rw = resolve_weights(get_backbone_spec("resnet50"), "DEFAULT")
    assert (rw.preprocessing.resize, rw.preprocessing.crop) == (232, 224)
    assert rw.preprocessing.with_size(112) == Preprocessing(116, 112)
    assert rw.preprocessing.with_size(None).crop is None


def test_unknown_enum_name_lists_valid_ones(spec):
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        resolve_weights(spec, "IMAGENET1K_V9")


def test_random_init_is_flagged_and_seeded(spec):
    rw = resolve_weights(spec, None, random_state=3)
    assert not rw.pretrained and "RANDOM-INIT" in rw.label and "seed=3" in rw.identity
    a, b = load_model(spec, rw), load_model(spec, rw)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, load_model(spec, resolve_weights(spec, None, 4)).conv1.weight)


def test_missing_pretrained_file_names_the_file_and_the_folder(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        load_model(spec, resolve_weights(spec, "DEFAULT"))
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg


def _save_random_state(path, spec, seed=1):
    torch.save(load_model(spec, resolve_weights(spec, None, seed)).state_dict(), path)


def test_local_file_loads_with_its_content_identity(spec, tmp_path):
    path = tmp_path / "mine.pth"
    _save_random_state(path, spec)
    rw = resolve_weights(spec, str(path))
    assert rw.kind == "file" and rw.pretrained and file_sha256(path)[:16] in rw.identity
    model = load_model(spec, rw)
    assert torch.equal(model.fc.weight, torch.load(path, weights_only=True)["fc.weight"])


def test_file_with_wrong_hash_prefix_is_refused(spec, tmp_path):
    path = tmp_path / "resnet18-deadbeef.pth"
    _save_random_state(path, spec)
    with pytest.raises(ValueError, match="deadbeef"):
        resolve_weights(spec, path)


def test_file_with_right_hash_prefix_is_accepted(spec, tmp_path):
    tmp = tmp_path / "x.pth"
    _save_random_state(tmp, spec)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    named = tmp_path / f"resnet18-{digest[:8]}.pth"
    os.rename(tmp, named)
    assert resolve_weights(spec, named).kind == "file"


def test_corrupt_file_in_torch_cache_is_refused(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    _save_random_state(target, spec)
    with pytest.raises(ValueError, match="f37072fd"):
        load_model(spec, resolve_weights(spec, "DEFAULT"))


def test_missing_local_file_is_a_clear_error(spec, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_weights(spec, str(tmp_path / "nope.pth"))


def test_a_date_in_the_file_name_is_not_taken_for_a_hash(spec, tmp_path):
    path = tmp_path / "resnet18-finetuned-20240131.pth"
    _save_random_state(path, spec)
    assert resolve_weights(spec, path).kind == "file"


def test_an_all_digit_hash_of_a_torchvision_file_is_still_checked(tmp_path):
    vgg13 = get_backbone_spec("vgg13")
    path = tmp_path / "vgg13-19584684.pth"
    torch.save({"not": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="19584684"):
        resolve_weights(vgg13, path)


def test_qualified_enum_name_of_another_model_is_refused(spec):
    for name in ("ResNet18_Weights.IMAGENET1K_V1", "torchvision.models.ResNet18_Weights.IMAGENET1K_V1"):
        assert resolve_weights(spec, name).identity == "ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(ValueError, match="another model.*ResNet18_Weights") as err:
        resolve_weights(spec, "VGG16_Weights.IMAGENET1K_V1")
    assert str(err.value).count("DEFAULT") == 1


def _photo(seed: int, size=(157, 113)):
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 20, (size[1], size[0], 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("crop,interpolation", [(224, "bilinear"), (64, "bilinear"), (96, "bicubic")])
def test_preprocessing_is_torchvisions_preset_on_pil_images_bit_for_bit(crop, interpolation):
    """What the pretrained weights were evaluated with: the preset applied to PIL images (PIL resampling)."""
    prep = Preprocessing(interpolation=interpolation).with_size(crop)
    preset = ImageClassification(crop_size=crop, resize_size=prep.resize,
                                 interpolation=InterpolationMode(interpolation))
    for seed in range(3):
        image = _photo(seed)
        ours = prep(image)
        assert torch.equal(ours, preset(image))
        # the same pixels given as an array give the same tensor
        assert torch.equal(prep(torch.from_numpy(np.array(image)).permute(2, 0, 1)), ours)


def test_batched_normalize_equals_per_image_and_torchvision():
    prep = Preprocessing()
    crops = torch.stack([prep.geometry(_photo(seed)) for seed in range(4)])
    assert crops.dtype == torch.uint8 and crops.shape == (4, 3, 224, 224)
    reference = TF.normalize(TF.convert_image_dtype(crops, torch.float), list(prep.mean), list(prep.std))
    for layout in (torch.contiguous_format, torch.channels_last):
        batched = prep.normalize(crops.contiguous(memory_format=layout))
        assert torch.equal(batched, reference)
    assert all(torch.equal(prep.normalize(c), r) for c, r in zip(crops, reference))
    with pytest.raises(ValueError, match="uint8"):
        prep.normalize(reference)


def test_preprocessing_identity_names_the_resampler():
    assert "resampler=pil" in Preprocessing().identity()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA"])
def test_geometry_converts_other_modes_to_rgb(mode):
    image = _photo(0).convert(mode)
    prep = Preprocessing().with_size(64)
    assert torch.equal(prep(image), prep(image.convert("RGB")))

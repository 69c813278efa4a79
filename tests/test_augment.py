"""Augmentation policies: output shapes/dtypes, determinism of "none", MixUp soft targets, bad names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from classifiers.augment import AUGMENTATIONS, get_augmentation
from featurize.preprocessing import Preprocessing


@pytest.fixture(scope="module")
def inputs(two_class_arrays):
    images, _ = two_class_arrays
    return [Image.fromarray(images[0]), torch.from_numpy(images[1]).permute(2, 0, 1).contiguous()]


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_policy_output_shape_and_dtype(name, inputs):
    torch.manual_seed(0)
    train, batch = get_augmentation(name, Preprocessing(), 48)
    for image in inputs:
        out = train(image)
        assert out.shape == (3, 48, 48) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
    assert (batch is not None) == name.endswith("mixup")


def test_none_is_the_evaluation_preprocessing(inputs):
    train, _ = get_augmentation("none", Preprocessing(), 40)
    expected = Preprocessing().with_size(40)
    for image in inputs:
        torch.testing.assert_close(train(image), expected(image), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["flip_crop", "strong"])
def test_random_policies_vary(name, inputs):
    train, _ = get_augmentation(name, Preprocessing(), 48)
    torch.manual_seed(0)
    outs = [train(inputs[0]) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_image_size_none_uses_preprocessing_crop(inputs):
    train, _ = get_augmentation("flip_crop", Preprocessing(resize=80, crop=64), None)
    assert train(inputs[0]).shape == (3, 64, 64)


def test_mixup_produces_soft_targets():
    torch.manual_seed(0)
    _, batch = get_augmentation("flip_crop+mixup", Preprocessing(), 32)
    images = torch.randn(8, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mixed, targets = batch(images, F.one_hot(labels, 3).float())
    assert mixed.shape == images.shape and mixed.dtype == torch.float32
    assert targets.shape == (8, 3)
    np.testing.assert_allclose(targets.sum(1).numpy(), 1.0, rtol=1e-6)
    assert ((targets > 0) & (targets < 1)).any(), "MixUp targets should be soft"


def test_unknown_policy_lists_choices():
    with pytest.raises(ValueError, match="flip_crop.*strong.*mixup"):
        get_augmentation("cutmix", Preprocessing(), 32)

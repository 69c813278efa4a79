"""CUDA checks: fp32 CUDA features equal CPU ones, bf16 AMP is close and cached apart, cache hits on CUDA, and a
fine-tuning smoke run.  Skipped without CUDA; run with ``pytest -m gpu``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import featurize.transformer
from classifiers.finetune import FineTunedCNN
from conftest import make_two_class_images
from featurize import CNNFeaturizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUTS = {"resnet18": ["conv1", "layer2", "layer4", "fc"], "vgg11": ["conv2_1", "pool3", "conv5_2", "fc7"]}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return make_two_class_images(4, size=(72, 72), seed=3)[0]


def _featurizer(backbone: str, layers, device: str, amp: bool = False, cache=None) -> CNNFeaturizer:
    return CNNFeaturizer(backbone=backbone, layers=layers, weights=None, image_size=64, batch_size=4, device=device,
                         amp=amp, cache=cache).fit()


@pytest.mark.parametrize("backbone", ["resnet18", "vgg11"])
def test_cuda_fp32_matches_cpu(backbone, images):
    """PyTorch's default runs cuDNN convolutions in TF32; the featurizer must still compute strict fp32 (its key)."""
    cpu = _featurizer(backbone, CUTS[backbone], "cpu").transform(images)
    cuda = _featurizer(backbone, CUTS[backbone], "cuda").transform(images)
    assert cuda.dtype == np.float32 and cuda.shape == cpu.shape
    np.testing.assert_allclose(cuda, cpu, rtol=1e-3, atol=1e-4)


def test_amp_close_to_fp32_and_cached_apart(images, tmp_path):
    layers = ["layer2", "layer4"]
    fp32 = _featurizer("resnet18", layers, "cpu", cache=tmp_path)
    amp = _featurizer("resnet18", layers, "cuda", amp=True, cache=tmp_path)
    a, b = fp32.transform(images), amp.transform(images)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert (cosine > 0.99).all(), cosine
    assert fp32.cache_key()["precision"] == "fp32" and amp.cache_key()["precision"] == "bf16-amp"
    assert fp32.cache_file().path != amp.cache_file().path
    assert len(list(tmp_path.glob("*.h5"))) == 2


def test_cuda_cache_hit_identical(images, tmp_path, monkeypatch):
    first = _featurizer("resnet18", ["layer3", "fc"], "cuda", amp=True, cache=tmp_path).transform(images)

    def no_model(*args, **kwargs):
        raise AssertionError("a cache hit must not build the model")

    monkeypatch.setattr(featurize.transformer, "load_model", no_model)
    again = _featurizer("resnet18", ["layer3", "fc"], "cuda", amp=True, cache=tmp_path).transform(images)
    np.testing.assert_array_equal(again, first)


def test_finetune_last_block_on_cuda():
    X, y = make_two_class_images(8, size=(64, 64), seed=1)
    clf = FineTunedCNN(backbone="resnet18", weights=None, strategy="last_block", epochs=1, min_steps=0, batch_size=8,
                       image_size=64, validation_fraction=None, device="cuda").fit(X, y)
    # documented: model_ is "the adapted network (on CPU, eval mode)"
    assert {p.device.type for p in clf.model_.parameters()} == {"cpu"}
    proba = clf.predict_proba(X)
    assert proba.shape == (16, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert {p.device.type for p in clf.model_.parameters()} == {"cpu"}


def test_bench_suite_on_cuda_measures_the_cuda_ratios(tmp_path):
    """The suite on CUDA adds the bf16 channels_last bare forward (and timm's, when installed) and their ratios."""
    from pipelines import bench_suite

    result = bench_suite.run_suite("resnet18", n_images=8, batch_size=4, image_size=64, device="cuda", weights=None,
                                   rss_images=2, others=(), head_images=8, workdir=tmp_path)
    names = set(result.ratios["name"])
    assert "library/bare_bf16_channels_last" in names
    assert result.settings["precision"] == "bf16-amp" and result.hardware["gpu"] != "none"
    try:
        import timm  # noqa: F401
    except ImportError:
        return
    assert "bare_bf16_channels_last/timm" in names

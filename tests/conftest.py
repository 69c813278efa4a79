"""Shared fixtures: offline guard, generated two-class images (files and arrays), the float32 feature tolerance."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_two_class_images(n_per_class: int, size: tuple[int, int] = (72, 80),
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic uint8 images (N, H, W, 3): class 0 horizontal stripes, class 1 bright disc, both noisy."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    images, labels = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            base = rng.normal(110, 30, size=(h, w, 3))
            if label == 0:
                period = rng.uniform(6, 12)
                base += 70 * np.sin(2 * np.pi * (yy + rng.uniform(0, period)) / period)[..., None]
            else:
                cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.3) * min(h, w)
                base += 90 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2)[..., None]
            images.append(np.clip(base, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.array(labels)


FEATURE_NOISE = 1e-5
"""Tolerance of float32 features computed in different forward passes, as a fraction of the largest |value| compared.

The batch a row is computed in (its size, the other images in it) and the thread count change the kernels' summation
order, so the last bits of a feature depend on them.  Measured by ``tests/reliability/feature_noise.py`` (resnet18,
random-init, the tests' images at 32 and 64 px, batch sizes 1, 2, 3, 4 and all images, OMP_NUM_THREADS 1 and 2): the
largest difference is 1.1e-6 of the largest |value| (fc at 32 px, batch 1 against one batch of all images; up to
3.3e-6 absolute, layer4 at 64 px), so 1e-5 leaves a margin of 9x.  Wrong features (two rows swapped, a row of another
image, bicubic instead of bilinear resizing) differ by 0.09 to 0.22 of it (tests/test_faults_featurize.py)."""


def assert_features_close(actual, desired, err_msg: str = "") -> None:
    """Features equal up to float32 batch noise: ``|actual - desired| <= FEATURE_NOISE * max|desired|``, NaN where
    ``desired`` is NaN.  For features of the same images computed in other batches, processes or thread counts."""
    desired = np.asarray(desired)
    atol = FEATURE_NOISE * float(np.nanmax(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=0, atol=atol, err_msg=err_msg)


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, names=("ants", "bees")) -> list[Path]:
    """Write images as PNG files in class subfolders of ``root``; return the paths in input order."""
    paths = []
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No test may download weights or touch the network: offline flag, private TORCH_HOME, no remote sockets."""
    monkeypatch.setenv("FEATURIZE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        local = isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1"))
        if isinstance(host, str) and not local and self.family != socket.AF_UNIX:
            raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture(scope="session")
def two_class_arrays() -> tuple[np.ndarray, np.ndarray]:
    """12 images per class, 72 × 80 px, uint8 (N, H, W, 3), and labels."""
    return make_two_class_images(12)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory, two_class_arrays) -> tuple[Path, list[Path], np.ndarray]:
    """The two-class images as PNG files in ``root/ants`` and ``root/bees``: (root, paths, labels)."""
    root = tmp_path_factory.mktemp("images")
    images, labels = two_class_arrays
    return root, write_image_folder(root, images, labels), labels


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """An ImageFolder with train/ and val/ subsets of 6 + 6 images per class, 40 × 44 px."""
    root = tmp_path_factory.mktemp("tiny")
    for subset, seed in (("train", 1), ("val", 2)):
        images, labels = make_two_class_images(6, size=(40, 44), seed=seed)
        write_image_folder(root / subset, images, labels)
    return root

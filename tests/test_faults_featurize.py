"""Planted faults: each breaks one featurize guarantee with monkeypatch, and the behavioural check that guards it
must fail.  A check that passes under its fault guards nothing."""

from __future__ import annotations

import dataclasses
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import featurize.cache as cache_module
import featurize.durable as durable_module
import featurize.images as images_module
import featurize.families.torchvision as torchvision_family
from conftest import FEATURE_NOISE, assert_features_close, make_two_class_images
from featurize import CNNFeaturizer
from featurize.cache import FeatureCache
from featurize.multicut import POOLINGS, Pooling

sys.path.insert(0, str(Path(__file__).parent / "reliability"))

from test_cache import (  # noqa: E402
    check_interrupted_append_keeps_only_complete_rows,
    check_resume_after_interrupt_reuses_complete_rows,
)
from test_cache_files import (  # noqa: E402
    check_a_reader_without_the_lock_modifies_nothing,
    check_fsync_before_n_complete_and_before_renames,
    check_rebuild_keeps_permissions,
    check_rows_from_other_versions_warn,
)
from test_extract import check_max_pooling_is_the_maximum  # noqa: E402
from test_featurize_races import (  # noqa: E402
    check_a_weights_file_swapped_after_fit_is_refused_not_stored_under_the_old_identity,
    check_exif_orientation_is_applied_and_part_of_the_cache_key,
    check_palette_images_with_equal_indices_but_other_palettes_are_not_confused,
)

CAUGHT = (AssertionError, pytest.fail.Exception)


def _max_is_mean(monkeypatch):
    monkeypatch.setitem(POOLINGS, "max", Pooling("max", lambda c, hw, k: c, lambda x, k: x.mean(dim=(2, 3))))


def _n_complete_before_rows(monkeypatch):
    real = FeatureCache._write

    def write(f, name, data, start, stop):
        if name == "versions":  # the first dataset an append writes
            f.attrs["n_complete"] = stop
        real(f, name, data, start, stop)

    monkeypatch.setattr(FeatureCache, "_write", staticmethod(write))


def _resume_recomputes_everything(monkeypatch):
    real, calls = FeatureCache.lookup, []

    def lookup(self, keys):  # the lookup before the forward finds nothing; the one after it works
        calls.append(keys)
        found = real(self, keys)
        return found * 0 - 1 if len(calls) % 2 else found

    monkeypatch.setattr(FeatureCache, "lookup", lookup)


def _stored_rows_reversed(monkeypatch):
    real = FeatureCache.append

    def append(self, keys, paths, features, **kwargs):  # each row stored under the key of another image of its batch
        real(self, keys, paths, {c: v[::-1].copy() for c, v in features.items()}, **kwargs)

    monkeypatch.setattr(FeatureCache, "append", append)


def _rebuild_forgets_permissions(monkeypatch):
    monkeypatch.setattr(durable_module, "copy_ownership", lambda src, dst: None)


def _no_fsync(monkeypatch):
    monkeypatch.setattr(cache_module, "_sync", lambda f: f.flush())


def _lockless_reader_repairs(monkeypatch):
    @contextmanager
    def reading(self):
        with self._locked(), self._open("r") as f:
            yield f

    monkeypatch.setattr(FeatureCache, "_reading", reading)


def _versions_ignored(monkeypatch):
    monkeypatch.setattr(FeatureCache, "_check_versions", lambda self, f, rows: None)


def _exif_ignored(monkeypatch):
    monkeypatch.setattr(images_module, "_rgb", lambda image: image.convert("RGB"))


def _palette_ignored(monkeypatch):
    real = images_module._rgb
    monkeypatch.setattr(images_module, "_rgb", lambda image: Image.fromarray(np.asarray(image)).convert("RGB")
                        if image.mode == "P" else real(image))


def _weights_not_verified(monkeypatch):
    monkeypatch.setattr(torchvision_family, "read_verified", lambda resolved, path: path.read_bytes())


@pytest.fixture
def paths(image_folder):
    return image_folder[1]


FAULTS = {
    "max pooling returns the mean": (_max_is_mean, lambda tmp_path, mp, **_: check_max_pooling_is_the_maximum()),
    "n_complete raised before the row writes": (
        _n_complete_before_rows,
        lambda tmp_path, mp, **_: check_interrupted_append_keeps_only_complete_rows(tmp_path, mp)),
    "a resume recomputes every row": (
        _resume_recomputes_everything,
        lambda tmp_path, mp, paths, **_: check_resume_after_interrupt_reuses_complete_rows(tmp_path, paths, mp)),
    "a resume stores rows under other images' keys": (
        _stored_rows_reversed,
        lambda tmp_path, mp, paths, **_: check_resume_after_interrupt_reuses_complete_rows(tmp_path, paths, mp)),
    "a rebuild forgets the file's permissions": (
        _rebuild_forgets_permissions, lambda tmp_path, mp, **_: check_rebuild_keeps_permissions(tmp_path)),
    "no fsync before n_complete": (
        _no_fsync, lambda tmp_path, mp, **_: check_fsync_before_n_complete_and_before_renames(tmp_path, mp)),
    "a reader without the lock repairs the file": (
        _lockless_reader_repairs,
        lambda tmp_path, mp, **_: check_a_reader_without_the_lock_modifies_nothing(tmp_path, mp)),
    "rows of other library versions read silently": (
        _versions_ignored, lambda tmp_path, mp, **_: check_rows_from_other_versions_warn(tmp_path, mp)),
    "EXIF orientation ignored": (
        _exif_ignored, lambda tmp_path, mp, arrays, **_: check_exif_orientation_is_applied_and_part_of_the_cache_key(
            tmp_path, arrays)),
    "palette ignored by the content key": (
        _palette_ignored, lambda tmp_path, mp, **_:
        check_palette_images_with_equal_indices_but_other_palettes_are_not_confused(tmp_path, mp)),
    "a swapped weights file is loaded unverified": (
        _weights_not_verified, lambda tmp_path, mp, arrays, **_:
        check_a_weights_file_swapped_after_fit_is_refused_not_stored_under_the_old_identity(tmp_path, arrays)),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_check_catches_the_planted_fault(fault, tmp_path, monkeypatch, paths, two_class_arrays):
    torch.manual_seed(0)
    plant, check = FAULTS[fault]
    plant(monkeypatch)
    with pytest.raises(CAUGHT):
        check(tmp_path, monkeypatch, paths=paths, arrays=two_class_arrays)


@pytest.fixture(scope="module")
def shard_features() -> dict[str, np.ndarray]:
    """Features (layer2, layer4, fc; resnet18 random-init, 32 px) of tests/test_shards.py's 13 images: all in one
    batch, in batches of 1 and of 3 on one thread, and with bicubic instead of bilinear resizing."""
    images = make_two_class_images(7, size=(40, 44), seed=3)[0][:13]
    kw = dict(layers=["layer2", "layer4", "fc"], weights=None, image_size=32, num_workers=0)
    out = {"all": CNNFeaturizer("resnet18", batch_size=13, **kw).fit().transform(images)}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for batch in (1, 3):
            out[f"batch {batch}"] = CNNFeaturizer("resnet18", batch_size=batch, **kw).fit().transform(images)
    finally:
        torch.set_num_threads(threads)
    bicubic = CNNFeaturizer("resnet18", batch_size=13, **kw).fit()
    bicubic.preprocessing_ = dataclasses.replace(bicubic.preprocessing_, interpolation="bicubic")
    out["bicubic"] = bicubic.transform(images)
    return out


def test_the_feature_tolerance_accepts_the_noise_of_other_batches_and_thread_counts(shard_features):
    for run in ("batch 1", "batch 3"):
        assert_features_close(shard_features[run], shard_features["all"], err_msg=run)


# wrong features a resumed or stitched cache could hold: (reference features, bicubic ones) -> faulty features
WRONG_FEATURES = {
    "two rows swapped": lambda x, bicubic: x[[1, 0, *range(2, len(x))]],
    "a row holds another image's features": lambda x, bicubic: np.concatenate([x[:-1], x[-2:-1]]),
    "bicubic instead of bilinear resizing": lambda x, bicubic: bicubic,
}


@pytest.mark.parametrize("fault", list(WRONG_FEATURES))
def test_the_feature_tolerance_catches_wrong_features(shard_features, fault):
    wrong = WRONG_FEATURES[fault](shard_features["batch 1"], shard_features["bicubic"])
    assert np.abs(wrong - shard_features["all"]).max() > 10 * FEATURE_NOISE * np.abs(shard_features["all"]).max()
    with pytest.raises(AssertionError):
        assert_features_close(wrong, shard_features["all"])

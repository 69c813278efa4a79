"""Repeated splits: sizes, stratification, determinism, nesting and errors."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.datasets import ImageSet
from pipelines.splits import (Split, default_train_sizes, imageset_design, max_train_size, parse_train_sizes,
                              repeated_splits)


def _imageset(counts_train, counts_val=None) -> ImageSet:
    labels, subset = [], []
    for c, n in enumerate(counts_train):
        labels += [c] * n
        subset += ["train"] * n
    if counts_val is not None:
        for c, n in enumerate(counts_val):
            labels += [c] * n
            subset += ["val"] * n
    labels = np.array(labels)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(labels))
    classes = [f"c{c}" for c in range(len(counts_train))]
    return ImageSet(
        "toy",
        [f"img{i}.png" for i in range(len(labels))],
        labels[order],
        classes,
        np.array(subset)[order] if counts_val is not None else None,
        ".",
    )


@pytest.fixture
def fixed():
    return _imageset([12, 10], [7, 9])


@pytest.fixture
def free():
    return _imageset([20, 14, 10])


def test_fixed_split_sizes_and_subsets(fixed):
    splits = list(repeated_splits(fixed, [2, 5, "all"], n_splits=3, seed=0))
    assert [(s.train_size, s.split) for s in splits] == [(t, k) for t in (2, 5, 12) for k in range(3)]
    for s in splits:
        assert isinstance(s, Split)
        assert set(fixed.subset[s.train_idx]) == {"train"} and set(fixed.subset[s.test_idx]) == {"val"}
        assert len(np.unique(s.train_idx)) == len(s.train_idx)
        expected = [12, 10] if s.train_size == 12 else [s.train_size] * 2
        assert np.bincount(fixed.labels[s.train_idx]).tolist() == expected
        assert np.bincount(fixed.labels[s.test_idx]).tolist() == [7, 9]
        assert np.all(np.diff(s.train_idx) > 0) and np.all(np.diff(s.test_idx) >= 0)


def test_fixed_split_test_is_bootstrap_shared_across_sizes(fixed):
    splits = list(repeated_splits(fixed, [3, "all"], n_splits=4, seed=5, bootstrap_test=True))
    by_key = {(s.train_size, s.split): s for s in splits}
    tests = [by_key[(3, k)].test_idx for k in range(4)]
    assert any(len(np.unique(t)) < len(t) for t in tests), "bootstrap should repeat some val images"
    assert not all(np.array_equal(tests[0], t) for t in tests[1:])
    for k in range(4):
        np.testing.assert_array_equal(by_key[(3, k)].test_idx, by_key[(12, k)].test_idx)
        np.testing.assert_array_equal(by_key[(12, k)].train_idx, np.flatnonzero(fixed.subset == "train"))
    plain = next(iter(repeated_splits(fixed, [3], n_splits=1, bootstrap_test=False)))
    np.testing.assert_array_equal(plain.test_idx, np.flatnonzero(fixed.subset == "val"))


def test_fixed_test_design_scores_every_draw_on_the_whole_val_subset(fixed, free):
    val = np.flatnonzero(fixed.subset == "val")
    draws = list(repeated_splits(fixed, [3, "all"], n_splits=3, seed=5))
    for split in draws:
        np.testing.assert_array_equal(split.test_idx, val)
    assert len({tuple(s.train_idx) for s in draws if s.train_size == 3}) == 3, "training draws differ"
    assert imageset_design(fixed) == "fixed_test" and imageset_design(free) == "resampled"
    assert default_train_sizes(fixed) == [s for s in (5, 10, 20, 50) if s < max_train_size(fixed)] + ["all"]


def test_free_split_is_stratified_and_disjoint(free):
    assert max_train_size(free) == 7
    for s in repeated_splits(free, [4, "all"], n_splits=3, seed=2):
        assert not set(s.train_idx) & set(s.test_idx)
        assert np.bincount(free.labels[s.test_idx]).tolist() == [6, 4, 3]
        train_counts = np.bincount(free.labels[s.train_idx]).tolist()
        assert train_counts == ([4, 4, 4] if s.train_size == 4 else [14, 10, 7])
        assert len(np.unique(s.test_idx)) == len(s.test_idx)


def test_splits_are_deterministic_and_nested(free, fixed):
    for imageset in (free, fixed):
        a = list(repeated_splits(imageset, [2, 6], n_splits=3, seed=7))
        b = list(repeated_splits(imageset, [2, 6], n_splits=3, seed=7))
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.train_idx, y.train_idx)
            np.testing.assert_array_equal(x.test_idx, y.test_idx)
        small, large = a[:3], a[3:]
        for s, big in zip(small, large):
            assert set(s.train_idx) <= set(big.train_idx)
        assert len({tuple(s.train_idx) for s in small}) > 1, "repetitions should differ"
        other = list(repeated_splits(imageset, [2, 6], n_splits=3, seed=8))
        assert any(not np.array_equal(x.train_idx, y.train_idx) for x, y in zip(a, other))


def test_single_split_equals_prefix_of_more_splits(fixed):
    one = list(repeated_splits(fixed, [4], n_splits=1, seed=3))[0]
    many = list(repeated_splits(fixed, [4], n_splits=5, seed=3))[0]
    np.testing.assert_array_equal(one.train_idx, many.train_idx)
    np.testing.assert_array_equal(one.test_idx, many.test_idx)


def test_size_errors_name_size_and_maximum(fixed, free):
    with pytest.raises(ValueError, match="train_size 11 .* 10 training images .*'c1'"):
        repeated_splits(fixed, [2, 11], n_splits=2)
    with pytest.raises(ValueError, match="train_size 8 .* 7 training images"):
        repeated_splits(free, [8])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"train_sizes": [0]}, "positive integer"),
        ({"train_sizes": ["five"]}, "positive integer"),
        ({"train_sizes": [True]}, "positive integer"),
        ({"train_sizes": []}, "empty"),
        ({"n_splits": 0}, "n_splits"),
        ({"seed": -1}, "seed"),
        ({"test_fraction": 1.0}, "test_fraction"),
    ],
)
def test_parameter_errors(free, kwargs, message):
    params = {"train_sizes": [2], "n_splits": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        repeated_splits(free, **params)


def test_class_without_training_images():
    imageset = _imageset([5, 0], [3, 3])
    with pytest.raises(ValueError, match=r"\['c1'\] have no training images"):
        repeated_splits(imageset, [2])


def test_parse_train_sizes():
    assert parse_train_sizes(["5", "10,20", " ALL ", "5"]) == [5, 10, 20, "all"]
    assert parse_train_sizes([3]) == [3]
    for bad, message in ((["x"], "'x'"), (["-2"], "-2"), ([""], "empty"), (["0"], "positive")):
        with pytest.raises(ValueError, match=message):
            parse_train_sizes(bad)


def test_an_integer_size_equal_to_all_is_one_size():
    balanced = _imageset([6, 6], [3, 3])
    splits = list(repeated_splits(balanced, [6, "all"], n_splits=2))
    assert [s.train_size for s in splits] == [6, 6] and [s.split for s in splits] == [0, 1]

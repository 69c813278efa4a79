"""Repeated train/test splits at several training-set sizes, identical for every method (paired comparisons)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from pipelines.datasets import ImageSet
from reports.stats import DESIGNS as EVALUATION_DESIGNS

__all__ = ["DESIGNS", "DEFAULT_TRAIN_SIZES", "Split", "default_train_sizes", "imageset_design", "parse_train_sizes",
           "repeated_splits", "max_train_size"]

DESIGNS = {name: design.description for name, design in EVALUATION_DESIGNS.items()}
"""The two evaluation designs, described (their statistics are :data:`reports.stats.DESIGNS`)."""

DEFAULT_TRAIN_SIZES = (5, 10, 20, 50)
"""Images per class of the default learning curve (sizes the dataset cannot provide are left out), then "all"."""


@dataclass(frozen=True)
class Split:
    """One training-set size × one repetition.

    Attributes
    ----------
    train_size : int
        Training images per class (for "all": the largest class's count).
    split : int
        Repetition number, 0-based.
    train_idx, test_idx : ndarray of int
        Sorted indices into the ImageSet; ``test_idx`` repeats indices only with ``bootstrap_test=True``.
    """

    train_size: int
    split: int
    train_idx: np.ndarray
    test_idx: np.ndarray


def parse_train_sizes(values: Iterable[str | int] | str | int) -> list[int | str]:
    """Parse training sizes: positive integers (images per class) or "all"; commas also separate.

    Parameters
    ----------
    values : iterable of str or int, or one of them
        E.g. ``["5", "10,20", "all"]`` or ``[5, 10, "all"]``.

    Returns
    -------
    list of int or "all"
        In the given order, duplicates dropped.

    Raises
    ------
    ValueError
        An entry that is neither a positive integer nor "all", or no entry at all.
    """
    if isinstance(values, (str, Integral)):
        values = [values]
    sizes: list[int | str] = []
    for value in values:
        for token in str(value).split(","):
            token = token.strip().lower()
            if not token:
                continue
            if token == "all":
                size: int | str = "all"
            else:
                try:
                    size = int(token)
                except ValueError:
                    raise ValueError(f"train_sizes: {token!r} is neither a positive integer nor 'all'") from None
                if size < 1:
                    raise ValueError(f"train_sizes: {size} is not a positive integer (images per class) or 'all'")
            if size not in sizes:
                sizes.append(size)
    if not sizes:
        raise ValueError("train_sizes is empty; give positive integers (images per class) and/or 'all'")
    return sizes


def _class_indices(imageset: ImageSet, mask: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(mask & (imageset.labels == c)) for c in range(len(imageset.classes))]


def _n_test(n: int, test_fraction: float) -> int:
    return min(n - 1, max(1, int(round(test_fraction * n))))


def _pools(imageset: ImageSet, test_fraction: float) -> list[int]:
    """Training images available per class."""
    if imageset.subset is not None:
        return [len(idx) for idx in _class_indices(imageset, imageset.subset == "train")]
    counts = np.bincount(imageset.labels, minlength=len(imageset.classes))
    return [int(n) - _n_test(int(n), test_fraction) if n >= 2 else 0 for n in counts]


def imageset_design(imageset: ImageSet) -> str:
    """``"fixed_test"`` when the set comes with a val subset, else ``"resampled"`` (see :data:`DESIGNS`)."""
    return "fixed_test" if imageset.has_split else "resampled"


def default_train_sizes(imageset: ImageSet, test_fraction: float = 0.3) -> list[int | str]:
    """:data:`DEFAULT_TRAIN_SIZES` smaller than what ``imageset`` provides per class, then ``"all"``."""
    available = max_train_size(imageset, test_fraction)
    return [s for s in DEFAULT_TRAIN_SIZES if s < available] + ["all"]


def max_train_size(imageset: ImageSet, test_fraction: float = 0.3) -> int:
    """The largest integer ``train_size`` that :func:`repeated_splits` accepts for ``imageset``."""
    return min(_pools(imageset, test_fraction))


def repeated_splits(
    imageset: ImageSet,
    train_sizes: Sequence[int | str],
    n_splits: int = 5,
    seed: int = 0,
    *,
    test_fraction: float = 0.3,
    bootstrap_test: bool = False,
) -> Iterator[Split]:
    """Training subsets of several sizes, repeated ``n_splits`` times, with their test sets.

    With a fixed split (``imageset.subset``, the "fixed_test" design), training images are drawn per class without
    replacement from the train subset (all of it for "all"), and every repetition is tested on the whole val subset
    (a per-class bootstrap resample of it with ``bootstrap_test=True``).
    Without a fixed split, each repetition holds out ``test_fraction`` of every class as the test set and draws the
    training images per class from the rest.

    Indices depend only on ``(seed, split)`` and the size: every method sees the same splits, so paired tests are
    valid; the test set of a repetition is the same for every size, and smaller training sets are subsets of
    larger ones.

    Parameters
    ----------
    imageset : ImageSet
        The dataset.
    train_sizes : sequence of int or "all"
        Training images per class.
    n_splits : int, default=5
        Repetitions per size.
    seed : int, default=0
        Base seed.
    test_fraction : float, default=0.3
        Share of each class held out when the set has no fixed split.
    bootstrap_test : bool, default=False
        Resample the fixed val subset with replacement per repetition (the intervals of reports.stats assume the
        whole val subset; bootstrapped test sets are for studying the procedure itself).

    Returns
    -------
    iterator of Split
        Sizes in the given order, repetitions 0..n_splits-1 within each size.

    Raises
    ------
    ValueError
        Bad ``train_sizes``, ``n_splits`` or ``test_fraction``; a size larger than the images available per class;
        a class without training images or an empty val subset.
    """
    sizes = parse_train_sizes(train_sizes)
    if not isinstance(n_splits, Integral) or isinstance(n_splits, bool) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer; got {n_splits!r}")
    if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction!r}")
    pools = _pools(imageset, test_fraction)
    empty = [name for name, n in zip(imageset.classes, pools) if n == 0]
    if empty:
        raise ValueError(f"{imageset.name}: classes {empty} have no training images available")
    if imageset.subset is not None and not (imageset.subset == "val").any():
        raise ValueError(f"{imageset.name}: the val subset is empty")
    available = min(pools)
    for size in sizes:
        if size != "all" and size > available:
            smallest = imageset.classes[int(np.argmin(pools))]
            raise ValueError(
                f"train_size {size} is larger than the {available} training images available per class in "
                f"{imageset.name} (class {smallest!r}); use at most {available} or 'all'"
            )
    if "all" in sizes and max(pools) in sizes:
        sizes = [s for s in sizes if s != "all"]  # every class has exactly that many: "all" is the same draw
    return _generate(imageset, sizes, int(n_splits), int(seed), test_fraction, bootstrap_test, max(pools))


def _generate(
    imageset: ImageSet,
    sizes: list[int | str],
    n_splits: int,
    seed: int,
    test_fraction: float,
    bootstrap_test: bool,
    largest: int,
) -> Iterator[Split]:
    draws = [_draw(imageset, seed, split, test_fraction, bootstrap_test) for split in range(n_splits)]
    for size in sizes:
        for split, (train_perms, test_idx) in enumerate(draws):
            k = None if size == "all" else size
            train_idx = np.sort(np.concatenate([perm[:k] for perm in train_perms]))
            yield Split(largest if size == "all" else size, split, train_idx, test_idx)


def _draw(
    imageset: ImageSet, seed: int, split: int, test_fraction: float, bootstrap_test: bool
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-class permutations of the training pool and the test indices of one repetition."""
    if imageset.subset is not None:
        train_rng = np.random.default_rng([seed, split, 0])
        test_rng = np.random.default_rng([seed, split, 1])
        perms = [train_rng.permutation(idx) for idx in _class_indices(imageset, imageset.subset == "train")]
        val = _class_indices(imageset, imageset.subset == "val")
        if bootstrap_test:
            val = [test_rng.choice(idx, size=len(idx), replace=True) for idx in val if len(idx)]
        return perms, np.sort(np.concatenate(val))
    rng = np.random.default_rng([seed, split])
    perms, tests = [], []
    for idx in _class_indices(imageset, np.ones(len(imageset), dtype=bool)):
        perm = rng.permutation(idx)
        n_test = _n_test(len(idx), test_fraction)
        tests.append(perm[:n_test])
        perms.append(perm[n_test:])
    return perms, np.sort(np.concatenate(tests))

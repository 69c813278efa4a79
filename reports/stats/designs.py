"""The evaluation designs as objects: each knows its accuracy interval, its paired test and its crossover resampling.

``"fixed_test"`` (:class:`FixedTestDesign`)
    A fixed test set (hymenoptera ``val/``); every training draw (split) is scored on the whole test set: two-level
    intervals over the (splits × test images) correctness matrix, paired differences on the same images, a two-way
    bootstrap (draws × images) for the crossover.
``"resampled"`` (:class:`ResampledDesign`)
    Random train/test splits of one pool: the Nadeau–Bengio corrected resampled t over per-split accuracies and
    paired differences, a split bootstrap scaled by the Nadeau–Bengio factor for the crossover.

Each is registered once in :data:`DESIGNS`; the ``design`` column of the results names it (:func:`design_of`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from featurize.registry import Registry
from reports.stats.correctness import Correctness
from reports.stats.intervals import (
    NOT_TESTABLE,
    IntervalRecord,
    image_bound_interval,
    interval_record,
    resampled_interval,
    resampling_overlap,
    two_level_interval,
    wilson_ci,
)
from reports.stats.schema import matching, nanmean, norm
from reports.stats.significance import paired_difference, paired_interval

__all__ = ["DESIGNS", "Design", "FixedTestDesign", "PairedData", "PairedResult", "ResampledDesign", "SizeComparison",
           "SizeData", "design_of"]


@dataclass(frozen=True)
class PairedData:
    """A configuration and the reference in one stratum: the per-split accuracy differences (configuration −
    reference, on the splits both have), their correctness matrices (fixed test set; None without predictions) and
    the stratum's ``n_test / n_train``."""

    differences: np.ndarray
    matrix: Correctness | None
    reference_matrix: Correctness | None
    overlap: float


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison: the interval record of the difference, the test's p-value and name, the number of
    paired draws, and the Wilcoxon p-value (resampled design, indicative; NaN otherwise)."""

    record: IntervalRecord
    p: float
    test: str
    n_pairs: int
    wilcoxon_p: float = math.nan


@dataclass(frozen=True)
class SizeData:
    """Paired fine-tuning − frozen data at one train size: ``diff[j, n]`` (fixed test) or ``diff[j]``."""

    size: float
    splits: np.ndarray
    index: np.ndarray | None
    y_true: np.ndarray | None
    diff: np.ndarray
    overlap: float


@dataclass(frozen=True)
class SizeComparison:
    """The paired data of one train size, the interval of its mean difference and the two mean accuracies."""

    data: SizeData
    record: IntervalRecord
    frozen_accuracy: float
    finetune_accuracy: float


def _draw_weights(ids: np.ndarray, counts: np.ndarray, item: SizeData) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap weights of the draws of one size (resamples × its splits) and their totals."""
    weights = counts[:, np.searchsorted(ids, item.splits)]
    return weights, weights.sum(axis=1)


class Design(ABC):
    """An evaluation design: how a configuration's accuracy, a paired difference and the crossover are assessed."""

    name: str
    description: str
    needs_predictions: bool
    """Whether the paired analyses need the predictions table."""
    crossover_method: str
    min_bootstrap_draws: int
    """Distinct draws below which the crossover bootstrap has nothing to resample."""

    @abstractmethod
    def accuracy_intervals(self, group: pd.DataFrame, matrix: Correctness | None, level: float
                           ) -> tuple[IntervalRecord, IntervalRecord]:
        """(accuracy, balanced accuracy) interval records of one configuration × train size."""

    @abstractmethod
    def paired(self, data: PairedData, level: float) -> PairedResult:
        """Interval and test of a configuration − reference difference."""

    @abstractmethod
    def size_comparison(self, group: pd.DataFrame, frozen: dict, tuned: dict, matrices: dict[tuple, Correctness],
                        size_key: object, size: float) -> SizeComparison | None:
        """Fine-tuning − frozen at one train size from the rows of both families (None when nothing pairs)."""

    @abstractmethod
    def size_data(self, size: float, difference: np.ndarray, classes: Sequence | None, overlap: float) -> SizeData:
        """Array-level paired data of one size: draw ids ``0..J-1`` (and image ids ``0..N-1``)."""

    @abstractmethod
    def bootstrap_differences(self, items: list[SizeData], ids: np.ndarray, counts: np.ndarray,
                              rng: np.random.Generator) -> np.ndarray:
        """Resampled mean differences (resamples × sizes) from the draw counts (resamples × ``ids``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FixedTestDesign(Design):
    """A fixed test set scored by every training draw: two-level intervals, paired correctness, two-way bootstrap."""

    name = "fixed_test"
    description = "a fixed test set (the dataset's val/ subset): every training draw is scored on all of it"
    needs_predictions = True
    crossover_method = "two-way bootstrap over splits × test images"
    min_bootstrap_draws = 0  # the test images are resampled even with a single draw

    def accuracy_intervals(self, group: pd.DataFrame, matrix: Correctness | None, level: float
                           ) -> tuple[IntervalRecord, IntervalRecord]:
        if matrix is not None:
            return (two_level_interval(matrix.correct, matrix.y_true, level=level),
                    two_level_interval(matrix.correct, matrix.y_true, balanced=True, level=level))
        balanced = interval_record(nanmean(group, "balanced_accuracy"), math.nan, math.nan, level, "none",
                                   f"{NOT_TESTABLE}: the balanced-accuracy interval needs predictions")
        n_test = float(group["n_test"].astype(float).mean()) if "n_test" in group else math.nan
        return image_bound_interval(group["accuracy"].astype(float).to_numpy(), n_test, level), balanced

    def paired(self, data: PairedData, level: float) -> PairedResult:
        a, b = data.matrix, data.reference_matrix
        if a is None or b is None:
            record = interval_record(math.nan, math.nan, math.nan, level, "none",
                                     f"{NOT_TESTABLE}: the fixed-test comparison needs predictions of both "
                                     "configurations")
            return PairedResult(record, math.nan, "none", 0)
        splits, _, y, ca, cb = a.aligned(b)
        if splits.size == 0 or y.size == 0:
            record = interval_record(math.nan, math.nan, math.nan, level, "none",
                                     f"{NOT_TESTABLE}: no shared split/images")
            return PairedResult(record, math.nan, "none", 0)
        record = paired_interval(ca, cb, y, level=level)
        return PairedResult(record, record["p"], record["test"], int(splits.size))

    def size_comparison(self, group: pd.DataFrame, frozen: dict, tuned: dict, matrices: dict[tuple, Correctness],
                        size_key: object, size: float) -> SizeComparison | None:
        m_fr = matrices.get(tuple(norm(v) for v in frozen.values()) + (norm(size_key),))
        m_ft = matrices.get(tuple(norm(v) for v in tuned.values()) + (norm(size_key),))
        if m_fr is None or m_ft is None:
            return None
        splits, index, y, c_ft, c_fr = m_ft.aligned(m_fr)
        if splits.size == 0 or index.size == 0:
            return None
        item = SizeData(size, splits, index, y, c_ft - c_fr, 0.0)
        return SizeComparison(item, two_level_interval(item.diff, y, scale="raw"), float(c_fr.mean()),
                              float(c_ft.mean()))

    def size_data(self, size: float, difference: np.ndarray, classes: Sequence | None, overlap: float) -> SizeData:
        d = np.atleast_2d(difference)
        y = np.zeros(d.shape[1], dtype=int) if classes is None else np.asarray(classes)
        return SizeData(float(size), np.arange(d.shape[0]), np.arange(d.shape[1]), y, d, 0.0)

    def bootstrap_differences(self, items: list[SizeData], ids: np.ndarray, counts: np.ndarray,
                              rng: np.random.Generator) -> np.ndarray:
        """Draws resampled jointly across sizes and test images too (stratified by class, the same images for
        every size); NaN where a resample holds no draw of a size."""
        n_boot = counts.shape[0]
        index = items[0].index
        for it in items[1:]:
            index = np.intersect1d(index, it.index)
        y = items[0].y_true[np.searchsorted(items[0].index, index)]
        image_weights = np.zeros((n_boot, index.size))
        for c in np.unique(y):
            cols = np.flatnonzero(y == c)
            image_weights[:, cols] = rng.multinomial(cols.size, np.full(cols.size, 1.0 / cols.size), size=n_boot)
        out = np.empty((n_boot, len(items)))
        for s, it in enumerate(items):
            weights, total = _draw_weights(ids, counts, it)
            with np.errstate(invalid="ignore", divide="ignore"):
                d = it.diff[:, np.searchsorted(it.index, index)]
                out[:, s] = ((weights @ d) * image_weights).sum(axis=1) / (total * index.size)
        return out


class ResampledDesign(Design):
    """Random train/test splits of one pool: Nadeau–Bengio corrected resampled t, scaled split bootstrap."""

    name = "resampled"
    description = "random train/test splits of one pool: each repetition holds out a new test set"
    needs_predictions = False
    crossover_method = "bootstrap over splits, deviations scaled by the Nadeau–Bengio factor"
    min_bootstrap_draws = 2

    def accuracy_intervals(self, group: pd.DataFrame, matrix: Correctness | None, level: float
                           ) -> tuple[IntervalRecord, IntervalRecord]:
        overlap = resampling_overlap(group)
        acc = resampled_interval(group["accuracy"], overlap, level)
        counts = {"n_correct", "n_test"} <= set(group.columns) and group[["n_correct", "n_test"]].notna().all().all()
        if math.isnan(acc["ci_low"]) and counts and not math.isnan(acc["estimate"]):
            k, n = (int(round(float(group[c].astype(float).mean()))) for c in ("n_correct", "n_test"))
            low, high = wilson_ci(min(k, n), n, level)
            one = len(group) == 1
            acc.update(ci_low=low, ci_high=high, method="Wilson (one split)" if one else "Wilson (one split's counts)",
                       note="one split: the interval covers test-image sampling only" if one else
                       "the same accuracy on every split: Wilson interval of one split's counts (conservative)")
        balanced = group["balanced_accuracy"] if "balanced_accuracy" in group else [math.nan] * len(group)
        return acc, resampled_interval(balanced, overlap, level)

    def paired(self, data: PairedData, level: float) -> PairedResult:
        tests = paired_difference(data.differences, level, data.overlap)
        test = "resampled t (Nadeau–Bengio)"
        record: IntervalRecord = {"estimate": tests["diff"], "se": tests["se"], "df": tests["df"],
                                  "ci_low": tests["diff_ci_low"], "ci_high": tests["diff_ci_high"], "method": test,
                                  "note": tests["note"]}
        return PairedResult(record, tests["t_p"], test, int(data.differences.size), tests["wilcoxon_p"])

    def size_comparison(self, group: pd.DataFrame, frozen: dict, tuned: dict, matrices: dict[tuple, Correctness],
                        size_key: object, size: float) -> SizeComparison | None:
        def per_split(cfg: dict) -> pd.Series:
            hit = matching(group, cfg)
            return hit.groupby("split")["accuracy"].mean()

        fr, ft = per_split(frozen), per_split(tuned)
        common = fr.index.intersection(ft.index)
        if common.empty:
            return None
        item = SizeData(size, np.asarray(common), None, None, (ft[common] - fr[common]).to_numpy(),
                        resampling_overlap(group))
        return SizeComparison(item, resampled_interval(item.diff, item.overlap, scale="raw"),
                              float(fr[common].mean()), float(ft[common].mean()))

    def size_data(self, size: float, difference: np.ndarray, classes: Sequence | None, overlap: float) -> SizeData:
        return SizeData(float(size), np.arange(difference.size), None, None, difference, float(overlap))

    def bootstrap_differences(self, items: list[SizeData], ids: np.ndarray, counts: np.ndarray,
                              rng: np.random.Generator) -> np.ndarray:
        """Draws resampled jointly across sizes, each size's deviations from its mean scaled by the Nadeau–Bengio
        factor ``sqrt(1 + J · n_test/n_train)``; NaN where a resample holds no draw of a size."""
        out = np.empty((counts.shape[0], len(items)))
        for s, it in enumerate(items):
            weights, total = _draw_weights(ids, counts, it)
            with np.errstate(invalid="ignore", divide="ignore"):
                boot = weights @ it.diff / total
                centre = float(it.diff.mean())
                out[:, s] = centre + math.sqrt(1 + it.splits.size * it.overlap) * (boot - centre)
        return out


DESIGNS: Registry[Design] = Registry("evaluation design")
"""The evaluation designs by name (the values of the results' ``design`` column)."""
DESIGNS.register(FixedTestDesign.name, FixedTestDesign())
DESIGNS.register(ResampledDesign.name, ResampledDesign())


def design_of(rows: pd.DataFrame) -> str:
    """The evaluation design of a group of rows: its ``design`` column (``"resampled"`` when absent).

    Raises ValueError on an unknown value or on a group that mixes designs.
    """
    if "design" not in rows.columns or rows["design"].isna().all():
        return "resampled"
    values = set(rows["design"].dropna().astype(str))
    unknown = values - set(DESIGNS)
    if unknown or len(values) > 1:
        raise ValueError(f"results column 'design' must hold one of {list(DESIGNS)} per group; got {sorted(values)}")
    return values.pop()

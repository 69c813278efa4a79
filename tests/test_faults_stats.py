"""Planted faults in reports.stats: each behavioural check of test_stats / test_simulation must catch its fault."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports import stats
from test_simulation import coverage, crossover_coverage
from test_stats import check_nadeau_bengio, check_selection_blind_to_test, fixed_tables


def check_identical_splits_interval() -> None:
    """Identical predictions on every split (same training set, deterministic model): the interval is the test
    images' one, ``p(1 − p)/(N − 1)``, not zero and not NaN."""
    labels = np.repeat([0, 1], [70, 83])
    row = (np.arange(153) % 8 != 0).astype(float)
    results, predictions = fixed_tables({("a", "frozen", 120): np.tile(row, (10, 1))}, labels)
    summary = stats.summarize(results, predictions).iloc[0]
    p = row.mean()
    half = (summary["ci_high_raw"] - summary["ci_low_raw"]) / 2
    assert half == pytest.approx(1.97 * math.sqrt(p * (1 - p) / 152), rel=0.03)


def check_coverage(setting: str) -> None:
    cover, _ = coverage(setting)
    assert 0.92 <= cover <= 0.98, f"coverage {cover:.3f} at {setting}"


def _split_term_only(original):
    def planted(matrix, classes=None, *, balanced=False, level=0.95):
        r = original(matrix, classes, balanced=balanced, level=level)
        se = math.sqrt(r["var_splits"]) if r["var_splits"] > 0 else math.nan
        return stats._interval(r["estimate"], se, r["n_splits"] - 1, level, r["method"])
    return planted


def _image_term_only(original):
    def planted(matrix, classes=None, *, balanced=False, level=0.95):
        r = original(matrix, classes, balanced=balanced, level=level)
        return stats._interval(r["estimate"], math.sqrt(r["var_images"]), r["n_images"] - 1, level, r["method"])
    return planted


def _uncorrected(original):
    def planted(values, overlap, level=0.95):
        return original(values, 0.0, level)
    return planted


def _uncorrected_paired(original):
    def planted(diff, level=0.95, overlap=0.0):
        return original(diff, level, 0.0)
    return planted


def _select_on_test(original):
    def planted(results, within=("train_size",), by="selection_score", fixed=None):
        return original(results.assign(selection_score=results["accuracy"]), within, by, fixed)
    return planted


def _drop_unreached(original):
    def planted(log_sizes, diffs):
        out = original(log_sizes, diffs)
        return np.where(np.isinf(out), np.nan, out)
    return planted


FAULTS = {
    "image component dropped (identical splits)": ("two_level_interval", _split_term_only,
                                                   check_identical_splits_interval),
    "image component dropped (coverage at all)": ("two_level_interval", _split_term_only,
                                                  lambda: check_coverage("all")),
    "split component dropped (coverage at 5/class)": ("two_level_interval", _image_term_only,
                                                      lambda: check_coverage("5/class")),
    "Nadeau-Bengio correction removed": ("resampled_interval", _uncorrected, check_nadeau_bengio),
    "Nadeau-Bengio correction removed from the paired t": ("paired_difference", _uncorrected_paired,
                                                           check_nadeau_bengio),
    "selection by test accuracy": ("select_best", _select_on_test, check_selection_blind_to_test),
    "resamples without a crossing dropped": ("_first_crossings", _drop_unreached,
                                             lambda: crossover_coverage(n_experiments=20, n_boot=200)),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_check_passes_without_the_fault(fault):
    FAULTS[fault][2]()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_check_catches_the_planted_fault(fault, monkeypatch):
    name, plant, check = FAULTS[fault]
    monkeypatch.setattr(stats, name, plant(getattr(stats, name)))
    with pytest.raises(AssertionError):
        check()

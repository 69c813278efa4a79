"""Planted faults in reports.stats: each behavioural check of test_stats / test_simulation must catch its fault."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import test_simulation as sim
from test_stats import (
    check_bootstrap_keeps_two_draws,
    check_holm_within_a_train_size,
    check_nadeau_bengio,
    check_no_verdict_from_few_draws,
    check_numerics_are_never_absurd,
    check_selection_blind_to_test,
    fixed_tables,
)

from reports import stats
from reports.stats import intervals


def check_identical_splits_interval() -> None:
    """Identical predictions on every split (same training set, deterministic model): the interval is the test
    images' one, ``p(1 − p)/(N − 1)``, not zero and not NaN."""
    labels = np.repeat([0, 1], [70, 83])
    row = (np.arange(153) % 8 != 0).astype(float)
    results, predictions = fixed_tables({("a", "frozen", 120): np.tile(row, (10, 1))}, labels)
    summary = stats.summarize(results, predictions).iloc[0]
    p = row.mean()
    half = (summary["ci_high"] - summary["ci_low"]) / 2
    assert half == pytest.approx(1.97 * math.sqrt(p * (1 - p) / 152), rel=0.03)


def _split_term_only(original):
    def planted(matrix, classes=None, *, balanced=False, level=0.95, scale=None):
        r = original(matrix, classes, balanced=balanced, level=level, scale=scale)
        se = math.sqrt(r["var_splits"]) if r["var_splits"] > 0 else math.nan
        return intervals.interval_record(r["estimate"], se, r["n_splits"] - 1, level, r["method"],
                                         centre=r["estimate"] if 0 < r["estimate"] < 1 and scale != "raw" else None,
                                         conditional=r["conditional"])
    return planted


def _image_term_only(original):
    def planted(matrix, classes=None, *, balanced=False, level=0.95, scale=None):
        r = original(matrix, classes, balanced=balanced, level=level, scale=scale)
        return intervals.interval_record(r["estimate"], math.sqrt(r["var_images"]), r["n_images"] - 1, level,
                                         r["method"],
                                         centre=r["estimate"] if 0 < r["estimate"] < 1 and scale != "raw" else None,
                                         conditional=r["conditional"])
    return planted


def _raw_scale(original):
    def planted(estimate, se, df, level, method, note="", *, centre=None, **extra):
        return original(estimate, se, df, level, method, note, **extra)
    return planted


def _uncorrected(original):
    def planted(values, overlap, level=0.95, *, scale=None):
        return original(values, 0.0, level, scale=scale)
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


def _constant(value):
    return lambda original: value


def _no_df_floor(original):
    def planted(terms, cap):
        total, denom = sum(t for t, _ in terms), sum(t**2 / d for t, d in terms)
        return total**2 / denom if total > 0 and denom > 0 else math.nan
    return planted


def _any_resample(original):
    def planted(n_ids, n_boot, rng):
        return rng.multinomial(n_ids, np.full(n_ids, 1.0 / n_ids), size=n_boot).astype(float)
    return planted


def _raw_p_values(original):
    return lambda pvalues: np.asarray(pvalues, dtype=float)


FAULTS = {
    "image component dropped (identical splits)": ("two_level_interval", _split_term_only,
                                                   check_identical_splits_interval),
    "image component dropped (coverage, logit-normal)": (
        "two_level_interval", _split_term_only, lambda: sim.check_accuracy_coverage("logit-normal sd 2, 0.80", 10)),
    "split component dropped (coverage, own model)": (
        "two_level_interval", _image_term_only, lambda: sim.check_accuracy_coverage("own model, 5/class", 10)),
    "split component dropped (paired type-I error)": (
        "two_level_interval", _image_term_only, lambda: sim.check_type_one_error("logit-normal 0.80, null", 10)),
    "symmetric raw-scale accuracy interval (coverage near the ceiling)": (
        "interval_record", _raw_scale, lambda: sim.check_accuracy_coverage("0.97, 4% very hard images", 10)),
    "no continuity floor (coverage at 0.99)": (
        "PSEUDO_IMAGE", _constant(0.0), lambda: sim.check_accuracy_coverage("0.99, 1.5% very hard images", 10)),
    "fewer than 5 draws treated as enough (interval)": (
        "MIN_DRAWS", _constant(2), lambda: sim.check_few_draws_conditional("logit-normal sd 2, 0.80")),
    "fewer than 5 draws treated as enough (verdict)": ("MIN_DRAWS", _constant(2), check_no_verdict_from_few_draws),
    "no degrees-of-freedom floor": ("_satterthwaite", _no_df_floor, check_numerics_are_never_absurd),
    "no relative tolerance on variances": ("_RTOL", _constant(0.0), check_numerics_are_never_absurd),
    "Holm correction skipped": ("holm", _raw_p_values, check_holm_within_a_train_size),
    "Nadeau-Bengio correction removed": ("resampled_interval", _uncorrected, check_nadeau_bengio),
    "Nadeau-Bengio correction removed from the paired t": ("paired_difference", _uncorrected_paired,
                                                           check_nadeau_bengio),
    "selection by test accuracy": ("select_best", _select_on_test, check_selection_blind_to_test),
    "resamples without a crossing dropped": ("_crossings", _drop_unreached,
                                             lambda: sim.crossover_coverage(n_experiments=20, n_boot=200)),
    "crossover read at the first noisy crossing": ("_isotonic", _constant(lambda y: y), sim.check_crossover_estimate),
    "bootstrap resamples holding a single draw": ("_draw_counts", _any_resample, check_bootstrap_keeps_two_draws),
}


def plant(monkeypatch, name: str, make) -> None:
    """Replace ``name`` by ``make(original)`` in every module of :mod:`reports.stats` that binds it (a name one
    module imports from another is looked up in the importing module)."""
    modules = [m for n, m in sorted(sys.modules.items()) if n == "reports.stats" or n.startswith("reports.stats.")]
    holders = [m for m in modules if name in vars(m)]
    assert holders, f"no module of reports.stats binds {name!r}"
    original = vars(holders[0])[name]
    planted = make(original)
    for module in holders:
        if vars(module)[name] is original:
            monkeypatch.setattr(module, name, planted)


@pytest.fixture(autouse=True)
def fresh_simulation():
    """Scored simulation cells are cached by function; a fault planted inside a function must not reuse them."""
    sim.clear_caches()
    yield
    sim.clear_caches()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_check_passes_without_the_fault(fault):
    FAULTS[fault][2]()


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_check_catches_the_planted_fault(fault, monkeypatch):
    name, make, check = FAULTS[fault]
    plant(monkeypatch, name, make)
    with pytest.raises(AssertionError):
        check()

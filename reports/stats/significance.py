"""Tests on interval records and paired data: t, McNemar exact, TOST equivalence, Holm–Bonferroni."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps

from reports.stats.intervals import NOT_TESTABLE, is_tested, resampled_interval, two_level_interval

__all__ = ["EQUIVALENCE_MARGIN", "holm", "mcnemar_exact", "paired_difference", "paired_interval", "t_test_p", "tost"]

EQUIVALENCE_MARGIN = 0.05
"""Accuracy margin of the equivalence tests (TOST) behind every "as good as"."""


def t_test_p(record: Mapping) -> float:
    """Two-sided p-value of ``estimate = 0`` from an interval record (NaN when not testable)."""
    if not is_tested(record):
        return math.nan
    return float(2 * special.stdtr(record["df"], -abs(record["estimate"]) / record["se"]))


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Exact McNemar test of two classifiers scored on the same test images (one training draw).

    Returns ``a_only`` (images only ``a`` gets right), ``b_only``, ``p`` (two-sided exact binomial test of the
    discordant pairs, capped at 1; NaN when there is no discordant pair: not testable) and ``note``.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar_exact needs aligned predictions; got shapes {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    n = a_only + b_only
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p": math.nan, "note": f"{NOT_TESTABLE}: identical correctness"}
    p = min(1.0, 2 * float(sps.binom.cdf(min(a_only, b_only), n, 0.5)))
    return {"a_only": a_only, "b_only": b_only, "p": p, "note": ""}


def tost(record: Mapping, margin: float, alpha: float = 0.05) -> dict:
    """Two one-sided tests of equivalence ``|difference| < margin`` on an interval record.

    ``p = max(P(T ≥ (d + margin)/se), P(T ≤ (d − margin)/se))`` with the record's ``se`` and ``df``; equivalent
    means ``p < alpha`` (the ``1 − 2·alpha`` interval lies inside ``(−margin, margin)``).

    Returns
    -------
    dict
        ``tost_p``, ``equivalent`` (True/False, ``pd.NA`` when not testable), ``margin``.
    """
    if not margin > 0:
        raise ValueError(f"tost margin must be > 0 (e.g. {EQUIVALENCE_MARGIN} accuracy), got {margin!r}")
    se, df, d = record["se"], record["df"], record["estimate"]
    if not is_tested(record):
        return {"tost_p": math.nan, "equivalent": pd.NA, "margin": margin}
    p_low = float(special.stdtr(df, -(d + margin) / se))
    p_high = float(special.stdtr(df, (d - margin) / se))
    p = max(p_low, p_high)
    return {"tost_p": p, "equivalent": bool(p < alpha), "margin": margin}


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def paired_difference(diff: np.ndarray, level: float = 0.95, overlap: float = 0.0) -> dict[str, float]:
    """Mean of per-split paired differences (resampled design): corrected resampled t-test and Wilcoxon p-value.

    Returns a dict with ``diff``, ``diff_ci_low``, ``diff_ci_high``, ``se``, ``df``, ``t_p``, ``wilcoxon_p`` and
    ``note``. ``overlap = n_test / n_train`` applies the Nadeau–Bengio correction to the interval and the t-test.
    The same difference on every split (zero included) has no variance estimate: interval and tests are NaN and
    ``note`` says "not testable" — never a certainty, never p = 1.
    """
    diff = np.asarray(diff, dtype=float)
    record = resampled_interval(diff, overlap, level, scale="raw")
    out = {"diff": record["estimate"], "diff_ci_low": record["ci_low"], "diff_ci_high": record["ci_high"],
           "se": record["se"], "df": record["df"], "t_p": t_test_p(record), "wilcoxon_p": math.nan,
           "note": record["note"]}
    nonzero = diff[~np.isclose(diff, 0.0)]
    if diff.size >= 2 and nonzero.size:
        out["wilcoxon_p"] = float(sps.wilcoxon(nonzero).pvalue)
    if diff.size >= 2 and np.allclose(diff, diff[0]):
        out["note"] = f"{NOT_TESTABLE}: the same difference on every split (no variance)"
    return out


def paired_interval(correct_a: np.ndarray, correct_b: np.ndarray, classes: Sequence | None = None, *,
                    level: float = 0.95) -> dict:
    """Paired difference ``a − b`` of two (J, N) correctness matrices on the same draws and test images.

    The :func:`~reports.stats.intervals.two_level_interval` record of ``correct_a − correct_b`` on the raw scale
    (conditional on the draws below :data:`~reports.stats.intervals.MIN_DRAWS`), with ``p`` — the two-level t-test,
    or McNemar's exact test with a single draw — and ``test`` naming it.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=float))
    b = np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired_interval needs aligned matrices; got shapes {a.shape} and {b.shape}")
    record = two_level_interval(a - b, classes, level=level, scale="raw")
    if a.shape[0] == 1:
        test = mcnemar_exact(a[0] > 0.5, b[0] > 0.5)
        record["note"] = "; ".join(filter(None, [record["note"], test["note"]]))
        return {**record, "p": test["p"], "test": "McNemar exact (one split)"}
    return {**record, "p": t_test_p(record), "test": "two-level t"}

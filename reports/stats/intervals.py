"""Confidence intervals of a mean accuracy or a paired difference: Wilson, t over splits, two-level, Nadeau–Bengio.

Every interval is an :class:`IntervalRecord` (a dict): estimate, standard error, degrees of freedom, bounds, the
method's name and a note saying why an interval is missing or what it covers.  See :mod:`reports.stats` for why each
choice keeps the intervals valid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypedDict

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps

from reports.stats.schema import check_level

__all__ = ["MIN_DRAWS", "NOT_TESTABLE", "PSEUDO_IMAGE", "IntervalRecord", "image_bound_interval", "interval_record",
           "is_tested", "mean_ci", "resampled_interval", "resampling_overlap", "two_level_interval", "wilson_ci"]

NOT_TESTABLE = "not testable"
MIN_DRAWS = 5
"""Training draws below which an interval is conditional on the draws and no verdict (better, as good as, a
crossover) is drawn."""
PSEUDO_IMAGE = 0.5
"""Weight of the pseudo test image (right on half the draws) behind each class's floor of the image variance."""
_RTOL = 1e-9  # a variance below this fraction of the terms it is computed from is rounding noise of a zero


class IntervalRecord(TypedDict, total=False):
    """One interval: always ``estimate``, ``se``, ``df``, ``ci_low``, ``ci_high``, ``method`` and ``note``; the
    designs' intervals add ``n_splits`` and ``conditional``, the two-level one ``n_images``, ``var_splits`` and
    ``var_images``."""

    estimate: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    method: str
    note: str
    n_splits: int
    n_images: int
    conditional: bool
    var_splits: float
    var_images: float


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    k : int
        Number of successes (correct predictions), ``0 <= k <= n``.
    n : int
        Number of trials (test images).
    level : float, default=0.95
        Confidence level.

    Returns
    -------
    (low, high) : tuple of float
        ``(nan, nan)`` when ``n == 0``.
    """
    check_level(level)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_ci needs 0 <= k <= n, got k={k!r}, n={n!r}")
    if n == 0:
        return (math.nan, math.nan)
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_ci(
    values: Sequence[float],
    level: float = 0.95,
    *,
    n_correct: Sequence[int] | None = None,
    n_test: Sequence[int] | None = None,
    overlap: float = 0.0,
) -> tuple[float, float, float]:
    """Mean over disjoint folds or resampled splits with a Student-t confidence interval.

    Resampled splits of one pool share images, so their accuracies are positively correlated and the naive
    ``sd / sqrt(J)`` is too small.  With ``overlap = n_test / n_train`` the variance of the mean is the corrected
    resampled one of Nadeau & Bengio (2003), ``sd² · (1/J + n_test/n_train)``; ``overlap=0`` gives the plain
    t-interval (right for disjoint cross-validation folds). Not for a fixed test set: use
    :func:`two_level_interval`.

    With a single value (or several identical values) the t-interval is undefined or of zero width; if the counts
    ``n_correct`` / ``n_test`` are given, the Wilson interval of the pooled counts is returned instead (valid when
    the folds are disjoint). Without counts the bounds are NaN for a single value. NaN values are ignored.

    Parameters
    ----------
    values : sequence of float
        One value per split (e.g. accuracies).
    level : float, default=0.95
        Confidence level.
    n_correct, n_test : sequence of int, optional
        Per-split counts, aligned with ``values``, for the Wilson fallback.
    overlap : float, default=0.0
        ``n_test / n_train`` of the splits, for the Nadeau–Bengio correction.

    Returns
    -------
    (mean, low, high) : tuple of float
    """
    check_level(level)
    v = np.asarray(values, dtype=float)
    keep = ~np.isnan(v)
    v = v[keep]
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    if v.size > 1 and sd > 0:
        half = float(sps.t.ppf(0.5 + level / 2, v.size - 1)) * sd * math.sqrt(1 / v.size + overlap)
        return (mean, mean - half, mean + half)
    if n_correct is not None and n_test is not None:
        k = np.asarray(n_correct, dtype=float)[keep]
        n = np.asarray(n_test, dtype=float)[keep]
        if np.all(np.isfinite(k)) and np.all(np.isfinite(n)) and n.sum() > 0:
            low, high = wilson_ci(int(k.sum()), int(n.sum()), level)
            return (mean, low, high)
    if v.size > 1:
        return (mean, mean, mean)
    return (mean, math.nan, math.nan)


def is_tested(record: Mapping) -> bool:
    """Whether an interval record carries a usable standard error (the only gate of the tests built on it)."""
    se, df = record["se"], record["df"]
    return bool(se > 0 and math.isfinite(se) and df >= 1 and not math.isnan(record["estimate"]))


def interval_record(estimate: float, se: float, df: float, level: float, method: str, note: str = "", *,
                    centre: float | None = None, **extra) -> IntervalRecord:
    """One interval record: Student-t with ``df`` degrees of freedom around ``estimate``.

    ``centre=None`` builds it on the raw scale (a paired difference; bounds clipped to [−1, 1]); a ``centre`` in
    (0, 1) builds it on the logit scale around ``logit(centre)`` with the delta-method standard error
    ``se / (centre (1 − centre))`` and transforms it back, widened to include ``estimate`` (an accuracy). NaN bounds
    when ``se`` is not a positive number; ``note`` then says why (a generic "not testable" when empty).
    """
    out = {"estimate": estimate, "se": se, "df": df, "ci_low": math.nan, "ci_high": math.nan, "method": method,
           "note": note, **extra}
    if math.isnan(estimate):
        out["note"] = note or f"{NOT_TESTABLE}: no data"
    elif not is_tested(out):
        out.update(se=math.nan, df=math.nan, note=note or f"{NOT_TESTABLE}: no variance estimate")
    else:
        q = float(special.stdtrit(df, 0.5 + level / 2))
        if centre is None:
            out.update(ci_low=max(estimate - q * se, -1.0), ci_high=min(estimate + q * se, 1.0))
        else:
            mid, half = math.log(centre / (1 - centre)), q * se / (centre * (1 - centre))
            low, high = (1 / (1 + math.exp(-(mid + s * half))) for s in (-1, 1))
            out.update(ci_low=max(min(low, estimate), 0.0), ci_high=min(max(high, estimate), 1.0))
    return out


def _these_draws(n: int) -> str:
    return "this training draw" if n == 1 else f"these {n} training draws"


def _conditional_note(n: int) -> str:
    """What an interval over fewer than :data:`MIN_DRAWS` draws covers."""
    return (f"conditional on {_these_draws(n)} (fewer than {MIN_DRAWS}): the interval covers test-image sampling "
            "only, not the variation between draws")


def _satterthwaite(terms: Sequence[tuple[float, float]], cap: float) -> float:
    """Satterthwaite degrees of freedom of a sum of variance terms ``(value, df)``, between 1 and ``cap`` (what the
    design allows); NaN when the sum is not positive."""
    total = sum(t for t, _ in terms)
    denom = sum(t**2 / d for t, d in terms)
    if not (total > 0 and denom > 0):
        return math.nan
    return float(min(max(total**2 / denom, 1.0), max(cap, 1.0)))


def _image_variance(col_means: np.ndarray, pseudo: float) -> float:
    """Sample variance of one class's column means, floored at that of the same number of identical images plus
    ``pseudo`` of an image right on half the draws (0 without a floor)."""
    n = col_means.size
    var = float(col_means.var(ddof=1))
    if pseudo > 0:
        floor = n * pseudo * (0.5 - float(col_means.mean())) ** 2 / ((n + pseudo) * (n + pseudo - 1))
        var = max(var, floor)
    return var


def two_level_interval(
    matrix: np.ndarray,
    classes: Sequence | None = None,
    *,
    balanced: bool = False,
    level: float = 0.95,
    scale: str | None = None,
) -> IntervalRecord:
    """Mean of a splits × test-images matrix with an interval carrying both sources of uncertainty (fixed test set).

    ``matrix[j, n]`` is the correctness (0/1) of training draw ``j`` on test image ``n`` — or a paired difference
    of two such matrices (same splits, same images). The estimate is the mean over splits of the per-split
    (balanced) accuracy ``θ_j = Σ_n w_n m[j, n]``. With at least :data:`MIN_DRAWS` draws its variance is that of a
    crossed random design, stratified by class::

        Var = var_j(θ_j) / J  +  Σ_c W_c · (var_{n∈c}(m̄_n) − MSE_c / J),    W_c = Σ_{n∈c} w_n²

    the training-draw component (it includes the split × image residual) plus the test-image component (column
    means m̄_n, de-biased by the within-class residual mean square; left out when ≤ 0, replaced by its undebiased
    upper bound when the draw component is zero too). With fewer draws the interval is *conditional on them*:
    ``Var = Σ_c W_c var_{n∈c}(m̄_n)``, test-image sampling around the mean of the models actually trained.
    Student-t with Satterthwaite degrees of freedom (between 1 and the design's); on the logit scale for a
    correctness matrix (see :mod:`reports.stats` for the continuity floor), on the raw scale for differences.

    Parameters
    ----------
    matrix : array of shape (J, N) or (N,)
        Correctness or paired differences; no NaN.
    classes : sequence of length N, optional
        True class of each test image (strata of the image component and weights of the balanced accuracy).
    balanced : bool, default=False
        Weight images by ``1 / (K · N_c)`` (balanced accuracy) instead of ``1 / N``.
    level : float, default=0.95
        Confidence level.
    scale : {"logit", "raw"}, optional
        ``"logit"`` for an accuracy, ``"raw"`` for a difference; default ``"logit"`` when every cell lies in
        [0, 1].

    Returns
    -------
    IntervalRecord
        ``estimate``, ``se`` (raw scale), ``df``, ``ci_low``, ``ci_high`` (NaN when nothing varies),
        ``var_splits``, ``var_images``, ``n_splits``, ``n_images``, ``conditional``, ``method`` and ``note``.
    """
    check_level(level)
    m = np.atleast_2d(np.asarray(matrix, dtype=float))
    if np.isnan(m).any():
        raise ValueError("two_level_interval: matrix has NaN cells; keep only images scored on every split")
    n_splits, n_images = m.shape
    conditional = n_splits < MIN_DRAWS
    if scale is None:
        scale = "logit" if m.size and m.min() >= 0 and m.max() <= 1 else "raw"
    if scale not in ("logit", "raw"):
        raise ValueError(f"scale must be 'logit' or 'raw', got {scale!r}")
    info = {"n_splits": n_splits, "n_images": n_images, "conditional": conditional}
    if m.size == 0:
        return interval_record(math.nan, math.nan, math.nan, level, "none", var_splits=math.nan,
                               var_images=math.nan, **info)
    labels = np.zeros(n_images, dtype=int) if classes is None else np.unique(np.asarray(classes),
                                                                          return_inverse=True)[1]
    counts = np.bincount(labels)
    weights = 1.0 / (np.count_nonzero(counts) * counts[labels]) if balanced else np.full(n_images, 1.0 / n_images)
    pseudo = PSEUDO_IMAGE if scale == "logit" else 0.0
    per_split = m @ weights
    estimate = float(per_split.mean())
    var_splits = float(per_split.var(ddof=1)) / n_splits if n_splits > 1 else math.nan
    if var_splits <= _RTOL * float((per_split**2).mean()) / n_splits:
        var_splits = 0.0
    raw_terms, debias_terms = [], []
    margin = 0.0  # the logit scale is read no closer to 0 or 1 than the pseudo image allows
    for c in np.flatnonzero(counts):
        cols = m[:, labels == c]
        col_means = cols.mean(axis=0)
        margin += float(weights[labels == c].sum()) * (pseudo / 2) / (counts[c] + pseudo)
        if counts[c] < 2:
            continue
        w2 = float((weights[labels == c] ** 2).sum())
        raw_terms.append((w2 * _image_variance(col_means, pseudo), float(counts[c] - 1)))
        if n_splits > 1:  # residual sum of squares of the class's splits × images table
            grand, row_means = float(col_means.mean()), cols.mean(axis=1)
            ss = (float(((cols - grand) ** 2).sum()) - counts[c] * float(((row_means - grand) ** 2).sum())
                  - n_splits * float(((col_means - grand) ** 2).sum()))
            mse = max(ss, 0.0) / ((n_splits - 1) * (counts[c] - 1))
            debias_terms.append((-w2 * mse / n_splits, float((n_splits - 1) * (counts[c] - 1))))
    undebiased = sum(t for t, _ in raw_terms)
    debiased = undebiased + sum(t for t, _ in debias_terms)
    scale_of_images = undebiased - sum(t for t, _ in debias_terms)
    if undebiased <= _RTOL * max(scale_of_images, float(np.abs(m).max()) ** 2 / n_images**2):
        undebiased = 0.0
    note = ""
    if conditional:
        method = f"test images only, conditional on {_these_draws(n_splits)}"
        note = _conditional_note(n_splits)
        terms, var_images = (raw_terms if undebiased > 0 else []), undebiased
    else:
        method = "two-level (training draws + test images)"
        if debiased > _RTOL * scale_of_images:
            terms, var_images = [(var_splits, n_splits - 1.0), *raw_terms, *debias_terms], debiased
        elif var_splits > 0:
            terms, var_images = [(var_splits, n_splits - 1.0)], 0.0
        else:
            terms, var_images = (raw_terms if undebiased > 0 else []), undebiased
            note = "no variation between draws: the test-image variance is used undebiased (conservative)"
    total = sum(t for t, _ in terms)
    if not total > 0:
        images = f"every test image of a class has the same mean outcome over {_these_draws(n_splits)}"
        note = (f"{NOT_TESTABLE}: {images}, so test-image sampling shows no variance" if conditional else
                f"{NOT_TESTABLE}: every draw has the same mean and {images}: neither draws nor test images show "
                "any variance")
    cap = sum(d for _, d in raw_terms) + (0 if conditional else n_splits - 1)
    return interval_record(estimate, math.sqrt(total) if total > 0 else math.nan, _satterthwaite(terms, cap), level,
                           method, note, centre=min(max(estimate, margin), 1 - margin) if scale == "logit" else None,
                           var_splits=var_splits, var_images=var_images, **info)


def image_bound_interval(accuracies: Sequence[float], n_test: float, level: float = 0.95) -> IntervalRecord:
    """Fixed test set, per-split accuracies only (no predictions): the image component bounded by
    ``p̃(1 − p̃) / n_test`` (``p̃`` the accuracy counting the pseudo image of :data:`PSEUDO_IMAGE`); conditional on
    the draws below :data:`MIN_DRAWS`; logit scale."""
    acc = np.asarray(accuracies, dtype=float)
    p = float(acc.mean())
    method = "two-level, image term bounded by p(1-p)/n (no predictions)"
    info = {"n_splits": int(acc.size), "conditional": acc.size < MIN_DRAWS}
    if not n_test > 1:
        return interval_record(p, math.nan, math.nan, level, method, f"{NOT_TESTABLE}: n_test unknown", **info)
    margin = (PSEUDO_IMAGE / 2) / (n_test + PSEUDO_IMAGE)
    centre = min(max(p, margin), 1 - margin)
    terms = [(centre * (1 - centre) / n_test, n_test - 1)]
    note = _conditional_note(acc.size)
    if not info["conditional"]:
        terms.append((float(acc.var(ddof=1)) / acc.size, acc.size - 1))
        note = ""
    total = sum(t for t, _ in terms)
    return interval_record(p, math.sqrt(total), _satterthwaite(terms, sum(d for _, d in terms)), level, method, note,
                           centre=centre, **info)


def resampled_interval(values: Sequence[float], overlap: float, level: float = 0.95, *,
                       scale: str | None = None) -> IntervalRecord:
    """Nadeau–Bengio corrected resampled t interval of a mean over random splits of one pool.

    ``se = sd · sqrt(1/J + overlap)`` with ``overlap = n_test / n_train`` and ``J − 1`` degrees of freedom; on the
    logit scale for accuracies (``scale="logit"``, the default when every value lies in [0, 1] and the mean strictly
    inside), on the raw scale for differences. Same record as :func:`two_level_interval` (NaN bounds and a "not
    testable" note with fewer than two splits or no variance; never ``conditional``).
    """
    check_level(level)
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    method = "resampled t (Nadeau–Bengio)" if overlap > 0 else "t over splits (uncorrected: n_train/n_test unknown)"
    info = {"n_splits": int(v.size), "conditional": False}
    if v.size == 0:
        return interval_record(math.nan, math.nan, math.nan, level, method, **info)
    mean = float(v.mean())
    if v.size < 2:
        return interval_record(mean, math.nan, math.nan, level, method,
                               f"{NOT_TESTABLE}: one split, no variance estimate", **info)
    if scale is None:
        scale = "logit" if v.min() >= 0 and v.max() <= 1 else "raw"
    var = float(v.var(ddof=1))
    if var <= _RTOL * float((v**2).mean()):
        return interval_record(mean, math.nan, math.nan, level, method,
                               f"{NOT_TESTABLE}: the same value on every split (no variance between splits)", **info)
    se = math.sqrt(var * (1 / v.size + overlap))
    return interval_record(mean, se, v.size - 1, level, method, centre=mean if scale == "logit" else None, **info)


def resampling_overlap(rows: pd.DataFrame) -> float:
    """``mean(n_test) / mean(n_train)`` of a group of splits (0 when unknown), for the Nadeau–Bengio correction."""
    if {"n_test", "n_train"} - set(rows.columns) or not rows["n_train"].astype(float).mean() > 0:
        return 0.0
    return float(rows["n_test"].astype(float).mean() / rows["n_train"].astype(float).mean())

"""Statistics over repeated training draws: intervals, paired tests, equivalence, selection, crossover.

Two experimental designs, named in every output (``design`` column of ``results.csv``):

``"fixed_test"``
    A fixed test set (hymenoptera ``val/``); every training draw (split) is scored on the whole test set. The data
    of one configuration is a 0/1 correctness matrix of shape (J splits, N test images) and the uncertainty has two
    sources, the training draw and the test images: :func:`two_level_interval` carries both (variance components
    of a crossed splits × images design, Satterthwaite degrees of freedom).
``"resampled"``
    Random train/test splits of one pool: the Nadeau–Bengio corrected resampled t over per-split accuracies
    (:func:`mean_ci`, :func:`paired_difference` with ``overlap = n_test / n_train``).

How the intervals stay valid where pretrained networks put them — each choice checked by ``tests/test_simulation.py``
(1000 experiments per cell; ``python tests/test_simulation.py`` prints the old-versus-new tables that the README's
evaluation section quotes):

* **Accuracies use the logit scale.** The two-level variance is carried to ``logit(p)`` by the delta method, the
  Student-t interval is built there and transformed back, so it never leaves [0, 1] and is asymmetric where the sampling
  distribution is: near the ceiling a test set with few hard images gives a high estimate *and* a small variance, and
  the symmetric interval then missed above the truth (0.85–0.94 coverage at 0.97–0.99; 0.94–0.97 on the logit scale with
  the floor below). A bootstrap-t over draws × images was the alternative; it cannot see what dominates those misses (a
  test set that happens to hold none of the population's rare hard images) and costs a resampling loop per interval.
  **Continuity:** each class's test-image variance is at least what half a pseudo image right on half the draws would
  give (:data:`PSEUDO_IMAGE`), and the logit is read no closer to 0 or 1 than that half image allows. A perfect 153/153
  then gives [0.977, 1] (Clopper–Pearson: [0.976, 1]) instead of no interval, test sets without a hard image are still
  covered (0.99 with 1.5% very hard images: 0.90 without the floor, 0.97 with it, slightly conservative), and at
  ordinary accuracies the floor never binds.
* **Paired differences stay on the raw scale.** Two methods' correctness on the same images share their hard
  images, so their difference is close to symmetric even near the ceiling: the raw two-level interval covers
  0.95–0.98 at ≥ 5 draws in every simulated pair (conservative where both err on the same images), with a type-I
  error ≤ 0.05. Combining the two logit intervals (MOVER) over-covered (0.98–1.00, 60–90% wider) in a trial of the
  same models. The t p-value and the TOST use the interval's standard error and degrees of freedom, so an
  interval, its test and its equivalence verdict never disagree; bounds are clipped to [−1, 1].
* **Numerics that cannot be absurd.** A variance counts as zero below a relative tolerance (:data:`_RTOL` of the
  terms it is computed from), so rounding noise never passes for a variance (the old code gave ±1.9e128 from a
  1.7e-21 "variance"); Satterthwaite degrees of freedom lie between 1 and the design's own (draws − 1 plus images −
  classes). When the test-image component is estimated ≤ 0 it is left out; when the draw component is zero as well,
  the undebiased image variance (an upper bound) is used instead. A NaN interval is left only when nothing varies
  — no draw differs from another and no test image from another of its class — and its note says so.
* **Fewer than :data:`MIN_DRAWS` training draws.** A draw variance from J < 5 draws has J − 1 < 4 degrees of
  freedom: at J = 2 the unconditional interval covered 0.86–0.96 with widths up to 1e150. Such an interval is
  therefore *conditional on these draws* (``conditional``, said in its note): it covers test-image sampling around
  the mean accuracy of the models actually trained, which it does (0.94–0.97). No verdict — "better", "as good as",
  "works", a crossover point — rests on fewer than :data:`MIN_DRAWS` draws: :func:`paired_comparison` leaves
  ``significant`` and ``equivalent`` missing (``few_draws``) and :func:`crossover` reports the per-size differences
  only.
* **Draws that sometimes fail.** A t interval over a handful of draws assumes their accuracies vary smoothly; when
  one draw in seven fails it covers 0.78–0.86. No interval over few draws can see that, so :func:`summarize` puts
  the per-draw minimum and median next to every mean accuracy.
* **The crossover** is read from a monotone (isotonic) fit of the per-size differences in log size, not from the
  first size where a noisy mean turns positive (median 16 for a planted 31.6 at 5 draws and ten sizes; the fit:
  27); its bootstrap keeps at least two distinct draws in every resample.

Nothing here looks at test accuracy to choose a configuration: :func:`select_best` ranks by training-side
evidence (``selection_score``) only, and :func:`paired_comparison` / :func:`crossover` take pre-selected
configurations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps

logger = logging.getLogger(__name__)

CONFIG_COLUMNS: tuple[str, ...] = ("backbone", "cut", "method")
VARIANT_COLUMNS: tuple[str, ...] = ("pooling", "augment")
PAIR_KEYS: tuple[str, ...] = ("train_size", "split")
DESIGNS: tuple[str, ...] = ("fixed_test", "resampled")
NOT_TESTABLE = "not testable"
MIN_DRAWS = 5
"""Training draws below which an interval is conditional on the draws and no verdict (better, as good as, a
crossover) is drawn."""
EQUIVALENCE_MARGIN = 0.05
"""Accuracy margin of the equivalence tests (TOST) behind every "as good as"."""
PSEUDO_IMAGE = 0.5
"""Weight of the pseudo test image (right on half the draws) behind each class's floor of the image variance."""
_TIME_COLUMNS = ("fit_time_s", "predict_time_s", "extract_time_s")
_RTOL = 1e-9  # a variance below this fraction of the terms it is computed from is rounding noise of a zero


# --- configurations ---------------------------------------------------------------------------------------------


def config_columns(results: pd.DataFrame) -> list[str]:
    """Columns that identify a configuration: backbone, cut and method, plus pooling and augmentation policy where
    they take more than one non-blank value in ``results`` (so runs that differ only there are never merged)."""
    fixed = [c for c in CONFIG_COLUMNS if c in results.columns]

    def varies(column: str) -> bool:
        values = results[column].dropna()
        return values[values.astype(str) != ""].nunique() > 1

    return fixed + [c for c in VARIANT_COLUMNS if c in results.columns and varies(c)]


def config_label(values: dict | pd.Series, columns: Sequence[str]) -> str:
    """``"resnet18 / layer4 / linear_svm"``: a configuration's values joined, empty values skipped."""
    parts = [str(values[c]) for c in columns if c in values and not _is_blank(values[c])]
    return " / ".join(parts) if parts else "(all)"


def _is_blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _norm(value):
    """Hashable, NaN-free key value: blanks become ``""``, numbers floats."""
    if _is_blank(value) or value is pd.NA:
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    return value


def _key(values, columns: Sequence[str]) -> tuple:
    return tuple(_norm(values[c]) for c in columns)


def _default_by(results: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    if by is not None:
        return list(by)
    return config_columns(results) + (["train_size"] if "train_size" in results.columns else [])


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _check_columns(results: pd.DataFrame, columns: Sequence[str], what: str = "results") -> None:
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; available columns: {list(results.columns)}")


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


# --- interval machinery -----------------------------------------------------------------------------------------


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
    _check_level(level)
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
    _check_level(level)
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


def _tested(record: Mapping) -> bool:
    """Whether an interval record carries a usable standard error (the only gate of the tests built on it)."""
    se, df = record["se"], record["df"]
    return bool(se > 0 and math.isfinite(se) and df >= 1 and not math.isnan(record["estimate"]))


def _interval(estimate: float, se: float, df: float, level: float, method: str, note: str = "", *,
              centre: float | None = None, **extra) -> dict:
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
    elif not _tested(out):
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
) -> dict:
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
    correctness matrix (see the module docstring for the continuity floor), on the raw scale for differences.

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
    dict
        ``estimate``, ``se`` (raw scale), ``df``, ``ci_low``, ``ci_high`` (NaN when nothing varies),
        ``var_splits``, ``var_images``, ``n_splits``, ``n_images``, ``conditional``, ``method`` and ``note``.
    """
    _check_level(level)
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
        return _interval(math.nan, math.nan, math.nan, level, "none", var_splits=math.nan, var_images=math.nan,
                         **info)
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
    return _interval(estimate, math.sqrt(total) if total > 0 else math.nan, _satterthwaite(terms, cap), level, method,
                     note, centre=min(max(estimate, margin), 1 - margin) if scale == "logit" else None,
                     var_splits=var_splits,
                     var_images=var_images, **info)


def resampled_interval(values: Sequence[float], overlap: float, level: float = 0.95, *,
                       scale: str | None = None) -> dict:
    """Nadeau–Bengio corrected resampled t interval of a mean over random splits of one pool.

    ``se = sd · sqrt(1/J + overlap)`` with ``overlap = n_test / n_train`` and ``J − 1`` degrees of freedom; on the
    logit scale for accuracies (``scale="logit"``, the default when every value lies in [0, 1] and the mean strictly
    inside), on the raw scale for differences. Same record as :func:`two_level_interval` (NaN bounds and a "not
    testable" note with fewer than two splits or no variance; never ``conditional``).
    """
    _check_level(level)
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    method = "resampled t (Nadeau–Bengio)" if overlap > 0 else "t over splits (uncorrected: n_train/n_test unknown)"
    info = {"n_splits": int(v.size), "conditional": False}
    if v.size == 0:
        return _interval(math.nan, math.nan, math.nan, level, method, **info)
    mean = float(v.mean())
    if v.size < 2:
        return _interval(mean, math.nan, math.nan, level, method, f"{NOT_TESTABLE}: one split, no variance estimate",
                         **info)
    if scale is None:
        scale = "logit" if v.min() >= 0 and v.max() <= 1 else "raw"
    var = float(v.var(ddof=1))
    if var <= _RTOL * float((v**2).mean()):
        return _interval(mean, math.nan, math.nan, level, method,
                         f"{NOT_TESTABLE}: the same value on every split (no variance between splits)", **info)
    se = math.sqrt(var * (1 / v.size + overlap))
    return _interval(mean, se, v.size - 1, level, method, centre=mean if scale == "logit" else None, **info)


def resampling_overlap(rows: pd.DataFrame) -> float:
    """``mean(n_test) / mean(n_train)`` of a group of splits (0 when unknown), for the Nadeau–Bengio correction."""
    if {"n_test", "n_train"} - set(rows.columns) or not rows["n_train"].astype(float).mean() > 0:
        return 0.0
    return float(rows["n_test"].astype(float).mean() / rows["n_train"].astype(float).mean())


def t_test_p(record: Mapping) -> float:
    """Two-sided p-value of ``estimate = 0`` from an interval record (NaN when not testable)."""
    if not _tested(record):
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
    if not _tested(record):
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


# --- correctness matrices (fixed test set) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Correctness:
    """Correctness of one configuration at one train size: ``correct[j, n]`` for split ``splits[j]`` and test
    image ``index[n]`` of class ``y_true[n]``."""

    splits: np.ndarray
    index: np.ndarray
    y_true: np.ndarray
    correct: np.ndarray

    def aligned(self, other: Correctness) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(splits, index, y_true, self_correct, other_correct)`` on the splits and images both have."""
        splits = np.intersect1d(self.splits, other.splits)
        index = np.intersect1d(self.index, other.index)

        def take(c: Correctness) -> np.ndarray:
            rows = np.searchsorted(c.splits, splits)
            cols = np.searchsorted(c.index, index)
            return c.correct[np.ix_(rows, cols)]

        y = self.y_true[np.searchsorted(self.index, index)]
        return splits, index, y, take(self), take(other)


def correctness_matrices(predictions: pd.DataFrame, config: Sequence[str]) -> dict[tuple, Correctness]:
    """Split × image correctness per (configuration, train size) from the long ``predictions`` table.

    Keys are ``(*config values, train_size)`` with blanks as ``""`` and numbers as floats. Images not scored on
    every split of a configuration are left out (logged).
    """
    _check_columns(predictions, [*config, "train_size", "split", "index", "y_true", "y_pred"], "predictions")
    data = predictions.assign(_ok=(predictions["y_true"].astype(str) == predictions["y_pred"].astype(str))
                              .astype(float))
    keys = [*config, "train_size"]
    data[list(config)] = data[list(config)].astype(object).where(data[list(config)].notna(), "")
    out: dict[tuple, Correctness] = {}
    for key, group in data.groupby(keys, sort=True):
        wide = group.pivot_table(index="split", columns="index", values="_ok", aggfunc="mean")
        complete = wide.columns[wide.notna().all(axis=0)]
        if len(complete) < wide.shape[1]:
            logger.warning("%s: %d test image(s) not scored on every split left out", key,
                           wide.shape[1] - len(complete))
        wide = wide[complete]
        y = group.groupby("index")["y_true"].first().reindex(wide.columns).astype(str)
        out[tuple(_norm(k) for k in key)] = Correctness(np.asarray(wide.index), np.asarray(wide.columns),
                                                        y.to_numpy(), wide.to_numpy())
    return out


# --- summaries --------------------------------------------------------------------------------------------------


def _fixed_without_predictions(group: pd.DataFrame, level: float) -> dict:
    """Fixed test set, per-split accuracies only: image component bounded by ``p̃(1 − p̃) / n_test`` (``p̃`` the
    accuracy counting the pseudo image of :data:`PSEUDO_IMAGE`); conditional on the draws below :data:`MIN_DRAWS`."""
    acc = group["accuracy"].astype(float).to_numpy()
    n_test = float(group["n_test"].astype(float).mean()) if "n_test" in group else math.nan
    p = float(acc.mean())
    method = "two-level, image term bounded by p(1-p)/n (no predictions)"
    info = {"n_splits": int(acc.size), "conditional": acc.size < MIN_DRAWS}
    if not n_test > 1:
        return _interval(p, math.nan, math.nan, level, method, f"{NOT_TESTABLE}: n_test unknown", **info)
    margin = (PSEUDO_IMAGE / 2) / (n_test + PSEUDO_IMAGE)
    centre = min(max(p, margin), 1 - margin)
    terms = [(centre * (1 - centre) / n_test, n_test - 1)]
    note = _conditional_note(acc.size)
    if not info["conditional"]:
        terms.append((float(acc.var(ddof=1)) / acc.size, acc.size - 1))
        note = ""
    total = sum(t for t, _ in terms)
    return _interval(p, math.sqrt(total), _satterthwaite(terms, sum(d for _, d in terms)), level, method, note,
                     centre=centre, **info)


def _summary_intervals(group: pd.DataFrame, matrix: Correctness | None, design: str, level: float
                       ) -> tuple[dict, dict]:
    """(accuracy record, balanced-accuracy record) of one configuration × train size."""
    if design == "fixed_test" and matrix is not None:
        return (two_level_interval(matrix.correct, matrix.y_true, level=level),
                two_level_interval(matrix.correct, matrix.y_true, balanced=True, level=level))
    if design == "fixed_test":
        balanced = _interval(_nanmean(group, "balanced_accuracy"), math.nan, math.nan, level, "none",
                             f"{NOT_TESTABLE}: the balanced-accuracy interval needs predictions")
        return _fixed_without_predictions(group, level), balanced
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
    bal = resampled_interval(group["balanced_accuracy"] if "balanced_accuracy" in group else [math.nan] * len(group),
                             overlap, level)
    return acc, bal


def summarize(
    results: pd.DataFrame,
    predictions: pd.DataFrame | None = None,
    by: Sequence[str] | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """Mean accuracy and balanced accuracy with confidence intervals per configuration × train size.

    Parameters
    ----------
    results : DataFrame
        The long results table (one row per fit).
    predictions : DataFrame, optional
        The long predictions table; under ``design == "fixed_test"`` it gives the two-level interval
        (:func:`two_level_interval`). Without it the image component is bounded by ``p(1 − p)/n_test`` (a
        conservative bound) and the balanced-accuracy interval is NaN.
    by : sequence of str, optional
        Columns identifying a configuration; default :func:`config_columns` and ``train_size``.
    level : float, default=0.95
        Confidence level.

    Returns
    -------
    DataFrame
        One row per group, sorted by ``by``: the ``by`` columns, ``family``/``pretrained`` (when present), ``design``,
        ``accuracy`` (mean over splits), ``draw_min`` and ``draw_median`` (the per-draw accuracies' minimum and
        median: a draw that failed shows here, where a t interval over few draws cannot see it), ``ci_low``,
        ``ci_high`` (within [0, 1]), ``ci_conditional`` (the interval is conditional on fewer than
        :data:`MIN_DRAWS` draws), ``n_splits``, ``n_test`` (test images per split), ``n_test_total``,
        ``balanced_accuracy``, ``balanced_ci_low``, ``balanced_ci_high``, ``ci_method``, ``ci_note`` (why an interval
        is NaN, or what it covers) and the mean times.
    """
    _check_level(level)
    by = _default_by(results, by)
    _check_columns(results, by + ["accuracy"])
    extra = [c for c in ("family", "pretrained") if c in results.columns and c not in by]
    columns = by + extra + ["design", "accuracy", "draw_min", "draw_median", "ci_low", "ci_high", "ci_conditional",
                            "n_splits", "n_test", "n_test_total", "balanced_accuracy", "balanced_ci_low",
                            "balanced_ci_high", "ci_method", "ci_note", *_TIME_COLUMNS]
    if results.empty:
        return pd.DataFrame(columns=columns)
    config = [c for c in by if c != "train_size"]
    matrices = (correctness_matrices(predictions, config)
                if predictions is not None and "train_size" in by and not predictions.empty else {})
    rows = []
    for key, group in results.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        design = design_of(group)
        matrix = matrices.get(_key(group.iloc[0], [*config, "train_size"]))
        acc, bal = _summary_intervals(group, matrix, design, level)
        n_test = group["n_test"] if "n_test" in group else None
        has_n = n_test is not None and n_test.notna().any()
        note = acc["note"]
        if bal["note"] and bal["note"] != note:
            note = "; ".join(filter(None, [note, "balanced accuracy: " + bal["note"]]))
        draws = group["accuracy"].astype(float)
        row = dict(zip(by, key))
        row.update({c: group[c].iloc[0] for c in extra})
        row.update(
            design=design, accuracy=float(draws.mean()), draw_min=float(draws.min()),
            draw_median=float(draws.median()), ci_low=acc["ci_low"], ci_high=acc["ci_high"],
            ci_conditional=bool(acc["conditional"]), n_splits=len(group),
            n_test=int(round(float(n_test.mean()))) if has_n else 0,
            n_test_total=int(n_test.sum()) if has_n else 0,
            balanced_accuracy=_nanmean(group, "balanced_accuracy") if matrix is None else bal["estimate"],
            balanced_ci_low=bal["ci_low"], balanced_ci_high=bal["ci_high"],
            ci_method=acc["method"], ci_note=note,
            **{c: _nanmean(group, c) for c in _TIME_COLUMNS},
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=columns).reset_index(drop=True)


def _nanmean(frame: pd.DataFrame, column: str) -> float:
    if column not in frame or frame[column].isna().all():
        return math.nan
    return float(frame[column].astype(float).mean())


# --- selection on training-side evidence --------------------------------------------------------------------------


def select_best(
    results: pd.DataFrame,
    within: Sequence[str] = ("train_size",),
    by: str = "selection_score",
    fixed: Mapping[str, Mapping] | None = None,
) -> pd.DataFrame:
    """The configuration with the highest mean training-side score per stratum; never looks at test accuracy.

    Parameters
    ----------
    results : DataFrame
        The long results table.
    within : sequence of str, default=("train_size",)
        Strata; add ``"family"`` for one choice per family.
    by : str, default="selection_score"
        Training-side evidence (mean inner-CV accuracy of a tuned head, inner-validation accuracy of a fine-tuned
        model). Rows where it is NaN cannot be chosen by score. Test columns (``accuracy``, ``n_correct``,
        ``balanced_accuracy``) are refused.
    fixed : mapping family -> mapping column -> value, optional
        Configurations fixed in advance, e.g. ``{"finetune": {"method": "finetune_full"}}``: in each stratum of
        that family the matching configuration is chosen whatever the scores. Needs ``"family"`` in ``within``.

    Returns
    -------
    DataFrame
        One row per stratum with a choice: the ``within`` columns, the configuration columns, ``family`` (first
        value), ``selection_score`` (mean), ``n_candidates`` (configurations with a score), ``n_splits`` and
        ``selected_by`` (``"highest mean <by>"`` or ``"fixed in advance"``). Strata with nothing to choose are
        left out and logged.
    """
    if by in ("accuracy", "n_correct", "balanced_accuracy"):
        raise ValueError(f"select_best(by={by!r}) would select on the test set; use a training-side score such as "
                         "'selection_score'")
    within = list(within)
    fixed = dict(fixed or {})
    if fixed and "family" not in within:
        raise ValueError("select_best(fixed=...) needs 'family' in within, e.g. within=('train_size', 'family')")
    config = [c for c in config_columns(results) if c not in within]
    _check_columns(results, within + config)
    score_col = results[by].astype(float) if by in results.columns else pd.Series(np.nan, index=results.index)
    data = results.assign(_score=score_col)
    columns = within + config + [c for c in ("family",) if c not in within] + [
        "selection_score", "n_candidates", "n_splits", "selected_by"]
    rows = []
    strata = data.groupby(within, dropna=False, sort=True) if within else [((), data)]
    for skey, stratum in strata:
        skey = skey if isinstance(skey, tuple) else (skey,)
        where = dict(zip(within, skey))
        candidates = stratum.groupby(config, dropna=False, sort=True).agg(
            _score=("_score", "mean"), n_splits=("_score", "size"),
            family=("family", "first") if "family" in stratum else ("_score", "size")).reset_index()
        scored = candidates[candidates["_score"].notna()]
        family = where.get("family")
        if family in fixed:
            target = fixed[family]
            unknown = [k for k in target if k not in config]
            if unknown:
                raise ValueError(f"fixed[{family!r}] has unknown key(s) {unknown}; valid keys: {config}")
            hit = candidates[np.all([candidates[k].map(_norm) == _norm(v) for k, v in target.items()], axis=0)]
            if len(hit) > 1:
                raise ValueError(f"fixed[{family!r}] = {dict(target)} matches {len(hit)} configurations at "
                                 f"{where}; name more columns")
            if hit.empty:
                logger.warning("fixed configuration %s absent at %s; nothing selected", dict(target), where)
                continue
            chosen, selected_by = hit.iloc[0], "fixed in advance"
        elif scored.empty:
            logger.warning("no configuration has a %r at %s: nothing selected (fix one in advance with fixed=)",
                           by, where)
            continue
        else:
            labels = [config_label(r, config) for r in scored.to_dict("records")]
            order = np.lexsort((labels, -scored["_score"].to_numpy()))
            chosen, selected_by = scored.iloc[order[0]], f"highest mean {by}"
        row = where | {c: chosen[c] for c in config}
        if "family" not in within:
            row["family"] = chosen["family"] if "family" in stratum else math.nan
        row.update(selection_score=float(chosen["_score"]), n_candidates=len(scored),
                   n_splits=int(chosen["n_splits"]), selected_by=selected_by)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


# --- paired comparisons -----------------------------------------------------------------------------------------


def _reference_for(reference: Mapping | pd.DataFrame, where: dict, config_cols: list[str]) -> dict | None:
    """The reference's configuration values in one stratum (None when the selection has none there)."""
    if isinstance(reference, pd.DataFrame):
        rows = reference
        for col, value in where.items():
            if col in rows.columns:
                rows = rows[rows[col].map(_norm) == _norm(value)]
        if len(rows) > 1:
            raise ValueError(f"reference selection has {len(rows)} rows at {where}; pass one family's selection")
        return None if rows.empty else {c: rows.iloc[0][c] for c in config_cols if c in rows.columns}
    unknown = [k for k in reference if k not in config_cols]
    if unknown:
        raise ValueError(f"reference has unknown key(s) {unknown}; valid keys: {config_cols}")
    return dict(reference)


def paired_interval(correct_a: np.ndarray, correct_b: np.ndarray, classes: Sequence | None = None, *,
                    level: float = 0.95) -> dict:
    """Paired difference ``a − b`` of two (J, N) correctness matrices on the same draws and test images.

    The :func:`two_level_interval` record of ``correct_a − correct_b`` on the raw scale (conditional on the draws
    below :data:`MIN_DRAWS`), with ``p`` — the two-level t-test, or McNemar's exact test with a single draw — and
    ``test`` naming it.
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


def _paired_fixed(a: Correctness | None, b: Correctness | None, level: float) -> tuple[dict, float, str, int]:
    """(interval record of a − b, p-value, test name, n_pairs) under a fixed test set."""
    if a is None or b is None:
        record = _interval(math.nan, math.nan, math.nan, level, "none",
                           f"{NOT_TESTABLE}: the fixed-test comparison needs predictions of both configurations")
        return record, math.nan, "none", 0
    splits, _, y, ca, cb = a.aligned(b)
    if splits.size == 0 or y.size == 0:
        record = _interval(math.nan, math.nan, math.nan, level, "none", f"{NOT_TESTABLE}: no shared split/images")
        return record, math.nan, "none", 0
    record = paired_interval(ca, cb, y, level=level)
    return record, record["p"], record["test"], int(splits.size)


def paired_comparison(
    results: pd.DataFrame,
    reference: Mapping | pd.DataFrame,
    predictions: pd.DataFrame | None = None,
    by: Sequence[str] | None = None,
    level: float = 0.95,
    alpha: float = 0.05,
    margin: float = EQUIVALENCE_MARGIN,
) -> pd.DataFrame:
    """Compare every configuration with a pre-selected reference on the same splits (and test images).

    Parameters
    ----------
    results : DataFrame
        The long results table.
    reference : mapping or DataFrame
        The pre-selected configuration: values of the configuration columns (``by`` without ``train_size``), e.g.
        ``{"backbone": "resnet18", "cut": "avgpool", "method": "logistic"}``, or the output of
        :func:`select_best` (one row per train size). There is no default: choosing it by test accuracy would
        bias every comparison in its favour.
    predictions : DataFrame, optional
        Needed under ``design == "fixed_test"`` (two-level paired analysis on ``C_a − C_b``, McNemar exact with one
        split); without it those rows are "not testable".
    by : sequence of str, optional
        Columns identifying a configuration; default :func:`config_columns` and ``train_size``.
    level : float, default=0.95
        Confidence level of the interval of the difference.
    alpha : float, default=0.05
        Level of ``significant`` (Holm-corrected, within each train size) and of the TOST.
    margin : float, default=:data:`EQUIVALENCE_MARGIN`
        Equivalence margin of the TOST (accuracy points).

    Returns
    -------
    DataFrame
        One row per configuration: the ``by`` columns, ``design``, ``reference`` (label), ``is_reference``,
        ``accuracy`` and ``reference_accuracy`` (means over the paired splits), ``n_pairs``, ``diff``
        (configuration − reference), ``diff_ci_low``, ``diff_ci_high``, ``test``, ``t_p`` (the test's p-value),
        ``wilcoxon_p`` (resampled design, indicative), ``p_holm`` (Holm over every testable comparison of the train
        size), ``significant``, ``tost_p``, ``equivalent`` (within ±``margin``), ``margin``, ``few_draws`` and
        ``note``. ``significant`` and ``equivalent`` are ``pd.NA`` when not testable and when the comparison rests
        on fewer than :data:`MIN_DRAWS` paired draws (``few_draws``; the interval is then conditional on those
        draws and no verdict is drawn).
    """
    _check_level(level)
    by = _default_by(results, by)
    pair_keys = [k for k in PAIR_KEYS if k in results.columns]
    _check_columns(results, by + ["accuracy", "split"])
    strata = [c for c in by if c == "train_size"]
    config_cols = [c for c in by if c not in strata]
    if isinstance(reference, Mapping):
        _reference_for(reference, {}, config_cols)
    columns = by + ["design", "reference", "is_reference", "accuracy", "reference_accuracy", "n_pairs", "diff",
                    "diff_ci_low", "diff_ci_high", "test", "t_p", "wilcoxon_p", "p_holm", "significant", "tost_p",
                    "equivalent", "margin", "few_draws", "note"]
    if results.empty or not config_cols:
        return pd.DataFrame(columns=columns)
    matrices = (correctness_matrices(predictions, config_cols)
                if predictions is not None and strata and not predictions.empty else {})
    rows: list[dict] = []
    stratum_groups = results.groupby(strata, dropna=False, sort=True) if strata else [((), results)]
    for skey, stratum in stratum_groups:
        skey = skey if isinstance(skey, tuple) else (skey,)
        where = dict(zip(strata, skey))
        design = design_of(stratum)
        target = _reference_for(reference, where, config_cols)
        wide = stratum.pivot_table(index=pair_keys, columns=config_cols, values="accuracy", aggfunc="mean",
                                   dropna=False).dropna(axis=1, how="all")
        configs = [c if isinstance(c, tuple) else (c,) for c in wide.columns]
        matches = [] if target is None else [
            i for i, c in enumerate(configs)
            if all(_norm(c[j]) == _norm(target[col]) for j, col in enumerate(config_cols) if col in target)]
        if len(matches) > 1:
            raise ValueError(f"reference {target} matches {len(matches)} configurations at {where}; "
                             "name more columns")
        if not matches:
            logger.warning("reference %s absent at %s; skipped", target, where)
            continue
        ref_idx = matches[0]
        ref_values = wide.iloc[:, ref_idx].to_numpy()
        ref_label = config_label(dict(zip(config_cols, configs[ref_idx])), config_cols)
        size_key = tuple(_norm(v) for v in skey)
        ref_matrix = matrices.get(tuple(_norm(v) for v in configs[ref_idx]) + size_key)
        block = []
        for i, cfg in enumerate(configs):
            values = wide.iloc[:, i].to_numpy()
            both = ~np.isnan(values) & ~np.isnan(ref_values)
            row = where | dict(zip(config_cols, cfg))
            row.update(design=design, reference=ref_label, is_reference=i == ref_idx,
                       accuracy=float(values[both].mean()) if both.any() else math.nan,
                       reference_accuracy=float(ref_values[both].mean()) if both.any() else math.nan)
            if design == "fixed_test":
                record, p, test, n_pairs = _paired_fixed(
                    matrices.get(tuple(_norm(v) for v in cfg) + size_key), ref_matrix, level)
                wilcoxon_p = math.nan
            else:
                tests = paired_difference(values[both] - ref_values[both], level, resampling_overlap(stratum))
                record = {"estimate": tests["diff"], "ci_low": tests["diff_ci_low"], "ci_high": tests["diff_ci_high"],
                          "se": tests["se"], "df": tests["df"], "note": tests["note"]}
                p, test, n_pairs, wilcoxon_p = tests["t_p"], "resampled t (Nadeau–Bengio)", int(both.sum()), \
                    tests["wilcoxon_p"]
            few = n_pairs < MIN_DRAWS
            row.update(n_pairs=n_pairs, diff=record["estimate"], diff_ci_low=record["ci_low"],
                       diff_ci_high=record["ci_high"], test=test, t_p=p, wilcoxon_p=wilcoxon_p, few_draws=few,
                       note=record["note"], **tost(record, margin, alpha))
            if few and not math.isnan(record["estimate"]):
                row.update(equivalent=pd.NA, note="; ".join(filter(None, [
                    row["note"], f"no verdict from {n_pairs} paired draw{'s' if n_pairs != 1 else ''} (fewer "
                                 f"than {MIN_DRAWS})"])))
            if i == ref_idx:
                row.update(t_p=math.nan, wilcoxon_p=math.nan, tost_p=math.nan, equivalent=pd.NA, note="reference")
            block.append(row)
        adjusted = holm([r["t_p"] for r in block])
        for row, p in zip(block, adjusted):
            row["p_holm"] = float(p)
            row["significant"] = pd.NA if math.isnan(p) or row["few_draws"] else bool(p < alpha)
        rows.extend(block)
    out = pd.DataFrame(rows, columns=columns)
    for col in ("significant", "equivalent"):
        out[col] = out[col].astype("boolean")
    out["few_draws"] = out["few_draws"].astype(bool)
    return out


# --- crossover ----------------------------------------------------------------------------------------------------


def _isotonic(y: np.ndarray) -> np.ndarray:
    """Non-decreasing least-squares fit of every row of ``y`` (rows × points, equal weights; NaN rows stay NaN):
    ``fit_i = max_{j ≤ i} min_{k ≥ i} mean(y_j..y_k)``, vectorised over rows."""
    n = y.shape[1]
    sums = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(y, axis=1)], axis=1)
    j, k = np.triu_indices(n)
    means = np.full((y.shape[0], n, n), np.nan)
    means[:, j, k] = (sums[:, k + 1] - sums[:, j]) / (k - j + 1)
    fit = np.empty_like(y)
    for i in range(n):
        fit[:, i] = np.max(np.min(means[:, : i + 1, i:], axis=2), axis=1)
    return fit


def _crossings(log_sizes: np.ndarray, diffs: np.ndarray) -> np.ndarray:
    """Per row of ``diffs`` (resamples × sizes), where the monotone (isotonic) fit of fine-tuning − frozen in log
    size turns positive, interpolated linearly in log size: ``-inf`` when already positive at the smallest size,
    ``+inf`` when never, NaN when a row has a NaN. A monotone fit pools sizes whose order noise reversed, so a
    single noisy size below the crossing cannot be taken for it."""
    diffs = np.atleast_2d(np.asarray(diffs, dtype=float))
    out = np.full(diffs.shape[0], np.inf)
    bad = np.isnan(diffs).any(axis=1)
    fit = _isotonic(np.where(bad[:, None], 0.0, diffs))
    positive = fit > 0
    out[positive[:, 0]] = -np.inf
    rows = np.flatnonzero(~positive[:, 0] & positive.any(axis=1))
    j = positive[rows].argmax(axis=1)
    d0, d1 = fit[rows, j - 1], fit[rows, j]
    t = -d0 / (d1 - d0)
    out[rows] = np.exp(log_sizes[j - 1] + t * (log_sizes[j] - log_sizes[j - 1]))
    out[bad] = np.nan
    return out


@dataclass(frozen=True)
class _SizeData:
    """Paired fine-tuning − frozen data at one train size: ``diff[j, n]`` (fixed test) or ``diff[j]``."""

    size: float
    splits: np.ndarray
    index: np.ndarray | None
    y_true: np.ndarray | None
    diff: np.ndarray
    overlap: float


def _size_value(group: pd.DataFrame) -> float:
    size = pd.to_numeric(group["train_size"].iloc[0], errors="coerce")
    if not size > 0:
        raise ValueError(f"crossover needs a positive numeric train_size (images per class); got "
                         f"{group['train_size'].iloc[0]!r}")
    return float(size)


def _crossover_data(data: pd.DataFrame, selected: pd.DataFrame, matrices: dict, config: list[str], design: str,
                    families: tuple[str, str]) -> tuple[list[_SizeData], list[dict]]:
    """Per train size with both families selected: the paired data and the curve row."""
    sizes, curves = [], []
    for size_key, group in data.groupby("train_size", sort=True):
        chosen = selected[selected["train_size"].map(_norm) == _norm(size_key)].set_index("family")
        if not set(families) <= set(chosen.index):
            continue
        frozen, tuned = ({c: chosen.loc[f, c] for c in config} for f in families)
        size = _size_value(group)
        if design == "fixed_test":
            m_fr = matrices.get(_key(frozen, config) + (_norm(size_key),))
            m_ft = matrices.get(_key(tuned, config) + (_norm(size_key),))
            if m_fr is None or m_ft is None:
                continue
            splits, index, y, c_ft, c_fr = m_ft.aligned(m_fr)
            if splits.size == 0 or index.size == 0:
                continue
            item = _SizeData(size, splits, index, y, c_ft - c_fr, 0.0)
            record = two_level_interval(item.diff, y, scale="raw")
            acc_fr, acc_ft = float(c_fr.mean()), float(c_ft.mean())
        else:
            def per_split(cfg: dict) -> pd.Series:
                hit = group[np.all([group[k].map(_norm) == _norm(v) for k, v in cfg.items()], axis=0)]
                return hit.groupby("split")["accuracy"].mean()

            fr, ft = per_split(frozen), per_split(tuned)
            common = fr.index.intersection(ft.index)
            if common.empty:
                continue
            item = _SizeData(size, np.asarray(common), None, None, (ft[common] - fr[common]).to_numpy(),
                             resampling_overlap(group))
            record = resampled_interval(item.diff, item.overlap, scale="raw")
            acc_fr, acc_ft = float(fr[common].mean()), float(ft[common].mean())
        sizes.append(item)
        curves.append({"train_size": size_key, "frozen_best": config_label(frozen, config), "frozen_accuracy": acc_fr,
                       "finetune_best": config_label(tuned, config), "finetune_accuracy": acc_ft,
                       "difference": record["estimate"], "difference_ci_low": record["ci_low"],
                       "difference_ci_high": record["ci_high"], "n_pairs": int(item.splits.size),
                       "note": record["note"]})
    return sizes, curves


def _draw_counts(n_ids: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap counts of ``n_ids`` draw ids (n_boot × n_ids), every resample holding at least 2 distinct ids (a
    resample of one draw has no draw variance and would pass for certainty); all ones with a single id."""
    if n_ids < 2:
        return np.ones((n_boot, n_ids))
    counts = rng.multinomial(n_ids, np.full(n_ids, 1.0 / n_ids), size=n_boot)
    while (redo := np.flatnonzero(np.count_nonzero(counts, axis=1) < 2)).size:
        counts[redo] = rng.multinomial(n_ids, np.full(n_ids, 1.0 / n_ids), size=redo.size)
    return counts.astype(float)


def _bootstrap_differences(items: list[_SizeData], design: str, n_boot: int, rng: np.random.Generator
                           ) -> np.ndarray | None:
    """Resampled mean differences (n_boot × sizes): split ids resampled jointly across sizes (at least 2 distinct
    ids in every resample) and, under a fixed test set, test images too (stratified by class, the same images for
    every size); NaN where a resample holds no split of a size. None when there is nothing to resample."""
    ids = np.unique(np.concatenate([it.splits for it in items]))
    if design != "fixed_test" and ids.size < 2:
        return None
    counts = _draw_counts(ids.size, n_boot, rng)
    out = np.empty((n_boot, len(items)))
    image_weights = None
    if design == "fixed_test":
        index = items[0].index
        for it in items[1:]:
            index = np.intersect1d(index, it.index)
        y = items[0].y_true[np.searchsorted(items[0].index, index)]
        image_weights = np.zeros((n_boot, index.size))
        for c in np.unique(y):
            cols = np.flatnonzero(y == c)
            image_weights[:, cols] = rng.multinomial(cols.size, np.full(cols.size, 1.0 / cols.size), size=n_boot)
    for s, it in enumerate(items):
        weights = counts[:, np.searchsorted(ids, it.splits)]
        total = weights.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if image_weights is None:
                boot = weights @ it.diff / total
                centre = float(it.diff.mean())
                out[:, s] = centre + math.sqrt(1 + it.splits.size * it.overlap) * (boot - centre)
            else:
                d = it.diff[:, np.searchsorted(it.index, index)]
                out[:, s] = ((weights @ d) * image_weights).sum(axis=1) / (total * index.size)
    return out


def _crossing(items: list[_SizeData], design: str, n_boot: int, level: float, random_state: int) -> dict:
    """Point estimate and bootstrap interval of the crossing from per-size paired data."""
    log_sizes = np.log([it.size for it in items])
    diff = np.array([float(it.diff.mean()) for it in items])
    out = {"estimate": float(_crossings(log_sizes, diff)[0]), "difference": diff, "ci": None,
           "p_crossing": None, "resamples": {},
           "method": ("two-way bootstrap over splits × test images" if design == "fixed_test"
                      else "bootstrap over splits, deviations scaled by the Nadeau–Bengio factor")}
    boot = _bootstrap_differences(items, design, n_boot, np.random.default_rng(random_state)) if n_boot else None
    if boot is None:
        return out
    crossings = _crossings(log_sizes, boot)
    defined = crossings[~np.isnan(crossings)]
    out["resamples"] = {"total": n_boot, "crossing": int(np.isfinite(defined).sum()),
                        "finetune_ahead": int((defined == -np.inf).sum()),
                        "never_ahead": int((defined == np.inf).sum()), "undefined": int(n_boot - defined.size)}
    if defined.size:
        out["p_crossing"] = float(np.isfinite(defined).mean())
        q = np.quantile(defined, [0.5 - level / 2, 0.5 + level / 2], method="inverted_cdf")
        out["ci"] = (float(q[0]), float(q[1]))
    return out


def crossing_interval(
    sizes: Sequence[float],
    differences: Sequence[np.ndarray],
    classes: Sequence | None = None,
    *,
    design: str = "fixed_test",
    overlaps: Sequence[float] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    random_state: int = 0,
) -> dict:
    """Array-level core of :func:`crossover`: crossing of per-size paired differences and its bootstrap interval.

    Parameters
    ----------
    sizes : sequence of float
        Images per class, increasing.
    differences : sequence of arrays
        Per size, fine-tuning − frozen: a (J, N) correctness difference under ``"fixed_test"`` (row ``j`` is split
        id ``j`` at every size, columns the same test images), a (J,) accuracy difference under ``"resampled"``.
    classes : sequence of length N, optional
        True class of each test image (strata of the image resampling).
    design : {"fixed_test", "resampled"}
    overlaps : sequence of float, optional
        ``n_test / n_train`` per size (resampled design).
    n_boot, level, random_state
        As in :func:`crossover`.

    Returns
    -------
    dict
        ``estimate`` (``-inf``/``inf`` without a crossing), ``difference`` (per size), ``ci``, ``p_crossing``,
        ``resamples`` and ``method``.
    """
    _check_level(level)
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {list(DESIGNS)}, got {design!r}")
    overlaps = [0.0] * len(sizes) if overlaps is None else list(overlaps)
    items = []
    for size, d, overlap in zip(sizes, differences, overlaps):
        d = np.asarray(d, dtype=float)
        if design == "fixed_test":
            d = np.atleast_2d(d)
            index = np.arange(d.shape[1])
            y = np.zeros(d.shape[1], dtype=int) if classes is None else np.asarray(classes)
            items.append(_SizeData(float(size), np.arange(d.shape[0]), index, y, d, 0.0))
        else:
            items.append(_SizeData(float(size), np.arange(d.size), None, None, d, float(overlap)))
    return _crossing(items, design, n_boot, level, random_state)


def crossover(
    results: pd.DataFrame,
    predictions: pd.DataFrame | None = None,
    *,
    selected: pd.DataFrame | None = None,
    fixed: Mapping[str, Mapping] | None = None,
    frozen_family: str = "frozen",
    finetune_family: str = "finetune",
    n_boot: int = 2000,
    level: float = 0.95,
    random_state: int = 0,
) -> dict:
    """Images per class at which the pre-selected fine-tuning configuration overtakes the pre-selected frozen one.

    At each train size the two configurations are those chosen on training-side evidence (:func:`select_best`
    per train size and family, or ``fixed`` in advance) — never by test accuracy. Their paired difference
    (fine-tuning − frozen, same splits and, under a fixed test set, same test images) is computed per train size;
    the crossover is where a monotone (isotonic) fit of these differences in log(images per class) turns positive,
    interpolated linearly in log size. With fewer than :data:`MIN_DRAWS` paired draws at some size no crossover is
    concluded (``status == "too_few_draws"``): the per-size differences are reported, conditional on those draws.

    The interval is a percentile bootstrap that recomputes the crossing: split ids resampled jointly across train
    sizes (at least 2 distinct ids per resample) and, under ``design == "fixed_test"``, test images too (stratified
    by class; two-way bootstrap). In the
    resampled design the split-bootstrap deviations are scaled by the Nadeau–Bengio factor
    ``sqrt(1 + J · n_test/n_train)``. No resample is dropped silently: resamples without a crossing count as
    ``-inf`` (fine-tuning ahead everywhere) or ``+inf`` (never ahead) inside the quantiles, and every kind is
    counted in ``resamples``.

    Parameters
    ----------
    results : DataFrame
        The long results table; needs ``train_size`` (numeric images per class), ``split``, ``accuracy``,
        ``family`` and, for selection, ``selection_score``.
    predictions : DataFrame, optional
        The long predictions table; required under ``design == "fixed_test"``.
    selected : DataFrame, optional
        Output of ``select_best(results, within=("train_size", "family"), ...)``; computed (with ``fixed``) when
        omitted.
    fixed : mapping family -> configuration, optional
        Configurations fixed in advance (passed to :func:`select_best`).
    frozen_family, finetune_family : str
        Family values of the two groups compared.
    n_boot : int, default=2000
        Bootstrap resamples (0: the point estimate only).
    level : float, default=0.95
        Confidence level.
    random_state : int, default=0
        Seed of the bootstrap.

    Returns
    -------
    dict
        ``estimate`` (images/class; None without a crossing inside the data), ``ci`` ((low, high), ``-inf`` /
        ``inf`` meaning below the smallest / beyond the largest size; None when nothing can be resampled),
        ``statement``, ``status`` ("crossover", "not_reached", "finetune_ahead", "too_few_draws", "not_measured"),
        ``design``,
        ``method``, ``min_train_size``, ``max_train_size``, ``p_crossing`` (fraction of resamples with a crossing
        inside the data), ``resamples`` (counts: ``total``, ``crossing``, ``finetune_ahead``, ``never_ahead``,
        ``undefined``), ``largest`` (difference at the largest size: ``estimate``, ``ci_low``, ``ci_high``) and
        ``curves`` (DataFrame: ``train_size``, ``frozen_best``, ``frozen_accuracy``, ``finetune_best``,
        ``finetune_accuracy``, ``difference`` with ``difference_ci_low``/``_high``, ``n_pairs``, ``note``).
    """
    _check_level(level)
    out = {"estimate": None, "ci": None, "statement": "", "status": "not_measured", "design": None, "method": "",
           "min_train_size": None, "max_train_size": None, "p_crossing": None, "resamples": {}, "largest": None,
           "curves": pd.DataFrame()}
    if results.empty:
        out["statement"] = "Crossover not measured in this run (no results)."
        return out
    _check_columns(results, ["train_size", "split", "accuracy", "family"])
    families = (frozen_family, finetune_family)
    absent = [f for f in families if f not in set(results["family"].astype(str))]
    if absent:
        out["statement"] = f"Crossover not measured in this run (no {' and no '.join(absent)} results)."
        return out
    data = results[results["family"].astype(str).isin(families)]
    design = out["design"] = design_of(data)
    if design == "fixed_test" and predictions is None:
        out["statement"] = "Crossover not measured: under a fixed test set it needs the predictions table."
        return out
    config = config_columns(results)
    if selected is None:
        selected = select_best(data, within=("train_size", "family"), fixed=fixed)
    selected = selected[selected["family"].astype(str).isin(families)]
    matrices = correctness_matrices(predictions, config) if design == "fixed_test" else {}
    items, curves = _crossover_data(data, selected, matrices, config, design, families)
    out["curves"] = pd.DataFrame(curves)
    if not items:
        out["statement"] = ("Crossover not measured in this run (no train size with a pre-selected configuration of "
                            "both families: give selection scores or fix configurations in advance).")
        return out
    lo_size, hi_size = items[0].size, items[-1].size
    out.update(min_train_size=int(lo_size), max_train_size=int(hi_size), largest={
        k: curves[-1][v] for k, v in (("estimate", "difference"), ("ci_low", "difference_ci_low"),
                                      ("ci_high", "difference_ci_high"))})
    fewest = min(items, key=lambda it: it.splits.size)
    found = (_crossing(items, design, n_boot, level, random_state) if fewest.splits.size >= MIN_DRAWS else
             {"estimate": math.nan, "method": "", "resamples": {}, "p_crossing": None, "ci": None})
    out.update(method=found["method"], resamples=found["resamples"], p_crossing=found["p_crossing"],
               ci=found["ci"])
    estimate = found["estimate"]
    ci_text = ""
    if out["ci"] is not None:
        q, r = out["ci"], out["resamples"]
        def bound(value: float) -> str:
            if math.isinf(value):
                return f"below {int(lo_size)}" if value < 0 else "beyond the data"
            return f"{value:.0f}"

        low, high = bound(q[0]), bound(q[1])
        ci_text = (f" ({round(level * 100)}% CI {low} to {high}; {out['method']}, {r['total']} resamples: "
                   f"{r['crossing']} with a crossing, {r['finetune_ahead']} fine-tuning ahead everywhere, "
                   f"{r['never_ahead']} never ahead, {r['undefined']} undefined)")
    def at(curve: dict, size: float) -> str:
        return (f"fine-tuning − frozen at {int(size)} images/class: {curve['difference']:+.3f}"
                + ("" if math.isnan(curve["difference_ci_low"]) else
                   f" [{curve['difference_ci_low']:+.3f}, {curve['difference_ci_high']:+.3f}]")
                + (f" ({curve['note']})" if curve["note"] else ""))

    last = curves[-1]
    last_text = at(last, hi_size)
    names = (f"configurations pre-selected on training-side evidence: {last['finetune_best']} (fine-tuning), "
             f"{last['frozen_best']} (frozen)")
    fit = "In a monotone fit of the per-size differences (log size)"
    if math.isnan(estimate):
        k = int(fewest.splits.size)
        out["status"] = "too_few_draws"
        out["statement"] = (f"Crossover not concluded: at {int(fewest.size)} images/class the two families share "
                            f"{k} training draw{'s' if k != 1 else ''}, fewer than the {MIN_DRAWS} a verdict needs; "
                            "the per-size differences are conditional on those draws and cannot tell where, or "
                            f"whether, fine-tuning overtakes frozen features; {names}; {last_text}.")
    elif estimate == math.inf:
        out["status"] = "not_reached"
        out["statement"] = (f"{fit}, fine-tuning did not overtake the pre-selected frozen-feature configuration "
                            f"within the data (up to {int(hi_size)} images/class); {names}; {last_text}.")
    elif estimate == -math.inf:
        out["status"] = "finetune_ahead"
        out["statement"] = (f"{fit}, fine-tuning was already ahead of the pre-selected frozen-feature configuration "
                            f"at the smallest size measured ({at(curves[0], lo_size)}); a crossing, if any, lies "
                            f"below; {names}; {last_text}.")
    else:
        out.update(status="crossover", estimate=estimate)
        out["statement"] = (f"{fit}, fine-tuning overtakes the pre-selected frozen-feature configuration at about "
                            f"{estimate:.0f} images/class{ci_text}, measured between {int(lo_size)} and "
                            f"{int(hi_size)} images/class; {names}; {last_text}.")
    if out["status"] != "crossover" and out["ci"] is not None:
        out["statement"] += f" Crossing point{ci_text}."
    return out

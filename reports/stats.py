"""Statistics over repeated splits: confidence intervals, paired comparisons, fine-tuning crossover.

Every function takes the long ``results`` table of :mod:`pipelines.compare` (one row per backbone × cut × method ×
train_size × split, see ``results.csv`` in the contracts) and returns plain numbers or DataFrames.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

logger = logging.getLogger(__name__)

CONFIG_COLUMNS: tuple[str, ...] = ("backbone", "cut", "method")
VARIANT_COLUMNS: tuple[str, ...] = ("pooling", "augment")
PAIR_KEYS: tuple[str, ...] = ("train_size", "split")
_TIME_COLUMNS = ("fit_time_s", "predict_time_s", "extract_time_s")


def config_columns(results: pd.DataFrame) -> list[str]:
    """Columns that identify a configuration: backbone, cut and method, plus pooling and augmentation policy where
    they take more than one non-blank value in ``results`` (so runs that differ only there are never merged)."""
    fixed = [c for c in CONFIG_COLUMNS if c in results.columns]

    def varies(column: str) -> bool:
        values = results[column].dropna()
        return values[values.astype(str) != ""].nunique() > 1

    return fixed + [c for c in VARIANT_COLUMNS if c in results.columns and varies(c)]


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
    """Mean over splits with a Student-t confidence interval.

    Repeated splits of one dataset share images, so their accuracies are positively correlated and the naive
    ``sd / sqrt(J)`` is too small.  With ``overlap = n_test / n_train`` the variance of the mean is the corrected
    resampled one of Nadeau & Bengio (2003), ``sd² · (1/J + n_test/n_train)``; ``overlap=0`` gives the plain
    t-interval.

    With a single split (or several identical values) the t-interval is undefined or of zero width; if the
    per-split counts ``n_correct`` / ``n_test`` are given, the Wilson interval of the pooled counts is returned
    instead (it reflects test-set sampling only, not the split-to-split variance). Without counts the bounds are NaN
    for a single value. NaN values are ignored.

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


def summarize(
    results: pd.DataFrame, by: Sequence[str] | None = None, level: float = 0.95
) -> pd.DataFrame:
    """Mean accuracy with a confidence interval per configuration.

    Parameters
    ----------
    results : DataFrame
        The long results table (one row per split).
    by : sequence of str, optional
        Columns identifying a configuration; default :func:`config_columns` and ``train_size``.
    level : float, default=0.95
        Confidence level of :func:`mean_ci` (t-interval over splits; Wilson of the pooled counts for one split).

    Returns
    -------
    DataFrame
        One row per configuration, sorted by ``by``: the ``by`` columns, ``family`` and ``pretrained`` (when present
        and not in ``by``; first value of the group), ``accuracy`` (mean over splits), ``ci_low``, ``ci_high``
        (clipped to [0, 1]), ``n_splits`` (rows in the group), ``n_test`` (test images per split, rounded mean),
        ``n_test_total``, ``balanced_accuracy`` and the mean ``fit_time_s``, ``predict_time_s``,
        ``extract_time_s``.
    """
    by = _default_by(results, by)
    _check_columns(results, by + ["accuracy"])
    extra = [c for c in ("family", "pretrained") if c in results.columns and c not in by]
    columns = by + extra + ["accuracy", "ci_low", "ci_high", "n_splits", "n_test", "n_test_total",
                            "balanced_accuracy", *_TIME_COLUMNS]
    if results.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in results.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        n_test = group["n_test"] if "n_test" in group else None
        n_correct = group["n_correct"] if "n_correct" in group else None
        mean, low, high = mean_ci(group["accuracy"], level, n_correct=n_correct, n_test=n_test,
                                  overlap=resampling_overlap(group))
        row = dict(zip(by, key))
        row.update({c: group[c].iloc[0] for c in extra})
        row.update(
            accuracy=mean,
            ci_low=float(np.clip(low, 0.0, 1.0)) if not math.isnan(low) else math.nan,
            ci_high=float(np.clip(high, 0.0, 1.0)) if not math.isnan(high) else math.nan,
            n_splits=len(group),
            n_test=int(round(float(n_test.mean()))) if n_test is not None and n_test.notna().any() else 0,
            n_test_total=int(n_test.sum()) if n_test is not None and n_test.notna().any() else 0,
            balanced_accuracy=_nanmean(group, "balanced_accuracy"),
            **{c: _nanmean(group, c) for c in _TIME_COLUMNS},
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=columns).reset_index(drop=True)


def resampling_overlap(rows: pd.DataFrame) -> float:
    """``mean(n_test) / mean(n_train)`` of a group of splits (0 when unknown), for the Nadeau–Bengio correction."""
    if {"n_test", "n_train"} - set(rows.columns) or rows["n_train"].astype(float).mean() <= 0:
        return 0.0
    return float(rows["n_test"].astype(float).mean() / rows["n_train"].astype(float).mean())


def _nanmean(frame: pd.DataFrame, column: str) -> float:
    if column not in frame or frame[column].isna().all():
        return math.nan
    return float(frame[column].astype(float).mean())


def config_label(values: dict | pd.Series, columns: Sequence[str]) -> str:
    """``"resnet18 / layer4 / linear_svm"``: a configuration's values joined, empty values skipped."""
    parts = [str(values[c]) for c in columns if c in values and not _is_blank(values[c])]
    return " / ".join(parts) if parts else "(all)"


def _is_blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


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
    """Mean of paired differences, its t-interval, paired (corrected resampled) t-test and Wilcoxon p-values.

    Returns a dict with ``diff``, ``diff_ci_low``, ``diff_ci_high``, ``t_p`` and ``wilcoxon_p``.
    ``overlap = n_test / n_train`` applies the Nadeau–Bengio variance correction to the interval and the t-test.
    The same non-zero difference on every split has no variance estimate: interval and t-test are then NaN (not
    testable), not a certainty.
    """
    n = diff.size
    out = {"diff": float(diff.mean()) if n else math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan,
           "t_p": math.nan, "wilcoxon_p": math.nan}
    if n < 2:
        return out
    if np.allclose(diff, diff[0]):
        if np.allclose(diff, 0.0):
            out.update(diff_ci_low=0.0, diff_ci_high=0.0, t_p=1.0, wilcoxon_p=1.0)
        else:
            out["wilcoxon_p"] = float(sps.wilcoxon(diff).pvalue)
        return out
    _, low, high = mean_ci(diff, level, overlap=overlap)
    t = float(diff.mean()) / (float(diff.std(ddof=1)) * math.sqrt(1 / n + overlap))
    out.update(diff_ci_low=low, diff_ci_high=high, t_p=float(2 * sps.t.sf(abs(t), n - 1)))
    nonzero = diff[~np.isclose(diff, 0.0)]
    out["wilcoxon_p"] = float(sps.wilcoxon(nonzero).pvalue) if nonzero.size else 1.0
    return out


def paired_comparison(
    results: pd.DataFrame,
    by: Sequence[str] | None = None,
    reference: dict | None = None,
    level: float = 0.95,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Compare every configuration with the best one (or ``reference``) on the same splits.

    Configurations are the ``by`` columns; when ``train_size`` is among them, each train size is compared
    separately (a configuration is only compared with one trained on the same amount of data). Accuracies are
    paired on ``(train_size, split)``; only the pairs present in both configurations count.

    Parameters
    ----------
    results : DataFrame
        The long results table.
    by : sequence of str, optional
        Columns identifying a configuration; default :func:`config_columns` and ``train_size``.
    reference : dict, optional
        Values of the configuration columns (``by`` without ``train_size``) of the reference, e.g.
        ``{"backbone": "resnet18", "cut": "avgpool", "method": "logistic"}``. Default: the configuration with the
        highest mean accuracy (per train size).
    level : float, default=0.95
        Confidence level of the interval of the mean difference (t-interval).
    alpha : float, default=0.05
        Level of ``significant`` (Holm-corrected paired t-test).

    Returns
    -------
    DataFrame
        One row per configuration: the ``by`` columns, ``reference`` (label of the reference), ``is_reference``,
        ``accuracy`` and ``reference_accuracy`` (means over the paired splits), ``n_pairs``, ``diff``
        (configuration − reference), ``diff_ci_low``, ``diff_ci_high``, ``t_p`` (paired t-test), ``wilcoxon_p``
        (signed-rank test; 1.0 when all differences are zero), ``p_holm`` (Holm correction of ``t_p`` within each
        train size) and ``significant`` (``p_holm < alpha``). The t-test and interval use the Nadeau–Bengio
        corrected variance (splits share images); the Wilcoxon test is uncorrected and only indicative.
    """
    _check_level(level)
    by = _default_by(results, by)
    pair_keys = [k for k in PAIR_KEYS if k in results.columns]
    _check_columns(results, by + ["accuracy", "split"])
    strata = [c for c in by if c == "train_size"]
    config_cols = [c for c in by if c not in strata]
    if reference is not None:
        unknown = [k for k in reference if k not in config_cols]
        if unknown:
            raise ValueError(f"reference has unknown key(s) {unknown}; valid keys: {config_cols}")
    columns = by + ["reference", "is_reference", "accuracy", "reference_accuracy", "n_pairs", "diff",
                    "diff_ci_low", "diff_ci_high", "t_p", "wilcoxon_p", "p_holm", "significant"]
    if results.empty or not config_cols:
        return pd.DataFrame(columns=columns)
    rows: list[dict] = []
    stratum_groups = results.groupby(strata, dropna=False, sort=True) if strata else [((), results)]
    for skey, stratum in stratum_groups:
        skey = skey if isinstance(skey, tuple) else (skey,)
        wide = stratum.pivot_table(index=pair_keys, columns=config_cols, values="accuracy", aggfunc="mean",
                                   dropna=False)
        wide = wide.dropna(axis=1, how="all")
        if wide.shape[1] == 0:
            continue
        configs = [c if isinstance(c, tuple) else (c,) for c in wide.columns]
        means = wide.mean(axis=0).to_numpy()
        if reference is None:
            ref_idx = int(np.nanargmax(means))
        else:
            target = tuple(reference.get(c) for c in config_cols)
            matches = [i for i, c in enumerate(configs)
                       if all(reference.get(col) is None or c[j] == target[j] for j, col in enumerate(config_cols))]
            if not matches:
                logger.warning("reference %s absent at %s; skipped", reference, dict(zip(strata, skey)))
                continue
            ref_idx = matches[0]
        ref_values = wide.iloc[:, ref_idx].to_numpy()
        ref_label = config_label(dict(zip(config_cols, configs[ref_idx])), config_cols)
        block = []
        for i, cfg in enumerate(configs):
            values = wide.iloc[:, i].to_numpy()
            both = ~np.isnan(values) & ~np.isnan(ref_values)
            diff = values[both] - ref_values[both]
            row = dict(zip(strata, skey)) | dict(zip(config_cols, cfg))
            row.update(reference=ref_label, is_reference=i == ref_idx,
                       accuracy=float(values[both].mean()) if both.any() else math.nan,
                       reference_accuracy=float(ref_values[both].mean()) if both.any() else math.nan,
                       n_pairs=int(both.sum()))
            tests = paired_difference(diff, level, resampling_overlap(stratum))
            if i == ref_idx:
                tests.update(t_p=math.nan, wilcoxon_p=math.nan)
            row.update(tests)
            block.append(row)
        adjusted = holm([r["t_p"] for r in block])
        for row, p in zip(block, adjusted):
            row["p_holm"] = float(p)
            row["significant"] = bool(not math.isnan(p) and p < alpha)
        rows.extend(block)
    return pd.DataFrame(rows, columns=columns)


def _family_column(results: pd.DataFrame) -> pd.Series:
    """The ``family`` column, or one inferred from method names when absent."""
    if "family" in results.columns:
        return results["family"].astype(str)
    method = results["method"].astype(str)
    return pd.Series(
        np.select([method.str.startswith("finetune"), method.eq("scratch"), method.str.contains("pixel")],
                  ["finetune", "scratch", "pixels"], default="frozen"),
        index=results.index,
    )


def _family_best(means: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best mean over the configurations selected by ``mask`` (axis 0) and the index of the winner."""
    filled = np.where(np.isnan(means[mask]), -np.inf, means[mask])
    best = filled.max(axis=0)
    winner = np.flatnonzero(mask)[filled.argmax(axis=0)]
    return np.where(np.isinf(best), np.nan, best), winner


def _first_crossing(sizes: np.ndarray, diff: np.ndarray) -> float:
    """Images per class where ``diff`` (fine-tuning − frozen) first becomes positive, log-linear interpolation.

    ``-inf`` when fine-tuning is already ahead at the smallest size, ``+inf`` when it never gets ahead, NaN when
    the difference is undefined everywhere.
    """
    ok = ~np.isnan(diff)
    sizes, diff = sizes[ok], diff[ok]
    if sizes.size == 0:
        return math.nan
    if diff[0] > 0:
        return -math.inf
    for j in range(1, sizes.size):
        if diff[j] > 0:
            x0, x1 = math.log(sizes[j - 1]), math.log(sizes[j])
            t = -diff[j - 1] / (diff[j] - diff[j - 1])
            return float(math.exp(x0 + t * (x1 - x0)))
    return math.inf


def crossover(
    results: pd.DataFrame,
    frozen_family: str = "frozen",
    finetune_family: str = "finetune",
    config: Sequence[str] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    random_state: int = 0,
) -> dict:
    """Images per class at which the best fine-tuning method overtakes the best frozen-feature method.

    At each train size, the best configuration of each family (highest mean accuracy over splits) defines the
    family's curve; the crossover is the first train size where the difference (fine-tuning − frozen) turns
    positive, interpolated linearly in log(images per class). The confidence interval is a percentile bootstrap
    over split ids (the same resampled ids for every configuration and train size, best configurations re-chosen
    in each resample). Resamples without a crossing count as "beyond the data" (upper bound ``inf``) or "before
    the smallest size" (lower bound at the smallest size).

    Parameters
    ----------
    results : DataFrame
        The long results table; needs ``train_size``, ``split``, ``accuracy`` and ``family`` (inferred from method
        names when absent).
    frozen_family, finetune_family : str
        Family values of the two groups compared.
    config : sequence of str, optional
        Columns identifying a configuration within a family; default :func:`config_columns`.
    n_boot : int, default=1000
        Bootstrap resamples.
    level : float, default=0.95
        Confidence level.
    random_state : int, default=0
        Seed of the bootstrap.

    Returns
    -------
    dict
        ``estimate`` (float images/class; None when there is no crossing inside the data, including when
        fine-tuning is already ahead at the smallest size), ``ci`` ((low, high), high possibly ``inf``, or None),
        ``statement`` (one sentence), ``status`` ("crossover", "not_reached", "finetune_ahead", "not_measured"),
        ``min_train_size``, ``max_train_size``, ``p_crossing`` (fraction of resamples with a crossing inside the
        data) and ``curves`` (DataFrame: ``train_size``, ``frozen_best``, ``frozen_accuracy``, ``finetune_best``,
        ``finetune_accuracy``, ``difference``).
    """
    _check_level(level)
    out = {"estimate": None, "ci": None, "statement": "", "status": "not_measured", "min_train_size": None,
           "max_train_size": None, "p_crossing": None, "curves": pd.DataFrame()}
    if results.empty:
        out["statement"] = "Crossover not measured in this run (no results)."
        return out
    _check_columns(results, ["train_size", "split", "accuracy"])
    config = config_columns(results) if config is None else [c for c in config if c in results.columns]
    family = _family_column(results)
    present = set(family)
    absent = [f for f in (frozen_family, finetune_family) if f not in present]
    if absent:
        out["statement"] = f"Crossover not measured in this run (no {' and no '.join(absent)} results)."
        return out
    data = results.assign(_family=family)
    data = data[data["_family"].isin([frozen_family, finetune_family]) & data["accuracy"].notna()]
    sizes = np.sort(data["train_size"].unique()).astype(float)
    splits = np.sort(data["split"].unique())
    data = data.assign(_cfg=[config_label(r, config) for r in data[config].to_dict("records")])
    cfgs = data[["_family", "_cfg"]].drop_duplicates().sort_values(["_family", "_cfg"])
    acc = np.full((len(cfgs), sizes.size, splits.size), np.nan)
    cfg_index = {key: i for i, key in enumerate(zip(cfgs["_family"], cfgs["_cfg"]))}
    size_index = {s: i for i, s in enumerate(sizes)}
    split_index = {s: i for i, s in enumerate(splits)}
    grouped = data.groupby(["_family", "_cfg", "train_size", "split"])["accuracy"].mean()
    for (fam, cfg, size, split), value in grouped.items():
        acc[cfg_index[(fam, cfg)], size_index[float(size)], split_index[split]] = value
    is_ft = (cfgs["_family"] == finetune_family).to_numpy()
    labels = cfgs["_cfg"].to_numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(acc, axis=2)
        draws = np.random.default_rng(random_state).integers(0, splits.size, size=(n_boot, splits.size))
        boot = np.nanmean(acc[:, :, draws], axis=3)
    ft_best, ft_arg = _family_best(means, is_ft)
    fr_best, fr_arg = _family_best(means, ~is_ft)
    diff = ft_best - fr_best
    out["curves"] = pd.DataFrame({
        "train_size": sizes.astype(int), "frozen_best": labels[fr_arg], "frozen_accuracy": fr_best,
        "finetune_best": labels[ft_arg], "finetune_accuracy": ft_best, "difference": diff,
    })
    lo_size, hi_size = float(sizes[0]), float(sizes[-1])
    out.update(min_train_size=int(lo_size), max_train_size=int(hi_size))
    estimate = _first_crossing(sizes, diff)
    boot_ft, _ = _family_best(boot, is_ft)
    boot_fr, _ = _family_best(boot, ~is_ft)
    crossings = np.array([_first_crossing(sizes, boot_ft[:, b] - boot_fr[:, b]) for b in range(n_boot)])
    crossings = crossings[~np.isnan(crossings)]
    if crossings.size and splits.size > 1:
        out["p_crossing"] = float(np.mean(np.isfinite(crossings)))
        q = np.quantile(np.clip(crossings, lo_size, None), [0.5 - level / 2, 0.5 + level / 2],
                        method="inverted_cdf")
        ci = (float(q[0]), float(q[1]))
    else:
        ci = None
    pct = f"{round(level * 100)}%"
    if math.isnan(estimate):
        out["statement"] = "Crossover not measured in this run (no train size with both families)."
    elif estimate == math.inf:
        out.update(status="not_reached")
        out["statement"] = (
            f"Fine-tuning did not overtake the best frozen-feature method within the data "
            f"(up to {int(hi_size)} images/class); fine-tuning − frozen at the largest size: "
            f"{diff[~np.isnan(diff)][-1]:+.3f}."
        )
        if out["p_crossing"]:
            out["statement"] += f" A crossing appears in {out['p_crossing']:.0%} of bootstrap resamples."
    elif estimate == -math.inf:
        out.update(status="finetune_ahead")
        out["statement"] = (
            f"Fine-tuning was already ahead of the best frozen-feature method at the smallest size measured "
            f"({int(lo_size)} images/class, gap {diff[~np.isnan(diff)][0]:+.3f}); the crossover, if any, lies below."
        )
    else:
        out.update(status="crossover", estimate=float(estimate), ci=ci)
        ci_text = " (single split: no CI)" if ci is None else (
            f" ({pct} bootstrap CI {ci[0]:.0f} to " + ("beyond the data" if math.isinf(ci[1]) else f"{ci[1]:.0f}") + ")"
        )
        out["statement"] = (
            f"Fine-tuning overtakes the best frozen-feature method at about {estimate:.0f} images/class{ci_text}, "
            f"measured between {int(lo_size)} and {int(hi_size)} images/class."
        )
    return out

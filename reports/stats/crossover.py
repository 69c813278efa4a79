"""Where fine-tuning overtakes frozen features: a monotone fit of per-size paired differences and its bootstrap."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reports.stats.correctness import correctness_matrices
from reports.stats.designs import DESIGNS, Design, SizeData, design_of
from reports.stats.intervals import MIN_DRAWS
from reports.stats.schema import check_columns, check_level, config_columns, config_label, norm
from reports.stats.selection import select_best

__all__ = ["Crossing", "crossing_interval", "crossover"]


@dataclass(frozen=True)
class Crossing:
    """The crossing of per-size differences: ``estimate`` (``-inf``/``inf`` without one inside the data), the mean
    ``difference`` per size, the bootstrap ``ci``, ``p_crossing`` and ``resamples`` (counts per kind, empty without
    a bootstrap) and the bootstrap ``method``."""

    estimate: float
    difference: np.ndarray
    method: str
    ci: tuple[float, float] | None = None
    p_crossing: float | None = None
    resamples: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The record :func:`crossing_interval` returns."""
        return {"estimate": self.estimate, "difference": self.difference, "ci": self.ci,
                "p_crossing": self.p_crossing, "resamples": self.resamples, "method": self.method}


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


def _size_value(group: pd.DataFrame) -> float:
    size = pd.to_numeric(group["train_size"].iloc[0], errors="coerce")
    if not size > 0:
        raise ValueError(f"crossover needs a positive numeric train_size (images per class); got "
                         f"{group['train_size'].iloc[0]!r}")
    return float(size)


def _crossover_data(data: pd.DataFrame, selected: pd.DataFrame, matrices: dict, config: list[str], design: Design,
                    families: tuple[str, str]) -> tuple[list[SizeData], list[dict]]:
    """Per train size with both families selected: the paired data and the curve row."""
    sizes, curves = [], []
    for size_key, group in data.groupby("train_size", sort=True):
        chosen = selected[selected["train_size"].map(norm) == norm(size_key)].set_index("family")
        if not set(families) <= set(chosen.index):
            continue
        frozen, tuned = ({c: chosen.loc[f, c] for c in config} for f in families)
        comparison = design.size_comparison(group, frozen, tuned, matrices, size_key, _size_value(group))
        if comparison is None:
            continue
        item, record = comparison.data, comparison.record
        sizes.append(item)
        curves.append({"train_size": size_key, "frozen_best": config_label(frozen, config),
                       "frozen_accuracy": comparison.frozen_accuracy, "finetune_best": config_label(tuned, config),
                       "finetune_accuracy": comparison.finetune_accuracy, "difference": record["estimate"],
                       "difference_ci_low": record["ci_low"], "difference_ci_high": record["ci_high"],
                       "n_pairs": int(item.splits.size), "note": record["note"]})
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


def _bootstrap_differences(items: list[SizeData], design: Design, n_boot: int, rng: np.random.Generator
                           ) -> np.ndarray | None:
    """Resampled mean differences (n_boot × sizes): split ids resampled jointly across sizes (at least 2 distinct
    ids in every resample), and what else the design resamples. None when there is nothing to resample."""
    ids = np.unique(np.concatenate([it.splits for it in items]))
    if ids.size < design.min_bootstrap_draws:
        return None
    return design.bootstrap_differences(items, ids, _draw_counts(ids.size, n_boot, rng), rng)


def _crossing(items: list[SizeData], design: Design, n_boot: int, level: float, random_state: int) -> Crossing:
    """Point estimate and bootstrap interval of the crossing from per-size paired data."""
    log_sizes = np.log([it.size for it in items])
    diff = np.array([float(it.diff.mean()) for it in items])
    estimate = float(_crossings(log_sizes, diff)[0])
    boot = _bootstrap_differences(items, design, n_boot, np.random.default_rng(random_state)) if n_boot else None
    if boot is None:
        return Crossing(estimate, diff, design.crossover_method)
    crossings = _crossings(log_sizes, boot)
    defined = crossings[~np.isnan(crossings)]
    resamples = {"total": n_boot, "crossing": int(np.isfinite(defined).sum()),
                 "finetune_ahead": int((defined == -np.inf).sum()),
                 "never_ahead": int((defined == np.inf).sum()), "undefined": int(n_boot - defined.size)}
    if not defined.size:
        return Crossing(estimate, diff, design.crossover_method, resamples=resamples)
    q = np.quantile(defined, [0.5 - level / 2, 0.5 + level / 2], method="inverted_cdf")
    return Crossing(estimate, diff, design.crossover_method, (float(q[0]), float(q[1])),
                    float(np.isfinite(defined).mean()), resamples)


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
        A name of :data:`~reports.stats.DESIGNS`.
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
    check_level(level)
    chosen = DESIGNS[design]
    overlaps = [0.0] * len(sizes) if overlaps is None else list(overlaps)
    items = [chosen.size_data(size, np.asarray(d, dtype=float), classes, overlap)
             for size, d, overlap in zip(sizes, differences, overlaps)]
    return _crossing(items, chosen, n_boot, level, random_state).as_dict()


def _statement(status: str, found: Crossing, items: list[SizeData], curves: list[dict], level: float) -> str:
    """The sentence of a crossover result: the crossing (or why there is none), its interval and the pre-selected
    configurations, with the difference at the largest size."""
    lo_size, hi_size = items[0].size, items[-1].size
    ci_text = ""
    if found.ci is not None:
        r = found.resamples

        def bound(value: float) -> str:
            if math.isinf(value):
                return f"below {int(lo_size)}" if value < 0 else "beyond the data"
            return f"{value:.0f}"

        ci_text = (f" ({round(level * 100)}% CI {bound(found.ci[0])} to {bound(found.ci[1])}; {found.method}, "
                   f"{r['total']} resamples: {r['crossing']} with a crossing, {r['finetune_ahead']} fine-tuning "
                   f"ahead everywhere, {r['never_ahead']} never ahead, {r['undefined']} undefined)")

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
    if status == "too_few_draws":
        fewest = min(items, key=lambda it: it.splits.size)
        k = int(fewest.splits.size)
        text = (f"Crossover not concluded: at {int(fewest.size)} images/class the two families share "
                f"{k} training draw{'s' if k != 1 else ''}, fewer than the {MIN_DRAWS} a verdict needs; "
                "the per-size differences are conditional on those draws and cannot tell where, or "
                f"whether, fine-tuning overtakes frozen features; {names}; {last_text}.")
    elif status == "not_reached":
        text = (f"{fit}, fine-tuning did not overtake the pre-selected frozen-feature configuration "
                f"within the data (up to {int(hi_size)} images/class); {names}; {last_text}.")
    elif status == "finetune_ahead":
        text = (f"{fit}, fine-tuning was already ahead of the pre-selected frozen-feature configuration "
                f"at the smallest size measured ({at(curves[0], lo_size)}); a crossing, if any, lies "
                f"below; {names}; {last_text}.")
    else:
        text = (f"{fit}, fine-tuning overtakes the pre-selected frozen-feature configuration at about "
                f"{found.estimate:.0f} images/class{ci_text}, measured between {int(lo_size)} and "
                f"{int(hi_size)} images/class; {names}; {last_text}.")
    if status != "crossover" and found.ci is not None:
        text += f" Crossing point{ci_text}."
    return text


def _status(estimate: float) -> str:
    if math.isnan(estimate):
        return "too_few_draws"
    if estimate == math.inf:
        return "not_reached"
    return "finetune_ahead" if estimate == -math.inf else "crossover"


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

    At each train size the two configurations are those chosen on training-side evidence
    (:func:`~reports.stats.select_best` per train size and family, or ``fixed`` in advance) — never by test
    accuracy. Their paired difference (fine-tuning − frozen, same splits and, under a fixed test set, same test
    images) is computed per train size; the crossover is where a monotone (isotonic) fit of these differences in
    log(images per class) turns positive, interpolated linearly in log size. With fewer than
    :data:`~reports.stats.MIN_DRAWS` paired draws at some size no crossover is concluded
    (``status == "too_few_draws"``): the per-size differences are reported, conditional on those draws.

    The interval is a percentile bootstrap that recomputes the crossing: split ids resampled jointly across train
    sizes (at least 2 distinct ids per resample) and, under ``design == "fixed_test"``, test images too (stratified
    by class; two-way bootstrap). In the resampled design the split-bootstrap deviations are scaled by the
    Nadeau–Bengio factor ``sqrt(1 + J · n_test/n_train)``. No resample is dropped silently: resamples without a
    crossing count as ``-inf`` (fine-tuning ahead everywhere) or ``+inf`` (never ahead) inside the quantiles, and
    every kind is counted in ``resamples``.

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
        Configurations fixed in advance (passed to :func:`~reports.stats.select_best`).
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
        ``design``, ``method``, ``min_train_size``, ``max_train_size``, ``p_crossing`` (fraction of resamples with
        a crossing inside the data), ``resamples`` (counts: ``total``, ``crossing``, ``finetune_ahead``,
        ``never_ahead``, ``undefined``), ``largest`` (difference at the largest size: ``estimate``, ``ci_low``,
        ``ci_high``) and ``curves`` (DataFrame: ``train_size``, ``frozen_best``, ``frozen_accuracy``,
        ``finetune_best``, ``finetune_accuracy``, ``difference`` with ``difference_ci_low``/``_high``,
        ``n_pairs``, ``note``).
    """
    check_level(level)
    out = {"estimate": None, "ci": None, "statement": "", "status": "not_measured", "design": None, "method": "",
           "min_train_size": None, "max_train_size": None, "p_crossing": None, "resamples": {}, "largest": None,
           "curves": pd.DataFrame()}
    if results.empty:
        out["statement"] = "Crossover not measured in this run (no results)."
        return out
    check_columns(results, ["train_size", "split", "accuracy", "family"])
    families = (frozen_family, finetune_family)
    absent = [f for f in families if f not in set(results["family"].astype(str))]
    if absent:
        out["statement"] = f"Crossover not measured in this run (no {' and no '.join(absent)} results)."
        return out
    data = results[results["family"].astype(str).isin(families)]
    out["design"] = design_of(data)
    design = DESIGNS[out["design"]]
    if design.needs_predictions and predictions is None:
        out["statement"] = "Crossover not measured: under a fixed test set it needs the predictions table."
        return out
    config = config_columns(results)
    if selected is None:
        selected = select_best(data, within=("train_size", "family"), fixed=fixed)
    selected = selected[selected["family"].astype(str).isin(families)]
    matrices = correctness_matrices(predictions, config) if design.needs_predictions else {}
    items, curves = _crossover_data(data, selected, matrices, config, design, families)
    out["curves"] = pd.DataFrame(curves)
    if not items:
        out["statement"] = ("Crossover not measured in this run (no train size with a pre-selected configuration of "
                            "both families: give selection scores or fix configurations in advance).")
        return out
    out.update(min_train_size=int(items[0].size), max_train_size=int(items[-1].size), largest={
        k: curves[-1][v] for k, v in (("estimate", "difference"), ("ci_low", "difference_ci_low"),
                                      ("ci_high", "difference_ci_high"))})
    fewest = min(items, key=lambda it: it.splits.size)
    found = (_crossing(items, design, n_boot, level, random_state) if fewest.splits.size >= MIN_DRAWS else
             Crossing(math.nan, np.array([]), ""))
    out.update(method=found.method, resamples=found.resamples, p_crossing=found.p_crossing, ci=found.ci)
    out["status"] = _status(found.estimate)
    if out["status"] == "crossover":
        out["estimate"] = found.estimate
    out["statement"] = _statement(out["status"], found, items, curves, level)
    return out

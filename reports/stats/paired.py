"""Every configuration against a pre-selected reference on the same draws: interval, test, Holm, TOST, verdicts."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from reports.stats.correctness import correctness_matrices
from reports.stats.designs import DESIGNS, PairedData, design_of
from reports.stats.intervals import MIN_DRAWS, resampling_overlap
from reports.stats.schema import PAIR_KEYS, check_columns, check_level, config_label, default_by, norm
from reports.stats.significance import EQUIVALENCE_MARGIN, holm, tost

__all__ = ["PAIRED_COLUMNS", "paired_comparison"]

logger = logging.getLogger(__name__)

PAIRED_COLUMNS: tuple[str, ...] = (
    "design", "reference", "is_reference", "accuracy", "reference_accuracy", "n_pairs", "diff", "diff_ci_low",
    "diff_ci_high", "test", "t_p", "wilcoxon_p", "p_holm", "significant", "tost_p", "equivalent", "margin",
    "few_draws", "note")
"""Columns of :func:`paired_comparison` after the ``by`` columns."""


def _reference_for(reference: Mapping | pd.DataFrame, where: dict, config_cols: list[str]) -> dict | None:
    """The reference's configuration values in one stratum (None when the selection has none there)."""
    if isinstance(reference, pd.DataFrame):
        rows = reference
        for col, value in where.items():
            if col in rows.columns:
                rows = rows[rows[col].map(norm) == norm(value)]
        if len(rows) > 1:
            raise ValueError(f"reference selection has {len(rows)} rows at {where}; pass one family's selection")
        return None if rows.empty else {c: rows.iloc[0][c] for c in config_cols if c in rows.columns}
    unknown = [k for k in reference if k not in config_cols]
    if unknown:
        raise ValueError(f"reference has unknown key(s) {unknown}; valid keys: {config_cols}")
    return dict(reference)


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
        :func:`~reports.stats.select_best` (one row per train size). There is no default: choosing it by test
        accuracy would bias every comparison in its favour.
    predictions : DataFrame, optional
        Needed under ``design == "fixed_test"`` (two-level paired analysis on ``C_a − C_b``, McNemar exact with one
        split); without it those rows are "not testable".
    by : sequence of str, optional
        Columns identifying a configuration; default :func:`~reports.stats.config_columns` and ``train_size``.
    level : float, default=0.95
        Confidence level of the interval of the difference.
    alpha : float, default=0.05
        Level of ``significant`` (Holm-corrected, within each train size) and of the TOST.
    margin : float, default=:data:`~reports.stats.EQUIVALENCE_MARGIN`
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
        on fewer than :data:`~reports.stats.MIN_DRAWS` paired draws (``few_draws``; the interval is then
        conditional on those draws and no verdict is drawn).
    """
    check_level(level)
    by = default_by(results, by)
    pair_keys = [k for k in PAIR_KEYS if k in results.columns]
    check_columns(results, by + ["accuracy", "split"])
    strata = [c for c in by if c == "train_size"]
    config_cols = [c for c in by if c not in strata]
    if isinstance(reference, Mapping):
        _reference_for(reference, {}, config_cols)
    columns = by + list(PAIRED_COLUMNS)
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
            if all(norm(c[j]) == norm(target[col]) for j, col in enumerate(config_cols) if col in target)]
        if len(matches) > 1:
            raise ValueError(f"reference {target} matches {len(matches)} configurations at {where}; "
                             "name more columns")
        if not matches:
            logger.warning("reference %s absent at %s; skipped", target, where)
            continue
        ref_idx = matches[0]
        ref_values = wide.iloc[:, ref_idx].to_numpy()
        ref_label = config_label(dict(zip(config_cols, configs[ref_idx])), config_cols)
        size_key = tuple(norm(v) for v in skey)
        ref_matrix = matrices.get(tuple(norm(v) for v in configs[ref_idx]) + size_key)
        overlap = resampling_overlap(stratum)
        block = []
        for i, cfg in enumerate(configs):
            values = wide.iloc[:, i].to_numpy()
            both = ~np.isnan(values) & ~np.isnan(ref_values)
            row = where | dict(zip(config_cols, cfg))
            row.update(design=design, reference=ref_label, is_reference=i == ref_idx,
                       accuracy=float(values[both].mean()) if both.any() else math.nan,
                       reference_accuracy=float(ref_values[both].mean()) if both.any() else math.nan)
            pair = PairedData(values[both] - ref_values[both],
                              matrices.get(tuple(norm(v) for v in cfg) + size_key), ref_matrix, overlap)
            result = DESIGNS[design].paired(pair, level)
            record, n_pairs = result.record, result.n_pairs
            few = n_pairs < MIN_DRAWS
            row.update(n_pairs=n_pairs, diff=record["estimate"], diff_ci_low=record["ci_low"],
                       diff_ci_high=record["ci_high"], test=result.test, t_p=result.p, wilcoxon_p=result.wilcoxon_p,
                       few_draws=few, note=record["note"], **tost(record, margin, alpha))
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

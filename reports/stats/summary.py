"""One row per configuration × train size: mean accuracy, the design's interval, per-draw minimum and median."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from reports.stats.correctness import correctness_matrices
from reports.stats.designs import DESIGNS, design_of
from reports.stats.schema import check_columns, check_level, config_key, default_by, nanmean

__all__ = ["summarize"]

_TIME_COLUMNS = ("fit_time_s", "predict_time_s", "extract_time_s")


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
        (:func:`~reports.stats.two_level_interval`). Without it the image component is bounded by
        ``p(1 − p)/n_test`` (a conservative bound) and the balanced-accuracy interval is NaN.
    by : sequence of str, optional
        Columns identifying a configuration; default :func:`~reports.stats.config_columns` and ``train_size``.
    level : float, default=0.95
        Confidence level.

    Returns
    -------
    DataFrame
        One row per group, sorted by ``by``: the ``by`` columns, ``family``/``pretrained`` (when present), ``design``,
        ``accuracy`` (mean over splits), ``draw_min`` and ``draw_median`` (the per-draw accuracies' minimum and
        median: a draw that failed shows here, where a t interval over few draws cannot see it), ``ci_low``,
        ``ci_high`` (within [0, 1]), ``ci_conditional`` (the interval is conditional on fewer than
        :data:`~reports.stats.MIN_DRAWS` draws), ``n_splits``, ``n_test`` (test images per split),
        ``n_test_total``, ``balanced_accuracy``, ``balanced_ci_low``, ``balanced_ci_high``, ``ci_method``,
        ``ci_note`` (why an interval is NaN, or what it covers) and the mean times.
    """
    check_level(level)
    by = default_by(results, by)
    check_columns(results, by + ["accuracy"])
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
        matrix = matrices.get(config_key(group.iloc[0], [*config, "train_size"]))
        acc, bal = DESIGNS[design].accuracy_intervals(group, matrix, level)
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
            balanced_accuracy=nanmean(group, "balanced_accuracy") if matrix is None else bal["estimate"],
            balanced_ci_low=bal["ci_low"], balanced_ci_high=bal["ci_high"],
            ci_method=acc["method"], ci_note=note,
            **{c: nanmean(group, c) for c in _TIME_COLUMNS},
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=columns).reset_index(drop=True)

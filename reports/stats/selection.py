"""Selection of a configuration on training-side evidence only (never on test accuracy)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from reports.stats.schema import check_columns, config_columns, config_label, matching

__all__ = ["TEST_COLUMNS", "select_best"]

logger = logging.getLogger(__name__)

TEST_COLUMNS: tuple[str, ...] = ("accuracy", "n_correct", "balanced_accuracy")
"""Columns measured on test images, refused as a selection score."""


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
    if by in TEST_COLUMNS:
        raise ValueError(f"select_best(by={by!r}) would select on the test set; use a training-side score such as "
                         "'selection_score'")
    within = list(within)
    fixed = dict(fixed or {})
    if fixed and "family" not in within:
        raise ValueError("select_best(fixed=...) needs 'family' in within, e.g. within=('train_size', 'family')")
    config = [c for c in config_columns(results) if c not in within]
    check_columns(results, within + config)
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
            hit = matching(candidates, target)
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

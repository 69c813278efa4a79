"""The statistics of one comparison run, computed once and shared by its report, its plots and the course answers.

Nothing here is chosen on test images.  Within each family and train size one configuration is *pre-selected*:
frozen-feature heads and the raw-pixel baseline by their mean inner-CV accuracy on the training images
(``selection_score``); the other families (fine-tuning, linear probe, from scratch) are fixed in advance, their
first configuration in the order the run listed them (their inner-validation scores exist only from 10 images per
class on, so they cannot choose at every size).  The reference of every significance test is the pre-selected
frozen-feature configuration; every "best" in the report means pre-selected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from reports.stats import (
    EQUIVALENCE_MARGIN,
    config_columns,
    config_label,
    crossover,
    paired_comparison,
    select_best,
    summarize,
)
from reports.tables import text_of

__all__ = ["EQUIVALENCE_MARGIN", "Analysis", "SCORED_FAMILIES", "analyse", "chance_level", "random_init_backbones",
           "selection_text"]

SCORED_FAMILIES = ("frozen", "pixels")
"""Families whose configuration is pre-selected by the inner-CV ``selection_score``; the others are fixed in advance."""


def random_init_backbones(results: pd.DataFrame, meta: dict | None = None) -> list[str]:
    """Backbones that ran with random-init weights where pretrained ones were meant (from-scratch rows excluded).

    Parameters
    ----------
    results : DataFrame
        The long results table (``pretrained``, ``backbone`` and ``family`` columns used when present).
    meta : dict, optional
        Run manifest; ``meta["pretrained"]`` is a dict backbone → bool (a single bool applies to every backbone).

    Returns
    -------
    list of str
        Sorted backbone names (``"(all)"`` when a global ``False`` flag has no backbone names to attach to).
    """
    found: set[str] = set()
    flags = (meta or {}).get("pretrained")
    if isinstance(flags, dict):
        found |= {str(b) for b, ok in flags.items() if not bool(ok)}
    elif flags is not None and not bool(flags):
        names = set(results["backbone"].astype(str)) if "backbone" in results else set()
        found |= names or {"(all)"}
    if "pretrained" in results and not results.empty:
        mask = results["pretrained"].map(lambda v: v is False or str(v) == "False")
        if "family" in results:
            mask &= results["family"] != "scratch"
        if mask.any():
            found |= set(results.loc[mask, "backbone"].astype(str)) if "backbone" in results else {"(all)"}
    return sorted(found)


@dataclass
class Analysis:
    """Everything the report says about one run.

    Attributes
    ----------
    results, predictions : DataFrame
        The run's tables.
    config : list of str
        Configuration columns.
    summary : DataFrame
        :func:`reports.stats.summarize` with the design's intervals.
    selected : DataFrame
        The pre-selected configuration per train size and family (:func:`reports.stats.select_best`).
    largest : int
        The largest train size (images per class).
    paired : DataFrame
        Every configuration at ``largest`` versus the reference (paired, with TOST).
    crossover : dict
        :func:`reports.stats.crossover` between the pre-selected frozen and fine-tuning configurations.
    random_init : list of str
        Backbones that ran with random-init weights where pretrained ones were meant.
    design : str
        ``"fixed_test"`` or ``"resampled"``.
    """

    results: pd.DataFrame
    predictions: pd.DataFrame
    config: list[str]
    summary: pd.DataFrame
    selected: pd.DataFrame
    largest: int
    paired: pd.DataFrame
    crossover: dict
    random_init: list[str]
    design: str
    meta: dict = field(default_factory=dict)

    def choice(self, family: str, train_size: int | None = None) -> dict | None:
        """The configuration pre-selected in ``family`` at ``train_size`` (default the largest), or None."""
        size = self.largest if train_size is None else train_size
        rows = self.selected[(self.selected["family"] == family) & (self.selected["train_size"] == size)]
        return None if rows.empty else {c: rows.iloc[0][c] for c in self.config}

    def row(self, values: dict, train_size: int | None = None) -> pd.Series | None:
        """The summary row of a configuration at ``train_size`` (default the largest), or None."""
        size = self.largest if train_size is None else train_size
        rows = self.summary[self.is_config(self.summary, values) & (self.summary["train_size"] == size)]
        return None if rows.empty else rows.iloc[0]

    def best_scored(self, rows: pd.DataFrame) -> dict | None:
        """Among the configurations of ``rows`` (results rows), the one with the highest mean ``selection_score``
        (training-side evidence only); None when none has a score."""
        means = rows.groupby(self.config, dropna=False)["selection_score"].mean()
        if means.isna().all():
            return None
        key = means.idxmax()
        return dict(zip(self.config, key if isinstance(key, tuple) else (key,)))

    def versus(self, a: dict, b: dict, train_size: int | None = None) -> pd.Series | None:
        """Paired comparison of configuration ``a`` with ``b`` (``a − b``) at ``train_size``, or None."""
        size = self.largest if train_size is None else train_size
        keep = [self.is_config(self.results, v) & (self.results["train_size"] == size) for v in (a, b)]
        results = self.results[keep[0] | keep[1]]
        if results.empty or not keep[0].any() or not keep[1].any():
            return None
        predictions = self.predictions
        if not predictions.empty:
            predictions = predictions[(self.is_config(predictions, a) | self.is_config(predictions, b))
                                      & (predictions["train_size"] == size)]
        paired = paired_comparison(results, reference=b, predictions=predictions, by=[*self.config, "train_size"],
                                   margin=EQUIVALENCE_MARGIN)
        other = paired[~paired["is_reference"].astype(bool)]
        return None if other.empty else other.iloc[0]

    def is_config(self, frame: pd.DataFrame, values: dict) -> pd.Series:
        """Rows of ``frame`` of the configuration ``values`` (missing values and ``""`` are the same)."""
        mask = pd.Series(True, index=frame.index)
        for c in self.config:
            if c in frame.columns:
                mask &= frame[c].map(text_of) == text_of(values.get(c))
        return mask

    def label(self, values: dict | pd.Series) -> str:
        """``resnet18 / layer4 / logistic``."""
        return config_label(values, self.config)


def _fixed_in_advance(results: pd.DataFrame, config: Sequence[str]) -> dict[str, dict]:
    """The first configuration (in run order) of each family that is not pre-selected by its inner-CV score."""
    fixed = {}
    for family, rows in results.groupby("family", sort=False):
        if family not in SCORED_FAMILIES:
            first = rows.iloc[0]
            fixed[str(family)] = {c: first[c] for c in config}
    return fixed


def analyse(results: pd.DataFrame, predictions: pd.DataFrame | None, meta: dict | None = None) -> Analysis:
    """Compute the statistics of a comparison run once (see the module docstring for the selection rules).

    Parameters
    ----------
    results : DataFrame
        ``results.csv`` of :mod:`pipelines.compare` (needs ``family``, ``selection_score`` and ``design``).
    predictions : DataFrame or None
        ``predictions.csv``; needed for the fixed-test design's intervals and paired tests.
    meta : dict, optional
        The run manifest (random-init flags).

    Returns
    -------
    Analysis
    """
    predictions = pd.DataFrame() if predictions is None else predictions
    config = config_columns(results)
    summary = summarize(results, predictions if not predictions.empty else None)
    selected = select_best(results, within=("train_size", "family"), fixed=_fixed_in_advance(results, config))
    largest = int(results["train_size"].max()) if not results.empty else 0
    reference = selected[(selected["family"] == "frozen")] if (selected["family"] == "frozen").any() else None
    at_largest = results[results["train_size"] == largest]
    paired = pd.DataFrame()
    if reference is not None and not at_largest.empty:
        paired = paired_comparison(at_largest, reference=reference[reference["train_size"] == largest],
                                   predictions=predictions if not predictions.empty else None,
                                   margin=EQUIVALENCE_MARGIN)
    cross = crossover(results, predictions if not predictions.empty else None, selected=selected)
    design = str(results["design"].iloc[0]) if "design" in results and not results.empty else "resampled"
    return Analysis(results=results, predictions=predictions, config=config, summary=summary, selected=selected,
                    largest=largest, paired=paired, crossover=cross, random_init=random_init_backbones(results, meta),
                    design=design, meta=dict(meta or {}))


def chance_level(predictions: pd.DataFrame) -> float:
    """Accuracy of always predicting the most frequent test class of one draw (NaN without predictions)."""
    if predictions.empty:
        return math.nan
    first = predictions[(predictions["split"] == predictions["split"].iloc[0])
                        & (predictions["train_size"] == predictions["train_size"].iloc[0])]
    first = first.drop_duplicates("index") if "index" in first else first
    counts = first["y_true"].value_counts()
    return float(counts.max() / counts.sum()) if len(counts) else math.nan


def selection_text(analysis: Analysis) -> str:
    """How every "pre-selected" configuration of the report was chosen, in one paragraph."""
    fixed = sorted(set(analysis.selected.loc[analysis.selected["selected_by"] == "fixed in advance", "family"]))
    scored = sorted(set(analysis.selected.loc[analysis.selected["selected_by"] != "fixed in advance", "family"]))
    parts = []
    if scored:
        where = ("test images never used" if analysis.design == "fixed_test" else
                 "with random splits of one pool, a draw's training images are other draws' test images, so these "
                 "pooled scores are not fully independent of the test images")
        parts.append(f"{', '.join(scored)}: the configuration with the highest mean inner-CV accuracy on the "
                     f"training images of each draw ({where})")
    if fixed:
        parts.append(f"{', '.join(fixed)}: fixed in advance (the first configuration of the run's method list)")
    return "Pre-selected configurations — " + "; ".join(parts) + ". Rankings by test accuracy are descriptive only."

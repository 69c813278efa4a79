"""The report of a grid search (:func:`pipelines.grid.run_grid`): the candidate table as markdown and HTML.

The report reads its input through the :class:`GridOutcome` protocol, so this layer never imports the pipelines
that produce it (:class:`pipelines.grid.GridResult` satisfies it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from reports.document import Document

__all__ = ["GridOutcome", "banner_text", "display_table", "grid_report"]

log = logging.getLogger(__name__)

_FIXED_COLUMNS = {"rank", "cut", "pooling", "accuracy", "ci_low", "ci_high", "accuracy_95ci", "n_per_fold", "n_test",
                  "n_folds", "fit_time_s", "times_selected"}


class GridOutcome(Protocol):
    """What the grid report reads of a grid search's outcome."""

    @property
    def search(self) -> Any:
        """The search fitted on all training images (``best_estimator_.named_steps["head"]`` is the head)."""

    @property
    def table(self) -> pd.DataFrame:
        """One row per candidate, sorted by rank (inner-CV scores)."""

    @property
    def estimate(self) -> Mapping[str, Any]:
        """Accuracy of the selection procedure: ``design``, ``accuracy_95ci``, ``method``, ``note``, ``n_folds``."""

    @property
    def outer(self) -> pd.DataFrame:
        """One row per outer fold (or the held-out test set), with the ``selected`` candidate."""

    @property
    def featurizer(self) -> Any:
        """The fitted featurizer of the best pipeline (``spec_.name`` is its backbone)."""

    @property
    def pretrained(self) -> bool:
        """Whether the featurizer's weights are pretrained."""

    @property
    def weights_label(self) -> str:
        """Human-readable weights description."""


def banner_text(result: GridOutcome) -> str | None:
    """The random-init warning of a grid result, or None when its weights are pretrained."""
    if result.pretrained:
        return None
    return f"WARNING: {result.weights_label}. These accuracies say nothing about transfer learning."


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """Copy of a grid table with head-parameter values as text (``1e-05``, not ``0.000``)."""
    out = table.copy()
    for column in (c for c in table.columns if c not in _FIXED_COLUMNS):
        out[column] = [format(v, "g") if isinstance(v, (float, np.floating)) else str(v) for v in table[column]]
    return out


def grid_report(result: GridOutcome, path_md: str | Path, path_html: str | Path | None = None) -> dict[str, Path]:
    """Write the grid table as markdown (and HTML), with a banner when the weights are random-init.

    Parameters
    ----------
    result : GridOutcome
        A grid search's outcome, e.g. :class:`pipelines.grid.GridResult`.
    path_md : path
        Markdown file.
    path_html : path, optional
        Self-contained HTML page.

    Returns
    -------
    dict
        ``{"markdown": Path}`` and ``"html"`` when written.
    """
    cnn = result.featurizer
    estimate = result.estimate
    clf = type(result.search.best_estimator_.named_steps["head"][-1]).__name__
    document = Document(f"Grid search: {cnn.spec_.name} features, {clf} head")
    note = banner_text(result)
    if note:
        document.add("banner", note)
    scored_on = ("the dataset's held-out val/ images, which the search never saw (it ran on train/ only)"
                 if estimate["design"] == "fixed_test" else
                 f"nested cross-validation: the whole search repeated in each of {estimate['n_folds']} outer training "
                 "folds, the configuration it selected scored on the outer test fold")
    how = f"({estimate['method']}{'; ' + estimate['note'] if estimate['note'] else ''})"
    headline = (f"**Accuracy of the selected configuration: {estimate['accuracy_95ci']}**, scored on {scored_on} "
                f"{how}." if estimate["design"] == "fixed_test" else
                f"**Accuracy of the selection procedure: {estimate['accuracy_95ci']}**, estimated by {scored_on} "
                f"{how}; the outer folds may select different candidates, and the search refitted on all images "
                "selected the rank-1 candidate below.")
    for text in (
        f"Weights: {result.weights_label}.",
        headline,
        f"Selected: {result.outer['selected'].iloc[0]}." if len(result.outer) == 1 else
        "How often the outer folds' searches selected each candidate: `times_selected` below.",
        "The table lists every candidate's inner cross-validation score: the scores the selection used. They are "
        "descriptive: the best of them is selection-biased as an estimate of accuracy (it won on those very folds). "
        "Intervals over folds use the Nadeau–Bengio corrected resampled t (the Wilson interval of the pooled counts "
        "when every fold scores the same).",
    ):
        document.add("text", text)
    document.add("table", result.outer, "Outer evaluation (one row per outer fold, or the held-out test set)")
    document.add("table", display_table(result.table), "Candidates by inner-CV score (descriptive)")
    paths = document.write(path_md, path_html)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths

"""Plots of a comparison run, each written as one PNG (matplotlib ``Figure`` + Agg canvas, no pyplot state).

Every function returns the path written, or ``None`` (with a log message) when the input holds nothing to plot;
degenerate inputs (one backbone, one cut, one train size, NaN values) still give a plot.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.stats import VARIANT_COLUMNS, config_columns, config_label, summarize
from reports.tables import cut_order_for, text_of

logger = logging.getLogger(__name__)

_FAMILY_STYLE = {"frozen": "-", "finetune": "--", "linear_probe_sgd": (0, (5, 1, 1, 1)), "scratch": ":",
                 "pixels": "-."}
_MIN_COST_S = 1e-3


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _finish_accuracy_plot(fig: Figure, ax: Axes, xlabel: str, title: str, path: str | Path) -> Path:
    """Label a single-panel accuracy plot (y: mean accuracy with 95% CI), add grid and legend, and save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (mean, 95% CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return _save(fig, path)


def _errors(summary: pd.DataFrame) -> np.ndarray:
    """Asymmetric error-bar lengths (2, n) from ``ci_low``/``ci_high``; 0 where the CI is undefined."""
    low = (summary["accuracy"] - summary["ci_low"]).clip(lower=0).fillna(0).to_numpy(float)
    high = (summary["ci_high"] - summary["accuracy"]).clip(lower=0).fillna(0).to_numpy(float)
    return np.vstack([low, high])


def _blankless(column: pd.Series) -> pd.Series:
    return column.map(text_of)


def _plottable(results: pd.DataFrame | None, plot: str, positive_sizes: bool = False) -> pd.DataFrame | None:
    """Rows of ``results`` with an accuracy (and, if asked, a train size above 0); None, logged, when there are none."""
    columns = ("backbone", "cut", "method", "train_size")
    data = pd.DataFrame()
    if results is not None and not results.empty and all(c in results.columns for c in columns):
        data = results[results["accuracy"].notna()]
    if positive_sizes and not data.empty:
        data = data[data["train_size"] > 0]
    if data.empty:
        logger.info("%s plot skipped: no results", plot)
        return None
    return data


def _summary_at(data: pd.DataFrame, train_size: int | None,
                summary: pd.DataFrame | None) -> tuple[int, pd.DataFrame]:
    """The train size shown (``train_size``, default the largest) and the summary of ``data`` at that size (the
    given ``summary`` restricted to the configurations of ``data``, or computed)."""
    size = data["train_size"].max() if train_size is None else train_size
    if summary is None:
        return size, summarize(data[data["train_size"] == size])
    keys = [c for c in config_columns(data) if c in summary.columns]
    present = data[keys].drop_duplicates()
    return size, summary[summary["train_size"] == size].merge(present, on=keys, how="inner")


def plot_accuracy_by_cut(results: pd.DataFrame, path: str | Path, train_size: int | None = None,
                         summary: pd.DataFrame | None = None) -> Path | None:
    """Accuracy (mean, 95% CI error bars) versus cut point, one panel per backbone, one line per head.

    Parameters
    ----------
    results : DataFrame
        The long results table; rows without a cut (fine-tuning, pixels) are left out.
    path : str or Path
        PNG to write.
    train_size : int, optional
        Images per class shown; default the largest.
    summary : DataFrame, optional
        :func:`reports.stats.summarize` of ``results`` (with the design's intervals) when already computed.

    Returns
    -------
    Path or None
    """
    data = _plottable(results, "accuracy-by-cut")
    if data is None:
        return None
    data = data[_blankless(data["cut"]) != ""]
    if data.empty:
        logger.info("accuracy-by-cut plot skipped: no method with a cut point")
        return None
    size, summary = _summary_at(data, train_size, summary)
    backbones = sorted(summary["backbone"].astype(str).unique())
    if not backbones:
        return None
    fig = _figure(max(5.0, 4.5 * len(backbones)), 4.0)
    axes = fig.subplots(1, len(backbones), squeeze=False, sharey=True)[0]
    for ax, backbone in zip(axes, backbones):
        sub = summary[summary["backbone"] == backbone]
        order = cut_order_for(backbone, sub["cut"].unique())
        position = {c: i for i, c in enumerate(order)}
        lines = ["method", *(c for c in VARIANT_COLUMNS if c in sub.columns)]
        for key, group in sub.groupby(lines, sort=True):
            group = group.assign(_x=group["cut"].map(position)).sort_values("_x")
            ax.errorbar(group["_x"], group["accuracy"], yerr=_errors(group), marker="o", capsize=3,
                        label=config_label(dict(zip(lines, key)), lines))
        ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
        ax.set_title(f"{backbone} ({int(size)} img/class)")
        ax.set_xlabel("cut point (shallow → deep)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (mean, 95% CI)")
    axes[-1].legend(fontsize="small", loc="best")
    return _save(fig, path)


def plot_learning_curves(summary: pd.DataFrame, selected: pd.DataFrame, path: str | Path) -> Path | None:
    """Accuracy versus images per class (log x) with 95% CI bands, one line per family: at each train size its
    pre-selected configuration (chosen on training-side evidence, never on test accuracy).

    Parameters
    ----------
    summary : DataFrame
        :func:`reports.stats.summarize` of the run.
    selected : DataFrame
        :func:`reports.stats.select_best` with ``within=("train_size", "family")``.
    path : str or Path
        PNG to write.

    Returns
    -------
    Path or None
    """
    if summary is None or summary.empty or selected is None or selected.empty:
        logger.info("learning-curve plot skipped: no pre-selected configuration")
        return None
    keys = [c for c in selected.columns if c in summary.columns and c not in ("family", "selection_score",
                                                                             "n_splits", "n_candidates")]
    curves = selected[[*keys, "family"]].merge(summary.drop(columns=["family"]), on=keys, how="inner")
    curves = curves[curves["train_size"] > 0]
    if curves.empty:
        logger.info("learning-curve plot skipped: no results for the pre-selected configurations")
        return None
    fig = _figure(6.5, 4.5)
    ax = fig.subplots()
    config = [c for c in keys if c != "train_size"]
    for family, curve in curves.groupby("family", sort=True):
        curve = curve.sort_values("train_size")
        names = sorted({config_label(r, config) for r in curve.to_dict("records")})
        label = f"{family}: {names[0]}" if len(names) == 1 else f"{family} (pre-selected per size)"
        line = ax.plot(curve["train_size"], curve["accuracy"], marker="o",
                       linestyle=_FAMILY_STYLE.get(str(family), "-"), label=label)[0]
        ax.fill_between(curve["train_size"], curve["ci_low"].fillna(curve["accuracy"]),
                        curve["ci_high"].fillna(curve["accuracy"]), color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    sizes = sorted(curves["train_size"].unique())
    ax.set_xticks(sizes, [str(int(s)) for s in sizes])
    ax.minorticks_off()
    return _finish_accuracy_plot(fig, ax, "training images per class (log scale)",
                                 "Learning curves (pre-selected configuration of each family)", path)


def plot_confusion_matrix(predictions: pd.DataFrame, path: str | Path, config: dict) -> Path | None:
    """Confusion matrix of one configuration, counts summed over its splits.

    Parameters
    ----------
    predictions : DataFrame
        ``backbone, cut, method, train_size, split, index, y_true, y_pred``.
    path : str or Path
        PNG to write.
    config : dict
        Values selecting the configuration, e.g. ``{"backbone": "resnet18", "cut": "avgpool", "method":
        "logistic", "train_size": 120}`` (keys absent from ``predictions`` are ignored); choose it before looking
        at test accuracy (e.g. the pre-selected configuration).

    Returns
    -------
    Path or None
        None when no prediction matches.
    """
    if predictions is None or predictions.empty or not {"y_true", "y_pred"} <= set(predictions.columns):
        logger.info("confusion-matrix plot skipped: no predictions")
        return None
    preds = predictions.dropna(subset=["y_true", "y_pred"])
    keys = [*config_columns(preds), "train_size"] if "train_size" in preds.columns else config_columns(preds)
    for key, value in config.items():
        if key in preds.columns:
            blank = text_of(value) == ""
            preds = preds[_blankless(preds[key]) == "" if blank else preds[key] == value]
    if preds.empty:
        logger.info("confusion-matrix plot skipped: no predictions for %s", config)
        return None
    labels = sorted(set(preds["y_true"].astype(str)) | set(preds["y_pred"].astype(str)))
    matrix = pd.crosstab(preds["y_true"].astype(str), preds["y_pred"].astype(str)).reindex(
        index=labels, columns=labels, fill_value=0).to_numpy()
    side = max(3.5, 0.6 * len(labels) + 2.5)
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > threshold else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    n_splits = preds["split"].nunique() if "split" in preds else 1
    size = config.get("train_size")
    title = config_label(config, [k for k in keys if k != "train_size"])
    title += f", {size} img/class" if size is not None else ""
    ax.set_title(f"{title}\n(n={len(preds)} predictions over {n_splits} split(s))", fontsize="medium")
    return _save(fig, path)


def plot_accuracy_vs_cost(results: pd.DataFrame, path: str | Path, train_size: int | None = None,
                          summary: pd.DataFrame | None = None, labelled: pd.DataFrame | None = None) -> Path | None:
    """Accuracy (95% CI) versus cost per split (fit + feature-extraction seconds, log x), one point per
    configuration, coloured by family. Costs below 1 ms (or missing) are drawn at 1 ms.

    Parameters
    ----------
    results : DataFrame
        The long results table.
    path : str or Path
        PNG to write.
    train_size : int, optional
        Images per class shown; default the largest.
    summary : DataFrame, optional
        :func:`reports.stats.summarize` of ``results`` when already computed.
    labelled : DataFrame, optional
        Configurations to name on the plot (e.g. the pre-selected ones); none are named by default (naming the
        highest test accuracies would single them out on the test set).

    Returns
    -------
    Path or None
    """
    data = _plottable(results, "accuracy-vs-cost")
    if data is None:
        return None
    size, summary = _summary_at(data, train_size, summary)
    if summary.empty:
        return None
    cost = summary["fit_time_s"].fillna(0) + summary["extract_time_s"].fillna(0)
    summary = summary.assign(_cost=cost.clip(lower=_MIN_COST_S))
    if "family" not in summary:
        summary["family"] = "frozen"
    fig = _figure(7.0, 4.8)
    ax = fig.subplots()
    for family, group in summary.groupby("family", sort=True):
        ax.errorbar(group["_cost"], group["accuracy"], yerr=_errors(group), fmt="o", capsize=2, label=str(family),
                    alpha=0.8)
    keys = [c for c in config_columns(summary) if labelled is not None and c in labelled.columns]
    named = summary.merge(labelled[keys].drop_duplicates(), on=keys) if keys else summary.iloc[0:0]
    for _, row in named.iterrows():
        if not math.isnan(row["accuracy"]):
            label = config_label(row, ("backbone", "cut", "method", *(c for c in VARIANT_COLUMNS if c in row.index)))
            ax.annotate(label, (row["_cost"], row["accuracy"]), fontsize="x-small", xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    return _finish_accuracy_plot(fig, ax, "fit + extraction time per split (s, log scale)",
                                 f"Accuracy vs cost ({int(size)} img/class)", path)

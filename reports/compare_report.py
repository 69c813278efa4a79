"""The report of a comparison run: ``summary.md``, ``report.html``, summary CSVs and plots in one folder.

The document is assembled once as a :class:`reports.document.Document` (heading, markdown text, table, figure,
banner, collapsible table) and rendered twice, to markdown and to self-contained HTML; images are PNG files next to
the documents, referenced by relative paths.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

from reports import plots
from reports.answers import course_answers
from reports.document import Block, Document
from reports.stats import config_columns, config_label, crossover, paired_comparison, summarize
from reports.tables import format_accuracy, method_by_cut, to_csv, with_accuracy_text

logger = logging.getLogger(__name__)

RANDOM_INIT_BANNER = "RANDOM-INIT WEIGHTS: these numbers say nothing about transfer from ImageNet"
CI_NOTE = ("Accuracies are means over splits with a 95% CI and n = test images per split × splits. Repeated splits "
           "share images, so the t-interval uses the corrected resampled variance of Nadeau & Bengio (2003), "
           "sd² · (1/splits + n_test/n_train), rather than sd²/splits; with a single split it is the Wilson interval "
           "of the counts. Significance uses the same correction in a paired t-test, Holm-adjusted.")


def random_init_backbones(results: pd.DataFrame, meta: dict | None = None) -> list[str]:
    """Backbones that ran with random-init weights, from ``meta["pretrained"]`` and the ``pretrained`` column.

    Parameters
    ----------
    results : DataFrame
        The long results table (``pretrained`` and ``backbone`` columns used when present).
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
        mask = ~results["pretrained"].fillna(True).astype(bool)
        if "family" in results:
            mask &= results["family"] != "scratch"  # from-scratch training is random-init by design
        if mask.any():
            found |= set(results.loc[mask, "backbone"].astype(str)) if "backbone" in results else {"(all)"}
    return sorted(found)


def summary_table(results: pd.DataFrame, summary: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration and train size, best first, for printing.

    Parameters
    ----------
    results : DataFrame
        The long results table.
    summary : DataFrame, optional
        ``summarize(results)`` when already computed.

    Returns
    -------
    DataFrame
        ``train_size, backbone, cut, method`` (plus ``pooling``/``augment`` where they vary), ``family,
        pretrained, accuracy_95ci`` (``"0.912 [0.871, 0.944] (n=153×10)"``), ``accuracy, ci_low, ci_high, n_test,
        n_splits, fit_time_s, extract_time_s`` — sorted by train size (largest first) then accuracy.
        ``family``/``pretrained`` appear when present in ``results``.
    """
    summary = with_accuracy_text(summarize(results) if summary is None else summary)
    columns = ["train_size", *config_columns(results), "family", "pretrained", "accuracy_95ci", "accuracy",
               "ci_low", "ci_high", "n_test", "n_splits", "fit_time_s", "extract_time_s"]
    columns = [c for c in columns if c in summary.columns]
    return (summary.sort_values(["train_size", "accuracy"], ascending=[False, False], na_position="last")
            [columns].reset_index(drop=True))


def _p_text(p: float) -> str:
    if math.isnan(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _accuracy_texts(results: pd.DataFrame, summary: pd.DataFrame) -> dict[tuple[str, int], str]:
    """(configuration label, train size) → ``"0.912 [0.871, 0.944] (n=153×10)"``."""
    return {
        (config_label(row, config_columns(results)), int(row["train_size"])): format_accuracy(
            row["accuracy"], row["ci_low"], row["ci_high"], row["n_test"], row["n_splits"])
        for _, row in summary.iterrows()
    }


def _crossover_table(results: pd.DataFrame, curves: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The crossover curves with each family's best accuracy as ``mean [CI] (n)`` text."""
    accuracy = _accuracy_texts(results, summary)
    return pd.DataFrame({
        "train_size": curves["train_size"],
        "best_frozen": curves["frozen_best"],
        "frozen_accuracy_95ci": [accuracy.get((c, int(s)), "") for c, s in zip(curves["frozen_best"],
                                                                              curves["train_size"])],
        "best_finetune": curves["finetune_best"],
        "finetune_accuracy_95ci": [accuracy.get((c, int(s)), "") for c, s in zip(curves["finetune_best"],
                                                                                curves["train_size"])],
        "finetune_minus_frozen": curves["difference"],
    })


def _significance(results: pd.DataFrame, summary: pd.DataFrame) -> tuple[pd.DataFrame, int | None]:
    """Paired comparison with the best configuration at the largest train size, formatted for display."""
    if results.empty:
        return pd.DataFrame(), None
    size = int(results["train_size"].max())
    paired = paired_comparison(results[results["train_size"] == size], by=[*config_columns(results), "train_size"])
    if paired.empty:
        return pd.DataFrame(), size
    paired = paired.sort_values("accuracy", ascending=False)
    labels = [config_label(r, config_columns(results)) for _, r in paired.iterrows()]
    accuracy = _accuracy_texts(results, summary)
    table = pd.DataFrame({
        "configuration": labels,
        "accuracy_95ci": [accuracy.get((label, size), "") for label in labels],
        "diff_vs_best": paired["diff"].to_numpy(),
        "diff_95ci": [("" if math.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]")
                      for lo, hi in zip(paired["diff_ci_low"], paired["diff_ci_high"])],
        "n_splits": paired["n_pairs"].to_numpy(),
        "t_test_p": [_p_text(p) for p in paired["t_p"]],
        "wilcoxon_p": [_p_text(p) for p in paired["wilcoxon_p"]],
        "holm_p": [_p_text(p) for p in paired["p_holm"]],
        "significant": ["(reference)" if ref else ("yes" if sig else "no")
                        for ref, sig in zip(paired["is_reference"], paired["significant"])],
    })
    return table, size


def _meta_table(meta: dict) -> pd.DataFrame:
    def text(value) -> str:
        if isinstance(value, (dict, list, tuple)):
            return json.dumps(value, default=str, sort_keys=True)
        return str(value)

    return pd.DataFrame({"key": list(map(str, meta)), "value": [text(v) for v in meta.values()]})


def _setup(results: pd.DataFrame, meta: dict) -> list[Block]:
    lines = []

    def add(label: str, value) -> None:
        if value not in (None, "", []):
            lines.append(f"- **{label}**: {value}")

    def values(column: str) -> str:
        if column not in results:
            return ""
        unique = [v for v in results[column].dropna().unique() if v != ""]
        try:
            unique = sorted(unique)
        except TypeError:
            unique = sorted(unique, key=str)
        return ", ".join(str(v) for v in unique)

    add("Dataset", meta.get("dataset") or values("dataset"))
    for key in ("n_images", "n_classes", "classes"):
        add(key.replace("_", " "), meta.get(key))
    add("Backbones", values("backbone"))
    add("Images per class for training", values("train_size"))
    if "split" in results:
        add("Splits", results["split"].nunique())
    if "n_test" in results and not results.empty:
        add("Test images per split", values("n_test"))
    add("Seeds", meta.get("seeds") or values("seed"))
    if {"backbone", "weights"} <= set(results.columns):
        frozen = results[results["family"] != "scratch"] if "family" in results else results
        pairs = frozen[["backbone", "weights"]].drop_duplicates().sort_values("backbone")
        pairs = pairs[pairs["backbone"] != ""]
        add("Weights", "; ".join(f"{b}: `{w}`" for b, w in pairs.itertuples(index=False)))
    add("Command", f"`{meta['command']}`" if meta.get("command") else None)
    lines.append("")
    lines.append(CI_NOTE)
    blocks = [Block("heading", "Setup"), Block("text", "\n".join(lines))]
    if meta:
        blocks.append(Block("details", _meta_table(meta), "Full run manifest"))
    return blocks


def _build(results: pd.DataFrame, predictions: pd.DataFrame, meta: dict, out_dir: Path,
           written: dict[str, Path]) -> list[Block]:
    blocks: list[Block] = []
    random_init = random_init_backbones(results, meta)
    if random_init:
        blocks.append(Block("banner", f"{RANDOM_INIT_BANNER} (random-init: {', '.join(random_init)})"))
    blocks += _setup(results, meta)
    if results.empty:
        blocks.append(Block("text", "No results were recorded in this run."))
        return blocks

    blocks.append(Block("heading", "Summary: accuracy per method × cut point"))
    size = int(results["train_size"].max())
    for backbone, table in method_by_cut(results).items():
        flag = " — RANDOM-INIT WEIGHTS" if backbone in random_init else ""
        blocks.append(Block("table", table, f"{backbone}, {size} images/class{flag}"))
    summary = summarize(results)
    full = summary_table(results, summary)
    written["summary_csv"] = out_dir / "summary.csv"
    to_csv(full, written["summary_csv"])
    blocks.append(Block("details", full.drop(columns=["accuracy_95ci"]), "All configurations and train sizes"))

    table, _ = _significance(results, summary)
    blocks.append(Block("heading", "Significance"))
    if table.empty:
        blocks.append(Block("text", "Paired comparison not available (no configurations)."))
    else:
        written["significance_csv"] = out_dir / "significance.csv"
        to_csv(table, written["significance_csv"])
        blocks.append(Block("text", (
            f"Each configuration versus the best one at {size} images/class, paired on the same splits: mean "
            "difference with its 95% CI, paired t-test and Wilcoxon signed-rank p-values, Holm-corrected t-test "
            "p-value; 'significant' means Holm p < 0.05. The t-test uses the Nadeau–Bengio corrected variance "
            "because splits share images.")))
        blocks.append(Block("table", table, f"Paired comparison with the best configuration ({size} images/class)"))

    cross = crossover(results)
    blocks.append(Block("heading", "Fine-tuning versus frozen features: crossover"))
    blocks.append(Block("text", cross["statement"]))
    if not cross["curves"].empty:
        blocks.append(Block("table", _crossover_table(results, cross["curves"], summary),
                            "Best configuration of each family per train size"))

    blocks.append(Block("heading", "Plots"))
    figures = [
        ("accuracy_by_cut", "Accuracy vs cut point per backbone and head (95% CI)",
         lambda p: plots.plot_accuracy_by_cut(results, p)),
        ("learning_curves", "Learning curves: accuracy vs images per class (95% CI bands)",
         lambda p: plots.plot_learning_curves(results, p)),
        ("confusion_matrix", "Confusion matrix of the best configuration (summed over splits)",
         lambda p: plots.plot_confusion_matrix(predictions, p)),
        ("accuracy_vs_cost", "Accuracy vs cost (fit + extraction time)",
         lambda p: plots.plot_accuracy_vs_cost(results, p)),
    ]
    for key, caption, draw in figures:
        try:
            path = draw(out_dir / f"{key}.png")
        except Exception:  # a plot must never cost the report
            logger.exception("plot %s failed; left out of the report", key)
            path = None
        if path is not None:
            written[key] = Path(path)
            blocks.append(Block("figure", Path(path).name, caption))
    blocks.append(Block("text", course_answers(results, crossover_result=cross, heading_level=2,
                                                random_init=random_init)))
    return blocks


def write_report(results: pd.DataFrame, predictions: pd.DataFrame | None, meta: dict | None,
                 out_dir: str | Path, title: str = "Transfer learning comparison") -> dict[str, Path]:
    """Write ``summary.md``, ``report.html``, ``summary.csv``, ``significance.csv`` and the plots.

    ``results.csv`` itself is written by the caller. A banner (markdown and HTML) flags any backbone run with
    random-init weights (``meta["pretrained"]`` or the ``pretrained`` column).

    Parameters
    ----------
    results : DataFrame
        The long results table (schema of ``results.csv``).
    predictions : DataFrame or None
        Per-image predictions (schema of ``predictions.csv``) for the confusion matrix; None skips it.
    meta : dict or None
        Run manifest (versions, hardware, seeds, weights, ``pretrained`` per backbone, command, wall time); shown in
        the setup section.
    out_dir : str or Path
        Output folder (created).
    title : str, default="Transfer learning comparison"
        Document title.

    Returns
    -------
    dict of str to Path
        ``summary_md``, ``report_html``, ``summary_csv``, ``significance_csv`` and one entry per plot written
        (``accuracy_by_cut``, ``learning_curves``, ``confusion_matrix``, ``accuracy_vs_cost``); plots with nothing
        to show are left out.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    predictions = predictions if predictions is not None else pd.DataFrame()
    written: dict[str, Path] = {}
    document = Document(title, _build(results, predictions, meta, out, written))
    paths = document.write(out / "summary.md", out / "report.html")
    written["summary_md"], written["report_html"] = paths["markdown"], paths["html"]
    logger.info("report written to %s", out)
    return written

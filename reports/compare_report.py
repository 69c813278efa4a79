"""The report of a comparison run: ``summary.md``, ``report.html``, summary CSVs and plots in one folder.

The document is assembled once as a :class:`reports.document.Document` (heading, markdown text, table, figure,
banner, collapsible table) and rendered twice, to markdown and to self-contained HTML; images are PNG files next to
the documents, referenced by relative paths.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from featurize.registry import Registry
from reports import plots
from reports.analysis import Analysis, analyse, random_init_backbones, selection_text
from reports.answers import course_answers
from reports.document import Block, Document
from reports.stats import EQUIVALENCE_MARGIN, MIN_DRAWS
from reports.tables import accuracy_text, md_escape, method_by_cut, to_csv, with_accuracy_text

__all__ = ["RANDOM_INIT_BANNER", "random_init_backbones", "summary_table", "write_report"]

logger = logging.getLogger(__name__)

REPORT_FILES = ("summary.md", "report.html", "summary.csv", "significance.csv", "accuracy_by_cut.png",
                "learning_curves.png", "confusion_matrix.png", "accuracy_vs_cost.png")
"""Every file the report may write; those of an earlier run in the same folder are removed first (none is stale)."""
RANDOM_INIT_BANNER = "RANDOM-INIT WEIGHTS: these numbers say nothing about transfer from ImageNet"
DESIGN_NOTES: Registry[str] = Registry("evaluation design note")
"""What the report says of each evaluation design (:data:`reports.stats.DESIGNS`), by design name."""
DESIGN_NOTES.register(
    "fixed_test", ("Evaluation design: a fixed test set. Every training draw is scored on the whole val/ subset, so "
                   "an accuracy has two sources of uncertainty, the training draw and the test images; its 95% CI "
                   "comes from a two-level analysis (variance of the draw means / draws + test-image variance, "
                   "Satterthwaite t), built on the logit scale so that it stays inside [0, 1] and keeps its coverage "
                   "near the ceiling. Paired differences use the same analysis on per-image correctness (McNemar "
                   f"exact with a single draw). With fewer than {MIN_DRAWS} draws an interval is conditional on "
                   "those draws (it covers test-image sampling only) and no verdict is drawn from it. Next to every "
                   "mean accuracy: the lowest and the median per-draw accuracy — a t interval over a few draws "
                   "cannot see a draw that occasionally fails. n = test images × training draws."))
DESIGN_NOTES.register(
    "resampled", ("Evaluation design: random train/test splits of one pool. Splits share images, so intervals use "
                  "the corrected resampled t of Nadeau & Bengio (2003), sd² · (1/splits + n_test/n_train), on the "
                  "logit scale for accuracies; paired differences use the same correction. With fewer than "
                  f"{MIN_DRAWS} splits no verdict is drawn. Next to every mean accuracy: the lowest and the median "
                  "per-split accuracy. n = test images per split × splits."))


def summary_table(results: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and train size, for printing; ordered by train size (largest first) then by
    configuration (a ranking by test accuracy would be descriptive only, so none is implied).

    Parameters
    ----------
    results : DataFrame
        The long results table.
    summary : DataFrame
        Its :func:`reports.stats.summarize`.

    Returns
    -------
    DataFrame
        ``train_size``, the configuration columns, ``family, pretrained, accuracy_95ci`` (``"0.912 [0.871, 0.944]
        (n=153 test images × 10 draws); per draw min 0.850, median 0.915"``), ``selection_score``, ``accuracy,
        draw_min, draw_median, ci_low, ci_high, ci_conditional, balanced_accuracy, n_test, n_splits, ci_method,
        fit_time_s, extract_time_s``.
    """
    config = [c for c in summary.columns if c in ("backbone", "cut", "method", "pooling", "augment")]
    table = with_accuracy_text(summary)
    scores = results.groupby([*config, "train_size"], dropna=False)["selection_score"].mean().rename(
        "selection_score").reset_index()
    table = table.merge(scores, on=[*config, "train_size"], how="left")
    columns = ["train_size", *config, "family", "pretrained", "accuracy_95ci", "selection_score", "accuracy",
               "draw_min", "draw_median", "ci_low", "ci_high", "ci_conditional", "balanced_accuracy", "n_test",
               "n_splits", "ci_method", "fit_time_s", "extract_time_s"]
    columns = [c for c in columns if c in table.columns]
    return table.sort_values(["train_size", *config], ascending=[False, *[True] * len(config)])[columns].reset_index(
        drop=True)


def _p_text(p: float) -> str:
    if pd.isna(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _yes_no(value) -> str:
    return "not testable" if pd.isna(value) else ("yes" if bool(value) else "no")


def _accuracy(analysis: Analysis, values: dict | pd.Series, size: int) -> str:
    row = analysis.row(dict(values), size)
    return "" if row is None else accuracy_text(row)


def _decision(is_reference: bool, few_draws: bool, value) -> str:
    """A verdict cell of the significance table: yes / no / not testable, or why there is none."""
    if is_reference:
        return "(reference)"
    return f"no verdict (fewer than {MIN_DRAWS} draws)" if few_draws else _yes_no(value)


def _selected_table(analysis: Analysis) -> pd.DataFrame:
    """The pre-selected configuration per train size and family, with how it was chosen and its test accuracy."""
    sel = analysis.selected
    return pd.DataFrame({
        "train_size": sel["train_size"], "family": sel["family"],
        "configuration": [analysis.label(r) for r in sel.to_dict("records")],
        "selected_by": sel["selected_by"], "selection_score": sel["selection_score"],
        "test_accuracy_95ci": [_accuracy(analysis, r, r["train_size"]) for r in sel.to_dict("records")],
    })


def _significance(analysis: Analysis) -> pd.DataFrame:
    """Every configuration at the largest size versus the pre-selected frozen-feature reference, for display."""
    paired = analysis.paired
    if paired.empty:
        return pd.DataFrame()
    labels = [analysis.label(r) for r in paired.to_dict("records")]
    return pd.DataFrame({
        "configuration": labels,
        "accuracy_95ci": [_accuracy(analysis, r, analysis.largest) for r in paired.to_dict("records")],
        "diff_vs_reference": paired["diff"].to_numpy(),
        "diff_95ci": [("" if pd.isna(lo) else f"[{lo:+.3f}, {hi:+.3f}]")
                      for lo, hi in zip(paired["diff_ci_low"], paired["diff_ci_high"])],
        "test": paired["test"].to_numpy(),
        "p": [_p_text(p) for p in paired["t_p"]],
        "holm_p": [_p_text(p) for p in paired["p_holm"]],
        "significant": [_decision(ref, few, sig) for ref, few, sig in
                        zip(paired["is_reference"], paired["few_draws"], paired["significant"])],
        f"equivalent_within_{EQUIVALENCE_MARGIN:g}": ["" if ref else _decision(ref, few, eq) for ref, few, eq in
                                                     zip(paired["is_reference"], paired["few_draws"],
                                                         paired["equivalent"])],
        "note": paired["note"].fillna("").to_numpy(),
    })


def _crossover_table(analysis: Analysis) -> pd.DataFrame:
    curves = analysis.crossover["curves"]
    if curves.empty:
        return curves
    out = pd.DataFrame({"train_size": curves["train_size"], "frozen_preselected": curves["frozen_best"],
                        "finetune_preselected": curves["finetune_best"], "paired_draws": curves["n_pairs"],
                        "finetune_minus_frozen": curves["difference"]})
    if "difference_ci_low" in curves:
        out["diff_95ci"] = [("" if pd.isna(lo) else f"[{lo:+.3f}, {hi:+.3f}]")
                            for lo, hi in zip(curves["difference_ci_low"], curves["difference_ci_high"])]
    return out


def _meta_table(meta: dict) -> pd.DataFrame:
    def text(value) -> str:
        if isinstance(value, (dict, list, tuple)):
            return json.dumps(value, default=str, sort_keys=True)
        return str(value)

    return pd.DataFrame({"key": list(map(str, meta)), "value": [text(v) for v in meta.values()]})


def _setup(analysis: Analysis, meta: dict) -> list[Block]:
    results = analysis.results
    lines = []

    def add(label: str, value, code: bool = False) -> None:
        if value not in (None, "", []):
            lines.append(f"- **{label}**: " + (f"`{value}`" if code else md_escape(value)))

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
    if meta.get("protocol"):
        changed = meta.get("protocol_overrides") or []
        add("Protocol", f"{meta['protocol']}" + (f" (modified: {', '.join(changed)})" if changed else "")
            + f" — {meta.get('protocol_description', '')}")
    add("Backbones", values("backbone"))
    add("Images per class for training", values("train_size"))
    if "split" in results:
        draws = results["split"].nunique()
        add("Training draws", draws)
        costly = results[results["family"].isin(["finetune", "linear_probe_sgd", "scratch"])]
        if not costly.empty and costly["split"].nunique() < draws:
            few = costly["split"].nunique()
            add("Fine-tuning", f"ran on {few} of the {draws} draws (costly on this device); its intervals and paired "
                               "tests use those draws only" + (
                                   f" — with fewer than {MIN_DRAWS}, its intervals are conditional on those draws "
                                   "and this run draws no verdict from them: whether fine-tuning is better, worse "
                                   "or as good as frozen features, and where it overtakes them, cannot be concluded"
                                   if few < MIN_DRAWS else ""))
    if "n_test" in results and not results.empty:
        add("Test images per draw", values("n_test"))
    add("Seeds", meta.get("seeds") or values("seed"))
    if {"backbone", "weights"} <= set(results.columns):
        frozen = results[results["family"] != "scratch"] if "family" in results else results
        pairs = frozen[["backbone", "weights"]].drop_duplicates().sort_values("backbone")
        add("Weights", "; ".join(f"{b}: {w}" for b, w in pairs.itertuples(index=False)), code=True)
    add("Command", meta.get("command"), code=True)
    tuning = ("Every head (and the raw-pixel baseline) was tuned inside each training draw by an inner stratified "
              "cross-validation over its documented grid; the chosen hyperparameters are in results.csv "
              "(hyperparameters, selection_score).")
    validation = (meta.get("config") or {}).get("validation_fraction")
    tuning += (" Fine-tuning chose its epoch count on an inner validation split of the training images (from 10 "
               "images per class on) and was then refitted on all of them." if validation else
               " Fine-tuning ran its fixed budget of epochs and kept the last weights (no inner validation split).")
    lines += ["", DESIGN_NOTES.get(analysis.design, ""), "", tuning]
    for size in meta.get("same_training_set_sizes") or []:
        lines.append(f"At {size} images/class every draw uses the same training images: the draws then differ only "
                     "by model seed, and an interval's draw component is seed variance.")
    blocks = [Block("heading", "Setup"), Block("text", "\n".join(lines))]
    if meta:
        blocks.append(Block("details", _meta_table(meta), "Full run manifest"))
    return blocks


def _build(analysis: Analysis, meta: dict, out_dir: Path, written: dict[str, Path]) -> list[Block]:
    results = analysis.results
    blocks: list[Block] = []
    if analysis.random_init:
        blocks.append(Block("banner", f"{RANDOM_INIT_BANNER} (random-init: {', '.join(analysis.random_init)})"))
    blocks += _setup(analysis, meta)
    if results.empty:
        blocks.append(Block("text", "No results were recorded in this run."))
        return blocks

    size = analysis.largest
    blocks.append(Block("heading", "Accuracy per method × cut point (descriptive)"))
    blocks.append(Block("text", "Every configuration that ran, with its 95% CI; no ranking is implied by these "
                                "tables (a ranking by test accuracy would be selection on the test set)."))
    for backbone, table in method_by_cut(results, summary=analysis.summary).items():
        flag = " — RANDOM-INIT WEIGHTS" if backbone in analysis.random_init else ""
        blocks.append(Block("table", table, f"{backbone}, {size} images/class{flag}"))
    full = summary_table(results, analysis.summary)
    written["summary_csv"] = out_dir / "summary.csv"
    to_csv(full, written["summary_csv"])
    blocks.append(Block("details", full.drop(columns=["accuracy_95ci"]), "All configurations and train sizes"))

    blocks.append(Block("heading", "Pre-selected configurations"))
    blocks.append(Block("text", selection_text(analysis)))
    blocks.append(Block("table", _selected_table(analysis), "One configuration per train size and family"))

    table = _significance(analysis)
    blocks.append(Block("heading", "Significance"))
    if table.empty:
        blocks.append(Block("text", "Paired comparison not available (no pre-selected frozen-feature reference)."))
    else:
        written["significance_csv"] = out_dir / "significance.csv"
        to_csv(table, written["significance_csv"])
        blocks.append(Block("text", (
            f"Each configuration versus the pre-selected frozen-feature configuration at {size} images/class, "
            "paired on the same draws and test images: difference with its 95% CI, its test, Holm-corrected "
            f"p-value ('significant' = Holm p < 0.05), and an equivalence test (TOST, ±{EQUIVALENCE_MARGIN:g}) "
            "behind any 'as good as'. 'not testable' means the data carry no variance estimate for that "
            "comparison (e.g. identical predictions everywhere); 'no verdict' that it rests on fewer than "
            f"{MIN_DRAWS} paired draws, whose interval covers those draws only.")))
        blocks.append(Block("table", table, f"Paired comparison with the reference ({size} images/class)"))

    blocks.append(Block("heading", "Fine-tuning versus frozen features: crossover"))
    blocks.append(Block("text", analysis.crossover["statement"]))
    cross = _crossover_table(analysis)
    if not cross.empty:
        blocks.append(Block("table", cross, "Pre-selected configuration of each family per train size"))

    reference = analysis.choice("frozen") or {}
    blocks.append(Block("heading", "Plots"))
    figures = [
        ("accuracy_by_cut", "Accuracy vs cut point per backbone and head (95% CI; descriptive)",
         lambda p: plots.plot_accuracy_by_cut(results, p, summary=analysis.summary)),
        ("learning_curves", "Learning curves of the pre-selected configuration of each family (95% CI bands)",
         lambda p: plots.plot_learning_curves(analysis.summary, analysis.selected, p)),
        ("confusion_matrix", "Confusion matrix of the pre-selected frozen-feature configuration (summed over draws)",
         lambda p: plots.plot_confusion_matrix(analysis.predictions, p, {**reference, "train_size": size})
         if reference else None),
        ("accuracy_vs_cost", "Accuracy vs cost (fit + extraction time; the pre-selected configurations are named)",
         lambda p: plots.plot_accuracy_vs_cost(results, p, summary=analysis.summary,
                                               labelled=analysis.selected[analysis.selected["train_size"] == size])),
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
    blocks.append(Block("text", course_answers(analysis, heading_level=2)))
    return blocks


def write_report(results: pd.DataFrame, predictions: pd.DataFrame | None, meta: dict | None,
                 out_dir: str | Path, title: str = "Transfer learning comparison",
                 analysis: Analysis | None = None) -> dict[str, Path]:
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
    analysis : Analysis, optional
        :func:`reports.analysis.analyse` of these tables when already computed.

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
    for stale in REPORT_FILES:
        (out / stale).unlink(missing_ok=True)
    analysis = analysis if analysis is not None else analyse(results, predictions, meta)
    document = Document(title, _build(analysis, meta, out, written))
    paths = document.write(out / "summary.md", out / "report.html")
    written["summary_md"], written["report_html"] = paths["markdown"], paths["html"]
    logger.info("report written to %s", out)
    return written

"""Answers to questions 9–16 of the course (Exercise 3, fine-tuning), written from the measured numbers.

Each answer quotes the run's own results (mean accuracy, 95% CI, n) and says "not measured in this run" when the
method it needs was not part of the comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd

from reports.stats import (CONFIG_COLUMNS, VARIANT_COLUMNS, config_columns, config_label, crossover,
                           paired_comparison, paired_difference, resampling_overlap, summarize)
from reports.tables import cut_order_for, format_accuracy

NOT_MEASURED = "not measured in this run"


def _acc(row: pd.Series) -> str:
    return format_accuracy(row["accuracy"], row["ci_low"], row["ci_high"], row["n_test"], row["n_splits"])


def _name(row: pd.Series) -> str:
    return f"**{config_label(row, [c for c in (*CONFIG_COLUMNS, *VARIANT_COLUMNS) if c in row.index])}**"


def _interval(low: float, high: float) -> str:
    """`` (95% CI …)`` of a paired difference, or why there is none (the same difference on every split)."""
    if math.isnan(low):
        return " (the same on every split: no variance, not testable)"
    return f" (95% CI {low:+.3f} to {high:+.3f})"


def _family(summary: pd.DataFrame, family: str) -> pd.DataFrame:
    if "family" not in summary:
        return summary.iloc[0:0]
    return summary[summary["family"] == family]


def _best(summary: pd.DataFrame) -> pd.Series | None:
    valid = summary[summary["accuracy"].notna()]
    return None if valid.empty else valid.loc[valid["accuracy"].idxmax()]


class _Context:
    """Shared inputs of the answers: the summary at the largest train size and the crossover."""

    def __init__(self, results: pd.DataFrame, crossover_result: dict | None, random_init: Sequence[str]):
        self.results = results
        self.random_init = set(random_init)
        if "pretrained" in results:
            flagged = ~results["pretrained"].fillna(True).astype(bool)
            self.random_init |= set(results.loc[flagged, "backbone"].astype(str))
        self.size = int(results["train_size"].max())
        self.at_size = results[results["train_size"] == self.size]
        self.config = config_columns(results)
        self.summary = summarize(self.at_size, by=[*self.config, "train_size"])
        self.best = _best(self.summary)
        self.crossover = crossover_result if crossover_result is not None else crossover(results)


def _q9(ctx: _Context) -> str:
    scratch = _best(_family(ctx.summary, "scratch"))
    if scratch is None:
        return (f"A network trained from scratch was {NOT_MEASURED}. With {ctx.size} images per class, the best "
                f"method reached {_acc(ctx.best)} ({_name(ctx.best)}).")
    gap = scratch["accuracy"] - ctx.best["accuracy"]
    verdict = ("so training from scratch is competitive here" if gap > -0.02 else
               "so a network trained from scratch on this little data is clearly worse than transfer")
    return (f"Trained from scratch with {ctx.size} images per class, {_name(scratch)} reached {_acc(scratch)}, "
            f"versus {_acc(ctx.best)} for the best method ({_name(ctx.best)}): a gap of {gap:+.3f}, {verdict}.")


def _q10(ctx: _Context) -> str:
    frozen = _family(ctx.summary, "frozen")
    if frozen.empty:
        return f"Classical classifiers on CNN features were {NOT_MEASURED}."
    lines = [f"Yes: a classical classifier on frozen CNN features works with {ctx.size} images per class. "
             "Best configuration per classifier:"]
    per_method = frozen.loc[frozen.dropna(subset=["accuracy"]).groupby("method")["accuracy"].idxmax()]
    for _, row in per_method.sort_values("accuracy", ascending=False).iterrows():
        lines.append(f"- {row['method']} ({config_label(row, ('backbone', 'cut'))}): {_acc(row)}")
    pixels = _best(_family(ctx.summary, "pixels"))
    lines.append(f"- raw pixels baseline ({_name(pixels)}): {_acc(pixels)}" if pixels is not None
                 else f"- raw-pixel baseline: {NOT_MEASURED}")
    return "\n".join(lines)


def _q11(ctx: _Context) -> str:
    text = ("Data can be augmented with label-preserving transformations (random crops, flips, small rotations, "
            "colour jitter) or more images can be collected/borrowed (transfer from ImageNet is the strongest form "
            "of the latter). ")
    results = ctx.at_size
    if "augment" not in results or results["augment"].nunique(dropna=False) <= 1:
        return text + f"The effect of augmentation was {NOT_MEASURED}."
    augment = results["augment"].fillna("none").astype(str)
    base = results.assign(augment=augment)
    keys = [c for c in (*ctx.config, "train_size", "split") if c in base and c != "augment"]
    plain = base[base["augment"] == "none"].set_index(keys)["accuracy"]
    lines = [text + f"Measured effect at {ctx.size} images/class (augmented − none, paired over splits):"]
    for policy, group in base[base["augment"] != "none"].groupby("augment"):
        diff = (group.set_index(keys)["accuracy"] - plain).dropna()
        if diff.empty:
            lines.append(f"- {policy}: no matching run without augmentation")
            continue
        tests = paired_difference(diff.to_numpy(), overlap=resampling_overlap(group))
        lines.append(f"- {policy}: mean difference {tests['diff']:+.3f}"
                     f"{_interval(tests['diff_ci_low'], tests['diff_ci_high'])} over {len(diff)} paired runs")
    return "\n".join(lines)


def _q12(ctx: _Context) -> str:
    frozen, tuned = _best(_family(ctx.summary, "frozen")), _best(_family(ctx.summary, "finetune"))
    text = ("Two ways: (1) use the pretrained network as a fixed feature extractor (cut it, pool the activations, "
            "train a classical classifier on them); (2) replace the 1000-class layer by a 2-class one and fine-tune "
            "the head, the last blocks or the whole network. ")
    parts = [f"Best frozen-feature method: {_name(frozen)} {_acc(frozen)}." if frozen is not None
             else f"Frozen features: {NOT_MEASURED}.",
             f"Best fine-tuning method: {_name(tuned)} {_acc(tuned)}." if tuned is not None
             else f"Fine-tuning: {NOT_MEASURED}."]
    if frozen is not None and tuned is not None:
        subset = ctx.at_size[ctx.at_size.set_index(ctx.config).index.isin(
            [tuple(frozen[c] for c in ctx.config), tuple(tuned[c] for c in ctx.config)])]
        paired = paired_comparison(subset, by=(*ctx.config, "train_size"),
                                   reference={c: frozen[c] for c in ctx.config})
        other = paired[~paired["is_reference"]]
        if not other.empty and other["n_pairs"].iloc[0] >= 2:
            row = other.iloc[0]
            test = "" if math.isnan(row["t_p"]) else f", paired t-test p={row['t_p']:.3g}"
            parts.append(f"Fine-tuning − frozen: {row['diff']:+.3f}{_interval(row['diff_ci_low'], row['diff_ci_high'])}"
                         f"{test} over {row['n_pairs']} splits.")
    return text + " ".join(parts)


def _q13(ctx: _Context) -> str:
    text = ("Fine-tuning pays off when there is enough labelled data to adapt the weights without over-fitting, and "
            "when the target domain differs from ImageNet; with very few images a frozen extractor is safer. ")
    statement = ctx.crossover.get("statement") or f"The crossover was {NOT_MEASURED}."
    return text + "Measured: " + statement


def _q14(ctx: _Context) -> str:
    frozen = _family(ctx.summary, "frozen")
    frozen = frozen[frozen["cut"].fillna("").astype(str) != ""] if not frozen.empty else frozen
    if frozen.empty:
        return f"The choice of cut point was {NOT_MEASURED}."
    lines = [f"Best cut point per backbone and classifier at {ctx.size} images/class (cut points ordered shallow → "
             "deep; features go from general (edges, textures) to ImageNet-specific with depth, Yosinski et al. "
             "2014):"]
    deepest = 0
    for (backbone, method), group in frozen.groupby(["backbone", "method"], sort=True):
        group = group.dropna(subset=["accuracy"])
        if group.empty:
            continue
        order = cut_order_for(str(backbone), group["cut"].unique())
        best = group.loc[group["accuracy"].idxmax()]
        depth = order.index(best["cut"]) + 1 if best["cut"] in order else math.nan
        deepest += depth == len(order)
        lines.append(f"- {backbone} / {method}: **{best['cut']}** (cut {depth} of {len(order)} tried) {_acc(best)}")
    pairs = len(lines) - 1
    lines.append(f"In this run the deepest cut tried was the best in {deepest} of {pairs} backbone/classifier pairs "
                 "(differences between neighbouring cuts are often within the CIs).")
    lines.append("The part kept is used frozen as a feature extractor (pooled, optionally L2-normalised) or "
                 "fine-tuned together with a new head.")
    return "\n".join(lines)


def _backbone_answer(ctx: _Context, prefix: str, label: str) -> str:
    rows = ctx.summary[ctx.summary["backbone"].astype(str).str.startswith(prefix)]
    if rows.empty:
        return f"A {label} backbone was {NOT_MEASURED}."
    lines = [f"{label} results at {ctx.size} images/class:"]
    for backbone, group in rows.groupby("backbone", sort=True):
        for family in ("frozen", "finetune", "scratch"):
            best = _best(_family(group, family))
            if best is not None:
                lines.append(f"- {backbone}, best {family}: {_name(best)} {_acc(best)}")
        if str(backbone) in ctx.random_init:
            lines.append(f"- {backbone} ran with RANDOM-INIT weights: these numbers say nothing about ImageNet "
                         "transfer.")
    return "\n".join(lines)


_QUESTIONS: tuple[tuple[str, str, Callable[[_Context], str]], ...] = (
    ("Q9", "Can a neural network be trained effectively on this data?", _q9),
    ("Q10", "With so little data, can another classifier (SVM, random forest, …) be used?", _q10),
    ("Q11", "How can the amount of training data be increased?", _q11),
    ("Q12", "How can an ImageNet-trained network be adapted to this task?", _q12),
    ("Q13", "When is fine-tuning appropriate?", _q13),
    ("Q14", "Where is it most relevant to cut the network, and what to do with the kept part?", _q14),
    ("Q15", "Adapt a pretrained ResNet to this task.", lambda ctx: _backbone_answer(ctx, "resnet", "ResNet")),
    ("Q16", "Adapt a pretrained VGG to this task.", lambda ctx: _backbone_answer(ctx, "vgg", "VGG")),
)


def course_answers(results: pd.DataFrame, crossover_result: dict | None = None, heading_level: int = 2,
                   random_init: Sequence[str] = ()) -> str:
    """Markdown answers to course questions 9–16 from the measured results.

    Parameters
    ----------
    results : DataFrame
        The long results table of the comparison.
    crossover_result : dict, optional
        Output of :func:`reports.stats.crossover`; computed when omitted.
    heading_level : int, default=2
        Markdown level of the section heading (questions are one level below).
    random_init : sequence of str, default=()
        Backbones that ran with random-init weights (in addition to rows whose ``pretrained`` is False); their
        answers carry a warning.

    Returns
    -------
    str
        Markdown text; every quoted accuracy carries its 95% CI and n.
    """
    title = "#" * heading_level + " Course questions 9–16, answered from this run\n\n"
    if results is None or results.empty or "train_size" not in results:
        return title + f"No results: every answer is {NOT_MEASURED}.\n"
    ctx = _Context(results, crossover_result, random_init)
    if ctx.best is None:
        return title + f"No valid accuracy: every answer is {NOT_MEASURED}.\n"
    sub = "#" * (heading_level + 1)
    blocks = [f"{sub} {key}. {question}\n\n{answer(ctx)}\n" for key, question, answer in _QUESTIONS]
    return title + "\n".join(blocks)

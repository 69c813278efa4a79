"""Answers to questions 9–16 of the course (Exercise 3, fine-tuning), derived from the measured numbers.

Every sentence that states a finding quotes the number it rests on: an accuracy with its 95% CI, n and per-draw
spread, or a paired difference with its CI and test.  "Better"/"worse" needs a significant paired test, "as good as"
an equivalence test (TOST, margin :data:`reports.stats.EQUIVALENCE_MARGIN`); otherwise the answer says the data
cannot tell.  No verdict rests on fewer than :data:`reports.stats.MIN_DRAWS` training draws: the answer then gives
the numbers and says what cannot be concluded.  The configurations compared are the pre-selected ones
(:mod:`reports.analysis`), never the best by test accuracy.  An answer whose method did not run says "not measured
in this run".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import pandas as pd

from featurize.registry import Registry
from reports.analysis import Analysis, chance_level
from reports.stats import EQUIVALENCE_MARGIN, MIN_DRAWS, holm
from reports.tables import accuracy_text, cut_order_for

__all__ = ["NOT_MEASURED", "QUESTIONS", "Question", "course_answers"]

NOT_MEASURED = "not measured in this run"


def _acc(row: pd.Series | None) -> str:
    return NOT_MEASURED if row is None else accuracy_text(row)


def _name(analysis: Analysis, values: dict | pd.Series) -> str:
    return f"**{analysis.label(values)}**"


def _true(value) -> bool:
    """A nullable boolean of a test: True only when the test ran and said yes."""
    return not pd.isna(value) and bool(value)


def _p(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.3g}"


def _holm(tests: list[pd.Series | None]) -> list[float]:
    """Holm-adjusted p-values of a question's set of paired tests (NaN where a test is missing or not testable)."""
    raw = [math.nan if t is None else float(t["t_p"]) for t in tests]
    return list(holm(raw)) if raw else []


def _verdict(test: pd.Series | None, better: str, worse: str, p_adjusted: float | None = None) -> str:
    """What a paired difference (a − b) shows: the difference, its CI and test, and the conclusion it supports
    (significant when the p-value, Holm-adjusted over the question's comparisons when given, is below 0.05; none
    from fewer than :data:`MIN_DRAWS` paired draws)."""
    if test is None:
        return "no paired comparison was possible (not run on the same draws)"
    diff = f"difference {test['diff']:+.3f}"
    if math.isnan(test["diff_ci_low"]):
        return f"{diff} ({test['note'] or 'not testable'}): the data cannot tell"
    adjusted = "" if p_adjusted is None else f", Holm-adjusted over this question's comparisons {_p(p_adjusted)}"
    text = (f"{diff} (95% CI {test['diff_ci_low']:+.3f} to {test['diff_ci_high']:+.3f}, {test['test']} "
            f"p = {_p(test['t_p'])}{adjusted})")
    if _true(test.get("few_draws")):
        n = int(test["n_pairs"])
        return (f"{text}, from {n} paired draw{'s' if n != 1 else ''}: fewer than {MIN_DRAWS} draws, so no verdict "
                "— this run cannot tell whether one is better, worse or as good as the other")
    significant = _true(test["significant"]) if p_adjusted is None else (not pd.isna(p_adjusted)
                                                                          and p_adjusted < 0.05)
    if significant:
        return f"{text}: {better if test['diff'] > 0 else worse}"
    if _true(test["equivalent"]):
        return (f"{text}: equivalent within ±{EQUIVALENCE_MARGIN:.2f} (TOST p = {_p(test['tost_p'])}), i.e. "
                "as good as")
    return (f"{text}: neither a significant difference nor equivalence within ±{EQUIVALENCE_MARGIN:.2f} — the data "
            "cannot tell")


def _frozen(analysis: Analysis) -> tuple[dict | None, pd.Series | None]:
    choice = analysis.choice("frozen")
    return choice, None if choice is None else analysis.row(choice)


def _q9(a: Analysis) -> str:
    scratch = a.choice("scratch")
    frozen, frozen_row = _frozen(a)
    if scratch is None:
        return f"A network trained from scratch was {NOT_MEASURED}."
    text = (f"Trained from scratch with {a.largest} images per class, {_name(a, scratch)} reached "
            f"{_acc(a.row(scratch))}.")
    if frozen is None:
        return text + f" Transfer from frozen features was {NOT_MEASURED}, so there is nothing to compare with."
    return (text + f" The pre-selected frozen-feature configuration {_name(a, frozen)} reached {_acc(frozen_row)}; "
            f"scratch − frozen: " + _verdict(a.versus(scratch, frozen), "training from scratch is better here",
                                             "training from scratch is worse than transfer here") + ".")


def _versus_chance(row: pd.Series, chance: float) -> str:
    """Whether a classifier works: its accuracy's CI above chance, from at least :data:`MIN_DRAWS` draws."""
    if not row["ci_low"] > chance:
        return " — not shown to beat chance (its CI reaches it)"
    if row["n_splits"] < MIN_DRAWS:
        return (f" — above chance on these {int(row['n_splits'])} draws, but with fewer than {MIN_DRAWS} draws this "
                "run does not conclude that it works")
    return " — works: its CI lies above chance"


def _q10(a: Analysis) -> str:
    frozen = a.summary[(a.summary["family"] == "frozen") & (a.summary["train_size"] == a.largest)]
    if frozen.empty:
        return f"Classical classifiers on CNN features were {NOT_MEASURED}."
    chance = chance_level(a.predictions)
    chance_text = ("chance level unknown without predictions" if math.isnan(chance) else
                   f"chance = always the majority class = {chance:.3f}")
    lines = [f"Each classical classifier on frozen CNN features at {a.largest} images per class (its configuration "
             f"pre-selected by inner CV among the backbones and cut points tried; {chance_text}):"]
    results = a.results[(a.results["family"] == "frozen") & (a.results["train_size"] == a.largest)]
    pixels = a.choice("pixels")
    chosen = []
    for method, rows in results.groupby("method", sort=True):
        values = a.best_scored(rows)
        if values is not None and a.row(values) is not None:
            chosen.append((method, values))
    tests = [a.versus(values, pixels) if pixels is not None else None for _, values in chosen]
    for (method, values), test, p in zip(chosen, tests, _holm(tests)):
        row = a.row(values)
        line = f"- {method} ({a.label(values)}): {_acc(row)}"
        if not math.isnan(chance):
            line += _versus_chance(row, chance)
        if pixels is not None:
            line += "; versus raw pixels: " + _verdict(test, "better than raw pixels", "worse than raw pixels", p)
        lines.append(line)
    lines.append(f"- raw-pixel baseline ({_name(a, pixels)}): {_acc(a.row(pixels))}" if pixels is not None
                 else f"- raw-pixel baseline: {NOT_MEASURED}")
    return "\n".join(lines)


def _q11(a: Analysis) -> str:
    text = ("Data can be augmented with label-preserving transformations (random crops, flips, small rotations, "
            "colour jitter) or more images can be collected or borrowed (transfer from ImageNet is the strongest "
            "form of the latter). ")
    if "augment" not in a.config:
        return text + f"The effect of augmentation was {NOT_MEASURED} (one augmentation policy only)."
    results = a.results[a.results["train_size"] == a.largest]
    lines = [text + f"Measured at {a.largest} images/class (augmented − none, paired on the same draws):"]
    others = [c for c in a.config if c != "augment"]
    for key, rows in results.groupby(others, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        base = dict(zip(others, key))
        if "none" not in set(rows["augment"]):
            continue
        for policy in sorted(set(rows["augment"]) - {"none"}):
            test = a.versus({**base, "augment": policy}, {**base, "augment": "none"})
            lines.append(f"- {a.label(base)}, {policy}: " + _verdict(test, "augmentation helps", "augmentation hurts"))
    if len(lines) == 1:
        lines.append(f"- no method ran both with and without augmentation: {NOT_MEASURED}")
    return "\n".join(lines)


def _q12(a: Analysis) -> str:
    text = ("Two ways: (1) use the pretrained network as a fixed feature extractor (cut it, pool the activations, "
            "train a classical classifier on them); (2) replace the 1000-class layer by a new one and fine-tune the "
            "head, the last blocks or the whole network. ")
    frozen, frozen_row = _frozen(a)
    tuned = a.choice("finetune")
    parts = [f"Pre-selected frozen-feature configuration: {_name(a, frozen)} {_acc(frozen_row)}." if frozen
             else f"Frozen features: {NOT_MEASURED}.",
             f"Fine-tuning (fixed in advance): {_name(a, tuned)} {_acc(a.row(tuned))}." if tuned
             else f"Fine-tuning: {NOT_MEASURED}."]
    probe = a.choice("linear_probe_sgd")
    if probe is not None:
        parts.append(f"Linear probe trained by SGD on the frozen network: {_name(a, probe)} {_acc(a.row(probe))}.")
    if frozen is not None and tuned is not None:
        parts.append("Fine-tuning − frozen: " + _verdict(a.versus(tuned, frozen), "fine-tuning is better here",
                                                         "frozen features are better here") + ".")
    return text + " ".join(parts)


def _q13(a: Analysis) -> str:
    statement = a.crossover.get("statement") or f"The crossover was {NOT_MEASURED}."
    return ("Fine-tuning is appropriate once there are enough labelled images for adapting the weights to pay off "
            "over a frozen extractor. What this run measured: " + statement)


def _q14(a: Analysis) -> str:
    results = a.results[(a.results["family"] == "frozen") & (a.results["train_size"] == a.largest)]
    results = results[~results["cut"].astype(str).isin(["", "all"])]
    if results.empty:
        return f"The choice of cut point was {NOT_MEASURED}."
    lines = [f"Cut point pre-selected by inner CV, per backbone and classifier, at {a.largest} images/class (cut "
             "points ordered shallow → deep; features are thought to go from general to ImageNet-specific with "
             "depth, Yosinski et al. 2014 — a background claim this run does not test):"]
    picks = []
    for (backbone, method), rows in results.groupby(["backbone", "method"], sort=True):
        means = rows.groupby("cut")["selection_score"].mean().dropna()
        if means.empty:
            continue
        order = cut_order_for(str(backbone), list(rows["cut"].unique()))
        chosen, base = str(means.idxmax()), {c: rows.iloc[0][c] for c in a.config}
        test = None if chosen == order[-1] else a.versus({**base, "cut": chosen}, {**base, "cut": order[-1]})
        picks.append((backbone, method, order, chosen, base, test))
    adjusted = _holm([test for *_, test in picks])
    counts = {"deepest": 0, "not_significant": 0, "significant": 0, "untestable": 0, "few_draws": 0}
    for (backbone, method, order, chosen, base, test), p in zip(picks, adjusted):
        line = (f"- {backbone} / {method}: **{chosen}** (cut {order.index(chosen) + 1} of {len(order)} tried) "
                f"{_acc(a.row({**base, 'cut': chosen}))}")
        if chosen == order[-1]:
            counts["deepest"] += 1
        else:
            line += f"; versus the deepest cut {order[-1]}: " + _verdict(test, "better", "worse", p)
            counts["untestable" if pd.isna(p) else "few_draws" if _true(test.get("few_draws")) else
                   "significant" if p < 0.05 else "not_significant"] += 1
        lines.append(line)
    others = len(picks) - counts["deepest"]
    few = (f", without a verdict in {counts['few_draws']} (fewer than {MIN_DRAWS} draws)"
           if counts["few_draws"] else "")
    lines.append(f"The deepest cut tried was selected in {counts['deepest']} of {len(picks)} backbone/classifier "
                 f"pairs; where another cut was selected ({others}), its difference to the deepest was significant "
                 f"in {counts['significant']}, not significant in {counts['not_significant']} and not testable in "
                 f"{counts['untestable']}{few} (Holm-adjusted over these comparisons).")
    lines.append("The part kept is used frozen as a feature extractor (pooled, optionally L2-normalised) or "
                 "fine-tuned together with a new head.")
    return "\n".join(lines)


def _backbone_answer(a: Analysis, prefix: str, label: str) -> str:
    backbones = sorted({str(b) for b in a.results["backbone"] if str(b).startswith(prefix)})
    if not backbones:
        return f"A {label} backbone was {NOT_MEASURED}."
    lines = [f"{label} results at {a.largest} images/class (per family, the configuration of this backbone "
             "pre-selected the same way as everywhere: inner-CV score for frozen heads, first listed otherwise):"]
    for backbone in backbones:
        results = a.results[(a.results["backbone"] == backbone) & (a.results["train_size"] == a.largest)]
        for family in ("frozen", "linear_probe_sgd", "finetune", "scratch"):
            rows = results[results["family"] == family]
            if rows.empty:
                continue
            choice = a.best_scored(rows) if family == "frozen" else {c: rows.iloc[0][c] for c in a.config}
            if choice is not None:
                lines.append(f"- {backbone}, {family}: {_name(a, choice)} {_acc(a.row(choice))}")
        if str(backbone) in a.random_init:
            lines.append(f"- {backbone} ran with RANDOM-INIT weights: these numbers say nothing about ImageNet "
                         "transfer.")
    return "\n".join(lines)


class Question(NamedTuple):
    """A course question and the function that answers it from the analysis of a run."""

    text: str
    answer: Callable[[Analysis], str]


QUESTIONS: Registry[Question] = Registry("course question")
"""The questions answered, in order, by key (``"Q9"``)."""
QUESTIONS.register("Q9", Question("Can a neural network be trained effectively on this data?", _q9))
QUESTIONS.register("Q10", Question("With so little data, can another classifier (SVM, random forest, …) be used?",
                                   _q10))
QUESTIONS.register("Q11", Question("How can the amount of training data be increased?", _q11))
QUESTIONS.register("Q12", Question("How can an ImageNet-trained network be adapted to this task?", _q12))
QUESTIONS.register("Q13", Question("When is fine-tuning appropriate?", _q13))
QUESTIONS.register("Q14", Question("Where is it most relevant to cut the network, and what to do with the kept part?",
                                   _q14))
QUESTIONS.register("Q15", Question("Adapt a pretrained ResNet to this task.",
                                   lambda a: _backbone_answer(a, "resnet", "ResNet")))
QUESTIONS.register("Q16", Question("Adapt a pretrained VGG to this task.",
                                   lambda a: _backbone_answer(a, "vgg", "VGG")))


def course_answers(analysis: Analysis, heading_level: int = 2) -> str:
    """Markdown answers to course questions 9–16 from the analysis of a run.

    Parameters
    ----------
    analysis : Analysis
        From :func:`reports.analysis.analyse`.
    heading_level : int, default=2
        Markdown level of the section heading (questions are one level below).

    Returns
    -------
    str
        Markdown text; every quoted accuracy carries its 95% CI and n.
    """
    title = "#" * heading_level + " Course questions 9–16, answered from this run\n\n"
    if analysis.results.empty or analysis.summary["accuracy"].isna().all():
        return title + f"No results: every answer is {NOT_MEASURED}.\n"
    sub = "#" * (heading_level + 1)
    blocks = [f"{sub} {key}. {question.text}\n\n{question.answer(analysis)}\n" for key, question in QUESTIONS.items()]
    return title + "\n".join(blocks)

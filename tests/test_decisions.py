"""Decisions on top of the numbers: stratified inner CV, patience per phase, and every verdict sentence of the course
answers — each checked with a constructed case whose numbers call for the decision and one whose numbers do not.

The ``check_*`` functions are also run against planted faults in ``tests/test_faults_*.py``.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from classifiers.heads import make_tuned_head
from classifiers.training import EarlyStopping
from reports.analysis import analyse
from reports.answers import course_answers
from reports.stats import EQUIVALENCE_MARGIN, MIN_DRAWS

# --- inner cross-validation and early stopping -----------------------------------------------------------------------


def check_inner_cv_is_stratified() -> None:
    """3 classes × 5 images: every inner fold the search uses holds one image of each class (unstratified folds
    miss classes, and tuning at 5 images per class becomes noise)."""
    X = np.random.default_rng(0).normal(size=(15, 4))
    y = np.repeat(["ants", "bees", "wasps"], 5)
    for seed in range(5):
        search = make_tuned_head("logistic", n_per_class=5, random_state=seed)
        folds = list(search.cv.split(X, y))
        assert len(folds) == 5
        for train, test in folds:
            assert sorted(y[test]) == ["ants", "bees", "wasps"], f"random_state={seed}: test fold {list(y[test])}"
            assert all((y[train] == c).sum() == 4 for c in ("ants", "bees", "wasps"))


def test_inner_cv_folds_are_stratified():
    check_inner_cv_is_stratified()


def _run(stopper: EarlyStopping, losses: list[float], first_epoch: int, net: nn.Module) -> list[bool]:
    return [stopper.update(epoch, loss, 0.5, net) for epoch, loss in enumerate(losses, first_epoch)]


def check_patience_counts_per_phase() -> None:
    """Patience 2 in two phases. Phase 1 ends on a non-improving epoch (its counter at 1); phase 2 starts afresh, so
    its first non-improving epoch does not stop it — the second does."""
    net = nn.Linear(1, 1)
    stopper = EarlyStopping()
    stopper.start_phase(2)
    assert _run(stopper, [1.0, 0.8, 0.9], 1, net) == [False, False, False]
    stopper.start_phase(2)
    assert _run(stopper, [0.85, 0.82], 4, net) == [False, True], "phase 2 stopped early: patience carried over"
    assert stopper.best_epoch == 2 and stopper.best_loss == 0.8
    stopper.start_phase(1)
    assert _run(stopper, [0.7, 0.75], 6, net) == [False, True]  # an improvement resets it within a phase too
    assert stopper.best_epoch == 6


def test_early_stopping_patience_counts_per_phase():
    check_patience_counts_per_phase()


# --- the course answers' verdict sentences ------------------------------------------------------------------------

Z = np.array([1.2, -0.8, 0.3, -1.5, 0.9, -0.2, 1.6, -1.1, 0.1, -0.5])
Z = (Z - Z.mean()) / Z.std(ddof=1)  # mean 0, sd 1: a difference mean + sd·Z has exactly that mean and sd
FROZEN = np.array([0.80, 0.83, 0.78, 0.85, 0.81, 0.79, 0.84, 0.82, 0.80, 0.83])


def run_analysis(accuracies: dict[tuple[str, str], np.ndarray], n_test: int = 100, n_train: int = 200):
    """Analysis of a resampled-design run at 20 images/class: ``accuracies[(family, method)]`` per split. Frozen
    heads are pre-selected by ``selection_score`` (``logistic`` highest); chance is 0.5 (balanced test sets)."""
    rows, predictions = [], []
    scores = {"logistic": 0.9, "linear_svm": 0.8, "random_forest": 0.7}
    for (family, method), values in accuracies.items():
        for split, acc in enumerate(values):
            rows.append(dict(design="resampled", backbone="resnet18", cut="layer4" if family == "frozen" else "",
                             method=method, family=family, train_size=20, split=split, n_train=n_train,
                             n_test=n_test, n_correct=round(acc * n_test), accuracy=acc, balanced_accuracy=acc,
                             selection_score=scores.get(method, 0.6), pretrained=True))
    y = np.repeat(["ants", "bees"], n_test // 2)
    predictions = pd.DataFrame({"backbone": "resnet18", "cut": "layer4", "method": "logistic", "train_size": 20,
                                "split": 0, "index": np.arange(n_test), "y_true": y, "y_pred": y})
    return analyse(pd.DataFrame(rows), predictions)


def answer(analysis, question: str) -> str:
    """The text of one course answer (``"Q12"``)."""
    text = course_answers(analysis)
    start = text.index(f"### {question}.")
    end = text.find("\n### ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def finetune_versus_frozen(mean: float, sd: float, n_splits: int = 10) -> str:
    """Q12's sentence on fine-tuning − frozen when the per-split difference has exactly this mean and sd."""
    frozen = FROZEN[:n_splits]
    z = Z[:n_splits] if n_splits == len(Z) else (Z[:n_splits] - Z[:n_splits].mean()) / Z[:n_splits].std(ddof=1)
    run = run_analysis({("frozen", "logistic"): frozen, ("finetune", "finetune_full"): frozen + mean + sd * z})
    line = answer(run, "Q12")
    return line[line.index("Fine-tuning − frozen:"):]


BETTER, WORSE = "fine-tuning is better here", "frozen features are better here"
AS_GOOD_AS, CANNOT_TELL, NO_VERDICT = "i.e. as good as", "the data cannot tell", "so no verdict"


def check_better_needs_a_significant_test() -> None:
    """+0.005 with p = 0.93 is no 'better' (the planted fault said 'better' whenever the test ran)."""
    text = finetune_versus_frozen(0.005, 0.074)
    assert "difference +0.005" in text and "p = 0.93" in text
    assert BETTER not in text and CANNOT_TELL in text, text


@pytest.mark.parametrize(("mean", "sd", "expected", "absent"), [
    (0.05, 0.01, BETTER, (WORSE, AS_GOOD_AS, CANNOT_TELL, NO_VERDICT)),
    (-0.05, 0.01, WORSE, (BETTER, AS_GOOD_AS, CANNOT_TELL, NO_VERDICT)),
    (0.002, 0.01, AS_GOOD_AS, (BETTER, WORSE, CANNOT_TELL, NO_VERDICT)),
    (0.005, 0.074, CANNOT_TELL, (BETTER, WORSE, AS_GOOD_AS, NO_VERDICT)),
], ids=["better", "worse", "as good as", "cannot tell"])
def test_each_verdict_is_said_when_its_numbers_call_for_it(mean, sd, expected, absent):
    text = finetune_versus_frozen(mean, sd)
    assert expected in text, text
    assert not any(other in text for other in absent), text
    assert f"difference {mean:+.3f}" in text and "95% CI" in text and "p = " in text  # it quotes its numbers


@pytest.mark.parametrize(("mean", "sd", "sentence"), [
    (0.005, 0.074, BETTER),  # not significant (p = 0.93)
    (0.02, 0.074, BETTER),  # positive but not significant
    (-0.005, 0.074, WORSE),  # not significant
    (-0.02, 0.074, WORSE),
    (0.03, 0.01, AS_GOOD_AS),  # significant, not within ±0.05 with confidence: not "as good as"
    (0.03, 0.074, AS_GOOD_AS),  # wide interval: equivalence not shown
    (0.05, 0.01, CANNOT_TELL),  # significant: the data do tell
    (0.002, 0.01, CANNOT_TELL),  # equivalent: the data do tell
], ids=["better p=0.93", "better p=0.4", "worse p=0.93", "worse p=0.4", "as good as: significant",
        "as good as: wide", "cannot tell: significant", "cannot tell: equivalent"])
def test_no_verdict_is_said_when_its_numbers_do_not_call_for_it(mean, sd, sentence):
    text = finetune_versus_frozen(mean, sd)
    assert sentence not in text, text


def test_the_better_verdict_needs_a_significant_test():
    check_better_needs_a_significant_test()


def check_few_draws_give_no_verdict() -> None:
    """Three draws with a large, consistent difference: the numbers are given, the verdict is not."""
    text = finetune_versus_frozen(0.05, 0.01, n_splits=3)
    assert "difference +0.050" in text and f"fewer than {MIN_DRAWS} draws, {NO_VERDICT}" in text, text
    assert not any(s in text for s in (BETTER, WORSE, AS_GOOD_AS)), text


def test_fewer_than_five_draws_give_no_verdict_but_ten_do():
    check_few_draws_give_no_verdict()
    assert NO_VERDICT not in finetune_versus_frozen(0.05, 0.01, n_splits=10)


WORKS, NOT_SHOWN = "works: its CI lies above chance", "not shown to beat chance"


def versus_chance(frozen: np.ndarray) -> str:
    run = run_analysis({("frozen", "logistic"): frozen})
    return next(line for line in answer(run, "Q10").splitlines() if line.startswith("- logistic"))


def test_works_is_said_when_the_interval_lies_above_chance():
    line = versus_chance(FROZEN)
    assert WORKS in line and NOT_SHOWN not in line and "0.815 [" in line, line


def test_works_is_not_said_when_the_interval_reaches_chance():
    line = versus_chance(0.53 + 0.05 * Z)
    assert WORKS not in line and NOT_SHOWN in line, line
    few = versus_chance(FROZEN[:3])
    assert WORKS not in few and "does not conclude that it works" in few, few


def check_answers_apply_holm() -> None:
    """Three classifiers against raw pixels: the one raw p = 0.026 is 0.077 after Holm over the question's three
    comparisons, so no classifier is 'better than raw pixels'."""
    pixels = FROZEN - 0.1
    run = run_analysis({("pixels", "pixels"): pixels,
                        ("frozen", "logistic"): pixels + 0.03 + 0.0145 * Z,
                        ("frozen", "linear_svm"): pixels + 0.003 + 0.02 * Z[::-1],
                        ("frozen", "random_forest"): pixels - 0.002 + 0.02 * np.roll(Z, 3)})
    lines = [line for line in answer(run, "Q10").splitlines() if "versus raw pixels" in line]
    assert len(lines) == 3
    logistic = next(line for line in lines if line.startswith("- logistic"))
    assert re.search(r"p = 0\.0256, Holm-adjusted over this question's comparisons 0\.0767", logistic), logistic
    assert not any("better than raw pixels" in line for line in lines), logistic


def test_the_answers_correct_for_multiple_comparisons():
    check_answers_apply_holm()


def test_margin_of_as_good_as_is_the_readmes():
    assert EQUIVALENCE_MARGIN == 0.05
    assert "within ±0.05" in finetune_versus_frozen(0.002, 0.01)


def test_patience_and_restore_still_follow_the_public_interface():
    net = nn.Linear(1, 1)
    stopper = EarlyStopping()
    stopper.start_phase(None)
    for epoch, loss in enumerate([2.0, 1.0, 3.0], 1):
        with torch.no_grad():
            net.weight.fill_(epoch)
        assert not stopper.update(epoch, loss, 0.0, net)
    stopper.restore(net)
    assert net.weight.item() == 2.0


def test_the_report_says_what_two_fine_tuning_draws_cannot_conclude(tmp_path):
    from test_reports import make_predictions, make_results

    from reports.compare_report import write_report

    results = make_results(sizes=(5, 20), n_splits=5)
    results = results[(results["family"] != "finetune") | (results["split"] < 2)]
    largest = results[results["train_size"] == 20]
    text = write_report(results, make_predictions(largest), {}, tmp_path)["summary_md"].read_text()
    assert "ran on 2 of the 5 draws" in text and "cannot be concluded" in text
    assert "| no verdict (fewer than 5 draws) | no verdict (fewer than 5 draws) |" in text  # fine-tuning's rows
    assert "Crossover not concluded" in text and "share 2 training draws, fewer than the 5" in text
    assert re.search(r"\(n=60 test images × 5 draws\); per draw min 0\.\d{3}, median 0\.\d{3}", text)
    assert not re.search(r"fine-tuning is better here|frozen features are better here|i\.e\. as good as", text)

"""reports.stats: intervals of both designs, paired tests, McNemar, TOST, selection on training-side evidence."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports import stats

CLASSES = ("ants", "bees")


def fixed_tables(matrices: dict, labels: np.ndarray, scores: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, predictions) of a fixed-test-set run from correctness matrices.

    ``matrices[(method, family, train_size)]`` is a (J, N) 0/1 array; ``labels`` the N true classes (0/1);
    ``scores[(method, train_size)]`` the selection score of every split (NaN when absent).
    """
    scores = scores or {}
    results, predictions = [], []
    for (method, family, size), c in matrices.items():
        c = np.asarray(c, dtype=int)
        for j, row in enumerate(c):
            y_true = [CLASSES[v] for v in labels]
            y_pred = [CLASSES[v if ok else 1 - v] for v, ok in zip(labels, row)]
            recall = [row[labels == k].mean() for k in (0, 1)]
            results.append(dict(
                dataset="sim", design="fixed_test", backbone="resnet18", weights="DEFAULT", pretrained=True,
                cut="" if family == "finetune" else "avgpool", pooling="" if family == "finetune" else "avg",
                method=method, family=family, augment="none", train_size=size, split=j, n_train=2 * size,
                n_test=row.size, n_correct=int(row.sum()), accuracy=row.mean(), balanced_accuracy=np.mean(recall),
                selection_score=scores.get((method, size), math.nan), seed=j))
            predictions.append(pd.DataFrame({
                "backbone": "resnet18", "cut": results[-1]["cut"], "pooling": results[-1]["pooling"],
                "method": method, "augment": "none", "train_size": size, "split": j, "index": np.arange(row.size),
                "y_true": y_true, "y_pred": y_pred}))
    return pd.DataFrame(results), pd.concat(predictions, ignore_index=True)


def resampled_results(values: dict, n_train: int = 40, n_test: int = 20) -> pd.DataFrame:
    """Resampled-design results: ``values[method]`` = per-split accuracies at train size 20."""
    rows = []
    for method, accs in values.items():
        for j, acc in enumerate(accs):
            rows.append(dict(design="resampled", backbone="resnet18", cut="avgpool", method=method, family="frozen",
                             train_size=20, split=j, n_train=n_train, n_test=n_test, n_correct=round(acc * n_test),
                             accuracy=acc, balanced_accuracy=acc))
    return pd.DataFrame(rows)


def random_matrix(rng, shape, p) -> np.ndarray:
    return (rng.random(shape) < p).astype(float)


# --- McNemar, TOST ---------------------------------------------------------------------------------------------


def test_mcnemar_exact_matches_a_hand_computation():
    a = np.array([1] * 50 + [1] * 2 + [0] * 8 + [0] * 5, dtype=bool)
    b = np.array([1] * 50 + [0] * 2 + [1] * 8 + [0] * 5, dtype=bool)
    result = stats.mcnemar_exact(a, b)
    assert (result["a_only"], result["b_only"]) == (2, 8)
    # two-sided exact binomial test of 2 successes out of 10 discordant pairs: 2 · (C(10,0) + C(10,1) + C(10,2)) / 2^10
    assert result["p"] == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert math.isnan(stats.mcnemar_exact(a, a)["p"])
    assert "not testable" in stats.mcnemar_exact(a, a)["note"]
    assert stats.mcnemar_exact([1, 0, 1], [0, 1, 1])["p"] == 1.0


def test_one_split_fixed_test_comparison_uses_mcnemar():
    labels = np.repeat([0, 1], [30, 40])
    a = np.ones(70)
    b = a.copy()
    b[:9] = 0
    b[60] = 0
    a[65] = 0
    results, predictions = fixed_tables({("a", "frozen", 10): a[None], ("b", "frozen", 10): b[None]}, labels)
    row = stats.paired_comparison(results, {"method": "a"}, predictions).query("~is_reference").iloc[0]
    assert row["test"] == "McNemar exact (one split)" and row["n_pairs"] == 1
    assert row["t_p"] == pytest.approx(stats.mcnemar_exact(b > 0, a > 0)["p"])
    assert row["diff"] == pytest.approx((b.sum() - a.sum()) / 70)
    assert "test-image sampling only" in row["note"]


def test_tost_matches_its_definition_and_the_interval_duality():
    record = {"estimate": 0.004, "se": 0.006, "df": 30}
    out = stats.tost(record, margin=0.02)
    expected = max(sps.t.sf((0.004 + 0.02) / 0.006, 30), sps.t.cdf((0.004 - 0.02) / 0.006, 30))
    assert out["tost_p"] == pytest.approx(expected) and out["equivalent"] is True
    half = sps.t.ppf(0.95, 30) * 0.006  # the 90% interval lies inside (-0.02, 0.02)
    assert -0.02 < 0.004 - half and 0.004 + half < 0.02
    far = stats.tost({"estimate": 0.015, "se": 0.01, "df": 30}, margin=0.02)
    assert far["equivalent"] is False and far["tost_p"] > 0.05
    assert stats.tost({"estimate": 0.0, "se": math.nan, "df": math.nan}, margin=0.02)["equivalent"] is pd.NA
    with pytest.raises(ValueError, match="margin"):
        stats.tost(record, margin=0)


def test_paired_comparison_says_as_good_as_only_when_tost_rejects():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [70, 83])
    base = random_matrix(rng, (10, 153), 0.85)
    near = base.copy()
    flip = rng.random(base.shape) < 0.01
    near[flip] = 1 - near[flip]
    worse = np.where(rng.random(base.shape) < 0.15, 0.0, base)
    results, predictions = fixed_tables({("a", "frozen", 20): base, ("near", "frozen", 20): near,
                                         ("worse", "frozen", 20): worse}, labels)
    paired = stats.paired_comparison(results, {"method": "a"}, predictions, margin=0.05).set_index("method")
    assert paired.loc["near", "equivalent"] and abs(paired.loc["near", "diff"]) < 0.02
    assert not paired.loc["worse", "equivalent"] and paired.loc["worse", "significant"]
    assert paired.loc["a", "equivalent"] is pd.NA and paired.loc["a", "note"] == "reference"


# --- the two-level interval (fixed test set) ----------------------------------------------------------------------


def test_two_level_interval_equals_the_crossed_anova_formula():
    rng = np.random.default_rng(3)
    c = random_matrix(rng, (6, 40), rng.uniform(0.5, 0.95, 40)[None] * rng.uniform(0.8, 1.0, 6)[:, None])
    out = stats.two_level_interval(c)
    j, n = c.shape
    grand = c.mean()
    ms_splits = n * ((c.mean(1) - grand) ** 2).sum() / (j - 1)
    ms_images = j * ((c.mean(0) - grand) ** 2).sum() / (n - 1)
    resid = c - c.mean(1, keepdims=True) - c.mean(0) + grand
    ms_resid = (resid**2).sum() / ((j - 1) * (n - 1))
    assert out["estimate"] == pytest.approx(grand)
    assert out["se"] ** 2 == pytest.approx((ms_splits + ms_images - ms_resid) / (j * n))
    assert 1 <= out["df"] <= (j - 1) + (n - 1) and not out["conditional"]
    # the interval is built on the logit scale (delta method) and transformed back
    centre = grand
    half = sps.t.ppf(0.975, out["df"]) * out["se"] / (centre * (1 - centre))
    expected = [1 / (1 + math.exp(-(math.log(centre / (1 - centre)) + s * half))) for s in (-1, 1)]
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(expected)
    raw = out["estimate"] + np.array([-1, 1]) * sps.t.ppf(0.975, out["df"]) * out["se"]
    assert abs((out["ci_high"] - out["ci_low"]) / (raw[1] - raw[0]) - 1) < 0.05  # mid-range: close to the raw one


def test_identical_splits_give_the_test_image_interval():
    """A deterministic model trained on the same data on every split: only the test images vary."""
    labels = np.repeat([0, 1], [70, 83])
    row = (np.arange(153) % 10 != 0).astype(float)
    out = stats.two_level_interval(np.tile(row, (10, 1)))
    p = row.mean()
    assert out["se"] ** 2 == pytest.approx(p * (1 - p) / 152)
    assert out["df"] == pytest.approx(152)
    stratified = stats.two_level_interval(np.tile(row, (10, 1)), labels)
    assert stratified["se"] == pytest.approx(out["se"], rel=0.01)  # the pattern does not depend on the class


def test_balanced_accuracy_interval():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], [30, 120])
    c = np.concatenate([random_matrix(rng, (8, 30), 0.5), random_matrix(rng, (8, 120), 0.95)], axis=1)
    out = stats.two_level_interval(c, labels, balanced=True)
    recall = np.stack([c[:, labels == k].mean(1) for k in (0, 1)], axis=1)
    assert out["estimate"] == pytest.approx(recall.mean())
    plain = stats.two_level_interval(c, labels)
    assert plain["estimate"] == pytest.approx(c.mean()) and plain["estimate"] > out["estimate"] + 0.1
    assert out["se"] > plain["se"]  # the 30-image minority class weighs half
    per_class_se = [stats.two_level_interval(c[:, labels == k])["se"] for k in (0, 1)]
    assert out["se"] == pytest.approx(0.5 * math.hypot(*per_class_se), rel=0.35)

    results, predictions = fixed_tables({("a", "frozen", 10): c}, labels)
    row = stats.summarize(results, predictions).iloc[0]
    assert row["balanced_accuracy"] == pytest.approx(out["estimate"])
    assert (row["balanced_ci_low"], row["balanced_ci_high"]) == pytest.approx((out["ci_low"], out["ci_high"]))
    assert row["design"] == "fixed_test" and row["ci_method"].startswith("two-level")


def test_summarize_fixed_test_matches_two_level_and_stays_inside_zero_one():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], [70, 83])
    good = random_matrix(rng, (3, 153), 0.995)
    results, predictions = fixed_tables({("good", "frozen", 5): good}, labels)
    row = stats.summarize(results, predictions).iloc[0]
    expected = stats.two_level_interval(good, labels)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected["ci_low"], expected["ci_high"]))
    assert 0 < row["ci_low"] < row["accuracy"] <= row["ci_high"] <= 1  # near the ceiling, never beyond it
    assert row["ci_conditional"] and "conditional on these 3 training draws" in row["ci_note"]
    assert row["n_splits"] == 3 and row["n_test"] == 153
    per_draw = good.mean(axis=1)
    assert (row["draw_min"], row["draw_median"]) == pytest.approx((per_draw.min(), np.median(per_draw)))
    without = stats.summarize(results).iloc[0]
    assert "no predictions" in without["ci_method"] and math.isnan(without["balanced_ci_low"])
    assert without["ci_conditional"] and 0 < without["ci_low"] and without["ci_high"] <= 1
    assert without["ci_high"] - without["ci_low"] >= row["ci_high"] - row["ci_low"] - 1e-9


def test_not_testable_cases_are_nan_with_a_reason():
    labels = np.repeat([0, 1], [5, 5])
    perfect = np.ones((4, 10))
    results, predictions = fixed_tables({("a", "frozen", 5): perfect, ("b", "frozen", 5): perfect}, labels)
    paired = stats.paired_comparison(results, {"method": "a"}, predictions).query("~is_reference").iloc[0]
    assert math.isnan(paired["diff_ci_low"]) and math.isnan(paired["t_p"]) and paired["significant"] is pd.NA
    assert "not testable" in paired["note"]
    no_predictions = stats.paired_comparison(results, {"method": "a"}).query("~is_reference").iloc[0]
    assert no_predictions["significant"] is pd.NA and "needs predictions" in no_predictions["note"]
    single = stats.summarize(resampled_results({"a": [0.8]})).iloc[0]
    assert single["ci_method"] == "Wilson (one split)"
    one = stats.paired_comparison(resampled_results({"a": [0.8], "b": [0.7]}), {"method": "a"})
    assert one.query("~is_reference")["significant"].isna().all()
    checkerboard = np.indices((6, 10)).sum(axis=0) % 2  # every draw 5/10, every image right on 3 of 6 draws
    nothing = stats.two_level_interval(checkerboard, labels)
    assert math.isnan(nothing["ci_low"]) and "neither draws nor test images show any variance" in nothing["note"]


def test_a_perfect_score_or_a_constant_accuracy_gets_a_conservative_interval_not_nan():
    """What can be estimated is: the test images' sampling (the old code said 'no variance' here)."""
    labels = np.repeat([0, 1], [70, 83])
    perfect = stats.two_level_interval(np.ones((10, 153)), labels)
    assert perfect["ci_high"] == 1.0 and perfect["ci_low"] == pytest.approx(0.976, abs=0.004)  # Clopper-Pearson 0.976
    assert perfect["df"] >= 1 and "not testable" not in perfect["note"]
    results, predictions = fixed_tables({("a", "frozen", 5): np.ones((4, 10))}, np.repeat([0, 1], [5, 5]))
    row = stats.summarize(results, predictions).iloc[0]
    assert 0.5 < row["ci_low"] < row["ci_high"] == 1.0 and row["ci_conditional"]
    same_count = np.ones((2, 153))
    same_count[0, :3] = same_count[1, 3:6] = 0  # two draws, the same number of errors on different images
    record = stats.two_level_interval(same_count, labels)
    assert record["ci_low"] < record["estimate"] < record["ci_high"] < 1 and record["conditional"]
    constant = stats.summarize(resampled_results({"a": [0.8, 0.8, 0.8]})).iloc[0]
    assert (constant["ci_low"], constant["ci_high"]) == pytest.approx(stats.wilson_ci(16, 20))
    assert "Wilson" in constant["ci_method"] and "conservative" in constant["ci_note"]


def test_paired_difference_fixed_test_detects_a_real_difference_and_respects_the_pairing():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], [70, 83])
    a = random_matrix(rng, (10, 153), rng.uniform(0.6, 1.0, 153)[None])
    b = np.where(rng.random(a.shape) < 0.06, 0.0, a)  # b = a with 6% of its right answers lost
    results, predictions = fixed_tables({("a", "frozen", 20): a, ("b", "frozen", 20): b}, labels)
    row = stats.paired_comparison(results, {"method": "a"}, predictions).query("~is_reference").iloc[0]
    record = stats.two_level_interval(b - a, labels)
    assert row["diff"] == pytest.approx((b - a).mean()) and row["test"] == "two-level t"
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((record["ci_low"], record["ci_high"]))
    assert row["diff_ci_high"] < 0 and row["significant"]
    unpaired = stats.two_level_interval(a)["se"] ** 2 + stats.two_level_interval(b)["se"] ** 2
    assert record["se"] ** 2 < unpaired / 3  # pairing on images removes the shared image variance


# --- resampled design: the Nadeau–Bengio correction -------------------------------------------------------------


def check_nadeau_bengio(summarize=None, paired_comparison=None) -> None:
    """The resampled design's intervals carry the factor sqrt(1/J + n_test/n_train) (project issue 16 item 8)."""
    summarize = summarize or stats.summarize
    paired_comparison = paired_comparison or stats.paired_comparison
    a = [0.80, 0.85, 0.90, 0.82, 0.88]
    b = [0.78, 0.80, 0.86, 0.81, 0.83]
    results = resampled_results({"a": a, "b": b}, n_train=40, n_test=20)
    factor = math.sqrt(1 / 5 + 20 / 40)
    t = sps.t.ppf(0.975, 4)
    row = summarize(results).set_index("method").loc["a"]
    mean, half = np.mean(a), t * np.std(a, ddof=1) * factor  # the accuracy's interval is built on the logit scale
    half_logit = half / (mean * (1 - mean))
    expected = [1 / (1 + math.exp(-(math.log(mean / (1 - mean)) + s * half_logit))) for s in (-1, 1)]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(expected)
    assert row["design"] == "resampled" and "Nadeau" in row["ci_method"]
    diff = np.subtract(b, a)
    paired = paired_comparison(results, {"method": "a"}).query("~is_reference").iloc[0]
    assert paired["diff_ci_high"] - paired["diff_ci_low"] == pytest.approx(2 * t * diff.std(ddof=1) * factor)
    tstat = diff.mean() / (diff.std(ddof=1) * factor)
    assert paired["t_p"] == pytest.approx(2 * sps.t.sf(abs(tstat), 4))


def test_nadeau_bengio_correction_is_applied_in_the_resampled_design():
    check_nadeau_bengio()


def test_design_column_is_checked():
    results = resampled_results({"a": [0.8, 0.9]}).assign(design=["resampled", "fixed_test"])
    with pytest.raises(ValueError, match="design"):
        stats.summarize(results)


def test_each_design_is_one_registered_object():
    assert {name: design.name for name, design in stats.DESIGNS.items()} == {"fixed_test": "fixed_test",
                                                                             "resampled": "resampled"}
    with pytest.raises(ValueError, match="valid evaluation designs: fixed_test, resampled"):
        stats.crossing_interval([5, 10], [np.zeros(3), np.ones(3)], design="bootstrap", n_boot=0)
    with pytest.raises(ValueError, match="already registered"):
        stats.DESIGNS.register("resampled", stats.ResampledDesign())


# --- selection on training-side evidence --------------------------------------------------------------------------


def selection_results(seed: int = 0) -> pd.DataFrame:
    """Three frozen heads and two fine-tuning methods at two sizes; test accuracy anti-correlated with the score."""
    rng = np.random.default_rng(seed)
    rows = []
    for size in (5, 50):
        for method, family, score, acc in [("svm", "frozen", 0.90, 0.70), ("logistic", "frozen", 0.85, 0.80),
                                           ("forest", "frozen", math.nan, 0.95), ("ft_full", "finetune", 0.70, 0.9),
                                           ("ft_head", "finetune", 0.75, 0.6)]:
            for split in range(4):
                rows.append(dict(design="resampled", backbone="resnet18", cut="" if family == "finetune" else "pool",
                                 method=method, family=family, train_size=size, split=split, n_train=2 * size,
                                 n_test=20, accuracy=acc + rng.normal(0, 0.02), selection_score=score + (size == 50)
                                 * (0.1 if method == "logistic" else 0.0) + rng.normal(0, 0.005)))
    return pd.DataFrame(rows)


def check_selection_blind_to_test() -> None:
    """select_best and the crossover choose the same configurations whatever the test accuracies / labels."""
    results = selection_results()
    chosen = stats.select_best(results, within=("train_size", "family"))
    pick = chosen.set_index(["train_size", "family"])["method"]
    assert pick[(5, "frozen")] == "svm" and pick[(50, "frozen")] == "logistic"
    assert pick[(5, "finetune")] == "ft_head"
    rng = np.random.default_rng(9)
    for _ in range(5):
        shuffled = results.assign(accuracy=rng.permutation(results["accuracy"].to_numpy()))
        assert stats.select_best(shuffled, within=("train_size", "family")).equals(chosen)
    results, predictions = crossover_tables(n_splits=3)
    curves = stats.crossover(results, predictions, n_boot=20)["curves"]
    assert curves["frozen_best"].str.endswith("/ svm").all()  # not the decoy with the best test accuracy
    relabelled = predictions.assign(y_true=rng.permutation(predictions["y_true"].to_numpy()))
    again = stats.crossover(results.assign(accuracy=1 - results["accuracy"]), relabelled, n_boot=20)["curves"]
    assert again[["frozen_best", "finetune_best"]].equals(curves[["frozen_best", "finetune_best"]])


def test_select_best_uses_the_selection_score_and_ignores_test_accuracy():
    check_selection_blind_to_test()
    chosen = stats.select_best(selection_results(), within=("train_size", "family"))
    assert (chosen["selected_by"] == "highest mean selection_score").all()
    overall = stats.select_best(selection_results())
    assert list(overall["method"]) == ["svm", "logistic"] and list(overall["family"]) == ["frozen", "frozen"]


def test_select_best_fixed_in_advance_and_refusals():
    results = selection_results()
    chosen = stats.select_best(results, within=("train_size", "family"), fixed={"frozen": {"method": "forest"}})
    pick = chosen.set_index(["train_size", "family"])
    assert pick.loc[(5, "frozen"), "method"] == "forest"
    assert pick.loc[(5, "frozen"), "selected_by"] == "fixed in advance"
    assert pick.loc[(5, "finetune"), "method"] == "ft_head"
    unscored = results.assign(selection_score=math.nan)
    assert stats.select_best(unscored).empty
    with pytest.raises(ValueError, match="test set"):
        stats.select_best(results, by="accuracy")
    with pytest.raises(ValueError, match="within"):
        stats.select_best(results, fixed={"frozen": {"method": "svm"}})
    with pytest.raises(ValueError, match="matches 3"):
        stats.select_best(results, within=("train_size", "family"), fixed={"frozen": {"backbone": "resnet18"}})


def test_paired_comparison_takes_the_selection_as_reference_and_never_a_test_default():
    results = selection_results()
    frozen = results[results["family"] == "frozen"]
    reference = stats.select_best(frozen)
    paired = stats.paired_comparison(frozen, reference)
    refs = paired[paired["is_reference"]].set_index("train_size")["method"]
    assert refs[5] == "svm" and refs[50] == "logistic"
    with pytest.raises(TypeError):
        stats.paired_comparison(frozen)  # no default reference
    with pytest.raises(ValueError, match="matches 3"):
        stats.paired_comparison(frozen, {"backbone": "resnet18"})


# --- crossover ----------------------------------------------------------------------------------------------------


def crossover_tables(seed: int = 0, n_splits: int = 6):
    """Frozen heads flat at ~0.85, fine-tuning rising through them between 20 and 50 images/class; a decoy frozen
    head has the best test accuracy but the worst selection score."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], [40, 50])
    matrices, scores = {}, {}
    for size in (5, 10, 20, 50, 120):
        ft = 0.85 + 0.08 * math.log(size / 31.6)
        for method, family, p, score in [("svm", "frozen", 0.85, 0.9), ("decoy", "frozen", 0.97, 0.5),
                                         ("ft_full", "finetune", ft, 0.8)]:
            matrices[(method, family, size)] = random_matrix(rng, (n_splits, labels.size), min(p, 0.99))
            scores[(method, size)] = score
    return fixed_tables(matrices, labels, scores)


def test_crossover_between_preselected_configurations_counts_every_resample():
    results, predictions = crossover_tables()
    found = stats.crossover(results, predictions, n_boot=400)
    assert found["status"] == "crossover" and found["design"] == "fixed_test"
    assert 15 < found["estimate"] < 70
    assert found["curves"]["frozen_best"].str.endswith("/ svm").all()  # not the decoy with the best test accuracy
    counts = found["resamples"]
    assert counts["total"] == 400
    assert counts["crossing"] + counts["finetune_ahead"] + counts["never_ahead"] + counts["undefined"] == 400
    low, high = found["ci"]
    assert low <= found["estimate"] <= high and "two-way bootstrap" in found["statement"]
    shuffled = results.assign(accuracy=np.random.default_rng(0).permutation(results["accuracy"].to_numpy()))
    assert stats.crossover(shuffled, predictions, n_boot=50)["curves"]["frozen_best"].equals(
        found["curves"]["frozen_best"])
    assert "needs the predictions" in stats.crossover(results)["statement"]


def test_crossover_without_a_crossing_reports_the_largest_difference_with_its_ci():
    results, predictions = crossover_tables()
    never = results[results["train_size"] <= 20]
    found = stats.crossover(never, predictions, n_boot=200)
    assert found["status"] == "not_reached" and found["estimate"] is None
    largest = found["largest"]
    assert largest["ci_low"] < largest["estimate"] < largest["ci_high"]
    assert f"{largest['estimate']:+.3f} [{largest['ci_low']:+.3f}, {largest['ci_high']:+.3f}]" in found["statement"]


def test_crossing_interval_resampled_design_scales_by_the_nadeau_bengio_factor():
    rng = np.random.default_rng(4)
    sizes = (5, 20, 80)
    diffs = [rng.normal(m, 0.03, 8) for m in (-0.1, -0.01, 0.08)]
    plain = stats.crossing_interval(sizes, diffs, design="resampled", n_boot=1000)
    corrected = stats.crossing_interval(sizes, diffs, design="resampled", overlaps=[1.0] * 3, n_boot=1000)
    assert plain["estimate"] == corrected["estimate"]
    assert corrected["ci"][1] - corrected["ci"][0] > 1.5 * (plain["ci"][1] - plain["ci"][0])


# --- decisions: multiplicity, few draws, numerics, resampling ------------------------------------------------------


def check_holm_within_a_train_size() -> None:
    """Three configurations against one reference at each of two train sizes: the one raw p of 0.026 becomes
    3 × 0.026 = 0.077 after Holm over that size's three comparisons (not six), so it is not significant."""
    base = np.array([0.80, 0.83, 0.78, 0.85, 0.81, 0.79, 0.84, 0.82, 0.80, 0.83])
    z = np.array([1.2, -0.8, 0.3, -1.5, 0.9, -0.2, 1.6, -1.1, 0.1, -0.5])
    z = (z - z.mean()) / z.std(ddof=1)
    results = resampled_results({"a": base, "b": base + 0.03 + 0.0145 * z, "c": base + 0.003 + 0.02 * z[::-1],
                                 "d": base - 0.002 + 0.02 * np.roll(z, 3)})
    both = pd.concat([results, results.assign(train_size=40)], ignore_index=True)
    paired = stats.paired_comparison(both, {"method": "a"})
    for _, size in paired.groupby("train_size"):
        rows = size.set_index("method")
        raw = rows["t_p"].drop("a")
        assert raw["b"] == pytest.approx(0.0256, abs=0.001) and raw.drop("b").min() > 0.5
        assert rows.loc["b", "p_holm"] == pytest.approx(3 * raw["b"])
        assert rows.loc["b", "significant"] is pd.NA or not rows.loc["b", "significant"]
        assert not rows["significant"].drop("a").any()


def test_holm_correction_applies_within_each_train_size():
    check_holm_within_a_train_size()


def check_no_verdict_from_few_draws() -> None:
    """With 3 paired draws the differences and their conditional tests are reported, but no verdict: neither
    'significant' nor 'equivalent', and no crossover point."""
    rng = np.random.default_rng(11)
    labels = np.repeat([0, 1], [70, 83])
    a = random_matrix(rng, (3, 153), 0.9)
    worse = np.where(rng.random(a.shape) < 0.3, 0.0, a)
    near = a.copy()
    near[:, :2] = 1 - near[:, :2]
    results, predictions = fixed_tables({("a", "frozen", 20): a, ("worse", "frozen", 20): worse,
                                         ("near", "frozen", 20): near}, labels)
    paired = stats.paired_comparison(results, {"method": "a"}, predictions).set_index("method")
    assert paired.loc["worse", "t_p"] < 0.001 and paired.loc["near", "tost_p"] < 0.05  # the numbers are there
    for method in ("worse", "near"):
        row = paired.loc[method]
        assert row["few_draws"] and row["significant"] is pd.NA and row["equivalent"] is pd.NA
        assert "no verdict from 3 paired draws" in row["note"] and "conditional on these 3" in row["note"]
    found = stats.crossover(*crossover_tables(n_splits=3), n_boot=50)
    assert found["status"] == "too_few_draws" and found["estimate"] is None and found["ci"] is None
    assert "not concluded" in found["statement"] and len(found["curves"]) == 5


def test_fewer_than_five_draws_give_numbers_but_no_verdict():
    check_no_verdict_from_few_draws()
    assert stats.MIN_DRAWS == 5


def check_numerics_are_never_absurd() -> None:
    """Five draws at chance, each right on 76 of 153 images: the draws' accuracies differ only by rounding (a
    variance of 1e-34 is no variance) and Satterthwaite's df falls below 1 on some seeds (floored at 1). Every
    interval stays finite, inside (0, 1), and about as wide as 153 test images allow."""
    labels = np.repeat([0, 1], [70, 83])
    for seed in range(20):
        rng = np.random.default_rng(seed)
        m = np.stack([rng.permutation(np.repeat([0.0, 1.0], [77, 76])) for _ in range(5)])
        r = stats.two_level_interval(m, labels)
        assert r["df"] >= 1 and 0 < r["ci_low"] < r["estimate"] < r["ci_high"] < 1, f"seed {seed}: {r}"
        assert 0.03 < r["ci_high"] - r["ci_low"] < 0.2, f"seed {seed}: width {r['ci_high'] - r['ci_low']}"


def test_numerics_cannot_produce_an_absurd_interval():
    check_numerics_are_never_absurd()
    labels = np.repeat([0, 1], [70, 83])
    one_error = np.ones((2, 153))
    one_error[0, 3] = one_error[1, 90] = 0  # accuracy 0.99, 2 draws, one error each: was ±1.9e128
    record = stats.two_level_interval(one_error, labels)
    assert record["df"] >= 1 and 0.95 < record["ci_low"] < record["ci_high"] <= 1
    chance = random_matrix(np.random.default_rng(0), (2, 153), 0.5)  # chance, 2 draws: df was 0.048
    record = stats.two_level_interval(chance, labels)
    assert record["df"] >= 1 and record["ci_high"] - record["ci_low"] < 0.25
    diff = stats.paired_interval(np.ones((5, 20)), np.ones((5, 20)))
    assert math.isnan(diff["ci_low"]) and "neither draws nor test images show any variance" in diff["note"]


def check_bootstrap_keeps_two_draws() -> None:
    """Two draws that cross at about 7 and 28 images/class, identical on every test image: a resample holding one
    draw would put the crossing at 7 or 28; resamples keep both, so every one gives the pair's crossing."""
    sizes = (5, 10, 20, 40)
    early, late = [-0.1, 0.1, 0.2, 0.3], [-0.3, -0.2, -0.1, 0.1]
    diffs = [np.array([[e] * 6 + [0] * 4, [l] * 6 + [0] * 4]) / 0.6 for e, l in zip(early, late)]
    found = stats.crossing_interval(sizes, diffs, n_boot=300)
    low, high = found["ci"]
    assert low == pytest.approx(found["estimate"]) and high == pytest.approx(found["estimate"])
    assert found["resamples"]["crossing"] == 300


def test_the_crossover_bootstrap_keeps_two_draws_in_every_resample():
    check_bootstrap_keeps_two_draws()


def test_crossover_reads_a_monotone_fit_not_the_first_noisy_crossing():
    sizes = (5, 10, 20, 40, 80)
    noisy = [np.array([d]) for d in (-0.10, 0.01, -0.02, 0.03, 0.08)]  # one noisy blip above 0 at 10
    found = stats.crossing_interval(sizes, noisy, design="resampled", n_boot=0)
    # the monotone fit pools 10 and 20 to -0.005: the crossing lies between 20 and 40, not between 5 and 10
    assert 20 < found["estimate"] < 40
    assert found["estimate"] == pytest.approx(math.exp(math.log(20) + 0.005 / 0.035 * math.log(2)))

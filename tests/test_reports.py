"""Reporting layer of the comparison: statistics, tables, plots, course answers, markdown/HTML report."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.analysis import analyse
from reports.answers import NOT_MEASURED, course_answers
from reports.compare_report import RANDOM_INIT_BANNER, random_init_backbones, summary_table, write_report
from reports.document import markdown_to_html
from reports.plots import plot_accuracy_by_cut, plot_accuracy_vs_cost, plot_confusion_matrix, plot_learning_curves
from reports.stats import crossover, holm, mean_ci, paired_comparison, summarize, wilson_ci
from reports.tables import format_accuracy, method_by_cut, to_html_table, to_markdown

CUTS = {"resnet18": ["layer3", "layer4", "avgpool"], "vgg11": ["pool4", "fc6", "fc7"]}
FROZEN = {"linear_svm": 0.0, "logistic": -0.01, "random_forest": -0.08}
FINETUNE = {"finetune_full": 0.0, "finetune_head": -0.05}
CLASSES = ("ants", "bees")


def make_results(seed: int = 0, sizes=(5, 20, 80), n_splits: int = 5, crossover_at: float = 20.0,
                 pretrained: bool = True, n_test: int = 60) -> pd.DataFrame:
    """Seeded synthetic results: 2 backbones × 3 cuts × 3 frozen heads + 2 fine-tuning methods per split.

    Frozen heads sit near 0.83–0.86 whatever the train size; fine-tuning grows by 0.12 per e-fold of train size
    and equals the best frozen head (~0.86) at ``crossover_at`` images per class.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for backbone, cuts in CUTS.items():
        for size in sizes:
            for split in range(n_splits):
                shift = rng.normal(0, 0.01)
                configs = [(cut, m, "frozen", 0.80 + 0.03 * i + off) for i, cut in enumerate(cuts)
                           for m, off in FROZEN.items()]
                configs += [("", m, "finetune", 0.86 + 0.12 * math.log(size / crossover_at) + off)
                            for m, off in FINETUNE.items()]
                for cut, method, family, p in configs:
                    p = float(np.clip(p + shift + rng.normal(0, 0.005), 0.02, 0.99))
                    k = int(rng.binomial(n_test, p))
                    rows.append(dict(
                        dataset="synthetic", backbone=backbone, weights="DEFAULT" if pretrained else "random:0",
                        pretrained=pretrained, cut=cut, pooling="avg" if cut else "", method=method, family=family,
                        augment="none", train_size=size, split=split, n_train=2 * size, n_test=n_test, n_correct=k,
                        accuracy=k / n_test, balanced_accuracy=k / n_test,
                        selection_score=float(np.clip(p + rng.normal(0, 0.02), 0, 1)), hyperparameters="{}",
                        fit_time_s=float(rng.uniform(0.01, 5)),
                        predict_time_s=0.01, extract_time_s=float(rng.uniform(0.1, 2)), seed=split))
    return pd.DataFrame(rows)


def make_predictions(results: pd.DataFrame, n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Per-image predictions consistent in spirit with each row's accuracy."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in results.itertuples():
        for i in range(n):
            y = CLASSES[rng.integers(2)]
            wrong = rng.random() > r.accuracy
            rows.append(dict(backbone=r.backbone, cut=r.cut, pooling=r.pooling, method=r.method, augment=r.augment,
                             train_size=r.train_size,
                             split=r.split, index=i, y_true=y, y_pred=CLASSES[1 - CLASSES.index(y)] if wrong else y))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return make_results()


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> tuple[dict[str, Path], Path]:
    out = tmp_path_factory.mktemp("report")
    largest = results[results["train_size"] == results["train_size"].max()]
    meta = {"dataset": "synthetic", "pretrained": {"resnet18": True, "vgg11": True}, "command": "compare --x <y>"}
    return write_report(results, make_predictions(largest), meta, out), out


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.images: list[str] = []
        self.banners = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            self.images.append(attrs["src"])
        if attrs.get("class") == "banner":
            self.banners += 1


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


# --- statistics ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n", "expected"), [
    (50, 100, (0.4038, 0.5962)),
    (0, 10, (0.0, 0.2775)),
    (10, 10, (0.7225, 1.0)),
    (81, 263, (0.2553, 0.3662)),
])
def test_wilson_ci_known_values(k, n, expected):
    assert wilson_ci(k, n) == pytest.approx(expected, abs=5e-4)


def test_wilson_ci_edge_cases():
    assert all(math.isnan(x) for x in wilson_ci(0, 0))
    low95, high95 = wilson_ci(30, 60)
    low99, high99 = wilson_ci(30, 60, level=0.99)
    assert low99 < low95 < high95 < high99
    with pytest.raises(ValueError, match="k <= n"):
        wilson_ci(11, 10)
    with pytest.raises(ValueError, match="level"):
        wilson_ci(1, 10, level=95)


def test_mean_ci_t_interval_and_fallbacks():
    mean, low, high = mean_ci([0.8, 0.9, 1.0])
    half = 4.302653 * 0.1 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((0.9, 0.9 - half, 0.9 + half), abs=1e-6)
    assert mean_ci([0.7], n_correct=[70], n_test=[100]) == pytest.approx((0.7, *wilson_ci(70, 100)))
    mean, low, high = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(low) and math.isnan(high)
    assert mean_ci([0.5, 0.5], n_correct=[5, 5], n_test=[10, 10])[1:] == pytest.approx(wilson_ci(10, 20))
    assert mean_ci([0.5, np.nan, 0.7])[0] == pytest.approx(0.6)
    assert all(math.isnan(x) for x in mean_ci([]))


def test_summarize(results):
    summary = summarize(results)
    assert len(summary) == 2 * (3 * 3 + 2) * 3
    expected = {"accuracy", "ci_low", "ci_high", "n_splits", "n_test", "n_test_total", "balanced_accuracy",
                "fit_time_s", "predict_time_s", "extract_time_s", "family"}
    assert expected <= set(summary.columns)
    assert (summary["n_splits"] == 5).all() and (summary["n_test_total"] == 300).all()
    assert ((summary["ci_low"] <= summary["accuracy"]) & (summary["accuracy"] <= summary["ci_high"])).all()
    assert summary["ci_high"].max() <= 1.0


def test_holm():
    assert holm([0.01, 0.04, 0.03, np.nan]) == pytest.approx([0.03, 0.06, 0.06, np.nan], nan_ok=True)


def _two_configs(delta: float, noise: float, n_splits: int = 10, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = 0.8 + rng.normal(0, 0.03, n_splits)
    other = base + delta + rng.normal(0, noise, n_splits)
    return pd.DataFrame({
        "backbone": "resnet18", "cut": "avgpool", "train_size": 50, "split": np.tile(np.arange(n_splits), 2),
        "method": ["a"] * n_splits + ["b"] * n_splits, "accuracy": np.concatenate([base, other]),
    })


def test_paired_comparison_detects_real_difference():
    paired = paired_comparison(_two_configs(delta=-0.05, noise=0.01), reference={"method": "a"})
    row = paired[~paired["is_reference"]].iloc[0]
    assert paired.loc[paired["is_reference"], "method"].item() == "a"
    assert row["method"] == "b" and row["n_pairs"] == 10
    assert row["diff"] == pytest.approx(-0.05, abs=0.01)
    assert row["diff_ci_low"] < row["diff"] < row["diff_ci_high"] < 0
    assert row["t_p"] < 0.001 and row["wilcoxon_p"] < 0.01 and row["significant"]


def test_paired_comparison_null_and_identical():
    row = paired_comparison(_two_configs(delta=0.0, noise=0.01, seed=3), reference={"method": "a"}
                            ).query("~is_reference").iloc[0]
    assert row["t_p"] > 0.05 and not row["significant"]
    assert row["diff_ci_low"] < 0 < row["diff_ci_high"]
    same = paired_comparison(_two_configs(delta=0.0, noise=0.0), reference={"method": "a"}
                             ).query("~is_reference").iloc[0]
    assert same["diff"] == 0 and math.isnan(same["t_p"]) and math.isnan(same["wilcoxon_p"])
    assert math.isnan(same["diff_ci_low"]) and same["significant"] is pd.NA and "not testable" in same["note"]


def test_a_constant_nonzero_difference_is_not_testable_not_certain():
    """Every split 0.05 worse: no variance estimate, so no t-test p-value (it used to say p = 0)."""
    row = paired_comparison(_two_configs(delta=-0.05, noise=0.0), reference={"method": "a"}
                            ).query("~is_reference").iloc[0]
    assert row["diff"] == pytest.approx(-0.05)
    assert math.isnan(row["t_p"]) and math.isnan(row["diff_ci_low"]) and row["significant"] is pd.NA
    assert "not testable" in row["note"]
    assert 0 < row["wilcoxon_p"] < 0.01


def test_runs_that_differ_only_in_augmentation_or_pooling_are_never_merged(results):
    flip = results[results["family"] == "finetune"].assign(augment="flip_crop")
    flip["accuracy"] = (flip["accuracy"] + 0.2).clip(upper=1.0)
    maxpool = results[results["family"] == "frozen"].assign(pooling="max", accuracy=0.5)
    both = pd.concat([results, flip, maxpool], ignore_index=True)

    summary = summarize(both)
    assert {"pooling", "augment"} <= set(summary.columns)
    assert len(summary) == len(summarize(results)) + len(summarize(flip)) + len(summarize(maxpool))
    tuned = summary[(summary["method"] == "finetune_full") & (summary["train_size"] == 5)
                    & (summary["backbone"] == "resnet18")].set_index("augment")["accuracy"]
    assert tuned["flip_crop"] > tuned["none"] + 0.15

    flip_full = {"backbone": "resnet18", "method": "finetune_full", "augment": "flip_crop"}
    paired = paired_comparison(both[both["train_size"] == 5], reference=flip_full)
    assert paired["reference"].iloc[0].endswith("flip_crop")
    fixed = {"frozen": {"backbone": "resnet18", "cut": "avgpool", "method": "linear_svm", "pooling": "avg"},
             "finetune": flip_full}
    assert "flip_crop" in crossover(both, fixed=fixed)["curves"]["finetune_best"].iloc[0]
    assert "flip_crop" in summary_table(both, summary).to_string()
    assert any("max" in m for m in method_by_cut(both)["resnet18"]["method"])
    assert set(summarize(results).columns).isdisjoint({"pooling", "augment"})


def test_report_with_augmentation_variants_names_them(results, tmp_path):
    flip = results[results["family"] == "finetune"].assign(augment="flip_crop")
    both = pd.concat([results, flip], ignore_index=True)
    written = write_report(both, make_predictions(both[both["train_size"] == 80]), None, tmp_path)
    text = written["summary_md"].read_text()
    assert "finetune_full / flip_crop" in text and "finetune_full / none" in text


def test_paired_comparison_reference_and_train_sizes(results):
    reference = {"backbone": "resnet18", "cut": "layer3", "method": "random_forest"}
    paired = paired_comparison(results, reference=reference)
    assert set(paired["train_size"]) == {5, 20, 80}
    refs = paired[paired["is_reference"]]
    assert len(refs) == 3 and (refs["method"] == "random_forest").all()
    assert (paired["reference"] == "resnet18 / layer3 / random_forest").all()
    with pytest.raises(ValueError, match="reference"):
        paired_comparison(results, reference={"pooling": "avg"})


FIXED = {"frozen": {"backbone": "resnet18", "cut": "avgpool", "method": "linear_svm"},
         "finetune": {"backbone": "resnet18", "method": "finetune_full"}}


def test_crossover_finds_planted_crossover(results):
    found = crossover(results, fixed=FIXED, n_boot=300)
    assert found["status"] == "crossover"
    assert 10 < found["estimate"] < 40
    low, high = found["ci"]
    assert low <= found["estimate"] <= high
    assert "overtakes" in found["statement"]
    assert list(found["curves"]["train_size"]) == [5, 20, 80]


def test_crossover_not_reached_and_already_ahead():
    never = crossover(make_results(crossover_at=5000), fixed=FIXED, n_boot=100)
    assert never["estimate"] is None and never["status"] == "not_reached"
    assert "did not overtake the pre-selected frozen-feature configuration within the data (up to 80 images/class)" in \
        never["statement"]
    ahead = crossover(make_results(crossover_at=0.5), fixed=FIXED, n_boot=100)
    assert ahead["status"] == "finetune_ahead" and ahead["estimate"] is None
    assert "already ahead" in ahead["statement"]
    single = crossover(make_results(n_splits=1), fixed=FIXED, n_boot=100)  # no crossover rests on 1 draw
    assert single["status"] == "too_few_draws" and single["estimate"] is None and single["ci"] is None
    assert "1 training draw, fewer than the 5 a verdict needs" in single["statement"]
    frozen_only = make_results().query("family == 'frozen'")
    assert crossover(frozen_only, fixed=FIXED)["estimate"] is None
    assert "not measured" in crossover(frozen_only, fixed=FIXED)["statement"]


# --- tables ------------------------------------------------------------------------------------------------------


def test_format_accuracy():
    assert format_accuracy(0.9123, 0.871, 0.944, 153, 10) == "0.912 [0.871, 0.944] (n=153 test images × 10 draws)"
    assert format_accuracy(0.5, 0.4, 0.6, 100) == "0.500 [0.400, 0.600] (n=100 test images)"
    assert format_accuracy(0.5, np.nan, np.nan, 100, 1) == "0.500 [CI n/a] (n=100 test images)"
    assert format_accuracy(0.5, 0.4, 0.6, 8, 3, unit="folds") == "0.500 [0.400, 0.600] (n=8 test images × 3 folds)"
    assert format_accuracy(np.nan, np.nan, np.nan, 0) == "n/a"


def test_markdown_and_html_tables_escape():
    df = pd.DataFrame({"name": ["a|b", "<script>x</script>"], "value": [0.12345, np.nan]})
    md = to_markdown(df)
    assert md.splitlines()[0] == "| name | value |"
    assert md.splitlines()[1] == "|---|---:|"
    assert "a\\|b" in md and "0.123" in md
    html_text = to_html_table(df, caption="cap & co")
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text and "cap &amp; co" in html_text


def test_method_by_cut(results):
    tables = method_by_cut(results)
    assert set(tables) == {"resnet18", "vgg11"}
    resnet = tables["resnet18"]
    assert list(resnet.columns) == ["method", "(no cut)", "layer3", "layer4", "avgpool"]
    cell = resnet.set_index("method").loc["logistic", "avgpool"]
    assert re.fullmatch(r"0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\] \(n=60 test images × 5 draws\); "
                        r"per draw min 0\.\d{3}, median 0\.\d{3}", cell), cell


# --- plots, answers, report -----------------------------------------------------------------------------------


def test_plots_write_png(results, tmp_path):
    preds = make_predictions(results[results["train_size"] == 80])
    analysis = analyse(results, None)
    config = {"backbone": "resnet18", "cut": "avgpool", "method": "logistic", "train_size": 80}
    paths = [plot_accuracy_by_cut(results, tmp_path / "cut.png"),
             plot_learning_curves(analysis.summary, analysis.selected, tmp_path / "lc.png"),
             plot_confusion_matrix(preds, tmp_path / "cm.png", config),
             plot_accuracy_vs_cost(results, tmp_path / "c.png")]
    for path in paths:
        assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_confusion_matrix(preds.iloc[:0], tmp_path / "none.png", config) is None
    assert plot_accuracy_by_cut(results.query("family == 'finetune'"), tmp_path / "none.png") is None


def test_course_answers(results):
    text = course_answers(analyse(results, None))
    for q in range(9, 17):
        assert f"### Q{q}." in text
    assert f"from scratch was {NOT_MEASURED}" in text
    assert "augmentation was not measured" in text
    assert "(n=60 test images × 5 draws)" in text and "overtakes" in text


def test_markdown_subset_to_html():
    out = markdown_to_html("## T\n\ntext **b** <x>\n- one\n- two `c`\n")
    assert out == ("<h2>T</h2>\n<p>text <strong>b</strong> &lt;x&gt;</p>\n"
                   "<ul><li>one</li><li>two <code>c</code></li></ul>")


def test_write_report_writes_every_file(report):
    written, out = report
    expected = {"summary_md", "report_html", "summary_csv", "significance_csv", "accuracy_by_cut",
                "learning_curves", "confusion_matrix", "accuracy_vs_cost"}
    assert set(written) == expected
    for path in written.values():
        assert path.parent == out and path.is_file() and path.stat().st_size > 0
    assert not (out / "results.csv").exists()


def test_report_html_is_self_contained(report):
    written, out = report
    page = parse(written["report_html"])
    assert len(page.images) == 4
    for src in page.images:
        assert not Path(src).is_absolute() and (out / src).is_file()
    assert page.tags.get("table", 0) >= 5 and page.tags.get("style") == 1
    assert page.banners == 0
    text = written["report_html"].read_text()
    assert "RANDOM-INIT" not in text and "&lt;y&gt;" in text
    md = written["summary_md"].read_text()
    assert "RANDOM-INIT" not in md and "## Significance" in md and "Q16" in md


@pytest.mark.parametrize("via", ["meta", "column"])
def test_random_init_banner(via, tmp_path):
    results = make_results(sizes=(10,), n_splits=2, pretrained=via != "column")
    meta = {"pretrained": {"resnet18": True, "vgg11": via != "meta"}}
    written = write_report(results, None, meta, tmp_path)
    assert parse(written["report_html"]).banners == 1
    assert RANDOM_INIT_BANNER in written["report_html"].read_text()
    assert RANDOM_INIT_BANNER in written["summary_md"].read_text()
    assert random_init_backbones(results, meta) == (["vgg11"] if via == "meta" else ["resnet18", "vgg11"])
    answers = course_answers(analyse(results, None, meta))
    assert "vgg11 ran with RANDOM-INIT weights" in answers


@pytest.mark.parametrize("case", ["one_split", "one_train_size", "one_method", "one_row_nan_times", "empty"])
def test_degenerate_inputs_still_write_report(case, results, tmp_path):
    data = {
        "one_split": results.query("split == 0"),
        "one_train_size": results.query("train_size == 20"),
        "one_method": results.query("method == 'logistic' and backbone == 'vgg11'"),
        "one_row_nan_times": results.iloc[:1].assign(fit_time_s=np.nan, extract_time_s=np.nan,
                                                     balanced_accuracy=np.nan),
        "empty": results.iloc[:0],
    }[case]
    written = write_report(data, make_predictions(data.iloc[:3]), {}, tmp_path)
    assert written["summary_md"].is_file() and written["report_html"].is_file()
    page = parse(written["report_html"])
    for src in page.images:
        assert (tmp_path / src).is_file()
    if case != "empty":
        assert page.tags.get("table", 0) >= 2 and page.images


def test_summary_table(results):
    table = summary_table(results, summarize(results))
    assert table["train_size"].iloc[0] == 80
    spread = [f"(n=60 test images × 5 draws); per draw min {lo:.3f}, median {mid:.3f}"
              for lo, mid in zip(table["draw_min"], table["draw_median"])]
    assert all(text.endswith(end) for text, end in zip(table["accuracy_95ci"], spread))
    per_draw = results.groupby(["backbone", "cut", "method", "train_size"])["accuracy"]
    first = table.iloc[0]
    draws = per_draw.get_group((first["backbone"], first["cut"], first["method"], first["train_size"]))
    assert (first["draw_min"], first["draw_median"]) == pytest.approx((draws.min(), draws.median()))
    assert {"backbone", "cut", "method", "pretrained", "ci_low", "ci_high", "ci_conditional", "n_test",
            "n_splits"} <= set(table) and not table["ci_conditional"].any()


def test_from_scratch_rows_do_not_flag_a_pretrained_backbone():
    from reports.compare_report import random_init_backbones

    rows = pd.DataFrame({
        "backbone": ["resnet18", "resnet18", "vgg16"],
        "family": ["frozen", "scratch", "frozen"],
        "pretrained": [True, False, False],
    })
    assert random_init_backbones(rows) == ["vgg16"]
    assert random_init_backbones(rows.iloc[:2]) == []


def test_overlap_correction_widens_the_interval_by_the_nadeau_bengio_factor():
    values = [0.80, 0.85, 0.90, 0.82, 0.88]
    mean, low, high = mean_ci(values)
    _, low_c, high_c = mean_ci(values, overlap=0.5)
    factor = np.sqrt(1 / 5 + 0.5) / np.sqrt(1 / 5)
    assert (high_c - low_c) == pytest.approx((high - low) * factor)
    assert low_c < low < mean < high < high_c


def test_answers_call_a_constant_difference_untestable_not_certain():
    rows = []
    for split, acc in enumerate([0.70, 0.75, 0.72, 0.78, 0.74]):
        for cut, method, family, value, augment in [("layer4", "logistic", "frozen", acc, "none"),
                                                    ("", "finetune_full", "finetune", acc + 0.1, "none"),
                                                    ("", "finetune_full", "finetune", acc + 0.05, "flip_crop")]:
            rows.append(dict(backbone="resnet18", cut=cut, pooling="avg" if cut else "", method=method, family=family,
                             augment=augment, train_size=10, split=split, n_train=20, n_test=100,
                             n_correct=round(value * 100), accuracy=value, pretrained=True, selection_score=0.7))
    text = course_answers(analyse(pd.DataFrame(rows), None))
    assert "Fine-tuning − frozen: difference +0.100 (not testable: the same difference on every split" in text
    assert "flip_crop: difference -0.050 (not testable: the same difference on every split" in text
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE)


def test_report_escapes_data_and_leaves_no_stale_file(results, tmp_path):
    (tmp_path / "significance.csv").write_text("stale")
    (tmp_path / "confusion_matrix.png").write_text("stale")
    meta = {"dataset": "<script>alert(1)</script>", "classes": ["*ants*", "<b>bees</b>"]}
    written = write_report(results.query("family == 'frozen'"), None, meta, tmp_path)
    md, page = written["summary_md"].read_text(), written["report_html"].read_text()
    assert "<script>" not in md and "\\<script\\>" in md and "\\*ants\\*" in md and "<b>" not in md
    assert "<script>alert" not in page and "<b>bees" not in page
    assert not (tmp_path / "confusion_matrix.png").exists(), "a plot this run did not draw is not left behind"
    assert (tmp_path / "significance.csv").read_text() != "stale"


def test_markdown_cells_cannot_link_or_open_html_but_keep_intervals_readable():
    md = to_markdown(pd.DataFrame({"class": ["[x](javascript:alert(1))", "<img src=x>"],
                                   "accuracy": ["0.500 [0.400, 0.600]", "0.1"]}))
    assert "](" not in md and not re.search(r"(?<!\\)<img", md) and "\\<img" in md
    assert "0.500 [0.400, 0.600]" in md

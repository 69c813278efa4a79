import numpy as np
import pandas as pd
import pytest

import featurize.transformer as transformer_module
from conftest import write_image_folder
from pipelines.grid import GridConfig, GridResult, main, run_grid
from reports.grid_report import grid_report

KW = dict(backbone="resnet18", weights=None, image_size=32, cv=3, verbose=False)
C_GRID = {"clf__C": [0.1, 1.0]}


@pytest.fixture
def counted(monkeypatch):
    """Record the image indices sent through the backbone and the number of models built."""
    forwarded, models = [], []
    real_iter, real_load = transformer_module.iter_features, transformer_module.load_model

    def iter_features(items, *args, **kwargs):
        forwarded.extend(kwargs["indices"])
        return real_iter(items, *args, **kwargs)

    def load_model(*args, **kwargs):
        models.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(transformer_module, "iter_features", iter_features)
    monkeypatch.setattr(transformer_module, "load_model", load_model)
    return forwarded, models


@pytest.fixture(scope="module")
def small_grid(tmp_path_factory, image_folder) -> GridResult:
    _, paths, labels = image_folder
    return run_grid(paths, labels, cuts=("layer2", "layer4"), head_grid=C_GRID,
                    cache_dir=tmp_path_factory.mktemp("cache"), **KW)


def test_grid_forwards_each_image_once(tmp_path, image_folder, counted):
    _, paths, labels = image_folder
    forwarded, models = counted
    result = run_grid(paths, labels, cuts=("layer3", "layer4"), head_grid=C_GRID, cache_dir=tmp_path, **KW)
    assert sorted(forwarded) == list(range(len(paths))), "each image goes through the backbone exactly once"
    assert len(models) == 1, "the model is built once; every fit and score of the search is a cache lookup"
    assert len(result.search.cv_results_["params"]) == 4


def test_table_has_one_row_per_candidate_with_ci(small_grid):
    table = small_grid.table
    assert len(table) == 4
    assert set(zip(table["cut"], table["C"])) == {(c, v) for c in ("layer2", "layer4") for v in C_GRID["clf__C"]}
    assert list(table["rank"]) == sorted(table["rank"])
    for column in ("pooling", "accuracy", "ci_low", "ci_high", "accuracy_95ci", "n_per_fold", "n_test", "fit_time_s"):
        assert column in table
    assert (table["ci_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["ci_high"]).all()
    assert (table["n_test"] == 24).all() and (table["n_folds"] == 3).all()
    assert table["accuracy_95ci"].str.contains(r"\(n=8 test images × 3 folds\)").all()
    assert not small_grid.pretrained and "RANDOM-INIT" in small_grid.weights_label


def test_grid_report_writes_markdown_and_html(small_grid, tmp_path):
    paths = grid_report(small_grid, tmp_path / "g.md", tmp_path / "g.html")
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    assert "RANDOM-INIT" in md and 'class="banner"' in page
    assert md.count("| layer") == 4 and "accuracy_95ci" in page


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cuts=("layer9",)), "layer9"),
        (dict(poolings=("median",)), "median"),
        (dict(head="knn"), "valid heads"),
        (dict(cv=20), "cv must be"),
        (dict(head_grid={"clf__C": 1.0}), "head_grid"),
    ],
)
def test_bad_arguments_raise_before_any_forward(kwargs, match, tmp_path, two_class_arrays, counted):
    images, labels = two_class_arrays
    with pytest.raises(ValueError, match=match):
        run_grid(images, labels, cache_dir=tmp_path, **{**KW, **kwargs})
    assert counted[0] == []


def test_keyword_settings_override_the_config_and_unknown_ones_are_refused(tmp_path, two_class_arrays, counted):
    images, labels = two_class_arrays
    config = GridConfig(**KW, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cv must be"):
        run_grid(images, labels, config, cv=20)
    with pytest.raises(TypeError, match="folds"):
        run_grid(images, labels, config, folds=3)
    assert counted[0] == []


@pytest.mark.parametrize("argv", [["--help"], ["--cv", "x"]])
def test_help_and_argument_errors_import_no_torch(argv):
    from test_bench import check_answers_without_heavy_imports

    check_answers_without_heavy_imports("pipelines.grid", argv)


def test_cli_writes_csv_markdown_html(tmp_path, two_class_arrays, capsys):
    images, labels = two_class_arrays
    write_image_folder(tmp_path / "data", images, labels)
    out = tmp_path / "out"
    argv = ["--dataset", str(tmp_path / "data"), "--cuts", "layer3", "layer4", "--cv", "3", "--weights", "none",
            "--image-size", "32", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--seed", "1"]
    assert main(argv) == 0
    table = pd.read_csv(out / "grid.csv")
    assert len(table) == 2 * 12 and set(table["cut"]) == {"layer3", "layer4"}
    assert "RANDOM-INIT" in (out / "grid.md").read_text()
    assert "RANDOM-INIT" in (out / "grid.html").read_text()
    printed = capsys.readouterr().out
    assert "RANDOM-INIT" in printed and "(n=8 test images × 3 folds)" in printed


def test_cli_missing_pretrained_weights_exits_2(tmp_path, two_class_arrays, capsys):
    images, labels = two_class_arrays
    write_image_folder(tmp_path / "data", images[::3], labels[::3])
    argv = ["--dataset", str(tmp_path / "data"), "--cv", "2", "--image-size", "32", "--quiet", "--weights", "DEFAULT",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "not cached" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_scores_are_finite(small_grid):
    assert np.isfinite(small_grid.table["accuracy"]).all()


def check_table_reports_the_searchs_scores(result: GridResult) -> None:
    """Each candidate row of the grid table carries that candidate's own mean CV score and rank."""
    res = result.search.cv_results_
    for _, row in result.table.iterrows():
        j = next(i for i, p in enumerate(res["params"])
                 if p["cnn__layers"] == row["cut"] and p["head__clf__C"] == row["C"])
        assert row["accuracy"] == pytest.approx(res["mean_test_score"][j])
        assert row["rank"] == res["rank_test_score"][j]


def test_table_reports_the_searchs_own_scores(small_grid):
    check_table_reports_the_searchs_scores(small_grid)


def test_selection_is_scored_by_nested_cv_not_by_its_own_folds(small_grid):
    estimate, outer = small_grid.estimate, small_grid.outer
    assert estimate["design"] == "resampled" and len(outer) == estimate["n_folds"] == 5
    assert estimate["n_test"] == 24 and outer["n_test"].sum() == 24
    assert estimate["accuracy"] == pytest.approx(np.average(outer["accuracy"], weights=outer["n_test"]), abs=0.05)
    assert small_grid.table["times_selected"].sum() == 5
    assert "Nadeau" in estimate["method"] or "not testable" in estimate["note"]


def test_held_out_test_images_never_steer_the_selection(tmp_path, image_folder):
    _, paths, labels = image_folder
    test = np.zeros(len(labels), dtype=bool)
    test[::3] = True
    kwargs = dict(cuts=("layer2", "layer4"), head_grid={"clf__C": [1e-3, 1.0]}, cache_dir=tmp_path, test_mask=test,
                  **KW)
    first = run_grid(paths, labels, **kwargs)
    flipped = labels.copy()
    flipped[test] = 1 - flipped[test]
    second = run_grid(paths, flipped, **kwargs)
    assert first.outer["selected"].tolist() == second.outer["selected"].tolist()
    pd.testing.assert_frame_equal(first.table.drop(columns="fit_time_s"), second.table.drop(columns="fit_time_s"))
    assert first.estimate["design"] == "fixed_test" and first.estimate["n_test"] == int(test.sum())
    assert first.estimate["accuracy"] == pytest.approx(1 - second.estimate["accuracy"])


def test_interrupted_search_resumes_from_its_journal(tmp_path, image_folder, monkeypatch):
    import pipelines.grid_search as grid

    _, paths, labels = image_folder
    kwargs = dict(cuts=("layer2", "layer4"), head_grid=C_GRID, cache_dir=tmp_path / "cache", **KW)
    reference = run_grid(paths, labels, **kwargs)
    real_clone, calls, armed = grid.clone, [], [True]

    def clone(estimator):
        calls.append(1)
        if armed[0] and len(calls) == 3:
            raise KeyboardInterrupt
        return real_clone(estimator)

    monkeypatch.setattr(grid, "clone", clone)
    with pytest.raises(KeyboardInterrupt):
        run_grid(paths, labels, resume_dir=tmp_path / "out", **kwargs)
    calls.clear()
    armed[0] = False
    resumed = run_grid(paths, labels, resume_dir=tmp_path / "out", **kwargs)
    assert len(calls) == 3, "the two finished outer folds are read from the journal"
    pd.testing.assert_frame_equal(resumed.outer, reference.outer)
    with pytest.raises(ValueError, match="another configuration"):
        run_grid(paths, labels, resume_dir=tmp_path / "out", **{**kwargs, "cv": 2})

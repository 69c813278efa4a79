"""Planted faults in pipelines: each behavioural check of test_results / test_grid / test_export catches its
fault."""

from __future__ import annotations

import numpy as np
import pytest
from test_export import check_export_ignores_test_accuracy
from test_grid import C_GRID, KW, check_table_reports_the_searchs_scores
from test_results import _argv, check_results_match_predictions

import pipelines.compare.export as export_module
import pipelines.grid_search as grid
from pipelines.compare import main
from pipelines.results import Fit


def test_wrong_predictions_counted_as_correct_are_caught(tiny_dataset, tmp_path, monkeypatch):
    real_row = Fit.row

    def planted(self, imageset, split):
        row = real_row(self, imageset, split)
        wrong = len(split.test_idx) - row["n_correct"]
        return {**row, "n_correct": wrong, "accuracy": wrong / len(split.test_idx)}

    monkeypatch.setattr(Fit, "row", planted)
    assert main(_argv(tiny_dataset, tmp_path, tmp_path / "out", "--methods", "logistic", "pixels")) == 0
    with pytest.raises(AssertionError):
        check_results_match_predictions(tmp_path / "out")


def test_every_candidate_given_candidate_0s_scores_is_caught(tmp_path, image_folder, monkeypatch):
    real_table = grid._table

    def planted(search, fold_sizes, head_params, selected):
        table = real_table(search, fold_sizes, head_params, selected)
        first = table.iloc[0]
        return table.assign(accuracy=first["accuracy"], rank=first["rank"])

    monkeypatch.setattr(grid, "_table", planted)
    _, paths, labels = image_folder
    result = grid.run_grid(paths, labels, cuts=("layer2", "layer4"), head_grid=C_GRID, cache_dir=tmp_path, **KW)
    scores = result.search.cv_results_["mean_test_score"]
    assert np.unique(scores).size > 1, "the fault is visible only where candidates score differently"
    with pytest.raises(AssertionError):
        check_table_reports_the_searchs_scores(result)


def test_choosing_by_test_accuracy_is_caught(monkeypatch):
    """Planted fault: the export takes the configuration with the highest test accuracy."""
    def by_test_accuracy(analysis, name=None):
        rows = analysis.summary[analysis.summary["train_size"] == analysis.largest]
        best = rows.loc[rows["accuracy"].idxmax()].to_dict()
        scores = analysis.results.groupby("method")["selection_score"].mean()
        return {**best, "selected_by": "test", "selection_score": float(scores[best["method"]])}

    monkeypatch.setattr(export_module, "choose_export", by_test_accuracy)
    with pytest.raises(AssertionError):
        check_export_ignores_test_accuracy()

"""From a comparison to a model: export the pre-selected configuration (never the best by test accuracy), its card, and
predictions on new images that list unreadable files and refuse another weights file or library version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.pipeline import Pipeline

import featurize.transformer as transformer_module
import pipelines.compare.export as export_module
from featurize import CNNFeaturizer, get_backbone_spec, load_model, resolve_weights
from classifiers.heads import make_tuned_head
from pipelines.compare import main
from pipelines.compare.plan import fit_seed
from pipelines.exported import load_exported
from pipelines.predict.cli import main as predict_main
from reports.analysis import analyse


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory) -> Path:
    """resnet18 random-init weights saved as a file (a 'pretrained' file as far as the library is concerned)."""
    spec = get_backbone_spec("resnet18")
    path = tmp_path_factory.mktemp("weights") / "mine.pth"
    torch.save(load_model(spec, resolve_weights(spec, None, 5)).state_dict(), path)
    return path


def _compare(tiny_dataset, out: Path, weights: Path, *extra: str) -> int:
    return main(["--dataset", str(tiny_dataset), "--backbones", "resnet18", "--cuts", "layer3", "layer4",
                 "--methods", "logistic", "linear_svm", "--train-sizes", "3", "all", "--splits", "2",
                 "--weights", str(weights), "--image-size", "32", "--n-jobs", "1", "--quiet",
                 "--data-dir", str(out / "data"), "--cache-dir", str(out / "cache"), "--out", str(out / "run"),
                 "--export", str(out / "model"), *extra])


@pytest.fixture(scope="module")
def exported(tiny_dataset, weights_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert _compare(tiny_dataset, out, weights_path) == 0
    return out


def _analysis(out: Path):
    results = pd.read_csv(out / "run" / "results.csv", keep_default_na=False)
    for column in ("selection_score", "accuracy"):
        results[column] = pd.to_numeric(results[column])
    predictions = pd.read_csv(out / "run" / "predictions.csv", keep_default_na=False)
    return analyse(results, predictions, json.loads((out / "run" / "manifest.json").read_text()))


def check_exports_the_pre_selected_configuration(out: Path) -> None:
    """The card's configuration is the one with the highest training-side score at the largest train size, and its
    accuracy is the report's for that configuration."""
    card = json.loads((out / "model" / "model.json").read_text())
    analysis = _analysis(out)
    at_largest = analysis.selected[analysis.selected["train_size"] == analysis.largest]
    best = at_largest.loc[at_largest["selection_score"].astype(float).idxmax()]
    assert (card["configuration"]["cut"], card["configuration"]["method"]) == (best["cut"], best["method"])
    row = analysis.row({c: best[c] for c in analysis.config})
    assert card["accuracy"]["estimate"] == pytest.approx(row["accuracy"])
    assert (card["accuracy"]["ci_low"], card["accuracy"]["ci_high"]) == pytest.approx((row["ci_low"], row["ci_high"]))
    assert card["accuracy"]["n_test"] == 12 and card["accuracy"]["n_draws"] == 2
    assert card["selection_score"] == pytest.approx(best["selection_score"])


def test_the_export_is_the_pre_selected_configuration_with_the_reports_accuracy(exported):
    check_exports_the_pre_selected_configuration(exported)


def test_the_card_says_what_the_model_is(exported, weights_path, tiny_dataset):
    card = json.loads((exported / "model" / "model.json").read_text())
    assert card["kind"] == "sklearn_pipeline" and (exported / "model" / card["file"]).is_file()
    assert card["classes"] == ["ants", "bees"] and card["trained_on"]["images"] == 24
    assert card["weights"]["file"] == "mine.pth"
    assert card["weights"]["sha256"] == export_module.file_sha256(weights_path)
    assert "crop=32" in card["preprocessing"] and "C" in card["hyperparameters"]["best_params"]
    assert card["versions"]["cnn-transfer"] and card["versions"]["torch"]
    assert card["accuracy"]["design"] == "fixed_test" and "test images" in card["accuracy"]["measured_by"]


def test_the_exported_model_predicts_as_the_same_refit_would(exported, weights_path, tiny_dataset):
    """The comparison's settings and the seed of its first draw: a refit built by hand gives the same predictions."""
    card = json.loads((exported / "model" / "model.json").read_text())
    config = card["configuration"]
    paths = sorted((tiny_dataset).rglob("*.png"))
    labels = np.array([p.parent.name for p in paths])
    by_hand = Pipeline([
        ("features", CNNFeaturizer("resnet18", layers=config["cut"], weights=str(weights_path), image_size=32)),
        ("head", make_tuned_head(config["method"], n_per_class=12, random_state=fit_seed(0, 0, config["method"]),
                                 max_folds=3)),
    ]).fit(paths, labels)
    val = sorted((tiny_dataset / "val").rglob("*.png"))
    table = load_exported(exported / "model").predict(val)
    np.testing.assert_array_equal(table["predicted"].to_numpy(), by_hand.predict(val))


def test_predict_lists_unreadable_images_with_their_reason(exported, tiny_dataset, tmp_path, capsys):
    folder = tmp_path / "new"
    folder.mkdir()
    for path in sorted((tiny_dataset / "val" / "ants").glob("*.png"))[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "predictions.csv"
    assert predict_main([str(exported / "model"), str(folder), "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 4 and list(table["status"]).count("ok") == 3
    broken = table[table["status"] == "unreadable"].iloc[0]
    assert broken["image"].endswith("broken.jpg") and broken["error"] and broken["predicted"] == ""
    score_columns = [c for c in table.columns if c.startswith(("probability_", "decision_score_"))]
    assert len(score_columns) == 2
    assert "1 unreadable: " in capsys.readouterr().out


def test_the_refit_reads_the_comparisons_cached_features_and_the_saved_model_names_no_cache(tiny_dataset, weights_path,
                                                                                             tmp_path, monkeypatch):
    """Exporting again from the finished comparison runs no network (every feature comes from its cache), gives the
    same predictions, and the saved pipeline keeps no cache folder of the exporting machine."""
    assert _compare(tiny_dataset, tmp_path, weights_path) == 0
    (tmp_path / "model").rename(tmp_path / "first")
    with monkeypatch.context() as m:
        m.setattr(transformer_module, "load_model", lambda *a, **k: pytest.fail("the export ran the network"))
        assert _compare(tiny_dataset, tmp_path, weights_path) == 0
    first, again = load_exported(tmp_path / "first"), load_exported(tmp_path / "model")
    assert first.model.named_steps["features"].cache is None and again.model.named_steps["features"].cache is None
    val = sorted((tiny_dataset / "val").rglob("*.png"))
    pd.testing.assert_frame_equal(again.predict(val), first.predict(val))


def test_predict_with_a_cache_reads_the_features_stored_there(exported, tiny_dataset, tmp_path, monkeypatch):
    """A second prediction of the same images with --cache runs no network and gives the same table."""
    images = str(tiny_dataset / "val")
    plain, first, second = tmp_path / "plain.csv", tmp_path / "first.csv", tmp_path / "second.csv"
    assert predict_main([str(exported / "model"), images, "--out", str(plain), "--quiet"]) == 0
    assert predict_main([str(exported / "model"), images, "--cache", str(tmp_path / "c"), "--out", str(first),
                         "--quiet"]) == 0
    assert list((tmp_path / "c").glob("*.h5"))
    monkeypatch.setattr(transformer_module, "load_model", lambda *a, **k: pytest.fail("a cached prediction ran the "
                                                                                      "network"))
    assert predict_main([str(exported / "model"), images, "--cache", str(tmp_path / "c"), "--out", str(second),
                         "--quiet"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(second), pd.read_csv(first))
    pd.testing.assert_frame_equal(pd.read_csv(first), pd.read_csv(plain), atol=1e-5)


def test_a_model_loaded_against_another_weights_file_is_refused(exported, weights_path, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for path in (exported / "model").iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    card = json.loads((model / "model.json").read_text())
    other = tmp_path / "other.pth"
    spec = get_backbone_spec("resnet18")
    torch.save(load_model(spec, resolve_weights(spec, None, 6)).state_dict(), other)
    card["weights"]["argument"] = str(other)
    (model / "model.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"trained with mine\.pth .*other\.pth now has sha256"):
        load_exported(model)


def test_a_model_of_another_library_version_is_refused(exported, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    for path in (exported / "model").iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    card = json.loads((model / "model.json").read_text())
    card["versions"]["cnn-transfer"] = "0.0.1"
    (model / "model.json").write_text(json.dumps(card))
    assert predict_main([str(model), str(model / "model.json"), "--quiet"]) == 2
    assert "exported with cnn-transfer 0.0.1" in capsys.readouterr().err


def test_a_named_configuration_is_exported_instead(tiny_dataset, weights_path, tmp_path):
    assert _compare(tiny_dataset, tmp_path, weights_path, "--export-config", "resnet18/layer3/linear_svm") == 0
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert (card["configuration"]["cut"], card["configuration"]["method"]) == ("layer3", "linear_svm")
    assert card["selected_by"].startswith("named by the user")
    assert load_exported(tmp_path / "model").scores == "decision_score"


def check_export_ignores_test_accuracy() -> None:
    """Two frozen configurations: ``logistic`` has the higher inner-CV score, ``linear_svm`` the higher test accuracy;
    the export is ``logistic``, whatever the test images say."""
    from test_stats import fixed_tables

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    matrices = {("logistic", "frozen", 10): (rng.random((5, 40)) < 0.7).astype(int),
                ("linear_svm", "frozen", 10): (rng.random((5, 40)) < 0.9).astype(int)}
    results, predictions = fixed_tables(matrices, labels, {("logistic", 10): 0.95, ("linear_svm", 10): 0.80})
    analysis = analyse(results, predictions)
    accuracy = analysis.summary.set_index("method")["accuracy"]
    assert accuracy["linear_svm"] > accuracy["logistic"], "premise: the test images prefer linear_svm"
    chosen = export_module.choose_export(analysis)
    assert chosen["method"] == "logistic" and chosen["selection_score"] == pytest.approx(0.95)


def test_the_export_is_chosen_on_training_side_scores_never_on_test_accuracy():
    check_export_ignores_test_accuracy()



def test_a_fine_tuned_configuration_is_saved_in_torch_format(tiny_dataset, weights_path, tmp_path):
    code = main(["--dataset", str(tiny_dataset), "--backbones", "resnet18", "--methods", "logistic", "finetune_head",
                 "--cuts", "layer4", "--train-sizes", "all", "--splits", "1", "--weights", str(weights_path),
                 "--image-size", "32", "--epochs", "1", "--min-steps", "0", "--n-jobs", "1", "--quiet",
                 "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "run"), "--export", str(tmp_path / "model"),
                 "--export-config", "resnet18//finetune_head"])
    assert code == 0
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["kind"] == "finetuned_cnn" and card["file"] == "model.pt"
    assert card["hyperparameters"]["chosen"]["candidate"] == "finetune"
    model = load_exported(tmp_path / "model")
    table = model.predict(sorted((tiny_dataset / "val").rglob("*.png")))
    assert (table["status"] == "ok").all() and set(table["predicted"]) <= {"ants", "bees"}
    assert np.allclose(table[["probability_ants", "probability_bees"]].sum(axis=1), 1.0)
    assert model.model.cache is None, "the saved network names the exporting machine's cache folder"
    with pytest.warns(UserWarning, match="reads no CNN features"):
        model.use_cache(tmp_path / "c")


def test_a_replaced_model_file_is_refused(exported, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for path in (exported / "model").iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    (model / "model.joblib").write_bytes((model / "model.joblib").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="not the model file written with"):
        load_exported(model)


def test_the_featurizer_reads_the_weights_found_on_this_machine(exported, weights_path, tmp_path):
    """A copy of the weights elsewhere (another machine's path): the loaded pipeline reads the copy, not the path the
    exporting machine pickled."""
    model = tmp_path / "model"
    model.mkdir()
    for path in (exported / "model").iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    copy = tmp_path / "elsewhere" / "mine.pth"
    copy.parent.mkdir()
    copy.write_bytes(weights_path.read_bytes())
    card = json.loads((model / "model.json").read_text())
    card["weights"]["argument"] = str(copy)
    (model / "model.json").write_text(json.dumps(card))
    loaded = load_exported(model)
    assert loaded.model.named_steps["features"].weights_.path == copy.resolve()


def test_exporting_from_scratch_keeps_the_random_initialisation(tiny_dataset, weights_path, tmp_path, monkeypatch):
    """The from-scratch method ignores the run's weights in the comparison; its export must too."""
    from pipelines.compare import CompareConfig
    from pipelines.datasets import load_dataset

    built = []
    real = export_module._estimator

    def recording(config, row, imageset, weights, cache_dir):
        built.append((row["method"], weights))
        return real(config, row, imageset, weights, cache_dir)

    monkeypatch.setattr(export_module, "_estimator", recording)
    monkeypatch.setattr(export_module, "choose_export", lambda analysis, name=None: {
        "backbone": "resnet18", "cut": "", "method": "scratch", "family": "scratch", "augment": "flip_crop",
        "accuracy": 0.5, "ci_low": 0.3, "ci_high": 0.7, "n_test": 12, "n_splits": 5, "design": "fixed_test",
        "train_size": 6, "selected_by": "test", "selection_score": 0.5, "score_kind": "test"})
    config = CompareConfig(backbones=("resnet18",), image_size=32, epochs=1, min_steps=0, quiet=True, device="cpu")
    imageset = load_dataset(str(tiny_dataset))
    export_module.export_model(config, None, imageset, {"resnet18": str(weights_path)}, tmp_path / "model")
    assert built == [("scratch", None)]
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["weights"]["pretrained"] is False and card["weights"]["identity"].startswith("random-init")

"""Tests of classifiers.heads: classical heads on (synthetic and real) CNN features."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from classifiers.blocks import SELECTIONS, BlockStandardScaler, selected_blocks
from classifiers.heads import (
    HEADS,
    HeadSpec,
    default_grid,
    list_heads,
    make_head,
    make_tuned_head,
    pixels_baseline,
    register_head,
)

BLOCK_WIDTHS = {"layer3": 24, "conv1": 16, "layer4": 20}


def relu_features(n_samples: int = 60, n_features: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three separable classes, non-negative ReLU-like features; the 6 informative features come first."""
    X, y = make_classification(
        n_samples=n_samples, n_features=n_features, n_informative=6, n_redundant=0, n_classes=3,
        n_clusters_per_class=1, class_sep=2.5, shuffle=False, random_state=seed,
    )
    return np.maximum(X + 1.0, 0.0).astype(np.float32), y


def block_frame(X: np.ndarray) -> pd.DataFrame:
    """Name columns like CNNFeaturizer output: the informative features land in block ``layer3``."""
    cols = [f"{cut}.avg.{j}" for cut, width in BLOCK_WIDTHS.items() for j in range(width)]
    return pd.DataFrame(X, columns=cols)


def small_grid(name: str) -> dict:
    """First and last value of every key of the default grid, to keep the search fast."""
    return {k: list(dict.fromkeys([v[0], v[-1]])) for k, v in default_grid(name).items()}


def split(X, y):
    train = np.arange(len(y)) % 3 != 0
    take = (lambda idx: X.iloc[idx]) if isinstance(X, pd.DataFrame) else (lambda idx: X[idx])
    return take(train), take(~train), y[train], y[~train]


def test_list_heads():
    assert list_heads() == list(HEADS)
    assert {"linear_svm", "rbf_svm", "logistic", "random_forest", "multilayer"} <= set(list_heads())
    assert all(isinstance(spec, HeadSpec) and spec.name == name for name, spec in HEADS.items())


def test_register_head_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered under the name 'logistic'"):
        register_head(HEADS["logistic"])
    assert list_heads().count("logistic") == 1


@pytest.mark.parametrize("name", list(HEADS))
def test_description_names_every_searched_parameter(name):
    grids = [default_grid(name, selection=s) for s in SELECTIONS] if name == "multilayer" else [default_grid(name)]
    for grid in grids:
        for key, values in grid.items():
            assert key.split("__")[-1] in HEADS[name].description, key
            assert str(len(values)) in HEADS[name].description or len(values) <= 4, key


def _sparse_or_dense(kind: str, seed: int):
    """2 informative features among 200 (sparse) or all 200 weakly informative (dense); 20 images per class."""
    informative, sep = (2, 2.0) if kind == "sparse" else (200, 0.6)
    return make_classification(n_samples=40, n_features=200, n_informative=informative, n_redundant=0,
                               n_clusters_per_class=1, class_sep=sep, shuffle=False, random_state=seed)


def test_tuned_head_choices_follow_the_data():
    """The inner CV keeps few features when few are informative and many when all are."""
    chosen = {}
    for kind in ("sparse", "dense"):
        X, y = _sparse_or_dense(kind, seed=0)
        search = make_tuned_head("multilayer", n_per_class=20, random_state=0).fit(X, y)
        assert set(search.best_params_) == set(default_grid("multilayer"))
        chosen[kind] = search.best_params_["select__percentile"]
    assert chosen["sparse"] == 2 and chosen["dense"] >= 30, chosen


@pytest.mark.parametrize("n_per_class, max_folds, n_splits", [(2, 5, 2), (3, 5, 3), (60, 5, 5), (60, 3, 3)])
def test_tuned_head_inner_cv(n_per_class, max_folds, n_splits):
    search = make_tuned_head("logistic", n_per_class=n_per_class, max_folds=max_folds, random_state=4)
    assert isinstance(search, GridSearchCV)
    assert search.cv.get_n_splits() == n_splits and search.cv.shuffle and search.cv.random_state == 4
    assert search.scoring == "accuracy" and search.refit is True
    assert search.param_grid == default_grid("logistic")
    assert search.estimator.named_steps["clf"].random_state == 4


def test_tuned_head_fits_with_two_images_per_class():
    X, y = relu_features(n_samples=60)
    keep = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(3)])
    search = make_tuned_head("linear_svm", n_per_class=2).fit(X[keep], y[keep])
    assert search.best_params_["clf__C"] in default_grid("linear_svm")["clf__C"]


@pytest.mark.parametrize("kwargs", [{"n_per_class": 1}, {"n_per_class": 0}, {"n_per_class": 5, "max_folds": 1}])
def test_tuned_head_needs_two_images_per_class(kwargs):
    with pytest.raises(ValueError, match="at least 2 folds and 2 training images per class"):
        make_tuned_head("logistic", **kwargs)


@pytest.mark.parametrize("name", list(HEADS))
def test_head_grid_search_fits_and_scores(name):
    X, y = relu_features()
    data = block_frame(X) if name == "multilayer" else X
    Xtr, Xte, ytr, yte = split(data, y)
    search = GridSearchCV(make_head(name), small_grid(name), cv=StratifiedKFold(3, shuffle=True, random_state=0))
    search.fit(Xtr, ytr)
    pred = search.predict(Xte)
    assert pred.shape == (len(yte),)
    assert set(pred) <= set(y)
    assert search.score(Xte, yte) >= 0.7, "well above chance (1/3) on separable features"


@pytest.mark.parametrize("name", list(HEADS))
def test_default_grid_keys_are_head_params(name):
    head = make_head(name)
    grid = default_grid(name)
    assert grid and all(isinstance(v, list) and v for v in grid.values())
    for values in itertools.product(*grid.values()):
        head.set_params(**dict(zip(grid, values)))
    params = head.get_params()
    assert set(grid) <= set(params)


def test_multilayer_l1_grid_keys_are_head_params():
    head = make_head("multilayer", selection="l1")
    grid = default_grid("multilayer", selection="l1")
    head.set_params(**{k: v[0] for k, v in grid.items()})
    assert set(grid) <= set(head.get_params())


@pytest.mark.parametrize("name", list(HEADS))
def test_clone_and_params_round_trip(name):
    head = make_head(name, random_state=3)
    copy = clone(head)
    assert isinstance(copy, Pipeline) and copy is not head
    assert repr(copy.get_params(deep=False)) == repr(head.get_params(deep=False))
    assert repr(copy) == repr(head)
    assert head.named_steps["clf"].get_params()["random_state"] == 3


def test_params_forwarded_to_final_estimator():
    assert make_head("linear_svm", C=0.1).named_steps["clf"].C == 0.1
    assert make_head("rbf_svm", C=5.0, gamma=0.01).named_steps["clf"].gamma == 0.01
    assert make_head("random_forest", n_estimators=7).named_steps["clf"].n_estimators == 7
    head = make_head("multilayer", C=0.5, percentile=20, scale="block", blocks={"a": 3})
    assert head.named_steps["clf"].C == 0.5
    assert head.named_steps["select"].percentile == 20
    assert head.named_steps["scale"].get_params() == {"blocks": {"a": 3}, "scale": "block", "with_mean": True}


def test_logistic_grid_is_kornblith_penalty_range():
    c = np.array(default_grid("logistic")["clf__C"])
    assert len(c) == 12
    np.testing.assert_allclose(1.0 / c, np.logspace(-6, 5, 12))


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="valid heads: linear_svm, rbf_svm, logistic, random_forest, multilayer"):
        make_head("knn")
    with pytest.raises(ValueError, match="valid heads"):
        default_grid("knn")
    with pytest.raises(ValueError, match="selection must be one of anova, l1"):
        make_head("multilayer", selection="mutual_info")
    with pytest.raises(ValueError, match="only apply to head 'multilayer'"):
        make_head("logistic", blocks={"a": 3})
    with pytest.raises(TypeError):
        make_head("linear_svm", not_a_param=1)


@pytest.mark.parametrize("selection", ["anova", "l1"])
def test_multilayer_selects_features_and_reports_blocks(selection):
    X, y = relu_features()
    head = make_head("multilayer", selection=selection, percentile=10).fit(block_frame(X), y)
    names = head[:2].get_feature_names_out()
    assert 0 < len(names) < X.shape[1]
    assert all(n.split(".")[0] in BLOCK_WIDTHS for n in names)
    counts = selected_blocks(head)
    assert list(counts.index) == list(BLOCK_WIDTHS) and counts.name == "n_selected"
    assert counts.sum() == len(names)
    assert counts.idxmax() == "layer3", "the informative features are in layer3"


def test_multilayer_on_arrays_with_explicit_blocks_and_search():
    X, y = relu_features()
    head = make_head("multilayer", blocks=list(BLOCK_WIDTHS.items()))
    search = GridSearchCV(head, small_grid("multilayer"), cv=3).fit(X, y)
    counts = selected_blocks(search)
    assert counts.sum() > 0 and counts.index.tolist() == list(BLOCK_WIDTHS)
    assert search.best_estimator_[:2].get_feature_names_out()[0].startswith(("layer3.", "conv1.", "layer4."))


def test_selected_blocks_needs_a_selection_step():
    X, y = relu_features()
    with pytest.raises(ValueError, match="multilayer"):
        selected_blocks(make_head("logistic").fit(X, y))


@parametrize_with_checks(
    [BlockStandardScaler(), BlockStandardScaler(scale="block"), BlockStandardScaler(with_mean=False)]
)
def test_block_standard_scaler_sklearn_checks(estimator, check):
    # Only check_array_api_input skips itself (SCIPY_ARRAY_API unset); no check is excluded.
    check(estimator)


def test_block_standard_scaler_blocks_and_scales():
    rng = np.random.default_rng(0)
    X = np.hstack([rng.normal(5, 1, (30, 2)) * [1, 3], rng.normal(0, 10, (30, 3))])
    frame = pd.DataFrame(X, columns=["a.avg.0", "a.avg.1", "b.max.0", "b.max.1", "b.max.2"])
    feat = BlockStandardScaler().fit(frame)
    assert feat.blocks_ == [("a", 2), ("b", 3)]
    np.testing.assert_allclose(feat.transform(frame).std(axis=0), 1.0)
    assert list(feat.get_feature_names_out()) == list(frame.columns)

    block = BlockStandardScaler(scale="block").fit(frame)
    Z = block.transform(frame)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose((Z[:, :2].var(axis=0)).mean(), 1.0)
    np.testing.assert_allclose(Z[:, 1].std() / Z[:, 0].std(), X[:, 1].std() / X[:, 0].std())

    explicit = BlockStandardScaler(blocks={"a": 2, "b": 3}).fit(X)
    assert list(explicit.get_feature_names_out()) == ["a.0", "a.1", "b.0", "b.1", "b.2"]
    assert BlockStandardScaler(blocks=[("x", 5)]).fit(X).blocks_ == [("x", 5)]
    assert BlockStandardScaler().fit(X).blocks_ == [("features", 5)]

    out = BlockStandardScaler().set_output(transform="pandas").fit(frame).transform(frame)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(frame.columns)


@pytest.mark.parametrize(
    "params, match",
    [({"blocks": {"a": 2}}, "add up to 2 but X has 5"), ({"blocks": [("a", 0)]}, "blocks must be"),
     ({"blocks": "a"}, "'blocks' parameter of BlockStandardScaler must be"),
     ({"scale": "global"}, r"'scale' parameter of BlockStandardScaler must be a str among .*'block'.*Got 'global'")],
)
def test_block_standard_scaler_validates_in_fit(params, match):
    scaler = BlockStandardScaler(**params)
    with pytest.raises(ValueError, match=match):
        scaler.fit(np.ones((4, 5)))


def test_pixels_baseline(two_class_arrays):
    images, labels = two_class_arrays
    pixels = pixels_baseline(size=16)
    flat = pixels.fit_transform(images)
    assert flat.shape == (len(images), 16 * 16 * 3) and flat.dtype == np.float32
    assert 0.0 <= flat.min() and flat.max() <= 1.0
    model = Pipeline([("pixels", pixels), ("head", make_head("logistic"))]).fit(images[::2], labels[::2])
    assert model.score(images[1::2], labels[1::2]) >= 0.75
    with pytest.raises(ValueError, match="size must be"):
        pixels_baseline(size=0)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        pixels.transform(np.zeros((2, 8, 8)))


def test_logistic_on_real_cnn_features():
    """resnet18 (RANDOM-INIT weights: not pretrained) layer3 global-average-pooled, two generated classes."""
    from featurize.backbones import get_backbone_spec
    from featurize.backbones import load_model, resolve_weights

    spec = get_backbone_spec("resnet18")
    resolved = resolve_weights(spec, None)
    assert not resolved.pretrained
    model = load_model(spec, resolved)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 64, 64, generator=generator)
    labels = (np.arange(16) // 2) % 2
    images[labels == 1, :, 16:48, 16:48] += 1.5
    images = (images - 0.45) / 0.25
    pooled = {}
    hook = model.get_submodule(spec.cut("layer3").module).register_forward_hook(
        lambda module, inputs, output: pooled.__setitem__("layer3", output.mean(dim=(2, 3)))
    )
    try:
        with torch.no_grad():
            model(images)
    finally:
        hook.remove()
    features = pooled["layer3"].numpy()
    assert features.shape == (16, spec.cut("layer3").channels)
    head = make_head("logistic").fit(features[::2], labels[::2])
    assert head.score(features[1::2], labels[1::2]) >= 0.75

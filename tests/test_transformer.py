"""CNNFeaturizer as a scikit-learn transformer."""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import check_estimator

import featurize.transformer as transformer_module
from featurize import CNNFeaturizer

KW = dict(backbone="resnet18", weights=None, image_size=32, batch_size=8)


def test_clone_get_params_and_pickle(two_class_arrays):
    images = two_class_arrays[0][:4]
    f = CNNFeaturizer(layers=["layer1", "layer3"], pooling="grid:2", **KW)
    assert clone(f).get_params() == f.get_params()
    fitted = f.fit(images)
    out = fitted.transform(images)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(images), out)
    assert out.shape == (4, 64 * 4 + 256 * 4) and out.dtype == np.float32


def test_feature_names_and_pandas_output(two_class_arrays):
    images = two_class_arrays[0][:3]
    f = CNNFeaturizer(layers=["fc", "layer2"], **KW).set_output(transform="pandas").fit(images)
    names = f.get_feature_names_out()
    assert len(names) == 1000 + 128 and names[0] == "fc.avg.0" and names[-1] == "layer2.avg.127"
    df = f.transform(images)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(names)


def test_inputs_paths_pil_and_arrays_agree(image_folder, two_class_arrays):
    from PIL import Image

    _, paths, _ = image_folder
    images = two_class_arrays[0][:3]
    f = CNNFeaturizer(layers="layer4", **KW).fit()
    from_arrays = f.transform(images)
    np.testing.assert_array_equal(f.transform(paths[:3]), from_arrays)
    np.testing.assert_array_equal(f.transform([Image.open(p) for p in paths[:3]]), from_arrays)
    np.testing.assert_array_equal(f.transform(pd.Series([str(p) for p in paths[:3]])), from_arrays)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"backbone": "alexnet"}, "valid backbones: resnet18"),
        ({"layers": "layer9"}, "valid cut points: conv1, layer1"),
        ({"layers": ["layer1", "pool5"]}, "valid cut points"),
        ({"pooling": "median"}, "valid poolings: avg, max"),
        ({"weights": "IMAGENET9"}, "IMAGENET1K_V1"),
        ({"on_error": "ignore"}, "on_error"),
        ({"batch_size": 0}, "batch_size"),
        ({"pooling": "flatten", "image_size": None}, "image_size"),
    ],
)
def test_bad_parameters_raise_in_fit_and_name_the_choices(params, match):
    f = CNNFeaturizer(**{**KW, **params})
    with pytest.raises(ValueError, match=match):
        f.fit()


def test_parameters_after_the_first_are_keyword_only():
    assert CNNFeaturizer("vgg11").backbone == "vgg11"
    with pytest.raises(TypeError):
        CNNFeaturizer("resnet18", "layer4")


def test_bad_inputs_are_clear():
    f = CNNFeaturizer(**KW).fit()
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        f.transform(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="not a single image"):
        f.transform("one.png")


def test_grid_search_over_layers_is_served_from_the_cache(tmp_path, image_folder, monkeypatch):
    _, paths, labels = image_folder
    forwarded = []
    real = transformer_module.iter_features
    monkeypatch.setattr(
        transformer_module, "iter_features",
        lambda items, *a, **k: forwarded.extend(k["indices"]) or real(items, *a, **k)
    )
    pipe = Pipeline([("cnn", CNNFeaturizer(cache=tmp_path, **KW)), ("clf", LinearSVC())])
    grid = GridSearchCV(pipe, {"cnn__layers": ["layer2", "layer4", ["layer3", "avgpool"]]}, cv=StratifiedKFold(3))
    grid.fit(np.array(paths, dtype=object), labels)
    assert len(forwarded) == len(paths), "each image goes through the backbone once; every other fit is a lookup"
    assert grid.cv_results_["mean_test_score"].shape == (3,)
    assert grid.score(np.array(paths, dtype=object), labels) >= 0.5


class _TabularAsImages(CNNFeaturizer):
    """Adapter for sklearn's generic checks, which feed 2-D numeric matrices: each row becomes a tiny image."""

    def _images(self, X):
        X = np.asarray(X, dtype=float)
        pixels = (255 / (1 + np.exp(-np.clip(X, -50, 50)))).astype(np.uint8)
        return np.stack([np.resize(row, (16, 16, 3)) for row in pixels])

    def fit(self, X=None, y=None):
        return super().fit(None if X is None else self._images(X), y)

    def transform(self, X):
        return super().transform(self._images(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


TABULAR_VALIDATION = ("checks validation of 2-D numeric input (NaN, sparse, complex, 1-D, n_features_in_); images "
                      "are validated by featurize.images.as_items instead")
INAPPLICABLE = {
    "check_n_features_in_after_fitting": TABULAR_VALIDATION,
    "check_n_features_in": TABULAR_VALIDATION,
    "check_complex_data": TABULAR_VALIDATION,
    "check_estimators_empty_data_messages": TABULAR_VALIDATION,
    "check_estimators_nan_inf": TABULAR_VALIDATION,
    "check_estimator_sparse_tag": TABULAR_VALIDATION,
    "check_estimator_sparse_array": TABULAR_VALIDATION,
    "check_estimator_sparse_matrix": TABULAR_VALIDATION,
    "check_fit1d": TABULAR_VALIDATION,
    "check_fit2d_predict1d": TABULAR_VALIDATION,
    "check_transformer_general": "images of any size are valid input: there is no fixed number of input features",
    "check_methods_subset_invariance": (
        "float32 CPU convolutions choose batch-size-dependent algorithms (differences ~1e-6 absolute, beyond the "
        "check's atol=1e-7); test_subset_invariance_within_float32_precision checks it at float32 tolerance"
    ),
}


def test_subset_invariance_within_float32_precision(two_class_arrays):
    images = two_class_arrays[0]
    f = CNNFeaturizer(layers=["layer2", "fc"], **KW).fit()
    full = f.transform(images)
    for subset in (slice(0, 3), slice(5, 6), slice(10, 24)):
        np.testing.assert_allclose(f.transform(images[subset]), full[subset], rtol=1e-3, atol=1e-5)


def test_sklearn_estimator_checks():
    results = check_estimator(
        _TabularAsImages(**KW), expected_failed_checks=INAPPLICABLE, on_fail=None, on_skip=None
    )
    failed = {r["check_name"]: str(r["exception"])[:200] for r in results if r["status"] == "failed"}
    assert failed == {}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {"check_estimators_pickle", "check_methods_sample_order_invariance", "check_pipeline_consistency",
            "check_transformer_preserve_dtypes", "check_fit_idempotent", "check_set_params",
            "check_no_attributes_set_in_init", "check_dict_unchanged", "check_dtype_object", "check_fit2d_1sample",
            "check_fit2d_1feature", "check_transformer_data_not_an_array",
            "check_positive_only_tag_during_fit"} <= passed

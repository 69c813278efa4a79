"""Classical classification heads for frozen CNN features.

Every head is a scikit-learn :class:`~sklearn.pipeline.Pipeline` whose last step is named ``"clf"``, with the
preprocessing suited to CNN activations (non-negative, heavy-tailed, often many more features than images):

``linear_svm``
    L2-normalised features, then :class:`~sklearn.svm.LinearSVC` (Razavian et al., 2014, "CNN features
    off-the-shelf").
``rbf_svm``
    Standardised features, then :class:`~sklearn.svm.SVC` with an RBF kernel (``decision_function``, no Platt
    probabilities).
``logistic``
    Standardised features, then L2-regularised :class:`~sklearn.linear_model.LogisticRegression` (lbfgs), the
    linear-probe protocol of Kornblith et al. (2019, "Do better ImageNet models transfer better?").
``random_forest``
    :class:`~sklearn.ensemble.RandomForestClassifier` on the raw features (trees need no scaling).
``multilayer``
    A Head2Toe-style head (Evci et al., 2022) over the pooled features of *all* cut points concatenated: each block
    (cut point) is standardised separately by :class:`BlockStandardScaler`, a small subset of features is selected
    inside the pipeline (univariate ANOVA F-test or an L1 linear model), and a logistic regression is fitted on it.
    :func:`selected_blocks` tells which cut points the selected features came from.

Heads accept any 2-D float matrix, so they also serve the raw-pixel baseline (see :func:`pixels_baseline`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectFromModel, SelectPercentile, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

__all__ = [
    "HEADS",
    "SELECTIONS",
    "BlockStandardScaler",
    "anova_f",
    "default_grid",
    "list_heads",
    "make_head",
    "pixels_baseline",
    "selected_blocks",
]

HEADS: dict[str, str] = {
    "linear_svm": "L2 normalisation + linear SVM (Razavian et al. 2014)",
    "rbf_svm": "standardisation + RBF-kernel SVM",
    "logistic": "standardisation + L2 logistic regression, penalty searched 1e-6..1e5 (Kornblith et al. 2019)",
    "random_forest": "random forest on raw features",
    "multilayer": "all cut points, per-block standardisation + feature selection + logistic (Head2Toe-style)",
}
SELECTIONS: tuple[str, ...] = ("anova", "l1")
_MULTILAYER_KEYS = ("blocks", "selection", "percentile", "scale")
_MAX_ITER = 10_000


def list_heads() -> list[str]:
    """Names accepted by :func:`make_head` and :func:`default_grid`."""
    return list(HEADS)


def _check_name(name: str) -> None:
    if name not in HEADS:
        raise ValueError(f"Unknown head {name!r}; valid heads: {', '.join(HEADS)}")


def anova_f(X, y) -> tuple[np.ndarray, np.ndarray]:
    """ANOVA F-statistic of each feature, with constant features scored 0 instead of NaN and no warning.

    CNN activations often contain dead (all-zero) units; :func:`~sklearn.feature_selection.f_classif` warns about
    each of them.  Use as ``score_func`` of a univariate selector.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        f, p = f_classif(X, y)
    return np.nan_to_num(f, nan=0.0), np.nan_to_num(p, nan=1.0)


class BlockStandardScaler(TransformerMixin, BaseEstimator):
    """Standardise each block of features (each cut point) separately.

    Parameters
    ----------
    blocks : dict of {str: int}, list of (str, int) or None
        Block names and widths, in column order (the widths must add up to the number of features).  ``None``
        infers the blocks from feature names ``"<cut>.<pool>.<j>"`` (block = text before the first dot) when ``X``
        is a DataFrame, and otherwise treats all features as one block named ``"features"``.
    scale : {"feature", "block"}
        ``"feature"``: z-score every feature.  ``"block"``: centre every feature, then divide the whole block by
        one number, the root mean variance of its features, keeping the relative scale of units inside a block.
    with_mean : bool
        Centre the features before scaling.

    Attributes
    ----------
    blocks_ : list of (str, int)
        Block names and number of features, in order of first appearance.
    feature_blocks_ : ndarray of str, shape (n_features_in_,)
        Block name of every input feature.
    mean_ : ndarray of shape (n_features_in_,)
        Per-feature mean (zeros when ``with_mean=False``).
    scale_ : ndarray of shape (n_features_in_,)
        Divisor of every feature (1 for constant features or constant blocks).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.
    """

    def __init__(self, blocks=None, scale: str = "feature", with_mean: bool = True):
        self.blocks = blocks
        self.scale = scale
        self.with_mean = with_mean

    def _resolve_blocks(self) -> np.ndarray:
        if self.blocks is None:
            names = getattr(self, "feature_names_in_", None)
            if names is None:
                return np.full(self.n_features_in_, "features", dtype=object)
            return np.array([str(n).split(".")[0] for n in names], dtype=object)
        items = list(self.blocks.items()) if isinstance(self.blocks, Mapping) else self.blocks
        if not isinstance(items, Sequence) or not all(
            isinstance(b, (tuple, list)) and len(b) == 2 and isinstance(b[1], (int, np.integer)) and b[1] > 0
            for b in items
        ):
            raise ValueError(f"blocks must be None, a dict {{name: width}} or a list of (name, width); got {self.blocks!r}")
        widths = sum(int(w) for _, w in items)
        if widths != self.n_features_in_:
            raise ValueError(f"blocks widths add up to {widths} but X has {self.n_features_in_} features")
        return np.concatenate([np.full(int(w), str(n), dtype=object) for n, w in items])

    def fit(self, X, y=None):
        """Learn the per-feature means and per-block (or per-feature) scales.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        if self.scale not in ("feature", "block"):
            raise ValueError(f"scale must be 'feature' or 'block'; got {self.scale!r}")
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=1)
        self.feature_blocks_ = self._resolve_blocks()
        names, first = np.unique(self.feature_blocks_, return_index=True)
        order = names[np.argsort(first)]
        self.blocks_ = [(str(b), int(np.sum(self.feature_blocks_ == b))) for b in order]
        self.mean_ = X.mean(axis=0) if self.with_mean else np.zeros(X.shape[1], dtype=X.dtype)
        var = X.var(axis=0)
        if self.scale == "feature":
            scale = np.sqrt(var)
        else:
            scale = np.empty_like(var)
            for block in order:
                mask = self.feature_blocks_ == block
                scale[mask] = np.sqrt(var[mask].mean())
        scale[~(scale > 10 * np.finfo(scale.dtype).eps)] = 1.0
        self.scale_ = scale
        return self

    def transform(self, X):
        """Centre and scale ``X``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of shape (n_samples, n_features_in_)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False, copy=True)
        X -= self.mean_.astype(X.dtype, copy=False)
        X /= self.scale_.astype(X.dtype, copy=False)
        return X

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Output feature names, each starting with its block: ``"<block>.<rest>"``.

        Input names are kept when the blocks were inferred from them; otherwise names are ``"<block>.<j>"`` with
        ``j`` the index of the feature inside its block.
        """
        check_is_fitted(self)
        names = _check_feature_names_in(self, input_features)
        if self.blocks is None and hasattr(self, "feature_names_in_"):
            return names
        counters: dict[str, int] = {}
        out = []
        for block in self.feature_blocks_:
            j = counters.get(block, 0)
            counters[block] = j + 1
            out.append(f"{block}.{j}")
        return np.asarray(out, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _final_step(name: str, random_state, params: dict):
    if name == "linear_svm":
        return LinearSVC(**{"C": 1.0, "max_iter": _MAX_ITER, "random_state": random_state, **params})
    if name == "rbf_svm":
        return SVC(**{"kernel": "rbf", "C": 1.0, "gamma": "scale", "random_state": random_state, **params})
    if name in ("logistic", "multilayer"):
        return LogisticRegression(**{"C": 1.0, "max_iter": _MAX_ITER, "random_state": random_state, **params})
    return RandomForestClassifier(
        **{"n_estimators": 300, "max_features": "sqrt", "random_state": random_state, **params}
    )


def make_head(name: str, *, random_state: int | None = 0, **params) -> Pipeline:
    """Build a classification head for CNN (or any 2-D float) features.

    Parameters
    ----------
    name : str
        One of :func:`list_heads`.
    random_state : int or None
        Seed of the estimators that use randomness (SVMs, forests, logistic regression, the L1 selector).
    **params
        Forwarded to the final estimator (step ``"clf"``), e.g. ``make_head("linear_svm", C=0.1)``.  For
        ``"multilayer"`` these keys configure the other steps instead:

        ``blocks`` (None, dict or list of (name, width); see :class:`BlockStandardScaler`),
        ``scale`` (``"feature"`` default or ``"block"``),
        ``selection`` (``"anova"``, default: keep the ``percentile`` % of features with the highest ANOVA F, robust
        with a handful of images per class; or ``"l1"``: keep the features with a non-zero weight in an
        L1-penalised linear SVM, whose ``C`` is then step parameter ``select__estimator__C``),
        ``percentile`` (for ``"anova"``, default 10).

    Returns
    -------
    Pipeline
        Steps ``"scale"`` (absent for ``random_forest``), ``"select"`` (``multilayer`` only) and ``"clf"``.

    Raises
    ------
    ValueError
        For an unknown ``name`` or ``selection``.
    """
    _check_name(name)
    if name != "multilayer":
        bad = [k for k in _MULTILAYER_KEYS if k in params]
        if bad:
            raise ValueError(f"{', '.join(bad)} only apply to head 'multilayer', not {name!r}")
    if name == "linear_svm":
        steps = [("scale", Normalizer(norm="l2"))]
    elif name in ("rbf_svm", "logistic"):
        steps = [("scale", StandardScaler())]
    elif name == "random_forest":
        steps = []
    else:
        blocks = params.pop("blocks", None)
        scale = params.pop("scale", "feature")
        selection = params.pop("selection", "anova")
        percentile = params.pop("percentile", 10)
        if selection == "anova":
            selector = SelectPercentile(anova_f, percentile=percentile)
        elif selection == "l1":
            selector = SelectFromModel(
                LinearSVC(penalty="l1", dual=False, C=0.1, max_iter=_MAX_ITER, random_state=random_state)
            )
        else:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {selection!r}")
        steps = [("scale", BlockStandardScaler(blocks=blocks, scale=scale)), ("select", selector)]
    return Pipeline(steps + [("clf", _final_step(name, random_state, params))])


def default_grid(name: str, *, selection: str = "anova") -> dict[str, list]:
    """Search space of a head, in :class:`~sklearn.pipeline.Pipeline` parameter names.

    Usable as ``GridSearchCV(make_head(name), default_grid(name))``.  Grids are kept small for small data sets.

    ``logistic`` follows Kornblith et al. (2019): 12 log-spaced L2 penalties λ from 1e-6 to 1e5, with
    ``C = 1/λ``.  In scikit-learn's objective ``C·Σ_i log-loss_i + ½‖w‖²``, so λ multiplies ½‖w‖² against the
    *summed* log-loss; a penalty λ' on the *mean* log-loss of n training images is ``C = 1/(n·λ')``.

    Parameters
    ----------
    name : str
        One of :func:`list_heads`.
    selection : {"anova", "l1"}
        Selection method of the ``multilayer`` head the grid is for.

    Returns
    -------
    dict of {str: list}
    """
    _check_name(name)
    if name == "linear_svm":
        return {"clf__C": np.logspace(-2, 3, 6).tolist()}
    if name == "rbf_svm":
        return {"clf__C": [0.1, 1.0, 10.0, 100.0], "clf__gamma": ["scale"]}
    if name == "logistic":
        return {"clf__C": (1.0 / np.logspace(-6, 5, 12)).tolist()}
    if name == "random_forest":
        return {"clf__max_features": ["sqrt", 0.1], "clf__min_samples_leaf": [1, 3]}
    if selection == "anova":
        return {"select__percentile": [2, 10, 30, 100], "clf__C": [0.01, 0.1, 1.0, 10.0]}
    if selection == "l1":
        return {"select__estimator__C": [0.01, 0.1, 1.0], "clf__C": [0.01, 0.1, 1.0, 10.0]}
    raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {selection!r}")


def selected_blocks(pipeline) -> pd.Series:
    """Number of selected features per cut point in a fitted ``multilayer`` head.

    Parameters
    ----------
    pipeline : Pipeline or fitted search (``best_estimator_``)
        A fitted pipeline with a ``"select"`` step preceded by a :class:`BlockStandardScaler`.

    Returns
    -------
    pandas.Series
        Indexed by block name in column order (blocks with nothing selected included), named ``"n_selected"``.
    """
    pipeline = getattr(pipeline, "best_estimator_", pipeline)
    if not isinstance(pipeline, Pipeline) or "select" not in pipeline.named_steps:
        raise ValueError("selected_blocks needs a fitted 'multilayer' pipeline (with a 'select' step)")
    upto = list(pipeline.named_steps).index("select") + 1
    names = pipeline[:upto].get_feature_names_out()
    scaler = pipeline.named_steps["scale"]
    order = [b for b, _ in scaler.blocks_]
    counts = pd.Series([str(n).split(".")[0] for n in names], dtype=object).value_counts()
    return counts.reindex(order, fill_value=0).astype(int).rename("n_selected").rename_axis("block")


def _resize_flatten(X, size: int) -> np.ndarray:
    from PIL import Image

    X = np.asarray(X)
    if X.ndim != 4 or X.shape[-1] != 3:
        raise ValueError(f"pixels_baseline expects uint8 images of shape (N, H, W, 3); got shape {X.shape}")
    out = np.empty((len(X), size * size * 3), dtype=np.float32)
    for i, img in enumerate(X):
        small = Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
    return out


def pixels_baseline(size: int = 32) -> FunctionTransformer:
    """Transformer taking uint8 images (N, H, W, 3) to flattened ``size × size × 3`` pixels in [0, 1].

    Put it in front of any head for a no-CNN baseline, e.g.
    ``Pipeline([("pixels", pixels_baseline()), ("head", make_head("logistic"))])``.
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int; got {size!r}")
    return FunctionTransformer(_resize_flatten, kw_args={"size": int(size)})

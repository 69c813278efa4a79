"""The pieces of the Head2Toe-style ``multilayer`` head (Evci et al., 2022) over the pooled features of every cut
point: each block (cut point) standardised separately (:class:`BlockStandardScaler`), a small subset of features
selected (one of :data:`SELECTIONS`), and :func:`selected_blocks` to tell which cut points the selection kept."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.feature_selection import SelectFromModel, SelectPercentile, f_classif
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from featurize.registry import Registry

__all__ = ["MAX_ITER", "SELECTIONS", "BlockStandardScaler", "SelectionSpec", "anova_f", "get_selection",
           "selected_blocks"]

MAX_ITER = 10_000
"""Iteration cap of the linear solvers (heads and the L1 selector)."""


@dataclass(frozen=True)
class SelectionSpec:
    """A feature-selection step of the ``multilayer`` head: ``make(random_state, percentile)`` and its grid."""

    name: str
    description: str
    make: Callable[[int | None, int], BaseEstimator]
    grid: Callable[[], dict[str, list]]


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

    _parameter_constraints: dict = {
        "blocks": [None, Mapping, list, tuple],
        "scale": [StrOptions({"feature", "block"})],
        "with_mean": ["boolean"],
    }

    def __init__(self, *, blocks=None, scale: str = "feature", with_mean: bool = True):
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
        if not all(
            isinstance(b, (tuple, list)) and len(b) == 2 and isinstance(b[1], Integral) and b[1] > 0 for b in items
        ):
            raise ValueError(
                f"blocks must be None, a dict {{name: width}} or a list of (name, width) with widths ≥ 1; "
                f"got {self.blocks!r}"
            )
        widths = sum(int(w) for _, w in items)
        if widths != self.n_features_in_:
            raise ValueError(f"blocks widths add up to {widths} but X has {self.n_features_in_} features")
        return np.concatenate([np.full(int(w), str(n), dtype=object) for n, w in items])

    @_fit_context(prefer_skip_nested_validation=True)
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


def _l1_selector(random_state, percentile: int) -> SelectFromModel:
    del percentile
    return SelectFromModel(LinearSVC(penalty="l1", dual=False, C=0.1, max_iter=MAX_ITER, random_state=random_state))


SELECTIONS: Registry[SelectionSpec] = Registry("selection")
"""Feature selections of the ``multilayer`` head, by name."""
for _selection in (
    SelectionSpec(
        "anova", "keep the `percentile` % of features with the highest ANOVA F (robust with few images/class)",
        lambda random_state, percentile: SelectPercentile(anova_f, percentile=percentile),
        lambda: {"select__percentile": [2, 10, 30, 100]},
    ),
    SelectionSpec(
        "l1", "keep the features with a non-zero weight in an L1 linear SVM (C = select__estimator__C)",
        _l1_selector, lambda: {"select__estimator__C": [0.01, 0.1, 1.0]},
    ),
):
    SELECTIONS.register(_selection.name, _selection)


def get_selection(name: str) -> SelectionSpec:
    """The selection called ``name``; an unknown name raises a ValueError listing the valid ones."""
    if name not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {name!r}")
    return SELECTIONS[name]


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

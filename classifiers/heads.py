"""Classical classification heads for frozen CNN features.

Every head is a scikit-learn :class:`~sklearn.pipeline.Pipeline` whose last step is named ``"clf"``, with the
preprocessing suited to CNN activations (non-negative, heavy-tailed, often many more features than images).  Each
head is ONE :class:`HeadSpec` entry of :data:`HEADS` (preprocessing steps, final estimator, search grid), filled by
:func:`register_head`:

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
    inside the pipeline (one of :data:`SELECTIONS`), and a logistic regression is fitted on it.
    :func:`selected_blocks` tells which cut points the selected features came from.

:func:`make_tuned_head` wraps a head and its grid in a :class:`~sklearn.model_selection.GridSearchCV` with an inner
stratified K-fold, so hyperparameters are chosen on training images only.  Heads accept any 2-D float matrix, so
they also serve the raw-pixel baseline (see :func:`pixels_baseline`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from classifiers.blocks import MAX_ITER, BlockStandardScaler, get_selection
from featurize.registry import Registry

__all__ = [
    "HEADS",
    "HeadSpec",
    "default_grid",
    "list_heads",
    "make_head",
    "make_tuned_head",
    "pixels_baseline",
    "register_head",
]

Steps = list[tuple[str, BaseEstimator]]


@dataclass(frozen=True)
class HeadSpec:
    """One classification head: how to build its pipeline and what to search.

    Parameters
    ----------
    name : str
        Name given to :func:`make_head`.
    description : str
        One line, saying exactly what :func:`default_grid` searches.
    steps : callable
        ``steps(options, random_state) -> [(name, transformer), ...]``: the preprocessing steps before ``"clf"``.
    final : callable
        ``final(random_state, params) -> estimator``: the ``"clf"`` step, ``params`` overriding its defaults.
    grid : callable
        ``grid(options) -> {pipeline parameter: values}``: the default search space.
    options : tuple of (str, object)
        Keyword arguments of :func:`make_head` that configure ``steps`` instead of ``"clf"``, with their defaults.
    """

    name: str
    description: str
    steps: Callable[[dict, int | None], Steps]
    final: Callable[[int | None, dict], BaseEstimator]
    grid: Callable[[dict], dict[str, list]]
    options: tuple[tuple[str, object], ...] = ()


HEADS: Registry[HeadSpec] = Registry("head")


def register_head(spec: HeadSpec) -> HeadSpec:
    """Add ``spec`` to :data:`HEADS`; a name can be registered once only.

    Raises
    ------
    ValueError
        When a head is already registered under ``spec.name``.
    """
    return HEADS.register(spec.name, spec)


def list_heads() -> list[str]:
    """Names accepted by :func:`make_head` and :func:`default_grid`."""
    return list(HEADS)


def _get_head(name: str) -> HeadSpec:
    return HEADS[name]


# ---------------------------------------------------------------------------------------------- the tables
_LOGISTIC_C = (1.0 / np.logspace(-6, 5, 12)).tolist()


def _logistic(random_state, params: dict) -> LogisticRegression:
    return LogisticRegression(**{"C": 1.0, "max_iter": MAX_ITER, "random_state": random_state, **params})


def _multilayer_steps(options: dict, random_state) -> Steps:
    selector = get_selection(options["selection"]).make(random_state, options["percentile"])
    scaler = BlockStandardScaler(blocks=options["blocks"], scale=options["scale"])
    return [("scale", scaler), ("select", selector)]


def _multilayer_grid(options: dict) -> dict[str, list]:
    return {**get_selection(options["selection"]).grid(), "clf__C": [0.1, 1.0]}


register_head(HeadSpec(
    "linear_svm",
    "L2 normalisation + linear SVM (Razavian et al. 2014); searches C over 6 values 1e-2..1e3 (log-spaced)",
    lambda options, random_state: [("scale", Normalizer(norm="l2"))],
    lambda random_state, params: LinearSVC(**{"C": 1.0, "max_iter": MAX_ITER, "random_state": random_state, **params}),
    lambda options: {"clf__C": np.logspace(-2, 3, 6).tolist()},
))
register_head(HeadSpec(
    "rbf_svm",
    "standardisation + RBF-kernel SVM; searches C in {0.1, 1, 10, 100}, gamma='scale' (1 / (n_features·Var X))",
    lambda options, random_state: [("scale", StandardScaler())],
    lambda random_state, params: SVC(**{"kernel": "rbf", "C": 1.0, "gamma": "scale", "random_state": random_state,
                                        **params}),
    lambda options: {"clf__C": [0.1, 1.0, 10.0, 100.0], "clf__gamma": ["scale"]},
))
register_head(HeadSpec(
    "logistic",
    "standardisation + L2 logistic regression (lbfgs); searches C = 1/λ over 12 log-spaced L2 penalties "
    "λ = 1e-6..1e5 (Kornblith et al. 2019)",
    lambda options, random_state: [("scale", StandardScaler())],
    _logistic,
    lambda options: {"clf__C": list(_LOGISTIC_C)},
))
register_head(HeadSpec(
    "random_forest",
    "random forest (100 trees, min_samples_leaf=1) on raw features; searches max_features in {'sqrt', 0.1}",
    lambda options, random_state: [],
    lambda random_state, params: RandomForestClassifier(
        **{"n_estimators": 100, "max_features": "sqrt", "random_state": random_state, **params}
    ),
    lambda options: {"clf__max_features": ["sqrt", 0.1]},
))
register_head(HeadSpec(
    "multilayer",
    "all cut points, per-block standardisation + feature selection + logistic (Head2Toe-style); searches "
    "select__percentile in {2, 10, 30, 100} (anova) or select__estimator__C in {0.01, 0.1, 1} (l1) × "
    "clf__C in {0.1, 1}",
    _multilayer_steps,
    _logistic,
    _multilayer_grid,
    options=(("blocks", None), ("scale", "feature"), ("selection", "anova"), ("percentile", 10)),
))


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
        ``selection`` (one of :data:`SELECTIONS`: ``"anova"``, default: keep the ``percentile`` % of features with
        the highest ANOVA F, robust with a handful of images per class; or ``"l1"``: keep the features with a
        non-zero weight in an L1-penalised linear SVM, whose ``C`` is then step parameter
        ``select__estimator__C``),
        ``percentile`` (for ``"anova"``, default 10).

    Returns
    -------
    Pipeline
        Steps ``"scale"`` (absent for ``random_forest``), ``"select"`` (``multilayer`` only) and ``"clf"``.

    Raises
    ------
    ValueError
        For an unknown ``name`` or ``selection``, or a step option given to a head without that step.
    """
    spec = _get_head(name)
    options = dict(spec.options)
    misplaced = [k for k in params if k not in options and any(k in dict(h.options) for h in HEADS.values())]
    if misplaced:
        owners = sorted({h.name for h in HEADS.values() for k in misplaced if k in dict(h.options)})
        raise ValueError(
            f"{', '.join(misplaced)} only apply to head {', '.join(map(repr, owners))}, not {name!r}"
        )
    options.update({k: params.pop(k) for k in list(params) if k in options})
    return Pipeline([*spec.steps(options, random_state), ("clf", spec.final(random_state, params))])


def default_grid(name: str, *, selection: str = "anova") -> dict[str, list]:
    """Search space of a head, in :class:`~sklearn.pipeline.Pipeline` parameter names.

    Usable as ``GridSearchCV(make_head(name), default_grid(name))`` (or see :func:`make_tuned_head`); each head's
    :attr:`HeadSpec.description` says what it searches.  Grids are kept small: a comparison fits one tuned head per
    (backbone, cut, head, train size, split).

    ``logistic`` follows Kornblith et al. (2019): 12 log-spaced L2 penalties λ from 1e-6 to 1e5, with
    ``C = 1/λ``.  In scikit-learn's objective ``C·Σ_i log-loss_i + ½‖w‖²``, so λ multiplies ½‖w‖² against the
    *summed* log-loss; a penalty λ' on the *mean* log-loss of n training images is ``C = 1/(n·λ')``.

    Parameters
    ----------
    name : str
        One of :func:`list_heads`.
    selection : {"anova", "l1"}
        Selection method of the ``multilayer`` head the grid is for (ignored by the other heads).

    Returns
    -------
    dict of {str: list}
    """
    spec = _get_head(name)
    return spec.grid({**dict(spec.options), "selection": selection})


def make_tuned_head(
    name: str, *, n_per_class: int, random_state: int | None = 0, max_folds: int = 5, n_jobs: int | None = None,
    **params,
) -> GridSearchCV:
    """A head whose hyperparameters are chosen by an inner cross-validation on the training images only.

    Parameters
    ----------
    name : str
        One of :func:`list_heads`.
    n_per_class : int
        Training images of the smallest class; the inner CV has ``min(max_folds, n_per_class)`` folds.
    random_state : int or None
        Seed of the head and of the inner fold shuffling.
    max_folds : int
        Upper bound on the number of inner folds.
    n_jobs : int or None
        Parallel fits of the search (``GridSearchCV(n_jobs=...)``).
    **params
        Forwarded to :func:`make_head` (``selection`` also picks the ``multilayer`` grid).

    Returns
    -------
    GridSearchCV
        Over ``make_head(name)`` and ``default_grid(name)``, scoring ``"accuracy"``, ``refit=True``; after ``fit``,
        ``best_params_`` holds the chosen hyperparameters.

    Raises
    ------
    ValueError
        When ``n_per_class < 2`` (no stratified inner CV possible) or ``max_folds < 2``.
    """
    for label, value in (("n_per_class", n_per_class), ("max_folds", max_folds)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 2:
            raise ValueError(
                f"{label}={value!r}: an inner stratified cross-validation needs at least 2 folds and 2 training "
                f"images per class; with fewer, use make_head({name!r}) with fixed hyperparameters"
            )
    head = make_head(name, random_state=random_state, **params)
    grid = default_grid(name, selection=params.get("selection", "anova"))
    cv = StratifiedKFold(n_splits=min(int(max_folds), int(n_per_class)), shuffle=True, random_state=random_state)
    return GridSearchCV(head, grid, scoring="accuracy", cv=cv, refit=True, n_jobs=n_jobs)


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

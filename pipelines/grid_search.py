"""Grid search over cut point, pooling and head hyperparameters, served from the feature cache, with an honest score.

One :class:`~sklearn.model_selection.GridSearchCV` runs over
``Pipeline([("cnn", CNNFeaturizer(...)), ("head", make_head(...))])`` with the cut point (``cnn__layers``), the pooling
(``cnn__pooling``) and the head's hyperparameters (``head__...``) in a single grid.  Before the search the feature cache
is warmed: every image goes through the backbone once per pooling, storing all standard cut points, so every fit and
score inside the search is a cache lookup plus a classifier fit.

The best candidate's own cross-validation score is selection-biased (it won because it scored high on those very
folds), so it is never the reported accuracy.  The selection procedure is scored on images it never saw: on the
dataset's held-out val/ subset when there is one (the search runs on train/ only), otherwise by nested
cross-validation (the whole search is repeated inside each outer training fold and the model it selects is scored on
the outer test fold).  The candidate table lists every candidate's inner-CV score, labelled descriptive.

The command is :mod:`pipelines.grid`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from tqdm.auto import tqdm

from classifiers.heads import default_grid, list_heads, make_head
from featurize import CNNFeaturizer
from featurize.backbones import get_backbone_spec
from featurize.images import as_items
from featurize.multicut import parse_pooling
from pipelines.datasets import default_data_dir
from pipelines.results import Journal, dataset_fingerprint
from reports.stats import mean_ci, resampled_interval, two_level_interval
from reports.tables import format_accuracy

__all__ = ["GridConfig", "GridResult", "run_grid"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridConfig:
    """Settings of one grid search (:func:`run_grid`; the options of ``python -m pipelines.grid``).

    Attributes
    ----------
    backbone : str, default="resnet18"
        A name from :func:`featurize.list_backbones`.
    cuts : sequence of str (or of lists of str), default=("layer3", "layer4")
        Cut points searched; a list inside concatenates its cut points into one candidate.
    poolings : sequence of str, default=("avg",)
        Poolings searched (``avg``, ``max``, ``avgmax``, ``grid:k``, ``flatten``).
    head : str, default="logistic"
        One of :func:`classifiers.heads.list_heads`.
    head_grid : dict, optional
        Head hyperparameters in the head pipeline's names (e.g. ``{"clf__C": [0.1, 1]}``); default
        :func:`classifiers.heads.default_grid`.
    weights : str, path or None, default=None
        Featurizer weights (``"DEFAULT"``, an enum name, a ``.pth`` path); ``None`` is random initialisation
        (flagged in every report).
    image_size : int, None or "auto", default="auto"
        Featurizer crop side.
    cache_dir : path, optional
        Feature cache directory; default ``<data dir>/features`` (see :func:`pipelines.datasets.default_data_dir`).
    cv : int, default=5
        Folds of the shuffled :class:`~sklearn.model_selection.StratifiedKFold` of the search (inner folds).
    outer_cv : int, default=5
        Outer folds of the nested cross-validation that scores the selection (without a held-out test set).
    random_state : int, default=0
        Seed of the folds, of the head and of random-init weights.
    device : str, default="auto"
        Torch device of the (single) cache-warming pass.
    verbose : bool, default=True
        Progress bar while warming the cache.
    n_jobs : int, optional
        Parallel fits of the search.
    resume_dir : path, optional
        Folder of a journal (``journal.jsonl``) of the finished outer folds: a killed search run again with the same
        settings skips them.
    """

    backbone: str = "resnet18"
    cuts: Sequence[str | Sequence[str]] = ("layer3", "layer4")
    poolings: Sequence[str] = ("avg",)
    head: str = "logistic"
    head_grid: Mapping[str, Sequence] | None = None
    weights: object = None
    image_size: int | str | None = "auto"
    cache_dir: str | Path | None = None
    cv: int = 5
    outer_cv: int = 5
    random_state: int = 0
    device: str = "auto"
    verbose: bool = True
    n_jobs: int | None = None
    resume_dir: str | Path | None = None


@dataclass
class GridResult:
    """Outcome of :func:`run_grid`.

    Attributes
    ----------
    search : GridSearchCV
        The search fitted on all training images (``best_estimator_`` is the refitted pipeline, steps ``"cnn"`` and
        ``"head"``).
    table : DataFrame
        One row per candidate, sorted by rank (descriptive: the inner-CV scores the selection used): ``rank``,
        ``cut``, ``pooling``, one column per head parameter (short name), ``accuracy`` (mean over folds),
        ``ci_low``, ``ci_high`` (95% resampled-t interval over folds, Nadeau–Bengio corrected), ``accuracy_95ci``,
        ``n_per_fold``, ``n_test`` (images over all folds), ``n_folds``, ``fit_time_s`` (mean per fold),
        ``times_selected`` (outer folds whose search chose it; 1 or 0 with a held-out test set).
    estimate : dict
        Accuracy of the selection procedure on images it never saw: ``design`` ("fixed_test": the held-out val
        subset; "resampled": nested cross-validation), ``accuracy``, ``ci_low``, ``ci_high``, ``n_test``,
        ``n_folds``, ``method``, ``note`` and ``accuracy_95ci``.
    outer : DataFrame
        One row per outer fold (one row for a held-out test set): ``fold``, ``n_train``, ``n_test``, ``accuracy``,
        ``selected`` (the chosen candidate).
    """

    search: GridSearchCV
    table: pd.DataFrame
    estimate: dict
    outer: pd.DataFrame

    @property
    def featurizer(self) -> CNNFeaturizer:
        """The fitted featurizer of the best pipeline."""
        return self.search.best_estimator_.named_steps["cnn"]

    @property
    def pretrained(self) -> bool:
        """Whether the featurizer weights are pretrained (False for random initialisation)."""
        return bool(self.featurizer.weights_.pretrained)

    @property
    def weights_label(self) -> str:
        """Human-readable weights description (flags random initialisation)."""
        return self.featurizer.weights_.label


def _cut_label(cut: str | Sequence[str]) -> str:
    return cut if isinstance(cut, str) else "+".join(cut)


def _head_param_grid(head: str, head_grid: Mapping[str, Sequence] | None) -> dict[str, list]:
    grid = default_grid(head) if head_grid is None else head_grid
    if not isinstance(grid, Mapping):
        raise ValueError(f"head_grid must be a dict {{parameter: list of values}}; got {head_grid!r}")
    out = {}
    for key, values in grid.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"head_grid[{key!r}] must be a non-empty list of values; got {values!r}")
        out[key if key.startswith("head__") else f"head__{key}"] = list(values)
    return out


def _short_names(params: Sequence[str]) -> dict[str, str]:
    """``head__clf__C`` → ``C``; the full step path (without ``head__``) where last parts collide."""
    last = [p.split("__")[-1] for p in params]
    return {p: (s if last.count(s) == 1 else p.removeprefix("head__")) for p, s in zip(params, last)}


def _warm_cache(X, featurizer: CNNFeaturizer, cuts: Sequence, poolings: Sequence[str]) -> None:
    """Featurize X once per pooling with every standard cut point stored (per cut for ``flatten``)."""
    for pooling in poolings:
        layers = ["all"] if parse_pooling(pooling)[0] != "flatten" else list(cuts)
        for layer in layers:
            log.info("warming the feature cache: pooling=%s, layers=%s", pooling, _cut_label(layer))
            featurizer.set_params(layers=layer, pooling=pooling).fit(X).transform(X)


def _candidate(params: Mapping, short: Mapping[str, str]) -> str:
    """One line naming a candidate: ``cut=layer4, pooling=avg, C=0.1``."""
    values = {"cut": _cut_label(params["cnn__layers"]), "pooling": params["cnn__pooling"],
              **{short[k]: params[k] for k in short}}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _table(search: GridSearchCV, fold_sizes: np.ndarray, head_params: Sequence[str],
           selected: Sequence[str]) -> pd.DataFrame:
    res = search.cv_results_
    k = len(fold_sizes)
    scores = np.column_stack([res[f"split{i}_test_score"] for i in range(k)])
    short = _short_names(head_params)
    per_fold = str(fold_sizes[0]) if fold_sizes.min() == fold_sizes.max() else f"{fold_sizes.min()}-{fold_sizes.max()}"
    overlap = 1.0 / (k - 1)
    rows = []
    for j, params in enumerate(res["params"]):
        correct = np.rint(scores[j] * fold_sizes).astype(int)
        mean, lo, hi = mean_ci(scores[j], n_correct=correct, n_test=fold_sizes, overlap=overlap)
        if fold_sizes.min() == fold_sizes.max():
            text = format_accuracy(mean, lo, hi, n=int(fold_sizes[0]), n_splits=k, unit="folds")
        else:
            text = f"{format_accuracy(mean, lo, hi)} (n={int(fold_sizes.sum())} over {k} folds)"
        row = {"rank": int(res["rank_test_score"][j]), "cut": _cut_label(params["cnn__layers"]),
               "pooling": params["cnn__pooling"]}
        row.update({short[p]: params[p] for p in head_params})
        row.update(accuracy=mean, ci_low=lo, ci_high=hi, accuracy_95ci=text, n_per_fold=per_fold,
                   n_test=int(fold_sizes.sum()), n_folds=k, fit_time_s=float(res["mean_fit_time"][j]),
                   times_selected=sum(label == _candidate(params, short) for label in selected))
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["rank", "accuracy"], ascending=[True, False], kind="stable").reset_index(drop=True)


def _outer_folds(y: np.ndarray, test_mask: np.ndarray | None, outer_cv: int,
                 random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if test_mask is not None:
        return [(np.flatnonzero(~test_mask), np.flatnonzero(test_mask))]
    folds = StratifiedKFold(outer_cv, shuffle=True, random_state=random_state + 1)
    return list(folds.split(np.zeros(len(y)), y))


def _estimate(outer: pd.DataFrame, correct: list[np.ndarray], classes: list[np.ndarray], held_out: bool) -> dict:
    """Accuracy of the selection procedure on the images it never saw, with the interval its design calls for."""
    if held_out:
        interval = two_level_interval(correct[0][None, :].astype(float), classes[0])
        design = "fixed_test"
    else:
        interval = resampled_interval(outer["accuracy"], float((outer["n_test"] / outer["n_train"]).mean()))
        design = "resampled"
    n_test, n_folds = int(outer["n_test"].sum()), len(outer)
    estimate = {"design": design, "accuracy": interval["estimate"], "ci_low": interval["ci_low"],
                "ci_high": interval["ci_high"], "n_test": n_test, "n_folds": n_folds, "method": interval["method"],
                "note": interval["note"]}
    per_fold = int(outer["n_test"].iloc[0]) if outer["n_test"].nunique() == 1 else None
    text = format_accuracy(estimate["accuracy"], estimate["ci_low"], estimate["ci_high"], n=per_fold,
                           n_splits=n_folds, unit="folds")
    if not per_fold:
        bare = format_accuracy(estimate["accuracy"], estimate["ci_low"], estimate["ci_high"])
        text = f"{bare} (n={n_test} test images over {n_folds} folds)"
    estimate["accuracy_95ci"] = text
    return estimate


@dataclass(frozen=True)
class _Space:
    """The validated search space of a :class:`GridConfig`: cut points, poolings and ``head__`` parameters."""

    cuts: list
    poolings: list[str]
    head_params: dict[str, list]

    @classmethod
    def of(cls, config: GridConfig) -> _Space:
        """Validate the config's search space (unknown backbone, cut point, pooling, head or a bad head grid raise
        ``ValueError``)."""
        spec = get_backbone_spec(config.backbone)
        cuts = [config.cuts] if isinstance(config.cuts, str) else list(config.cuts)
        poolings = [config.poolings] if isinstance(config.poolings, str) else list(config.poolings)
        if not cuts or not poolings:
            raise ValueError(f"cuts and poolings must be non-empty; valid cuts: {', '.join(spec.cut_names)}")
        for cut in cuts:
            for name in [cut] if isinstance(cut, str) else cut:
                spec.cut(name)
        for pooling in poolings:
            parse_pooling(pooling)
        if config.head not in list_heads():
            raise ValueError(f"Unknown head {config.head!r}; valid heads: {', '.join(list_heads())}")
        return cls(cuts, poolings, _head_param_grid(config.head, config.head_grid))

    @property
    def grid(self) -> dict[str, list]:
        """The parameter grid of the search."""
        return {"cnn__layers": self.cuts, "cnn__pooling": self.poolings, **self.head_params}

    @property
    def short(self) -> dict[str, str]:
        """Short names of the head parameters (:func:`_short_names`)."""
        return _short_names(list(self.head_params))

    @property
    def n_candidates(self) -> int:
        """Candidates in the grid."""
        return len(self.cuts) * len(self.poolings) * int(np.prod([len(v) for v in self.head_params.values()]))


def _check_folds(config: GridConfig, y: np.ndarray, mask: np.ndarray | None) -> None:
    """Refuse a test mask, ``cv`` or ``outer_cv`` the labels cannot support (``ValueError``)."""
    if mask is not None and (mask.shape != y.shape or mask.all() or not mask.any()):
        raise ValueError("test_mask must flag some, not all, of the images (one bool per image)")
    train_counts = np.unique(y if mask is None else y[~mask], return_counts=True)[1]
    if len(train_counts) < 2:
        raise ValueError("y holds a single class; grid search needs at least two")
    smallest = int(train_counts.min())
    cv, outer_cv = config.cv, config.outer_cv
    inner_min = smallest if mask is not None else smallest - math.ceil(smallest / max(int(outer_cv), 1))
    if not isinstance(cv, (int, np.integer)) or not 2 <= cv <= inner_min:
        raise ValueError(f"cv must be an int between 2 and the smallest class count the search sees ({inner_min}); "
                         f"got {cv!r}")
    if mask is None and not (isinstance(outer_cv, (int, np.integer)) and 2 <= outer_cv <= train_counts.min()):
        raise ValueError(f"outer_cv must be an int between 2 and the smallest class count ({train_counts.min()}); "
                         f"got {outer_cv!r}")


def _journal_settings(config: GridConfig, space: _Space, featurizer: CNNFeaturizer, n_outer: int) -> dict:
    """What determines the search's results, as recorded in its journal."""
    return {"backbone": config.backbone, "cuts": [_cut_label(c) for c in space.cuts], "poolings": space.poolings,
            "head": config.head, "grid": {k: [str(v) for v in vals] for k, vals in space.head_params.items()},
            "weights": str(config.weights), "image_size": config.image_size, "cv": config.cv, "outer_cv": n_outer,
            "random_state": config.random_state,
            "features": {k: v for k, v in featurizer.fit().cache_key().items()
                         if k in ("weights", "preprocessing", "precision")}}


def _outer_records(search: GridSearchCV, items: list, y: np.ndarray, outer_folds: list, journal: Journal | None,
                   short: Mapping[str, str], verbose: bool) -> tuple[list[dict], GridSearchCV | None]:
    """Run (or read from the journal) the search of each outer fold: its predictions on the fold's test images and
    the candidate it selected; and the last search run (None when every fold was read)."""
    records, inner = [], None
    for fold, (train, test) in enumerate(tqdm(outer_folds, desc="outer folds", disable=not verbose)):
        key = {"outer_fold": fold}
        if journal is None or key not in journal:
            inner = clone(search).fit([items[i] for i in train], y[train])
            record = {"key": key, "y_pred": inner.predict([items[i] for i in test]).tolist(),
                      "selected": _candidate(inner.best_params_, short)}
            if journal is not None:
                journal.record(record)
        records.append(record if journal is None or key not in journal else journal[key])
    return records, inner


def run_grid(X, y, config: GridConfig | None = None, *, test_mask: Sequence[bool] | None = None,
             **settings) -> GridResult:
    """Grid search over cut point × pooling × head hyperparameters in one grid, and the selection's honest accuracy.

    Parameters
    ----------
    X : sequence of image paths / PIL images, or uint8 array (N, H, W, 3)
    y : array-like of shape (N,)
        Class labels.
    config : GridConfig, optional
        The search's settings (default: ``GridConfig()``).
    test_mask : sequence of bool, optional
        Held-out test images (e.g. the dataset's val/ subset): the search runs on the others and its selection is
        scored on these; nested cross-validation is then not needed.
    **settings
        :class:`GridConfig` fields overriding those of ``config`` (``run_grid(X, y, backbone="resnet50", cv=3)``).

    Returns
    -------
    GridResult

    Raises
    ------
    ValueError
        Unknown backbone, cut point, pooling or head, a bad ``head_grid``, a ``cv``/``outer_cv`` the class counts
        cannot support, or a ``resume_dir`` holding the journal of another search.
    FileNotFoundError
        Pretrained weights are neither cached nor downloadable.
    TypeError
        For a setting that is not a :class:`GridConfig` field.
    """
    config = replace(config or GridConfig(), **settings)
    space = _Space.of(config)
    items = as_items(X)
    y = np.asarray(y)
    mask = None if test_mask is None else np.asarray(test_mask, dtype=bool)
    _check_folds(config, y, mask)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir is not None else default_data_dir() / "features"

    featurizer = CNNFeaturizer(config.backbone, weights=config.weights, image_size=config.image_size,
                               cache=cache_dir, device=config.device, random_state=config.random_state,
                               verbose=config.verbose)
    _warm_cache(items, featurizer, space.cuts, space.poolings)
    featurizer.set_params(layers=space.cuts[0], pooling=space.poolings[0], verbose=False)

    pipe = Pipeline([("cnn", featurizer), ("head", make_head(config.head, random_state=config.random_state))])
    search = GridSearchCV(pipe, space.grid, scoring="accuracy", n_jobs=config.n_jobs, error_score="raise",
                          cv=StratifiedKFold(config.cv, shuffle=True, random_state=config.random_state))
    outer_folds = _outer_folds(y, mask, config.outer_cv, config.random_state)
    settings = _journal_settings(config, space, featurizer, len(outer_folds))
    journal = (Journal(config.resume_dir, {**dataset_fingerprint(items, y), **settings})
               if config.resume_dir is not None else None)
    log.info("grid search: %d candidates × %d folds, scored on %s", space.n_candidates, config.cv,
             "the held-out test images" if mask is not None else f"{len(outer_folds)} outer folds (nested CV)")
    records, inner = _outer_records(search, items, y, outer_folds, journal, space.short, config.verbose)
    correct = [np.asarray(r["y_pred"], dtype=y.dtype) == y[test] for r, (_, test) in zip(records, outer_folds)]
    outer = pd.DataFrame({"fold": range(len(outer_folds)), "n_train": [len(tr) for tr, _ in outer_folds],
                          "n_test": [len(te) for _, te in outer_folds], "accuracy": [c.mean() for c in correct],
                          "selected": [r["selected"] for r in records]})
    estimate = _estimate(outer, correct, [y[te] for _, te in outer_folds], held_out=mask is not None)

    train_idx = np.arange(len(y)) if mask is None else np.flatnonzero(~mask)
    if mask is not None and inner is not None:
        search = inner  # the held-out case's one outer fit is the search on all training images
    else:
        search.fit([items[i] for i in train_idx], y[train_idx])
    fold_sizes = np.array([len(te) for _, te in search.cv.split(np.zeros(len(train_idx)), y[train_idx])])
    table = _table(search, fold_sizes, list(space.head_params), outer["selected"].tolist())
    return GridResult(search=search, table=table, estimate=estimate, outer=outer)

"""Grid search over cut point, pooling and head hyperparameters, served from the feature cache.

One :class:`~sklearn.model_selection.GridSearchCV` runs over
``Pipeline([("cnn", CNNFeaturizer(...)), ("head", make_head(...))])`` with the cut point (``cnn__layers``), the pooling
(``cnn__pooling``) and the head's hyperparameters (``head__...``) in a single grid.  Before the search the feature cache
is warmed: every image goes through the backbone once per pooling, storing all standard cut points, so every fit and
score inside the search is a cache lookup plus a classifier fit.

Command line::

    python -m pipelines.grid --dataset demo --backbone resnet18 --cuts layer3 layer4 --poolings avg max \\
        --head logistic --cv 5 --weights DEFAULT --out grid_results
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from classifiers.heads import default_grid, list_heads, make_head
from featurize import CNNFeaturizer
from featurize.backbones import get_backbone_spec, list_backbones
from featurize.extract import parse_pooling
from pipelines.datasets import default_data_dir, load_dataset
from pipelines.download import DownloadError
from reports.grid_report import banner_text, display_table, grid_report
from reports.stats import mean_ci
from reports.tables import format_accuracy, to_csv

__all__ = ["GridResult", "grid_report", "main", "run_grid"]

log = logging.getLogger(__name__)

_TOP = 10


@dataclass
class GridResult:
    """Outcome of :func:`run_grid`.

    Attributes
    ----------
    search : GridSearchCV
        The fitted search (``best_estimator_`` is the refitted pipeline, steps ``"cnn"`` and ``"head"``).
    table : DataFrame
        One row per candidate, sorted by rank: ``rank``, ``cut``, ``pooling``, one column per head parameter (short
        name), ``accuracy``, ``ci_low``, ``ci_high`` (95% CI over folds), ``accuracy_95ci`` (text with n),
        ``n_per_fold``, ``n_test`` (test images over all folds), ``n_folds``, ``fit_time_s`` (mean per fold).
    """

    search: GridSearchCV
    table: pd.DataFrame

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


def _table(search: GridSearchCV, fold_sizes: np.ndarray, head_params: Sequence[str]) -> pd.DataFrame:
    res = search.cv_results_
    k = len(fold_sizes)
    scores = np.column_stack([res[f"split{i}_test_score"] for i in range(k)])
    short = _short_names(head_params)
    per_fold = str(fold_sizes[0]) if fold_sizes.min() == fold_sizes.max() else f"{fold_sizes.min()}-{fold_sizes.max()}"
    rows = []
    for j, params in enumerate(res["params"]):
        correct = np.rint(scores[j] * fold_sizes).astype(int)
        mean, lo, hi = mean_ci(scores[j], n_correct=correct, n_test=fold_sizes)
        if fold_sizes.min() == fold_sizes.max():
            text = format_accuracy(mean, lo, hi, n=int(fold_sizes[0]), n_splits=k)
        else:
            text = f"{format_accuracy(mean, lo, hi)} (n={int(fold_sizes.sum())} over {k} folds)"
        row = {"rank": int(res["rank_test_score"][j]), "cut": _cut_label(params["cnn__layers"]),
               "pooling": params["cnn__pooling"]}
        row.update({short[p]: params[p] for p in head_params})
        row.update(accuracy=mean, ci_low=lo, ci_high=hi, accuracy_95ci=text, n_per_fold=per_fold,
                   n_test=int(fold_sizes.sum()), n_folds=k, fit_time_s=float(res["mean_fit_time"][j]))
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["rank", "accuracy"], ascending=[True, False], kind="stable").reset_index(drop=True)


def run_grid(
    X,
    y,
    *,
    backbone: str = "resnet18",
    cuts: Sequence[str | Sequence[str]] = ("layer3", "layer4"),
    poolings: Sequence[str] = ("avg",),
    head: str = "logistic",
    head_grid: Mapping[str, Sequence] | None = None,
    weights: object = "DEFAULT",
    image_size: int | str | None = "auto",
    cache_dir: str | Path | None = None,
    cv: int = 5,
    random_state: int = 0,
    device: str = "auto",
    verbose: bool = True,
    n_jobs: int | None = None,
) -> GridResult:
    """Cross-validated grid search over cut point × pooling × head hyperparameters, in one grid.

    Parameters
    ----------
    X : sequence of image paths / PIL images, or uint8 array (N, H, W, 3)
    y : array-like of shape (N,)
        Class labels.
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
    weights : str, path or None, default="DEFAULT"
        Featurizer weights; ``None`` is random initialisation (flagged in every report).
    image_size : int, None or "auto", default="auto"
        Featurizer crop side.
    cache_dir : path, optional
        Feature cache directory; default ``<data dir>/features`` (see :func:`pipelines.datasets.default_data_dir`).
    cv : int, default=5
        Folds of the shuffled :class:`~sklearn.model_selection.StratifiedKFold`.
    random_state : int, default=0
        Seed of the folds, of the head and of random-init weights.
    device : str, default="auto"
        Torch device of the (single) cache-warming pass.
    verbose : bool, default=True
        Progress bar while warming the cache.
    n_jobs : int, optional
        Parallel fits of the search.

    Returns
    -------
    GridResult

    Raises
    ------
    ValueError
        Unknown backbone, cut point, pooling or head, a bad ``head_grid``, or ``cv`` below 2 or above the smallest
        class count.
    FileNotFoundError
        Pretrained weights are neither cached nor downloadable.
    """
    if backbone not in list_backbones():
        raise ValueError(f"Unknown backbone {backbone!r}; valid backbones: {', '.join(list_backbones())}")
    spec = get_backbone_spec(backbone)
    cuts = [cuts] if isinstance(cuts, str) else list(cuts)
    poolings = [poolings] if isinstance(poolings, str) else list(poolings)
    if not cuts or not poolings:
        raise ValueError(f"cuts and poolings must be non-empty; valid cuts: {', '.join(spec.cut_names)}")
    for cut in cuts:
        for name in [cut] if isinstance(cut, str) else cut:
            spec.cut(name)
    for pooling in poolings:
        parse_pooling(pooling)
    if head not in list_heads():
        raise ValueError(f"Unknown head {head!r}; valid heads: {', '.join(list_heads())}")
    head_params = _head_param_grid(head, head_grid)
    y = np.asarray(y)
    counts = np.unique(y, return_counts=True)[1]
    if len(counts) < 2:
        raise ValueError("y holds a single class; grid search needs at least two")
    if not isinstance(cv, (int, np.integer)) or not 2 <= cv <= counts.min():
        raise ValueError(f"cv must be an int between 2 and the smallest class count ({counts.min()}); got {cv!r}")
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_data_dir() / "features"

    featurizer = CNNFeaturizer(backbone, weights=weights, image_size=image_size, cache=cache_dir, device=device,
                               random_state=random_state, verbose=verbose)
    _warm_cache(X, featurizer, cuts, poolings)
    featurizer.set_params(layers=cuts[0], pooling=poolings[0], verbose=False)

    pipe = Pipeline([("cnn", featurizer), ("head", make_head(head, random_state=random_state))])
    grid = {"cnn__layers": cuts, "cnn__pooling": poolings, **head_params}
    folds = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    fold_sizes = np.array([len(test) for _, test in folds.split(np.zeros(len(y)), y)])
    search = GridSearchCV(pipe, grid, scoring="accuracy", cv=folds, n_jobs=n_jobs, error_score="raise")
    n_candidates = len(cuts) * len(poolings) * int(np.prod([len(v) for v in head_params.values()]))
    log.info("grid search: %d candidates × %d folds = %d classifier fits", n_candidates, cv, n_candidates * cv)
    search.fit(X, y)
    return GridResult(search=search, table=_table(search, fold_sizes, list(head_params)))


def _image_size(text: str) -> int | str | None:
    if text.lower() == "auto":
        return "auto"
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size must be an int, 'auto' or 'none'; got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.grid", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="demo", help="demo, hymenoptera, a class-folder tree or a CSV (default: demo)")
    p.add_argument("--data-dir", default=None, help="where datasets and the feature cache live (default: "
                   "$CNN_TRANSFER_DATA or ~/.cache/cnn-transfer)")
    p.add_argument("--cache-dir", default=None, help="feature cache directory (default: <data dir>/features)")
    p.add_argument("--backbone", default="resnet18", choices=list_backbones(), metavar="NAME",
                   help="backbone (default: resnet18)")
    p.add_argument("--cuts", nargs="+", default=["layer3", "layer4"], metavar="CUT",
                   help="cut points searched; 'a+b' concatenates (default: layer3 layer4)")
    p.add_argument("--poolings", nargs="+", default=["avg"], metavar="POOL",
                   help="poolings searched: avg, max, avgmax, grid:k, flatten (default: avg)")
    p.add_argument("--head", default="logistic", choices=list_heads(), help="classification head (default: logistic)")
    p.add_argument("--cv", type=int, default=5, help="stratified folds (default: 5)")
    p.add_argument("--weights", default="DEFAULT",
                   help="DEFAULT, a torchvision enum name, a .pth path, or 'none' for random init (default: DEFAULT)")
    p.add_argument("--image-size", type=_image_size, default="auto", help="crop side, 'auto' or 'none' (default: auto)")
    p.add_argument("--device", default="auto", help="torch device (default: auto)")
    p.add_argument("--n-jobs", type=int, default=None, help="parallel classifier fits (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of folds, heads and random-init weights (default: 0)")
    p.add_argument("--out", default="grid_results", help="output directory (default: grid_results)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table printed")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for unavailable weights or bad input)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    weights = None if args.weights.lower() == "none" else args.weights
    cuts = [c.split("+") if "+" in c else c for c in args.cuts]
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else data_dir / "features"
    try:
        dataset = load_dataset(args.dataset, data_dir=data_dir, verbose=not args.quiet)
        result = run_grid(
            dataset.items, dataset.labels, backbone=args.backbone, cuts=cuts, poolings=args.poolings, head=args.head,
            weights=weights, image_size=args.image_size, cache_dir=cache_dir, cv=args.cv, random_state=args.seed,
            device=args.device, verbose=not args.quiet, n_jobs=args.n_jobs,
        )
    except FileNotFoundError as exc:
        print(f"error: {exc}\nPretrained weights are unavailable: provide the file as the message says, or rerun "
              "with --weights none (random init; accuracies are then meaningless for transfer).", file=sys.stderr)
        return 2
    except (ValueError, DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    to_csv(result.table, out / "grid.csv")
    grid_report(result, out / "grid.md", out / "grid.html")
    if not args.quiet:
        note = banner_text(result)
        if note:
            print(note)
        print(f"{dataset.summary()}; weights: {result.weights_label}")
        columns = [c for c in result.table.columns if c not in ("accuracy", "ci_low", "ci_high", "n_per_fold",
                                                                  "n_test", "n_folds")]
        print(display_table(result.table)[columns].head(_TOP).round(3).to_string(index=False))
        print(f"wrote {out / 'grid.csv'}, {out / 'grid.md'} and {out / 'grid.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

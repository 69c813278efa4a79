"""Grid search over cut point, pooling and head hyperparameters, served from the feature cache, with an honest score.

The command ``python -m pipelines.grid``, a thin layer over :func:`pipelines.grid_search.run_grid` (whose public
names, :class:`GridConfig`, :class:`GridResult` and :func:`run_grid`, are importable from here too): it loads the
dataset, runs the search and writes ``grid.csv``, ``grid_outer.csv``, ``grid.md`` and ``grid.html``.  ``--help`` and
argument errors are answered before torch is imported (checking a backbone or head name imports it).

Command line::

    python -m pipelines.grid --dataset demo --backbone resnet18 --cuts layer3 layer4 --poolings avg max \\
        --head logistic --cv 5 --out runs/grid
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from featurize.lazy import lazy_exports
from featurize.cli import (HelpFormatter, add_common_arguments, add_weights_arguments, backbone_name, image_size,
                           one_of, resolve_backbone_weights, run_cli)
from pipelines.backend import add_backend_arguments, parallel_backend

__getattr__, _NAMES = lazy_exports(__name__, {"pipelines.grid_search": ("GridConfig", "GridResult", "run_grid")})
"""The search's public names, imported on first use (so ``--help`` does not import torch)."""

__all__ = [*_NAMES, "main"]

_TOP = 10



def _heads() -> list[str]:
    from classifiers.heads import list_heads

    return list_heads()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.grid", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="demo", help="demo, hymenoptera, a class-folder tree or a CSV")
    p.add_argument("--data-dir", default=None, help="where datasets and the feature cache live (default: "
                   "$CNN_TRANSFER_DATA or ~/.cache/cnn-transfer)")
    p.add_argument("--cache-dir", default=None, help="feature cache directory (default: <data dir>/features)")
    p.add_argument("--backbone", default="resnet18", type=backbone_name, metavar="NAME", help="backbone")
    p.add_argument("--cuts", nargs="+", default=["layer3", "layer4"], metavar="CUT",
                   help="cut points searched; 'a+b' concatenates")
    p.add_argument("--poolings", nargs="+", default=["avg"], metavar="POOL",
                   help="poolings searched: avg, max, avgmax, grid:k, flatten")
    p.add_argument("--head", default="logistic", type=one_of(_heads), metavar="NAME",
                   help="classification head: a name of classifiers.heads.list_heads()")
    p.add_argument("--cv", type=int, default=5, help="stratified folds of the search (inner folds)")
    p.add_argument("--outer-cv", type=int, default=5,
                   help="outer folds of the nested CV that scores the selection (datasets without a val/ subset)")
    add_weights_arguments(p)
    p.add_argument("--image-size", type=image_size, default="auto", help="crop side, 'auto' or 'none'")
    p.add_argument("--n-jobs", type=int, default=None, help="parallel classifier fits (default: 1)")
    add_backend_arguments(p)
    p.add_argument("--out", default="runs/grid", help="output directory (holds the journal a rerun resumes from)")
    add_common_arguments(p, seed_help="seed of folds, heads and random-init weights")
    return p


def _main(args: argparse.Namespace) -> int:
    from pipelines.datasets import default_data_dir, load_dataset
    from pipelines.grid_search import GridConfig, run_grid
    from reports.grid_report import banner_text, display_table, grid_report
    from reports.tables import to_csv

    cuts = [c.split("+") if "+" in c else c for c in args.cuts]
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else data_dir / "features"
    dataset = load_dataset(args.dataset, data_dir=data_dir, verbose=not args.quiet)
    out = Path(args.out)
    with parallel_backend(args.backend, args.scheduler):
        config = GridConfig(
            backbone=args.backbone, cuts=cuts, poolings=args.poolings, head=args.head,
            weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir),
            image_size=args.image_size, cache_dir=cache_dir, cv=args.cv, outer_cv=args.outer_cv,
            random_state=args.seed, device=args.device, verbose=not args.quiet, n_jobs=args.n_jobs, resume_dir=out,
        )
        result = run_grid(dataset.items, dataset.labels, config,
                          test_mask=None if dataset.subset is None else dataset.subset == "val")
    to_csv(result.table, out / "grid.csv")
    to_csv(result.outer, out / "grid_outer.csv")
    grid_report(result, out / "grid.md", out / "grid.html")
    if not args.quiet:
        note = banner_text(result)
        if note:
            print(note)
        print(f"{dataset.summary()}; weights: {result.weights_label}")
        what = ("the selected configuration on the held-out val/ images" if result.estimate["design"] == "fixed_test"
                else "the selection procedure, by nested CV")
        print(f"Accuracy of {what}: {result.estimate['accuracy_95ci']} ({result.estimate['method']})")
        columns = [c for c in result.table.columns if c not in ("accuracy", "ci_low", "ci_high", "n_per_fold",
                                                                  "n_test", "n_folds")]
        print("Candidates by inner-CV score (descriptive, selection-biased for the winner):")
        print(display_table(result.table)[columns].head(_TOP).round(3).to_string(index=False))
        print(f"wrote {out / 'grid.csv'}, {out / 'grid_outer.csv'}, {out / 'grid.md'} and {out / 'grid.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for unavailable weights or bad input)."""
    return run_cli(_parser(), _main, argv)


if __name__ == "__main__":
    sys.exit(main())

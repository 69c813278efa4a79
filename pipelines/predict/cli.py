"""The command that labels images with an exported model: a thin layer over :func:`pipelines.exported.load_exported`.
Arguments are parsed (and ``--help`` answered) before torch is imported."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from featurize.cli import HelpFormatter, run_cli

__all__ = ["build_parser", "main", "predict_files"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pipelines.predict``."""
    p = argparse.ArgumentParser(
        prog="python -m pipelines.predict", formatter_class=HelpFormatter,
        description="Label images with a model exported by python -m pipelines.compare ... --export DIR: the class "
                    "and per-class probabilities (or decision scores, for heads without probabilities) of every "
                    "image; unreadable images are listed with their reason.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="the export folder (model.json and the model file)")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders (searched recursively)")
    p.add_argument("--out", default=None, help="write the table as CSV here (default: print it)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="feature cache folder (frozen-feature exports): images already featurized there with this "
                        "model's backbone, weights and preprocessing (e.g. the comparison's <data dir>/features) are "
                        "read, not recomputed, and new ones are stored (default: no cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def predict_files(model_dir: str | Path, images: Sequence[str | Path], verbose: bool = False,
                  cache: str | Path | None = None):
    """The predictions of an exported model for image files and folders (folders expanded, sorted), its features
    read from and stored in the cache folder ``cache`` when given."""
    from featurize.images import image_files
    from pipelines.exported import load_exported

    paths = []
    for entry in map(Path, images):
        paths += image_files(entry) if entry.is_dir() else [entry]
    return load_exported(model_dir).use_cache(cache).predict(paths, verbose=verbose)


def _main(args: argparse.Namespace) -> int:
    table = predict_files(args.model_dir, args.images, verbose=not args.quiet, cache=args.cache)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    else:
        print(table.to_csv(index=False), end="")
    unreadable = table[table["status"] != "ok"]
    summary = f"{len(table) - len(unreadable)} image(s) labelled"
    if len(unreadable):
        summary += f"; {len(unreadable)} unreadable: " + "; ".join(
            f"{r.image} ({r.error})" for r in unreadable.itertuples())
    print(summary + ("" if not args.out else f"; table written to {args.out}"), file=sys.stderr if not args.out else
          sys.stdout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.predict``; returns the exit status (2 for an error the user can fix)."""
    return run_cli(build_parser(), _main, argv)

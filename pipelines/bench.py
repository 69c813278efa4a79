"""Speed benchmarks: the end-to-end suite (default), feature extraction regimes, and head-only fine-tuning.

The command ``python -m pipelines.bench``, a thin layer over the benchmark modules: ``suite`` (the default,
:mod:`pipelines.bench_suite`): extraction from JPEG files against the bare network and the peer a user would write,
with the targets, in one run (markdown + JSON with ``--out``); ``extract`` (:mod:`pipelines.bench_extract`): cold,
cache-hit and uncached extraction (``--compare-cpu`` adds the cold extraction on the CPU); ``head``
(:mod:`pipelines.bench_head`): head-only fine-tuning per epoch on cached activations and through the frozen
backbone; ``finetune`` (:mod:`pipelines.bench_finetune`); ``cache-scale`` (:mod:`pipelines.cache_scale`).  What they
share (timing, memory, environment, targets, report lines) is :mod:`pipelines.benchmarking`.  ``--help`` and argument
errors are answered before torch is imported (checking a backbone name imports it).

Speed does not depend on the weight values: with ``--weights auto`` and no pretrained weights available the
benchmarks run random-init weights, flagged in the output.

Command line::

    python -m pipelines.bench --images 256 --out bench.md
    python -m pipelines.bench --cache-scale
    python -m pipelines.bench extract --backbone resnet18 --image-size 224 --n-images 64 --compare-cpu
    python -m pipelines.bench head --backbone resnet18 --n-images 240 --epochs 3
    python -m pipelines.bench finetune --images 64 --batch-size 16 --out finetune.md
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from featurize.lazy import lazy_exports
from featurize.cli import (HelpFormatter, add_common_arguments, add_weights_arguments, backbone_name, image_size,
                           one_of, resolve_backbone_weights, run_cli)

if TYPE_CHECKING:
    import pandas as pd

__getattr__, _NAMES = lazy_exports(__name__, {
    "pipelines.bench_extract": ("COLUMNS", "run_benchmark", "benchmark_ratios", "format_report"),
    "pipelines.bench_head": ("HEAD_COLUMNS", "run_head_benchmark", "head_ratios", "format_head_report"),
    "pipelines.benchmarking": ("make_images",),
})

__all__ = [*_NAMES, "main"]


def _summary(module: str) -> str:
    """The first paragraph of a module's docstring, read without importing the module (which imports torch)."""
    source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    return ast.get_docstring(ast.parse(source)).split("\n\n")[0]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def _benchable() -> list[str]:
    from pipelines.bench_suite import benchable_backbones

    return benchable_backbones()


def _crop_side(text: str) -> int:
    """argparse type of ``--image-size``: the shared vocabulary, restricted to an integer (images are generated)."""
    value = image_size(text)
    if not isinstance(value, int):
        raise argparse.ArgumentTypeError(f"a benchmark generates its images, so the image size must be an integer; "
                                         f"got {text!r}")
    return value


def _add_shared(p: argparse.ArgumentParser, n_images: int, n_images_help: str) -> None:
    p.add_argument("--backbone", default="resnet18", type=backbone_name, metavar="NAME", help="backbone")
    p.add_argument("--image-size", type=_crop_side, default=224, help="crop side fed to the network")
    p.add_argument("--n-images", type=int, default=n_images, help=n_images_help)
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    add_weights_arguments(p)
    add_common_arguments(p, seed_help="seed of the generated images and of the random init")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the rows and ratios as JSON (with --quiet, the report is not printed)")


def _add_jpegs(p: argparse.ArgumentParser, n_images: int, n_images_help: str) -> None:
    """``--images`` and ``--data``: the JPEG files of a suite-like benchmark."""
    p.add_argument("--images", type=_positive, default=n_images, help=n_images_help)
    p.add_argument("--data", default=None, metavar="DIR", help="use the images of this folder (recursive)")


def _add_report(p: argparse.ArgumentParser, seed_help: str) -> None:
    """``--out`` (markdown + JSON), the weights and the common options of a suite-like benchmark."""
    p.add_argument("--out", default=None, metavar="FILE.md",
                   help="write the report as markdown here and as JSON beside it (FILE.json)")
    add_weights_arguments(p)
    add_common_arguments(p, seed_help=seed_help)


_WEIGHTS_EPILOG = ("Speed does not depend on the weight values: with --weights auto and no pretrained weights "
                   "available, the benchmark runs random-init weights and says so in its output.")


def _command(commands: argparse._SubParsersAction, name: str, body: Callable[[argparse.Namespace], int],
             summary: str, description: str, epilog: str | None = _WEIGHTS_EPILOG) -> argparse.ArgumentParser:
    """A subcommand running ``body``."""
    p = commands.add_parser(name, help=summary, description=description, epilog=epilog, formatter_class=HelpFormatter)
    p.set_defaults(body=body)
    return p


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    commands = p.add_subparsers(dest="command", required=True, metavar="{suite,extract,head,finetune,cache-scale}")
    suite = _command(commands, "suite", _suite, "(default) end-to-end suite: library vs bare network vs peer, with "
                     "targets", _summary("pipelines.bench_suite"))
    suite.add_argument("--backbone", default="resnet18", type=one_of(_benchable), metavar="NAME",
                       help="backbone of the ratios")
    _add_jpegs(suite, 256, "JPEG files measured (generated unless --data)")
    suite.add_argument("--batch-size", type=_positive, default=None, help="batch size (default 32 on CPU, 128 on CUDA)")
    suite.add_argument("--rss-images", type=_positive, default=48, help="N of the peak-RSS ratio (10·N also run)")
    suite.add_argument("--full", action="store_true", help="longer: absolute speeds on all images, (d) on 2·N")
    suite.add_argument("--workdir", default=None, help="keep images and caches here (default: a temp dir, removed)")
    _add_report(suite, "seed of the generated images and of the random init")
    extract = _command(commands, "extract", _extract, "feature extraction: cold, cache hit, uncached (and CPU) "
                       "images/s", "Feature-extraction speed: cold (forward + HDF5 writes), cache hit, uncached, and "
                       "optionally GPU vs CPU.")
    _add_shared(extract, 64, "images per measured phase")
    extract.add_argument("--layers", default="layer4", help="cut point returned by the transforms")
    extract.add_argument("--cache-dir", default=None,
                         help="directory for the cache files, in a fresh subdirectory removed afterwards (default: a "
                              "temp directory)")
    extract.add_argument("--compare-cpu", action="store_true", help="on CUDA, also time the cold extraction on the CPU")
    extract.add_argument("--no-amp", action="store_true", help="fp32 on CUDA instead of bfloat16 autocast")
    head = _command(commands, "head", _head, "head-only fine-tuning per epoch: cached activations vs frozen backbone",
                    "Per-epoch cost of head-only fine-tuning on cached activations vs through the frozen backbone.")
    _add_shared(head, 240, "generated images (two classes)")
    head.add_argument("--epochs", type=int, default=3, help="epochs of each fit")
    finetune = _command(commands, "finetune", _finetune, "fine-tuning steps/s: FineTunedCNN vs a bare PyTorch loop, "
                        "cached last-block inputs", _summary("pipelines.bench_finetune"))
    finetune.add_argument("--backbone", default="efficientnet_lite0", type=backbone_name, metavar="NAME",
                          help="backbone fine-tuned")
    _add_jpegs(finetune, 64, "JPEG files (generated unless --data)")
    finetune.add_argument("--batch-size", type=_positive, default=16, help="batch size")
    finetune.add_argument("--epochs", type=_positive, default=2, help="epochs of every measured run")
    finetune.add_argument("--image-size", type=_crop_side, default=224, help="crop side fed to the network")
    _add_report(finetune, "seed of the generated images and of the fits")
    scale = _command(commands, "cache-scale", _cache_scale, "(also --cache-scale) cache bookkeeping per batch at 1k, "
                     "100k and 1M rows", "Append + lookup + read time per batch in cache files of growing size "
                     "(synthetic rows).", epilog=None)
    scale.add_argument("--sizes", type=_positive, nargs="+", default=[1_000, 100_000, 1_000_000], help="rows")
    scale.add_argument("--dim", type=_positive, default=8, help="feature width")
    scale.add_argument("--repeats", type=_positive, default=7, help="timed batches per size (median)")
    scale.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON")
    scale.add_argument("--quiet", action="store_true", help="do not print the table")
    return p


def _output(args: argparse.Namespace, df: pd.DataFrame, ratios: dict[str, float], note: str, report: str) -> int:
    if args.json:
        payload: dict[str, object] = {"rows": df.to_dict(orient="records"), "ratios": ratios}
        if not bool(df["pretrained"].iloc[0]):
            payload["note"] = note
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    if not args.quiet:
        print(report)
    return 0


def _extract(args: argparse.Namespace) -> int:
    from pipelines.bench_extract import RANDOM_INIT_NOTE, benchmark_ratios, format_report, run_benchmark

    df = run_benchmark(
        backbone=args.backbone, image_size=args.image_size, n_images=args.n_images, batch_size=args.batch_size,
        device=args.device, weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir),
        cache_dir=args.cache_dir, compare_cpu=args.compare_cpu, layers=args.layers, amp=not args.no_amp,
        seed=args.seed,
    )
    return _output(args, df, benchmark_ratios(df), RANDOM_INIT_NOTE, format_report(df))


def _head(args: argparse.Namespace) -> int:
    from pipelines.bench_head import HEAD_RANDOM_INIT_NOTE, format_head_report, head_ratios, run_head_benchmark

    df = run_head_benchmark(
        backbone=args.backbone, n_images=args.n_images, image_size=args.image_size, epochs=args.epochs,
        batch_size=args.batch_size, device=args.device,
        weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir), seed=args.seed,
    )
    return _output(args, df, head_ratios(df), HEAD_RANDOM_INIT_NOTE, format_head_report(df))


def _suite(args: argparse.Namespace) -> int:
    from pipelines import bench_suite

    result = bench_suite.run_suite(
        args.backbone, n_images=args.images, data=args.data, batch_size=args.batch_size, device=args.device,
        weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir), full=args.full,
        rss_images=args.rss_images, workdir=args.workdir, seed=args.seed,
    )
    return _publish(args, bench_suite.format_suite(result), bench_suite.suite_payload(result))


def _finetune(args: argparse.Namespace) -> int:
    from pipelines import bench_finetune

    result = bench_finetune.run_finetune_bench(
        args.backbone, weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir),
        n_images=args.images, data=args.data, batch_size=args.batch_size, epochs=args.epochs,
        image_size=args.image_size, device=args.device, seed=args.seed)
    return _publish(args, bench_finetune.format_finetune(result), result.payload())


def _publish(args: argparse.Namespace, report: str, payload: dict) -> int:
    """The report as markdown at ``--out`` and its payload as JSON beside it (with ``--out``); printed unless
    ``--quiet``."""
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report + "\n", encoding="utf-8")
        path.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    if not args.quiet:
        print(report)
    return 0


def _cache_scale(args: argparse.Namespace) -> int:
    from pipelines import cache_scale

    df = cache_scale.run_cache_scale(sizes=args.sizes, dim=args.dim, repeats=args.repeats)
    if args.json:
        Path(args.json).write_text(json.dumps(df.to_dict(orient="records"), indent=2), encoding="utf-8")
    if not args.quiet:
        print(cache_scale.format_cache_scale(df))
    return 0


_COMMANDS = ("suite", "extract", "head", "finetune", "cache-scale", "-h", "--help")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (no command: ``suite``); returns the exit status (2 for invalid arguments or
    unavailable weights)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--cache-scale"]:
        argv[0] = "cache-scale"
    if not argv or argv[0] not in _COMMANDS:
        argv.insert(0, "suite")
    return run_cli(_parser(), lambda args: args.body(args), argv)


if __name__ == "__main__":
    sys.exit(main())

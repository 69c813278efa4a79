"""``python -m pipelines.compare``: the argument parser and the printed summary, a thin layer over
:func:`pipelines.compare.run_compare`.  The parser imports nothing heavy: ``--help`` and argument errors are answered
before torch is imported."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields

from classifiers.options import BN_MODES, HEAD_INITS
from featurize.cli import HelpFormatter, add_common_arguments, add_weights_arguments, image_size, run_cli
from pipelines.backend import add_backend_arguments, parallel_backend
from pipelines.compare.config import AUTO_BACKBONES, CompareConfig
from pipelines.methods import MIN_GRID_PER_CLASS, get_method, list_methods
from pipelines.protocols import PROTOCOLS, protocol

__all__ = ["build_parser", "config_from_args", "main"]


def build_parser(protocol_name: str = "default") -> argparse.ArgumentParser:
    """The ``python -m pipelines.compare`` argument parser, with the defaults of a protocol (option names are
    :class:`CompareConfig`'s fields)."""
    d = CompareConfig.for_protocol(protocol_name if protocol_name in PROTOCOLS else "default")
    p = argparse.ArgumentParser(
        prog="python -m pipelines.compare",
        description=(
            "Compare pretrained-CNN features + classical heads with end-to-end fine-tuning on an image dataset, over "
            "repeated paired training draws; write results.csv, predictions.csv, summary.md, report.html, plots and "
            "manifest.json into --out. Every accuracy is reported with n and a 95% CI valid for the evaluation "
            "design (a fixed val/ test set, or random splits of one pool)."
        ),
        epilog="Protocols: " + " ".join(f"'{p.name}': {p.description}." for p in PROTOCOLS.values()),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--protocol", default=d.protocol, choices=list(PROTOCOLS),
                   help="preset of the settings below (see the end of this help); explicit options override it")
    p.add_argument("--dataset", default=d.dataset,
                   help="'demo' (embedded, generated on first use), 'hymenoptera' (downloaded once), an ImageFolder "
                        "directory (class subfolders, optionally under train/ and val/) or a CSV of "
                        "path,label[,subset]")
    p.add_argument("--backbones", nargs="+", default=list(d.backbones),
                   help="backbone names (featurize.list_backbones(): efficientnet_lite0-2, resnet18-152, "
                        "vgg11-19[_bn]) "
                        "or timm:<model name>; 'auto' = efficientnet_lite0 (ImageNet weights installed with pip), "
                        "plus resnet18 and vgg16 when their weights are in the torchvision cache")
    p.add_argument("--cuts", nargs="+", default=None, metavar="[BACKBONE:]CUT",
                   help="cut points for the classical heads, e.g. layer3 layer4, resnet18:layer3 vgg16:fc7 or "
                        "penultimate (default: each backbone family's own: EfficientNet-Lite blocks_4 blocks_6 "
                        "pre_logits, ResNet layer2 layer3 layer4, VGG pool3 pool4 pool5 fc7, timm penultimate)")
    p.add_argument("--methods", nargs="+", default=list(d.methods), metavar="METHOD",
                   help="; ".join(f"'{m}' = {get_method(m).description}" for m in list_methods()))
    p.add_argument("--augment", nargs="+", default=list(d.augment),
                   help="augmentation policies for fine-tuning: auto (flip_crop when layers are fine-tuned, none for "
                        "the linear probe), none, flip_crop, strong, mixup, flip_crop+mixup, …")
    p.add_argument("--train-sizes", nargs="+", default=d.train_sizes,
                   help="training images per class, integers or 'all' (default: 5 10 20 50, those the dataset "
                        "can provide, and all)")
    p.add_argument("--splits", type=int, default=d.splits,
                   help="repeated stratified training draws (with a fixed val/ folder each is scored on all of it)")
    p.add_argument("--finetune-splits", type=int, default=d.finetune_splits,
                   help="how many of those draws the (costly) fine-tuning methods run on; 0 skips fine-tuning "
                        "(default: every draw; no verdict rests on fewer than 5, the report says how many ran)")
    p.add_argument("--finetune-backbones", nargs="+", default=None,
                   help="backbones that are fine-tuned ('all' for every --backbones entry; default: the first "
                        "--backbones entry)")
    add_weights_arguments(p)
    p.add_argument("--pooling", default=d.pooling, help="avg, max, avgmax, flatten or grid:k")
    p.add_argument("--image-size", type=image_size, default=d.image_size,
                   help="crop size of the frozen features (the default protocol's 128 keeps a CPU run short; 'auto' "
                        "= the weights' own 224, which the published protocols use) or 'none'")
    p.add_argument("--finetune-image-size", type=_finetune_size, default=d.finetune_image_size,
                   help="fine-tuning crop size: 'same' as --image-size, 'auto' (224) or an integer")
    p.add_argument("--epochs", type=int, default=d.epochs, help="fine-tuning epochs per phase (at least)")
    p.add_argument("--min-steps", type=int, default=d.min_steps,
                   help="fine-tuning budget floor: each phase runs at least this many optimizer steps")
    p.add_argument("--optimizer", default=d.optimizer, help="fine-tuning optimizer: adamw or sgd (momentum 0.9)")
    p.add_argument("--schedule", default=d.schedule, help="learning-rate schedule: cosine, step, step:N, constant")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="fine-tuning mini-batch size")
    p.add_argument("--lr", type=_learning_rate, default=d.lr,
                   help="learning rate of the new head: a number, or auto (1e-3 for a random head, 1e-4 for "
                        "fine-tuning that starts from the probe)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="fine-tuning weight decay")
    p.add_argument("--lr-ratio", type=float, default=d.lr_ratio,
                   help="backbone learning rate / head learning rate (from scratch: 1)")
    p.add_argument("--lr-grid", nargs="+", type=float, default=list(d.lr_grid), metavar="LR",
                   help=f"head learning rates tried on the inner validation split from {MIN_GRID_PER_CLASS} training "
                        "images per class on (below, --lr)")
    p.add_argument("--bn", choices=list(BN_MODES), default=d.bn,
                   help="BatchNorm while fine-tuning: frozen (ImageNet running statistics kept) or train (updated "
                        "from each batch)")
    p.add_argument("--head-init", choices=list(HEAD_INITS), default=d.head_init,
                   help="fine-tuning starts from the linear probe, kept as a candidate (probe, LP-FT) or from a "
                        "random head (random)")
    p.add_argument("--validation-fraction", type=_fraction, default=d.validation_fraction,
                   help="share of the training images that picks the epoch count (then refitted on all of them), "
                        "from 10 images/class on; 'none' = no inner validation")
    p.add_argument("--inner-folds", type=int, default=d.inner_folds,
                   help="folds of the inner stratified CV that tunes every head inside each training draw (at most "
                        "the images per class)")
    p.add_argument("--n-jobs", type=int, default=d.n_jobs,
                   help="classical-head fits run in parallel (-1: one worker per core; fine-tuning uses the cores "
                        "itself)")
    p.add_argument("--data-dir", default=None, help="where datasets live (default $CNN_TRANSFER_DATA or "
                   "~/.cache/cnn-transfer)")
    p.add_argument("--cache-dir", default=None, help="HDF5 feature cache directory (default <data-dir>/features)")
    p.add_argument("--out", default=d.out, help="output folder")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="after the comparison, refit the pre-selected configuration (highest training-side score, "
                        "never test accuracy) on every labelled image and save it here with its card model.json; "
                        "use it with python -m pipelines.predict DIR IMAGES...")
    p.add_argument("--export-config", default=None, metavar="BACKBONE/CUT/METHOD",
                   help="with --export: this configuration instead (cut empty for methods without one, e.g. "
                        "efficientnet_lite0//finetune_last_block)")
    p.add_argument("--restart", action="store_true",
                   help="discard the finished fits journaled in --out by an earlier run of another configuration")
    add_backend_arguments(p)
    add_common_arguments(p, seed_help="base seed of the draws and of every fit")
    return p


def _learning_rate(text: str) -> float | str:
    if text.lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'auto'; got {text!r}")
    return value


def _finetune_size(text: str) -> int | str | None:
    return "same" if text.lower() == "same" else image_size(text)


def _fraction(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction strictly between 0 and 1, or 'none'; got {text!r}")
    return value


def cut_map(cuts: Sequence[str] | None, backbones: Sequence[str]) -> dict[str, list[str]] | None:
    """``--cuts`` as backbone → cut points: ``B:CUT`` entries for that backbone, plain entries for every backbone
    (also those ``auto`` stands for: they read the ``"*"`` entry)."""
    if not cuts:
        return None
    plain = [c for c in cuts if ":" not in c]
    out = {"*": plain} if plain else {}
    named = [b for b in backbones if b != AUTO_BACKBONES]
    for backbone in dict.fromkeys([*named, *(c.rpartition(":")[0] for c in cuts if ":" in c)]):
        chosen = list(dict.fromkeys([*(c.rpartition(":")[2] for c in cuts if c.rpartition(":")[0] == backbone),
                                     *plain]))
        if chosen:
            out[backbone] = chosen
    return out


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """Turn parsed CLI arguments into a :class:`CompareConfig` (every option is the field of the same name)."""
    from pipelines.splits import parse_train_sizes

    values = {f.name: getattr(args, f.name) for f in fields(CompareConfig) if hasattr(args, f.name)}
    values["cuts"] = cut_map(args.cuts, args.backbones) if args.cuts else protocol(args.protocol).settings.get("cuts")
    if args.train_sizes is not None:
        values["train_sizes"] = parse_train_sizes(args.train_sizes)
    return CompareConfig(**values)


def _protocol_in(argv: Sequence[str] | None) -> str:
    """The ``--protocol`` of a command line (its defaults shape the parser), ``default`` when absent or unknown."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--protocol", default="default")
    return pre.parse_known_args(argv)[0].protocol


def _main(args: argparse.Namespace) -> int:
    from pipelines.compare.run import run_compare
    from reports.tables import to_markdown

    with parallel_backend(args.backend, args.scheduler):
        result = run_compare(config_from_args(args))
    analysis, summary = result.analysis, result.meta["summary"]
    if analysis.random_init:
        print(f"\n*** RANDOM-INIT WEIGHTS for {', '.join(analysis.random_init)}: these numbers say nothing about "
              "transfer from ImageNet ***")
    largest = analysis.largest
    top = summary[summary["train_size"] == largest]
    print(f"\nAccuracy with 95% CI ({analysis.design.replace('_', ' ')} design), {largest} images/class; "
          "selection_score = inner-CV accuracy on the training images (descriptive table, no ranking):")
    print(to_markdown(top[["backbone", "cut", "method", "family", "pretrained", "accuracy_95ci", "selection_score",
                           "fit_time_s"]]))
    picked = analysis.selected[analysis.selected["train_size"] == largest]
    print("\nPre-selected (training-side evidence only): " + "; ".join(
        f"{r['family']}: {analysis.label(r)}" for r in picked.to_dict("records")))
    print(f"\n{analysis.crossover['statement']}")
    print(f"\nWall time {result.meta['wall_time_s']:.0f} s. Report: {result.paths['report_html']}")
    if "model_card" in result.paths:
        card = json.loads(result.paths["model_card"].read_text())
        print(f"Exported {'/'.join(str(card['configuration'][k] or '') for k in ('backbone', 'cut', 'method'))} "
              f"({card['selected_by']}; measured {card['accuracy']['text']}) to {result.paths['model_card'].parent}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for an error the user can fix)."""
    return run_cli(build_parser(_protocol_in(argv)), _main, argv)


if __name__ == "__main__":
    sys.exit(main())

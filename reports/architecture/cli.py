"""Architecture report: the course's questions 1–8 answered by computing them on the real torchvision models.

The command (``python -m reports.architecture``); usage::

    python -m reports.architecture [--backbones vgg16 resnet18] [--image PATH] [--out DIR]
                                   [--weights auto|none|DEFAULT|PATH] [--weights-dir DIR] [--quiet]

writes ``DIR/architecture.md`` and ``DIR/architecture.html`` (tables, and PNG figures in ``DIR/figures``), see
:func:`reports.architecture.report.build_report`.  Arguments are parsed (and ``--help`` answered) before torch is
imported.
"""

from __future__ import annotations

import argparse

from featurize.cli import HelpFormatter, add_weights_arguments, backbone_name, run_cli
from reports.architecture.config import ReportConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reports.architecture", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["vgg16", "resnet18"], type=backbone_name, metavar="NAME",
                   help="backbones to analyse")
    p.add_argument("--image", default=None, help="image for the fully-convolutional heatmap (default: generated)")
    p.add_argument("--probe-images", nargs="+", default=[], metavar="PATH",
                   help="image files or folders for the Q5 probe (default: --image, else generated scenes)")
    p.add_argument("--out", default="architecture_report", help="output directory")
    add_weights_arguments(p)
    p.add_argument("--size", type=int, default=224, help="side of the Q5 probe's views")
    p.add_argument("--large", type=int, nargs=2, default=[384, 512], metavar=("H", "W"),
                   help="larger input of Q6–Q8")
    p.add_argument("--class-index", type=int, default=None, help="ImageNet class of the heatmap (default: best)")
    p.add_argument("--rf-check-max", type=int, default=450, help="largest receptive field measured by gradient")
    p.add_argument("--erf-max", type=int, default=250, help="largest receptive field in the effective-RF figure")
    p.add_argument("--erf-samples", type=int, default=2, help="random inputs per effective RF")
    p.add_argument("--crop-fraction", type=float, default=0.5, help="probe centre crop / shorter side")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    return p


def _run(args: argparse.Namespace) -> int:
    from reports.architecture.report import build_report  # torch is imported once the arguments are valid

    cfg = ReportConfig(
        backbones=args.backbones, weights=args.weights, weights_dir=args.weights_dir, image=args.image,
        probe_images=args.probe_images, size=args.size, large=tuple(args.large), class_index=args.class_index,
        rf_check_max=args.rf_check_max, erf_max=args.erf_max, erf_samples=args.erf_samples,
        crop_fraction=args.crop_fraction, verbose=not args.quiet,
    )
    try:
        paths = build_report(cfg, args.out)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc}\nPretrained weights are unavailable. Provide the file as the message says, or rerun with "
            "--weights auto or --weights none for a random-init report (shapes and receptive fields stay exact; "
            "confidences and heatmaps are then meaningless).") from exc
    if not args.quiet:
        print(f"wrote {paths['markdown']} and {paths['html']} ({len(paths['figures'])} figures)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad input or unavailable requested weights)."""
    return run_cli(_parser(), _run, argv)

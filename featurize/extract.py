"""The sharded-extraction command: ``torchrun --nproc_per_node=N -m featurize.extract`` (or alone without torchrun).

A thin layer over :func:`featurize.shards.extract_folder`: argument parsing (the shared vocabulary of
:mod:`featurize.cli`), the process group, and the printed result.  ``--help`` and argument errors are answered
before torch is imported.

Command line::

    torchrun --nproc_per_node=4 -m featurize.extract --data images/ --backbone resnet50 --out cache.h5
    python -m featurize.extract --data images/ --backbone resnet18 --out cache.h5 --print-slurm --nodes 2
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

from featurize.cli import (HelpFormatter, add_common_arguments, add_weights_arguments, image_size,
                           resolve_backbone_weights, run_cli)

__all__ = ["build_parser", "main"]

_BARRIER_TIMEOUT = timedelta(days=7)


def _workers(text: str) -> int | str:
    """argparse type of ``--num-workers``: a non-negative integer or ``auto``."""
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"--num-workers takes a non-negative integer or 'auto'; got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m featurize.extract``."""
    p = argparse.ArgumentParser(prog="python -m featurize.extract", formatter_class=HelpFormatter,
                                description="Extract an image folder into one feature cache, sharded over the "
                                "processes torchrun starts (one per GPU), or in this process alone.")
    p.add_argument("--data", required=True, help="image folder (searched recursively)")
    p.add_argument("--out", required=True, help="the .h5 cache to write (shards go beside it)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--layers", default="layer4", help="cut points, comma-separated (every standard one is cached "
                   "anyway, except with flatten pooling)")
    p.add_argument("--pooling", default="avg")
    add_weights_arguments(p)
    p.add_argument("--image-size", type=image_size, default="auto", help="crop side, 'auto' or 'none'")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=_workers, default="auto",
                   help="DataLoader workers per process: an integer, or auto (CPUs − 1, at most 8)")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise", help="unreadable images")
    add_common_arguments(p, seed_help="seed of random-init weights")
    p.add_argument("--print-slurm", action="store_true", help="print a Slurm batch script running this command "
                   "on --nodes x --gpus-per-node GPUs, and exit")
    p.add_argument("--nodes", type=int, default=1, help="with --print-slurm")
    p.add_argument("--gpus-per-node", type=int, default=1, help="with --print-slurm")
    return p


def _slurm_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` without the options that only shape the Slurm script."""
    out, skip = [], False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip:
            skip = False
        elif name == "--print-slurm":
            continue
        elif name in ("--nodes", "--gpus-per-node"):
            skip = "=" not in arg
        else:
            out.append(arg)
    return out


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import torch
    import torch.distributed as dist

    from featurize.shards import extract_folder, slurm_script
    from featurize.transformer import CNNFeaturizer

    if args.print_slurm:
        print(slurm_script(_slurm_argv(argv), args.nodes, args.gpus_per_node), end="")
        return 0
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = args.device
    if world_size > 1 and (device == "cuda" or device == "auto" and torch.cuda.is_available()):
        device = f"cuda:{local_rank}"
    featurizer = CNNFeaturizer(
        args.backbone, layers=args.layers.split(","), pooling=args.pooling,
        weights=resolve_backbone_weights(args.backbone, args.weights, args.weights_dir), image_size=args.image_size,
        batch_size=args.batch_size, device=device, num_workers=args.num_workers, on_error=args.on_error,
        random_state=args.seed, verbose=not args.quiet)
    barrier = {}
    if world_size > 1:
        nccl = str(device).startswith("cuda")
        dist.init_process_group("nccl" if nccl else "gloo", timeout=_BARRIER_TIMEOUT)
        barrier["barrier"] = (lambda: dist.barrier(device_ids=[local_rank])) if nccl else dist.barrier
    try:
        cache = extract_folder(featurizer, args.data, args.out, rank=rank, world_size=world_size, **barrier)
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    if cache is not None:
        fitted = featurizer.fit()
        flag = "" if fitted.weights_.pretrained else " (RANDOM-INIT weights: features are not pretrained ones)"
        print(f"{cache.path}: {cache.n_complete} rows from {world_size} process(es){flag}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m featurize.extract`` (under torchrun or alone); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(build_parser(), lambda args: _run(args, argv), argv)


if __name__ == "__main__":
    sys.exit(main())

"""Sharded extraction of an image folder into one cache: ``torchrun --nproc_per_node=N -m featurize.extract``.

Each rank takes a contiguous block of the sorted image list (no padding, so no image twice), extracts it with a
:class:`CNNFeaturizer` into its own shard cache ``<out>.shard-<r>-of-<N>.h5`` (the featurizer's key and stored cut
points; a rerun resumes it, stored rows being cache hits), waits for the other ranks (``torch.distributed``
barrier: gloo on CPU, NCCL on CUDA, one GPU per local rank), and rank 0 stitches the shards into ``<out>``
(:meth:`FeatureCache.stitch`: virtual datasets over the shards, read like any cache).  Without torchrun (no
``WORLD_SIZE`` in the environment) the folder is extracted straight into ``<out>``.  Multi-node runs use torchrun's
rendezvous flags; ``--print-slurm`` prints a Slurm batch script doing so.

Command line::

    torchrun --nproc_per_node=4 -m featurize.extract --data images/ --backbone resnet50 --out cache.h5
    python -m featurize.extract --data images/ --backbone resnet18 --out cache.h5 --print-slurm --nodes 2
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

from sklearn.base import clone

from featurize.cache import FeatureCache
from featurize.images import IMAGE_EXTENSIONS
from featurize.transformer import CNNFeaturizer

__all__ = ["list_images", "shard_indices", "shard_path", "extract_folder", "slurm_script", "main"]

_CHUNK = 4096
_BARRIER_TIMEOUT = timedelta(days=7)


def _alone() -> None:
    """The barrier of a single process."""


def list_images(data: str | Path) -> list[Path]:
    """Image files under ``data`` (recursively), sorted by relative path: the same list on every rank.

    Raises
    ------
    ValueError
        When ``data`` is not a folder or holds no image.
    """
    root = Path(data)
    if not root.is_dir():
        raise ValueError(f"--data {str(root)!r} is not a folder")
    paths = sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda p: p.relative_to(root).as_posix())
    if not paths:
        raise ValueError(f"--data {str(root)!r} holds no images (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return paths


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``range(n)`` rank ``rank`` of ``world_size`` extracts (sizes differ by at most 1)."""
    return range(n * rank // world_size, n * (rank + 1) // world_size)


def shard_path(out: str | Path, rank: int, world_size: int) -> Path:
    """``<out>.shard-<rank>-of-<world_size>.h5``."""
    out = Path(out)
    return out.with_name(f"{out.name}.shard-{rank}-of-{world_size}.h5")


def extract_folder(featurizer: CNNFeaturizer, data: str | Path, out: str | Path, *, rank: int = 0,
                   world_size: int = 1, barrier: Callable[[], None] = _alone,
                   chunk: int = _CHUNK) -> FeatureCache | None:
    """Extract this rank's block of the folder into its shard; on rank 0, stitch the shards into ``out``.

    Parameters
    ----------
    featurizer : CNNFeaturizer
        Configuration (its ``cache`` is replaced by the shard file, or by ``out`` when ``world_size == 1``).
    data : path-like
        The image folder.
    out : path-like
        The ``.h5`` cache to produce.
    rank, world_size : int
        This process's rank and the number of processes.
    barrier : callable
        Returns once every rank has finished its shard.
    chunk : int
        Images per ``transform`` call (bounds the memory of the returned arrays).

    Returns
    -------
    FeatureCache or None
        The cache ``out`` on rank 0, None elsewhere.

    Raises
    ------
    FileExistsError
        Before any work, when ``out`` is an ordinary cache and ``world_size > 1`` (stitching would replace it).
    CacheKeyError
        Before any work, when ``out`` holds features of another configuration.
    """
    paths = list_images(data)
    target = Path(out) if world_size == 1 else shard_path(out, rank, world_size)
    fitted = clone(featurizer).set_params(cache=str(target)).fit()
    if world_size > 1:
        FeatureCache(out, fitted.cache_key()).refuse_unless_stitched()
    block = [paths[i] for i in shard_indices(len(paths), rank, world_size)]
    for start in range(0, len(block), chunk):
        fitted.transform(block[start:start + chunk])
    barrier()
    if rank:
        return None
    if world_size == 1:
        return fitted.cache_file()
    return FeatureCache.stitch(out, [shard_path(out, r, world_size) for r in range(world_size)], fitted.cache_key())


def slurm_script(argv: Sequence[str], nodes: int, gpus_per_node: int, port: int = 29500) -> str:
    """A Slurm batch script running ``python -m featurize.extract <argv>`` on ``nodes`` × ``gpus_per_node`` GPUs.

    One task per node starts torchrun, which starts one process per GPU; ranks meet at the first node (c10d
    rendezvous), so the same command works for any number of nodes.
    """
    command = shlex.join(["torchrun", f"--nproc_per_node={gpus_per_node}"])
    return "\n".join([
        "#!/bin/bash",
        "#SBATCH --job-name=featurize-extract",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --cpus-per-task={4 * gpus_per_node}",
        "set -euo pipefail",
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f'srun {command} --nnodes="$SLURM_NNODES" --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d '
        f'--rdzv_endpoint="$head:{port}" -m featurize.extract {shlex.join(argv)}',
        "",
    ])


def _workers(text: str) -> int | str:
    """argparse type of ``--num-workers``: a non-negative integer or ``auto``."""
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"--num-workers takes a non-negative integer or 'auto'; got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    from pipelines.cli import HelpFormatter, add_common_arguments, add_weights_arguments, image_size

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

    from pipelines.cli import resolve_backbone_weights

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
    barrier = _alone
    if world_size > 1:
        nccl = str(device).startswith("cuda")
        dist.init_process_group("nccl" if nccl else "gloo", timeout=_BARRIER_TIMEOUT)
        barrier = (lambda: dist.barrier(device_ids=[local_rank])) if nccl else dist.barrier
    try:
        cache = extract_folder(featurizer, args.data, args.out, rank=rank, world_size=world_size, barrier=barrier)
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    if cache is not None:
        fitted = featurizer.fit()
        flag = "" if fitted.weights_.pretrained else " (RANDOM-INIT weights: features are not pretrained ones)"
        print(f"{cache.path}: {cache.n_complete} rows from {world_size} process(es){flag}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m featurize.extract`` (under torchrun or alone); returns the exit status.

    The shared options come from :mod:`pipelines.cli`, imported here rather than at module level: ``pipelines``
    depends on ``featurize``, never the reverse at import time.
    """
    import sys

    from pipelines.cli import run_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(_parser(), lambda args: _run(args, argv), argv)

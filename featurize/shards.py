"""Sharded extraction of an image folder into one cache (the command: ``torchrun --nproc_per_node=N -m
featurize.extract``, see :mod:`featurize.extract`).

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

import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from sklearn.base import clone

from featurize.cache import FeatureCache
from featurize.images import IMAGE_EXTENSIONS, image_files
from featurize.transformer import CNNFeaturizer

__all__ = ["list_images", "shard_indices", "shard_path", "extract_folder", "slurm_script"]

_CHUNK = 4096


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
    paths = image_files(root)
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

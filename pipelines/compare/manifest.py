"""What a comparison's manifest records besides its settings: the software and hardware it ran on, and the train
sizes at which every draw has the very same training images."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata

from pipelines.splits import Split

__all__ = ["environment", "same_training_sets"]


def environment() -> dict:
    """Python, platform, CPUs, torch threads, GPU and the versions of the main packages."""
    import torch

    versions = {}
    for pkg in ("torch", "torchvision", "scikit-learn", "numpy", "pandas", "h5py", "scipy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": versions,
    }


def same_training_sets(splits: Sequence[Split]) -> list[int]:
    """Train sizes at which every draw has the very same training images (e.g. "all" with a fixed val/ subset)."""
    sizes: dict[int, set] = {}
    for split in splits:
        sizes.setdefault(split.train_size, set()).add(tuple(split.train_idx))
    return [size for size, draws in sizes.items() if len(draws) == 1 and len(splits) > len(sizes)]



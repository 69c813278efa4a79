"""What a comparison's manifest records besides its settings: the software and hardware it ran on, and the train
sizes at which every draw has the very same training images."""

from __future__ import annotations

from collections.abc import Sequence

from featurize.environment import capture_environment
from pipelines.splits import Split

__all__ = ["environment", "same_training_sets"]


def environment() -> dict:
    """Python, platform, CPUs, torch threads, GPU and the versions of the main packages."""
    e = capture_environment()
    return {"python": e.python, "platform": e.platform, "cpu_count": e.cpu_count, "torch_threads": e.torch_threads,
            "cuda": e.gpu, "versions": e.versions}


def same_training_sets(splits: Sequence[Split]) -> list[int]:
    """Train sizes at which every draw has the very same training images (e.g. "all" with a fixed val/ subset)."""
    sizes: dict[int, set] = {}
    for split in splits:
        sizes.setdefault(split.train_size, set()).add(tuple(split.train_idx))
    return [size for size, draws in sizes.items() if len(draws) == 1 and len(splits) > len(sizes)]



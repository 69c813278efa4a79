"""What a measurement ran on: Python, platform, CPU, torch threads, GPU and package versions, captured in one place.

Benchmarks report it beside their numbers, comparisons record it in their manifest, and the feature cache stores the
versions its rows were computed with.  Importing this module imports nothing heavy; :func:`capture_environment`
imports torch.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["Environment", "capture_environment", "cpu_name", "package_versions"]

PACKAGES = ("torch", "torchvision", "scikit-learn", "numpy", "pandas", "h5py", "scipy")
"""The distributions whose versions :func:`capture_environment` records by default."""


def package_versions(names: Sequence[str], missing: str | None = None) -> dict[str, str | None]:
    """Installed version of each distribution (its metadata, e.g. ``2.3.0``), ``missing`` for one not installed."""
    def of(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return missing

    return {name: of(name) for name in names}


def cpu_name() -> str:
    """The CPU model (from ``/proc/cpuinfo`` where it exists)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Environment:
    """What :func:`capture_environment` found.

    Attributes
    ----------
    python, platform : str
        ``platform.python_version()`` and ``platform.platform()``.
    cpu : str
        CPU model (:func:`cpu_name`).
    cpu_count : int or None
        ``os.cpu_count()``: CPUs of the machine.
    usable_cpus : int
        CPUs this process may run on (:func:`featurize.images.usable_cpus`).
    torch_threads : int
        ``torch.get_num_threads()``.
    torch, torchvision : str
        The imported modules' ``__version__`` (with their build tag, e.g. ``2.3.0+cu121``).
    device : str or None
        The device asked about.
    gpu : str or None
        Name of that device's GPU (without a device: of the first GPU, when there is one); None without one.
    versions : dict
        Distribution → installed version (:func:`package_versions`; None when not installed).
    """

    python: str
    platform: str
    cpu: str
    cpu_count: int | None
    usable_cpus: int
    torch_threads: int
    torch: str
    torchvision: str
    device: str | None
    gpu: str | None
    versions: dict[str, str | None] = field(default_factory=dict)


def capture_environment(device: torch.device | None = None, packages: Sequence[str] = PACKAGES) -> Environment:
    """Capture the environment a measurement runs in.

    Parameters
    ----------
    device : torch.device, optional
        The device measured: its GPU is named (none for the CPU).  Without one, the first GPU is, when there is one.
    packages : sequence of str
        Distributions whose installed versions are recorded.

    Returns
    -------
    Environment
    """
    import torch
    import torchvision

    from featurize.images import usable_cpus

    if device is None:
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    else:
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return Environment(
        python=platform.python_version(), platform=platform.platform(), cpu=cpu_name(), cpu_count=os.cpu_count(),
        usable_cpus=usable_cpus(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
        torchvision=torchvision.__version__, device=None if device is None else str(device), gpu=gpu,
        versions=package_versions(packages),
    )

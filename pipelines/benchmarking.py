"""What every benchmark of ``python -m pipelines.bench`` shares: generated inputs, timing, peak memory, the environment,
ratios against targets, and the lines of a report.

Each measured phase is timed with :func:`time.perf_counter`, the device synchronised before and after
(:func:`timed`).  Reports are ratios measured in one run (these machines are shared and noisy), each beside its
target (:class:`Target`), with the weights and the hardware they ran on.  Importing this module does not import
torch; the functions that need it import it when called.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd
from PIL import Image

from featurize.environment import capture_environment

if TYPE_CHECKING:
    import torch

__all__ = [
    "RANDOM_INIT_NOTE",
    "RATIO_COLUMNS",
    "BenchResult",
    "PeakMemory",
    "Target",
    "environment_lines",
    "hardware",
    "hardware_line",
    "make_images",
    "max_rss_mb",
    "peak_memory",
    "ratio_lines",
    "ratio_table",
    "reset_peak",
    "row_environment",
    "synchronize",
    "text_report",
    "timed",
    "timed_call",
    "weights_line",
    "write_jpegs",
]

T = TypeVar("T")

RANDOM_INIT_NOTE = "random-init weights (speed only; features meaningless)"
"""The flag of a feature-extraction benchmark run with random-init weights."""

RATIO_COLUMNS = ["name", "what", "value", "target", "met"]
"""Columns of a :func:`ratio_table`."""


# ---------------------------------------------------------------------------------------------- generated inputs
def make_images(n_images: int, image_size: int, seed: int = 0) -> np.ndarray:
    """Seeded random uint8 images of shape ``(n_images, image_size + 32, image_size + 32, 3)``."""
    side = image_size + 32
    return np.random.default_rng(seed).integers(0, 256, size=(n_images, side, side, 3), dtype=np.uint8)


def write_jpegs(folder: str | Path, n_images: int, size: tuple[int, int] = (500, 375), seed: int = 0,
                start: int = 0) -> list[Path]:
    """Write ``n_images`` photo-like JPEGs (smooth colour fields plus sensor-like noise, quality 90) of ``size``.

    Images ``start … start + n_images - 1`` of the seeded sequence, so the same call always writes the same bytes and
    no two images are alike (a content-keyed cache stores each once).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n_images):
        rng = np.random.default_rng([seed, i])
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.int16) + rng.normal(0, 6, (size[1], size[0], 3)).astype(np.int16)
        path = folder / f"img{i:05d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------- timing and memory
def synchronize(device: torch.device | None) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU or without a device."""
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def timed_call(device: torch.device | None, call: Callable[[], T]) -> tuple[float, T]:
    """Seconds taken by ``call()`` and what it returned, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    out = call()
    synchronize(device)
    return time.perf_counter() - start, out


def timed(device: torch.device | None, call: Callable[[], object]) -> float:
    """Seconds taken by ``call()``, the device synchronised before and after."""
    return timed_call(device, call)[0]


def max_rss_mb() -> float:
    """This process' lifetime maximum resident set size, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def reset_peak(device: torch.device) -> None:
    """Start a new peak for :func:`peak_memory` (CUDA; the process' max RSS cannot be reset)."""
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures (CUDA allocations since the last reset, or process max RSS)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return max_rss_mb(), "process_max_rss"


def _pss_mb(pid: int) -> float:
    """Proportional set size of a process in MiB (shared pages split between their users), 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
    except (OSError, StopIteration, ValueError):
        return 0.0


def _children(pid: int) -> list[int]:
    pids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            pids += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return pids


class PeakMemory(threading.Thread):
    """Samples, every 20 ms, the PSS of this process plus its live children (loader workers) and keeps the peak.

    PSS counts a page shared by a forked worker and its parent once in total, where adding RSS values would count it
    in each.  Without ``/proc`` (not Linux) the peak is this process' own maximum RSS.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self._done = 0.0, threading.Event()
        self.proc = Path("/proc/self/smaps_rollup").exists()

    def run(self) -> None:
        me = os.getpid()
        while not self._done.wait(0.02):
            self.peak = max(self.peak, _pss_mb(me) + sum(_pss_mb(c) for c in _children(me)))

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._done.set()
        self.join()
        return self.peak if self.proc else max_rss_mb()


# ---------------------------------------------------------------------------------------------- environment
def row_environment(device: torch.device) -> dict[str, object]:
    """The environment columns of a benchmark row: ``device``, ``device_name``, ``torch_version``, ``threads``."""
    env = capture_environment(device, packages=())
    return {"device": env.device, "device_name": env.gpu or env.cpu, "torch_version": env.torch,
            "threads": env.torch_threads}


def hardware(device: torch.device) -> dict[str, object]:
    """CPU model, usable CPUs, torch threads, device, GPU (``"none"``) and torch/torchvision versions."""
    env = capture_environment(device, packages=())
    return {"cpu": env.cpu, "cpus": env.usable_cpus, "torch_threads": env.torch_threads, "device": env.device,
            "gpu": env.gpu or "none", "torch": env.torch, "torchvision": env.torchvision}


# ---------------------------------------------------------------------------------------------- targets and ratios
@dataclass(frozen=True)
class Target:
    """One ratio of a benchmark and its target.

    Attributes
    ----------
    name : str
        ``numerator/denominator`` of two measurement names.
    what : str
        What the ratio compares, in words.
    threshold : float or None
        The target; None for a ratio reported without one.
    at_least : bool
        True for "≥ threshold" (speed-ups), False for "≤ threshold" (memory growth).
    device : {"any", "cpu", "cuda"}
        Where the ratio is measured: the (a) targets are stated for fp32 on the CPU, (f) for bf16 on CUDA.
    """

    name: str
    what: str
    threshold: float | None
    at_least: bool = True
    device: str = "any"

    def met(self, value: float) -> bool | None:
        """Whether ``value`` meets the target (None without one)."""
        if self.threshold is None:
            return None
        return value >= self.threshold if self.at_least else value <= self.threshold

    def applies(self, device: torch.device) -> bool:
        """Whether the ratio is measured on ``device``."""
        return self.device in ("any", device.type)

    @property
    def label(self) -> str:
        """The target as written in a report (``≥ 1.2``, ``≤ 1.1``; empty without one)."""
        if self.threshold is None:
            return ""
        return f"{'≥' if self.at_least else '≤'} {self.threshold:g}"


def ratio_table(targets: Sequence[Target], names: Sequence[str], value: Callable[[str, str], float],
                device: torch.device | None = None) -> pd.DataFrame:
    """One row per target (columns :data:`RATIO_COLUMNS`) whose two measurements are among ``names`` (and, with a
    ``device``, that applies to it); ``value(numerator, denominator)`` computes the ratio."""
    rows = []
    for target in targets:
        top, bottom = target.name.split("/")
        if (device is not None and not target.applies(device)) or top not in names or bottom not in names:
            continue
        ratio = float(value(top, bottom))
        rows.append({"name": target.name, "what": target.what, "value": ratio, "target": target.label,
                     "met": target.met(ratio)})
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)


@dataclass
class BenchResult:
    """What a benchmark of ratios measured.

    Attributes
    ----------
    measurements : DataFrame
        One row per measurement (its ``name`` and what was measured).
    ratios : DataFrame
        One row per target measured (:func:`ratio_table`).
    hardware : dict
        :func:`hardware`.
    settings : dict
        What was run (backbone, images, batch size, weights and whether they are pretrained …).
    """

    measurements: pd.DataFrame
    ratios: pd.DataFrame
    hardware: dict[str, object]
    settings: dict[str, object]

    def payload(self) -> dict[str, object]:
        """The result as a JSON-ready mapping."""
        return {"settings": self.settings, "hardware": self.hardware,
                "ratios": self.ratios.to_dict(orient="records"),
                "measurements": self.measurements.to_dict(orient="records")}


# ---------------------------------------------------------------------------------------------- report lines
def weights_line(weights: object, pretrained: bool, note: str) -> str:
    """``weights: <label>``, flagged with ``note`` when the weights are not pretrained."""
    return f"weights: {weights}" + ("" if pretrained else f"  [{note}]")


def hardware_line(h: Mapping[str, object], torchvision: bool = True) -> str:
    """The :func:`hardware` mapping as one report line."""
    line = (f"hardware: {h['cpu']}, {h['cpus']} CPU(s), {h['torch_threads']} torch thread(s), GPU {h['gpu']}; "
            f"torch {h['torch']}")
    return line + (f", torchvision {h['torchvision']}" if torchvision else "")


def ratio_lines(ratios: pd.DataFrame) -> list[str]:
    """A :func:`ratio_table` as a markdown table: ratio, what, measured, target, met."""
    lines = ["| ratio | what | measured | target | met |", "|---|---|---:|---|---|"]
    for r in ratios.itertuples():
        met = "" if r.met is None else "yes" if r.met else "NO"
        lines.append(f"| `{r.name}` | {r.what} | {r.value:.2f}× | {r.target} | {met} |")
    return lines


def environment_lines(df: pd.DataFrame, precision: bool = False) -> list[str]:
    """The hardware lines of a table of rows (:func:`row_environment` columns): torch version and threads, then each
    device with its name (and precision)."""
    first = df.iloc[0]
    lines = [f"torch {first.torch_version}, {first.threads} CPU thread(s)"]
    for device, group in df.groupby("device", sort=False):
        suffix = f" ({group.iloc[0].precision})" if precision else ""
        lines.append(f"device {device}: {group.iloc[0].device_name}{suffix}")
    return lines


def text_report(df: pd.DataFrame, header: str, note: str, columns: list[str], ratios: list[str],
                precision: bool = False) -> str:
    """The plain-text layout of a table of rows: settings, weights, environment, table, ratios, random-init note."""
    first = df.iloc[0]
    lines = [header, weights_line(first.weights, first.pretrained, note), *environment_lines(df, precision)]
    lines += ["", df[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"), "", *ratios]
    if not first.pretrained:
        lines.append(f"note: {note}")
    return "\n".join(lines)

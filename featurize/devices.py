"""Device selection and the numeric settings that go with it (AMP, channels_last memory format)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["resolve_device", "autocast", "precision_of", "prepare", "to_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; validate anything else.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` …

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For an unparsable device string or a CUDA device on a machine without CUDA.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device; use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


def prepare(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move a model to ``device`` in the channels_last memory format.

    Convolutions run faster on channels_last tensors on CUDA (cuDNN) and on the CPU (oneDNN): ``python -m
    pipelines.bench`` compares both formats (``bare_fp32``, ``bare_channels_last``).  Results differ from the
    contiguous format in the last bits only.
    """
    return model.to(device).to(memory_format=torch.channels_last)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to ``device`` (non-blocking from pinned memory); image batches (N, C, H, W) go channels_last."""
    x = x.to(device, non_blocking=True)
    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def precision_of(device: torch.device, amp: bool = True) -> str:
    """Name of the arithmetic used on ``device``: ``"bf16-amp"`` on CUDA with AMP, else ``"fp32"``."""
    return "bf16-amp" if amp and device.type == "cuda" else "fp32"


def _tf32_switches() -> list[tuple[object, str, object]]:
    """(owner, attribute, strict value) of the cuDNN-convolution and cuBLAS-matmul TF32 settings.

    PyTorch ≥ 2.9 has ``fp32_precision`` settings and refuses to read the legacy ``allow_tf32`` flags once they are
    used, so the new ones are preferred where they exist.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return [(conv, "fp32_precision", "ieee"), (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    return [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]


@contextlib.contextmanager
def _strict_fp32() -> Iterator[None]:
    switches = _tf32_switches()
    saved = [getattr(owner, name) for owner, name, _ in switches]
    for owner, name, strict in switches:
        setattr(owner, name, strict)
    try:
        yield
    finally:
        for (owner, name, _), value in zip(switches, saved):
            setattr(owner, name, value)


def autocast(device: torch.device, amp: bool = True) -> contextlib.AbstractContextManager:
    """The arithmetic :func:`precision_of` names, as a context.

    bfloat16 autocast on CUDA when ``amp``; on CUDA without it, TF32 is switched off for the duration (PyTorch
    enables it for cuDNN convolutions by default), so ``"fp32"`` means the same arithmetic on every device.
    A no-op on CPU.
    """
    if precision_of(device, amp) == "bf16-amp":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda":
        return _strict_fp32()
    return contextlib.nullcontext()

"""Device selection and the numeric settings that go with it (AMP, channels_last on CUDA)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["resolve_device", "autocast", "precision_of"]


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


def precision_of(device: torch.device, amp: bool = True) -> str:
    """Name of the arithmetic used on ``device``: ``"bf16-amp"`` on CUDA with AMP, else ``"fp32"``."""
    return "bf16-amp" if amp and device.type == "cuda" else "fp32"


@contextlib.contextmanager
def _strict_fp32() -> Iterator[None]:
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


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

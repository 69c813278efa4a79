"""Device resolution and the arithmetic each device runs (which is part of the cache key)."""

from __future__ import annotations

import pytest
import torch

from featurize.devices import autocast, precision_of, resolve_device


def test_auto_device_and_bad_strings():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")


def test_cuda_without_amp_runs_strict_fp32_and_restores_the_global_flags():
    """PyTorch enables TF32 cuDNN convolutions by default; "fp32" must not silently mean TF32 on CUDA."""
    cuda = torch.device("cuda")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        assert precision_of(cuda, amp=False) == "fp32"
        with autocast(cuda, amp=False):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_amp_only_changes_cuda():
    assert precision_of(torch.device("cuda"), amp=True) == "bf16-amp"
    assert precision_of(torch.device("cpu"), amp=True) == "fp32"
    with autocast(torch.device("cpu"), amp=True):
        assert not torch.is_autocast_enabled()

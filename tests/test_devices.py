"""Device resolution and the arithmetic each device runs (which is part of the cache key)."""

from __future__ import annotations

import pytest
import torch

from featurize.devices import autocast, precision_of, resolve_device

NEW_API = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def test_auto_device_and_bad_strings():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")


@pytest.fixture()
def tf32_on():
    """TF32 enabled the way a user would (PyTorch's default for cuDNN convolutions), restored afterwards."""
    if NEW_API:
        owners = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
        saved = [o.fp32_precision for o in owners]
        for o in owners:
            o.fp32_precision = "tf32"
        yield lambda: [o.fp32_precision for o in owners]
        for o, value in zip(owners, saved):
            o.fp32_precision = value
    else:
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        yield lambda: [torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32]
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_cuda_without_amp_runs_strict_fp32_and_restores_the_settings(tf32_on):
    """"fp32" must not silently mean TF32 on CUDA, whichever TF32 API the user set."""
    cuda = torch.device("cuda")
    before = tf32_on()
    assert precision_of(cuda, amp=False) == "fp32"
    with autocast(cuda, amp=False):
        assert tf32_on() == (["ieee", "ieee"] if NEW_API else [False, False])
    assert tf32_on() == before


def test_amp_only_changes_cuda():
    assert precision_of(torch.device("cuda"), amp=True) == "bf16-amp"
    assert precision_of(torch.device("cpu"), amp=True) == "fp32"
    with autocast(torch.device("cpu"), amp=True):
        assert not torch.is_autocast_enabled()

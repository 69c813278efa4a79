"""The behavioural checks of tests/test_finetune.py catch the faults they guard against.

Each case plants one fault with ``monkeypatch`` (the head's learning rate forced to 0, early stopping's restore made
a no-op, the seed ignored) and asserts that the matching ``check_*`` then fails.  The faults are a fixed (seeded)
list, so CI measures the suite's strength, not only the code's.
"""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.finetune import FineTunedCNN
from classifiers.training import EarlyStopping, Optimisation
from conftest import make_two_class_images
from test_finetune import SEEDED, check_learns, check_restores_best, check_seeds


def _head_lr_zero(monkeypatch) -> None:
    original = Optimisation.optimizer_for

    def frozen_head(self, head_params, backbone_params, depths=None):
        opt = original(self, head_params, backbone_params, depths)
        opt.param_groups[0]["lr"] = 0.0
        return opt

    monkeypatch.setattr(Optimisation, "optimizer_for", frozen_head)


def _restore_noop(monkeypatch) -> None:
    monkeypatch.setattr(EarlyStopping, "restore", lambda self, net: None)


def _seed_ignored(monkeypatch) -> None:
    monkeypatch.setattr(FineTunedCNN, "_seed", lambda self: 0)


@pytest.fixture(scope="module")
def small():
    images, labels = make_two_class_images(12)
    keep = np.r_[0:8, 12:20]
    return images[keep], np.array(["ants", "bees"])[labels[keep]]


FAULTS = {
    "head lr 0 (precomputed)": (_head_lr_zero, lambda data: check_learns(precompute=True), "reached only"),
    "head lr 0 (forward)": (_head_lr_zero, lambda data: check_learns(precompute=False), "reached only"),
    "restore is a no-op": (_restore_noop, lambda data: check_restores_best(*data), "kept weights' validation loss"),
    **{
        f"seed ignored ({name})": (
            _seed_ignored, lambda data, name=name: check_seeds(*data, **SEEDED[name]), "gave random_state=0's model"
        )
        for name in SEEDED
    },
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_check_catches_planted_fault(fault, small, monkeypatch):
    plant, check, message = FAULTS[fault]
    plant(monkeypatch)
    with pytest.raises(AssertionError, match=message):
        check(small)

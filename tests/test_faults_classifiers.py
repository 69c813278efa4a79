"""The behavioural checks of tests/test_finetune.py and tests/test_decisions.py catch the faults they guard against.

Each case plants one fault with ``monkeypatch`` (the head's learning rate forced to 0, early stopping's restore made
a no-op, the seed ignored, the inner CV unstratified, early-stopping patience carried from one phase to the next)
and asserts that the matching ``check_*`` then fails.  The faults are a fixed (seeded) list, so CI measures the
suite's strength, not only the code's.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold

from classifiers import heads
from classifiers.finetune import FineTunedCNN
from classifiers.training import EarlyStopping, Optimisation
from conftest import make_two_class_images
from test_decisions import check_inner_cv_is_stratified, check_patience_counts_per_phase
import test_recipe
import test_training
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


def _unstratified_inner_cv(monkeypatch) -> None:
    monkeypatch.setattr(heads, "StratifiedKFold", KFold)


def _patience_carried(monkeypatch) -> None:
    """``start_phase`` sets the new patience but keeps every other piece of state (the wait counter among them),
    whatever the attributes are called."""
    original = EarlyStopping.start_phase

    def carried(self, patience):
        before = dict(vars(self))
        original(self, patience)
        for key, value in before.items():
            if getattr(self, key) is not value and getattr(self, key) is not patience:
                setattr(self, key, value)

    monkeypatch.setattr(EarlyStopping, "start_phase", carried)


@pytest.fixture(scope="module")
def small():
    images, labels = make_two_class_images(12)
    keep = np.r_[0:8, 12:20]
    return images[keep], np.array(["ants", "bees"])[labels[keep]]


FAULTS = {
    "head lr 0 (precomputed)": (_head_lr_zero, lambda data: check_learns(precompute=True), "reached only"),
    "head lr 0 (forward)": (_head_lr_zero, lambda data: check_learns(precompute=False), "reached only"),
    "restore is a no-op": (_restore_noop, lambda data: check_restores_best(*data), "kept weights' validation loss"),
    "inner CV not stratified (KFold)": (_unstratified_inner_cv, lambda data: check_inner_cv_is_stratified(),
                                        "test fold"),
    "patience carried across phases": (_patience_carried, lambda data: check_patience_counts_per_phase(),
                                       "patience carried over"),
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


# ---------------------------------------------------------------------------------------------- the recipe (issue 26)
def _probe_never_wins(monkeypatch) -> None:
    from classifiers.candidates import Candidates

    monkeypatch.setattr(Candidates, "_probe_scores", lambda self, probe, head_in, val_idx: (float("inf"), 0.0))


def _one_view_only(monkeypatch) -> None:
    from classifiers import batches

    real = batches.view_batches
    monkeypatch.setattr(batches, "view_batches", lambda views, *a, **k: real(views[:1], *a, **k))


def _refit_caps_the_total_only(monkeypatch) -> None:
    from classifiers import training

    real = training._phase_caps
    monkeypatch.setattr(training, "_phase_caps", lambda phases, cap: real(
        phases, sum(cap) if cap is not None and not isinstance(cap, int) else cap))


def _recipe_data(two_class_arrays):
    images, labels = two_class_arrays
    keep = np.r_[0:10, 12:22]
    return images[keep], np.array(["ants", "bees"])[labels[keep]]


RECIPE_FAULTS = {
    "the probe is never kept": (
        _probe_never_wins, lambda data, mp: test_recipe.check_probe_kept_when_validation_prefers_it(*data)),
    "one augmented view only": (
        _one_view_only,
        lambda data, mp: test_recipe.test_augmented_views_are_computed_once_and_drawn_per_epoch(data, mp)),
    "the refit caps the total epochs only": (
        _refit_caps_the_total_only,
        lambda data, mp: test_training.test_a_refit_repeats_the_epochs_each_phase_reached_not_just_their_total()),
}
"""The recipe's behavioural checks (tests/test_recipe.py, tests/test_training.py), each with the fault it catches."""


@pytest.mark.parametrize("fault", list(RECIPE_FAULTS))
def test_recipe_check_catches_planted_fault(fault, monkeypatch, two_class_arrays):
    plant, check = RECIPE_FAULTS[fault]
    plant(monkeypatch)
    with pytest.raises(AssertionError):
        check(_recipe_data(two_class_arrays), monkeypatch)

"""FineTunedCNN: sklearn contract, freezing, BatchNorm, determinism, precomputed head, persistence, errors."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from classifiers import training
from conftest import make_two_class_images
from classifiers.finetune import FineTunedCNN
from featurize.backbones import get_backbone_spec
from featurize.backbones import load_model, resolve_weights

FAST = dict(weights=None, epochs=1, min_steps=0, batch_size=32, device="cpu", validation_fraction=None, random_state=0,
            head_init="random", augment="none")


@pytest.fixture(scope="module")
def small(two_class_arrays):
    """8 images per class (16) with string labels."""
    images, labels = two_class_arrays
    keep = np.r_[0:8, 12:20]
    return images[keep], np.array(["ants", "bees"])[labels[keep]]


@pytest.fixture(scope="module")
def fitted(small):
    X, y = small
    return FineTunedCNN(backbone="resnet18", image_size=32, **FAST).fit(X, y)


def test_clone_get_params_pickle(fitted, small):
    X, _ = small
    params = fitted.get_params()
    assert clone(fitted).get_params() == params
    assert not hasattr(clone(fitted), "model_")
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))


def test_fitted_attributes_and_shapes(fitted, small, image_folder):
    X, y = small
    proba = fitted.predict_proba(X)
    assert proba.shape == (16, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert set(fitted.predict(X)) <= {"ants", "bees"}
    assert list(fitted.classes_) == ["ants", "bees"]
    assert 0.0 <= fitted.score(X, y) <= 1.0
    assert fitted.training_path_ == "precomputed"
    assert fitted.n_epochs_ == fitted.best_epoch_ == 1 == len(fitted.history_)
    columns = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "time_s", "lr"}
    assert columns <= set(fitted.history_[0])
    assert fitted.weights_.pretrained is False and "RANDOM" in fitted.weights_.label
    assert next(fitted.model_.parameters()).device.type == "cpu"
    _, paths, _ = image_folder
    assert fitted.predict_proba(paths[:3]).shape == (3, 2)


# (backbone, strategy, cut, extra params, prefixes of the state-dict entries that must change; None = all)
FREEZE_CASES = [
    ("resnet18", "head", None, {}, ()),
    ("resnet18", "head", None, {"precompute": False}, ()),
    ("resnet18", "last_block", None, {}, ("layer4.",)),
    ("resnet18", "last:2", None, {}, ("layer3.", "layer4.")),
    ("resnet18", "full", None, {}, None),
    ("vgg11", "last_block", None, {}, ("classifier.0.", "classifier.3.")),
    ("vgg11_bn", "last_block", "pool4", {}, ("features.15.", "features.16.", "features.18.", "features.19.")),
]


@functools.lru_cache(maxsize=None)
def _initial_state(backbone: str) -> dict[str, torch.Tensor]:
    spec = get_backbone_spec(backbone)
    return load_model(spec, resolve_weights(spec, None, random_state=0)).state_dict()


BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.mark.parametrize("bn", ["train", "frozen"])
@pytest.mark.parametrize("backbone, strategy, cut, extra, trainable", FREEZE_CASES)
def test_frozen_parts_unchanged(small, backbone, strategy, cut, extra, trainable, bn):
    """Frozen parameters and BatchNorm statistics stay bit-equal; trainable ones move, and so do their running
    statistics with ``bn="train"`` only (``bn="frozen"`` keeps every BatchNorm in eval mode)."""
    X, y = small
    params = {**FAST, "image_size": 32, "optimizer": "sgd", "lr": 0.05, "bn": bn, **extra}
    clf = FineTunedCNN(backbone=backbone, strategy=strategy, cut=cut, **params).fit(X, y)
    before = _initial_state(backbone)
    after = clf.model_.state_dict()
    head = clf.adaptation_.head + "."
    compared = [k for k in after if k in before and not k.startswith(head) and before[k].shape == after[k].shape]
    assert compared
    for key in compared:
        moves = (trainable is None or key.startswith(trainable)) and not (
            bn == "frozen" and key.rpartition(".")[2] in BN_STATISTICS)
        assert torch.equal(before[key], after[key]) != moves, f"{key} {'did not change' if moves else 'changed'}"
    assert all(not p.requires_grad for p in clf.model_.parameters())


def test_deterministic_with_random_state(small):
    X, y = small
    params = dict(backbone="resnet18", strategy="last_block", image_size=32, **{**FAST, "augment": "flip_crop"})
    params["batch_size"] = 8
    a = FineTunedCNN(**params).fit(X, y).predict_proba(X)
    b = FineTunedCNN(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backbone, size", [("resnet18", 32), ("vgg11", 32)])
def test_precomputed_head_equals_forward(small, backbone, size):
    """Training the head on precomputed activations = training it through the frozen network."""
    X, y = small
    params = dict(backbone=backbone, strategy="head", image_size=size, optimizer="sgd", lr=0.05, **FAST)
    cached = FineTunedCNN(precompute=True, **params).fit(X, y)
    forward = FineTunedCNN(precompute=False, **params).fit(X, y)
    assert (cached.training_path_, forward.training_path_) == ("precomputed", "forward")
    head = cached.adaptation_.head
    for name in ("weight", "bias"):
        np.testing.assert_allclose(
            cached.model_.get_submodule(head).get_parameter(name).numpy(),
            forward.model_.get_submodule(head).get_parameter(name).numpy(),
            rtol=1e-4, atol=1e-6,
        )
    np.testing.assert_allclose(cached.predict_proba(X), forward.predict_proba(X), atol=1e-5)
    assert cached.history_[0]["train_loss"] == pytest.approx(forward.history_[0]["train_loss"], rel=1e-4)


def test_cache_directory_uses_featurizer(small, tmp_path):
    """With ``cache``, head inputs come from CNNFeaturizer (stored on disk) and give the in-memory result."""
    X, y = small
    params = dict(backbone="resnet18", image_size=32, optimizer="sgd", lr=0.05, **FAST)
    on_disk = FineTunedCNN(cache=tmp_path, **params).fit(X, y)
    in_memory = FineTunedCNN(**params).fit(X, y)
    assert list(tmp_path.glob("*.h5"))
    np.testing.assert_allclose(on_disk.predict_proba(X), in_memory.predict_proba(X), atol=1e-5)


def test_freeze_epochs_mixup_and_discriminative_lr(small):
    X, y = small
    clf = FineTunedCNN(
        backbone="resnet18", strategy="last_block", freeze_epochs=1, image_size=32,
        lr=1e-3, lr_ratio=0.1, schedule="constant", **{**FAST, "batch_size": 8, "augment": "flip_crop+mixup"},
    ).fit(X, y)
    assert [h["phase"] for h in clf.history_] == ["frozen", "last_block"]
    assert np.isnan(clf.history_[0]["lr_backbone"])
    assert clf.history_[1]["lr_backbone"] == pytest.approx(1e-4)


def test_early_stopping_restores_best(small):
    X, y = small
    clf = FineTunedCNN(
        backbone="resnet18", image_size=32, lr=0.5, epochs=30, patience=2, validation_fraction=0.25, refit=False,
        **{k: v for k, v in FAST.items() if k not in ("epochs", "validation_fraction")},
    ).fit(X, y)
    val = [h["val_loss"] for h in clf.history_]
    assert len(val) == clf.n_epochs_ <= 30
    assert val[clf.best_epoch_ - 1] == min(val)
    assert clf.n_epochs_ == 30 or clf.n_epochs_ - clf.best_epoch_ == 2


@pytest.mark.parametrize("backbone, cut, size", [("resnet18", "layer3", 32), ("vgg11", "conv4_2", 32)])
def test_save_load_round_trip(small, tmp_path, backbone, cut, size):
    X, y = small
    clf = FineTunedCNN(backbone=backbone, cut=cut, strategy="last_block", image_size=size, **FAST).fit(X, y)
    path = tmp_path / "model.pt"
    clf.save(path)
    loaded = FineTunedCNN.load(path)
    assert loaded.get_params() == clf.get_params()
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    pd.testing.assert_frame_equal(pd.DataFrame(loaded.history_), pd.DataFrame(clf.history_))
    assert loaded.weights_ == clf.weights_ and loaded.best_epoch_ == clf.best_epoch_
    assert (loaded.selected_epochs_, loaded.n_steps_) == (clf.selected_epochs_, clf.n_steps_)
    assert np.isnan(loaded.validation_score_) and np.isnan(clf.validation_score_)


@pytest.mark.parametrize("validation_fraction", [None, 0.25])
def test_min_steps_raises_the_epochs_of_each_phase(small, validation_fraction):
    """16 images, batch 32: one step per epoch, so epochs=2 with min_steps=7 runs 7 epochs of one step."""
    X, y = small
    params = {**FAST, "epochs": 2, "min_steps": 7, "validation_fraction": validation_fraction, "patience": None,
              "refit": False}
    clf = FineTunedCNN(backbone="resnet18", image_size=32, **params).fit(X, y)
    assert clf.n_epochs_ == len(clf.history_) == 7
    assert all(h["steps"] == 1 for h in clf.history_)
    assert clf.n_steps_ == clf.selected_epochs_
    frozen = FineTunedCNN(backbone="resnet18", strategy="last_block", freeze_epochs=1, image_size=32,
                          **{**params, "min_steps": 3, "batch_size": 8, "validation_fraction": None}).fit(X, y)
    assert [h["phase"] for h in frozen.history_] == ["frozen"] * 2 + ["last_block"] * 2
    assert frozen.n_steps_ == 8


@pytest.mark.parametrize("strategy, precompute, path", [("head", True, "precomputed"), ("last_block", True, "suffix"),
                                                        ("last_block", False, "forward")])
def test_refit_trains_on_all_images_from_the_same_start(small, strategy, precompute, path):
    """The refit = a fresh fit on every image for ``selected_epochs_`` epochs (constant schedule: same lr path)."""
    X, y = small
    params = dict(backbone="resnet18", strategy=strategy, image_size=32, schedule="constant", optimizer="sgd",
                  lr=0.05, precompute=precompute, **{**FAST, "epochs": 4, "batch_size": 4})
    clf = FineTunedCNN(**{**params, "validation_fraction": 0.25, "patience": None, "refit": True}).fit(X, y)
    assert clf.training_path_ == path
    runs = [h["run"] for h in clf.history_]
    assert runs == ["select"] * 4 + ["refit"] * clf.selected_epochs_
    select = [h for h in clf.history_ if h["run"] == "select"]
    refit = [h for h in clf.history_ if h["run"] == "refit"]
    assert {h["steps"] for h in select} == {3} and {h["steps"] for h in refit} == {4}, "12 then 16 images, batch 4"
    best = min(select, key=lambda h: h["val_loss"])
    assert clf.selected_epochs_ == best["epoch"] == clf.best_epoch_
    assert clf.validation_score_ == best["val_accuracy"]
    assert clf.n_steps_ == 4 * clf.selected_epochs_
    fresh = FineTunedCNN(**{**params, "epochs": clf.selected_epochs_}).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), fresh.predict_proba(X))


def test_without_refit_keeps_the_selection_run(small):
    X, y = small
    clf = FineTunedCNN(backbone="resnet18", image_size=32,
                       **{**FAST, "epochs": 3, "validation_fraction": 0.25, "refit": False}).fit(X, y)
    assert {h["run"] for h in clf.history_} == {"select"} and len(clf.history_) == clf.n_epochs_
    assert 0.0 <= clf.validation_score_ <= 1.0
    plain = FineTunedCNN(backbone="resnet18", image_size=32, **FAST).fit(X, y)
    assert {h["run"] for h in plain.history_} == {"train"} and np.isnan(plain.validation_score_)
    assert plain.selected_epochs_ == plain.n_epochs_ == 1


def test_default_budget_gives_a_tiny_training_set_enough_steps(small):
    """Defaults: min_steps=60 and a refit; with 16 images (one step per epoch) the phase runs 60 epochs."""
    X, y = small
    clf = FineTunedCNN(backbone="resnet18", image_size=32, weights=None, device="cpu", validation_fraction=None)
    assert (clf.min_steps, clf.refit) == (60, True)
    clf.fit(X, y)
    assert clf.n_steps_ == 60 and clf.n_epochs_ == 60


def test_nan_loss_names_epoch_and_learning_rate(small, monkeypatch):
    X, y = small
    monkeypatch.setattr(training, "loss", lambda logits, target: (logits * float("nan")).sum())
    with pytest.raises(FloatingPointError, match=r"epoch 1 .*[Ll]ower the learning rate"):
        FineTunedCNN(backbone="resnet18", strategy="last_block", image_size=32, **FAST).fit(X, y)


def test_huge_learning_rate_diverges(small):
    X, y = small
    with pytest.raises(FloatingPointError, match="learning rate"):
        FineTunedCNN(
            backbone="resnet18", strategy="full", image_size=32, lr=1e9, optimizer="sgd",
            **{**FAST, "epochs": 3, "batch_size": 4},
        ).fit(X, y)


@pytest.mark.parametrize(
    "params, fit_y, match",
    [
        ({}, "short", "16 images but y has 15"),
        ({}, "single", "one class"),
        ({"strategy": "partial"}, None, "strategy"),
        ({"strategy": "last:0"}, None, "strategy"),
        ({"strategy": "last:9"}, None, r"strategy.*\(5\)"),
        ({"augment": "cutmix"}, None, "flip_crop"),
        ({"cut": "layer9"}, None, "layer3"),
        ({"cut": "fc"}, None, "cut="),
        ({"schedule": "linear"}, None, "cosine"),
        ({"image_size": 8}, None, "image_size"),
        ({"backbone": "alexnet"}, None, "resnet18"),
        ({"validation_fraction": 0.95}, None, "validation_fraction"),
    ],
)
def test_bad_input(small, params, fit_y, match):
    X, y = small
    if fit_y == "short":
        y = y[:-1]
    elif fit_y == "single":
        y = np.full(len(y), "ants")
    with pytest.raises(ValueError, match=match):
        FineTunedCNN(**{**FAST, "image_size": 32, **params}).fit(X, y)


class TabularAsImages(FineTunedCNN):
    """sklearn's checks feed 2-D numeric tables: each row becomes a 32×32 RGB image, then FineTunedCNN does the rest.

    Only the input conversion (with sklearn's own ``validate_data``) is added; parameters, fitting, prediction and
    fitted state are FineTunedCNN's.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array, tags.input_tags.three_d_array = True, False
        return tags

    def _images(self, X, reset: bool) -> np.ndarray:
        from sklearn.utils.validation import validate_data

        X = validate_data(self, X, reset=reset, dtype=np.float64)
        tiled = np.tile(X, (1, -(-32 * 32 * 3 // X.shape[1])))[:, : 32 * 32 * 3]
        return np.clip(128 + 16 * tiled, 0, 255).astype(np.uint8).reshape(-1, 32, 32, 3)

    def fit(self, X, y):
        from sklearn.utils.multiclass import check_classification_targets

        images = self._images(X, reset=True)
        check_classification_targets(y)
        return super().fit(images, y)

    def predict_proba(self, X):
        check_is_fitted(self)
        return super().predict_proba(self._images(X, reset=False))

    def predict(self, X):
        check_is_fitted(self)
        return super().predict(self._images(X, reset=False))


# Head-only training on cached activations: the 10 epochs cost little next to the one forward pass.
TINY = dict(weights=None, image_size=32, epochs=10, lr=0.05, min_steps=0, batch_size=64, validation_fraction=None,
            device="cpu", random_state=0)
EXPECTED_FAILURES = {
    "check_methods_subset_invariance": "float32 convolutions differ by ~1e-7 between batch sizes; the check wants "
                                       "rtol=1e-7",
}


@parametrize_with_checks([TabularAsImages(**TINY)], expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------------- behaviour
# Each check_* asserts one behaviour the estimator must have; tests/test_faults_classifiers.py plants the fault each
# one guards against and asserts that the check then fails.
LEARN = dict(backbone="resnet18", weights=None, strategy="head", image_size=32, epochs=30, min_steps=0, lr=0.01,
             batch_size=8, validation_fraction=None, device="cpu", random_state=0)


def separable_split(n_per_class: int = 16, seed: int = 5):
    """Stripes vs a bright disc, 40×40 px, split half/half (every other image): train X, y, test X, y."""
    X, y = make_two_class_images(n_per_class, size=(40, 40), seed=seed)
    train = np.arange(len(y)) % 2 == 0
    return X[train], y[train], X[~train], y[~train]


def check_learns(**params) -> None:
    """Fine-tuning takes held-out accuracy from chance (untrained head) to >= 0.9."""
    X, y, X_test, y_test = separable_split()
    untrained = FineTunedCNN(**{**LEARN, **params, "lr": 1e-12}).fit(X, y).score(X_test, y_test)
    assert untrained <= 0.7, f"premise: the untrained head is near chance, got {untrained:.2f}"
    score = FineTunedCNN(**{**LEARN, **params}).fit(X, y).score(X_test, y_test)
    assert score >= 0.9, f"fine-tuning reached only {score:.2f} held-out accuracy (n={len(y_test)})"


def check_restores_best(X, y) -> None:
    """Without refit, the kept weights give the lowest validation loss of the history, not the last one.

    Labels are shuffled (seeded) so that the validation loss goes up and down instead of falling to 0.
    """
    y = y[np.random.default_rng(0).permutation(len(y))]
    clf = FineTunedCNN(backbone="resnet18", image_size=32, lr=0.1, patience=None, refit=False,
                       **{**FAST, "epochs": 8, "batch_size": 4, "validation_fraction": 0.25}).fit(X, y)
    val_losses = [h["val_loss"] for h in clf.history_]
    assert clf.best_epoch_ < len(val_losses), "premise: the last epoch is not the best one"
    val = clf.validation_indices_
    proba = clf.predict_proba(X[val])
    codes = np.searchsorted(clf.classes_, y[val])
    kept = -np.mean(np.log(proba[np.arange(len(val)), codes]))
    assert kept == pytest.approx(min(val_losses), rel=1e-4), f"kept weights' validation loss {kept} {val_losses}"
    assert kept < val_losses[-1]


SEEDED = {
    "head-refit": dict(strategy="head", validation_fraction=0.25, refit=True, epochs=3),
    "last_block-flip_crop": dict(strategy="last_block", augment="flip_crop", batch_size=8),
}


def check_seeds(X, y, **params) -> None:
    """Same random_state: bit-identical probabilities; another random_state: another model."""
    params = dict(backbone="resnet18", image_size=32, **{**FAST, **params})
    a = FineTunedCNN(**params).fit(X, y)
    b = FineTunedCNN(**params).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    other = FineTunedCNN(**{**params, "random_state": 1}).fit(X, y)
    assert not np.allclose(other.predict_proba(X), a.predict_proba(X)), "random_state=1 gave random_state=0's model"


@pytest.mark.parametrize("precompute", [True, False])
def test_fine_tuning_learns(precompute):
    check_learns(precompute=precompute)


def test_early_stopping_keeps_the_best_validation_weights(small):
    check_restores_best(*small)


@pytest.mark.parametrize("config", list(SEEDED))
def test_seeds_matter(small, config):
    check_seeds(*small, **SEEDED[config])


def test_mixup_fit_does_not_depend_on_the_number_of_loader_workers(two_class_arrays):
    """MixUp draws from the global RNG; the loaders must not consume it differently with or without workers."""
    images, labels = two_class_arrays
    X, y = images[:16], labels[:16]
    probas = [FineTunedCNN("resnet18", weights=None, strategy="last_block", augment="flip_crop+mixup", image_size=32,
                           epochs=2, min_steps=0, batch_size=8, validation_fraction=None, device="cpu",
                           num_workers=workers, random_state=0).fit(X, y).predict_proba(X) for workers in (0, 1)]
    np.testing.assert_array_equal(probas[0], probas[1])


def test_lr_decay_gives_each_unfrozen_stage_its_rate(two_class_arrays, monkeypatch):
    """strategy='full' with lr_decay: layer4 at the backbone lr, layer3 at × decay, …, the stem at × decay^4."""
    from classifiers import training

    seen = []
    real = training.Optimisation.optimizer_for

    def recording(self, head_params, backbone_params, depths=None):
        opt = real(self, head_params, backbone_params, depths)
        seen.append([g["lr"] for g in opt.param_groups])
        return opt

    monkeypatch.setattr(training.Optimisation, "optimizer_for", recording)
    images, labels = two_class_arrays
    FineTunedCNN("resnet18", weights=None, strategy="full", image_size=32, epochs=1, min_steps=0, batch_size=8,
                 lr=1e-2, lr_ratio=0.1, lr_decay=0.5, freeze_epochs=0, validation_fraction=None, device="cpu",
                 random_state=0).fit(images[np.r_[0:4, 12:16]], labels[np.r_[0:4, 12:16]])
    assert seen and seen[-1] == pytest.approx([1e-2, 1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5])

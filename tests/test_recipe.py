"""The fine-tuning recipe: the linear probe written into the head, the probe kept when the inner validation prefers it,
learning-rate candidates recorded, cached inputs of the first trainable stage = the forward path; on the course's real
photos, LP-FT with EfficientNet-Lite0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from torch import nn

from classifiers.finetune import FineTunedCNN
from classifiers.heads import default_grid
from classifiers.probe import fit_probe
from featurize import get_backbone_spec, load_model, resolve_weights

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data"
photos = pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason="the course photos are not beside this checkout")
BASE = dict(weights=None, image_size=32, epochs=2, min_steps=0, batch_size=8, device="cpu", augment="none",
            random_state=0)


@pytest.fixture(scope="module")
def data(two_class_arrays):
    images, labels = two_class_arrays
    keep = np.r_[0:10, 12:22]
    return images[keep], np.array(["ants", "bees"])[labels[keep]]


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_probe_head_gives_the_tuned_logistic_regressions_probabilities(n_classes):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), 12)
    X = rng.normal(size=(len(y), 20)) * rng.uniform(0.1, 5, 20) + 3 * np.eye(n_classes, 20)[y] + 7
    probe = fit_probe(torch.as_tensor(X, dtype=torch.float32), y, n_classes, random_state=0)
    head = nn.Linear(20, n_classes)
    probe.load_into(head)
    with torch.no_grad():
        ours = torch.softmax(head(torch.as_tensor(X, dtype=torch.float32)).double(), 1).numpy()
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    search = GridSearchCV(LogisticRegression(max_iter=10_000, random_state=0),
                          {"C": default_grid("logistic")["clf__C"]}, scoring="neg_log_loss", cv=cv).fit(X, y)
    np.testing.assert_allclose(ours, search.predict_proba(X), atol=1e-4)
    assert probe.C == search.best_params_["C"] and probe.cv_log_loss == pytest.approx(-search.best_score_)


def check_probe_kept_when_validation_prefers_it(X, y) -> None:
    """A learning rate that wrecks the network: the probe's validation loss is lower, the probe is kept, and the
    refitted model is the pretrained backbone with the probe fitted on every image as its head."""
    est = FineTunedCNN("resnet18", strategy="last_block", optimizer="sgd", lr=1.0, lr_ratio=1.0, patience=None,
                       validation_fraction=0.25, **BASE).fit(X, y)
    probe, tuned = est.candidates_
    assert probe["candidate"] == "probe" and tuned["candidate"] == "finetune"
    assert probe["val_loss"] < tuned["val_loss"], f"premise: fine-tuning at lr=1 is worse {est.candidates_}"
    assert probe["chosen"] and not tuned["chosen"], est.candidates_
    assert est.chosen_["candidate"] == "probe" and est.selected_epochs_ == 0 and est.n_steps_ == 0
    spec = get_backbone_spec("resnet18")
    initial = load_model(spec, resolve_weights(spec, None, 0)).state_dict()
    state = est.model_.state_dict()
    assert all(torch.equal(initial[k], state[k]) for k in initial if not k.startswith("fc."))


def test_the_probe_is_kept_when_the_inner_validation_prefers_it(data):
    check_probe_kept_when_validation_prefers_it(*data)


def test_learning_rate_candidates_are_tried_and_the_choice_recorded(data):
    X, y = data
    est = FineTunedCNN("resnet18", strategy="last_block", lr_candidates=(1e-3, 1e-2), patience=None,
                       validation_fraction=0.25, **BASE).fit(X, y)
    assert [c["candidate"] for c in est.candidates_] == ["probe", "finetune", "finetune"]
    assert [c["lr"] for c in est.candidates_[1:]] == [1e-3, 1e-2]
    losses = [c["val_loss"] for c in est.candidates_]
    assert [c["chosen"] for c in est.candidates_] == [i == int(np.argmin(losses)) for i in range(3)]
    chosen = est.candidates_[int(np.argmin(losses))]
    assert est.chosen_["candidate"] == chosen["candidate"] and est.selected_epochs_ == chosen["epochs"]
    assert np.isnan(est.chosen_["lr"]) if chosen["candidate"] == "probe" else est.chosen_["lr"] == chosen["lr"]
    assert est.validation_score_ == chosen["val_accuracy"] and np.isfinite(est.chosen_["probe_C"])
    select = [h for h in est.history_ if h["run"] == "select"]
    assert [h["candidate_lr"] for h in select] == [1e-3, 1e-3, 1e-2, 1e-2]
    refit = [h for h in est.history_ if h["run"] == "refit"]
    assert len(refit) == est.selected_epochs_ and {h["candidate_lr"] for h in refit} <= {est.chosen_["lr"]}


@pytest.mark.parametrize("backbone, strategy", [("resnet18", "last_block"), ("vgg11_bn", "last_block"),
                                                ("resnet18", "last:2"), ("efficientnet_lite0", "last_block")])
def test_cached_inputs_of_the_first_trainable_stage_give_the_weights_of_the_forward_path(data, backbone, strategy):
    X, y = data
    params = dict(strategy=strategy, head_init="random", bn="train", validation_fraction=None, **BASE)
    cached = FineTunedCNN(backbone, precompute=True, **params).fit(X, y)
    forward = FineTunedCNN(backbone, precompute=False, **params).fit(X, y)
    assert (cached.training_path_, forward.training_path_) == ("suffix", "forward")
    initial = load_model(get_backbone_spec(backbone), resolve_weights(get_backbone_spec(backbone), None, 0))
    a, b, start = cached.model_.state_dict(), forward.model_.state_dict(), initial.state_dict()
    assert a.keys() == b.keys()
    moved = [k for k in a if k in start and a[k].shape == start[k].shape and not torch.equal(a[k], start[k])]
    assert moved, "premise: training changed some weights"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)
    np.testing.assert_allclose(cached.predict_proba(X), forward.predict_proba(X), atol=1e-5)


def test_a_network_whose_frozen_part_cannot_be_skipped_trains_on_images(data):
    X, y = data
    est = FineTunedCNN("timm:vit_tiny_patch16_224", strategy="last_block", head_init="random",
                       validation_fraction=None, **BASE).fit(X, y)
    assert est.training_path_ == "forward"


def test_augment_auto_means_flip_crop_when_stages_train_and_none_for_the_head():
    est = FineTunedCNN("resnet18")
    assert (est.augment_policy(0), est.augment_policy(1)) == ("none", "flip_crop")
    assert FineTunedCNN("resnet18", augment="strong").augment_policy(0) == "strong"


def _photos(split: str) -> tuple[list[Path], np.ndarray]:
    paths = [p for p in sorted((HYMENOPTERA / split).glob("*/*")) if p.suffix != ".gif"]
    return paths, np.array([p.parent.name for p in paths])


@photos
def test_the_lite0_probe_on_5_photos_per_class_generalises_without_saturating(tmp_path):
    """The probe on raw pre-logits (not standardised by ten images' deviations, which sends logits to ±2,600 on
    these photos): ≥ 0.90 on the 153 val photos with logits within ±30."""
    from featurize import CNNFeaturizer

    train, y = _photos("train")
    rng = np.random.default_rng(2)
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in ("ants", "bees")])
    val, y_val = _photos("val")
    features = CNNFeaturizer("efficientnet_lite0", layers="pre_logits", weights="DEFAULT", cache=tmp_path).fit()
    X = torch.as_tensor(features.transform([*[train[i] for i in pick], *val]))
    codes = (y[pick] == "bees").astype(int)
    probe = fit_probe(X[: len(pick)], codes, 2, random_state=0)
    logits = X[len(pick):] @ probe.weight.T + probe.bias
    accuracy = float((logits.argmax(1).numpy() == (y_val == "bees")).mean())
    assert accuracy >= 0.90 and float(logits.abs().max()) < 30, (accuracy, float(logits.abs().max()))


@photos
def test_lite0_full_fine_tuning_at_5_images_per_class_keeps_above_0_80():
    """LP-FT with frozen BatchNorm statistics and flip + crop, 20 steps, one draw, scored on the 153 val photos."""
    train, y = _photos("train")
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in ("ants", "bees")])
    est = FineTunedCNN("efficientnet_lite0", strategy="full", epochs=1, min_steps=20, validation_fraction=None,
                       device="cpu", random_state=0).fit([train[i] for i in pick], y[pick])
    val, y_val = _photos("val")
    accuracy = float((est.predict(val) == y_val).mean())
    assert est.training_path_ == "forward" and est.n_steps_ == 20
    assert accuracy >= 0.80, accuracy


@photos
def test_lite0_last_block_on_all_train_photos_reaches_0_93(tmp_path):
    """Every train photo, no augmentation (the cached-input path keeps CI short), the probe a candidate."""
    train, y = _photos("train")
    est = FineTunedCNN("efficientnet_lite0", strategy="last_block", augment="none", epochs=3, min_steps=0,
                       validation_fraction=0.2, patience=None, device="cpu", cache=tmp_path,
                       random_state=0).fit(train, y)
    val, y_val = _photos("val")
    accuracy = float((est.predict(val) == y_val).mean())
    assert est.training_path_ == "suffix"
    assert accuracy >= 0.93, (accuracy, est.candidates_)


def test_augmented_views_are_computed_once_and_drawn_per_epoch(data, monkeypatch):
    """With flip + crop and precompute, the frozen part runs on ``augment_views`` views of every image once (not every
    epoch); each epoch draws one view per image, seeded: the same ``random_state`` gives the same model."""
    from classifiers import batches, inputs

    X, y = data
    passes, picks = [], []
    real_views, real_batches = inputs.inputs_of, batches.view_batches

    def counting(model, paths, batches, device):
        passes.append(list(paths))
        return real_views(model, paths, batches, device)

    def recording(views, indices, batch_size, generator=None):
        batches = real_batches(views, indices, batch_size, generator)

        def wrapped():
            for idx, x in batches():
                picks.append([int(torch.nonzero((views[:, i] == row).flatten(1).all(1))[0]) for i, row in zip(idx, x)])
                yield idx, x
        return wrapped

    monkeypatch.setattr(inputs, "inputs_of", counting)
    monkeypatch.setattr(inputs, "view_batches", recording)
    params = dict(strategy="last_block", head_init="random", validation_fraction=None,
                  **{**BASE, "augment": "flip_crop", "epochs": 6})
    est = FineTunedCNN("resnet18", augment_views=3, **params).fit(X, y)
    assert est.training_path_ == "suffix"
    assert len(passes) == 1 + 3, "one pass for the unaugmented inputs, one per view, none per epoch"
    assert {v for batch in picks for v in batch} == {0, 1, 2}, "every view is used"
    again = FineTunedCNN("resnet18", augment_views=3, **params).fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), again.predict_proba(X))
    fresh = FineTunedCNN("resnet18", augment_views=0, **params).fit(X, y)
    assert fresh.training_path_ == "forward"

"""FineTunedCNN on timm models: head by reset_classifier, stages from feature info / blocks, freezing, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from classifiers.finetune import FineTunedCNN  # noqa: E402
from classifiers.surgery import build_adapted, freeze_except  # noqa: E402
from featurize.backbones import get_backbone_spec  # noqa: E402
from featurize.backbones import load_model, resolve_weights  # noqa: E402

VIT, CONVNEXT = "timm:vit_tiny_patch16_224", "timm:convnext_atto"
FAST = dict(weights=None, epochs=1, min_steps=0, batch_size=8, device="cpu", validation_fraction=None, random_state=0)


@pytest.fixture(scope="module")
def small(two_class_arrays):
    images, labels = two_class_arrays
    keep = np.r_[0:6, 12:18]
    return images[keep], np.array(["ants", "bees"])[labels[keep]]


def _adapted(backbone: str, n_classes: int = 3):
    spec = get_backbone_spec(backbone)
    model = load_model(spec, resolve_weights(spec, None))
    return model, build_adapted(spec, model, None, n_classes)


def test_vit_head_is_reset_and_stages_are_the_blocks():
    model, adaptation = _adapted(VIT)
    assert adaptation.head == "head" and model.head.out_features == 3 and adaptation.feature_cut == "pre_logits"
    assert len(adaptation.stages) == 12
    assert adaptation.stages[0][:2] == ("cls_token", "pos_embed") and adaptation.stages[0][-1] == "blocks.0"
    assert adaptation.stages[5] == ("blocks.5",)
    assert adaptation.stages[-1] == ("blocks.11", "norm", "fc_norm", "head_drop")
    trainable = freeze_except(model, ["head", *adaptation.trainable(12)])
    assert len(trainable) == len(list(model.parameters())), "every parameter belongs to a stage or the head"


def test_convnext_and_resnet_stages_follow_feature_info():
    _, convnext = _adapted(CONVNEXT)
    assert convnext.head == "head.fc"
    assert convnext.stages[:3] == (("stem", "stages.0"), ("stages.1",), ("stages.2",))
    assert convnext.stages[3][0] == "stages.3" and "head.norm" in convnext.stages[3]
    _, resnet = _adapted("timm:resnet18.tv_in1k")
    assert resnet.head == "fc"
    assert [s[-1] for s in resnet.stages] == ["act1", "layer1", "layer2", "layer3", "global_pool"]


def test_cut_points_other_than_pre_logits_are_refused():
    with pytest.raises(ValueError, match="valid: None .* pre_logits"):
        FineTunedCNN(VIT, cut="blocks_5", **FAST).fit(np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 0, 1])


def test_finetuned_tiny_vit_trains_one_epoch_with_only_its_last_block_and_head(small):
    X, y = small
    spec = get_backbone_spec(VIT)
    initial = load_model(spec, resolve_weights(spec, None, random_state=0)).state_dict()
    model = FineTunedCNN(VIT, strategy="last_block", image_size=32, lr=1e-3, lr_ratio=0.1, **FAST).fit(X, y)
    assert model.n_epochs_ == 1 and model.training_path_ == "forward" and model.weights_.pretrained is False
    row = model.history_[0]
    assert np.isfinite(row["train_loss"]) and row["lr_backbone"] == pytest.approx(row["lr"] * 0.1)
    after = model.model_.state_dict()
    assert after["head.weight"].shape == (2, 192), "the 1000-class head was replaced by reset_classifier"
    changed = {k for k in initial if not k.startswith("head.") and not torch.equal(initial[k], after[k])}
    assert changed and all(k.startswith(("blocks.11.", "norm.")) for k in changed), sorted(changed)[:5]
    assert model.predict_proba(X).shape == (len(X), 2) and set(model.predict(X)) <= {"ants", "bees"}


def test_head_strategy_on_timm_is_precomputed_and_equals_the_forward_path(small):
    X, y = small
    params = dict(FAST, strategy="head", image_size=32, optimizer="sgd", lr=0.05, batch_size=32)
    pre = FineTunedCNN(CONVNEXT, **params).fit(X, y)
    fwd = FineTunedCNN(CONVNEXT, precompute=False, **params).fit(X, y)
    assert (pre.training_path_, fwd.training_path_) == ("precomputed", "forward")
    np.testing.assert_allclose(pre.predict_proba(X), fwd.predict_proba(X), rtol=1e-4, atol=1e-5)


def test_full_convnext_save_and_load_give_the_same_predictions(small, tmp_path):
    X, y = small
    model = FineTunedCNN(CONVNEXT, strategy="full", image_size=32, **FAST).fit(X, y)
    model.save(tmp_path / "convnext.pt")
    restored = FineTunedCNN.load(tmp_path / "convnext.pt")
    assert restored.adaptation_ == model.adaptation_ and restored.weights_ == model.weights_
    np.testing.assert_allclose(restored.predict_proba(X), model.predict_proba(X), rtol=1e-6, atol=1e-6)


def test_weights_dir_finds_a_timm_file_by_model_name(tmp_path):
    from featurize.cli import resolve_backbone_weights

    with pytest.raises(FileNotFoundError, match="convnext_atto.safetensors"):
        resolve_backbone_weights("timm:convnext_atto", "auto", str(tmp_path))
    (tmp_path / "convnext_atto.safetensors").write_bytes(b"x")
    assert resolve_backbone_weights("timm:convnext_atto", "auto", str(tmp_path)) == str(
        tmp_path / "convnext_atto.safetensors")


def test_compare_cut_map_reads_timm_names_with_colons():
    from pipelines.compare.cli import cut_map

    cuts = cut_map(["timm:vit_tiny_patch16_224:blocks_11", "resnet18:layer3", "penultimate"],
                   ["resnet18", "timm:vit_tiny_patch16_224"])
    assert cuts == {"*": ["penultimate"], "resnet18": ["layer3", "penultimate"],
                    "timm:vit_tiny_patch16_224": ["blocks_11", "penultimate"]}


def test_full_fine_tuning_of_a_tiny_vit_trains_its_tokens_and_position_embedding(small):
    """strategy='full' reaches stage 0, where a ViT's class token and position embedding are bare parameters."""
    X, y = small
    spec = get_backbone_spec(VIT)
    initial = load_model(spec, resolve_weights(spec, None, random_state=0)).state_dict()
    model = FineTunedCNN(VIT, strategy="full", image_size=32, lr=1e-3, **FAST).fit(X, y)
    after = model.model_.state_dict()
    assert not torch.equal(initial["pos_embed"], after["pos_embed"])
    assert not torch.equal(initial["cls_token"], after["cls_token"])
    assert not torch.equal(initial["blocks.0.attn.qkv.weight"], after["blocks.0.attn.qkv.weight"])

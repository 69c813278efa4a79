"""classifiers.surgery: cut points and new heads, stages, strategies, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classifiers.surgery import (
    build_adapted,
    check_strategy,
    freeze_except,
    set_train_mode,
    unfrozen_stages,
)
from featurize.backbones import get_backbone_spec, list_backbones
from featurize.families import FAMILIES


@pytest.mark.parametrize(
    "backbone, cut, head, in_features, n_stages",
    [
        ("resnet18", None, "fc", 512, 5),
        ("resnet18", "avgpool", "fc", 512, 5),
        ("resnet18", "layer2", "fc", 128, 3),
        ("resnet18", "conv1", "fc", 64, 1),
        ("vgg11", None, "classifier.6", 4096, 6),
        ("vgg11", "fc6", "classifier.3", 4096, 6),
        ("vgg11", "conv4_2", "classifier.0", 512, 4),
        ("vgg11", "pool5", "classifier.0", 512, 5),
    ],
)
def test_cut_points(backbone, cut, head, in_features, n_stages):
    spec = get_backbone_spec(backbone)
    with torch.device("meta"):
        model = spec.builder(weights=None)
        adaptation = build_adapted(spec, model, cut, 3)
        out = model(torch.empty(2, 3, 64, 64))
    assert out.shape == (2, 3)
    assert adaptation.head == head and model.get_submodule(head).in_features == in_features
    assert len(adaptation.stages) == n_stages


def test_every_listed_backbone_belongs_to_a_registered_family():
    assert {get_backbone_spec(name).family for name in list_backbones()} <= set(FAMILIES)


@pytest.mark.parametrize(
    "strategy, n_stages, expected",
    [("head", 5, 0), ("last_block", 5, 1), ("last:1", 5, 1), ("last:3", 5, 3), ("last:5", 5, 5), ("full", 5, 5),
     ("full", 6, 6)],
)
def test_unfrozen_stages(strategy, n_stages, expected):
    assert unfrozen_stages(strategy, n_stages) == expected
    check_strategy(strategy)


@pytest.mark.parametrize(
    "strategy, n_stages, match",
    [("partial", 5, "Unknown strategy"), ("last:0", 5, "k must be"), ("last:x", 5, "k must be"),
     ("last:6", 5, r"\(5\)"), (3, 5, "Unknown strategy")],
)
def test_bad_strategies(strategy, n_stages, match):
    with pytest.raises(ValueError, match=match):
        unfrozen_stages(strategy, n_stages)


def test_adaptation_trainable_paths_are_the_deepest_stages():
    spec = get_backbone_spec("resnet18")
    with torch.device("meta"):
        adaptation = build_adapted(spec, spec.builder(weights=None), "layer3", 2)
    assert adaptation.trainable(0) == []
    assert adaptation.trainable(1) == ["layer3"]
    assert adaptation.trainable(2) == ["layer2", "layer3"]
    assert adaptation.trainable(4) == ["conv1", "bn1", "layer1", "layer2", "layer3"]


def test_freeze_except_and_train_mode():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout(), nn.Linear(2, 2))
    params = freeze_except(net, ["1", "3"])
    assert {id(p) for p in params} == {id(p) for p in [*net[1].parameters(), *net[3].parameters()]}
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True, True, True]
    set_train_mode(net, ["1", "3"])
    assert [m.training for m in net] == [False, True, False, True]

"""Planted faults in the architecture analyses: each behavioural check of their tests must catch its fault."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from test_imagenet_probe import MeanBrightness, check_probe_numbers
from test_invariance import check_pooling_stability, check_translation_equivariance, smooth_image, tiny_net
from test_receptive_field import check_exact_fields, check_measured_equals_analytic

from featurize.backbones import get_backbone_spec
from reports.architecture import imagenet_probe, invariance, receptive_field


def test_the_checks_pass_without_faults():
    check_translation_equivariance(tiny_net(), smooth_image())
    check_pooling_stability(tiny_net(), smooth_image())
    check_probe_numbers(MeanBrightness())


def test_invariance_reporting_zero_error_is_caught(monkeypatch):
    monkeypatch.setattr(invariance, "_rel", lambda a, b: 0.0)
    with pytest.raises(AssertionError):
        check_translation_equivariance(tiny_net(), smooth_image())
    with pytest.raises(AssertionError):
        check_pooling_stability(tiny_net(), smooth_image())


def test_invariance_losing_the_image_is_caught(monkeypatch):
    # a resize that keeps only the mean colour: every shift then looks exactly equivariant and perfectly stable
    monkeypatch.setattr(invariance, "resize_source", lambda image, size: torch.zeros(1, 3, size, size) + image.mean())
    with pytest.raises(AssertionError):
        check_translation_equivariance(tiny_net(), smooth_image())
    with pytest.raises(AssertionError):
        check_pooling_stability(tiny_net(), smooth_image())


def test_constant_probe_is_caught(monkeypatch):
    uniform = SimpleNamespace(softmax=lambda logits, dim: torch.full_like(logits, 1.0 / logits.shape[dim]))
    monkeypatch.setattr(imagenet_probe, "F", uniform)
    with pytest.raises(AssertionError):
        check_probe_numbers(MeanBrightness())


def test_probe_showing_the_full_scene_twice_is_caught(monkeypatch):
    real = imagenet_probe.views

    def same_view_twice(image, size=224, crop_fraction=0.5):
        full = real(image, size, crop_fraction)["full scene"]
        return {"centre crop": full, "full scene": full}

    monkeypatch.setattr(imagenet_probe, "views", same_view_twice)
    with pytest.raises(AssertionError):
        check_probe_numbers(MeanBrightness())


def off_by_one(monkeypatch):
    real = receptive_field.module_receptive_fields

    def fields(model):
        return {k: dataclasses.replace(v, size=v.size + 1) if v.size else v for k, v in real(model).items()}

    monkeypatch.setattr(receptive_field, "module_receptive_fields", fields)


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50"])
def test_receptive_field_off_by_one_is_caught_by_the_exact_values(monkeypatch, backbone):
    check_exact_fields(backbone)
    off_by_one(monkeypatch)
    with pytest.raises(AssertionError):
        check_exact_fields(backbone)


def test_receptive_field_off_by_one_is_caught_by_the_measurement(monkeypatch):
    with torch.device("meta"):
        model = get_backbone_spec("vgg16").builder(weights=None)
    probe = receptive_field.linearized_copy(model)
    check_measured_equals_analytic("vgg16", "pool1", probe)
    off_by_one(monkeypatch)
    with pytest.raises(AssertionError):
        check_measured_equals_analytic("vgg16", "pool1", probe)

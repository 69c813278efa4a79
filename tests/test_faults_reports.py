"""Planted faults in the reports (architecture analyses, course answers): each behavioural check of their tests
must catch its fault."""

from __future__ import annotations

import __future__
import dataclasses
import inspect
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_decisions import (
    check_answers_apply_holm,
    check_better_needs_a_significant_test,
    check_few_draws_give_no_verdict,
)
from test_imagenet_probe import MeanBrightness, check_probe_numbers
from test_invariance import check_pooling_stability, check_translation_equivariance, smooth_image, tiny_net
from test_receptive_field import check_exact_fields, check_measured_equals_analytic

from featurize.backbones import get_backbone_spec
from reports import answers
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

    def same_view_twice(image, size=224, crop_fraction=0.5, preprocessing=None):
        out = real(image, size, crop_fraction, preprocessing)
        return out | {"centre crop": out["full scene"]}

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


def mutate(monkeypatch, module, name: str, old: str, new: str) -> None:
    """Replace function ``module.name`` by its own source with ``old`` replaced by ``new`` (one line-level fault).
    Fails when ``old`` is no longer in the source once: the fault must then be re-planted, not silently skipped."""
    source = textwrap.dedent(inspect.getsource(getattr(module, name)))
    assert source.count(old) == 1, f"fault no longer applies: {old!r} is not once in {module.__name__}.{name}"
    namespace = dict(vars(module))
    code = compile(source.replace(old, new), module.__file__, "exec", flags=__future__.annotations.compiler_flag,
                   dont_inherit=True)
    exec(code, namespace)
    monkeypatch.setattr(module, name, namespace[name])


ANSWER_FAULTS = {
    "'better' whenever the test ran": (
        lambda mp: mutate(mp, answers, "_verdict", '_true(test["significant"])', 'not pd.isna(test["significant"])'),
        check_better_needs_a_significant_test),
    "no Holm correction within a question": (
        lambda mp: mp.setattr(answers, "holm", lambda p: np.asarray(p, dtype=float)), check_answers_apply_holm),
    "verdicts from fewer than 5 draws": (
        lambda mp: mutate(mp, answers, "_verdict", 'if _true(test.get("few_draws")):', "if False:"),
        check_few_draws_give_no_verdict),
}


@pytest.mark.parametrize("fault", list(ANSWER_FAULTS))
def test_answer_checks_pass_without_the_fault(fault):
    ANSWER_FAULTS[fault][1]()


@pytest.mark.parametrize("fault", list(ANSWER_FAULTS))
def test_answer_checks_catch_the_planted_fault(fault, monkeypatch):
    plant, check = ANSWER_FAULTS[fault]
    plant(monkeypatch)
    with pytest.raises(AssertionError):
        check()

"""The one registry behind every table of named entries."""

import pytest

from featurize.registry import Registry, UnknownNameError


def test_a_registry_keeps_order_refuses_duplicates_and_lists_the_valid_names():
    reg = Registry("pooling")
    reg.register("avg", 1)
    reg.decorator("max")(2)
    assert list(reg) == ["avg", "max"] and reg["max"] == 2 and len(reg) == 2
    with pytest.raises(ValueError, match="already registered under the name 'avg'"):
        reg.register("avg", 3)
    with pytest.raises(UnknownNameError, match="Unknown pooling 'sum'; valid poolings: avg, max") as err:
        reg["sum"]
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert "sum" not in reg and reg.get("sum") is None


def test_an_explicit_override_replaces_and_removes_entries():
    reg = Registry("head")
    reg.register("svm", 1)
    reg["svm"] = 2
    del reg["svm"]
    assert "svm" not in reg

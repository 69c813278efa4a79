"""The interface of a backbone family: everything one kind of network knows about itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from torch import nn

from featurize.spec import Adaptation, BackboneSpec
from featurize.weights import ResolvedWeights

__all__ = ["BackboneFamily"]


class BackboneFamily(ABC):
    """One kind of backbone (torchvision ResNet, torchvision VGG, timm, EfficientNet-Lite …), registered once in
    :data:`featurize.families.FAMILIES`.

    A family builds its networks' :class:`~featurize.spec.BackboneSpec` (cut points measured on the meta device),
    resolves and loads their weights, says which cut points the comparison uses by default and where a fine-tuning
    head may go, and performs that surgery.  Adding a family is one subclass and one registration.

    Attributes
    ----------
    name : str
        The family's name (``BackboneSpec.family`` of its backbones).
    description : str
        One line for listings.
    default_cuts : tuple of str
        Cut points the frozen-feature comparison uses by default (``"penultimate"`` = the cut point before the
        classifier).
    bench_cuts : tuple of str
        Four cut points the extraction benchmark captures (empty: not benchmarked).
    """

    name: str
    description: str
    default_cuts: tuple[str, ...] = ("penultimate",)
    bench_cuts: tuple[str, ...] = ()

    @abstractmethod
    def names(self) -> list[str]:
        """The backbone names this family lists (a family of open-ended names, such as timm's, lists none)."""

    def owns(self, backbone: str) -> bool:
        """Whether ``backbone`` is one of this family's names."""
        return backbone in self.names()

    @abstractmethod
    def spec(self, backbone: str) -> BackboneSpec:
        """The backbone's spec (built on the meta device; no weights, no download).

        Raises
        ------
        ValueError
            For a name the family does not know.
        """

    @abstractmethod
    def resolve_weights(self, spec: BackboneSpec, weights: object, random_state: int | None = 0) -> ResolvedWeights:
        """Resolve a ``weights`` argument (``None`` = random init with seed ``random_state``) without building the
        model.

        Raises
        ------
        ValueError
            For a value the family does not accept (the message lists what it does).
        FileNotFoundError
            For pretrained weights that are not available; the message says how to get them.
        """

    @abstractmethod
    def weights_file(self, resolved: ResolvedWeights, download: bool = True) -> Path:
        """The local file of pretrained weights (fetched when the family can and ``download`` allows).

        Raises
        ------
        FileNotFoundError
            When the file is not available; the message names it and where to put it.
        ValueError
            For random-init weights.
        """

    @abstractmethod
    def load_model(self, spec: BackboneSpec, resolved: ResolvedWeights) -> nn.Module:
        """The network with the resolved weights, in eval mode on the CPU (the bytes loaded are the bytes hashed).

        Raises
        ------
        ValueError
            When the file changed since it was resolved or does not fit the model.
        """

    def weights_dir_file(self, backbone: str, weights: str) -> str:
        """The file name a ``--weights-dir`` folder holds for ``backbone`` and the ``weights`` name asked for.

        Raises
        ------
        ValueError
            When the family reads no weights from such a folder.
        """
        raise ValueError(f"{backbone}: --weights-dir does not apply to the {self.name} family")

    @abstractmethod
    def adapt(self, model: nn.Module, spec: BackboneSpec, cut: str | None, n_classes: int) -> Adaptation:
        """Cut ``model`` in place at ``cut`` (None: replace its classifier), give it a new ``Linear`` head for
        ``n_classes`` classes, and split what is kept into stages."""

    def categories(self, spec: BackboneSpec, resolved: ResolvedWeights) -> list[str] | None:
        """Names of the classes the pretrained classifier outputs (ImageNet's), or None when unknown."""
        return None

    def head_cuts(self, spec: BackboneSpec) -> list[str]:
        """Cut points where a new fine-tuning head can go (default: every one before the classifier)."""
        return [c for c in spec.cut_names if spec.cut(c).module != spec.classifier]

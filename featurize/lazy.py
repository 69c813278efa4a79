"""Public names imported on first use: a package's ``__getattr__`` built from a table of names and modules, so that
importing the package (or running one of its commands with ``--help``) imports nothing heavy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package``: name → ``getattr(import_module(exports[name]), name)``.

    Parameters
    ----------
    package : str
        The package's name (for the error message).
    exports : mapping of str to str
        Public name → the dotted module that defines it.
    """

    def __getattr__(name: str) -> object:
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

"""Public names imported on first use: a package's ``__getattr__`` built from a table of names and modules, so that
importing the package (or running one of its commands with ``--help``) imports nothing heavy."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import import_module

__all__ = ["lazy_exports"]


def lazy_exports(package: str, table: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], object], tuple[str, ...]]:
    """The module ``__getattr__`` of ``package`` and the names it serves: each name of ``table[module]`` is
    ``getattr(import_module(module), name)``, imported on first use.

    Parameters
    ----------
    package : str
        The package's name (for the error message).
    table : mapping of str to sequence of str
        Dotted module → the public names it defines.

    Returns
    -------
    __getattr__ : callable
        The package's module ``__getattr__``.
    names : tuple of str
        Every public name, in the table's order (for ``__all__``).
    """
    exports = {name: module for module, names in table.items() for name in names}

    def __getattr__(name: str) -> object:
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, tuple(exports)

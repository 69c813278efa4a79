"""One registry for every table of named entries (backbone families, poolings, heads, methods, protocols, …).

A :class:`Registry` maps names to entries in registration order, refuses a name registered twice (as torchvision's
``register_model`` does) and answers an unknown name with an error that lists the valid ones.  Item assignment and
deletion stay possible as explicit overrides (``monkeypatch.setitem`` in tests replaces an entry for one test).  It
lives in the lowest layer so that every package can keep its tables in one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unknown name: a ``KeyError`` for mapping code and a ``ValueError`` for callers validating user input."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(MutableMapping[str, T], Generic[T]):
    """Named entries of one kind, in registration order.

    Parameters
    ----------
    kind : str
        What an entry is (``"backbone family"``, ``"head"``), used in error messages.

    Examples
    --------
    >>> POOLINGS = Registry("pooling")
    >>> POOLINGS.register("avg", lambda x: x.mean((2, 3)))  # doctest: +ELLIPSIS
    <function <lambda> at ...>
    >>> POOLINGS["sum"]
    Traceback (most recent call last):
    UnknownNameError: Unknown pooling 'sum'; valid poolings: avg
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` and return it.

        Raises
        ------
        ValueError
            When an entry is already registered under ``name``.
        """
        if name in self._entries:
            raise ValueError(f"A {self.kind} is already registered under the name {name!r}.")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str | None = None) -> Callable[[T], T]:
        """``@registry.decorator()`` registers a function under its own name (or ``name``)."""

        def wrapper(entry: T) -> T:
            return self.register(name if name is not None else entry.__name__, entry)

        return wrapper

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self._entries)}") from None

    def __setitem__(self, name: str, entry: T) -> None:
        """Set or replace an entry explicitly (:meth:`register` is the checked way to add one)."""
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

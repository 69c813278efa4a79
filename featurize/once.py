"""Messages said once per process: a warning about a file, a note that a model runs with random-init weights."""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["first_time"]

_SEEN: set[tuple[Hashable, ...]] = set()


def first_time(*key: Hashable) -> bool:
    """True the first time ``key`` is seen in this process, False afterwards."""
    if key in _SEEN:
        return False
    _SEEN.add(key)
    return True

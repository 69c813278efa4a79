"""Writes on a background thread, so storing one batch overlaps computing the next."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["BackgroundWriter"]

log = logging.getLogger(__name__)

_DONE = object()


class BackgroundWriter:
    """Call ``write(item)`` for every item :meth:`put`, in order, on one background thread.

    Parameters
    ----------
    write : callable
        Stores one item (e.g. appends a batch of rows to a cache file).
    depth : int, default=2
        Items that may wait to be written; :meth:`put` blocks beyond that, so memory stays bounded.

    Notes
    -----
    Leaving the ``with`` block waits until every item already put is written, also when the block ends with an
    exception (an unreadable image, Ctrl-C), so rows computed before the failure are kept.  A failed write is raised
    in the caller, at the next :meth:`put` or when the block ends; items after it are not written.

    Examples
    --------
    >>> with BackgroundWriter(cache_append) as writer:
    ...     for batch in batches:
    ...         writer.put(batch)
    """

    def __init__(self, write: Callable[[object], None], depth: int = 2):
        self.write = write
        self.depth = depth
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="featurize-writer", daemon=True)

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self._error is None:
                try:
                    self.write(item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self._error = exc

    def __enter__(self) -> "BackgroundWriter":
        self._thread.start()
        return self

    def put(self, item: object) -> None:
        """Queue one item for writing; raises the error of an earlier failed write."""
        self._raise_error()
        self._queue.put(item)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._queue.put(_DONE)
            self._thread.join()
            raise error

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._thread.is_alive():
            return
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            if exc is None:
                raise self._error
            log.error("a background write failed too: %r", self._error)

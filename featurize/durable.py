"""Durable file replacement: write beside the file, fsync, rename into place, fsync the folder.

A crash or a power cut at any point leaves either the old file or the complete new one, never a half-written one:
the new content is on disk (fsynced) before the rename, and the rename is on disk (the folder fsynced) before the
caller goes on.  Used by the feature cache (new, rebuilt and stitched files) and the download manifests.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["copy_ownership", "fsync_path", "replace_durably", "replacing"]

log = logging.getLogger(__name__)


def fsync_path(path: str | Path) -> None:
    """fsync a closed file, or a folder (so a rename in it is durable; skipped where folders cannot be opened)."""
    flags = os.O_RDONLY
    if os.path.isdir(path):
        if not hasattr(os, "O_DIRECTORY"):
            return
        flags |= os.O_DIRECTORY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_ownership(src: str | Path, dst: str | Path) -> None:
    """Give ``dst`` the permission bits of ``src``, and its owner and group where this process may."""
    st = os.stat(src)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    try:
        os.chown(dst, st.st_uid, st.st_gid)
    except OSError:
        log.debug("cannot give %s the owner of %s", dst, src)


def replace_durably(tmp: str | Path, dest: str | Path, *, keep_ownership: bool = False) -> None:
    """Put the closed file ``tmp`` in place of ``dest`` durably: fsync it, rename it, fsync the folder.

    Parameters
    ----------
    tmp : path-like
        The complete new file, in ``dest``'s folder (a rename across file systems is not atomic).
    dest : path-like
        The file replaced (or created).
    keep_ownership : bool, default=False
        Give the new file ``dest``'s permission bits and owner first (``dest`` must exist).
    """
    fsync_path(tmp)
    if keep_ownership:
        copy_ownership(dest, tmp)
    os.replace(tmp, dest)
    fsync_path(Path(dest).parent)


@contextmanager
def replacing(dest: str | Path, suffix: str | None = None, *, keep_ownership: bool = False) -> Iterator[Path]:
    """A temporary path beside ``dest`` to write the new file at; put in place durably when the block completes.

    The temporary file is removed whatever happens, so a failed write leaves ``dest`` as it was and nothing beside it.

    Parameters
    ----------
    dest : path-like
        The file replaced (or created).
    suffix : str, optional
        The temporary file is ``dest`` with this suffix appended (the caller holds a lock, so the name is its own);
        None: a fresh unique name (``.<name>.<random>.tmp``, created empty, readable by its owner only).
    keep_ownership : bool, default=False
        As :func:`replace_durably`.

    Yields
    ------
    Path
        Where to write (and close) the new file.
    """
    dest = Path(dest)
    if suffix is None:
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    else:
        tmp = dest.with_name(dest.name + suffix)
    try:
        yield tmp
        replace_durably(tmp, dest, keep_ownership=keep_ownership)
    finally:
        tmp.unlink(missing_ok=True)

"""Repairs of a damaged feature cache file: rebuilding it from its complete rows, and extending a file cut short.

HDF5 is not crash-safe: a SIGKILL in the middle of a flush can leave metadata past the complete rows unwritable.
When an append then fails, :func:`rebuild` copies the complete rows into a fresh file that atomically replaces the
damaged one (keeping its permissions, and its owner where allowed).  A write that fails for lack of space can leave a
file shorter than HDF5's recorded end; when no complete row lies in the missing tail, :func:`extend_cut_short` extends
the file back (zeros) so it opens again.  Both run with the cache's lock held.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import h5py

from featurize.cache_format import read_strings, row_datasets, write_rows
from featurize.durable import replacing

__all__ = ["extend_cut_short", "rebuild"]

log = logging.getLogger(__name__)

_COPY_ROWS = 4096
_CUT_SHORT = re.compile(r"truncated file: eof = (?P<eof>\d+),.*stored_eof = (?P<stored>\d+)")


def rebuild(path: Path, open_source: Callable[[], h5py.File]) -> None:
    """Copy the complete rows of ``path`` into a fresh file and atomically put it in place (lock held).

    Parameters
    ----------
    path : Path
        The cache file.
    open_source : callable
        Opens ``path`` for reading (with the cache's own checks).

    Raises
    ------
    OSError
        When the complete rows themselves cannot be read; the file is then left as it is.
    """
    try:
        with (replacing(path, ".rebuild", keep_ownership=True) as tmp, open_source() as src,
              h5py.File(tmp, "w") as dst):
            _copy_complete_rows(src, dst)
    except (OSError, RuntimeError, KeyError) as exc:
        raise OSError(
            f"cache file {str(path)!r} could not be appended to, and copying its complete rows into a fresh "
            f"file failed too ({exc}). It was left untouched; check free disk space, or move it away (or pass "
            "another cache path) to start a fresh cache."
        ) from exc


def _copy_complete_rows(src: h5py.File, dst: h5py.File) -> None:
    """The attributes (but the key index's coverage) and the ``n_complete`` rows of ``src``, into ``dst``."""
    for name, value in src.attrs.items():
        if name != "index_rows":
            dst.attrs[name] = value
    n = int(src.attrs["n_complete"])
    dst.attrs["n_complete"] = 0
    names = row_datasets(src) if n else []
    short = {name: len(src[name]) for name in names if len(src[name]) < n}
    if short:
        raise RuntimeError(f"datasets with fewer rows than the {n} recorded complete: {short}")
    for start in range(0, n, _COPY_ROWS):
        stop = min(n, start + _COPY_ROWS)
        for name in names:
            write_rows(dst, name, src[name][start:stop], start, stop)
        for name in ("paths", "versions"):
            write_rows(dst, name, read_strings(src, name, start, stop), start, stop)
    dst.attrs["n_complete"] = n


def extend_cut_short(path: Path, exc: OSError) -> bool:
    """Give a file that a failed write left shorter than its recorded end (disk full) its missing tail back.

    HDF5 then opens it again: the rows already complete were written before and are intact, and the next append
    rebuilds the file if its tail is unusable.  Extending only adds zero bytes (sparse), so nothing is lost.

    Parameters
    ----------
    path : Path
        The cache file (lock held).
    exc : OSError
        What opening it raised.

    Returns
    -------
    bool
        Whether the file was extended.
    """
    match = _CUT_SHORT.search(str(exc))
    eof, stored = (int(match["eof"]), int(match["stored"])) if match else (0, 0)
    if stored <= eof or os.path.getsize(path) != eof:
        return False
    try:
        os.truncate(path, stored)
    except OSError:
        return False
    if not _complete_rows_before(path, eof):
        os.truncate(path, eof)
        return False
    log.warning("cache file %s was cut short by a failed write (disk full?); extended it from %s to its recorded "
                "%s bytes to recover its complete rows", path, match["eof"], match["stored"])
    try:
        with h5py.File(path, "a") as f:
            f.attrs["index_rows"] = 0  # its key index may have lost slots in the zeroed tail: rebuild it
    except OSError:
        log.debug("cannot mark the key index of %s for rebuilding", path)
    return True


def _complete_rows_before(path: Path, eof: int) -> bool:
    """Whether every stored chunk holding complete rows lies before byte ``eof`` (so none of them was lost)."""
    try:
        with h5py.File(path, "r") as f:
            n = int(f.attrs.get("n_complete", 0))
            for ds in (f[name] for name in row_datasets(f) if name in f):
                for i in range(ds.id.get_num_chunks()):
                    info = ds.id.get_chunk_info(i)
                    if info.chunk_offset[0] < n and info.byte_offset + info.size > eof:
                        return False
    except (OSError, RuntimeError, KeyError):
        return False
    return True

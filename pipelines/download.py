"""Resumable HTTP downloads with checksums, and zip extraction that refuses to write outside its target."""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import stat
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from featurize.weights import file_sha256

__all__ = ["DownloadError", "ChecksumError", "download_file", "safe_extract"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(OSError):
    """A download could not be completed (no network, HTTP error, connection lost too often)."""


class ChecksumError(ValueError):
    """A file's sha256 differs from the expected one."""


class _Incomplete(Exception):
    """The server closed the connection before sending every byte it announced."""


def download_file(
    url: str,
    dest: str | Path,
    expected_sha256: str | None = None,
    progress: bool = True,
    *,
    retries: int = 3,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming an interrupted download.

    Bytes go to ``dest + ".part"``; a later call (or a retry after a dropped connection) asks the server for the
    rest with an HTTP ``Range`` request and appends, or starts over when the server ignores ranges. The part file
    is renamed to ``dest`` only once complete and, when ``expected_sha256`` is given, verified.

    Parameters
    ----------
    url : str
        What to download (http, https or file URL).
    dest : str or Path
        Where to write it; parent folders are created.
    expected_sha256 : str, optional
        Hex sha256 the file must have.
    progress : bool, default=True
        Show a tqdm progress bar.
    retries : int, default=3
        How many times to resume after the connection drops mid-transfer.
    timeout : float, default=30.0
        Socket timeout in seconds.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        The server cannot be reached, answers with an HTTP error, or keeps dropping the connection; the part file
        is kept for the next attempt.
    ChecksumError
        The complete file's sha256 differs from ``expected_sha256``; the part file is deleted.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, progress, timeout)
            break
        except (_Incomplete, http.client.HTTPException, ConnectionError, socket.timeout) as exc:
            have = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                raise DownloadError(
                    f"downloading {url} failed after {retries + 1} attempts ({exc}); {have} bytes are kept in {part} "
                    "and the next attempt resumes from there"
                ) from exc
            logger.warning("connection lost while downloading %s (%s); resuming from byte %d", url, exc, have)
    if expected_sha256 is not None:
        actual = file_sha256(part)
        if actual != expected_sha256.lower():
            part.unlink()
            raise ChecksumError(
                f"{url} downloaded with sha256 {actual}, expected {expected_sha256}; the file was deleted"
            )
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """One attempt: continue ``part`` from its current size to the end of the resource."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cnn-transfer"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            logger.warning("the server refused to resume %s; starting over", url)
            part.unlink()
            raise _Incomplete("range not satisfiable") from exc
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url}: {exc.reason}") from exc
    with response:
        status = getattr(response, "status", None)
        length = response.headers.get("Content-Length")
        if offset and status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                part.unlink()
                raise _Incomplete(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
            mode = "ab"
        else:
            if offset:
                logger.info("the server does not support resuming %s; starting over", url)
            offset, mode = 0, "wb"
        expected = int(length) if length is not None else None
        received = 0
        with open(part, mode) as fh, tqdm(
            total=None if expected is None else offset + expected,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
        ) as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                fh.write(block)
                received += len(block)
                bar.update(len(block))
    if expected is not None and received < expected:
        raise _Incomplete(f"received {received} of {expected} bytes")


def safe_extract(zip_path: str | Path, target: str | Path) -> Path:
    """Extract a zip archive into ``target`` after checking every member.

    Nothing is written when any member has an absolute path or a drive, a path that leaves ``target`` (``..``),
    or is a symbolic link.

    Parameters
    ----------
    zip_path : str or Path
        The archive.
    target : str or Path
        The folder to extract into (created).

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    ValueError
        A member is unsafe, or the file is not a zip archive.
    """
    zip_path, target = Path(zip_path), Path(target)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{zip_path} is not a valid zip archive ({exc}); delete it and download it again") from exc
    with archive:
        root = target.resolve()
        for info in archive.infolist():
            name = info.filename
            pure = PurePosixPath(name.replace("\\", "/"))
            if pure.is_absolute() or re.match(r"^[A-Za-z]:", name):
                raise ValueError(f"{zip_path}: refusing absolute member path {name!r}")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ValueError(f"{zip_path}: refusing symbolic link member {name!r}")
            destination = (root / pure).resolve()
            if destination != root and root not in destination.parents:
                raise ValueError(f"{zip_path}: refusing member {name!r}, which would be written outside {target}")
        target.mkdir(parents=True, exist_ok=True)
        archive.extractall(target)
    return target

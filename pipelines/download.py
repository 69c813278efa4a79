"""Resumable HTTP downloads with checksums, atomic manifests, and guarded zip extraction."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import socket
import stat
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm.auto import tqdm

from featurize.durable import replacing
from featurize.weights import file_sha256

__all__ = [
    "DownloadError",
    "ChecksumError",
    "download_file",
    "safe_extract",
    "read_manifest",
    "write_manifest",
    "MAX_TOTAL_SIZE",
    "MAX_MEMBERS",
    "MAX_RATIO",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

MAX_TOTAL_SIZE = 1 << 30
"""Default cap on the uncompressed size of all members of an archive: 1 GiB (the ants-vs-bees zip holds ~47 MB)."""
MAX_MEMBERS = 10_000
"""Default cap on the number of members of an archive (the ants-vs-bees zip holds ~400)."""
MAX_RATIO = 100.0
"""Default cap on one member's uncompressed/compressed size ratio (JPEGs are ~1, text ~3-10, zip bombs ~1000)."""
_RATIO_FLOOR = 1 << 20  # members smaller than 1 MiB are exempt from the ratio cap: tiny text files compress well


class DownloadError(OSError):
    """A download could not be completed (no network, HTTP error, connection lost too often)."""


class ChecksumError(ValueError):
    """A file's sha256 differs from the expected one."""


class _Incomplete(Exception):
    """The server closed the connection before sending every byte it announced."""


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a JSON manifest written by :func:`write_manifest`; ``{}`` when the file does not exist.

    Raises
    ------
    ValueError
        The file is unreadable, not JSON, or not a JSON object; the message names it and says to delete it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"manifest {path} cannot be read ({exc}); delete it and run again to rebuild it") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"manifest {path} is corrupt (not JSON: {exc}); delete it and run again to rebuild it"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(
            f"manifest {path} is corrupt (a JSON {type(data).__name__}, expected an object); "
            "delete it and run again to rebuild it"
        )
    return data


def write_manifest(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically: a temporary file in the same folder, fsync, ``os.replace``.

    A crash leaves either the old manifest or the new one, never a half-written file.
    """
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)


def download_file(
    url: str,
    dest: str | Path,
    expected_sha256: str | None = None,
    progress: bool = True,
    *,
    retries: int = 3,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming an interrupted download only when the server's file is unchanged.

    Bytes go to ``dest + ".part"``, and the server's validator (its strong ``ETag``, else ``Last-Modified``) to
    ``dest + ".part.json"``. A later call (or a retry after a dropped connection) asks for the rest with
    ``Range`` and ``If-Range: <validator>``; the part file is started over when the server answers 200 (the file
    changed upstream, or ranges are not supported), when a 206 answer carries another validator, or when no
    validator was recorded. The part file is renamed to ``dest`` only once complete and, when ``expected_sha256``
    is given, verified.

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
    record = _record_path(part)
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
                    "and the next attempt resumes from there if the server's file is unchanged"
                ) from exc
            logger.warning("connection lost while downloading %s (%s); resuming from byte %d", url, exc, have)
    if expected_sha256 is not None:
        actual = file_sha256(part)
        if actual != expected_sha256.lower():
            part.unlink()
            record.unlink(missing_ok=True)
            raise ChecksumError(
                f"{url} downloaded with sha256 {actual}, expected {expected_sha256}; the file was deleted"
            )
    os.replace(part, dest)
    record.unlink(missing_ok=True)
    return dest


def _record_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _validator(headers: Any) -> str | None:
    """The response's strong ETag, else its Last-Modified date (weak ETags may not be sent in ``If-Range``)."""
    etag = (headers.get("ETag") or "").strip()
    if etag and not etag.startswith("W/"):
        return etag
    return (headers.get("Last-Modified") or "").strip() or None


def _recorded_validator(record: Path, url: str) -> str | None:
    """The validator stored next to a part file of ``url``; None when absent, unreadable or for another URL."""
    try:
        data = read_manifest(record)
    except ValueError as exc:
        logger.warning("%s", exc)
        return None
    validator = data.get("validator")
    return validator if data.get("url") == url and isinstance(validator, str) and validator else None


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _record_path(part).unlink(missing_ok=True)


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """One attempt: continue ``part`` from its current size to the end of the resource, or start it over."""
    record = _record_path(part)
    offset = part.stat().st_size if part.exists() else 0
    validator = _recorded_validator(record, url) if offset else None
    if offset and validator is None:
        logger.info("no validator recorded for %s, so the server's file may have changed; starting over", part)
        offset = 0
    headers = {"User-Agent": "cnn-transfer"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = validator
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            logger.warning("the server refused to resume %s; starting over", url)
            _discard(part)
            raise _Incomplete("range not satisfiable") from exc
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url}: {exc.reason}") from exc
    with response:
        status = getattr(response, "status", None)
        length = response.headers.get("Content-Length")
        current = _validator(response.headers)
        if offset and status == 206:
            if current is not None and current != validator:
                logger.warning("%s changed upstream (validator %s, was %s); starting over", url, current, validator)
                _discard(part)
                response.close()
                _fetch(url, part, progress, timeout)
                return
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                _discard(part)
                raise _Incomplete(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
            mode = "ab"
        else:
            if offset:
                logger.info("the server sent all of %s (changed upstream, or no resume support); starting over", url)
            offset, mode = 0, "wb"
            if current is None:
                record.unlink(missing_ok=True)
            else:
                write_manifest(record, {"url": url, "validator": current})
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


def safe_extract(
    zip_path: str | Path,
    target: str | Path,
    *,
    max_total_size: int | None = MAX_TOTAL_SIZE,
    max_members: int | None = MAX_MEMBERS,
    max_ratio: float | None = MAX_RATIO,
) -> Path:
    """Extract a zip archive into ``target`` after checking every member, within size limits.

    Nothing is written when any member has an absolute path or a drive, a path that leaves ``target`` (``..``),
    is a symbolic link, or when the central directory announces more than ``max_members`` members, more than
    ``max_total_size`` uncompressed bytes, or a member (of 1 MiB or more) that inflates more than ``max_ratio``
    times. The same limits are enforced on the bytes actually inflated, so a member whose header understates its
    size is cut off at its announced size; when extraction fails midway, the files it wrote are removed.

    Parameters
    ----------
    zip_path : str or Path
        The archive.
    target : str or Path
        The folder to extract into (created).
    max_total_size : int or None, default=MAX_TOTAL_SIZE
        Most uncompressed bytes over all members (1 GiB); None for no limit.
    max_members : int or None, default=MAX_MEMBERS
        Most members, folders included (10 000); None for no limit.
    max_ratio : float or None, default=MAX_RATIO
        Most uncompressed/compressed size ratio of one member of 1 MiB or more (100); None for no limit.

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    ValueError
        A member is unsafe or over a limit (the message names the archive and the member), or the file is not a
        valid zip archive.
    """
    zip_path, target = Path(zip_path), Path(target)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise ValueError(f"{zip_path} is not a valid zip archive ({exc}); delete it and download it again") from exc
    with archive:
        members = archive.infolist()
        _check_members(zip_path, target, members, max_total_size, max_members, max_ratio)
        created = [] if target.exists() else [target]
        target.mkdir(parents=True, exist_ok=True)
        budget = max_total_size
        try:
            for info in members:
                written = _extract_member(zip_path, archive, info, target, budget, max_ratio, created)
                budget = None if budget is None else budget - written
        except BaseException:
            for path in reversed(created):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            raise
    return target


def _check_members(
    zip_path: Path,
    target: Path,
    members: list[zipfile.ZipInfo],
    max_total_size: int | None,
    max_members: int | None,
    max_ratio: float | None,
) -> None:
    """Refuse, from the central directory alone, an archive with an unsafe member or over a limit."""
    if max_members is not None and len(members) > max_members:
        raise ValueError(
            f"{zip_path}: refusing an archive of {len(members)} members, more than max_members={max_members}; "
            "raise max_members if you trust it"
        )
    root = target.resolve()
    total = 0
    for info in members:
        name = info.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or re.match(r"^[A-Za-z]:", name):
            raise ValueError(f"{zip_path}: refusing absolute member path {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ValueError(f"{zip_path}: refusing symbolic link member {name!r}")
        destination = (root / pure).resolve()
        if destination != root and root not in destination.parents:
            raise ValueError(f"{zip_path}: refusing member {name!r}, which would be written outside {target}")
        if _ratio_exceeded(info.file_size, info.compress_size, max_ratio):
            raise ValueError(
                f"{zip_path}: refusing member {name!r}, which inflates {info.compress_size} bytes to "
                f"{info.file_size} (more than max_ratio={max_ratio} times; a zip bomb?); raise max_ratio if you "
                "trust the archive"
            )
        total += info.file_size
        if max_total_size is not None and total > max_total_size:
            raise ValueError(
                f"{zip_path}: refusing member {name!r}: the members up to it add up to {total} uncompressed bytes, "
                f"more than max_total_size={max_total_size}; raise max_total_size if you trust the archive"
            )


def _ratio_exceeded(size: int, compressed: int, max_ratio: float | None) -> bool:
    return max_ratio is not None and size >= _RATIO_FLOOR and size > max_ratio * max(compressed, 1)


def _extract_member(
    zip_path: Path,
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path,
    budget: int | None,
    max_ratio: float | None,
    created: list[Path],
) -> int:
    """Write one checked member, stopping at its announced size, the ``budget`` bytes left or the ratio cap.

    Returns the number of bytes written; every file or folder it creates is appended to ``created``.
    """
    destination = target / os.path.normpath(info.filename.replace("\\", "/"))
    allowed = info.file_size if budget is None else min(info.file_size, budget)
    written = 0
    try:
        for folder in reversed([destination, *destination.parents] if info.is_dir() else destination.parents):
            if folder != target and target in folder.parents and not folder.exists():
                folder.mkdir()
                created.append(folder)
        if info.is_dir():
            return 0
        with archive.open(info) as src:
            if not destination.exists():
                created.append(destination)
            with open(destination, "wb") as dst:
                while block := src.read(_CHUNK):
                    written += len(block)
                    if written > allowed or _ratio_exceeded(written, info.compress_size, max_ratio):
                        raise ValueError(
                            f"{zip_path}: member {info.filename!r} inflates past its announced {info.file_size} "
                            "bytes or past the archive's size limits; refusing it (the archive is corrupt or hostile)"
                        )
                    dst.write(block)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{zip_path}: member {info.filename!r} is corrupt ({exc}); delete the archive and download it again"
        ) from exc
    except (RuntimeError, NotImplementedError) as exc:
        raise ValueError(f"{zip_path}: member {info.filename!r} cannot be extracted ({exc})") from exc
    except OSError as exc:
        raise ValueError(f"{zip_path}: cannot extract member {info.filename!r} to {destination} ({exc})") from exc
    return written

"""Faults in downloads and archives: a file changed upstream mid-download, zip bombs, lying headers, torn manifests."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from test_download import server  # noqa: F401 (the loopback HTTP server fixture)

from pipelines import download
from pipelines.download import DownloadError, read_manifest, safe_extract, write_manifest

PAYLOAD_SIZE = 200_000


def _payloads() -> tuple[bytes, bytes]:
    """Two random files of the same size: the upstream file before and after it changed."""
    rng = np.random.default_rng(12)
    return rng.bytes(PAYLOAD_SIZE), rng.bytes(PAYLOAD_SIZE)


def _interrupted(server, tmp_path, old: bytes):  # noqa: F811 (fixture passed in)
    """Leave half of ``old`` in ``f.bin.part``, as a dropped connection does."""
    server.files["/f.bin"] = old
    server.truncate_next = True
    with pytest.raises(DownloadError):
        download.download_file(server.url("/f.bin"), tmp_path / "f.bin", progress=False, retries=0)
    assert (tmp_path / "f.bin.part").stat().st_size == len(old) // 2


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_changed_upstream_file_is_not_spliced(server, tmp_path, validator):  # noqa: F811
    server.validator = validator
    old, new = _payloads()
    _interrupted(server, tmp_path, old)
    server.files["/f.bin"] = new
    dest = download.download_file(server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == new
    resume = server.requests[-1]
    assert resume["Range"] == f"bytes={len(old) // 2}-" and resume["If-Range"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_unchanged_upstream_file_resumes_with_if_range(server, tmp_path):  # noqa: F811
    old, _ = _payloads()
    _interrupted(server, tmp_path, old)
    first = server.requests[0]
    assert "Range" not in first and "If-Range" not in first
    dest = download.download_file(server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == old
    assert server.requests[-1]["Range"] == f"bytes={len(old) // 2}-"
    assert server.requests[-1]["If-Range"].startswith('"')
    assert not (tmp_path / "f.bin.part.json").exists()


def test_206_with_another_validator_restarts(server, tmp_path):  # noqa: F811
    """A server that honours Range but ignores If-Range: the changed ETag of its 206 answer is caught."""
    server.if_range = False
    old, new = _payloads()
    _interrupted(server, tmp_path, old)
    server.files["/f.bin"] = new
    dest = download.download_file(server.url("/f.bin"), tmp_path / "f.bin", progress=False, retries=0)
    assert dest.read_bytes() == new
    assert "Range" not in server.requests[-1]


def test_part_without_recorded_validator_restarts(server, tmp_path):  # noqa: F811
    """A part file of unknown origin (older version, other tool) is never extended."""
    payload, _ = _payloads()
    server.files["/f.bin"] = payload
    (tmp_path / "f.bin.part").write_bytes(b"not from this server")
    dest = download.download_file(server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == payload
    assert "Range" not in server.requests[-1]


def test_no_validator_from_server_restarts_instead_of_splicing(server, tmp_path):  # noqa: F811
    server.validator = None
    old, new = _payloads()
    _interrupted(server, tmp_path, old)
    server.files["/f.bin"] = new
    assert download.download_file(server.url("/f.bin"), tmp_path / "f.bin", progress=False).read_bytes() == new


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _random(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def test_zip_bomb_refused_by_default_before_writing(tmp_path):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(_zip({"ok.txt": b"fine", "zeros.bin": bytes(8 << 20)}))
    assert archive.stat().st_size < 64 << 10
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"bomb\.zip.*'zeros\.bin'.*max_ratio=100"):
        safe_extract(archive, target)
    assert not target.exists()
    assert (safe_extract(archive, tmp_path / "trusted", max_ratio=None) / "zeros.bin").stat().st_size == 8 << 20


def test_total_size_limit_checked_before_writing(tmp_path):
    archive = tmp_path / "big.zip"
    archive.write_bytes(_zip({f"m{i}.bin": _random(1000, i) for i in range(3)}))
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"big\.zip.*'m2\.bin'.*3000 uncompressed bytes.*max_total_size=2500"):
        safe_extract(archive, target, max_total_size=2500)
    assert not target.exists()
    assert len(list(safe_extract(archive, tmp_path / "ok", max_total_size=3000).iterdir())) == 3


def test_member_count_limit(tmp_path):
    archive = tmp_path / "many.zip"
    archive.write_bytes(_zip({f"d/m{i}.txt": b"x" for i in range(5)}))
    with pytest.raises(ValueError, match=r"many\.zip.*5 members.*max_members=4"):
        safe_extract(archive, tmp_path / "out", max_members=4)
    assert not (tmp_path / "out").exists()


def _lying_zip(real: bytes, announced: int) -> bytes:
    """A one-member zip whose headers announce ``announced`` uncompressed bytes for ``real``'s deflated data."""
    data = bytearray(_zip({"liar.bin": real}))
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22: local + 26] = announced.to_bytes(4, "little")
    data[central + 24: central + 28] = announced.to_bytes(4, "little")
    return bytes(data)


def test_member_inflating_past_its_announced_size_is_cut_off(tmp_path):
    archive = tmp_path / "liar.zip"
    archive.write_bytes(_lying_zip(bytes(4 << 20), announced=1000))
    assert zipfile.ZipFile(archive).getinfo("liar.bin").file_size == 1000
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"liar\.zip.*'liar\.bin'"):
        safe_extract(archive, target, max_total_size=10_000)
    assert not target.exists()


def test_failed_extraction_into_existing_folder_removes_only_its_files(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    archive = tmp_path / "liar.zip"
    archive.write_bytes(_lying_zip(bytes(4 << 20), announced=1000))
    with pytest.raises(ValueError, match="liar"):
        safe_extract(archive, target)
    assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]


def test_write_manifest_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    write_manifest(path, {"sha256": "a" * 64})

    def disk_full(data, fh, **kwargs):
        fh.write(json.dumps(data)[:5])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(download.json, "dump", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_manifest(path, {"sha256": "b" * 64})
    assert read_manifest(path) == {"sha256": "a" * 64}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize("content", [b"{\"sha256\": \"ab", b"\x00\xff\xfe garbage", b"[1, 2]", b""],
                         ids=["truncated", "binary", "list", "empty"])
def test_corrupt_manifest_error_names_the_file(tmp_path, content):
    path = tmp_path / "manifest.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"manifest {path}.*corrupt|manifest {path}.*cannot be read") as info:
        read_manifest(path)
    assert "delete it" in str(info.value)
    assert read_manifest(tmp_path / "absent.json") == {}

"""Downloader, safe extraction and the hymenoptera fetcher, against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import socket
import stat
import threading
import zipfile
from email.utils import formatdate

import numpy as np
import pytest
from PIL import Image

from pipelines import datasets
from pipelines.download import ChecksumError, DownloadError, download_file, safe_extract
from featurize.weights import file_sha256


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def make_hymenoptera_zip(n_val: tuple[int, int] = (70, 83), n_train: int = 3, extra: str = "") -> bytes:
    """A tiny zip with the real archive's layout: hymenoptera_data/{train,val}/{ants,bees}/*.png."""
    buffer = io.BytesIO()
    seed = 0
    with zipfile.ZipFile(buffer, "w") as archive:
        for subset, counts in (("train", (n_train, n_train)), ("val", n_val)):
            for cls, count in zip(("ants", "bees"), counts):
                for i in range(count):
                    seed += 1
                    archive.writestr(f"hymenoptera_data/{subset}/{cls}/{cls}_{i}.png", _png(seed))
        if extra:
            archive.writestr("hymenoptera_data/README.txt", extra)
    return buffer.getvalue()


def _validators(payload: bytes) -> dict[str, str]:
    """A strong ETag and a Last-Modified date, both derived from the content (so they change with it)."""
    digest = hashlib.sha256(payload).hexdigest()
    return {"etag": f'"{digest[:16]}"', "last-modified": formatdate(1_700_000_000 + int(digest[:6], 16), usegmt=True)}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        server = self.server
        server.requests.append(dict(self.headers))
        payload = server.files.get(self.path)
        if payload is None:
            self.send_error(404)
            return
        validators = _validators(payload)
        start = 0
        range_header, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        current = validators.get(server.validator, "")
        if range_header and server.ranges and (if_range is None or not server.if_range or if_range == current):
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        if server.validator is not None:
            self.send_header("ETag" if server.validator == "etag" else "Last-Modified", current)
        body = payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.truncate_next:
            server.truncate_next = False
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    """A loopback HTTP server: ``server.files`` maps URL paths to bytes; records request headers.

    It sends a strong ETag (``server.validator = "last-modified"`` sends Last-Modified instead, None neither),
    honours ``Range`` (unless ``server.ranges`` is False) and ``If-Range`` (unless ``server.if_range`` is False),
    and cuts the next response in half when ``server.truncate_next`` is set.
    """
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.ranges, httpd.truncate_next = {}, [], True, False
    httpd.validator, httpd.if_range = "etag", True
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def hymenoptera_zip() -> bytes:
    return make_hymenoptera_zip()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hymenoptera_data.zip"


def test_download_file_writes_and_verifies(server, tmp_path):
    payload = b"x" * 100_000
    server.files["/f.bin"] = payload
    dest = download_file(server.url("/f.bin"), tmp_path / "sub" / "f.bin", expected_sha256=None, progress=False)
    assert dest.read_bytes() == payload
    assert not (tmp_path / "sub" / "f.bin.part").exists()
    digest = file_sha256(dest)
    dest.unlink()
    download_file(server.url("/f.bin"), dest, expected_sha256=digest.upper(), progress=False)
    assert dest.read_bytes() == payload


def test_download_file_checksum_mismatch_deletes(server, tmp_path):
    server.files["/f.bin"] = b"abc"
    with pytest.raises(ChecksumError, match="expected 0+"):
        download_file(server.url("/f.bin"), tmp_path / "f.bin", expected_sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_file_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url("/missing"), tmp_path / "f.bin", progress=False)


def test_interrupted_download_resumes_in_same_call(server, tmp_path):
    payload = bytes(range(256)) * 1000
    server.files["/f.bin"] = payload
    server.truncate_next = True
    dest = download_file(server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == payload
    assert "Range" not in server.requests[0]
    assert server.requests[1]["Range"] == f"bytes={len(payload) // 2}-"


def test_interrupted_download_resumes_on_next_call(server, tmp_path):
    payload = bytes(range(256)) * 1000
    server.files["/f.bin"] = payload
    server.truncate_next = True
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"f\.bin\.part"):
        download_file(server.url("/f.bin"), dest, progress=False, retries=0)
    assert (tmp_path / "f.bin.part").stat().st_size == len(payload) // 2
    assert not dest.exists()
    download_file(server.url("/f.bin"), dest, expected_sha256=None, progress=False)
    assert dest.read_bytes() == payload
    assert server.requests[-1]["Range"] == f"bytes={len(payload) // 2}-"


def test_resume_restarts_when_server_ignores_range(server, tmp_path):
    payload = b"0123456789" * 1000
    server.files["/f.bin"] = payload
    server.ranges = False
    (tmp_path / "f.bin.part").write_bytes(b"garbage")
    download_file(server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert (tmp_path / "f.bin").read_bytes() == payload


def test_download_file_offline(tmp_path):
    with pytest.raises(DownloadError, match="cannot reach"):
        download_file(_closed_port_url(), tmp_path / "f.bin", progress=False)


def _zip_with(member: zipfile.ZipInfo | str, data: bytes = b"evil") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fine/ok.txt", b"ok")
        archive.writestr(member, data)
    return buffer.getvalue()


def _symlink_member() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("fine/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "member, reason",
    [("../evil.txt", "outside"), ("fine/../../evil.txt", "outside"), ("/abs/evil.txt", "absolute"),
     ("C:/evil.txt", "absolute"), (_symlink_member(), "symbolic link")],
    ids=["dotdot", "nested-dotdot", "absolute", "drive", "symlink"],
)
def test_safe_extract_refuses_unsafe_members(tmp_path, member, reason):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip_with(member, b"../../etc/passwd"))
    target = tmp_path / "out" / "target"
    with pytest.raises(ValueError, match=reason):
        safe_extract(archive, target)
    assert not target.exists()
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_safe_extract_good_and_bad_zip(tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(_zip_with("fine/also.txt"))
    assert safe_extract(good, tmp_path / "t") == tmp_path / "t"
    assert (tmp_path / "t" / "fine" / "ok.txt").read_bytes() == b"ok"
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid zip"):
        safe_extract(broken, tmp_path / "u")


def test_hymenoptera_download_extract_and_reuse(server, tmp_path, monkeypatch, hymenoptera_zip):
    server.files["/hymenoptera_data.zip"] = hymenoptera_zip
    monkeypatch.setattr(datasets, "HYMENOPTERA_URL", server.url("/hymenoptera_data.zip"))
    imageset = datasets.load_dataset("hymenoptera", tmp_path, verbose=False)
    assert imageset.name == "hymenoptera" and imageset.classes == ["ants", "bees"]
    assert imageset.class_counts("val") == {"ants": 70, "bees": 83}
    assert imageset.class_counts("train") == {"ants": 3, "bees": 3}
    manifest = json.loads((tmp_path / "hymenoptera" / "manifest.json").read_text())
    assert manifest["sha256"] == file_sha256(tmp_path / "hymenoptera" / "hymenoptera_data.zip") and manifest["complete"]
    n_requests = len(server.requests)
    again = datasets.load_dataset("hymenoptera", tmp_path, verbose=False)
    assert again.items == imageset.items and len(server.requests) == n_requests


def test_hymenoptera_zip_placed_by_hand_is_used_offline(tmp_path, monkeypatch, hymenoptera_zip):
    monkeypatch.setattr(datasets, "HYMENOPTERA_URL", _closed_port_url())
    (tmp_path / "hymenoptera").mkdir()
    (tmp_path / "hymenoptera" / "hymenoptera_data.zip").write_bytes(hymenoptera_zip)
    assert len(datasets.load_dataset("hymenoptera", tmp_path, verbose=False)) == 153 + 6


def test_hymenoptera_checksum_mismatch(server, tmp_path, monkeypatch, hymenoptera_zip):
    server.files["/hymenoptera_data.zip"] = hymenoptera_zip
    monkeypatch.setattr(datasets, "HYMENOPTERA_URL", server.url("/hymenoptera_data.zip"))
    datasets.load_dataset("hymenoptera", tmp_path, verbose=False)
    local_zip = tmp_path / "hymenoptera" / "hymenoptera_data.zip"
    local_zip.unlink()
    shutil.rmtree(tmp_path / "hymenoptera" / "extracted")
    server.files["/hymenoptera_data.zip"] = make_hymenoptera_zip(extra="changed upstream")
    with pytest.raises(ChecksumError, match="manifest"):
        datasets.load_dataset("hymenoptera", tmp_path, verbose=False)
    assert not local_zip.exists()
    local_zip.write_bytes(make_hymenoptera_zip(extra="tampered"))
    with pytest.raises(ChecksumError, match="recorded"):
        datasets.load_dataset("hymenoptera", tmp_path, verbose=False)


def test_hymenoptera_wrong_layout(server, tmp_path, monkeypatch):
    server.files["/hymenoptera_data.zip"] = make_hymenoptera_zip(n_val=(70, 80))
    monkeypatch.setattr(datasets, "HYMENOPTERA_URL", server.url("/hymenoptera_data.zip"))
    with pytest.raises(ValueError, match="150 images, expected 153"):
        datasets.load_dataset("hymenoptera", tmp_path, verbose=False)


def test_hymenoptera_refuses_path_traversal(server, tmp_path, monkeypatch):
    server.files["/hymenoptera_data.zip"] = _zip_with("../evil.txt")
    monkeypatch.setattr(datasets, "HYMENOPTERA_URL", server.url("/hymenoptera_data.zip"))
    with pytest.raises(ValueError, match="outside"):
        datasets.load_dataset("hymenoptera", tmp_path, verbose=False)
    assert not (tmp_path / "hymenoptera" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_hymenoptera_offline_error_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "HYMENOPTERA_URL", _closed_port_url())
    with pytest.raises(DownloadError) as info:
        datasets.load_dataset("hymenoptera", tmp_path, verbose=False)
    assert str(tmp_path / "hymenoptera" / "hymenoptera_data.zip") in str(info.value)
    assert "copy it to" in str(info.value)

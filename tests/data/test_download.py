"""Tests of the download stage (segsam.data.download) against a real HTTP server on 127.0.0.1.

The server (stdlib ``http.server`` in a thread, ephemeral port) serves fixture
bytes with ``Range`` support and can misbehave on purpose: drop the connection
after N bytes, answer 503 a number of times, ignore ``Range``, or send 404.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segsam.data.download import (
    ChecksumError,
    DownloadError,
    RetryPolicy,
    download,
    fetch_file,
    fetch_from_mirror,
    part_path,
    stage_case,
    stage_volume,
)
from segsam.data.registry import RemoteFile
from segsam.errors import DataError

PAYLOAD = bytes(np.random.default_rng(7).integers(0, 256, size=300_000, dtype=np.uint8))
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
FAST = RetryPolicy(retries=3, backoff_s=0.01, max_backoff_s=0.05, timeout_s=5)


@dataclass
class Behaviour:
    """How the server treats one path."""

    body: bytes = PAYLOAD
    drop_after: list[int] = field(default_factory=list)  # per request: close after this many body bytes
    fail: list[int] = field(default_factory=list)  # per request: answer this status instead
    retry_after: str | None = None
    ignore_range: bool = False
    no_length: bool = False  # send no Content-Length: the end of the body is the connection's close


class Server:
    """A threaded HTTP server with per-path behaviours and a log of request headers."""

    def __init__(self) -> None:
        self.paths: dict[str, Behaviour] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append((self.path, dict(self.headers)))
                behaviour = server.paths.get(self.path)
                if behaviour is None:
                    self.send_error(404, "Not Found")
                    return
                if behaviour.fail:
                    status = behaviour.fail.pop(0)
                    self.send_response(status)
                    if behaviour.retry_after is not None:
                        self.send_header("Retry-After", behaviour.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, start = behaviour.body, 0
                header = self.headers.get("Range")
                if header and not behaviour.ignore_range:
                    start = int(header.split("=", 1)[1].split("-", 1)[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                if behaviour.no_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                limit = behaviour.drop_after.pop(0) if behaviour.drop_after else None
                if limit is not None:
                    self.wfile.write(chunk[:limit])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(chunk)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def ranges(self, path: str) -> list[str | None]:
        return [headers.get("Range") for p, headers in self.requests if p == path]


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_plain_download_is_verified_and_leaves_no_part(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour()
    dest = download(server.url("/f.bin"), tmp_path / "sub" / "f.bin", sha256=DIGEST, policy=FAST, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert _no_leftovers(dest.parent) == ["f.bin"]


def test_dropped_connection_resumes_with_range(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour(drop_after=[100_000])
    sleeps: list[float] = []
    dest = download(
        server.url("/f.bin"), tmp_path / "f.bin", sha256=DIGEST, policy=FAST, progress=False, sleep=sleeps.append
    )
    assert dest.read_bytes() == PAYLOAD
    ranges = server.ranges("/f.bin")
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] == "bytes=100000-"  # the second request asks for the rest only
    assert len(sleeps) == 1
    assert not part_path(dest).exists()


def test_two_drops_resume_twice(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour(drop_after=[50_000, 70_000])
    dest = download(
        server.url("/f.bin"), tmp_path / "f.bin", sha256=DIGEST, policy=FAST, progress=False, sleep=lambda s: None
    )
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("/f.bin") == [None, "bytes=50000-", "bytes=120000-"]


def test_part_file_of_a_killed_run_is_resumed(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour()
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(PAYLOAD[:123_456])
    download(server.url("/f.bin"), dest, sha256=DIGEST, policy=FAST, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("/f.bin") == ["bytes=123456-"]


def test_complete_part_file_gets_416_and_is_verified(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour()
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(PAYLOAD)
    download(server.url("/f.bin"), dest, sha256=DIGEST, policy=FAST, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_the_file(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour(drop_after=[80_000], ignore_range=True)
    dest = download(
        server.url("/f.bin"), tmp_path / "f.bin", sha256=DIGEST, policy=FAST, progress=False, sleep=lambda s: None
    )
    assert dest.read_bytes() == PAYLOAD  # not 80 000 bytes + the whole file appended


def test_retries_on_503_with_exponential_backoff(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour(fail=[503, 503])
    sleeps: list[float] = []
    policy = RetryPolicy(retries=4, backoff_s=0.5, max_backoff_s=10, timeout_s=5)
    dest = download(
        server.url("/f.bin"), tmp_path / "f.bin", sha256=DIGEST, policy=policy, progress=False, sleep=sleeps.append
    )
    assert dest.read_bytes() == PAYLOAD
    assert sleeps == [0.5, 1.0]
    assert len(server.requests) == 3


def test_retry_after_header_is_honoured_and_capped(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour(fail=[429, 503], retry_after="7")
    sleeps: list[float] = []
    policy = RetryPolicy(retries=3, backoff_s=0.1, max_backoff_s=5, timeout_s=5)
    download(
        server.url("/f.bin"), tmp_path / "f.bin", sha256=DIGEST, policy=policy, progress=False, sleep=sleeps.append
    )
    assert sleeps == [5, 5]


def test_503_forever_gives_up_with_one_line(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour(fail=[503] * 10)
    with pytest.raises(DownloadError, match="giving up after 4 attempts") as info:
        download(
            server.url("/f.bin"), tmp_path / "f.bin", sha256=DIGEST, policy=FAST, progress=False, sleep=lambda s: None
        )
    assert server.url("/f.bin") in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).endswith("nothing kept")  # no .part was ever written
    assert len(server.requests) == 4
    assert not (tmp_path / "f.bin").exists()


def test_404_fails_at_once(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(
            server.url("/missing.bin"),
            tmp_path / "f.bin",
            sha256=DIGEST,
            policy=FAST,
            progress=False,
            sleep=lambda s: None,
        )
    assert len(server.requests) == 1
    assert _no_leftovers(tmp_path) == []


def test_wrong_checksum_leaves_no_file(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour()
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError, match="sha256 mismatch") as info:
        download(server.url("/f.bin"), dest, sha256="0" * 64, policy=FAST, progress=False)
    assert DIGEST in str(info.value)
    assert _no_leftovers(tmp_path) == []  # neither the file nor its .part


def test_wrong_checksum_after_resume_leaves_no_file(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour(drop_after=[1000])
    with pytest.raises(ChecksumError):
        download(
            server.url("/f.bin"), tmp_path / "f.bin", sha256="1" * 64, policy=FAST, progress=False, sleep=lambda s: None
        )
    assert _no_leftovers(tmp_path) == []


def test_verified_file_is_not_downloaded_again(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    dest.write_bytes(PAYLOAD)
    download(server.url("/f.bin"), dest, sha256=DIGEST, policy=FAST, progress=False)
    assert server.requests == []


def test_unpublished_checksum_is_logged(server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server.paths["/f.bin"] = Behaviour()
    logger = logging.getLogger("segsam")
    propagate, logger.propagate = logger.propagate, True  # let caplog see segsam's records
    try:
        with caplog.at_level(logging.WARNING, logger="segsam.data.download"):
            download(server.url("/f.bin"), tmp_path / "f.bin", sha256=None, policy=FAST, progress=False)
    finally:
        logger.propagate = propagate
    assert DIGEST in caplog.text


@pytest.mark.parametrize("cut_short", [True, False])
def test_no_length_and_no_checksum_is_never_taken_as_complete(server: Server, tmp_path: Path, cut_short: bool) -> None:
    server.paths["/f.bin"] = Behaviour(no_length=True, drop_after=[1000] if cut_short else [])
    with pytest.raises(DownloadError, match="no length and the registry has no sha256") as info:
        download(server.url("/f.bin"), tmp_path / "f.bin", sha256=None, policy=FAST, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "f.bin").exists()  # only the .part, for a later run that learns the length
    assert _no_leftovers(tmp_path) == ["f.bin.part"]


def test_no_length_with_a_checksum_is_decided_by_the_checksum(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour(no_length=True)
    download(server.url("/f.bin"), tmp_path / "f.bin", sha256=DIGEST, policy=FAST, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_only_http_urls(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="only http"):
        download("ftp://example.org/x", tmp_path / "x", sha256=None)


@pytest.mark.parametrize("kwargs", [{"retries": -1}, {"backoff_s": -1.0}, {"timeout_s": 0}])
def test_retry_policy_validates(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


# --- local mirror ----------------------------------------------------------------------------


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    (root / "ds").mkdir(parents=True)
    (root / "ds" / "f.bin").write_bytes(PAYLOAD)
    return root


def _touch_leaves_source_alone(source: Path, dest: Path) -> None:
    """Snakemake touches each output after its job: that must not reach the source's timestamp."""
    before = source.stat().st_mtime_ns
    os.utime(dest, ns=(before + 10**9, before + 10**9))
    assert source.stat().st_mtime_ns == before
    assert not os.path.samefile(source, dest)


def test_mirror_copy_is_verified(mirror: Path, tmp_path: Path) -> None:
    dest = fetch_from_mirror(mirror, "ds/f.bin", tmp_path / "out" / "ds" / "f.bin", sha256=DIGEST)
    assert dest.read_bytes() == PAYLOAD
    assert _no_leftovers(dest.parent) == ["f.bin"]
    assert (mirror / "ds" / "f.bin").read_bytes() == PAYLOAD  # the mirror is untouched
    _touch_leaves_source_alone(mirror / "ds" / "f.bin", dest)


def test_mirror_file_with_wrong_checksum_leaves_nothing(mirror: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ChecksumError, match=r"mirror/ds/f\.bin: sha256 mismatch"):
        fetch_from_mirror(mirror, "ds/f.bin", out / "f.bin", sha256="2" * 64)
    assert _no_leftovers(out) == []
    assert (mirror / "ds" / "f.bin").read_bytes() == PAYLOAD  # removing the failed copy never touches the source


def test_missing_mirror_file_names_the_path(mirror: Path, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"ds/nope\.bin: not in the local mirror"):
        fetch_from_mirror(mirror, "ds/nope.bin", tmp_path / "x", sha256=None)


def test_fetch_file_prefers_the_mirror(server: Server, mirror: Path, tmp_path: Path) -> None:
    spec = RemoteFile("ds/f.bin", url=server.url("/f.bin"), sha256=DIGEST)
    fetch_file(spec, tmp_path / "f.bin", mirror=mirror, policy=FAST, progress=False)
    assert server.requests == []
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_fetch_file_downloads_without_mirror(server: Server, tmp_path: Path) -> None:
    server.paths["/f.bin"] = Behaviour()
    spec = RemoteFile("ds/f.bin", url=server.url("/f.bin"), sha256=DIGEST)
    assert fetch_file(spec, tmp_path / "f.bin", policy=FAST, progress=False).read_bytes() == PAYLOAD


def test_manual_file_without_mirror_says_what_to_do(tmp_path: Path) -> None:
    spec = RemoteFile("btcv/RawData.zip", manual="download it from Synapse syn3193805", sha256=None)
    with pytest.raises(DownloadError, match="Synapse syn3193805.*dataset.mirror") as info:
        fetch_file(spec, tmp_path / "x.zip")
    assert "btcv/RawData.zip" in str(info.value) and "\n" not in str(info.value)


# --- staging volumes for the slice stage ---------------------------------------------------------


def _volume(path: Path) -> Path:
    image = sitk.GetImageFromArray(np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4))
    image.SetSpacing((1.0, 2.0, 3.0))
    sitk.WriteImage(image, str(path))
    return path


def test_stage_volume_copies_nifti(tmp_path: Path) -> None:
    source = _volume(tmp_path / "a.nii.gz")
    dest = stage_volume(source, tmp_path / "raw" / "c_image.nii.gz")
    assert dest.read_bytes() == source.read_bytes()
    assert _no_leftovers(dest.parent) == ["c_image.nii.gz"]
    _touch_leaves_source_alone(source, dest)


def test_stage_volume_converts_other_formats(tmp_path: Path) -> None:
    source = _volume(tmp_path / "a.mha")
    dest = stage_volume(source, tmp_path / "raw" / "c_image.nii.gz")
    back = sitk.ReadImage(str(dest))
    assert back.GetSize() == (4, 3, 2) and back.GetSpacing() == (1.0, 2.0, 3.0)
    assert np.array_equal(sitk.GetArrayFromImage(back), np.arange(24).reshape(2, 3, 4))


def test_stage_volume_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.nii.gz: volume not found"):
        stage_volume(tmp_path / "nope.nii.gz", tmp_path / "x.nii.gz")


def test_stage_case_takes_archive_members(tmp_path: Path) -> None:
    extracted = tmp_path / "extracted" / "ds.zip"
    (extracted / "img").mkdir(parents=True)
    (extracted / "lab").mkdir()
    _volume(extracted / "img" / "c1.nii.gz")
    _volume(extracted / "lab" / "c1.nii.gz")
    out = {"image": str(tmp_path / "raw" / "c1_image.nii.gz"), "label": str(tmp_path / "raw" / "c1_label.nii.gz")}
    stage_case(
        {"image": str(extracted), "label": str(extracted)}, {"image": "img/c1.nii.gz", "label": "lab/c1.nii.gz"}, out
    )
    assert Path(out["image"]).is_file() and Path(out["label"]).is_file()

"""Tests of safe, atomic archive extraction (segsam.data.archive)."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from segsam.data.archive import UnsafeArchiveError, archive_members, extract_archive
from segsam.errors import DataError


def _tar(path: Path, entries: list[tuple[str, str, str | bytes]], mode: str = "w:gz") -> Path:
    """entries: (kind, name, data or link target); kind in file, dir, sym, hard, chr, fifo."""
    with tarfile.open(path, mode) as archive:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            payload = None
            if kind == "file":
                payload = data.encode() if isinstance(data, str) else data
                info.size = len(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            archive.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _zip(path: Path, entries: list[tuple[str, str, str]]) -> Path:
    """entries: (kind, name, data or symlink target); kind in file, sym."""
    with zipfile.ZipFile(path, "w") as archive:
        for kind, name, data in entries:
            info = zipfile.ZipInfo(name)
            if kind == "sym":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            else:
                info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
    return path


GOOD = [("dir", "data", ""), ("file", "data/a.txt", "alpha"), ("file", "data/sub/b.txt", "beta")]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "mode,suffix", [("w:gz", ".tar.gz"), ("w", ".tar"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")]
)
def test_tar_extracts(tmp_path: Path, mode: str, suffix: str) -> None:
    archive = _tar(tmp_path / f"a{suffix}", GOOD, mode)
    dest = extract_archive(archive, tmp_path / "out")
    assert (dest / "data" / "a.txt").read_text() == "alpha"
    assert (dest / "data" / "sub" / "b.txt").read_text() == "beta"
    assert _leftovers(tmp_path) == sorted([archive.name, "out"])


def test_zip_extracts(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("file", "data/a.txt", "alpha"), ("file", "./data/sub/b.txt", "beta")])
    dest = extract_archive(archive, tmp_path / "out")
    assert (dest / "data" / "a.txt").read_text() == "alpha"
    assert (dest / "data" / "sub" / "b.txt").read_text() == "beta"
    assert [m.name for m in archive_members(archive)] == ["data/a.txt", "data/sub/b.txt"]


def test_links_inside_the_target_are_kept(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "a.tar.gz", [*GOOD, ("sym", "data/link.txt", "a.txt"), ("hard", "data/hard.txt", "data/a.txt")]
    )
    dest = extract_archive(archive, tmp_path / "out")
    assert (dest / "data" / "link.txt").is_symlink()
    assert (dest / "data" / "link.txt").read_text() == "alpha"
    assert (dest / "data" / "hard.txt").read_text() == "alpha"
    zipped = _zip(tmp_path / "b.zip", [("file", "d/a.txt", "alpha"), ("sym", "d/l.txt", "a.txt")])
    out = extract_archive(zipped, tmp_path / "zout")
    assert (out / "d" / "l.txt").is_symlink() and (out / "d" / "l.txt").read_text() == "alpha"


def test_existing_target_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("old")
    extract_archive(_tar(tmp_path / "a.tar.gz", GOOD), tmp_path / "out")
    assert not (tmp_path / "out" / "stale.txt").exists()
    assert (tmp_path / "out" / "data" / "a.txt").is_file()


MALICIOUS_TAR = {
    "absolute": [("file", "/tmp/segsam_evil.txt", "x")],
    "dotdot": [*GOOD, ("file", "data/../../segsam_evil.txt", "x")],
    "dotdot-inside": [("file", "data/../a.txt", "x")],  # stays inside, but '..' is refused outright
    "symlink-escape": [*GOOD, ("sym", "data/evil", "../../outside")],
    "symlink-absolute": [("sym", "evil", "/etc")],
    "symlink-chain": [("dir", "d", ""), ("sym", "d/l", ".."), ("sym", "d/l/l2", "..")],
    "through-symlink": [("sym", "up", "data"), ("dir", "data", ""), ("file", "up/x.txt", "x")],
    "hardlink-escape": [("hard", "evil", "../../etc/passwd")],
    "hardlink-absolute": [("hard", "evil", "/etc/passwd")],
    "hardlink-not-member": [("hard", "evil", "nothere.txt")],
    "device": [("chr", "dev", "")],
    "fifo": [("fifo", "pipe", "")],
    "backslash": [("file", "..\\evil.txt", "x")],
    "drive": [("file", "C:/evil.txt", "x")],
}


@pytest.mark.parametrize("entries", list(MALICIOUS_TAR.values()), ids=list(MALICIOUS_TAR))
def test_malicious_tar_is_refused_and_nothing_extracted(tmp_path: Path, entries: list[tuple[str, str, str]]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = _tar(tmp_path / "evil.tar.gz", entries)
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, work / "out")
    assert str(archive) in str(info.value) and "\n" not in str(info.value)
    assert _leftovers(work) == []  # neither the target nor a temp folder
    assert not (tmp_path / "segsam_evil.txt").exists() and not (tmp_path / "outside").exists()
    with pytest.raises(UnsafeArchiveError):
        archive_members(archive)


MALICIOUS_ZIP = {
    "absolute": [("file", "/tmp/segsam_evil.txt", "x")],
    "dotdot": [("file", "ok.txt", "x"), ("file", "../segsam_evil.txt", "x")],
    "symlink-escape": [("sym", "evil", "../../outside")],
    "symlink-absolute": [("sym", "evil", "/etc/passwd")],
    "through-symlink": [("sym", "up", "d"), ("file", "up/x.txt", "x")],
    "backslash": [("file", "..\\evil.txt", "x")],
}


@pytest.mark.parametrize("entries", list(MALICIOUS_ZIP.values()), ids=list(MALICIOUS_ZIP))
def test_malicious_zip_is_refused_and_nothing_extracted(tmp_path: Path, entries: list[tuple[str, str, str]]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = _zip(tmp_path / "evil.zip", entries)
    with pytest.raises(UnsafeArchiveError, match="evil.zip"):
        extract_archive(archive, work / "out")
    assert _leftovers(work) == []
    assert not (tmp_path / "segsam_evil.txt").exists()


def test_refused_archive_keeps_an_existing_target(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("kept")
    with pytest.raises(UnsafeArchiveError):
        extract_archive(_tar(tmp_path / "evil.tar", MALICIOUS_TAR["dotdot"], "w"), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "kept"


def test_truncated_archive_fails_cleanly(tmp_path: Path) -> None:
    good = _tar(tmp_path / "a.tar.gz", [("file", "big.bin", bytes(range(256)) * 4000)])
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match="cut.tar.gz"):
        extract_archive(truncated, work / "out")
    assert _leftovers(work) == []


@pytest.mark.parametrize("content", [b"", b"not an archive at all"])
def test_not_an_archive(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"x\.zip: not a readable zip or tar archive"):
        extract_archive(path, tmp_path / "out")


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="archive not found"):
        extract_archive(tmp_path / "nope.zip", tmp_path / "out")

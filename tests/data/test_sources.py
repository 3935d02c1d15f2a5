"""Where stage_case reads a case's files, and their cached content digests (segsam.data.sources)."""

from __future__ import annotations

import os
from pathlib import Path

from segsam.data.registry import RemoteFile, Source
from segsam.data.sources import DigestCache, case_files, direct_path
from segsam.hashing import sha256_of


def test_digests_are_cached_by_size_and_mtime(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "a.nii.gz"
    data.write_bytes(b"one")
    cache = DigestCache.load(tmp_path / "cache.json")
    assert cache.file(data) == sha256_of(data)
    cache.save()
    calls = []
    monkeypatch.setattr("segsam.data.sources.sha256_of", lambda path: calls.append(path) or "x")
    again = DigestCache.load(tmp_path / "cache.json")
    assert again.file(data) == sha256_of(data) and calls == []  # unchanged: not read again
    os.utime(data, ns=(1, 1))  # touched: hashed again (the digest itself is unchanged)
    assert again.file(data) == "x" and len(calls) == 1 and again.changed


def test_a_folder_digest_changes_with_any_file(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"a")
    cache = DigestCache.load(tmp_path / "c.json")
    first = cache.digest(folder)
    (folder / "1.dcm").write_bytes(b"b")
    assert cache.digest(folder) != first


def test_an_unreadable_cache_is_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("{broken")
    assert DigestCache.load(tmp_path / "c.json").entries == {}


def test_mirror_files_are_read_in_place_others_downloaded(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "img.nii.gz").write_bytes(b"img")
    image = Source(RemoteFile("ds/img.nii.gz", url="https://x/img.nii.gz", sha256="0" * 64))
    label = Source(RemoteFile("ds/seg.nii.gz", url="https://x/seg.nii.gz"))  # not in the mirror
    files = case_files(
        {"image": image, "label": label},
        mirror=str(tmp_path),
        scanned=False,
        download_root="dl/ds",
        extract_root="ex/ds",
        digests=DigestCache.load(tmp_path / "c.json"),
    )
    assert files.image.in_place and files.image.path == str(tmp_path / "ds" / "img.nii.gz")
    assert files.image.digest == sha256_of(tmp_path / "ds" / "img.nii.gz") and files.image.sha256 == "0" * 64
    assert not files.label.in_place and files.label.path == "dl/ds/ds/seg.nii.gz" and files.label.digest is None
    assert direct_path(str(tmp_path), "ds/img.nii.gz", "member.nii.gz", False) is None  # archives are extracted

"""Tests of atomic file output (segsam.atomic)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segsam.atomic import atomic_dir, atomic_path, write_bytes, write_json, write_text


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_success_writes_and_leaves_no_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er" / "result.txt"  # missing parents are created
    write_text(out, "hello\n")
    assert out.read_text(encoding="utf-8") == "hello\n"
    assert [p.name for p in out.parent.iterdir()] == ["result.txt"]


def test_write_json_and_bytes(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2], "p": Path("x/y")})
    text = (tmp_path / "a.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"a": [1, 2], "b": 1, "p": "x/y"}
    assert text.index('"a"') < text.index('"b"') and text.endswith("\n")  # key-sorted, one trailing newline
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_exception_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "result.txt"
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(out) as tmp:
            tmp.write_text("partial", encoding="utf-8")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_exception_leaves_existing_destination_untouched(tmp_path: Path) -> None:
    out = tmp_path / "result.txt"
    out.write_text("old", encoding="utf-8")
    before = out.stat().st_mtime_ns
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out) as tmp:
            tmp.write_text("new but partial", encoding="utf-8")
            raise KeyboardInterrupt
    assert out.read_text(encoding="utf-8") == "old"
    assert out.stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_success_replaces_existing_destination(tmp_path: Path) -> None:
    out = tmp_path / "result.txt"
    out.write_text("old", encoding="utf-8")
    write_text(out, "new")
    assert out.read_text(encoding="utf-8") == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_temp_file_keeps_the_full_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    out = tmp_path / "vol.nii.gz"
    with atomic_path(out) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".vol.nii.gz.")
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), dtype=np.uint8)), str(tmp))
    assert sitk.ReadImage(str(out)).GetSize() == (4, 3, 2)
    with atomic_path(tmp_path / "table.parquet", suffix=".xyz") as tmp:
        assert tmp.name.endswith(".tmp.xyz")
        tmp.write_bytes(b"")


def test_files_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    expected = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600
    write_text(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == expected
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
    assert _mode(tmp_path / "b.bin") == expected
    plain = tmp_path / "plain.txt"
    plain.write_text("x", encoding="utf-8")
    assert _mode(plain) == expected
    if not _umask() & 0o044:  # the usual 022 / 002: others may read the results
        assert expected != 0o600


def _dead_pid() -> int:
    """The id of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writer_leaves_nothing_once_the_destination_is_written_again(tmp_path: Path) -> None:
    final = tmp_path / "out.npy"
    dead = _dead_pid()
    stale_file = tmp_path / f".out.npy.{dead}.x1y2.tmp.npy"
    stale_file.write_bytes(b"half written")
    stale_dir = tmp_path / f".out.npy.tmp-{dead}"
    stale_dir.mkdir()
    (stale_dir / "part.png").write_bytes(b"x")
    live = tmp_path / f".out.npy.{os.getppid()}.abcd.tmp.npy"  # a process that still runs: left alone
    live.write_bytes(b"in progress")
    other = tmp_path / f".other.npy.{dead}.zz.tmp.npy"  # another destination's: not this write's business
    other.write_bytes(b"x")
    write_bytes(final, b"done")
    assert final.read_bytes() == b"done"
    assert not stale_file.exists() and not stale_dir.exists()
    assert live.exists() and other.exists()


def test_atomic_dir_replaces_the_folder_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "case"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["case"]  # no temporary left
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["case"]

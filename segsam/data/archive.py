"""Safe, atomic extraction of zip and tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) archives.

Every member is checked *before* anything is written; one bad member refuses
the whole archive with a one-line :class:`UnsafeArchiveError` naming it:

* absolute names (``/etc/x``, ``C:\\x``, ``\\\\server\\x``), backslashes, and any ``..`` part;
* symbolic links whose target is absolute or leads outside the extraction folder;
* hard links to anything but an earlier regular-file member;
* members whose path runs *through* a symbolic-link member (``link/x``), which
  could otherwise be pointed anywhere;
* device files, FIFOs and other special members.

Extraction goes to a temporary sibling folder that is renamed onto the target
only when every member is out, so a failure (or a refused archive) leaves no
partial target. An existing target is replaced.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from segsam.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["Member", "UnsafeArchiveError", "archive_members", "extract_archive"]


class UnsafeArchiveError(DataError):
    """An archive member could escape the extraction folder (or is a special file)."""


@dataclass(frozen=True)
class Member:
    """One checked archive member.

    Attributes:
        name: Normalised relative POSIX path.
        kind: ``file``, ``dir``, ``symlink`` or ``hardlink``.
        target: Link target (as stored) for links, else None.
    """

    name: str
    kind: str
    target: str | None = None


def _clean_name(name: str, archive: Path) -> str:
    """Normalise a member name or refuse it."""
    if "\\" in name or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a backslash or a drive letter")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a '..' path component")
    if not parts:
        return ""
    return "/".join(parts)


def _check_link_target(name: str, target: str, archive: Path) -> None:
    if not target or target.startswith("/") or "\\" in target or re.match(r"^[A-Za-z]:", target):
        raise UnsafeArchiveError(f"{archive}: link {name!r} -> {target!r} points to an absolute or empty path")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(f"{archive}: link {name!r} -> {target!r} leads outside the extraction folder")


def _check_through_links(members: Iterable[Member], archive: Path) -> None:
    links = {m.name for m in members if m.kind == "symlink"}
    for member in members:
        parts = member.name.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in links:
                raise UnsafeArchiveError(
                    f"{archive}: member {member.name!r} lies under the symbolic link {'/'.join(parts[:depth])!r}"
                )


def _is_zip_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _zip_members(archive: zipfile.ZipFile, path: Path) -> list[tuple[Member, zipfile.ZipInfo]]:
    out = []
    for info in archive.infolist():
        name = _clean_name(info.filename, path)
        if not name:
            continue
        if _is_zip_symlink(info):
            target = archive.read(info).decode("utf-8", errors="replace")
            _check_link_target(name, target, path)
            out.append((Member(name, "symlink", target), info))
        elif info.is_dir():
            out.append((Member(name, "dir"), info))
        else:
            out.append((Member(name, "file"), info))
    return out


def _tar_members(archive: tarfile.TarFile, path: Path) -> list[tuple[Member, tarfile.TarInfo]]:
    out = []
    regular: set[str] = set()
    for info in archive.getmembers():
        name = _clean_name(info.name, path)
        if not name:
            continue
        if info.issym():
            _check_link_target(name, info.linkname, path)
            member = Member(name, "symlink", info.linkname)
        elif info.islnk():
            target = _clean_name(info.linkname, path)
            if target not in regular:
                raise UnsafeArchiveError(
                    f"{path}: hard link {name!r} -> {info.linkname!r} does not point to an earlier regular file "
                    "of the archive"
                )
            member = Member(name, "hardlink", target)
        elif info.isdir():
            member = Member(name, "dir")
        elif info.isreg():
            member = Member(name, "file")
            regular.add(name)
        else:
            raise UnsafeArchiveError(f"{path}: member {name!r} is a device, FIFO or other special file")
        info.name = name
        if info.islnk():
            info.linkname = member.target or ""
        out.append((member, info))
    return out


def _open(path: Path) -> tuple[str, zipfile.ZipFile | tarfile.TarFile]:
    if not path.is_file():
        raise DataError(f"{path}: archive not found")
    try:
        if zipfile.is_zipfile(path):
            return "zip", zipfile.ZipFile(path)
        return "tar", tarfile.open(path, "r:*")
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DataError(f"{path}: not a readable zip or tar archive ({err})") from err


def _checked_members(
    kind: str, archive: zipfile.ZipFile | tarfile.TarFile, path: Path
) -> list[tuple[Member, zipfile.ZipInfo | tarfile.TarInfo]]:
    """Every member of an open archive, checked (see the module doc), with its zip or tar entry."""
    pairs = _zip_members(archive, path) if kind == "zip" else _tar_members(archive, path)  # type: ignore[arg-type]
    _check_through_links([m for m, _ in pairs], path)
    return pairs  # type: ignore[return-value]


def archive_members(path: str | Path) -> list[Member]:
    """List and check an archive's members without extracting anything.

    The one lister of archive contents: extraction checks the same list, and the
    dataset registry reads case lists from its names (normalised relative POSIX
    paths, as they lie in the extracted folder). A zip is listed from its central
    directory, without reading the members' data.

    Raises:
        DataError: unreadable archive.
        UnsafeArchiveError: a member that could escape (see the module doc).
    """
    path = Path(path)
    kind, archive = _open(path)
    try:
        with archive:
            pairs = _checked_members(kind, archive, path)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise DataError(f"{path}: unreadable or truncated archive ({err})") from err
    return [m for m, _ in pairs]


def extract_archive(path: str | Path, dest: str | Path) -> Path:
    """Extract a zip or tar archive into ``dest``, safely and atomically.

    Args:
        path: The archive.
        dest: The folder to create (replaced if it exists).

    Returns:
        ``dest``.

    Raises:
        DataError: unreadable or truncated archive (nothing is left at ``dest``'s temp folder).
        UnsafeArchiveError: a member that could escape; nothing is extracted.
    """
    path, dest = Path(path), Path(dest)
    kind, archive = _open(path)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    try:
        with archive:
            pairs = _checked_members(kind, archive, path)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if kind == "zip":
                _extract_zip(archive, pairs, tmp)  # type: ignore[arg-type]
            else:
                _extract_tar(archive, pairs, tmp)  # type: ignore[arg-type]
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{path}: unreadable or truncated archive ({err})") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s: %d members extracted to %s", path, len(pairs), dest)
    return dest


def _extract_zip(archive: zipfile.ZipFile, pairs: list[tuple[Member, zipfile.ZipInfo]], root: Path) -> None:
    links = []
    for member, info in pairs:
        target = root / member.name
        if member.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif member.kind == "symlink":
            links.append(member)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    for member in links:  # links last, so that no file is ever written through one
        target = root / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        os.symlink(member.target or "", target)


def _extract_tar(archive: tarfile.TarFile, pairs: list[tuple[Member, tarfile.TarInfo]], root: Path) -> None:
    infos = [info for _, info in pairs]
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the standard library's own checks on top of ours
        archive.extractall(root, members=infos, filter="data")
    else:  # pragma: no cover - older 3.11 releases
        archive.extractall(root, members=infos)

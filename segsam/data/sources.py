"""Where the staging step reads a case's files, and what they hold (sha256, cached).

A file that the dataset's mirror holds at its registry path, and every file of
a user's ``local`` / ``nnunet`` folder, is read *in place* by rule
``stage_case`` (:func:`case_files`): one staged copy, no download copy. Other
files come through the download stage (``fetch_file`` / ``extract_archive``).

Snakemake decides reruns by modification times, so a file read in place is
given to it as ``ancient`` (its time does not count) and its content as a
``params`` entry: its sha256 (a folder's: over its files). A changed file then
re-stages exactly its case and what depends on it, and a file that is only
touched reruns nothing. :class:`DigestCache` keeps the digests between
Snakemake starts, keyed by (path, size, mtime in ns), so an unchanged file is
hashed once.

Imports only the standard library (and the small :mod:`segsam.atomic`): the
workflow calls it at start-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segsam.atomic import write_json
from segsam.hashing import sha256_of

log = logging.getLogger(__name__)

__all__ = ["CaseFile", "CaseFiles", "DigestCache", "case_files", "direct_path"]

#: Format of the digest cache file.
CACHE_VERSION = 1


@dataclass
class DigestCache:
    """sha256 digests of files, remembered by (path, size, mtime_ns) in a JSON file.

    Attributes:
        path: The cache file (created on :meth:`save`).
        entries: ``{absolute path: [size, mtime_ns, sha256]}``.
        changed: Whether :meth:`save` has anything to write.
    """

    path: Path
    entries: dict[str, list[Any]] = field(default_factory=dict)
    changed: bool = False

    @classmethod
    def load(cls, path: str | Path) -> DigestCache:
        """Read the cache; a missing or unreadable file is an empty cache (digests are recomputed)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            entries = raw["files"] if raw.get("version") == CACHE_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            entries = {}
        return cls(path, {k: v for k, v in entries.items() if isinstance(v, list) and len(v) == 3})

    def file(self, path: str | Path) -> str:
        """The sha256 of one file: from the cache while its size and mtime are unchanged, else computed."""
        key = os.path.abspath(path)
        stat = os.stat(key)
        known = self.entries.get(key)
        if known is not None and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return str(known[2])
        digest = sha256_of(key)
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
        self.changed = True
        return digest

    def digest(self, path: str | Path) -> str:
        """The sha256 of a file, or of a folder (a DICOM series, per-class masks): over its files' names and digests."""
        path = Path(path)
        if not path.is_dir():
            return self.file(path)
        combined = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            combined.update(f"{file.relative_to(path).as_posix()}\0{self.file(file)}\n".encode())
        return combined.hexdigest()

    def save(self) -> None:
        """Write the cache (atomically) when a digest was computed since it was read."""
        if self.changed:
            write_json(self.path, {"version": CACHE_VERSION, "files": dict(sorted(self.entries.items()))})
            self.changed = False


@dataclass(frozen=True)
class CaseFile:
    """Where the staging step reads a case's image or label.

    Attributes:
        path: The file (or folder) it reads: in the mirror / user's folder, or a download.
        in_place: Read in place from the mirror or the user's folder (else a download-stage output).
        digest: The content's sha256 when read in place (a rerun trigger), else None.
        sha256: The registry's digest to check when read in place, else None.
        shown: The file named in the slicing stage's messages (``path``, with an archive member appended).
    """

    path: str
    in_place: bool
    digest: str | None
    sha256: str | None
    shown: str


@dataclass(frozen=True)
class CaseFiles:
    """A case's image and label sources."""

    image: CaseFile
    label: CaseFile

    def role(self, name: str) -> CaseFile:
        return self.image if name == "image" else self.label


def direct_path(mirror: str | None, relpath: str, member: str | None, scanned: bool) -> str | None:
    """The path to read a registry file in place, or None when it must come through the download stage.

    Args:
        mirror: The dataset's mirror (``dataset.mirror``), or None.
        relpath: The file's registry path (its path under the mirror).
        member: The archive member the case needs, if any (archives are extracted, not read in place).
        scanned: A user's folder (``local`` / ``nnunet``): every file is there by construction.
    """
    if mirror is None or member is not None:
        return None
    path = os.path.join(mirror, relpath)
    return path if scanned or os.path.exists(path) else None


def case_files(
    sources: Mapping[str, Any],
    *,
    mirror: str | None,
    scanned: bool,
    download_root: str,
    extract_root: str,
    digests: DigestCache,
) -> CaseFiles:
    """Where the staging step reads a case's image and label, with their digests.

    Args:
        sources: ``{"image": Source, "label": Source}`` (:class:`segsam.data.registry.Source`).
        mirror: The dataset's mirror, or None.
        scanned: The dataset is a user's folder (``local`` / ``nnunet``).
        download_root: ``<download_dir>/<dataset>``.
        extract_root: ``<extract_dir>/<dataset>``.
        digests: The digest cache (digests of files read in place are computed here).

    Returns:
        The case's two :class:`CaseFile`.
    """
    out = {}
    for role in ("image", "label"):
        source = sources[role]
        direct = direct_path(mirror, source.file.path, source.member, scanned)
        if direct is not None:
            out[role] = CaseFile(direct, True, digests.digest(direct), source.file.sha256, direct)
            continue
        root = extract_root if source.member else download_root
        path = f"{root}/{source.file.path}"
        out[role] = CaseFile(path, False, None, None, f"{path}/{source.member}" if source.member else path)
    return CaseFiles(out["image"], out["label"])

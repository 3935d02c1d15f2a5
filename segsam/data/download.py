"""Fetch dataset files: resumable HTTP(S) downloads and a local mirror, sha256-checked.

Guarantees, for :func:`download` and :func:`fetch_file`:

* **Nothing unchecked is used.** Data arrive in ``<dest>.part``; only when the
  whole file is there and its sha256 matches the expected digest is it renamed
  onto ``dest`` (an atomic rename). A wrong digest removes the ``.part`` file and
  leaves no ``dest``. Where a source publishes no digest (``sha256=None``), the
  computed one is logged so that it can be pinned in the registry.
* **Resumable.** A dropped connection or a killed job leaves the ``.part``
  file; the next attempt asks for the rest with an HTTP ``Range`` request. A
  server that ignores ``Range`` (``200`` instead of ``206``) restarts the file.
* **Retries** with the shared :class:`segsam.retry.RetryPolicy` (exponential
  back-off, capped, or the server's ``Retry-After``) on connection errors, time-outs, truncated
  bodies, ``408``, ``425``, ``429`` and ``5xx``. Other HTTP errors (``403``,
  ``404``, ...) fail at once with a one-line :class:`DownloadError`.
* **Mirror.** A local folder standing in for the remote files, at the same
  relative paths: the file is copied, then checked like a download.

A file the registry's mirror (or a user's ``local`` / ``nnunet`` folder) holds is
not fetched: :func:`stage_case` reads it in place and makes the one staged copy,
checking its sha256 where the registry has one.

Files are copied, never hard-linked: Snakemake touches every output once its job
is done, and a link shares its timestamp with its source, so a linked output
would change the mirror's (or the upstream download's) modification time and
could make an input look newer than the output made from it.

Only the standard library is used for HTTP (``urllib``), so that the data stage
needs no extra dependency.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from tqdm import tqdm

from segsam.data.registry import RemoteFile
from segsam.errors import DataError
from segsam.hashing import sha256_of
from segsam.retry import RetriesExhausted, Retryable, RetryPolicy, call_with_retries, retry_after_seconds

log = logging.getLogger(__name__)

__all__ = [
    "ChecksumError",
    "DownloadError",
    "RetryPolicy",
    "download",
    "fetch_file",
    "fetch_from_mirror",
    "part_path",
    "sha256_of",
    "verify_file",
]

CHUNK = 1 << 20
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "segsam-download/1 (python-urllib)"
#: Retries when the caller gives no policy (the workflow passes dataset.download's).
DEFAULT_POLICY = RetryPolicy()


class DownloadError(DataError):
    """A file could not be fetched (HTTP error, too many retries, missing mirror file)."""


class ChecksumError(DataError):
    """A fetched file does not match its expected sha256 (nothing was kept)."""


def part_path(dest: str | Path) -> Path:
    """The partial file that a download of ``dest`` writes to and resumes from."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def verify_file(path: str | Path, sha256: str | None, *, source: str) -> str:
    """Check ``path`` against ``sha256``; on a mismatch delete it and raise.

    Args:
        path: The file to check (a ``.part`` file or a copy).
        sha256: Expected digest, or None to only compute and log it.
        source: Where the file came from (named in messages).

    Returns:
        The computed digest.

    Raises:
        ChecksumError: the digest differs; ``path`` has been removed.
    """
    actual = sha256_of(path)
    if sha256 is None:
        log.warning(
            "%s: no sha256 to check against; got %s (pin it in config/datasets.yaml if the source is fixed)",
            source,
            actual,
        )
    elif actual != sha256.lower():
        Path(path).unlink(missing_ok=True)
        raise ChecksumError(f"{source}: sha256 mismatch (expected {sha256}, got {actual}); the file was not kept")
    return actual


def _total_from_content_range(value: str | None) -> int | None:
    """``bytes 100-199/1000`` -> 1000 (None when absent or ``*``)."""
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _attempt(
    url: str, part: Path, timeout: float, progress: bool, opener: Callable[..., http.client.HTTPResponse]
) -> int | None:
    """One request: append the rest of ``url`` to ``part`` (or restart it).

    Returns:
        The file's length in bytes when the server said it (``Content-Length`` or
        ``Content-Range``), reached by ``part``; None when the server did not say.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = opener(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # the part already holds every byte (or more than the file has): let the checksum decide
            total = _total_from_content_range(err.headers.get("Content-Range"))
            err.close()
            if total is not None and total != offset:
                part.unlink()
                raise Retryable(f"HTTP 416 with {offset} bytes kept of {total}: restarting") from err
            return total
        retry_after = retry_after_seconds(err.headers.get("Retry-After")) if err.headers else None
        err.close()
        if err.code in RETRY_STATUS:
            raise Retryable(f"HTTP {err.code} {err.reason}", retry_after) from err
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise Retryable(f"connection failed ({reason})") from err
    with response:
        status = response.status
        if offset and status == 206:
            mode = "ab"
            start = offset
        else:  # 200: the server sends the whole file (no resume possible)
            if offset:
                log.info("%s: server ignored the Range request; restarting from byte 0", url)
            mode, start = "wb", 0
        length = response.headers.get("Content-Length")
        expected_end = start + int(length) if length and length.isdigit() else None
        total = _total_from_content_range(response.headers.get("Content-Range")) or expected_end
        received = start
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=Path(part.name).stem[:40],
            disable=None if progress else True,
            mininterval=1.0,
            leave=False,
        )
        try:
            with open(part, mode) as stream:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (TimeoutError, http.client.IncompleteRead, OSError) as err:
                        raise Retryable(f"connection dropped after {received} bytes ({type(err).__name__})") from err
                    if not block:
                        break
                    stream.write(block)
                    received += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
    if expected_end is not None and received < expected_end:
        raise Retryable(f"connection dropped after {received} of {expected_end} bytes")
    return total


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None,
    policy: RetryPolicy = DEFAULT_POLICY,
    progress: bool = True,
    opener: Callable[..., http.client.HTTPResponse] = urllib.request.urlopen,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download ``url`` to ``dest``: resumable, retried, and checked before it lands.

    A ``dest`` that already exists and matches ``sha256`` is kept as it is.

    Args:
        url: ``http://`` or ``https://`` address.
        dest: Final path; its folder is created. Partial data live in ``<dest>.part``.
        sha256: Expected hex digest, or None where the source publishes none.
        policy: Retries, back-off and time-out.
        progress: Show a tqdm progress bar (on stderr, when it is a terminal).
        opener: ``urllib.request.urlopen``-compatible callable (for tests).
        sleep: Waits between retries (for tests).

    Returns:
        ``dest``.

    Raises:
        DownloadError: a non-retryable HTTP error, or all retries used up (the
            ``.part`` file is kept so that the next run resumes).
        ChecksumError: the complete file has the wrong digest (nothing is kept).
    """
    dest = Path(dest)
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http:// and https:// addresses can be downloaded")
    if dest.is_file() and sha256 is not None and sha256_of(dest) == sha256.lower():
        log.info("%s: already present and verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    attempt = functools.partial(_attempt, url, part, policy.timeout_s, progress, opener)
    try:
        length = call_with_retries(attempt, policy, url, sleep=sleep)
    except RetriesExhausted as err:
        kept = f"{part.stat().st_size} bytes kept in {part} for the next run" if part.exists() else "nothing kept"
        raise DownloadError(f"{url}: giving up after {err.attempts} attempts ({err.reason}); {kept}") from err
    if not part.exists():
        part.touch()  # an empty body: the checksum (or the announced length) decides whether that is right
    if sha256 is None and length is None:
        raise DownloadError(
            f"{url}: the server sent no length and the registry has no sha256, so a cut-short transfer cannot be "
            f"told from a complete one ({part.stat().st_size} bytes kept in {part}); add the file's sha256 to "
            "the dataset registry, or put the file in the dataset's mirror folder"
        )
    verify_file(part, sha256, source=url)
    os.replace(part, dest)
    log.info("%s -> %s (%d bytes, sha256 verified: %s)", url, dest, dest.stat().st_size, sha256 is not None)
    return dest


def fetch_from_mirror(mirror: str | Path, relpath: str, dest: str | Path, *, sha256: str | None) -> Path:
    """Take ``<mirror>/<relpath>`` as the file: copy it, then check it.

    The copy is made as ``<dest>.part`` and renamed onto ``dest`` only after the
    checksum passes, so a bad mirror file leaves nothing behind. It is a copy,
    not a link, so that Snakemake touching ``dest`` leaves the mirror alone.

    Args:
        mirror: The folder standing in for the remote files.
        relpath: The file's relative path (its registry key).
        dest: Final path.
        sha256: Expected hex digest, or None.

    Returns:
        ``dest``.

    Raises:
        DownloadError: the file is not in the mirror.
        ChecksumError: the mirror's file has the wrong digest.
    """
    source = Path(mirror) / relpath
    dest = Path(dest)
    if not source.is_file():
        raise DownloadError(
            f"{source}: not in the local mirror {mirror} (expected the file at its registry path {relpath})"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    part.unlink(missing_ok=True)
    shutil.copyfile(source, part)
    try:
        verify_file(part, sha256, source=str(source))
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    log.info("%s -> %s (copied, sha256 verified: %s)", source, dest, sha256 is not None)
    return dest


def fetch_file(
    spec: RemoteFile,
    dest: str | Path,
    *,
    mirror: str | Path | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    progress: bool = True,
    manual_step: str | None = None,
) -> Path:
    """Fetch one registry file: from the mirror when one is given, else from its URL.

    Args:
        spec: The registry's description of the file.
        dest: Final path.
        mirror: Local folder standing in for the remote files (same relative paths).
        policy: Retries, back-off and time-out of HTTP downloads.
        progress: Show a progress bar.
        manual_step: The dataset's documented manual step, quoted when a manual
            file is missing.

    Returns:
        ``dest``.

    Raises:
        DownloadError: a manual file without a mirror, or a failed download.
        ChecksumError: a wrong digest.
    """
    if mirror is not None:
        return fetch_from_mirror(mirror, spec.path, dest, sha256=spec.sha256)
    if spec.url is None:
        step = manual_step or spec.manual
        raise DownloadError(
            f"{spec.path}: has no download address ({' '.join(str(step).split())}); put the file at this relative path "
            "under a folder and set the dataset's mirror (dataset.mirror, or cross.datasets.<name>.mirror) to "
            "that folder"
        )
    return download(spec.url, dest, sha256=spec.sha256, policy=policy, progress=progress)


def _copy_checked(source: Path, dest: Path, sha256: str | None) -> None:
    """Copy ``source`` to ``dest`` through ``<dest>.part``, hashing while copying; a wrong digest keeps nothing.

    Raises:
        ChecksumError: the copy's sha256 is not ``sha256`` (naming ``source``).
    """
    part = part_path(dest)
    part.unlink(missing_ok=True)
    digest = hashlib.sha256()
    try:
        with source.open("rb") as reader, part.open("wb") as writer:
            while block := reader.read(CHUNK):
                digest.update(block)
                writer.write(block)
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise ChecksumError(
                f"{source}: sha256 mismatch (expected {sha256}, got {digest.hexdigest()}); the file was changed "
                "since the registry recorded it, nothing was staged"
            )
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)


def stage_volume(source: str | Path, dest: str | Path, *, sha256: str | None = None) -> Path:
    """Put one volume at ``dest`` (a ``.nii.gz`` path) for the slicing stage.

    A ``.nii.gz`` source is copied (not linked: see the module docstring); any other format SimpleITK
    reads (``.nii``, ``.mha``, ``.nrrd``, a DICOM folder) is converted, after the
    checks of :func:`segsam.data.io.read_volume`.

    Args:
        source: The downloaded or extracted volume, or the user's file itself (a mirror or a local folder).
        dest: Target path ending in ``.nii.gz``.
        sha256: The registry's digest of ``source``, checked (for a file read straight from a mirror).

    Returns:
        ``dest``.

    Raises:
        DataError: missing or unreadable source.
        ChecksumError: ``source`` does not match ``sha256``; nothing is kept.
    """
    source, dest = Path(source), Path(dest)
    if not source.exists():
        raise DataError(f"{source}: volume not found (is the registry's path or archive member right?)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_file() and source.name.lower().endswith(".nii.gz"):
        _copy_checked(source, dest, sha256)
        log.info("%s -> %s (copied%s)", source, dest, ", sha256 verified" if sha256 else "")
        return dest
    if sha256 is not None and source.is_file():
        verify_file_unchanged(source, sha256)
    import SimpleITK as sitk  # only for conversions: keeps this module light for the workflow's parse step

    from segsam.atomic import atomic_path
    from segsam.data.io import read_volume

    image = read_volume(source)
    with atomic_path(dest) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    log.info("%s -> %s (converted)", source, dest)
    return dest


def verify_file_unchanged(path: Path, sha256: str) -> None:
    """Check a source file that is read in place (never removed, unlike :func:`verify_file`).

    Raises:
        ChecksumError: its digest is not ``sha256``.
    """
    actual = sha256_of(path)
    if actual != sha256.lower():
        raise ChecksumError(
            f"{path}: sha256 mismatch (expected {sha256}, got {actual}); the file was changed since the registry "
            "recorded it, nothing was staged"
        )


def stage_masks(folder: str | Path, masks: Mapping[str, int], dest: str | Path) -> Path:
    """Combine a folder of per-class masks into one label volume at ``dest`` (:func:`segsam.data.io.combine_masks`).

    Raises:
        DataError: unreadable masks, masks on different grids, or overlapping masks.
    """
    import SimpleITK as sitk

    from segsam.atomic import atomic_path
    from segsam.data.io import combine_masks

    label = combine_masks(folder, masks)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        sitk.WriteImage(label, str(tmp), useCompression=True)
    return Path(dest)


def stage_case(
    sources: Mapping[str, str],
    members: Mapping[str, str | None],
    outputs: Mapping[str, str],
    *,
    sha256: Mapping[str, str | None] | None = None,
    masks: Mapping[str, int] | None = None,
) -> None:
    """Stage a case's image and label (see :func:`stage_volume`); on any error neither output is kept.

    Args:
        sources: ``{"image": path, "label": path}``: downloaded files, extracted
            archive folders when ``members`` names a member, or the user's files
            themselves (a mirror, a local or nnU-Net folder: read in place, one staged copy).
        members: ``{"image": member or None, "label": member or None}``.
        outputs: ``{"image": dest, "label": dest}``.
        sha256: ``{"image": digest or None, "label": ...}``: the registry's digests of sources read
            in place (a download was checked when it was fetched).
        masks: For a label that is a folder of per-class masks: ``{mask file: label value}``.

    Raises:
        DataError: a missing or unreadable source, a wrong digest, or bad per-class masks.
    """
    sha256 = sha256 or {}
    try:
        for role in ("image", "label"):
            source = Path(sources[role])
            member = members.get(role)
            if role == "label" and masks:
                stage_masks(source, masks, outputs[role])
            else:
                stage_volume(source / member if member else source, outputs[role], sha256=sha256.get(role))
    except BaseException:
        for output in outputs.values():
            Path(output).unlink(missing_ok=True)
        raise
    log.info("staged %s and %s", outputs["image"], outputs["label"])

"""Which scans an input names, and where each one's outputs and prompt file go.

An input is one scan (a volume file or a folder holding one DICOM series) or a
folder of scans (volume files, and sub-folders each holding a DICOM series). A
scan's name is its file name without the volume suffix (``case1.nii.gz`` ->
``case1``), or its folder's name. Imported by the workflow at start-up: standard
library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from segsam.errors import DataError

#: File suffixes read as volumes (longest first, so that ``.nii.gz`` wins over ``.gz``).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
#: Suffix of each output label volume in folder mode.
OUTPUT_SUFFIX = ".nii.gz"
#: Suffixes of a scan's prompt file inside a prompt folder, in the order they are looked for.
PROMPT_SUFFIXES = (".json", ".csv")
#: Scan names the workflow accepts (its ``{scan}`` wildcard).
SCAN_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class ScanJob:
    """One scan to segment.

    Attributes:
        name: The scan's name (file name without its volume suffix, or folder name).
        input: The volume file or DICOM series folder.
        output: The label volume to write.
        prompts: Its prompt file, or None (prompt-free).
    """

    name: str
    input: Path
    output: Path
    prompts: Path | None


def volume_suffix(path: str | Path) -> str | None:
    """The volume suffix of a file name (``.nii.gz``, ``.nrrd``, ...), or None."""
    name = Path(path).name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)


def scan_name(path: str | Path) -> str:
    """A scan's name: the file name without its volume suffix, or the folder's name."""
    path = Path(path)
    suffix = volume_suffix(path)
    return path.name[: -len(suffix)] if suffix and not path.is_dir() else path.name


def sidecar_path(output: str | Path) -> Path:
    """The JSON sidecar of a label volume: ``seg.nii.gz`` -> ``seg.json``."""
    output = Path(output)
    return output.with_name(f"{scan_name(output)}.json")


def probability_path(output: str | Path, class_name: str) -> Path:
    """The probability volume of one class: ``seg.nii.gz`` -> ``seg_prob_liver.nii.gz``."""
    output = Path(output)
    return output.with_name(f"{scan_name(output)}_prob_{class_name}{volume_suffix(output) or OUTPUT_SUFFIX}")


def _holds_dicom(folder: Path) -> bool:
    """Whether a folder holds DICOM files directly (any file that is not a volume, a prompt or hidden file)."""
    return any(
        p.is_file() and not p.name.startswith(".") and volume_suffix(p) is None and p.suffix not in PROMPT_SUFFIXES
        for p in folder.iterdir()
    )


def is_scan_folder(folder: str | Path) -> bool:
    """Whether a folder is a folder of scans (volume files or series sub-folders), not one DICOM series.

    A folder that holds volume files, or only sub-folders, is a folder of scans;
    one that holds other files is taken as a DICOM series (its reader says so
    when it holds none).
    """
    folder = Path(folder)
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if any(p.is_file() and volume_suffix(p) for p in entries):
        return True
    return bool(entries) and not _holds_dicom(folder)


def list_scans(folder: str | Path) -> dict[str, Path]:
    """The scans of a folder of scans, by name (sorted).

    Args:
        folder: Volume files and sub-folders each holding one DICOM series;
            hidden entries and other files are ignored.

    Raises:
        DataError: The folder is missing or holds no scan, two scans share a
            name (``a.nii`` and ``a.nii.gz``), or a name has characters other
            than letters, digits, ``_``, ``.`` and ``-``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: input folder not found")
    scans: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not (path.is_dir() or volume_suffix(path)):
            continue
        name = scan_name(path)
        if not SCAN_NAME.match(name):
            raise DataError(f"{path}: scan name {name!r} has characters other than letters, digits, '_', '.', '-'")
        if name in scans:
            raise DataError(f"{path}: two scans are named {name!r} ({scans[name].name} too); rename one")
        scans[name] = path
    if not scans:
        raise DataError(f"{folder}: folder holds no scan (volume files {', '.join(VOLUME_SUFFIXES)} or DICOM folders)")
    return scans


def prompt_file(prompts: str | Path, name: str) -> Path:
    """The prompt file of scan ``name`` in a prompt folder: ``<name>.json`` or ``<name>.csv``.

    Raises:
        DataError: Neither exists.
    """
    for suffix in PROMPT_SUFFIXES:
        candidate = Path(prompts) / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(f"{prompts}: no prompt file for scan {name!r} ({name}.json or {name}.csv)")


def plan_jobs(input: str | Path, output: str | Path, prompts: str | Path | None) -> list[ScanJob]:
    """The scans an input names, each with its output and prompt file.

    One scan (a volume file or a DICOM series folder): ``output`` is the label
    volume when it ends with a volume suffix, else a folder that gets
    ``<scan>.nii.gz``; ``prompts`` is its prompt file. A folder of scans
    (:func:`is_scan_folder`): ``output`` is a folder, and ``prompts`` (if given)
    a folder with ``<scan>.json`` or ``<scan>.csv`` per scan.

    Raises:
        DataError: A missing input, an output file name for a folder of scans, or
            a missing prompt file (one line naming it).
    """
    input = Path(input)
    output = Path(output)
    if not input.exists():
        raise DataError(f"{input}: file not found")
    if input.is_dir() and is_scan_folder(input):
        if volume_suffix(output):
            raise DataError(f"{output}: the input {input} is a folder of scans, so the output must be a folder")
        if prompts is not None and not Path(prompts).is_dir():
            raise DataError(f"{prompts}: the input is a folder of scans: pass a folder of <scan>.json / <scan>.csv")
        return [
            ScanJob(
                name, path, output / f"{name}{OUTPUT_SUFFIX}", None if prompts is None else prompt_file(prompts, name)
            )
            for name, path in list_scans(input).items()
        ]
    name = scan_name(input)
    target = output if volume_suffix(output) else output / f"{name}{OUTPUT_SUFFIX}"
    if prompts is not None and not Path(prompts).is_file():
        raise DataError(f"{prompts}: prompt file not found")
    return [ScanJob(name, input, target, None if prompts is None else Path(prompts))]

"""Users' own folders: which files are a case's image and label, and safe case ids.

Two layouts (``kind`` in ``config/datasets.yaml``):

* ``local``: files named by a template under the dataset's mirror, e.g.
  ``{modality}/{case}_image.<ext>`` and ``{modality}/{case}_label.<ext>``
  (:func:`scan_local`). An image that is a *folder* is a DICOM series; a label
  that is a folder holds one mask file per class (TotalSegmentator's
  ``<case>/segmentations/<class>.nii.gz``), combined by the stage step
  (:func:`segsam.data.io.combine_masks`).
* ``nnunet``: an nnU-Net v2 raw dataset or a Medical Segmentation Decathlon task
  (:func:`scan_nnunet`): ``imagesTr/`` + ``labelsTr/`` (v2: ``<case>_0000.<ext>``
  images and ``<case>.<ext>`` labels; MSD: the same names in both), ``imagesTs/``
  (listed for prediction), modality and label names from ``dataset.json``.

Files a layout does not match are returned (``unmatched``), so that the
workflow lists them in one warning instead of skipping them silently.

Case ids may hold anything a file system allows; slice file names hold only
``[A-Za-z0-9_.]`` (:mod:`segsam.data.naming`). :func:`safe_case_id` replaces
every other character by ``_`` and, when it changed anything, appends ``_`` and
a short hash of the original, so two ids never merge silently;
:func:`safe_case_ids` stops on the (unlikely) collision that is left.

Imports only the standard library: the workflow scans folders at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segsam.errors import ConfigError

__all__ = [
    "VOLUME_EXTENSIONS",
    "FoundCase",
    "LayoutScan",
    "NnunetMeta",
    "mask_files",
    "modality_of_channel",
    "read_nnunet_meta",
    "safe_case_id",
    "safe_case_ids",
    "scan_local",
    "scan_local_templates",
    "scan_nnunet",
    "volume_stem",
]

#: File endings of the volumes a layout matches (what SimpleITK reads from one file).
VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
_SAFE = re.compile(r"[^A-Za-z0-9_.]")
#: Hex characters of the original id's sha256 appended to an id that had to change.
ID_HASH_CHARS = 6
#: Unmatched files named in the start-up warning (the rest are counted).
LISTED = 10
#: nnU-Net / MSD channel names that are MR sequences (lower case).
MR_CHANNELS = frozenset(
    {"mr", "mri", "t1", "t1w", "t2", "t2w", "flair", "adc", "dwi", "t1c", "t1ce", "t1gd", "pd", "cine", "t2spir"}
)


def safe_case_id(original: str) -> str:
    """A case id that file names can hold: ``"Anna Müller-2"`` -> ``"Anna_M_ller_2_<6 hex>"``.

    Ids made only of letters, digits, ``_`` and ``.`` are kept as they are.

    Args:
        original: The id as the user's files name it.

    Returns:
        The id used in file names, wildcards and the index.
    """
    safe = _SAFE.sub("_", original)
    if safe == original and safe not in ("", ".", ".."):
        return safe
    digest = hashlib.sha256(original.encode("utf-8")).hexdigest()[:ID_HASH_CHARS]
    return f"{safe}_{digest}"


def safe_case_ids(originals: Iterable[str], where: str) -> dict[str, str]:
    """Safe ids of a dataset's cases, checked for collisions.

    Args:
        originals: The case ids as the files name them.
        where: The folder or dataset (named in the error).

    Returns:
        ``{original id: safe id}``.

    Raises:
        ConfigError: two cases whose safe ids are the same (naming both originals).
    """
    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for original in sorted(set(originals)):
        safe = safe_case_id(original)
        if safe in taken:
            raise ConfigError(
                f"{where}: cases {taken[safe]!r} and {original!r} both become case id {safe!r} in file names "
                "(only letters, digits, '_' and '.' are kept); rename one of them"
            )
        taken[safe] = original
        out[original] = safe
    return out


def volume_stem(name: str) -> str | None:
    """``"liver.nii.gz"`` -> ``"liver"``; None when the name has no volume ending."""
    lower = name.lower()
    for ext in VOLUME_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


@dataclass(frozen=True)
class FoundCase:
    """One case a layout found.

    Attributes:
        case: The case id as the files name it.
        modality: ``ct``, ``mr``, ...
        image: Path relative to the dataset's folder: a volume file, or a folder holding one DICOM series.
        label: Path relative to the dataset's folder: a label volume, or a folder of per-class masks.
    """

    case: str
    modality: str
    image: str
    label: str


@dataclass
class LayoutScan:
    """What a layout found in a folder.

    Attributes:
        cases: The cases with an image and a label.
        unmatched: Relative paths of the files the layout does not match (not used).
        prediction: ``{case: image}`` of unlabelled images kept for prediction (nnU-Net ``imagesTs``).
        notes: Other remarks for the start-up warning (channels not used, ...).
    """

    cases: list[FoundCase] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    prediction: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def warning(self, root: str | Path, expected: str) -> str | None:
        """One line listing what the layout left out, or None when it used everything."""
        parts = []
        if self.unmatched:
            listed = ", ".join(self.unmatched[:LISTED])
            more = f" (+{len(self.unmatched) - LISTED} more)" if len(self.unmatched) > LISTED else ""
            parts.append(
                f"{len(self.unmatched)} file(s) under {root} match no case of the layout ({expected}) and are not "
                f"used: {listed}{more}"
            )
        parts.extend(self.notes)
        return "; ".join(parts) or None


def _template_regex(template: str, modality_known: bool) -> re.Pattern[str]:
    """The regex of a layout template (``{modality}``, ``{case}``), without the file ending."""
    pattern = ""
    for literal, name, _, _ in string.Formatter().parse(template):
        pattern += re.escape(literal)
        if name == "modality":
            pattern += r"(?P<modality>[a-z0-9_]+)"
        elif name == "case":
            pattern += r"(?P<case>[^/]+?)"
        elif name is not None:
            raise ConfigError(f"layout template {template!r}: unknown field {{{name}}} (known: {{modality}}, {{case}})")
    if "(?P<case>" not in pattern:
        raise ConfigError(f"layout template {template!r} must hold {{case}}")
    if "(?P<modality>" not in pattern and not modality_known:
        raise ConfigError(f"layout template {template!r} needs {{modality}}, or the dataset's fixed 'modality'")
    return re.compile(f"^{pattern}$")


@dataclass
class _Matcher:
    """Matches relative paths against a layout's image and label templates."""

    image: re.Pattern[str]
    label: re.Pattern[str]
    modality: str | None

    def match(self, rel: str, is_dir: bool) -> tuple[str, str, str] | None:
        """(role, case, modality) of a path, or None. A file must have a volume ending; a folder must not."""
        stem = rel if is_dir else volume_stem(rel)
        if stem is None:
            return None
        for role, regex in (("image", self.image), ("label", self.label)):
            hit = regex.match(stem)
            if hit:
                parts = hit.groupdict()
                return role, parts["case"], parts.get("modality") or str(self.modality)
        return None


def _walk(root: Path, matcher: _Matcher) -> tuple[dict[tuple[str, str], dict[str, str]], list[str]]:
    """Walk ``root``: ``{(case, modality): {role: relative path}}`` and the unmatched files.

    A folder that matches a template is taken whole (its files are not listed).
    """
    found: dict[tuple[str, str], dict[str, str]] = {}
    unmatched: list[str] = []

    def record(rel: str, hit: tuple[str, str, str]) -> None:
        role, case, modality = hit
        entry = found.setdefault((case, modality), {})
        if role in entry:
            raise ConfigError(f"{root}: case {case!r} has two {role}s: {entry[role]} and {rel}; keep one")
        entry[role] = rel

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else f"{base}/"
        kept = []
        for name in sorted(dirnames):
            hit = matcher.match(prefix + name, is_dir=True)
            if hit:
                record(prefix + name, hit)
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            hit = matcher.match(prefix + name, is_dir=False)
            if hit:
                record(prefix + name, hit)
            else:
                unmatched.append(prefix + name)
    return found, unmatched


def _pair(
    root: Path, found: Mapping[tuple[str, str], Mapping[str, str]], expected: str, unmatched: list[str]
) -> list[FoundCase]:
    """The cases with both an image and a label.

    Raises:
        ConfigError: a case with only one of them, or no case at all.
    """
    unpaired = sorted(f"{modality}/{case}" for (case, modality), roles in found.items() if len(roles) != 2)
    if unpaired:
        raise ConfigError(f"{root}: cases without both an image and a label: {unpaired} (layout: {expected})")
    if not found:
        raise ConfigError(
            f"{root}: no case found; expected {expected}"
            + (f" ({len(unmatched)} file(s) there match none, e.g. {unmatched[0]})" if unmatched else " (none there)")
        )
    return [
        FoundCase(case, modality, roles["image"], roles["label"]) for (case, modality), roles in sorted(found.items())
    ]


def describe_layout(image: str, label: str) -> str:
    """The layout for messages: ``{modality}/{case}_image.<ext> or folder, ...``."""
    return (
        f"images {image}.<ext> (or a DICOM series folder {image}/), "
        f"labels {label}.<ext> (or a folder of per-class masks {label}/)"
    )


def scan_local_templates(image: str, label: str, modality: str | None = None) -> None:
    """Check a ``local`` layout's templates (as :func:`scan_local` reads them).

    Raises:
        ConfigError: an unknown field, no ``{case}``, or no ``{modality}`` without a fixed modality.
    """
    for template in (image, label):
        _template_regex(template, modality is not None)


def scan_local(root: str | Path, image: str, label: str, modality: str | None = None) -> LayoutScan:
    """Find the cases of a ``local`` dataset folder.

    Args:
        root: The dataset's folder (its mirror).
        image: Template of an image's path without its ending, e.g. ``{modality}/{case}_image``.
        label: Template of a label's path, e.g. ``{modality}/{case}_label``.
        modality: The modality of every case, for templates without ``{modality}``.

    Returns:
        The cases (sorted by case id and modality) and the files the layout does not match.

    Raises:
        ConfigError: a missing folder, a bad template, a case with two images or
            without a label, or no case at all (naming the folder and the layout).
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder (the dataset's mirror must be the folder holding your volumes)")
    known = modality is not None
    matcher = _Matcher(_template_regex(image, known), _template_regex(label, known), modality)
    found, unmatched = _walk(root, matcher)
    return LayoutScan(cases=_pair(root, found, describe_layout(image, label), unmatched), unmatched=unmatched)


def mask_files(folder: str | Path) -> tuple[dict[str, str], list[str]]:
    """The per-class masks of a label folder: ``{class name (file stem): file name}`` and the other files.

    Raises:
        ConfigError: the folder holds no mask file, or two files of one class.
    """
    folder = Path(folder)
    masks: dict[str, str] = {}
    others = []
    for path in sorted(folder.iterdir()):
        stem = volume_stem(path.name) if path.is_file() else None
        if stem is None:
            others.append(path.name + ("/" if path.is_dir() else ""))
        elif stem in masks:
            raise ConfigError(f"{folder}: two mask files of class {stem!r}: {masks[stem]} and {path.name}")
        else:
            masks[stem] = path.name
    if not masks:
        raise ConfigError(f"{folder}: a label folder must hold one mask volume per class (<class>.nii.gz), found none")
    return masks, others


# --- nnU-Net v2 / Medical Segmentation Decathlon ---------------------------------------------


def modality_of_channel(channel: str) -> str:
    """The modality of an nnU-Net channel name: ``CT`` -> ``ct``, MR sequences (``T2``, ``ADC``, ...) -> ``mr``,
    anything else lower-cased with other characters as ``_`` (``noNorm`` -> ``nonorm``)."""
    name = str(channel).strip().lower()
    if name == "ct":
        return "ct"
    if name in MR_CHANNELS or name.startswith(("mr", "t1", "t2")):
        return "mr"
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "unknown"


@dataclass(frozen=True)
class NnunetMeta:
    """What ``dataset.json`` says.

    Attributes:
        path: The ``dataset.json`` file.
        v2: nnU-Net v2 (``channel_names``, ``file_ending``) rather than an MSD task (``modality``).
        modality: The modality of channel 0.
        labels: ``{label value: name}`` without background (value 0).
        file_ending: The volumes' ending (v2), or None (MSD: any volume ending).
    """

    path: Path
    v2: bool
    modality: str
    labels: Mapping[int, str]
    file_ending: str | None


def _labels(raw: Any, path: Path) -> dict[int, str]:
    """dataset.json ``labels``: name -> id (v2) or id -> name (MSD), as ``{id: name}`` without 0."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{path}: 'labels' must be a non-empty object")
    out: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, int) and not isinstance(value, bool):  # v2: {"liver": 1}
            value_id, name = value, str(key)
        elif isinstance(value, list):
            raise ConfigError(
                f"{path}: label {key!r} is a region ({value}); region-based labels are not supported, "
                "give dataset.labelmap instead"
            )
        elif str(key).strip().isdigit() and isinstance(value, str):  # MSD: {"1": "liver"}
            value_id, name = int(str(key)), value
        else:
            raise ConfigError(f"{path}: label {key!r}: {value!r} is neither name -> id nor id -> name")
        if value_id in out:
            raise ConfigError(f"{path}: label value {value_id} is given twice ({out[value_id]!r}, {name!r})")
        if value_id != 0:
            out[value_id] = name
    return out


def read_nnunet_meta(root: str | Path) -> NnunetMeta:
    """Read an nnU-Net v2 / MSD ``dataset.json``.

    Raises:
        ConfigError: a missing or malformed file, no channel 0, or region-based labels.
    """
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found; the dataset's mirror must be an nnU-Net raw dataset folder "
            "(imagesTr/, labelsTr/, dataset.json) or a Medical Segmentation Decathlon task folder"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: unreadable dataset.json ({err})") from err
    if not isinstance(meta, Mapping):
        raise ConfigError(f"{path}: expected a JSON object")
    v2 = "channel_names" in meta
    channels = meta.get("channel_names" if v2 else "modality")
    if not isinstance(channels, Mapping) or "0" not in channels:
        raise ConfigError(f"{path}: needs 'channel_names' (nnU-Net v2) or 'modality' (MSD) with channel \"0\"")
    ending = meta.get("file_ending") if v2 else None
    if v2 and (not isinstance(ending, str) or not ending.startswith(".")):
        raise ConfigError(f"{path}: 'file_ending' must be given, e.g. \".nii.gz\"")
    return NnunetMeta(path, v2, modality_of_channel(channels["0"]), _labels(meta.get("labels"), path), ending)


def _nnunet_folder(
    root: Path, folder: str, meta: NnunetMeta, image: bool, unmatched: list[str], other_channels: list[str]
) -> dict[str, str]:
    """``{case: relative path}`` of one of imagesTr / labelsTr / imagesTs (DICOM folders for images)."""
    found: dict[str, str] = {}
    base = root / folder
    if not base.is_dir():
        return found
    channel = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
    for path in sorted(base.iterdir()):
        rel = f"{folder}/{path.name}"
        if path.is_dir():
            stem = path.name if image else None  # a folder in imagesTr/Ts: one DICOM series
        elif meta.file_ending is not None:
            stem = path.name[: -len(meta.file_ending)] if path.name.endswith(meta.file_ending) else None
        else:
            stem = volume_stem(path.name)
        if stem is None or stem.startswith("."):
            unmatched.append(rel + ("/" if path.is_dir() else ""))
            continue
        case = stem
        if image and meta.v2:
            hit = channel.match(stem)
            if hit is None:
                unmatched.append(rel)
                continue
            if hit["channel"] != "0000":
                other_channels.append(rel)
                continue
            case = hit["case"]
        found[case] = rel
    return found


def scan_nnunet(root: str | Path) -> tuple[LayoutScan, NnunetMeta]:
    """Find the cases of an nnU-Net v2 raw dataset or an MSD task folder.

    Args:
        root: The folder holding ``dataset.json``, ``imagesTr/``, ``labelsTr/`` (and ``imagesTs/``).

    Returns:
        The training cases (every one with the modality of channel 0), the files
        left out, the ``imagesTs`` images as ``prediction``; and ``dataset.json``.

    Raises:
        ConfigError: no dataset.json, an image without a label (or the reverse), or no case.
    """
    root = Path(root)
    meta = read_nnunet_meta(root)
    unmatched: list[str] = []
    channels: list[str] = []
    images = _nnunet_folder(root, "imagesTr", meta, True, unmatched, channels)
    labels = _nnunet_folder(root, "labelsTr", meta, False, unmatched, channels)
    prediction = _nnunet_folder(root, "imagesTs", meta, True, unmatched, channels)
    naming = "<case>_0000" if meta.v2 else "<case>"
    expected = f"imagesTr/{naming}{meta.file_ending or '.nii.gz'} with labelsTr/<case>{meta.file_ending or '.nii.gz'}"
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        raise ConfigError(f"{root}: cases without both an image and a label: {unpaired} (layout: {expected})")
    if not images:
        raise ConfigError(
            f"{root}: no case found; expected {expected}"
            + (f" ({len(unmatched)} file(s) match none, e.g. {unmatched[0]})" if unmatched else "")
        )
    scan = LayoutScan(
        cases=[FoundCase(case, meta.modality, images[case], labels[case]) for case in sorted(images)],
        unmatched=unmatched,
        prediction=prediction,
    )
    if channels:
        scan.notes.append(f"{len(channels)} image(s) of channels other than 0000 are not used (channel 0 is sliced)")
    return scan, meta

"""The dataset registry (``config/datasets.yaml``): sources, checksums, cases, label maps.

The registry says, for each dataset, where every file comes from (a URL, or a
manual step such as a Synapse login), the sha256 to check it against where the
source publishes one, its licence and citation, and the case list: case id,
modality, image and label (a downloaded file, or a member of a downloaded
archive) and the label map into the global vocabulary. Case lists are written
out (``cases``) or generated from templates (``case_sets``), whose numbers are
ranges or are *discovered* from an archive's member list. A user's own folder
(``local``, ``nnunet``) is scanned instead (:mod:`segsam.data.layouts`), its
label names matched onto the vocabulary (:mod:`segsam.data.synonyms`).

This module is imported by ``workflow/rules/common.smk`` at parse time, so it
imports nothing heavy: the standard library, :mod:`segsam.config` (which reads
the YAML) and :mod:`segsam.data.archive`.

Example::

    registry = load_registry()
    spec = registry.get("totalseg_example")
    for case in spec.cases().values():
        print(case.case, case.modality, case.image.file.path, case.labelmap)
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from segsam.config import read_yaml
from segsam.data.archive import archive_members
from segsam.data.layouts import (
    FoundCase,
    LayoutScan,
    describe_layout,
    mask_files,
    safe_case_ids,
    scan_local,
    scan_local_templates,
    scan_nnunet,
)
from segsam.data.synonyms import NameMatcher
from segsam.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REGISTRY = REPO_ROOT / "config" / "datasets.yaml"
DEFAULT_SYNONYMS = REPO_ROOT / "config" / "synonyms.yaml"
DEFAULT_VOCABULARY = REPO_ROOT / "config" / "vocabulary.csv"

KINDS = ("volumes", "phantoms", "local", "nnunet", "slices2d")
#: Kinds whose cases are found by scanning the user's folder (the dataset's mirror).
SCANNED = ("local", "nnunet")
_ID = re.compile(r"^[A-Za-z0-9_.]+$")
_MODALITY = re.compile(r"^[a-z0-9_]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

__all__ = [
    "DEFAULT_REGISTRY",
    "CaseList",
    "CaseSpec",
    "CaseSet",
    "CasesNotReady",
    "DatasetSpec",
    "Registry",
    "RemoteFile",
    "Source",
    "check_relative_path",
    "default_names",
    "load_registry",
]


class CasesNotReady(ConfigError):
    """A case list that is read from an archive which is not there yet (fetch it first)."""


def check_relative_path(path: str, where: str) -> str:
    """Return ``path`` if it is a clean relative POSIX path, else raise.

    Args:
        path: The path to check (``a/b/c.nii.gz``).
        where: What names the path in the error (file and key).

    Returns:
        ``path`` unchanged.

    Raises:
        ConfigError: an empty or absolute path, a backslash, a drive, or a ``..``/``.`` part.
    """
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: expected a relative path, got {path!r}")
    parts = path.split("/")
    if (
        path.startswith("/")
        or "\\" in path
        or re.match(r"^[A-Za-z]:", path)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ConfigError(f"{where}: {path!r} must be a relative path without '..', '.', empty parts or backslashes")
    return path


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset, as published.

    Attributes:
        path: Relative POSIX path: its place under the download folder and under a mirror.
        url: ``http(s)://`` source, or None for a manual file.
        sha256: Expected digest (lower-case hex), or None where none is published.
        manual: The step a person must do to get the file (then only a mirror provides it).
        archive: Whether the file is a zip/tar archive that the workflow extracts.
    """

    path: str
    url: str | None = None
    sha256: str | None = None
    manual: str | None = None
    archive: bool = False

    def __post_init__(self) -> None:
        check_relative_path(self.path, "file")
        if (self.url is None) == (self.manual is None):
            raise ConfigError(f"file {self.path}: give exactly one of 'url' and 'manual'")
        if self.url is not None and not re.match(r"^https?://\S+$", self.url):
            raise ConfigError(f"file {self.path}: url {self.url!r} must start with http:// or https://")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ConfigError(f"file {self.path}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")


@dataclass(frozen=True)
class Source:
    """Where a case's image or label is: a file, or a member of an archive file."""

    file: RemoteFile
    member: str | None = None

    def __post_init__(self) -> None:
        if self.member is not None:
            check_relative_path(self.member, f"archive {self.file.path} member")
            if not self.file.archive:
                raise ConfigError(
                    f"{self.file.path}: a member {self.member!r} is named, but the file is not marked 'archive: true'"
                )


@dataclass(frozen=True)
class CaseSpec:
    """One case of a volume dataset.

    Attributes:
        case: Case id (letters, digits, '_' and '.'), unique in the dataset.
        modality: ``ct``, ``mr``, ...
        image: The image volume's source (for a user's folder: a file, or a folder holding a DICOM series).
        label: The label volume's source (for a user's folder: a file, or a folder of per-class masks).
        labelmap: The label map into the vocabulary (a path relative to the repository).
        labels: A label map given inline, ``{label value (decimal string): vocabulary name or None}``,
            where no file holds one (nnU-Net ``dataset.json`` names, per-class masks); None: ``labelmap``.
        masks: For a label folder of per-class masks: ``{mask file name: label value}`` of the combined volume.
        source_id: The case id as the user's files name it, where it had to be made safe (None: ``case``).
    """

    case: str
    modality: str
    image: Source
    label: Source
    labelmap: str | None
    labels: Mapping[str, str | None] | None = None
    masks: Mapping[str, int] | None = None
    source_id: str | None = None

    @property
    def original(self) -> str:
        """The case id as the files name it (for messages and the index's ``source_case`` column)."""
        return self.source_id or self.case

    def __post_init__(self) -> None:
        if not _ID.match(self.case):
            raise ConfigError(f"case id {self.case!r} may hold only letters, digits, '_' and '.'")
        if not _MODALITY.match(self.modality):
            raise ConfigError(f"case {self.case}: modality {self.modality!r} must be lower-case letters, digits or '_'")


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex matching what ``template.format(n=...)`` produces, with the number in group ``n``."""
    pattern = ""
    for literal, name, spec, _ in string.Formatter().parse(template):
        pattern += re.escape(literal)
        if name is None:
            continue
        width = re.fullmatch(r"0?(\d*)d?", spec or "")
        digits = int(width.group(1)) if width and width.group(1) else 0
        pattern += rf"(?P<n>\d{{{digits},}})" if digits else r"(?P<n>\d+)"
    return re.compile(f"^{pattern}$")


def _format(template: str, number: int, where: str) -> str:
    try:
        return template.format(n=number)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"{where}: template {template!r} must use only {{n}} ({err})") from err


def _ranges(value: Any, where: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a list of [first, last] ranges")
    out = []
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(v, int) and v >= 0 for v in item)
            and item[0] <= item[1]
        ):
            raise ConfigError(f"{where}: {item!r} is not a [first, last] range of non-negative integers")
        out.append((item[0], item[1]))
    return tuple(out)


@dataclass(frozen=True)
class CaseSet:
    """Cases generated from templates: ``id``, ``image`` and ``label`` use ``{n}``.

    Attributes:
        id: Case id template, e.g. ``case_{n:05d}``.
        numbers: Inclusive ranges of n, or None to discover them from the archive.
        modality: The modality of every case, or None with ``modality_by_number``.
        modality_by_number: ``((modality, ranges), ...)``, first match wins.
        archive: Path of the archive file holding ``member`` templates (or None).
        image: ``{"path": ..., "url": ...}`` (one remote file per case) or ``{"member": ...}``.
        label: Same for the label.
        labelmap: Label map of these cases (None: the dataset's).
        sha256: Expected sha256 of the per-case files ``{path template: digest}`` (rarely known).
    """

    id: str
    numbers: tuple[tuple[int, int], ...] | None
    modality: str | None
    modality_by_number: tuple[tuple[str, tuple[tuple[int, int], ...]], ...]
    archive: str | None
    image: Mapping[str, str]
    label: Mapping[str, str]
    labelmap: str | None = None

    def modality_of(self, number: int) -> str | None:
        if self.modality is not None:
            return self.modality
        for modality, ranges in self.modality_by_number:
            if any(lo <= number <= hi for lo, hi in ranges):
                return modality
        return None

    def member_regex(self) -> re.Pattern[str]:
        """The regex that finds this set's label members (group ``n`` = the case number)."""
        return _template_regex(self.label["member"])


def default_names() -> NameMatcher:
    """The committed synonyms table (``config/synonyms.yaml``) for the committed vocabulary."""
    from segsam.data.vocabulary import read_classes  # numpy: only when no matcher is given

    return NameMatcher.read(DEFAULT_SYNONYMS, [row["name"] for row in read_classes(DEFAULT_VOCABULARY)])


@dataclass(frozen=True)
class CaseList:
    """A dataset's cases, and what its folder held besides.

    Attributes:
        cases: ``{case id: CaseSpec}``, sorted by id.
        warning: One line naming the files of a user's folder its layout does not use, or None.
        prediction: ``{case id: image path}`` of unlabelled images (nnU-Net ``imagesTs``), relative to the folder.
    """

    cases: dict[str, CaseSpec]
    warning: str | None = None
    prediction: Mapping[str, str] = field(default_factory=dict)


_OWN_FILE = "your own file under dataset.mirror"


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry. Build the case list with :meth:`cases` (or :meth:`case_list`)."""

    name: str
    kind: str
    description: str
    homepage: str | None
    licence: str
    citation: str | None
    labelmap: str | None
    manual: str | None = None
    classmap: str | None = None
    files: Mapping[str, RemoteFile] = field(default_factory=dict)
    fixed_cases: Mapping[str, CaseSpec] = field(default_factory=dict)
    case_sets: tuple[CaseSet, ...] = ()
    release: Mapping[str, Any] | None = None
    layout: Mapping[str, str] | None = None
    modality: str | None = None

    def cases(
        self, roots: Sequence[str | Path] = (), *, labelmap: str | None = None, names: NameMatcher | None = None
    ) -> dict[str, CaseSpec]:
        """The dataset's cases, sorted by id (:meth:`case_list` without the warning)."""
        return self.case_list(roots, labelmap=labelmap, names=names).cases

    def case_list(
        self, roots: Sequence[str | Path] = (), *, labelmap: str | None = None, names: NameMatcher | None = None
    ) -> CaseList:
        """The dataset's cases, sorted by id, and the files of a user's folder that are not used.

        Args:
            roots: Folders that may hold the dataset's files at their relative
                paths (the local mirror, the download folder): searched for
                archives whose members give ``numbers: discover`` case lists and,
                for ``kind: local`` / ``nnunet``, for the volumes themselves (the
                first folder). The first folder holding the file wins.
            labelmap: A label map that replaces every case's (``dataset.labelmap``).
            names: Matches label names (nnU-Net ``dataset.json``, per-class mask
                files) onto the vocabulary; default :func:`default_names`.

        Returns:
            The cases (``{case id: CaseSpec}``; empty for ``phantoms`` and ``slices2d``
            datasets), the warning and the unlabelled images of a user's folder.

        Raises:
            CasesNotReady: a discovered case list whose archive is in none of ``roots``.
            ConfigError: duplicate case ids, a case without a modality or label map,
                a user's folder that is missing, holds no case, or names labels the
                vocabulary lacks, or case ids that collide once made safe.
        """
        if self.kind in ("phantoms", "slices2d"):
            return CaseList({})
        found: dict[str, CaseSpec] = {}

        def add(spec: CaseSpec) -> None:
            if spec.case in found:
                raise ConfigError(f"dataset {self.name}: case {spec.original!r} is listed twice")
            found[spec.case] = spec

        scan, expected = LayoutScan(), ""
        if self.kind in SCANNED:
            scan, expected, labels = self._scan(roots, labelmap, names)
            for spec in self._user_cases(Path(roots[0]), scan, labels, names):
                add(spec)
        for spec in self.fixed_cases.values():
            add(spec)
        for index, case_set in enumerate(self.case_sets):
            for spec in self._expand(case_set, index, roots):
                add(spec)
        out = {case_id: self._with_labelmap(found[case_id], labelmap) for case_id in sorted(found)}
        warning = scan.warning(roots[0], expected) if self.kind in SCANNED else None
        return CaseList(out, f"dataset {self.name}: {warning}" if warning else None, dict(scan.prediction))

    def _with_labelmap(self, spec: CaseSpec, labelmap: str | None) -> CaseSpec:
        """A case with its label map settled: ``labelmap`` (dataset.labelmap) replaces the registry's or inline one."""
        if spec.masks is not None:
            if labelmap:
                raise ConfigError(
                    f"dataset {self.name}: case {spec.original} has per-class masks, which dataset.labelmap cannot "
                    "map; their file names are matched through config/synonyms.yaml"
                )
            return spec
        if labelmap:
            return replace(spec, labelmap=labelmap, labels=None)
        if spec.labelmap is None and spec.labels is None:
            raise ConfigError(
                f"dataset {self.name}: case {spec.original} has no label map (set dataset.labelmap, or "
                f"cross.datasets.{self.name}.labelmap)"
            )
        return spec

    def all_files(self, cases: Mapping[str, CaseSpec]) -> dict[str, RemoteFile]:
        """Every file the given cases need, plus the dataset's listed files, by path."""
        files = dict(self.files)
        for spec in cases.values():
            for source in (spec.image, spec.label):
                files.setdefault(source.file.path, source.file)
        return dict(sorted(files.items()))

    # --- case list helpers -------------------------------------------------------------

    def _expand(self, case_set: CaseSet, index: int, roots: Sequence[str | Path]) -> Iterable[CaseSpec]:
        where = f"dataset {self.name}: case_sets[{index}]"
        if case_set.numbers is None:
            numbers = sorted(self._discover(case_set, roots))
        else:
            numbers = [n for lo, hi in case_set.numbers for n in range(lo, hi + 1)]
        archive = self.files[case_set.archive] if case_set.archive else None
        for n in numbers:
            modality = case_set.modality_of(n)
            if modality is None:
                raise ConfigError(f"{where}: case number {n} falls in no modality_by_number range")
            sources = []
            for role in ("image", "label"):
                item = getattr(case_set, role)
                if "member" in item:
                    assert archive is not None
                    sources.append(Source(archive, _format(item["member"], n, where)))
                else:
                    sources.append(
                        Source(RemoteFile(_format(item["path"], n, where), url=_format(item["url"], n, where)))
                    )
            yield CaseSpec(
                _format(case_set.id, n, where), modality, sources[0], sources[1], case_set.labelmap or self.labelmap
            )

    def _discover(self, case_set: CaseSet, roots: Sequence[str | Path]) -> set[int]:
        assert case_set.archive is not None
        regex = case_set.member_regex()
        for root in map(Path, roots):
            extracted = root / case_set.archive
            if extracted.is_dir():  # an extracted copy: its files are the members
                names = (p.relative_to(extracted).as_posix() for p in extracted.rglob("*") if p.is_file())
            elif extracted.is_file():
                names = iter(_archive_names(extracted))
            else:
                continue
            return {int(m["n"]) for m in map(regex.match, names) if m}
        raise CasesNotReady(
            f"dataset {self.name}: its case list is read from {case_set.archive}, which is not in "
            f"{', '.join(str(r) for r in roots) or 'any folder'} yet: fetch it first with `snakemake --cores 1 "
            "fetch_archives` "
            f"(same config), or set its mirror (dataset.mirror, or cross.datasets.{self.name}.mirror) to a "
            "folder holding it"
        )

    # --- a user's own folder (kind local / nnunet) -----------------------------------------

    def _scan(
        self, roots: Sequence[str | Path], labelmap: str | None, names: NameMatcher | None
    ) -> tuple[LayoutScan, str, dict[str, str | None] | None]:
        """Scan the user's folder (the first root).

        Returns:
            What the layout found, the layout in words, and the inline label map of
            every case (nnU-Net ``dataset.json`` matched onto the vocabulary; None
            with ``labelmap`` or for ``local``).
        """
        if not roots:
            raise ConfigError(
                f"dataset {self.name}: set dataset.mirror (or cross.datasets.{self.name}.mirror) to the folder "
                "holding your volumes"
            )
        root = Path(roots[0])
        if not root.is_dir():
            raise ConfigError(f"dataset {self.name}: its mirror {root} is not a folder")
        if self.kind == "nnunet":
            scan, meta = scan_nnunet(root)
            labels = None if labelmap else self._nnunet_labels(meta.path, meta.labels, names or default_names())
            return scan, "nnU-Net imagesTr/ + labelsTr/", labels
        assert self.layout is not None
        scan = scan_local(root, self.layout["image"], self.layout["label"], self.modality)
        return scan, describe_layout(self.layout["image"], self.layout["label"]), None

    def _nnunet_labels(self, path: Path, labels: Mapping[int, str], names: NameMatcher) -> dict[str, str | None]:
        """dataset.json's label names matched onto the vocabulary: ``{value: vocabulary name}``.

        Raises:
            ConfigError: names that match no vocabulary class, listed with the two ways to map them.
        """
        matched, unknown = names.match_all(labels.values())
        if unknown:
            raise ConfigError(
                f"{path}: label names {unknown} match no vocabulary class; map them either in a label map file "
                '({"labels": {"<value>": "<vocabulary name>" or null}}) given as dataset.labelmap (or '
                f"cross.datasets.{self.name}.labelmap), or in {names.source} under the vocabulary name they stand for"
            )
        return {str(value): matched[name] for value, name in sorted(labels.items())}

    def _mask_labels(
        self, folder: Path, names: NameMatcher, unmatched: list[str], rel: str
    ) -> tuple[dict[str, int], dict[str, str | None]]:
        """A per-class mask folder: ``{mask file: label value}`` (1.. in file-name order) and ``{value: class}``.

        Raises:
            ConfigError: no mask file, or mask names that match no vocabulary class.
        """
        files, others = mask_files(folder)
        unmatched.extend(f"{rel}/{name}" for name in others)
        matched, unknown = names.match_all(files)
        if unknown:
            raise ConfigError(
                f"{folder}: mask files {[files[n] for n in unknown]} name no vocabulary class; add their names to "
                f"{names.source} under the vocabulary name they stand for (or add the class with vocabulary_extra)"
            )
        stems = sorted(files)
        masks = {files[stem]: value for value, stem in enumerate(stems, start=1)}
        return masks, {str(value): matched[stem] for value, stem in enumerate(stems, start=1)}

    def _user_cases(
        self, root: Path, scan: LayoutScan, labels: dict[str, str | None] | None, names: NameMatcher | None
    ) -> Iterable[CaseSpec]:
        """CaseSpecs of a scanned folder: safe ids, DICOM and per-class mask folders, inline label maps.

        Args:
            root: The folder.
            scan: What its layout found (the files of mask folders that are not masks are added to its ``unmatched``).
            labels: The inline label map of every case (nnU-Net), or None.
            names: Matches mask file names onto the vocabulary.
        """
        ids = safe_case_ids([case.case for case in scan.cases], str(root))
        for case in scan.cases:
            masks, case_labels = None, labels
            if (root / case.label).is_dir():
                matcher = names or default_names()
                masks, case_labels = self._mask_labels(root / case.label, matcher, scan.unmatched, case.label)
            yield _own_case(ids[case.case], case, case_labels, masks)


def _own_case(
    safe: str, case: FoundCase, labels: Mapping[str, str | None] | None, masks: Mapping[str, int] | None
) -> CaseSpec:
    """The CaseSpec of a case found in a user's folder (its label map is settled by the caller)."""
    return CaseSpec(
        safe,
        case.modality,
        Source(RemoteFile(case.image, manual=_OWN_FILE)),
        Source(RemoteFile(case.label, manual=_OWN_FILE)),
        None,
        labels=labels,
        masks=masks,
        source_id=case.case if safe != case.case else None,
    )


def _archive_names(path: Path) -> list[str]:
    """Member names of a zip or tar archive (:func:`segsam.data.archive.archive_members`)."""
    try:
        return [member.name for member in archive_members(path)]
    except DataError as err:
        raise ConfigError(f"cannot list the archive's members: {err}") from err


# --- loading and validation ------------------------------------------------------------

_DATASET_KEYS = {
    "kind",
    "description",
    "homepage",
    "licence",
    "citation",
    "labelmap",
    "manual",
    "classmap",
    "files",
    "cases",
    "case_sets",
    "release",
    "layout",
    "modality",
}
_REQUIRED = {"kind", "description", "licence", "citation", "labelmap"}
_FILE_KEYS = {"url", "manual", "sha256", "archive"}
_CASE_KEYS = {"modality", "image", "label", "labelmap"}
_CASE_SET_KEYS = {"id", "numbers", "modality", "modality_by_number", "archive", "image", "label", "labelmap"}
_RELEASE_KEYS = {"root", "image_to_masks", "mask_to_image", "class_mapping", "unknown_classes"}


def _keys(obj: Any, allowed: set[str], where: str, required: set[str] = frozenset()) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(obj))
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    return obj


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: expected a string or null, got {value!r}")
    return value.strip() if isinstance(value, str) else None


def _check_repo_file(path: str | None, base: Path, where: str) -> str | None:
    if path is None:
        return None
    check_relative_path(path, where)
    if not (base / path).is_file():
        raise ConfigError(f"{where}: {path} not found")
    return path


def _parse_file(path: str, raw: Any, where: str) -> RemoteFile:
    check_relative_path(path, where)
    raw = _keys(raw, _FILE_KEYS, where, {"sha256"})
    archive = raw.get("archive", False)
    if not isinstance(archive, bool):
        raise ConfigError(f"{where}.archive: expected true or false")
    try:
        return RemoteFile(path, _opt_str(raw, "url", where), raw.get("sha256"), _opt_str(raw, "manual", where), archive)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from err


def _parse_source(value: Any, files: Mapping[str, RemoteFile], where: str) -> Source:
    if isinstance(value, str):
        if value not in files:
            raise ConfigError(f"{where}: {value!r} is not one of the dataset's files")
        return Source(files[value])
    value = _keys(value, {"archive", "member"}, where, {"archive", "member"})
    if value["archive"] not in files:
        raise ConfigError(f"{where}.archive: {value['archive']!r} is not one of the dataset's files")
    try:
        return Source(files[value["archive"]], value["member"])
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from err


def _parse_case_set(raw: Any, files: Mapping[str, RemoteFile], base: Path, where: str) -> CaseSet:
    raw = _keys(raw, _CASE_SET_KEYS, where, {"id", "numbers", "image", "label"})
    numbers = None if raw["numbers"] == "discover" else _ranges(raw["numbers"], f"{where}.numbers")
    modality = raw.get("modality")
    by_number: list[tuple[str, tuple[tuple[int, int], ...]]] = []
    if "modality_by_number" in raw:
        table = raw["modality_by_number"]
        if not isinstance(table, Mapping) or not table:
            raise ConfigError(f"{where}.modality_by_number: expected {{modality: [[first, last], ...]}}")
        by_number = [(str(m), _ranges(r, f"{where}.modality_by_number.{m}")) for m, r in table.items()]
    if (modality is None) == (not by_number):
        raise ConfigError(f"{where}: give exactly one of 'modality' and 'modality_by_number'")
    for name in [modality] if modality else [m for m, _ in by_number]:
        if not _MODALITY.match(str(name)):
            raise ConfigError(f"{where}: modality {name!r} must be lower-case letters, digits or '_'")
    archive = raw.get("archive")
    if archive is not None and (archive not in files or not files[archive].archive):
        raise ConfigError(f"{where}.archive: {archive!r} is not one of the dataset's files marked 'archive: true'")
    roles = {}
    for role in ("image", "label"):
        item = raw[role]
        if archive is not None:
            item = _keys(item, {"member"}, f"{where}.{role}", {"member"})
        else:
            item = _keys(item, {"path", "url"}, f"{where}.{role}", {"path", "url"})
        roles[role] = dict(item)
    if numbers is None and archive is None:
        raise ConfigError(f"{where}: 'numbers: discover' needs an 'archive' to discover them in")
    labelmap = _check_repo_file(raw.get("labelmap"), base, f"{where}.labelmap")
    case_set = CaseSet(
        str(raw["id"]), numbers, modality, tuple(by_number), archive, roles["image"], roles["label"], labelmap
    )
    # format every template once with a sample number, so a bad template fails at load time
    sample = numbers[0][0] if numbers else 1
    for template in (case_set.id, *case_set.image.values(), *case_set.label.values()):
        _format(template, sample, where)
    if numbers is not None:
        probe = _format(case_set.id, sample, where)
        if not _ID.match(probe):
            raise ConfigError(
                f"{where}.id: {case_set.id!r} gives case id {probe!r}, which may hold only letters, digits, '_' and '.'"
            )
    return case_set


def _parse_dataset(name: str, raw: Any, base: Path, where: str) -> DatasetSpec:
    raw = _keys(raw, _DATASET_KEYS, where, _REQUIRED)
    kind = raw["kind"]
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    files = {path: _parse_file(path, item, f"{where}.files.{path}") for path, item in (raw.get("files") or {}).items()}
    labelmap = _check_repo_file(raw.get("labelmap"), base, f"{where}.labelmap")
    fixed: dict[str, CaseSpec] = {}
    for case_id, item in (raw.get("cases") or {}).items():
        cw = f"{where}.cases.{case_id}"
        item = _keys(item, _CASE_KEYS, cw, {"modality", "image", "label"})
        try:
            fixed[str(case_id)] = CaseSpec(
                str(case_id),
                str(item["modality"]),
                _parse_source(item["image"], files, f"{cw}.image"),
                _parse_source(item["label"], files, f"{cw}.label"),
                _check_repo_file(item.get("labelmap"), base, f"{cw}.labelmap") or labelmap,
            )
        except ConfigError as err:
            raise ConfigError(err if str(err).startswith(where) else f"{cw}: {err}") from err
    sets_raw = raw.get("case_sets") or []
    if not isinstance(sets_raw, list):
        raise ConfigError(f"{where}.case_sets: expected a list")
    case_sets = tuple(_parse_case_set(item, files, base, f"{where}.case_sets[{i}]") for i, item in enumerate(sets_raw))
    release = None
    if raw.get("release") is not None:
        release = dict(
            _keys(raw["release"], _RELEASE_KEYS, f"{where}.release", {"root", "image_to_masks", "mask_to_image"})
        )
        if release.get("unknown_classes", "error") not in ("error", "skip"):
            raise ConfigError(f"{where}.release.unknown_classes: expected 'error' or 'skip'")
    layout = raw.get("layout")
    if kind == "local":
        layout = dict(_keys(layout, {"image", "label"}, f"{where}.layout", {"image", "label"}))
    modality = _opt_str(raw, "modality", where)
    if modality is not None and (kind != "local" or not _MODALITY.match(modality)):
        raise ConfigError(f"{where}.modality: a 'local' dataset's fixed modality, lower-case letters, digits or '_'")
    if kind == "local":
        try:  # a bad template fails at load time
            scan_local_templates(layout["image"], layout["label"], modality)
        except ConfigError as err:
            raise ConfigError(f"{where}.layout: {err}") from err
    if kind == "volumes" and not fixed and not case_sets:
        raise ConfigError(f"{where}: a 'volumes' dataset needs 'cases' or 'case_sets'")
    if kind == "slices2d" and release is None:
        raise ConfigError(f"{where}: a 'slices2d' dataset needs a 'release' section")
    return DatasetSpec(
        name=name,
        kind=kind,
        description=" ".join(str(raw["description"]).split()),
        homepage=_opt_str(raw, "homepage", where),
        licence=str(raw["licence"]),
        citation=_opt_str(raw, "citation", where),
        labelmap=labelmap,
        manual=_opt_str(raw, "manual", where),
        classmap=_check_repo_file(raw.get("classmap"), base, f"{where}.classmap"),
        files=files,
        fixed_cases=fixed,
        case_sets=case_sets,
        release=release,
        layout=layout,
        modality=modality,
    )


@dataclass(frozen=True)
class Registry:
    """All datasets of a registry file."""

    path: Path
    datasets: Mapping[str, DatasetSpec]

    @property
    def names(self) -> list[str]:
        return sorted(self.datasets)

    def get(self, name: str) -> DatasetSpec:
        """The dataset called ``name``.

        Raises:
            ConfigError: naming the known datasets.
        """
        if name not in self.datasets:
            raise ConfigError(f"dataset {name!r} is not in the registry {self.path} (known: {', '.join(self.names)})")
        return self.datasets[name]


def load_registry(path: str | Path = DEFAULT_REGISTRY, base: str | Path | None = None) -> Registry:
    """Load and validate a registry file.

    Args:
        path: The registry YAML.
        base: Folder that label map paths are relative to (default: the
            registry's grandparent, i.e. the repository root for ``config/datasets.yaml``).

    Returns:
        The registry.

    Raises:
        ConfigError: one line naming the file, the key path and the problem.
    """
    path = Path(path)
    base = Path(base) if base is not None else path.resolve().parent.parent
    raw = read_yaml(path, "dataset registry")
    try:
        raw = _keys(raw, {"version", "datasets"}, "top level", {"version", "datasets"})
        if raw["version"] != 1:
            raise ConfigError(f"version: expected 1, got {raw['version']!r}")
        entries = _keys(raw["datasets"], set(raw["datasets"] or {}), "datasets")
        datasets = {}
        for name, item in entries.items():
            if not _ID.match(str(name)):
                raise ConfigError(f"datasets.{name}: a dataset name may hold only letters, digits, '_' and '.'")
            datasets[str(name)] = _parse_dataset(str(name), item, base, f"datasets.{name}")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    return Registry(path, datasets)

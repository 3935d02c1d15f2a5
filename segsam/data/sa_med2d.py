"""Import an SA-Med2D-style 2D release into the index tables (masks and images).

SA-Med2D releases are already sliced: PNG images, one binary PNG per mask, and
json files that pair them. This module reads those json files and the file
names into the same tables :mod:`segsam.data.index` builds from volumes
(columns :data:`segsam.data.slicing.MASK_COLUMNS` + ``split``, and
:data:`segsam.data.index.IMAGE_COLUMNS`).

**Pairing files** (paths inside are relative to the release, possibly behind a
leading folder such as ``data_demo/``, which is detected and dropped):

* ``image2label_train.json`` / ``SAMed2D_v1.json``: ``{image: [mask, ...]}``;
* ``label2image_test.json``: ``{mask: image}``.

Each file is given with the split its entries belong to (``train``/``test``),
or ``None`` (``SAMed2D_v1.json``, which has no split): those cases are split
by case, per modality, with :func:`segsam.data.index.split_cases`. A case found
in two splits is an error (it would leak).

**Names.** Two namings are understood:

* the release naming (docs/data.md#names): image ``<modality>--<dataset>--<case>--<axis>_<slice>``,
  mask ``<image stem>--<class index:04d>_<instance:03d>``. The class index is
  looked up in the release's class-mapping json ``{dataset: {class name: index}}``.
  The modality prefix is reduced to the imaging modality: ``ct_00`` -> ``ct``,
  ``mr_t1`` -> ``mr``, ``pet_00`` -> ``pet``, ``ultrasound_00`` -> ``ultrasound``.
* the SAM-Med2D demo naming: image ``<case>_<slice>``, mask
  ``<case>_<slice>_<class name>_<instance:03d>`` (``amos_0004_75_liver_000``).
  It has no dataset, modality or axis, so they come from :data:`DEMO_CASES`
  (AMOS: case number < 500 is CT, else MR; ``s0123``: TotalSegmentator CT), and
  the axis is recorded as ``z`` (the demo slices are axial).

**Classes.** A class name is normalised (lower case, other characters -> ``_``)
and mapped into the vocabulary: directly when it is a vocabulary name, else
through a class map (``config/classmaps/*.json``: ``{"names": {name: vocabulary
name or null}}``; ``null`` = known and skipped). Any other name is an error that
lists them, or, with ``unknown_classes="skip"``, skipped and counted in the summary.

**Instances** are renumbered per (image, class), largest first, as the slicing
stage does, because several source classes may map to one vocabulary class
(``hip_left`` and ``hip_right`` -> ``hip``).

**Scale.** :func:`import_release` builds the two tables in memory (the demo
folder, a subset). :func:`import_release_dataset` streams the full release
(16 M masks) into a partitioned parquet dataset in bounded memory; its json is
read incrementally (:func:`iter_json_object`). For the registry's
``sa_med2d_16m`` entry, after its manual merge step::

    python -m segsam.data.sa_med2d <mirror>/sa_med2d_16m/SAMed2Dv1 --out-dir results/index/sa_med2d_16m \
        --all-json SAMed2D_v1.json --class-mapping SAMed2D_v1_class_mapping_id.json \
        --unknown-classes skip --stream
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segsam.atomic import atomic_path, write_json
from segsam.data.index import SPLITS, images_table, split_cases, write_index_dataset
from segsam.data.slicing import MASK_COLUMNS
from segsam.data.vocabulary import Vocabulary
from segsam.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "DEMO_CASES",
    "ClassMapper",
    "SliceInfo",
    "import_release",
    "import_release_dataset",
    "import_registry_release",
    "import_sa_med2d",
    "iter_json_object",
    "normalise_class_name",
    "parse_image_stem",
    "parse_mask_stem",
    "png_size",
]

_AXIS_SLICE = re.compile(r"^(?P<axis>[xyz])_(?P<slice>\d+)$")
_CLASS_INSTANCE = re.compile(r"^(?P<index>\d+)_(?P<instance>\d+)$")
_DEMO_IMAGE = re.compile(r"^(?P<case>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?)_(?P<slice>\d+)$")
_DEMO_MASK = re.compile(r"^(?P<image>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?_\d+)_(?P<name>[A-Za-z].*?)_(?P<instance>\d{3})$")
_BASE_MODALITIES = ("ct", "mr", "pet")

# demo naming: case regex -> (dataset, modality of the case number)
DEMO_CASES: tuple[tuple[re.Pattern[str], str, Any], ...] = (
    (re.compile(r"^amos_(?P<n>\d+)$"), "amos", lambda n: "ct" if n < 500 else "mr"),
    (re.compile(r"^s(?P<n>\d{4})$"), "totalsegmentator", lambda n: "ct"),
)


@dataclass(frozen=True)
class SliceInfo:
    """What an image name says about its slice."""

    dataset: str
    modality: str
    case: str
    axis: str
    slice: int


def _base_modality(token: str) -> str:
    head = token.split("_", 1)[0].lower()
    if head in _BASE_MODALITIES:
        return head
    return re.sub(r"_\d+$", "", token.lower())


def parse_image_stem(stem: str) -> SliceInfo:
    """Parse an image file stem in the release or the demo naming.

    Raises:
        DataError: a name in neither naming, or a demo case of unknown origin.
    """
    parts = stem.split("--")
    if len(parts) == 4 and all(parts) and (where := _AXIS_SLICE.match(parts[3])):
        return SliceInfo(parts[1], _base_modality(parts[0]), parts[2], where["axis"], int(where["slice"]))
    match = _DEMO_IMAGE.match(stem)
    if match:
        case = match["case"]
        for pattern, dataset, modality in DEMO_CASES:
            hit = pattern.match(case)
            if hit:
                return SliceInfo(dataset, modality(int(hit["n"])), case, "z", int(match["slice"]))
        raise DataError(
            f"{stem}: demo-style image name of a case of unknown origin {case!r} (known: amos_<n>, s<nnnn>)"
        )
    raise DataError(
        f"{stem}: not an SA-Med2D image name (<modality>--<dataset>--<case>--<axis>_<slice>, or <case>_<slice>)"
    )


def parse_mask_stem(stem: str) -> tuple[str, str | int, int]:
    """Split a mask stem into (image stem, class name or class index, instance).

    Returns a class *index* (int) for the release naming and a class *name*
    (str) for the demo naming.

    Raises:
        DataError: a name in neither naming.
    """
    parts = stem.split("--")
    if len(parts) == 5 and (klass := _CLASS_INSTANCE.match(parts[4])):
        return "--".join(parts[:4]), int(klass["index"]), int(klass["instance"])
    match = _DEMO_MASK.match(stem)
    if match:
        return match["image"], match["name"], int(match["instance"])
    raise DataError(
        f"{stem}: not an SA-Med2D mask name (<image stem>--<class:04d>_<instance:03d>, or <image stem>_<class "
        "name>_<instance:03d>)"
    )


def normalise_class_name(name: str) -> str:
    """``"Left Kidney"`` -> ``left_kidney``; ``prostate/uterus`` -> ``prostate_uterus``."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


class ClassMapper:
    """Maps source class names to vocabulary ids (see the module doc).

    Args:
        vocabulary: The global vocabulary.
        classmap_json: Optional ``{"names": {name: vocabulary name | null}}`` file.
        unknown: ``"error"`` or ``"skip"`` for names neither in the vocabulary nor the map.

    Raises:
        DataError: an unreadable class map, or one naming a class the vocabulary lacks.
        ValueError: ``unknown`` is not "error" or "skip".
    """

    def __init__(self, vocabulary: Vocabulary, classmap_json: str | Path | None = None, unknown: str = "error") -> None:
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', got {unknown!r}")
        self.vocabulary = vocabulary
        self.unknown = unknown
        self.table: dict[str, int | None] = {normalise_class_name(n): vocabulary.id_of(n) for n in vocabulary.names}
        if classmap_json is not None:
            path = Path(classmap_json)
            try:
                names = json.loads(path.read_text(encoding="utf-8"))["names"]
            except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
                raise DataError(f"{path}: not a class map with a 'names' object ({err})") from err
            for source, target in names.items():
                try:
                    self.table[normalise_class_name(source)] = None if target is None else vocabulary.id_of(target)
                except DataError as err:
                    raise DataError(f"{path}: {source!r} -> {err}") from err
        self.unknown_counts: dict[str, int] = {}
        self.ignored_counts: dict[str, int] = {}

    def map(self, name: str) -> int | None:
        """Vocabulary id of ``name``, or None (known-ignored, or unknown with ``skip``); counts both."""
        key = normalise_class_name(name)
        if key in self.table:
            class_id = self.table[key]
            if class_id is None:
                self.ignored_counts[key] = self.ignored_counts.get(key, 0) + 1
            return class_id
        self.unknown_counts[key] = self.unknown_counts.get(key, 0) + 1
        return None

    def check(self, where: str) -> None:
        """Raise if unknown names were met and they are not to be skipped."""
        if self.unknown_counts and self.unknown == "error":
            names = sorted(self.unknown_counts)
            more = f" and {len(names) - 20} more" if len(names) > 20 else ""
            raise DataError(
                f"{where}: class names not in the vocabulary nor the class map: {names[:20]}{more} "
                "(add them to the class map, as null to skip them, or import with unknown_classes='skip')"
            )


def png_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from a PNG header (reads 24 bytes).

    Raises:
        DataError: not a PNG, or missing.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(24)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from err
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise DataError(f"{path}: not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(height), int(width)


def _mask_area(path: Path) -> int:
    import SimpleITK as sitk  # PNG decoding

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as err:
        raise DataError(f"{path}: unreadable mask PNG") from err
    if array.ndim == 3:
        array = array.any(axis=-1)
    return int(np.count_nonzero(array))


def iter_json_object(path: str | Path, chunk_size: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """Yield the (key, value) pairs of a top-level JSON object, reading it in chunks.

    Memory holds one chunk and one value at a time, so the multi-GB pairing
    files of the full release can be read.

    Raises:
        DataError: unreadable file or not a JSON object.
    """
    path = Path(path)
    decoder = json.JSONDecoder()
    try:
        stream = open(path, encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from err
    with stream:
        buf, pos, eof = "", 0, False

        def more() -> bool:
            nonlocal buf, pos, eof
            data = stream.read(chunk_size)
            if not data:
                eof = True
                return False
            buf, pos = buf[pos:] + data, 0
            return True

        def skip_ws() -> str:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if not more():
                    return ""

        def value() -> Any:
            nonlocal pos
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    if not more():
                        raise DataError(f"{path}: malformed or truncated JSON") from None
                    continue
                # a number cut by the chunk end parses as a shorter number ("-1." -> -1): read on
                cut = end == len(buf) or (isinstance(obj, (int, float)) and buf[end] not in ",]} \t\r\n")
                if cut and not eof and more():
                    continue
                pos = end
                return obj

        try:
            if skip_ws() != "{":
                raise DataError(f"{path}: expected a JSON object at the top level")
            pos += 1
            if skip_ws() == "}":
                return
            while True:
                key = value()
                if not isinstance(key, str) or skip_ws() != ":":
                    raise DataError(f'{path}: malformed JSON object (expected "key": value)')
                pos += 1
                skip_ws()
                yield key, value()
                sep = skip_ws()
                pos += 1
                if sep == "}":
                    return
                if sep != ",":
                    raise DataError(f"{path}: malformed JSON object (expected ',' or '}}')")
                skip_ws()
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 text ({err.reason})") from err


def _pairs(
    root: Path, files: Sequence[tuple[str | Path, str | None, str]]
) -> Iterator[tuple[str, str, str | None, Path]]:
    """(image path, mask path, split, json file) from pairing files (``kind`` = image_to_masks | mask_to_image)."""
    for name, split, kind in files:
        path = root / name if not Path(name).is_absolute() else Path(name)
        for key, value in iter_json_object(path):
            if kind == "image_to_masks":
                if not isinstance(value, list):
                    raise DataError(f"{path}: {key}: expected a list of mask paths")
                for mask in value:
                    yield key, str(mask), split, path
            else:
                if not isinstance(value, str):
                    raise DataError(f"{path}: {key}: expected an image path")
                yield str(value), key, split, path


class _Resolver:
    """Maps json paths (``data_demo/images/x.png``) onto files under the release root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.strip: int | None = None

    def __call__(self, rel: str, where: Path) -> Path:
        parts = Path(rel).parts
        if self.strip is None:
            for strip in range(len(parts)):
                if (self.root.joinpath(*parts[strip:])).is_file():
                    self.strip = strip
                    break
            else:
                raise DataError(f"{where}: {rel} not found under {self.root} (nor with its leading folders dropped)")
        return self.root.joinpath(*parts[self.strip :])


class _ReleaseReader:
    """Turns one (image, mask) pair of a release into an index row (or None: class skipped)."""

    def __init__(
        self,
        root: str | Path,
        vocabulary_csv: str | Path,
        classmap_json: str | Path | None,
        class_mapping_json: str | Path | None,
        unknown_classes: str,
        measure_area: bool,
        min_mask_fraction: float | None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: SA-Med2D release folder not found")
        self.vocabulary = Vocabulary.read(vocabulary_csv)
        self.names = dict(zip(self.vocabulary.ids, self.vocabulary.names))
        self.mapper = ClassMapper(self.vocabulary, classmap_json, unknown_classes)
        self.index_names: dict[str, dict[int, str]] = {}
        if class_mapping_json is not None:
            cpath = (
                Path(class_mapping_json) if Path(class_mapping_json).is_absolute() else self.root / class_mapping_json
            )
            try:
                raw = json.loads(cpath.read_text(encoding="utf-8"))
                self.index_names = {str(ds): {int(i): str(n) for n, i in table.items()} for ds, table in raw.items()}
            except (OSError, AttributeError, TypeError, ValueError) as err:
                raise DataError(f"{cpath}: not a class mapping {{dataset: {{class name: index}}}} ({err})") from err
        self.measure_area = measure_area
        self.min_mask_fraction = min_mask_fraction
        self.resolve = _Resolver(self.root)
        self.dropped_small = 0

    def row(self, image_rel: str, mask_rel: str, where: Path) -> dict[str, Any] | None:
        image_stem, mask_stem = Path(image_rel).stem, Path(mask_rel).stem
        info = parse_image_stem(image_stem)
        mask_image, klass, instance = parse_mask_stem(mask_stem)
        if mask_image != image_stem:
            raise DataError(f"{where}: mask {mask_rel} does not belong to image {image_rel}")
        if isinstance(klass, int):
            if info.dataset not in self.index_names or klass not in self.index_names[info.dataset]:
                raise DataError(
                    f"{where}: {mask_rel}: class index {klass} of dataset {info.dataset} is not in the "
                    "class-mapping json"
                )
            klass = self.index_names[info.dataset][klass]
        class_id = self.mapper.map(klass)
        if class_id is None:
            return None
        image_path, mask_path = self.resolve(image_rel, where), self.resolve(mask_rel, where)
        height, width = png_size(image_path)
        fraction = float("nan")
        if self.measure_area:
            mask_h, mask_w = png_size(mask_path)
            if (mask_h, mask_w) != (height, width):
                raise DataError(
                    f"{mask_path}: size {mask_w}x{mask_h} differs from its image {image_path} ({width}x{height})"
                )
            fraction = _mask_area(mask_path) / float(height * width)
            if self.min_mask_fraction is not None and fraction < self.min_mask_fraction:
                self.dropped_small += 1
                return None
        return {
            "image": str(image_path),
            "mask": str(mask_path),
            "dataset": info.dataset,
            "modality": info.modality,
            "case": info.case,
            "axis": info.axis,
            "slice": info.slice,
            "class_id": int(class_id),
            "class_name": self.names[int(class_id)],
            "instance": instance,
            "area_fraction": fraction,
            "height": height,
            "width": width,
            "spacing_mm": float("nan"),  # the release does not give pixel spacing
        }


def _release_rows(reader: _ReleaseReader, files: Sequence[tuple[str | Path, str | None, str]]) -> list[dict[str, Any]]:
    """Index rows (with ``split``) of every mask the pairing files name, each mask once; skipped classes left out."""
    seen_masks: set[str] = set()
    rows: list[dict[str, Any]] = []
    for image_rel, mask_rel, split, where in _pairs(reader.root, files):
        if mask_rel in seen_masks:
            continue
        seen_masks.add(mask_rel)
        row = reader.row(image_rel, mask_rel, where)
        if row is not None:
            rows.append({**row, "split": split})
    return rows


def _fill_splits(masks: pd.DataFrame, root: Path, test_fraction: float, seed: int) -> pd.Series:
    """The split of every row: as the pairing files give it, else drawn by case, per modality.

    Raises:
        DataError: a case is in both splits (it would leak).
    """
    given = masks.dropna(subset=["split"]).groupby("case")["split"].nunique()
    leaking = sorted(given[given > 1].index)
    if leaking:
        raise DataError(f"{root}: cases in both train and test pairing files (they would leak): {leaking[:10]}")
    fixed = masks.dropna(subset=["split"]).drop_duplicates("case").set_index("case")["split"].to_dict()
    open_cases = masks.loc[masks["split"].isna(), ["case", "modality"]].drop_duplicates()
    open_cases = open_cases[~open_cases["case"].isin(fixed)]
    drawn = split_cases(open_cases, test_fraction, seed) if not open_cases.empty else {}
    return masks["case"].map({**drawn, **fixed})


def _renumber_instances(masks: pd.DataFrame) -> pd.DataFrame:
    """Instances per (image, class), largest first (release order when areas are not measured); index order."""
    masks = masks.sort_values(
        ["image", "class_id", "area_fraction", "instance", "mask"],
        ascending=[True, True, False, True, True],
        na_position="last",
    )
    masks["instance"] = masks.groupby(["image", "class_id"]).cumcount()
    return masks.sort_values(["case", "axis", "slice", "class_id", "instance"]).reset_index(drop=True)[
        [*MASK_COLUMNS, "split"]
    ]


def _skipped_counts(reader: _ReleaseReader) -> dict[str, Any]:
    """The summary's counts of masks left out: unknown and ignored classes, masks below the area threshold."""
    return {
        "skipped_unknown_classes": dict(sorted(reader.mapper.unknown_counts.items())),
        "skipped_ignored_classes": dict(sorted(reader.mapper.ignored_counts.items())),
        "dropped_small_masks": reader.dropped_small,
    }


def _release_summary(reader: _ReleaseReader, masks: pd.DataFrame, images: pd.DataFrame) -> dict[str, Any]:
    """:func:`import_release`'s summary: what was indexed per split, and what was left out."""
    return {
        "root": str(reader.root),
        "n_cases": int(masks["case"].nunique()),
        "n_images": len(images),
        "n_masks": len(masks),
        "splits": {
            s: {
                "cases": int(masks.loc[masks["split"] == s, "case"].nunique()),
                "masks": int((masks["split"] == s).sum()),
            }
            for s in SPLITS
        },
        **_skipped_counts(reader),
    }


def import_release(
    root: str | Path,
    *,
    image_to_masks: Sequence[tuple[str, str | None]] = (),
    mask_to_image: Sequence[tuple[str, str | None]] = (),
    vocabulary_csv: str | Path,
    classmap_json: str | Path | None = None,
    class_mapping_json: str | Path | None = None,
    unknown_classes: str = "error",
    measure_area: bool = True,
    min_mask_fraction: float | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read a release's pairing files and names into the masks and images tables.

    Args:
        root: The release folder (holds the json files, ``images/`` and ``masks/``).
        image_to_masks: ``[(json file, split or None), ...]`` of ``{image: [masks]}`` files.
        mask_to_image: ``[(json file, split or None), ...]`` of ``{mask: image}`` files.
        vocabulary_csv: The global vocabulary.
        classmap_json: Class-name map into the vocabulary (``config/classmaps/*.json``).
        class_mapping_json: The release's ``{dataset: {class name: index}}`` file
            (needed for release-style mask names), relative to ``root`` or absolute.
        unknown_classes: ``"error"`` (default) or ``"skip"`` (skipped, counted).
        measure_area: Decode each mask PNG for its area (else ``area_fraction`` is NaN
            and instances keep the release's order).
        min_mask_fraction: Drop masks below this share of the slice (needs ``measure_area``).
        test_fraction: For entries without a split: see :func:`split_cases`.
        seed: Seed of that split.

    Returns:
        (masks, images, summary): the two tables and counts of what was kept and skipped.

    Raises:
        DataError: unreadable or malformed json, unknown names (with ``"error"``),
            missing files, a case in two splits, or nothing to index.
    """
    reader = _ReleaseReader(
        root, vocabulary_csv, classmap_json, class_mapping_json, unknown_classes, measure_area, min_mask_fraction
    )
    files = [(n, s, "image_to_masks") for n, s in image_to_masks] + [(n, s, "mask_to_image") for n, s in mask_to_image]
    if not files:
        raise DataError(f"{root}: no pairing json files given")
    rows = _release_rows(reader, files)
    mapper, root = reader.mapper, reader.root
    mapper.check(str(root))
    if not rows:
        raise DataError(f"{root}: no mask maps into the vocabulary (see the class map)")
    masks = pd.DataFrame(rows)
    masks["split"] = _fill_splits(masks, root, test_fraction, seed)
    masks = _renumber_instances(masks)
    images = images_table(masks)
    summary = _release_summary(reader, masks, images)
    log.info(
        "%s: %d masks of %d images (%d cases) imported; %d unknown and %d ignored class masks skipped",
        root,
        len(masks),
        len(images),
        summary["n_cases"],
        sum(mapper.unknown_counts.values()),
        sum(mapper.ignored_counts.values()),
    )
    return masks, images, summary


def import_sa_med2d(
    root: str | Path,
    masks_out: str | Path,
    images_out: str | Path,
    summary_out: str | Path | None = None,
    **kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`import_release`, then write the tables (parquet) and the summary (json) atomically.

    Returns:
        (masks, images).
    """
    masks, images, summary = import_release(root, **kwargs)
    for table, out in ((masks, masks_out), (images, images_out)):
        with atomic_path(out) as tmp:
            table.to_parquet(tmp, index=False)
    if summary_out is not None:
        write_json(summary_out, summary)
    return masks, images


def import_registry_release(
    root: str | Path,
    release: Mapping[str, Any],
    out: Mapping[str, str | Path],
    *,
    vocabulary_csv: str | Path,
    classmap_json: str | Path | None,
    test_fraction: float,
    seed: int,
    min_mask_fraction: float | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rule ``import_release``: a registry ``slices2d`` entry's release -> the workflow's index tables.

    Args:
        root: The release folder (``<dataset.mirror>/<release.root>``).
        release: The registry entry's ``release`` section: ``image_to_masks`` and
            ``mask_to_image`` (json names without a split: split by case),
            ``class_mapping``, ``unknown_classes``.
        out: ``{"masks", "images", "summary"}`` output paths.
        vocabulary_csv: The global vocabulary.
        classmap_json: The registry's class map into the vocabulary.
        test_fraction: ``split.test_fraction``.
        seed: ``split.seed``.
        min_mask_fraction: ``slicing.min_mask_fraction``: smaller masks are dropped, as in sliced volumes.
    """
    return import_sa_med2d(
        root,
        out["masks"],
        out["images"],
        out["summary"],
        image_to_masks=[(name, None) for name in release["image_to_masks"]],
        mask_to_image=[(name, None) for name in release["mask_to_image"]],
        vocabulary_csv=vocabulary_csv,
        classmap_json=classmap_json,
        class_mapping_json=release.get("class_mapping"),
        unknown_classes=release.get("unknown_classes", "error"),
        min_mask_fraction=min_mask_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )


def _stream_splits(
    reader: _ReleaseReader, image_to_masks: Sequence[tuple[str, str | None]], test_fraction: float, seed: int
) -> dict[str, str]:
    """``{case: split}`` of every case the pairing files name (their image names only): given, else drawn.

    Raises:
        DataError: a case is in both splits (it would leak).
    """
    given: dict[str, str] = {}
    modality: dict[str, str] = {}
    for name, split in image_to_masks:
        for image_rel, _ in iter_json_object(reader.root / name):
            info = parse_image_stem(Path(image_rel).stem)
            modality[info.case] = info.modality
            if split is not None:
                if given.setdefault(info.case, split) != split:
                    raise DataError(
                        f"{reader.root}: case {info.case} is in both train and test pairing files (it would leak)"
                    )
    open_cases = pd.DataFrame([(c, m) for c, m in modality.items() if c not in given], columns=["case", "modality"])
    return {**(split_cases(open_cases, test_fraction, seed) if not open_cases.empty else {}), **given}


def _entry_rows(reader: _ReleaseReader, path: Path, image_rel: str, masks: Any) -> list[dict[str, Any]]:
    """Index rows of one ``{image: [masks]}`` entry, instances renumbered per class.

    Instances per (image, class): largest first, else the release's order.

    Raises:
        DataError: the entry's value is not a list of mask paths, or as :meth:`_ReleaseReader.row`.
    """
    if not isinstance(masks, list):
        raise DataError(f"{path}: {image_rel}: expected a list of mask paths")
    rows = [r for r in (reader.row(image_rel, str(m), path) for m in masks) if r is not None]
    rows.sort(
        key=lambda r: (
            r["class_id"],
            -r["area_fraction"] if r["area_fraction"] == r["area_fraction"] else 0.0,
            r["instance"],
            r["mask"],
        )
    )
    counter: dict[int, int] = {}
    for row in rows:
        row["instance"] = counter.get(row["class_id"], 0)
        counter[row["class_id"]] = row["instance"] + 1
    return rows


def _release_chunks(
    reader: _ReleaseReader, image_to_masks: Sequence[tuple[str, str | None]], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The release's index rows (:data:`MASK_COLUMNS`) in chunks of at least ``chunk_rows`` (the last one fewer)."""
    buffer: list[dict[str, Any]] = []
    for name, _ in image_to_masks:
        path = reader.root / name
        for image_rel, masks in iter_json_object(path):
            buffer.extend(_entry_rows(reader, path, image_rel, masks))
            if len(buffer) >= chunk_rows:
                yield pd.DataFrame(buffer, columns=MASK_COLUMNS)
                buffer = []
    if buffer:
        yield pd.DataFrame(buffer, columns=MASK_COLUMNS)


def import_release_dataset(
    root: str | Path,
    out_dir: str | Path,
    *,
    image_to_masks: Sequence[tuple[str, str | None]],
    vocabulary_csv: str | Path,
    classmap_json: str | Path | None = None,
    class_mapping_json: str | Path | None = None,
    unknown_classes: str = "error",
    measure_area: bool = False,
    min_mask_fraction: float | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    chunk_rows: int = 200_000,
) -> dict[str, Any]:
    """:func:`import_release` for the full release: streamed into a partitioned index dataset.

    Memory holds one json entry, one chunk of rows and the case table, not the
    16 million masks: pass 1 reads the image names for the case list (and their
    splits), pass 2 streams the rows through
    :func:`segsam.data.index.write_index_dataset`. Only ``{image: [masks]}``
    pairing files are taken (the release's ``SAMed2D_v1.json`` is one), because
    each entry then holds all masks of its image and instances can be renumbered
    entry by entry. ``measure_area`` is off by default: decoding every mask PNG
    of the release takes hours.

    Returns:
        The summary (counts, skipped classes), also logged.

    Raises:
        DataError: as :func:`import_release`.
    """
    reader = _ReleaseReader(
        root, vocabulary_csv, classmap_json, class_mapping_json, unknown_classes, measure_area, min_mask_fraction
    )
    if not image_to_masks:
        raise DataError(f"{reader.root}: no pairing json files given")
    splits = _stream_splits(reader, image_to_masks, test_fraction, seed)
    written = write_index_dataset(_release_chunks(reader, image_to_masks, chunk_rows), out_dir, splits=splits)
    try:
        reader.mapper.check(str(reader.root))
    except DataError:
        shutil.rmtree(out_dir, ignore_errors=True)  # an index with unmapped classes is not kept
        raise
    summary = {
        "root": str(reader.root),
        "n_cases": len(splits),
        "n_masks": written,
        "splits": {s: sum(1 for v in splits.values() if v == s) for s in SPLITS},
        **_skipped_counts(reader),
    }
    log.info("%s: %d masks streamed into %s", reader.root, written, out_dir)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m segsam.data.sa_med2d ROOT --train-json ... --out-dir ...``."""
    from segsam.errors import SegsamError
    from segsam.logs import setup_logging

    parser = argparse.ArgumentParser(
        description="Index an SA-Med2D-style 2D release (masks.parquet, images.parquet, summary.json)."
    )
    parser.add_argument("root", help="release folder (json files, images/, masks/)")
    parser.add_argument("--out-dir", required=True, help="where masks.parquet, images.parquet and summary.json go")
    parser.add_argument("--train-json", action="append", default=[], help="{image: [masks]} file of the train split")
    parser.add_argument("--test-json", action="append", default=[], help="{mask: image} file of the test split")
    parser.add_argument(
        "--all-json", action="append", default=[], help="{image: [masks]} file without a split (split by case)"
    )
    parser.add_argument("--class-mapping", help="the release's {dataset: {class: index}} json")
    parser.add_argument("--vocabulary", default="config/vocabulary.csv")
    parser.add_argument("--classmap", default="config/classmaps/sa_med2d.json")
    parser.add_argument("--unknown-classes", choices=["error", "skip"], default="error")
    parser.add_argument("--no-area", action="store_true", help="do not decode masks (area_fraction = NaN)")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="full-release mode: a partitioned masks dataset (out-dir/masks/) in bounded memory; "
        "--train-json/--all-json only",
    )
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        out = Path(args.out_dir)
        if args.stream:
            if args.test_json:
                parser.error("--stream takes {image: [masks]} files only (--train-json, --all-json)")
            summary = import_release_dataset(
                args.root,
                out / "masks",
                image_to_masks=[(p, "train") for p in args.train_json] + [(p, None) for p in args.all_json],
                vocabulary_csv=args.vocabulary,
                classmap_json=args.classmap,
                class_mapping_json=args.class_mapping,
                unknown_classes=args.unknown_classes,
                measure_area=not args.no_area,
                test_fraction=args.test_fraction,
                seed=args.seed,
            )
            write_json(out / "summary.json", summary)
            return 0
        import_sa_med2d(
            args.root,
            out / "masks.parquet",
            out / "images.parquet",
            out / "summary.json",
            image_to_masks=[(p, "train") for p in args.train_json] + [(p, None) for p in args.all_json],
            mask_to_image=[(p, "test") for p in args.test_json],
            vocabulary_csv=args.vocabulary,
            classmap_json=args.classmap,
            class_mapping_json=args.class_mapping,
            unknown_classes=args.unknown_classes,
            measure_area=not args.no_area,
            test_fraction=args.test_fraction,
            seed=args.seed,
        )
    except SegsamError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

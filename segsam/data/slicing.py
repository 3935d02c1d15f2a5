"""3D -> 2D: one volume becomes SA-Med2D-style image and mask PNGs (docs/data.md#conventions).

Per case: read + check + reorient to LPS (:mod:`segsam.data.io`), resample to
isotropic voxels, normalise intensities to uint8 (CT window, MR foreground
percentiles), map labels into the vocabulary, cut slices along the configured
axes (every ``stride``-th), split each class into connected components, drop
components smaller than ``min_mask_fraction`` of the slice, drop slices left
without masks, write PNGs, a manifest and a ``summary.json``. All output goes to
a temporary folder that is renamed into place at the end, so a failing case
leaves nothing. Where the case id had to be made safe for file names
(:func:`segsam.data.layouts.safe_case_id`), the summary records the id as the
user's files name it (``source_case``), which :func:`segsam.data.index.build_index`
keeps as a column.

A case whose label volume is empty (no voxel left after mapping into the
vocabulary) is not an error: it is skipped with a warning, and its folder holds
an empty manifest and a summary with ``"skipped": "empty label volume"``, which
:func:`segsam.data.index.build_index` counts and reports.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage
from tqdm import tqdm

from segsam.atomic import atomic_dir, write_json
from segsam.data.io import read_case, resample_isotropic, write_png
from segsam.data.naming import SliceName
from segsam.data.vocabulary import LabelMap, Vocabulary

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
SUMMARY = "summary.json"
SKIPPED_EMPTY = "empty label volume"
#: The summary key (and index column) of the case id as the user's files name it.
SOURCE_CASE = "source_case"
MASK_COLUMNS = [
    "image",
    "mask",
    "dataset",
    "modality",
    "case",
    "axis",
    "slice",
    "class_id",
    "class_name",
    "instance",
    "area_fraction",
    "height",
    "width",
    "spacing_mm",
]

#: glibc's ``mallopt`` parameter number for the mmap threshold.
_M_MMAP_THRESHOLD = -3
#: Buffers at least this large are mapped and unmapped on their own (see :func:`return_large_buffers`).
MMAP_THRESHOLD_BYTES = 1 << 20


def return_large_buffers() -> bool:
    """Make freed volume-sized buffers leave the process at once (glibc only).

    glibc raises its mmap threshold (up to 32 MB) each time a mapped buffer is
    freed; after the first freed volume, later volume-sized arrays (the uint8
    label and intensity volumes) come from the heap, which keeps them resident
    after they are freed, which nearly doubles the stage's peak on the real CT
    (``benchmarks/slicing_throughput.py --compare-allocator``). A fixed
    threshold of :data:`MMAP_THRESHOLD_BYTES` keeps the peak at the live memory,
    while per-slice arrays (well under 1 MB) still reuse the heap.

    Returns:
        Whether the setting took effect (``False`` off glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)


def normalise_intensity(
    volume: np.ndarray, modality: str, ct_window: Sequence[float], mr_percentiles: Sequence[float]
) -> np.ndarray:
    """Scale a volume to uint8.

    CT: clip to ``ct_window`` (HU) and scale linearly. MR (and anything not CT):
    clip to the ``mr_percentiles`` of the foreground (Otsu threshold) and scale.

    Args:
        volume: Z x Y x X float array.
        modality: ``"ct"`` or another modality name.
        ct_window: (low, high) HU.
        mr_percentiles: (low, high) percentiles of foreground intensities.

    Returns:
        Z x Y x X uint8 array.
    """
    if modality == "ct":
        low, high = float(ct_window[0]), float(ct_window[1])
    else:
        # a copy, not a view: a view of the temporary Otsu image would outlive its memory
        foreground = sitk.GetArrayFromImage(sitk.OtsuThreshold(sitk.GetImageFromArray(volume), 0, 1)).astype(bool)
        values = volume[foreground] if foreground.any() else volume.ravel()
        low, high = (float(v) for v in np.percentile(values, list(mr_percentiles)))
    if high <= low:
        return np.zeros(volume.shape, dtype=np.uint8)
    # one working copy, then in place: the same arithmetic as (clip - low) / (high - low) * 255,
    # without a full-size temporary per operation (peak memory of the stage, see benchmarks/)
    work = np.array(volume, dtype=np.result_type(volume.dtype, np.float32), copy=True)
    np.clip(work, low, high, out=work)
    work -= low
    work /= high - low
    work *= 255.0
    np.rint(work, out=work)
    return work.astype(np.uint8)


def _plane(array: np.ndarray, axis: str, index: int) -> np.ndarray:
    """One 2D plane of a Z x Y x X (LPS) array, shown as radiologists view it.

    z (axial): rows = anterior -> posterior, columns = patient right -> left.
    y (coronal) and x (sagittal): rows flipped so that superior is at the top.
    """
    if axis == "z":
        return array[index]
    if axis == "y":
        return array[::-1, index, :]
    return array[::-1, :, index]


def _plane_indices(shape: Sequence[int], axis: str, stride: int) -> range:
    return range(0, shape["zyx".index(axis)], stride)


@dataclass
class _CaseVolumes:
    """One case ready to slice: Z x Y x X arrays (LPS, isotropic voxels)."""

    classes: np.ndarray  # vocabulary class ids (0 = background)
    pixels: np.ndarray | None  # uint8 intensities; None when ``classes`` is empty (nothing to slice)
    spacing: float  # the voxel side, mm: the pixel side of every plane


@dataclass
class _PlaneMask:
    """One connected component of a class in a plane, kept as a mask."""

    class_id: int
    instance: int  # rank by size within its class in the plane, largest first
    mask: np.ndarray  # H x W bool
    fraction: float  # its share of the plane's pixels


@dataclass(frozen=True)
class CaseInput:
    """How to read one case.

    Attributes:
        resample_labels: Put a label on another grid onto the image's (``dataset.resample_labels``).
        sources: ``{"image": file, "label": file}``: the user's files the staged copies come
            from, named in messages (None: the paths read).
    """

    resample_labels: bool = False
    sources: Mapping[str, str] | None = None


def _load_volumes(
    image_path: str | Path,
    label_path: str | Path,
    labelmap: LabelMap,
    modality: str,
    slicing: Mapping[str, Any],
    reading: CaseInput,
) -> _CaseVolumes:
    """Read, check, reorient and resample a case; map its labels into the vocabulary; normalise its intensities.

    Raises:
        DataError: a bad volume or label values missing from the label map.
    """
    image, label = read_case(image_path, label_path, resample_labels=reading.resample_labels, sources=reading.sources)
    label_name = (reading.sources or {}).get("label") or label_path
    image, label = resample_isotropic(image, label)
    spacing = float(image.GetSpacing()[0])  # isotropic: the pixel side of every plane, mm
    # memory: work on views of the ITK buffers and drop each volume as soon as it is used
    labels = sitk.GetArrayViewFromImage(label)
    lut = labelmap.lookup_table(np.unique(labels), where=str(label_name))
    if lut.max(initial=0) <= np.iinfo(np.uint8).max:
        lut = lut.astype(np.uint8)
    classes = lut[labels]
    del labels, label
    pixels = (
        None
        if not classes.any()
        else normalise_intensity(
            sitk.GetArrayViewFromImage(image), modality, slicing["ct_window"], slicing["mr_percentiles"]
        )
    )
    del image
    return _CaseVolumes(classes=classes, pixels=pixels, spacing=spacing)


def _plane_masks(label_plane: np.ndarray, min_fraction: float) -> list[_PlaneMask]:
    """The connected components of each class in a plane, largest first, those below ``min_fraction`` dropped."""
    kept: list[_PlaneMask] = []
    for class_id in np.unique(label_plane):
        if class_id == 0:
            continue
        components, count = ndimage.label(label_plane == class_id)
        sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, count + 1))
        order = np.argsort(-sizes, kind="stable")
        instance = 0
        for index in order:
            fraction = float(sizes[index]) / label_plane.size
            if fraction < min_fraction:
                continue
            kept.append(_PlaneMask(int(class_id), instance, components == index + 1, fraction))
            instance += 1
    return kept


def _write_plane_masks(
    folder: Path, name: SliceName, kept: Sequence[_PlaneMask], class_names: Mapping[int, str], spacing: float
) -> list[dict[str, Any]]:
    """Write a plane's mask PNGs (0/255) into ``folder/masks``; return their manifest rows."""
    rows = []
    for plane_mask in kept:
        height, width = plane_mask.mask.shape
        mask_file = name.mask_file(plane_mask.class_id, plane_mask.instance)
        write_png(folder / "masks" / mask_file, plane_mask.mask.astype(np.uint8) * 255)
        rows.append(
            {
                "image": f"images/{name.image_file}",
                "mask": f"masks/{mask_file}",
                "dataset": name.dataset,
                "modality": name.modality,
                "case": name.case,
                "axis": name.axis,
                "slice": name.slice,
                "class_id": plane_mask.class_id,
                "class_name": class_names[plane_mask.class_id],
                "instance": plane_mask.instance,
                "area_fraction": plane_mask.fraction,
                "height": height,
                "width": width,
                "spacing_mm": spacing,
            }
        )
    return rows


def _write_slices(
    folder: Path,
    volumes: _CaseVolumes,
    slicing: Mapping[str, Any],
    *,
    case: str,
    modality: str,
    dataset: str,
    class_names: Mapping[int, str],
) -> list[dict[str, Any]]:
    """Cut the planes of every configured axis, write the image and mask PNGs of those with masks into ``folder``.

    Returns:
        The manifest rows (:data:`MASK_COLUMNS`), one per mask written.

    Raises:
        ValueError: a name part (``case``, ...) that file names cannot hold.
    """
    if volumes.pixels is None:
        return []
    min_fraction = float(slicing["min_mask_fraction"])
    jobs = [
        (axis, k)
        for axis in slicing["axes"]
        for k in _plane_indices(volumes.classes.shape, axis, int(slicing["stride"][axis]))
    ]
    rows: list[dict[str, Any]] = []
    for axis, k in tqdm(jobs, desc=f"slice {case}", unit="slice", mininterval=2.0):
        label_plane = _plane(volumes.classes, axis, k)
        if min(label_plane.shape) < int(slicing["min_slice_side"]):
            continue
        name = SliceName(modality, dataset, case, axis, k)
        kept = _plane_masks(label_plane, min_fraction)
        if not kept:
            continue
        write_png(folder / "images" / name.image_file, _plane(volumes.pixels, axis, k))
        rows.extend(_write_plane_masks(folder, name, kept, class_names, volumes.spacing))
    return rows


def slice_case(  # long: one documented entry point with every setting of the stage
    image_path: str | Path,
    label_path: str | Path,
    out_dir: str | Path,
    *,
    case: str,
    modality: str,
    dataset: str,
    vocabulary_csv: str | Path,
    labelmap_json: str | Path | None = None,
    slicing: Mapping[str, Any],
    labels: Mapping[str, str | None] | None = None,
    labels_from: str | None = None,
    vocabulary_extra: Mapping[str, int] | None = None,
    resample_labels: bool = False,
    sources: Mapping[str, str] | None = None,
    source_case: str | None = None,
) -> pd.DataFrame:
    """Slice one case into ``out_dir`` (images/, masks/, manifest.parquet).

    Args:
        image_path: The image volume.
        label_path: Its label volume.
        out_dir: Output folder; created atomically (temp folder + rename).
        case: Case id (letters, digits, '_' and '.').
        modality: ``ct``, ``mr``, ...
        dataset: Dataset name used in the file names.
        vocabulary_csv: The global vocabulary.
        labelmap_json: The dataset's label map into the vocabulary (or ``labels``).
        slicing: The ``slicing`` config section.
        labels: The label map given inline (``{value: vocabulary name or None}``), where no file
            holds it (an nnU-Net dataset.json, per-class masks); exactly one of this and ``labelmap_json``.
        labels_from: Where ``labels`` comes from (the dataset.json, the mask folder), named in messages.
        vocabulary_extra: Classes the config adds to the vocabulary (``vocabulary_extra``).
        resample_labels: Resample a label on another grid onto the image's
            (``dataset.resample_labels``, :func:`segsam.data.io.match_label_grid`); off: refuse it.
        sources: ``{"image": file, "label": file}``: the user's files the staged copies
            come from, named in messages instead of the staged copies.
        source_case: The case id as the user's files name it (the index's ``source_case``; None: ``case``).

    Returns:
        The manifest: one row per kept mask (columns :data:`MASK_COLUMNS`);
        empty when the label volume is empty (the case is skipped, see the module doc).

    Raises:
        DataError: a bad volume (see :func:`segsam.data.io.read_case`) or label
            values missing from the label map (named in the message).

    Note:
        Sets the process's malloc mmap threshold (:func:`return_large_buffers`)
        so that the peak memory stays near the live memory.
    """
    out_dir = Path(out_dir)
    return_large_buffers()
    vocabulary = Vocabulary.read(vocabulary_csv, vocabulary_extra)
    if (labelmap_json is None) == (labels is None):
        raise ValueError("give exactly one of labelmap_json and labels")
    labelmap = (
        LabelMap.read(labelmap_json, vocabulary)
        if labelmap_json is not None
        else LabelMap.from_labels(labels or {}, vocabulary, labels_from or f"(case {source_case or case})")
    )
    class_names = dict(zip(vocabulary.ids, vocabulary.names))
    reading = CaseInput(resample_labels=resample_labels, sources=sources)
    volumes = _load_volumes(image_path, label_path, labelmap, modality, slicing, reading)
    label_name = (sources or {}).get("label") or label_path
    summary: dict[str, Any] = {"case": case, "dataset": dataset, "modality": modality, "skipped": None}
    if source_case not in (None, case):
        summary[SOURCE_CASE] = source_case
    if volumes.pixels is None:
        log.warning("%s: label volume is empty after mapping into the vocabulary: case %s skipped", label_name, case)
        summary.update(skipped=SKIPPED_EMPTY, detail=f"{label_name}: no voxel maps to a vocabulary class")

    with atomic_dir(out_dir) as tmp_dir:
        (tmp_dir / "images").mkdir()
        (tmp_dir / "masks").mkdir()
        rows = _write_slices(
            tmp_dir, volumes, slicing, case=case, modality=modality, dataset=dataset, class_names=class_names
        )
        manifest = pd.DataFrame(rows, columns=MASK_COLUMNS)
        manifest.to_parquet(tmp_dir / MANIFEST, index=False)
        summary.update(n_slices=int(manifest["image"].nunique()), n_masks=len(manifest))
        write_json(tmp_dir / SUMMARY, summary)
    log.info("%s: %d slices, %d masks kept", case, manifest["image"].nunique(), len(manifest))
    return manifest

"""Read and check image / label volumes with SimpleITK.

Every check fails with a one-line :class:`~segsam.errors.DataError` naming the
file and the problem. Supported: anything SimpleITK reads from one file (NIfTI,
MHA/MHD, NRRD, ...) and DICOM series given as a folder. A volume the workflow
staged from a user's file is read under the user's file name (``name``,
``sources``), so that messages point at the file to fix, not at the staged copy.
A folder of per-class masks becomes one label volume with :func:`combine_masks`.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from segsam.errors import DataError

log = logging.getLogger(__name__)

CANONICAL_ORIENTATION = "LPS"  # +x patient left, +y posterior, +z superior (DICOM)
GEOMETRY_TOLERANCE = 1e-3  # relative for spacing, mm for origin, absolute for direction


def read_volume(path: str | Path, *, name: str | Path | None = None) -> sitk.Image:
    """Read a 3D volume (a file, or a folder holding one DICOM series).

    Args:
        path: The file or folder.
        name: The file named in messages instead of ``path`` (the user's file a staged copy was made from).

    Raises:
        DataError: missing, unreadable/truncated, not 3D, or not scalar.
    """
    path = Path(path)
    shown = name or path
    if not path.exists():
        raise DataError(f"{shown}: file not found")
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            image = sitk.ReadImage(str(path))
            _check_nifti_data(path, image, shown)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise DataError(f"{shown}: unreadable or truncated image ({first})") from err
    if image.GetDimension() != 3:
        raise DataError(f"{shown}: expected a 3D volume, got {image.GetDimension()}D (4D series must be split first)")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{shown}: expected a scalar volume, got {image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    return image


def _read_dicom_series(folder: Path) -> sitk.Image:
    """The one DICOM series of a folder, as a volume (slices ordered by position, by GDCM).

    Raises:
        DataError: no series, or several (a folder is one case's image).
    """
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise DataError(f"{folder}: folder holds no DICOM series")
    if len(series) > 1:
        raise DataError(
            f"{folder}: folder holds {len(series)} DICOM series ({', '.join(series)}); "
            "put each series in a folder of its own"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()


_NIFTI_FLOAT = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64


def _check_nifti_data(path: Path, image: sitk.Image, shown: str | Path) -> None:
    """Check a NIfTI file's raw voxel data: ITK's reader (nifticlib) silently zero-fills
    a truncated file and silently replaces NaN/inf by 0, so neither shows in ``image``.
    Messages name ``shown``."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")) or not image.HasMetaDataKey("vox_offset"):
        return
    ndim = int(image.GetMetaData("dim[0]"))
    voxels = int(np.prod([int(image.GetMetaData(f"dim[{i}]")) for i in range(1, ndim + 1)], dtype=np.int64))
    itemsize = max(1, int(image.GetMetaData("bitpix")) // 8)
    expected = voxels * itemsize
    float_code = _NIFTI_FLOAT.get(int(image.GetMetaData("datatype")))
    actual, finite = 0, True
    try:
        with gzip.open(path, "rb") if name.endswith(".gz") else path.open("rb") as stream:
            header = stream.read(int(float(image.GetMetaData("vox_offset"))))
            order = "<" if int.from_bytes(header[:4], "little") in (348, 540) else ">"
            # 1 MiB chunks (a multiple of every float voxel size), sliced as views: no large copy
            while chunk := stream.read(1 << 20):
                if float_code and finite:
                    data = memoryview(chunk)[: max(0, min(len(chunk), expected - actual)) // itemsize * itemsize]
                    if len(data):
                        finite = bool(np.isfinite(np.frombuffer(data, dtype=order + float_code)).all())
                actual += len(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{shown}: unreadable or truncated image ({err})") from err
    if actual < expected:
        raise DataError(f"{shown}: truncated image ({actual} of {expected} data bytes)")
    if not finite:
        raise DataError(f"{shown}: image holds non-finite intensities (NaN or inf)")


def describe_geometry(image: sitk.Image) -> str:
    """A volume's grid for messages: size, spacing (mm), origin (mm) and direction, rounded for people."""

    def numbers(values: tuple[float, ...], digits: int) -> str:
        return "(" + ", ".join(f"{round(v, digits):g}" for v in values) + ")"

    return (
        f"size {tuple(image.GetSize())}, spacing {numbers(image.GetSpacing(), 4)}, "
        f"origin {numbers(image.GetOrigin(), 3)}, direction {numbers(image.GetDirection(), 3)}"
    )


def same_grid(image: sitk.Image, label: sitk.Image) -> bool:
    """Whether two volumes occupy the same voxel grid in physical space.

    The stated tolerance (:data:`GEOMETRY_TOLERANCE`): spacing equal to 0.1 %,
    origin within 1 % of the largest voxel side (at least 0.01 mm), direction
    cosines within 0.001. Compare volumes in the same orientation (both LPS):
    a label stored with flipped axes describes the same grid only once both
    are reoriented.
    """
    if image.GetSize() != label.GetSize():
        return False
    spacing = np.array(image.GetSpacing())
    return bool(
        np.allclose(spacing, label.GetSpacing(), rtol=GEOMETRY_TOLERANCE, atol=0)
        and np.allclose(image.GetOrigin(), label.GetOrigin(), atol=GEOMETRY_TOLERANCE * max(spacing.max(), 1.0) * 10)
        and np.allclose(image.GetDirection(), label.GetDirection(), atol=GEOMETRY_TOLERANCE)
    )


def match_label_grid(
    image: sitk.Image, label: sitk.Image, image_path: str | Path, label_path: str | Path, *, resample: bool = False
) -> sitk.Image:
    """The label on the image's grid: as it is when the grids agree, else resampled or refused.

    Args:
        image: The image, reoriented to LPS.
        label: The label, reoriented to LPS.
        image_path: The image's file (named in messages).
        label_path: The label's file (named in messages).
        resample: Put a label on another grid onto the image's by nearest-neighbour
            resampling (``dataset.resample_labels``); it is logged. Off: such a pair
            is refused.

    Raises:
        DataError: the grids differ and ``resample`` is off (one line with both geometries).
    """
    if same_grid(image, label):
        return label
    if not resample:
        raise DataError(
            f"{label_path}: grid {describe_geometry(label)} differs from image {image_path} grid "
            f"{describe_geometry(image)} (in LPS); fix the export, or set dataset.resample_labels: true to "
            "resample the label onto the image grid"
        )
    log.warning(
        "%s: grid %s differs from image %s grid %s; resampled onto the image grid (nearest neighbour)",
        label_path,
        describe_geometry(label),
        image_path,
        describe_geometry(image),
    )
    return sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())


def _check_label_values(label: sitk.Image, label_path: str | Path) -> None:
    """Integer values in 0..65535 only (the uint16 cast must not wrap around)."""
    if label.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        values = sitk.GetArrayViewFromImage(label)
        if not np.array_equal(values, np.round(values)):
            raise DataError(f"{label_path}: label volume holds non-integer values")
    extrema = sitk.MinimumMaximumImageFilter()
    extrema.Execute(label)
    if extrema.GetMinimum() < 0:
        raise DataError(f"{label_path}: label volume holds negative values (minimum {extrema.GetMinimum():g})")
    if extrema.GetMaximum() > np.iinfo(np.uint16).max:
        raise DataError(f"{label_path}: label values up to {extrema.GetMaximum():g} exceed 65535")


def read_case(
    image_path: str | Path,
    label_path: str | Path,
    *,
    resample_labels: bool = False,
    sources: Mapping[str, str] | None = None,
) -> tuple[sitk.Image, sitk.Image]:
    """Read an image/label pair, reorient both to LPS, then check that they share one grid.

    Reorienting first accepts a label exported with flipped axes (another
    direction and the origin at the other end) when it covers the image's
    voxels, as ITK-SNAP, 3D Slicer or dcm2niix exports often do.

    Args:
        image_path: The image (a file, or a folder holding one DICOM series).
        label_path: Its label map.
        resample_labels: Resample a label on another grid onto the image's
            (see :func:`match_label_grid`); off: refuse the pair.
        sources: ``{"image": file, "label": file}`` named in messages instead of
            the paths read (the user's files the staged copies come from).

    Returns:
        (image as float32, label as uint16), both in LPS on the image's grid.

    Raises:
        DataError: unreadable file, 4D input, different grids, non-finite
            intensities, or a label volume with non-integer, negative or
            above-65535 values (which would wrap around in the uint16 cast).
    """
    sources = sources or {}
    image_name, label_name = sources.get("image") or image_path, sources.get("label") or label_path
    image = read_volume(image_path, name=image_name)
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():  # integers are always finite
        raise DataError(f"{image_name}: image holds non-finite intensities (NaN or inf)")
    del array
    # orient first, then cast, and skip either when it is a no-op: the reader's freed buffer
    # is reused, so the peak stays near two copies of the volume (benchmarks/slicing_throughput.py)
    image = _to_lps(image)  # one at a time: each original is freed before the next copy
    label = read_volume(label_path, name=label_name)
    _check_label_values(label, label_name)
    label = match_label_grid(image, _to_lps(label), image_name, label_name, resample=resample_labels)
    if label.GetPixelID() != sitk.sitkUInt16:
        label = sitk.Cast(label, sitk.sitkUInt16)  # safe now: no value wraps around
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    return image, label


def combine_masks(folder: str | Path, masks: Mapping[str, int]) -> sitk.Image:
    """One label volume from a folder of per-class masks (TotalSegmentator's ``<case>/segmentations/``).

    Every non-zero voxel of a mask file gets that file's label value. The masks
    are reoriented to LPS and must then share one grid. Overlap rule: a voxel in
    two masks is an error naming both files (masks exported from one
    segmentation never overlap; overlapping ones would make one class's voxels
    depend on the order of the files).

    Args:
        folder: The folder holding the mask files.
        masks: ``{mask file name: label value}`` (values >= 1).

    Returns:
        A uint16 label volume (LPS) on the masks' grid.

    Raises:
        DataError: an unreadable mask, masks on different grids, or overlapping masks (one line naming the files).
    """
    folder = Path(folder)
    if not masks:
        raise DataError(f"{folder}: no mask file to combine")
    owners = {value: name for name, value in masks.items()}
    reference: sitk.Image | None = None
    combined = np.zeros(0, dtype=np.uint16)
    first = ""
    for name, value in sorted(masks.items(), key=lambda item: item[1]):
        mask = _to_lps(read_volume(folder / name))
        if reference is None:
            reference, first = mask, name
            combined = np.zeros(sitk.GetArrayViewFromImage(mask).shape, dtype=np.uint16)
        elif not same_grid(reference, mask):
            raise DataError(
                f"{folder / name}: grid {describe_geometry(mask)} differs from mask {folder / first} grid "
                f"{describe_geometry(reference)} (in LPS); the masks of one case must share one grid"
            )
        inside = sitk.GetArrayViewFromImage(mask) != 0
        taken = combined[inside]
        clash = taken[taken != 0]
        if clash.size:
            other = owners[int(clash[0])]
            raise DataError(
                f"{folder / name}: {clash.size} voxel(s) overlap with {folder / other} (classes "
                f"{other.split('.')[0]} and {name.split('.')[0]}); per-class masks must not overlap: fix one of them"
            )
        combined[inside] = value
    assert reference is not None
    label = sitk.GetImageFromArray(combined)
    label.CopyInformation(reference)
    log.info("%s: %d per-class masks combined into one label volume", folder, len(masks))
    return label


_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}


def _to_lps(image: sitk.Image) -> sitk.Image:
    """Reorient to :data:`CANONICAL_ORIENTATION`, like ``sitk.DICOMOrient``, with fewer copies.

    Already LPS: returned as is. Flips only (e.g. RAS, the usual NIfTI case): one
    ``sitk.Flip`` (one output buffer; ``DICOMOrient`` makes an intermediate one too),
    with origin and direction set so that every voxel keeps its physical position.
    Axis permutations: ``sitk.DICOMOrient``.
    """
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    if orientation == CANONICAL_ORIENTATION:
        return image
    if any(have not in (want, _OPPOSITE[want]) for have, want in zip(orientation, CANONICAL_ORIENTATION)):
        return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    flips = [have != want for have, want in zip(orientation, CANONICAL_ORIENTATION)]
    corner = [size - 1 if flip else 0 for size, flip in zip(image.GetSize(), flips)]
    origin = image.TransformIndexToPhysicalPoint(corner)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    direction[:, flips] *= -1
    flipped = sitk.Flip(image, flips)
    flipped.SetOrigin(origin)
    flipped.SetDirection(tuple(float(v) for v in direction.ravel()))
    return flipped


def resample_isotropic(image: sitk.Image, label: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """Resample both to isotropic voxels of the finest spacing (linear / nearest)."""
    spacing = np.array(image.GetSpacing())
    target = float(spacing.min())
    if np.allclose(spacing, target, rtol=1e-3):
        return image, label
    size = [max(1, int(round(n * s / target))) for n, s in zip(image.GetSize(), spacing)]
    common = dict(
        size=size,
        outputOrigin=image.GetOrigin(),
        outputSpacing=(target,) * 3,
        outputDirection=image.GetDirection(),
    )
    image = sitk.Resample(
        image,
        interpolator=sitk.sitkLinear,
        defaultPixelValue=float(sitk.GetArrayViewFromImage(image).min()),
        outputPixelType=sitk.sitkFloat32,
        **common,
    )
    label = sitk.Resample(
        label, interpolator=sitk.sitkNearestNeighbor, defaultPixelValue=0, outputPixelType=sitk.sitkUInt16, **common
    )
    return image, label


#: Pillow modes read as another: palette to RGB and 1-bit to 0/255 grey (as libpng-based readers such
#: as SimpleITK expand them), a grey image's alpha channel dropped.
_PNG_MODES = {"P": "RGB", "PA": "RGB", "1": "L", "LA": "L"}


def read_png(path: str | Path) -> np.ndarray:
    """Read a 2D PNG as an H x W (grey) or H x W x C (colour) array, uint8 (uint16 for 16-bit grey).

    Pillow decodes PNGs two to three times faster than SimpleITK, which matters in the training
    loader (three reads per slice); the arrays are the same as SimpleITK's.

    Raises:
        DataError: If the file is missing, not an image, or truncated (message names the file).
    """
    try:
        with Image.open(path) as image:
            if image.mode in _PNG_MODES:
                image = image.convert(_PNG_MODES[image.mode])
            return np.array(image)
    except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError is an OSError
        raise DataError(f"{path}: unreadable PNG ({err})") from err


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a 2D uint8 array as PNG with SimpleITK."""
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8)), str(path))

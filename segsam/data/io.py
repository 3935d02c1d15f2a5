"""Read and check image / label volumes with SimpleITK.

Every check fails with a one-line :class:`~segsam.errors.DataError` naming the
file and the problem. Supported: anything SimpleITK reads from one file (NIfTI,
MHA/MHD, NRRD, ...) and DICOM series given as a folder.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segsam.errors import DataError

log = logging.getLogger(__name__)

CANONICAL_ORIENTATION = "LPS"  # +x patient left, +y posterior, +z superior (DICOM)
GEOMETRY_TOLERANCE = 1e-3  # relative for spacing, mm for origin, absolute for direction


def read_volume(path: str | Path) -> sitk.Image:
    """Read a 3D volume (a file, or a folder holding one DICOM series).

    Raises:
        DataError: missing, unreadable/truncated, not 3D, or not scalar.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            files = reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise DataError(f"{path}: folder holds no DICOM series")
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
            _check_nifti_data(path, image)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise DataError(f"{path}: unreadable or truncated image ({first})") from err
    if image.GetDimension() != 3:
        raise DataError(f"{path}: expected a 3D volume, got {image.GetDimension()}D (4D series must be split first)")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: expected a scalar volume, got {image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    return image


_NIFTI_FLOAT = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64


def _check_nifti_data(path: Path, image: sitk.Image) -> None:
    """Check a NIfTI file's raw voxel data: ITK's reader (nifticlib) silently zero-fills
    a truncated file and silently replaces NaN/inf by 0, so neither shows in ``image``."""
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
        raise DataError(f"{path}: unreadable or truncated image ({err})") from err
    if actual < expected:
        raise DataError(f"{path}: truncated image ({actual} of {expected} data bytes)")
    if not finite:
        raise DataError(f"{path}: image holds non-finite intensities (NaN or inf)")


def check_geometry(image: sitk.Image, label: sitk.Image, image_path: Path, label_path: Path) -> None:
    """Image and label must share size, spacing, origin and direction (within tolerance)."""
    if image.GetSize() != label.GetSize():
        raise DataError(f"{label_path}: size {label.GetSize()} differs from image {image_path} size {image.GetSize()}")
    spacing_i, spacing_l = np.array(image.GetSpacing()), np.array(label.GetSpacing())
    if not np.allclose(spacing_i, spacing_l, rtol=GEOMETRY_TOLERANCE, atol=0):
        raise DataError(
            f"{label_path}: spacing {tuple(spacing_l)} differs from image {image_path} spacing {tuple(spacing_i)}"
        )
    if not np.allclose(image.GetOrigin(), label.GetOrigin(), atol=GEOMETRY_TOLERANCE * max(spacing_i.max(), 1.0) * 10):
        raise DataError(
            f"{label_path}: origin {label.GetOrigin()} differs from image {image_path} origin {image.GetOrigin()}"
        )
    if not np.allclose(image.GetDirection(), label.GetDirection(), atol=GEOMETRY_TOLERANCE):
        raise DataError(f"{label_path}: direction differs from image {image_path}")


def read_case(image_path: str | Path, label_path: str | Path) -> tuple[sitk.Image, sitk.Image]:
    """Read an image/label pair, check it, and reorient both to LPS.

    Returns:
        (image as float32, label as the label's integer type), both in LPS.

    Raises:
        DataError: unreadable file, 4D input, geometry mismatch, non-finite
            intensities, or a label volume with non-integer, negative or
            above-65535 values (which would wrap around in the uint16 cast).
    """
    image_path, label_path = Path(image_path), Path(label_path)
    image = read_volume(image_path)
    label = read_volume(label_path)
    check_geometry(image, label, image_path, label_path)
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():  # integers are always finite
        raise DataError(f"{image_path}: image holds non-finite intensities (NaN or inf)")
    del array
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
    # orient first, then cast, and skip either when it is a no-op: the reader's freed buffer
    # is reused, so the peak stays near two copies of the volume (benchmarks/slicing_throughput.py)
    image = _to_lps(image)  # one at a time: each original is freed before the next copy
    label = _to_lps(label)
    if label.GetPixelID() != sitk.sitkUInt16:
        label = sitk.Cast(label, sitk.sitkUInt16)  # safe now: no value wraps around
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    return image, label


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


def read_png(path: str | Path) -> np.ndarray:
    """Read a 2D PNG as an H x W (or H x W x 3) uint8 array with SimpleITK."""
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as err:
        raise DataError(f"{path}: unreadable PNG ({str(err).strip().splitlines()[-1]})") from err


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a 2D uint8 array as PNG with SimpleITK."""
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8)), str(path))

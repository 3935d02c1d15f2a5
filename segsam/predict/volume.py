"""A scan prepared as the training slices were, and that preparation undone on the way out.

Training (:func:`segsam.data.slicing.slice_case`) reads a volume, reorients it to
LPS, resamples it to isotropic voxels, scales its intensities to uint8 (CT window,
or MR foreground percentiles) and cuts axial planes ``array[k]`` of the Z x Y x X
array. Prediction does the same, except that it resamples in-plane only, to square
pixels of the finest in-plane spacing: the axial planes stay those of the input, so
that every output plane comes from one model pass and nothing is interpolated
across planes. (The model input is each plane resized to 256 on its long side, so
the in-plane pixel size matters only through the aspect ratio, which square pixels
get right.)

On the way out, each plane's probabilities are resampled back to the LPS grid
(bilinear, within the plane: the planes are the same), and the LPS volume is
reoriented to the input's own axis order and given the input's exact geometry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from segsam.data.io import CANONICAL_ORIENTATION, read_volume
from segsam.data.slicing import normalise_intensity
from segsam.errors import DataError

log = logging.getLogger(__name__)

#: Modalities the intensity normalisation knows (:func:`segsam.data.slicing.normalise_intensity`).
MODALITIES = ("ct", "mr")
#: A volume whose minimum is at or below this is taken as CT (air is about -1000 HU) by ``modality="auto"``.
CT_MINIMUM_HU = -500.0


@dataclass(frozen=True)
class Grid:
    """A voxel grid in physical space: what maps voxel indices to LPS millimetres.

    Attributes:
        size: (x, y, z) voxels, SimpleITK order.
        spacing: (x, y, z) mm.
        origin: Physical position (LPS mm) of voxel (0, 0, 0)'s centre.
        direction: 3 x 3 row-major direction cosines (column i = axis i's direction).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        """The grid of a 3D image."""
        return cls(
            tuple(int(v) for v in image.GetSize()),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    @property
    def matrix(self) -> np.ndarray:
        """3 x 3: index offsets (x, y, z) -> physical offsets (LPS mm)."""
        return np.array(self.direction).reshape(3, 3) * np.array(self.spacing)

    def to_physical(self, indices: np.ndarray) -> np.ndarray:
        """N x 3 continuous indices (x, y, z) -> N x 3 LPS points (mm)."""
        return np.asarray(indices, dtype=np.float64) @ self.matrix.T + np.array(self.origin)

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """N x 3 LPS points (mm) -> N x 3 continuous indices (x, y, z)."""
        offsets = np.asarray(points, dtype=np.float64) - np.array(self.origin)
        return np.linalg.solve(self.matrix, offsets.T).T

    def matches(self, other: Grid) -> bool:
        """Whether ``other`` is this grid up to rounding (same size; spacing, origin and direction within 1e-4)."""
        return self.size == other.size and all(
            np.allclose(a, b, rtol=1e-4, atol=1e-4)
            for a, b in ((self.spacing, other.spacing), (self.origin, other.origin), (self.direction, other.direction))
        )

    def describe_size(self) -> str:
        """The voxel counts for messages: ``122 x 101 x 56 voxels``."""
        return " x ".join(str(v) for v in self.size) + " voxels"

    def apply(self, image: sitk.Image) -> sitk.Image:
        """Give ``image`` (of the same size) exactly this grid's spacing, origin and direction."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass(frozen=True)
class PlaneGrid:
    """The in-plane resampling between the LPS planes (H x W) and the working planes (h x w).

    Working pixels are square, of side ``pixel`` mm = the finest in-plane spacing;
    both grids share the first voxel's centre, so working index = LPS index x ``scale``.

    Attributes:
        lps_shape: (H, W) of an LPS axial plane.
        lps_spacing: (x, y) spacing (mm) of the LPS plane.
        shape: (h, w) of a working plane.
        pixel: Side (mm) of a working pixel.
    """

    lps_shape: tuple[int, int]
    lps_spacing: tuple[float, float]
    shape: tuple[int, int]
    pixel: float

    @classmethod
    def for_grid(cls, lps: Grid) -> PlaneGrid:
        """Square working pixels of the finest in-plane spacing (no resampling when already square)."""
        (nx, ny, _), (sx, sy, _) = lps.size, lps.spacing
        if np.isclose(sx, sy, rtol=1e-3):
            return cls((ny, nx), (sx, sy), (ny, nx), sx)
        pixel = min(sx, sy)
        return cls((ny, nx), (sx, sy), (max(1, round(ny * sy / pixel)), max(1, round(nx * sx / pixel))), pixel)

    @property
    def identity(self) -> bool:
        """Whether the working planes are the LPS planes themselves."""
        return self.shape == self.lps_shape and np.allclose(self.lps_spacing, self.pixel, rtol=1e-3)

    @property
    def scale(self) -> np.ndarray:
        """(x, y) working pixels per LPS voxel."""
        return np.array(self.lps_spacing) / self.pixel

    def to_working(self, xy: np.ndarray) -> np.ndarray:
        """... x 2 LPS plane coordinates (x, y) -> working-plane coordinates (float32)."""
        return (np.asarray(xy, dtype=np.float64) * self.scale).astype(np.float32)

    def box_to_working(self, box: np.ndarray) -> np.ndarray:
        """(x0, y0, x1, y1) on the LPS plane -> on the working plane (float32)."""
        return self.to_working(np.asarray(box).reshape(2, 2)).reshape(4)

    def box_to_lps(self, box: np.ndarray) -> np.ndarray:
        """(x0, y0, x1, y1) on the working plane -> on the LPS plane (float32)."""
        return (np.asarray(box, dtype=np.float64).reshape(2, 2) / self.scale).reshape(4).astype(np.float32)

    def to_lps(self, planes: np.ndarray) -> np.ndarray:
        """Working-plane values -> the LPS plane, bilinear (each point inside the working grid's extent).

        Args:
            planes: ... x h x w float32 (probabilities).

        Returns:
            ... x H x W float32.
        """
        planes = np.asarray(planes, dtype=np.float32)
        if self.identity:
            return planes
        lead = planes.shape[:-2]
        flat = planes.reshape(-1, *self.shape)
        out = np.empty((flat.shape[0], *self.lps_shape), dtype=np.float32)
        height, width = self.lps_shape
        for i, plane in enumerate(flat):
            image = sitk.GetImageFromArray(plane)
            image.SetSpacing((self.pixel, self.pixel))
            resampled = sitk.Resample(
                image,
                (width, height),
                sitk.Transform(),
                sitk.sitkLinear,
                (0.0, 0.0),
                self.lps_spacing,
                (1.0, 0.0, 0.0, 1.0),
                0.0,
                sitk.sitkFloat32,
            )
            out[i] = sitk.GetArrayViewFromImage(resampled)
        return out.reshape(*lead, *self.lps_shape)


@dataclass
class Scan:
    """One input scan, prepared as the training slices were.

    Attributes:
        path: The input (a volume file or a DICOM series folder).
        original: The input's grid, in its own voxel order.
        lps: The same voxels reoriented to LPS.
        orientation: The input's orientation code (``RAS``, ``LPS``, ...).
        plane_grid: The in-plane resampling to the working planes.
        planes: Z x h x w uint8 axial planes on the working grid (intensities
            normalised as for training).
        modality: ``ct`` or ``mr`` (the normalisation used).
        modality_source: How the modality was decided, for the sidecar.
    """

    path: Path
    original: Grid
    lps: Grid
    orientation: str
    plane_grid: PlaneGrid
    planes: np.ndarray
    modality: str
    modality_source: str


def _orientation(image: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def dicom_modality(folder: Path) -> str | None:
    """The Modality tag (0008,0060) of a DICOM series folder's first file, or None."""
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader.GetMetaData("0008|0060").strip() if reader.HasMetaDataKey("0008|0060") else None


def decide_modality(path: Path, image: sitk.Image, requested: str) -> tuple[str, str]:
    """The intensity normalisation of a scan: ``ct`` or ``mr``, and how it was decided.

    ``auto``: a DICOM series' Modality tag (CT -> ct, anything else -> mr); else
    CT when the minimum intensity is at or below :data:`CT_MINIMUM_HU` (air in
    Hounsfield units), MR otherwise.

    Raises:
        DataError: ``requested`` is none of ``auto``, ``ct``, ``mr``.
    """
    if requested in MODALITIES:
        return requested, "given"
    if requested != "auto":
        raise DataError(f"unknown modality {requested!r}; use auto, {', '.join(MODALITIES)}")
    tag = dicom_modality(path) if path.is_dir() else None
    if tag:
        return ("ct" if tag.upper() == "CT" else "mr"), f"DICOM Modality tag {tag!r}"
    extrema = sitk.MinimumMaximumImageFilter()
    extrema.Execute(image)
    modality = "ct" if extrema.GetMinimum() <= CT_MINIMUM_HU else "mr"
    return (
        modality,
        f"minimum intensity {extrema.GetMinimum():g} ({'<=' if modality == 'ct' else '>'} {CT_MINIMUM_HU:g})",
    )


def resample_in_plane(image: sitk.Image, plane_grid: PlaneGrid) -> sitk.Image:
    """The LPS volume on the working planes: bilinear within each axial plane, the planes kept.

    As :func:`segsam.data.io.resample_isotropic`: same origin and direction, the
    minimum intensity outside, float32.
    """
    if plane_grid.identity:
        return image
    height, width = plane_grid.shape
    return sitk.Resample(
        image,
        size=[width, height, image.GetSize()[2]],
        outputOrigin=image.GetOrigin(),
        outputSpacing=(plane_grid.pixel, plane_grid.pixel, image.GetSpacing()[2]),
        outputDirection=image.GetDirection(),
        interpolator=sitk.sitkLinear,
        defaultPixelValue=float(sitk.GetArrayViewFromImage(image).min()),
        outputPixelType=sitk.sitkFloat32,
    )


def read_scan(path: str | Path, slicing: Mapping[str, Any], modality: str = "auto") -> Scan:
    """Read a scan and prepare its axial planes as training prepared its slices.

    Args:
        path: A volume file or a folder holding one DICOM series.
        slicing: The config's ``slicing`` section (``ct_window``, ``mr_percentiles``).
        modality: ``auto`` (:func:`decide_modality`), ``ct`` or ``mr``.

    Returns:
        Scan: The working planes and every grid needed to map results back.

    Raises:
        DataError: Unreadable, not 3D, not scalar, non-finite intensities, or a
            folder with no or several DICOM series (:func:`segsam.data.io.read_volume`).
    """
    path = Path(path)
    image = read_volume(path)
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
            raise DataError(f"{path}: image holds non-finite intensities (NaN or inf)")
    original, orientation = Grid.of(image), _orientation(image)
    chosen, source = decide_modality(path, image, modality)
    if orientation != CANONICAL_ORIENTATION:
        image = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    lps = Grid.of(image)
    plane_grid = PlaneGrid.for_grid(lps)
    working = resample_in_plane(image, plane_grid)
    del image
    planes = normalise_intensity(
        sitk.GetArrayViewFromImage(working), chosen, slicing["ct_window"], slicing["mr_percentiles"]
    )
    log.info(
        "%s: %s, %s as %s (%s); %d axial planes of %d x %d",
        path,
        original.describe_size(),
        orientation,
        chosen,
        source,
        planes.shape[0],
        planes.shape[1],
        planes.shape[2],
    )
    return Scan(path, original, lps, orientation, plane_grid, planes, chosen, source)


def to_input_grid(array: np.ndarray, scan: Scan) -> sitk.Image:
    """A Z x Y x X array on the scan's LPS grid, as an image on the input's own grid.

    Reorienting is a permutation and flip of the voxels (no interpolation); the
    result then takes the input's exact spacing, origin and direction.

    Args:
        array: Z x Y x X values on the LPS grid (any dtype SimpleITK writes).
        scan: The scan.

    Returns:
        sitk.Image: Same size, spacing, origin, direction and voxel order as the input.

    Raises:
        RuntimeError: If the reoriented grid is not the input's (a bug).
    """
    image = scan.lps.apply(sitk.GetImageFromArray(np.ascontiguousarray(array)))
    if scan.orientation != CANONICAL_ORIENTATION:
        image = sitk.DICOMOrient(image, scan.orientation)
    if not scan.original.matches(Grid.of(image)):
        raise RuntimeError(f"{scan.path}: reorienting back did not restore the input grid (a bug)")
    return scan.original.apply(image)

"""A scan prepared as training prepares its slices, and its grid restored exactly on the way out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from segsam.data.io import read_case
from segsam.data.slicing import _plane, normalise_intensity
from segsam.errors import DataError
from segsam.predict.volume import PlaneGrid, decide_modality, read_scan, to_input_grid
from tests.conftest import write_volume
from tests.helpers import write_dicom_series
from tests.predict.conftest import RPS, ct_phantom


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


DIRECTIONS = {
    "lps": np.eye(3),
    "ras": np.diag([-1.0, -1.0, 1.0]),
    "rps": np.array(RPS).reshape(3, 3),
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    "oblique": _rotation(0.2) @ np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
}


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_the_lps_grid_goes_back_to_the_input_grid_exactly(
    tmp_path: Path, slicing_cfg: dict[str, Any], name: str
) -> None:
    values = np.random.default_rng(0).integers(-1000, 1000, (7, 9, 11)).astype(np.int16)
    path = write_volume(
        tmp_path / "v.nii.gz", values, spacing=(0.7, 0.9, 2.5), origin=(10, -20, 30), direction=DIRECTIONS[name].ravel()
    )
    scan = read_scan(path, slicing_cfg)
    lps_values = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS"))
    back = to_input_grid(lps_values, scan)
    original = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(back), values)
    assert back.GetSize() == original.GetSize() and back.GetSpacing() == original.GetSpacing()
    assert back.GetOrigin() == original.GetOrigin() and back.GetDirection() == original.GetDirection()


def test_planes_are_the_training_slices_on_square_pixels(tmp_path: Path, slicing_cfg: dict[str, Any]) -> None:
    """With square in-plane pixels, each plane is slice_case's axial slice of the same volume."""
    values = ct_phantom((5, 30, 40))
    image = write_volume(tmp_path / "ct.nii.gz", values, spacing=(2.0, 2.0, 2.0), direction=RPS)
    label = write_volume(
        tmp_path / "label.nii.gz", np.zeros_like(values, dtype=np.uint8), spacing=(2.0,) * 3, direction=RPS
    )
    scan = read_scan(image, slicing_cfg)
    volume, _ = read_case(image, label)
    expected = normalise_intensity(
        sitk.GetArrayViewFromImage(volume), "ct", slicing_cfg["ct_window"], slicing_cfg["mr_percentiles"]
    )
    assert scan.plane_grid.identity and scan.planes.dtype == np.uint8
    for k in range(values.shape[0]):
        assert np.array_equal(scan.planes[k], _plane(expected, "z", k))


def test_non_square_pixels_are_resampled_in_plane_only(small_ct: Path, slicing_cfg: dict[str, Any]) -> None:
    scan = read_scan(small_ct, slicing_cfg)
    assert scan.planes.shape[0] == 4  # the axial planes are kept
    assert scan.plane_grid.pixel == pytest.approx(1.2, rel=1e-6)
    assert scan.plane_grid.shape == (30, 50)  # 40 x 1.5 mm = 50 x 1.2 mm
    # a ramp along x survives the round trip working -> LPS plane
    ramp = np.tile(np.arange(50, dtype=np.float32), (30, 1))
    back = scan.plane_grid.to_lps(ramp)
    assert back.shape == (30, 40)
    assert np.allclose(back[:, :-1], np.arange(39) * 1.25, atol=1e-4)


def test_plane_grid_maps_boxes_both_ways() -> None:
    grid = PlaneGrid((30, 40), (1.5, 1.2), (30, 50), 1.2)
    box = np.array([2.0, 3.0, 10.0, 20.0], np.float32)
    assert np.allclose(grid.box_to_working(box), [2.5, 3.0, 12.5, 20.0])
    assert np.allclose(grid.box_to_lps(grid.box_to_working(box)), box)


def test_modality_is_decided_from_the_intensities_or_given(tmp_path: Path) -> None:
    ct = sitk.GetImageFromArray(ct_phantom())
    mr = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 800, (4, 30, 40)).astype(np.int16))
    assert decide_modality(tmp_path / "ct.nii.gz", ct, "auto")[0] == "ct"
    assert decide_modality(tmp_path / "mr.nii.gz", mr, "auto")[0] == "mr"
    assert decide_modality(tmp_path / "ct.nii.gz", ct, "mr") == ("mr", "given")
    with pytest.raises(DataError, match="unknown modality 'pet'"):
        decide_modality(tmp_path / "ct.nii.gz", ct, "pet")


def test_a_dicom_series_is_read_with_its_modality_tag(tmp_path: Path, slicing_cfg: dict[str, Any]) -> None:
    volume = sitk.GetImageFromArray(np.random.default_rng(1).integers(0, 500, (3, 20, 24)).astype(np.int16))
    volume.SetSpacing((0.8, 0.8, 3.0))
    folder = write_dicom_series(volume, tmp_path / "series", modality="CT")
    scan = read_scan(folder, slicing_cfg)
    assert scan.modality == "ct" and "DICOM" in scan.modality_source
    assert scan.original.size == (24, 20, 3)

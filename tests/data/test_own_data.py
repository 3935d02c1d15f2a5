"""Users' own data as they hold it: DICOM series, labels exported with flipped headers, other grids.

The reference is the real TotalSegmentator CT of ``../shared/data`` and its
label, sliced as they are; every other form of the same data must give the
same masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from segsam.data.io import read_case, read_volume
from segsam.data.slicing import slice_case
from segsam.errors import DataError
from tests.helpers import write_dicom_series

REPO = Path(__file__).resolve().parents[2]
VOCABULARY = REPO / "config" / "vocabulary.csv"
TOTALSEG_MAP = REPO / "config" / "labelmaps" / "totalseg_total.json"
STRIDE = {"x": 24, "y": 24, "z": 16}


def _flip_y_in_header(label: sitk.Image) -> sitk.Image:
    """The same label on the same physical grid, stored with its y axis reversed (as other tools export)."""
    array = sitk.GetArrayFromImage(label)[:, ::-1, :]  # z, y, x
    flipped = sitk.GetImageFromArray(np.ascontiguousarray(array))
    flipped.SetSpacing(label.GetSpacing())
    flipped.SetOrigin(label.TransformIndexToPhysicalPoint((0, label.GetSize()[1] - 1, 0)))
    direction = np.array(label.GetDirection()).reshape(3, 3)
    direction[:, 1] *= -1
    flipped.SetDirection(tuple(direction.ravel()))
    return flipped


@pytest.fixture(scope="module")
def ct_pair(shared_data: Path) -> tuple[Path, Path]:
    folder = shared_data / "totalsegmentator"
    return folder / "example_ct.nii.gz", folder / "example_seg_fast_force_split.nii.gz"


def _slice(image: Path, label: Path, out: Path, slicing: dict[str, Any], **kwargs: Any) -> pd.DataFrame:
    return slice_case(
        image,
        label,
        out,
        case="s0001",
        modality="ct",
        dataset="own",
        vocabulary_csv=VOCABULARY,
        labelmap_json=TOTALSEG_MAP,
        slicing={**slicing, "stride": STRIDE},
        **kwargs,
    )


def _same_slices(first: Path, second: Path) -> None:
    names = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert names and names == sorted(p.relative_to(second) for p in second.rglob("*.png"))
    for name in names:
        one = sitk.GetArrayFromImage(sitk.ReadImage(str(first / name)))
        two = sitk.GetArrayFromImage(sitk.ReadImage(str(second / name)))
        assert np.array_equal(one, two), name


@pytest.mark.shared_data
def test_dicom_series_with_a_flipped_label_slices_like_the_original_pair(
    ct_pair: tuple[Path, Path], tmp_path: Path, slicing_cfg: dict[str, Any]
) -> None:
    image_path, label_path = ct_pair
    dicom = write_dicom_series(sitk.ReadImage(str(image_path)), tmp_path / "ct_dicom")
    label = sitk.ReadImage(str(label_path))
    flipped_path = tmp_path / "label_flipped_y.nii.gz"
    sitk.WriteImage(_flip_y_in_header(label), str(flipped_path))
    assert sitk.ReadImage(str(flipped_path)).GetOrigin() != label.GetOrigin()  # a different header, same grid
    reference = _slice(image_path, label_path, tmp_path / "reference", slicing_cfg)
    own = _slice(dicom, flipped_path, tmp_path / "own", slicing_cfg)
    assert len(own) == len(reference) > 0
    _same_slices(tmp_path / "reference", tmp_path / "own")


@pytest.mark.shared_data
def test_a_label_on_another_grid_stops_with_both_geometries(ct_pair: tuple[Path, Path], tmp_path: Path) -> None:
    image_path, label_path = ct_pair
    label = sitk.ReadImage(str(label_path))
    moved = tmp_path / "label_moved.nii.gz"
    label.SetOrigin(tuple(o + 15.0 for o in label.GetOrigin()))  # five voxels off along every axis
    sitk.WriteImage(label, str(moved))
    with pytest.raises(DataError) as err:
        read_case(image_path, moved)
    message = str(err.value)
    assert "\n" not in message and str(moved) in message and str(image_path) in message
    assert message.count("origin (") == 2 and "dataset.resample_labels" in message and "np.float64" not in message


@pytest.mark.shared_data
def test_resample_labels_puts_a_label_of_another_grid_on_the_image_grid(
    ct_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    image_path, label_path = ct_pair
    label = sitk.ReadImage(str(label_path))
    padded = sitk.ConstantPad(label, [4, 4, 4], [6, 6, 6], 0)  # a larger canvas: another grid, the same voxels
    padded_path = tmp_path / "label_padded.nii.gz"
    sitk.WriteImage(padded, str(padded_path))
    with pytest.raises(DataError):
        read_case(image_path, padded_path)
    image, resampled = read_case(image_path, padded_path, resample_labels=True)
    assert resampled.GetSize() == image.GetSize() and resampled.GetOrigin() == pytest.approx(image.GetOrigin())
    _, original = read_case(image_path, label_path)
    assert np.array_equal(sitk.GetArrayViewFromImage(resampled), sitk.GetArrayViewFromImage(original))


def test_a_dicom_folder_with_two_series_stops_in_one_line(tmp_path: Path) -> None:
    volume = sitk.GetImageFromArray(np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8))
    folder = tmp_path / "two_series"
    write_dicom_series(volume, folder, series_uid="1.2.3.4.1")
    second = sitk.GetImageFromArray(np.zeros((3, 8, 8), dtype=np.int16))
    write_dicom_series(second, tmp_path / "other", series_uid="1.2.3.4.2")
    for path in (tmp_path / "other").iterdir():
        path.rename(folder / f"b_{path.name}")
    with pytest.raises(DataError) as err:
        read_volume(folder)
    assert str(folder) in str(err.value) and "2 DICOM series" in str(err.value) and "\n" not in str(err.value)


def test_a_dicom_series_reads_back_on_its_grid(tmp_path: Path) -> None:
    volume = sitk.GetImageFromArray(np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7))
    volume.SetSpacing((0.8, 0.9, 2.5))
    volume.SetOrigin((-10.0, 20.0, 30.0))
    back = read_volume(write_dicom_series(volume, tmp_path / "series"))
    assert back.GetSize() == volume.GetSize()
    assert back.GetSpacing() == pytest.approx(volume.GetSpacing(), abs=1e-5)
    assert back.GetOrigin() == pytest.approx(volume.GetOrigin(), abs=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(volume))

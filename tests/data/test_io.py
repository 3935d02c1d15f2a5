"""Tests of volume reading and checking (segsam.data.io).

Every bad input must give a one-line DataError that names the offending file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from segsam.data.io import read_case, read_png, read_volume, resample_isotropic, write_png
from segsam.errors import DataError

SHAPE_ZYX = (6, 7, 8)
SPACING = (1.5, 1.25, 2.0)
ORIGIN = (-10.0, 20.0, 5.0)
RAS_LIKE = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)  # x and y flipped relative to LPS


def _image_array() -> np.ndarray:
    return np.arange(np.prod(SHAPE_ZYX), dtype=np.int16).reshape(SHAPE_ZYX) - 100


def _label_array() -> np.ndarray:
    label = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    label[1:4, 2:5, 3:7] = 1
    label[4, 0, 0] = 2
    return label


@pytest.fixture
def pair(tmp_path: Path, write_vol: Callable[..., Path]) -> Callable[..., tuple[Path, Path]]:
    """Write a matching image/label pair; keyword overrides change the label's array or geometry."""

    def make(
        label_array: np.ndarray | None = None,
        image_array: np.ndarray | None = None,
        suffix: str = ".nii.gz",
        **label_geometry,
    ) -> tuple[Path, Path]:
        geometry = {"spacing": SPACING, "origin": ORIGIN}
        image = write_vol(tmp_path / f"img{suffix}", _image_array() if image_array is None else image_array, **geometry)
        label = write_vol(
            tmp_path / f"seg{suffix}",
            _label_array() if label_array is None else label_array,
            **{**geometry, **label_geometry},
        )
        return image, label

    return make


def _error(call: Callable[[], object]) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message.strip()
    return message


def test_good_pair_reads_as_float_image_and_integer_label(pair) -> None:
    image_path, label_path = pair()
    image, label = read_case(image_path, label_path)
    assert image.GetPixelID() == sitk.sitkFloat32
    assert label.GetPixelID() == sitk.sitkUInt16
    assert np.array_equal(sitk.GetArrayFromImage(image), _image_array().astype(np.float32))
    assert np.array_equal(sitk.GetArrayFromImage(label), _label_array())
    assert image.GetSpacing() == pytest.approx(SPACING)
    assert image.GetOrigin() == pytest.approx(ORIGIN)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.nii.gz"
    message = _error(lambda: read_volume(path))
    assert str(path) in message and "not found" in message


def test_missing_label_file_is_named(pair, tmp_path: Path) -> None:
    image_path, _ = pair()
    message = _error(lambda: read_case(image_path, tmp_path / "nolabel.nii.gz"))
    assert "nolabel.nii.gz" in message


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti(tmp_path: Path, write_vol, suffix: str) -> None:
    path = write_vol(tmp_path / f"full{suffix}", _image_array())
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    message = _error(lambda: read_volume(cut))
    assert str(cut) in message and "truncated" in message


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(b"this is not a NIfTI file")
    assert str(path) in _error(lambda: read_volume(path))


def test_4d_image(tmp_path: Path) -> None:
    path = tmp_path / "dwi.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 5, 6), dtype=np.float32), isVector=False), str(path))
    message = _error(lambda: read_volume(path))
    assert str(path) in message and "4D" in message


def test_vector_image(tmp_path: Path) -> None:
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), dtype=np.uint8), isVector=True), str(path))
    message = _error(lambda: read_volume(path))
    assert str(path) in message and "components" in message


def test_size_mismatch(pair) -> None:
    image_path, label_path = pair(label_array=np.zeros((6, 7, 9), dtype=np.uint8))
    message = _error(lambda: read_case(image_path, label_path))
    assert str(label_path) in message and str(image_path) in message and "size" in message


def test_spacing_mismatch(pair) -> None:
    image_path, label_path = pair(spacing=(1.5, 1.25, 2.5))
    message = _error(lambda: read_case(image_path, label_path))
    assert str(label_path) in message and "spacing" in message


def test_origin_mismatch(pair) -> None:
    image_path, label_path = pair(origin=(-10.0, 20.0, 9.0))
    message = _error(lambda: read_case(image_path, label_path))
    assert str(label_path) in message and "origin" in message


def test_direction_mismatch(pair) -> None:
    image_path, label_path = pair(direction=RAS_LIKE)
    message = _error(lambda: read_case(image_path, label_path))
    assert str(label_path) in message and "direction" in message


def test_tiny_geometry_differences_are_tolerated(pair) -> None:
    image_path, label_path = pair(
        spacing=tuple(s * (1 + 1e-6) for s in SPACING), origin=tuple(o + 1e-5 for o in ORIGIN)
    )
    read_case(image_path, label_path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_intensities(pair, suffix: str, dtype: type, bad: float) -> None:
    """(ITK's NIfTI reader turns NaN into 0 on its own: the raw data must be checked.)"""
    image = _image_array().astype(dtype)
    image[2, 3, 4] = bad
    image_path, label_path = pair(image_array=image, suffix=suffix)
    message = _error(lambda: read_case(image_path, label_path))
    assert str(image_path) in message and "NaN" in message


def test_non_integer_float_label(pair) -> None:
    label = _label_array().astype(np.float32)
    label[1, 2, 3] = 1.5
    image_path, label_path = pair(label_array=label)
    message = _error(lambda: read_case(image_path, label_path))
    assert str(label_path) in message and "non-integer" in message


def test_integer_valued_float_label_is_accepted(pair) -> None:
    image_path, label_path = pair(label_array=_label_array().astype(np.float32))
    _, label = read_case(image_path, label_path)
    assert np.array_equal(sitk.GetArrayFromImage(label), _label_array())


def test_reorients_ras_like_volume_to_lps(pair) -> None:
    image_path, label_path = pair()
    # rewrite both with x and y flipped (the usual NIfTI RAS orientation)
    for path in (image_path, label_path):
        volume = sitk.ReadImage(str(path))
        volume.SetDirection(RAS_LIKE)
        sitk.WriteImage(volume, str(path))
    raw = sitk.ReadImage(str(image_path))
    image, label = read_case(image_path, label_path)
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert label.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert np.array_equal(sitk.GetArrayFromImage(image), _image_array()[:, ::-1, ::-1].astype(np.float32))
    assert np.array_equal(sitk.GetArrayFromImage(label), _label_array()[:, ::-1, ::-1])
    # the same voxel sits at the same physical point before and after
    nx, ny, _ = raw.GetSize()
    before = raw.TransformIndexToPhysicalPoint((2, 3, 4))
    after = image.TransformIndexToPhysicalPoint((nx - 1 - 2, ny - 1 - 3, 4))
    assert after == pytest.approx(before)
    assert image.GetSpacing() == pytest.approx(SPACING)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".nii"])
def test_other_single_file_formats(tmp_path: Path, write_vol, suffix: str) -> None:
    path = write_vol(tmp_path / f"vol{suffix}", _image_array(), spacing=SPACING, origin=ORIGIN)
    volume = read_volume(path)
    assert np.array_equal(sitk.GetArrayFromImage(volume), _image_array())
    assert volume.GetSpacing() == pytest.approx(SPACING)
    assert volume.GetOrigin() == pytest.approx(ORIGIN)


def _write_dicom_series(
    folder: Path, array: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> None:
    """One CT slice per file with the tags a series reader needs (SimpleITK's DICOM series example)."""
    folder.mkdir()
    volume = sitk.GetImageFromArray(array)
    volume.SetSpacing(spacing)
    volume.SetOrigin(origin)
    series_uid = "1.2.826.0.1.3680043.2.1125.424242"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        plane = volume[:, :, k]
        position = "\\".join(f"{c:.6f}" for c in volume.TransformIndexToPhysicalPoint((0, 0, k)))
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": f"{series_uid}.0",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": position,
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": f"{spacing[2]}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(plane)


def test_dicom_series_folder(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    spacing, origin = (0.75, 0.8, 2.5), (-40.0, -30.0, 12.5)
    try:
        _write_dicom_series(folder, _image_array(), spacing, origin)
    except RuntimeError as err:  # pragma: no cover - depends on the SimpleITK build
        pytest.skip(f"this SimpleITK cannot write a DICOM series ({err})")
    volume = read_volume(folder)
    assert np.array_equal(sitk.GetArrayFromImage(volume), _image_array())
    assert volume.GetSpacing() == pytest.approx(spacing)
    assert volume.GetOrigin() == pytest.approx(origin)


def test_folder_without_dicom_series(tmp_path: Path) -> None:
    folder = tmp_path / "empty_series"
    folder.mkdir()
    message = _error(lambda: read_volume(folder))
    assert str(folder) in message and "DICOM" in message


def test_resample_isotropic_keeps_labels(pair) -> None:
    image_path, label_path = pair()
    image, label = read_case(image_path, label_path)
    iso_image, iso_label = resample_isotropic(image, label)
    for volume in (iso_image, iso_label):
        assert volume.GetSpacing() == pytest.approx((1.25, 1.25, 1.25))
        assert volume.GetOrigin() == pytest.approx(image.GetOrigin())
        assert volume.GetDirection() == pytest.approx(image.GetDirection())
    expected = [round(n * s / 1.25) for n, s in zip(image.GetSize(), SPACING, strict=True)]
    assert list(iso_image.GetSize()) == expected
    assert iso_label.GetSize() == iso_image.GetSize()
    assert iso_label.GetPixelID() == sitk.sitkUInt16
    assert set(np.unique(sitk.GetArrayFromImage(iso_label))) == {0, 1, 2}  # nearest neighbour: no new values
    # physical extent of the labelled block is preserved within a voxel
    block = np.argwhere(sitk.GetArrayFromImage(iso_label) == 1)
    assert (block[:, 0].max() - block[:, 0].min() + 1) * 1.25 == pytest.approx(3 * 2.0, abs=1.25)


def test_resample_isotropic_is_identity_for_isotropic_input() -> None:
    image = sitk.Image(4, 5, 6, sitk.sitkFloat32)
    label = sitk.Image(4, 5, 6, sitk.sitkUInt16)
    for volume in (image, label):
        volume.SetSpacing((2.0, 2.0, 2.0))
    iso_image, iso_label = resample_isotropic(image, label)
    assert iso_image is image and iso_label is label


def _png_modes() -> dict[str, Image.Image]:
    """One small PNG image per Pillow mode a release or an exporting tool may write."""
    grey = (np.random.default_rng(0).random((8, 10)) * 255).astype(np.uint8)
    rgb = np.stack([grey, grey // 2, grey // 3], axis=-1)
    return {
        "L": Image.fromarray(grey),
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(np.concatenate([rgb, grey[..., None]], axis=-1)),
        "P": Image.fromarray(rgb).convert("P"),
        "1": Image.fromarray(grey > 128).convert("1"),
        "I;16": Image.fromarray(grey.astype(np.uint16) * 200),
    }


@pytest.mark.parametrize("mode", list(_png_modes()))
def test_png_reads_as_simpleitk_reads_it(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "slice.png"
    _png_modes()[mode].save(path)
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    array = read_png(path)
    assert array.dtype == expected.dtype and np.array_equal(array, expected)
    array[0, 0] = 0  # a writable array: callers may change it in place


def test_png_round_trip_and_grey_alpha_dropped(tmp_path: Path) -> None:
    mask = np.zeros((5, 6), np.uint8)
    mask[1:3, 2:5] = 255
    write_png(tmp_path / "mask.png", mask)
    assert np.array_equal(read_png(tmp_path / "mask.png"), mask)
    Image.fromarray(np.stack([mask, mask], axis=-1), "LA").save(tmp_path / "alpha.png")  # SimpleITK cannot read it
    assert np.array_equal(read_png(tmp_path / "alpha.png"), mask)


@pytest.mark.parametrize("content", [b"", b"not a png", "truncated"])
def test_unreadable_png_is_named(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "bad.png"
    write_png(path, np.full((64, 64), 7, np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
    message = _error(lambda: read_png(path))
    assert str(path) in message and "unreadable PNG" in message


def test_missing_png_is_named(tmp_path: Path) -> None:
    assert str(tmp_path / "gone.png") in _error(lambda: read_png(tmp_path / "gone.png"))

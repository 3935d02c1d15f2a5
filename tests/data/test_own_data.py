"""Users' own data as they hold it: DICOM series, labels exported with flipped headers, other grids,
nnU-Net folders, per-class mask folders, odd case ids.

The reference is the real TotalSegmentator CT of ``../shared/data`` and its
label (and two real CHAOS MR cases through the plain registry path), sliced as
they are; every other form of the same data must give the same masks. Each bad
case stops in one line naming the user's file and leaves no output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from segsam.data.download import ChecksumError, stage_case
from segsam.data.io import read_case, read_volume
from segsam.data.layouts import safe_case_id
from segsam.data.registry import CaseSpec, load_registry
from segsam.data.slicing import slice_case
from segsam.data.sources import DigestCache, case_files
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


# --- the layouts of users' folders, on real CHAOS MR files -------------------------------------------

CHAOS_MAP = REPO / "config" / "labelmaps" / "chaos.json"
CHAOS_NUMBERS = (15, 20)
CHAOS_STRIDE = {"x": 64, "y": 64, "z": 16}
CHAOS_CLASSES = {1: "liver", 2: "right kidney", 3: "Kidney (L)", 4: "spleen"}  # as other tools name them


@pytest.fixture(scope="module")
def chaos(shared_data: Path) -> Path:
    folder = shared_data / "chaos_t2"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


def _stage_and_slice(
    spec: CaseSpec, root: Path, work: Path, slicing: dict[str, Any], *, scanned: bool = True
) -> pd.DataFrame:
    """What rules stage_case and slice_volume do with one case of the registry (read in place from ``root``)."""
    files = case_files(
        {"image": spec.image, "label": spec.label},
        mirror=str(root),
        scanned=scanned,
        download_root=str(work / "downloads"),
        extract_root=str(work / "extracted"),
        digests=DigestCache.load(work / "digests.json"),
    )
    staged = {role: str(work / "raw" / f"{spec.case}_{role}.nii.gz") for role in ("image", "label")}
    stage_case(
        {"image": files.image.path, "label": files.label.path},
        {"image": None, "label": None},
        staged,
        sha256={"image": files.image.sha256, "label": files.label.sha256},
        masks=spec.masks,
    )
    return slice_case(
        staged["image"],
        staged["label"],
        work / "slices" / spec.case,
        case=spec.case,
        modality=spec.modality,
        dataset="own",
        vocabulary_csv=VOCABULARY,
        labelmap_json=REPO / spec.labelmap if spec.labelmap else None,
        labels=None if spec.labelmap else spec.labels,
        slicing={**slicing, "stride": CHAOS_STRIDE},
        sources={"image": files.image.shown, "label": files.label.shown},
        source_case=spec.source_id,
    )


@pytest.fixture(scope="module")
def chaos_reference(chaos: Path, tmp_path_factory: pytest.TempPathFactory, default_config) -> Path:
    """The plain registry path (chaos_t2 through the mirror, sha256-checked), sliced: the reference masks."""
    work = tmp_path_factory.mktemp("chaos_reference")
    cases = load_registry().get("chaos_t2").cases([chaos.parent])
    for number in CHAOS_NUMBERS:
        _stage_and_slice(cases[f"chaos_{number:02d}"], chaos.parent, work, default_config["slicing"], scanned=False)
    return work / "slices"


def test_an_nnunet_folder_slices_like_the_registry_path(
    chaos: Path, chaos_reference: Path, tmp_path: Path, slicing_cfg
) -> None:
    root = tmp_path / "Dataset001_CHAOS"
    for number in CHAOS_NUMBERS:
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(exist_ok=True)
        shutil.copyfile(chaos / f"image_{number}.nii.gz", root / "imagesTr" / f"chaos_{number:02d}_0000.nii.gz")
        shutil.copyfile(chaos / f"label_{number}.nii.gz", root / "labelsTr" / f"chaos_{number:02d}.nii.gz")
    labels = {"background": 0, **{name: value for value, name in CHAOS_CLASSES.items()}}
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "T2"}, "labels": labels, "numTraining": 2, "file_ending": ".nii.gz"}),
        encoding="utf-8",
    )
    cases = load_registry().get("nnunet").cases([root])
    assert sorted(cases) == [f"chaos_{n:02d}" for n in CHAOS_NUMBERS]
    for spec in cases.values():
        assert spec.modality == "mr" and spec.labelmap is None
        _stage_and_slice(spec, root, tmp_path, slicing_cfg)
        _same_slices(chaos_reference / spec.case, tmp_path / "slices" / spec.case)


def _write_class_masks(label: Path, folder: Path) -> dict[int, Path]:
    """Each class of a label volume as its own mask file (TotalSegmentator's segmentations/ folder)."""
    folder.mkdir(parents=True)
    volume = sitk.ReadImage(str(label))
    values = sitk.GetArrayFromImage(volume)
    paths = {}
    for value, name in CHAOS_CLASSES.items():
        mask = sitk.GetImageFromArray((values == value).astype(np.uint8))
        mask.CopyInformation(volume)
        paths[value] = folder / f"{name}.nii.gz"
        sitk.WriteImage(mask, str(paths[value]))
    return paths


def test_per_class_mask_folders_slice_like_the_registry_path(
    chaos: Path, chaos_reference: Path, tmp_path: Path, slicing_cfg
) -> None:
    root = tmp_path / "own"
    number = CHAOS_NUMBERS[0]
    (root / "mr").mkdir(parents=True)
    shutil.copyfile(chaos / f"image_{number}.nii.gz", root / "mr" / f"chaos_{number:02d}_image.nii.gz")
    _write_class_masks(chaos / f"label_{number}.nii.gz", root / "mr" / f"chaos_{number:02d}_label")
    spec = load_registry().get("local").cases([root])[f"chaos_{number:02d}"]
    assert spec.masks is not None and sorted(spec.labels.values()) == ["kidney_left", "kidney_right", "liver", "spleen"]
    _stage_and_slice(spec, root, tmp_path, slicing_cfg)
    _same_slices(chaos_reference / spec.case, tmp_path / "slices" / spec.case)


def test_overlapping_masks_stop_naming_both_files_and_stage_nothing(chaos: Path, tmp_path: Path) -> None:
    root = tmp_path / "own"
    (root / "mr").mkdir(parents=True)
    shutil.copyfile(chaos / "image_15.nii.gz", root / "mr" / "c_image.nii.gz")
    paths = _write_class_masks(chaos / "label_15.nii.gz", root / "mr" / "c_label")
    liver = sitk.ReadImage(str(paths[1]))
    sitk.WriteImage(sitk.Maximum(liver, sitk.ReadImage(str(paths[4]))), str(paths[1]))  # the liver takes the spleen
    spec = load_registry().get("local").cases([root])["c"]
    outputs = {role: str(tmp_path / "raw" / f"c_{role}.nii.gz") for role in ("image", "label")}
    with pytest.raises(DataError) as err:
        stage_case(
            {"image": str(root / spec.image.file.path), "label": str(root / spec.label.file.path)},
            {"image": None, "label": None},
            outputs,
            masks=spec.masks,
        )
    message = str(err.value)
    assert "\n" not in message and "overlap" in message and str(paths[4]) in message and str(paths[1]) in message
    assert not any(Path(p).exists() for p in outputs.values())


def test_a_changed_mirror_file_fails_its_checksum_and_stages_nothing(chaos: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "chaos_t2").mkdir(parents=True)
    for name in ("image_15.nii.gz", "label_15.nii.gz"):
        shutil.copyfile(chaos / name, mirror / "chaos_t2" / name)
    with (mirror / "chaos_t2" / "label_15.nii.gz").open("ab") as stream:
        stream.write(b"\0")
    spec = load_registry().get("chaos_t2").cases([mirror])["chaos_15"]
    with pytest.raises(ChecksumError) as err:
        _stage_and_slice(spec, mirror, tmp_path, {}, scanned=False)
    assert str(mirror / "chaos_t2" / "label_15.nii.gz") in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_slicing_messages_name_the_users_file_not_the_staged_copy(chaos: Path, tmp_path: Path, slicing_cfg) -> None:
    root = tmp_path / "own"
    (root / "mr").mkdir(parents=True)
    shutil.copyfile(chaos / "image_15.nii.gz", root / "mr" / "Pat 15_image.nii.gz")
    label = sitk.ReadImage(str(chaos / "label_15.nii.gz"))
    label.SetOrigin(tuple(o + 20.0 for o in label.GetOrigin()))
    sitk.WriteImage(label, str(root / "mr" / "Pat 15_label.nii.gz"))
    spec = load_registry().get("local").cases([root], labelmap=str(CHAOS_MAP.relative_to(REPO)))[safe_case_id("Pat 15")]
    with pytest.raises(DataError) as err:
        _stage_and_slice(spec, root, tmp_path, slicing_cfg)
    message = str(err.value)
    assert str(root / "mr" / "Pat 15_label.nii.gz") in message and str(tmp_path / "raw") not in message
    assert not (tmp_path / "slices" / spec.case).exists()
    # with dataset.resample_labels the same pair is sliced, under the case id made safe
    staged = tmp_path / "raw" / f"{spec.case}_image.nii.gz", tmp_path / "raw" / f"{spec.case}_label.nii.gz"
    manifest = slice_case(
        *staged,
        tmp_path / "resampled",
        case=spec.case,
        modality="mr",
        dataset="own",
        vocabulary_csv=VOCABULARY,
        labelmap_json=CHAOS_MAP,
        slicing={**slicing_cfg, "stride": CHAOS_STRIDE},
        resample_labels=True,
        source_case=spec.original,
    )
    assert len(manifest) > 0
    assert json.loads((tmp_path / "resampled" / "summary.json").read_text())["source_case"] == "Pat 15"


def test_a_dicom_image_folder_with_two_series_stops_at_staging(tmp_path: Path) -> None:
    root = tmp_path / "own"
    folder = root / "ct" / "c_image"
    write_dicom_series(sitk.GetImageFromArray(np.zeros((3, 8, 8), dtype=np.int16)), folder, series_uid="1.2.3.1")
    write_dicom_series(
        sitk.GetImageFromArray(np.zeros((3, 8, 8), dtype=np.int16)), tmp_path / "b", series_uid="1.2.3.2"
    )
    for path in (tmp_path / "b").iterdir():
        path.rename(folder / f"b_{path.name}")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 8, 8), dtype=np.uint8)), str(root / "ct" / "c_label.nii.gz"))
    outputs = {role: str(tmp_path / "raw" / f"c_{role}.nii.gz") for role in ("image", "label")}
    with pytest.raises(DataError) as err:
        stage_case({"image": str(folder), "label": str(root / "ct" / "c_label.nii.gz")}, {}, outputs)
    assert str(folder) in str(err.value) and "2 DICOM series" in str(err.value) and "\n" not in str(err.value)
    assert not any(Path(p).exists() for p in outputs.values())

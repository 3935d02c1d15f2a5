"""Users' own folders (segsam.data.layouts, the registry's local and nnunet kinds): cases, ids, refusals.

Small synthetic volumes; the real-data equivalence (the same masks as the plain
registry path) is in test_own_data.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segsam.data.layouts import modality_of_channel, safe_case_id, safe_case_ids, scan_local, scan_nnunet
from segsam.data.registry import load_registry
from segsam.errors import ConfigError
from tests.helpers import write_dicom_series

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry():
    return load_registry(REPO / "config" / "datasets.yaml")


def _volume(path: Path, value: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 6, 6), value, dtype=np.int16)), str(path))
    return path


def _one_line(err: pytest.ExceptionInfo[BaseException], *parts: str) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)
    return message


# --- case ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("original", ["patient-01", "Anna Müller", "case 7 (repeat)", "病例1", "a/b", "."])
def test_any_case_id_becomes_a_safe_one_with_a_hash_of_the_original(original: str) -> None:
    safe = safe_case_id(original)
    assert safe.replace("_", "").replace(".", "").isalnum() and safe.isascii()
    assert safe != original and safe == safe_case_id(original)  # deterministic
    assert len(safe.rsplit("_", 1)[1]) == 6


def test_safe_ids_are_kept_and_different_originals_stay_apart() -> None:
    assert safe_case_id("case_00012.b") == "case_00012.b"
    ids = safe_case_ids(["a-b", "a b", "a_b"], "/data")
    assert len(set(ids.values())) == 3 and ids["a_b"] == "a_b"


def test_case_ids_colliding_after_sanitising_stop_naming_both(tmp_path: Path) -> None:
    taken = safe_case_id("p-1")  # "p_1_<hash of 'p-1'>": a second case called exactly that collides
    with pytest.raises(ConfigError) as err:
        safe_case_ids(["p-1", taken], str(tmp_path))
    _one_line(err, str(tmp_path), "'p-1'", repr(taken), "rename one")


def test_colliding_ids_in_a_local_folder_stop_at_start_up(registry, tmp_path: Path) -> None:
    for case in ("p-1", safe_case_id("p-1")):
        _volume(tmp_path / "ct" / f"{case}_image.nii.gz")
        _volume(tmp_path / "ct" / f"{case}_label.nii.gz")
    with pytest.raises(ConfigError) as err:
        registry.get("local").cases([tmp_path], labelmap="config/labelmaps/demo.json")
    _one_line(err, str(tmp_path), "'p-1'")


# --- local layout -----------------------------------------------------------------------------------


def test_local_folder_with_a_dicom_image_odd_ids_and_stray_files(registry, tmp_path: Path) -> None:
    write_dicom_series(sitk.GetImageFromArray(np.zeros((4, 6, 6), dtype=np.int16)), tmp_path / "ct" / "Pat 1_image")
    _volume(tmp_path / "ct" / "Pat 1_label.nii.gz")
    _volume(tmp_path / "mr" / "b2_image.mha")
    _volume(tmp_path / "mr" / "b2_label.nrrd")
    (tmp_path / "notes.txt").write_text("x")
    _volume(tmp_path / "CT" / "c_image.nii.gz")  # a modality must be lower case
    listing = registry.get("local").case_list([tmp_path], labelmap="config/labelmaps/demo.json")
    ct = listing.cases[safe_case_id("Pat 1")]
    assert (ct.image.file.path, ct.label.file.path, ct.modality) == ("ct/Pat 1_image", "ct/Pat 1_label.nii.gz", "ct")
    assert ct.source_id == "Pat 1" and ct.original == "Pat 1" and listing.cases["b2"].source_id is None
    assert listing.warning is not None and "\n" not in listing.warning
    assert "2 file(s)" in listing.warning and "notes.txt" in listing.warning and "CT/c_image.nii.gz" in listing.warning
    assert "slice_0000.dcm" not in listing.warning  # a DICOM folder is taken whole


def test_a_folder_without_any_case_names_the_folder_and_the_layout(registry, tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    _volume(tmp_path / "scans" / "x.nii.gz")
    with pytest.raises(ConfigError) as err:
        registry.get("local").cases([tmp_path], labelmap="config/labelmaps/demo.json")
    _one_line(err, str(tmp_path), "no case found", "{modality}/{case}_image", "scans/x.nii.gz")


def test_per_class_mask_folders_are_matched_by_name(registry, tmp_path: Path) -> None:
    masks = tmp_path / "s01" / "segmentations"
    _volume(tmp_path / "s01" / "ct.nii.gz")
    for name in ("liver", "Kidney (L)", "spleen"):
        _volume(masks / f"{name}.nii.gz")
    (masks / "readme.txt").write_text("x")
    listing = registry.get("local_totalseg").case_list([tmp_path])
    case = listing.cases["s01"]
    assert case.masks == {"Kidney (L).nii.gz": 1, "liver.nii.gz": 2, "spleen.nii.gz": 3}
    assert case.labels == {"1": "kidney_left", "2": "liver", "3": "spleen"} and case.labelmap is None
    assert "s01/segmentations/readme.txt" in (listing.warning or "")


def test_unknown_mask_names_stop_at_start_up(registry, tmp_path: Path) -> None:
    _volume(tmp_path / "s01" / "ct.nii.gz")
    _volume(tmp_path / "s01" / "segmentations" / "liver.nii.gz")
    _volume(tmp_path / "s01" / "segmentations" / "tumour blob.nii.gz")
    with pytest.raises(ConfigError) as err:
        registry.get("local_totalseg").cases([tmp_path])
    _one_line(err, str(tmp_path / "s01" / "segmentations"), "tumour blob.nii.gz", "synonyms.yaml")


def test_a_local_layout_template_must_name_the_case(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must hold \{case\}"):
        scan_local(tmp_path, "{modality}/image", "{modality}/{case}_label")


# --- nnU-Net v2 / Medical Segmentation Decathlon ------------------------------------------------------


def _nnunet(root: Path, meta: dict, cases: list[str], v2: bool = True) -> Path:
    suffix = "_0000" if v2 else ""
    for case in cases:
        _volume(root / "imagesTr" / f"{case}{suffix}.nii.gz")
        _volume(root / "labelsTr" / f"{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


V2_META = {
    "channel_names": {"0": "T2"},
    "labels": {"background": 0, "liver": 1, "right kidney": 2, "Kidney (L)": 3, "spleen": 4},
    "file_ending": ".nii.gz",
}
MSD_META = {
    "modality": {"0": "CT"},
    "labels": {"0": "background", "1": "liver", "2": "left kidney"},
    "training": [],
}


def test_nnunet_v2_folder(registry, tmp_path: Path) -> None:
    root = _nnunet(tmp_path, V2_META, ["case-1", "case_2"])
    _volume(root / "imagesTr" / "case_2_0001.nii.gz")  # a second channel: not used, said so
    _volume(root / "imagesTs" / "new_0000.nii.gz")
    (root / "imagesTr" / "._case_2_0000.nii.gz").write_text("resource fork")
    listing = registry.get("nnunet").case_list([root])
    assert sorted(listing.cases) == sorted([safe_case_id("case-1"), "case_2"])
    case = listing.cases["case_2"]
    assert (case.modality, case.image.file.path, case.label.file.path) == (
        "mr",
        "imagesTr/case_2_0000.nii.gz",
        "labelsTr/case_2.nii.gz",
    )
    assert case.labels == {"1": "liver", "2": "kidney_right", "3": "kidney_left", "4": "spleen"}
    assert listing.prediction == {"new": "imagesTs/new_0000.nii.gz"}
    assert "imagesTr/._case_2_0000.nii.gz" in (listing.warning or "") and "channels other than 0000" in listing.warning


def test_msd_folder_reads_labels_as_id_to_name(registry, tmp_path: Path) -> None:
    root = _nnunet(tmp_path, MSD_META, ["liver_0"], v2=False)
    case = registry.get("nnunet").cases([root])["liver_0"]
    assert case.modality == "ct" and case.labels == {"1": "liver", "2": "kidney_left"}
    assert case.image.file.path == "imagesTr/liver_0.nii.gz"


def test_unknown_nnunet_label_names_stop_listing_them_and_the_two_fixes(registry, tmp_path: Path) -> None:
    meta = {**V2_META, "labels": {"background": 0, "liver": 1, "Tumour": 2, "vessel": 3}}
    root = _nnunet(tmp_path, meta, ["a"])
    with pytest.raises(ConfigError) as err:
        registry.get("nnunet").cases([root])
    _one_line(err, str(root / "dataset.json"), "['Tumour', 'vessel']", "dataset.labelmap", "synonyms.yaml")
    # a label map file given as dataset.labelmap replaces the names
    case = registry.get("nnunet").cases([root], labelmap="config/labelmaps/demo.json")["a"]
    assert case.labelmap == "config/labelmaps/demo.json" and case.labels is None


def test_nnunet_folder_without_dataset_json_or_cases(registry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        registry.get("nnunet").cases([tmp_path])
    _one_line(err, str(tmp_path / "dataset.json"), "imagesTr")
    (tmp_path / "dataset.json").write_text(json.dumps(V2_META), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        scan_nnunet(tmp_path)
    _one_line(err, str(tmp_path), "no case found", "imagesTr/<case>_0000.nii.gz")


def test_an_image_without_its_label_is_named(tmp_path: Path) -> None:
    root = _nnunet(tmp_path, V2_META, ["a"])
    _volume(root / "imagesTr" / "b_0000.nii.gz")
    with pytest.raises(ConfigError) as err:
        scan_nnunet(root)
    _one_line(err, str(root), "['b']")


@pytest.mark.parametrize(
    ("channel", "modality"), [("CT", "ct"), ("T2", "mr"), ("ADC", "mr"), ("MRI", "mr"), ("noNorm", "nonorm")]
)
def test_channel_names_give_the_modality(channel: str, modality: str) -> None:
    assert modality_of_channel(channel) == modality

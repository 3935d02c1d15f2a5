"""Tests of 3D -> 2D slicing (segsam.data.slicing)."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from segsam.data.naming import SliceName, parse_mask_stem
from segsam.data.phantoms import write_phantom_case
from segsam.data.slicing import MANIFEST, MASK_COLUMNS, normalise_intensity, return_large_buffers, slice_case
from segsam.errors import DataError

REPO = Path(__file__).resolve().parents[2]
VOCABULARY = REPO / "config" / "vocabulary.csv"
DEMO_MAP = REPO / "config" / "labelmaps" / "demo.json"
PHANTOM_SHAPE = (48, 40, 32)
PHANTOM_SPACING = (8.0, 8.0, 10.0)
FAST_STRIDE = {"x": 4, "y": 4, "z": 4}


def _read_png(path: Path) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    assert image.GetDimension() == 2
    assert image.GetPixelID() == sitk.sitkUInt8
    return sitk.GetArrayFromImage(image)


def _centroid(path: Path) -> tuple[float, float]:
    """(row, column) centroid of a mask PNG as fractions of its height and width."""
    mask = _read_png(path) > 0
    rows, cols = np.nonzero(mask)
    return rows.mean() / mask.shape[0], cols.mean() / mask.shape[1]


def _slice(image: Path, label: Path, out: Path, slicing: dict[str, Any], **kwargs: Any) -> pd.DataFrame:
    args = {
        "case": "case_1",
        "modality": "ct",
        "dataset": "demo",
        "vocabulary_csv": VOCABULARY,
        "labelmap_json": DEMO_MAP,
    }
    args.update(kwargs)
    return slice_case(image, label, out, slicing=slicing, **args)


@pytest.fixture(scope="module")
def phantom_slices(
    tmp_path_factory: pytest.TempPathFactory, default_config: dict[str, Any]
) -> dict[int, tuple[Path, pd.DataFrame]]:
    """CT phantoms for an LPS-identity seed and the three flipped/permuted ones, sliced."""
    root = tmp_path_factory.mktemp("phantom_slices")
    slicing = {**default_config["slicing"], "stride": FAST_STRIDE}
    out = {}
    for seed in (0, 1, 3, 5):
        image, label = root / f"ct_{seed}.nii.gz", root / f"ct_{seed}_seg.nii.gz"
        write_phantom_case(image, label, "ct", seed, PHANTOM_SHAPE, PHANTOM_SPACING)
        folder = root / f"ct_phantom_{seed}"
        out[seed] = (folder, _slice(image, label, folder, slicing, case=f"ct_phantom_{seed}"))
    return out


@pytest.fixture
def volume_pair(
    tmp_path: Path, write_vol: Callable[..., Path]
) -> Callable[[np.ndarray, np.ndarray], tuple[Path, Path]]:
    """Write an image/label pair with 1 mm isotropic LPS geometry (no resampling)."""

    def make(image: np.ndarray, label: np.ndarray) -> tuple[Path, Path]:
        return write_vol(tmp_path / "img.nii.gz", image), write_vol(tmp_path / "seg.nii.gz", label)

    return make


def test_outputs_follow_sa_med2d_naming(phantom_slices) -> None:
    folder, manifest = phantom_slices[0]
    assert list(manifest.columns) == MASK_COLUMNS
    assert sorted((folder / "images").iterdir()) and sorted((folder / "masks").iterdir())
    images = {f"images/{p.name}" for p in (folder / "images").iterdir()}
    masks = {f"masks/{p.name}" for p in (folder / "masks").iterdir()}
    assert images == set(manifest["image"])
    assert masks == set(manifest["mask"])
    assert manifest["mask"].is_unique
    for row in manifest.itertuples():
        image_name = SliceName.parse(Path(row.image).stem)
        mask_name, class_id, instance = parse_mask_stem(Path(row.mask).stem)
        assert image_name == mask_name == SliceName("ct", "demo", "ct_phantom_0", row.axis, row.slice)
        assert (class_id, instance) == (row.class_id, row.instance)
    assert set(manifest["axis"]) == {"x", "y", "z"}
    assert set(manifest["slice"] % 4) == {0}  # every stride-th slice only
    assert (manifest[["dataset", "modality", "case"]] == ["demo", "ct", "ct_phantom_0"]).all().all()


def test_manifest_matches_files_and_vocabulary(phantom_slices) -> None:
    folder, manifest = phantom_slices[0]
    demo = json.loads(DEMO_MAP.read_text(encoding="utf-8"))["labels"]
    vocabulary = pd.read_csv(VOCABULARY)
    names = dict(zip(vocabulary["class_id"], vocabulary["name"], strict=True))
    assert set(manifest["class_name"]) <= set(demo.values())
    assert {"liver", "spleen", "kidney_right", "kidney_left", "vertebrae"} <= set(manifest["class_name"])
    for row in manifest.itertuples():
        assert names[row.class_id] == row.class_name
        mask = _read_png(folder / row.mask)
        image = _read_png(folder / row.image)
        assert mask.shape == image.shape == (row.height, row.width)
        assert set(np.unique(mask)) == {0, 255}
        assert row.area_fraction == pytest.approx((mask > 0).mean())


def test_manifest_records_the_isotropic_pixel_spacing(phantom_slices) -> None:
    # the phantom's 8 x 8 x 10 mm voxels are resampled to 8 mm isotropic: every plane's pixel side is 8 mm
    for _, manifest in phantom_slices.values():
        assert (manifest["spacing_mm"] == min(PHANTOM_SPACING)).all()


def test_instances_are_numbered_largest_first(phantom_slices) -> None:
    _, manifest = phantom_slices[0]
    for _, group in manifest.groupby(["image", "class_id"]):
        assert sorted(group["instance"]) == list(range(len(group)))
        by_instance = group.sort_values("instance")["area_fraction"].to_numpy()
        assert (np.diff(by_instance) <= 0).all()


def test_images_are_uint8_png(phantom_slices) -> None:
    folder, manifest = phantom_slices[0]
    for rel in manifest["image"].unique()[:5]:
        assert (folder / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = _read_png(folder / rel)
        assert pixels.max() > pixels.min()


def test_kept_masks_reach_the_minimum_fraction(phantom_slices, default_config) -> None:
    min_fraction = default_config["slicing"]["min_mask_fraction"]
    for _, manifest in phantom_slices.values():
        assert (manifest["area_fraction"] >= min_fraction).all()


@pytest.mark.parametrize("seed", [0, 1, 3, 5])
def test_axial_slices_show_anterior_up_and_patient_right_on_the_left(phantom_slices, seed: int) -> None:
    """Whatever the file's direction matrix, the PNGs show the radiological view."""
    folder, manifest = phantom_slices[seed]
    axial = manifest[manifest["axis"] == "z"]
    checked = 0
    for _, group in axial.groupby("image"):
        first = group.sort_values("instance").drop_duplicates("class_name").set_index("class_name")["mask"]
        if {"vertebrae", "kidney_right", "kidney_left"} <= set(first.index):
            spine_row, _ = _centroid(folder / first["vertebrae"])
            _, right_col = _centroid(folder / first["kidney_right"])
            _, left_col = _centroid(folder / first["kidney_left"])
            assert spine_row > 0.5  # the spine is posterior: lower half
            assert right_col < 0.5 < left_col  # patient right on the image's left
            checked += 1
    assert checked


def test_tiny_components_are_dropped_at_the_threshold(volume_pair, tmp_path: Path, slicing_cfg) -> None:
    """On a 40 x 40 slice, 0.153% is 2.45 pixels: a 3-pixel blob stays, a 2-pixel blob goes."""
    image = np.zeros((20, 40, 40), dtype=np.int16)
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    label[:, 5:25, 5:25] = 1  # liver, large
    label[:, 35, 30:33] = 1  # liver, second component of 3 pixels: kept as instance 1
    label[:, 35, 5:7] = 2  # spleen, 2 pixels: dropped
    label[:, 30, 35] = 3  # kidney_right, 1 pixel: dropped
    slicing_cfg.update(axes=["z"], stride={"x": 1, "y": 1, "z": 5})
    manifest = _slice(*volume_pair(image, label), tmp_path / "out", slicing_cfg)
    assert set(manifest["slice"]) == {0, 5, 10, 15}
    assert set(manifest["class_id"]) == {1}
    for _, group in manifest.groupby("image"):
        assert group["instance"].tolist() == [0, 1]
        assert group["area_fraction"].tolist() == pytest.approx([400 / 1600, 3 / 1600])
    assert len(list((tmp_path / "out" / "masks").iterdir())) == len(manifest) == 8


def test_slices_without_masks_are_not_written(volume_pair, tmp_path: Path, slicing_cfg) -> None:
    image = np.zeros((20, 40, 40), dtype=np.int16)
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    label[3:6, 10:30, 10:30] = 1
    slicing_cfg.update(axes=["z"], stride={"x": 1, "y": 1, "z": 1})
    manifest = _slice(*volume_pair(image, label), tmp_path / "out", slicing_cfg)
    assert sorted(manifest["slice"]) == [3, 4, 5]
    assert len(list((tmp_path / "out" / "images").iterdir())) == 3


def test_ct_window_maps_to_uint8(volume_pair, tmp_path: Path, slicing_cfg) -> None:
    assert slicing_cfg["ct_window"] == [-160.0, 240.0]
    image = np.full((20, 40, 40), -1000, dtype=np.int16)
    image[:, :, 10:20] = -160
    image[:, :, 20:30] = 40
    image[:, :, 30:35] = 240
    image[:, :, 35:] = 1500
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    label[:, 10:30, 10:30] = 1
    slicing_cfg.update(axes=["z"], stride={"x": 1, "y": 1, "z": 10})
    manifest = _slice(*volume_pair(image, label), tmp_path / "out", slicing_cfg)
    pixels = _read_png(tmp_path / "out" / manifest["image"].iloc[0])
    assert (pixels[:, :10] == 0).all()  # below the window
    assert (pixels[:, 10:20] == 0).all()  # -160 HU
    assert (pixels[:, 20:30] == 128).all()  # 40 HU: (40 + 160) / 400 * 255 = 127.5
    assert (pixels[:, 30:35] == 255).all()  # 240 HU
    assert (pixels[:, 35:] == 255).all()  # above the window


def test_normalise_intensity_mr_uses_foreground_percentiles() -> None:
    rng = np.random.default_rng(0)
    volume = np.zeros((10, 30, 30), dtype=np.float32)
    volume[:, 5:25, 5:25] = rng.normal(500.0, 50.0, size=(10, 20, 20))
    volume[0, 10, 10] = 5000.0  # a hot outlier beyond the 99.5th percentile
    out = normalise_intensity(volume, "mr", ct_window=(-160, 240), mr_percentiles=(0.5, 99.5))
    assert out.dtype == np.uint8
    assert out[0, 10, 10] == 255
    inside = out[:, 5:25, 5:25]
    assert inside.min() == 0 and inside.max() == 255
    assert 80 < np.median(inside) < 180  # the outlier does not squash the foreground
    assert (out[:, :5, :] == 0).all()  # background is below the foreground's low percentile


def test_constant_volume_gives_zeros() -> None:
    out = normalise_intensity(np.full((4, 5, 6), 7.0), "mr", ct_window=(-160, 240), mr_percentiles=(0.5, 99.5))
    assert out.dtype == np.uint8 and not out.any()


def _no_leftovers(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}")]


def test_unknown_label_value_fails_and_leaves_nothing(volume_pair, tmp_path: Path, slicing_cfg) -> None:
    image = np.zeros((20, 40, 40), dtype=np.int16)
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    label[:, 10:30, 10:30] = 1
    label[:, 2:4, 2:4] = 42  # not in demo.json
    image_path, label_path = volume_pair(image, label)
    out_parent = tmp_path / "slices"
    out_parent.mkdir()
    with pytest.raises(DataError) as info:
        _slice(image_path, label_path, out_parent / "case_1", slicing_cfg)
    assert "[42]" in str(info.value) and str(label_path) in str(info.value)
    _no_leftovers(out_parent, "case_1")
    assert not list(out_parent.iterdir())


def test_failure_inside_the_write_loop_removes_the_temp_folder(volume_pair, tmp_path: Path, slicing_cfg) -> None:
    """An error while slices are being written (here: an invalid case id) cleans up too."""
    image = np.zeros((20, 40, 40), dtype=np.int16)
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    label[:, 10:30, 10:30] = 1
    out_parent = tmp_path / "slices"
    out_parent.mkdir()
    with pytest.raises(ValueError, match="case"):
        _slice(*volume_pair(image, label), out_parent / "bad", slicing_cfg, case="bad-case-id")
    _no_leftovers(out_parent, "bad")


def test_failed_rerun_keeps_the_previous_output(volume_pair, tmp_path: Path, slicing_cfg) -> None:
    image = np.zeros((20, 40, 40), dtype=np.int16)
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    label[:, 10:30, 10:30] = 1
    image_path, label_path = volume_pair(image, label)
    out = tmp_path / "case_1"
    first = _slice(image_path, label_path, out, slicing_cfg)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    label[:, 2:4, 2:4] = 42
    sitk.WriteImage(sitk.GetImageFromArray(label), str(label_path))
    with pytest.raises(DataError):
        _slice(image_path, label_path, out, slicing_cfg)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert pd.read_parquet(out / MANIFEST).equals(first)


def test_rerun_replaces_the_output(volume_pair, tmp_path: Path, slicing_cfg) -> None:
    image = np.zeros((20, 40, 40), dtype=np.int16)
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    label[:, 10:30, 10:30] = 1
    out = tmp_path / "case_1"
    slicing_cfg.update(axes=["z"], stride={"x": 1, "y": 1, "z": 1})
    _slice(*volume_pair(image, label), out, slicing_cfg)
    slicing_cfg["stride"]["z"] = 10
    manifest = _slice(*volume_pair(image, label), out, slicing_cfg)
    assert len(list((out / "images").iterdir())) == manifest["image"].nunique() == 2
    _no_leftovers(tmp_path, "case_1.tmp")


def _assert_skipped(out: Path, caplog: pytest.LogCaptureFixture, label_path: Path) -> None:
    """An empty label volume is a warning: the case is skipped (empty manifest + summary), not an error."""
    assert pd.read_parquet(out / "manifest.parquet").empty
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["skipped"] == "empty label volume"
    assert any(r.levelname == "WARNING" and str(label_path) in r.getMessage() for r in caplog.records)
    assert not list(out.glob("images/*.png"))


def test_empty_label_volume(volume_pair, tmp_path: Path, slicing_cfg, caplog: pytest.LogCaptureFixture) -> None:
    zeros = np.zeros((20, 40, 40), dtype=np.uint8)
    image_path, label_path = volume_pair(zeros.astype(np.int16), zeros)
    caplog.set_level("WARNING")
    _slice(image_path, label_path, tmp_path / "out", slicing_cfg)
    _assert_skipped(tmp_path / "out", caplog, label_path)


def test_label_volume_with_only_ignored_labels_is_empty(
    volume_pair, tmp_path: Path, slicing_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    labelmap = tmp_path / "map.json"
    labelmap.write_text(json.dumps({"labels": {"1": "liver", "2": None}}), encoding="utf-8")
    label = np.zeros((20, 40, 40), dtype=np.uint8)
    label[:, 10:30, 10:30] = 2
    image_path, label_path = volume_pair(label.astype(np.int16), label)
    caplog.set_level("WARNING")
    _slice(image_path, label_path, tmp_path / "out", slicing_cfg, labelmap_json=labelmap)
    _assert_skipped(tmp_path / "out", caplog, label_path)


# --- real data (../shared/data) -------------------------------------------------------------

REAL_CASES = {
    "ct": ("example_ct.nii.gz", "example_seg_fast_force_split.nii.gz", "totalseg_total.json"),
    "mr": ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "totalseg_total_mr.json"),
}


@pytest.fixture(scope="module")
def real_slices(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, default_config
) -> dict[str, tuple[Path, pd.DataFrame]]:
    root = tmp_path_factory.mktemp("real_slices")
    slicing = {**default_config["slicing"], "stride": {"x": 8, "y": 8, "z": 8}}
    out = {}
    for modality, (image, label, labelmap) in REAL_CASES.items():
        folder = root / f"{modality}_example"
        manifest = slice_case(
            shared_data / "totalsegmentator" / image,
            shared_data / "totalsegmentator" / label,
            folder,
            case=f"{modality}_example",
            modality=modality,
            dataset="totalseg",
            vocabulary_csv=VOCABULARY,
            labelmap_json=REPO / "config" / "labelmaps" / labelmap,
            slicing=slicing,
        )
        out[modality] = (folder, manifest)
    return out


@pytest.mark.shared_data
@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_real_case_has_the_abdominal_organs(real_slices, modality: str, default_config, shared_data: Path) -> None:
    folder, manifest = real_slices[modality]
    assert {"liver", "spleen", "kidney_right", "kidney_left", "vertebrae"} <= set(manifest["class_name"])
    assert (manifest["area_fraction"] >= default_config["slicing"]["min_mask_fraction"]).all()
    assert set(manifest["axis"]) == {"x", "y", "z"}
    image = sitk.ReadImage(str(shared_data / "totalsegmentator" / REAL_CASES[modality][0]))
    assert manifest["spacing_mm"].unique().tolist() == pytest.approx([min(image.GetSpacing())])
    assert {f"images/{p.name}" for p in (folder / "images").iterdir()} == set(manifest["image"])


@pytest.mark.shared_data
@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_real_axial_slices_have_anterior_at_the_top(real_slices, modality: str) -> None:
    folder, manifest = real_slices[modality]
    axial = manifest[manifest["axis"] == "z"]
    checked = 0
    for _, group in axial.groupby("image"):
        first = group.sort_values("instance").drop_duplicates("class_name").set_index("class_name")["mask"]
        if {"vertebrae", "aorta", "kidney_right", "kidney_left", "liver"} <= set(first.index):
            spine_row, spine_col = _centroid(folder / first["vertebrae"])
            aorta_row, _ = _centroid(folder / first["aorta"])
            _, liver_col = _centroid(folder / first["liver"])
            _, right_col = _centroid(folder / first["kidney_right"])
            _, left_col = _centroid(folder / first["kidney_left"])
            assert spine_row > 0.5  # spine in the lower (posterior) half
            assert aorta_row < spine_row  # the aorta lies in front of the spine
            assert liver_col < 0.5 and right_col < spine_col < left_col  # patient right on the image's left
            checked += 1
    assert checked >= 2


@pytest.mark.shared_data
def test_real_ct_coronal_slices_have_superior_at_the_top(real_slices) -> None:
    folder, manifest = real_slices["ct"]
    coronal = manifest[manifest["axis"] == "y"]
    checked = 0
    for _, group in coronal.groupby("image"):
        first = group.sort_values("instance").drop_duplicates("class_name").set_index("class_name")["mask"]
        if {"liver", "urinary_bladder"} <= set(first.index):
            assert _centroid(folder / first["liver"])[0] < _centroid(folder / first["urinary_bladder"])[0]
            checked += 1
    assert checked


def test_large_buffers_go_back_to_the_system_on_glibc() -> None:
    """The stage fixes glibc's mmap threshold (peak memory; see benchmarks/slicing_throughput.py)."""
    libc, _ = platform.libc_ver()
    assert return_large_buffers() is (libc == "glibc")

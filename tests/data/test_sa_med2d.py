"""Tests of the SA-Med2D importer (segsam.data.sa_med2d) on SAM-Med2D's demo folder and synthetic releases."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segsam.data.index import IMAGE_COLUMNS, count_masks
from segsam.data.sa_med2d import (
    SliceInfo,
    import_release,
    import_release_dataset,
    import_sa_med2d,
    iter_json_object,
    main,
    normalise_class_name,
    parse_image_stem,
    parse_mask_stem,
    png_size,
)
from segsam.data.slicing import MASK_COLUMNS
from segsam.errors import DataError
from tests.helpers import write_png as _png
from tests.helpers import write_sa_med2d_release as _release

REPO = Path(__file__).resolve().parents[2]
VOCAB = REPO / "config" / "vocabulary.csv"
CLASSMAP = REPO / "config" / "classmaps" / "sa_med2d.json"
DEMO_JSONS = {
    "image_to_masks": [("image2label_train.json", "train")],
    "mask_to_image": [("label2image_test.json", "test")],
}


@pytest.fixture
def _segsam_logger() -> Iterator[None]:
    """The CLI sets up logging on the 'segsam' logger: put it back as it was afterwards."""
    logger = logging.getLogger("segsam")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
    for handler in handlers:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    logger.propagate, logger.level = propagate, level


@pytest.fixture(scope="module")
def demo(shared_data: Path) -> Path:
    folder = shared_data / "sam_med2d_demo"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


# --- the real demo folder --------------------------------------------------------------------------


@pytest.mark.shared_data
def test_demo_folder_imports_into_the_index_tables(demo: Path) -> None:
    masks, images, summary = import_release(demo, **DEMO_JSONS, vocabulary_csv=VOCAB, classmap_json=CLASSMAP)
    assert list(masks.columns) == [*MASK_COLUMNS, "split"]
    assert list(images.columns) == IMAGE_COLUMNS
    # 30 masks in the json files: 7 heart/rib sub-structures are known and skipped
    assert len(masks) == 23 and summary["skipped_ignored_classes"]["rib_left_9"] == 1
    assert sum(summary["skipped_ignored_classes"].values()) == 7
    assert sorted(images["case"]) == ["amos_0004", "amos_0006", "s0114", "s0619"]
    assert masks.groupby("case")["split"].nunique().max() == 1  # no case in two splits
    assert dict(masks.drop_duplicates("case").set_index("case")["split"]) == {
        "amos_0004": "test",
        "amos_0006": "train",
        "s0114": "train",
        "s0619": "test",
    }
    amos6 = masks[masks["case"] == "amos_0006"]
    assert sorted(amos6["class_name"]) == ["aorta", "inferior_vena_cava", "liver", "spleen"]
    assert set(masks["dataset"]) == {"amos", "totalsegmentator"} and set(masks["modality"]) == {"ct"}
    # four lung lobes become four 'lung' instances of one image, largest first
    lung = masks[(masks["case"] == "s0114") & (masks["class_name"] == "lung")].sort_values("instance")
    assert list(lung["instance"]) == [0, 1, 2, 3]
    assert lung["area_fraction"].is_monotonic_decreasing
    assert masks["area_fraction"].between(0, 1).all()
    assert (images.set_index("case").loc["amos_0006", ["height", "width"]] == [512, 512]).all()
    for path in masks["mask"]:
        assert Path(path).is_file()


@pytest.mark.shared_data
def test_demo_without_class_map_names_the_unknown_classes(demo: Path) -> None:
    with pytest.raises(DataError, match=r"class names not in the vocabulary.*heart_atrium_left.*lung_lower_lobe_left"):
        import_release(demo, **DEMO_JSONS, vocabulary_csv=VOCAB)


@pytest.mark.shared_data
def test_unknown_classes_can_be_skipped_and_counted(demo: Path) -> None:
    masks, _, summary = import_release(demo, **DEMO_JSONS, vocabulary_csv=VOCAB, unknown_classes="skip")
    assert set(masks["class_name"]) <= {"liver", "spleen", "aorta", "inferior_vena_cava", "colon"}
    assert summary["skipped_unknown_classes"]["lung_lower_lobe_left"] == 1


@pytest.mark.shared_data
@pytest.mark.usefixtures("_segsam_logger")
def test_cli_writes_the_tables(demo: Path, tmp_path: Path) -> None:
    rc = main(
        [
            str(demo),
            "--out-dir",
            str(tmp_path),
            "--train-json",
            "image2label_train.json",
            "--test-json",
            "label2image_test.json",
            "--vocabulary",
            str(VOCAB),
            "--classmap",
            str(CLASSMAP),
        ]
    )
    assert rc == 0
    assert len(pd.read_parquet(tmp_path / "masks.parquet")) == 23
    assert json.loads((tmp_path / "summary.json").read_text())["n_images"] == 4


@pytest.mark.usefixtures("_segsam_logger")
def test_cli_reports_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            str(tmp_path / "nope"),
            "--out-dir",
            str(tmp_path / "out"),
            "--train-json",
            "x.json",
            "--vocabulary",
            str(VOCAB),
        ]
    )
    assert rc == 1
    assert "release folder not found" in capsys.readouterr().err


# --- a synthetic release in the SA-Med2D-16M naming --------------------------------------------------


RELEASE_KW = {"image_to_masks": [("SAMed2D_v1.json", None)], "class_mapping_json": "SAMed2D_v1_class_mapping_id.json"}


def test_release_naming_is_imported_and_split_by_case(tmp_path: Path) -> None:
    cases = {f"Case_{i:03d}": "ct_00" for i in range(4)} | {f"Pat{i}": "mr_t2" for i in range(4)}
    root = _release(tmp_path / "rel", cases)
    masks, images, summary = import_release(
        root, **RELEASE_KW, vocabulary_csv=VOCAB, classmap_json=CLASSMAP, test_fraction=0.25, seed=1
    )
    assert len(masks) == 8 * 2 * 2 and len(images) == 16
    assert set(masks["class_name"]) == {"liver", "kidney_left"}
    assert set(masks["modality"]) == {"ct", "mr"} and set(masks["dataset"]) == {"SynthSet"}
    per_case = masks.groupby("case")["split"].nunique()
    assert per_case.max() == 1  # never split by slice
    tests = masks.drop_duplicates("case").groupby("modality")["split"].apply(lambda s: int((s == "test").sum()))
    assert dict(tests) == {"ct": 1, "mr": 1}
    assert summary["n_cases"] == 8
    small = masks[masks["class_name"] == "kidney_left"]["area_fraction"].iloc[0]
    assert small == pytest.approx(6 / 600)


def test_release_without_area_keeps_nan(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00", "C2": "ct_00"})
    masks, _, _ = import_release(root, **RELEASE_KW, vocabulary_csv=VOCAB, classmap_json=CLASSMAP, measure_area=False)
    assert masks["area_fraction"].isna().all() and (masks["height"] == 20).all()


def test_small_masks_can_be_dropped(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00", "C2": "ct_00"})
    masks, _, summary = import_release(
        root, **RELEASE_KW, vocabulary_csv=VOCAB, classmap_json=CLASSMAP, min_mask_fraction=0.05
    )
    assert set(masks["class_name"]) == {"liver"} and summary["dropped_small_masks"] == 4


def test_class_index_missing_from_the_mapping(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00"})
    (root / "SAMed2D_v1_class_mapping_id.json").write_text(json.dumps({"SynthSet": {"liver": 0}}))
    with pytest.raises(DataError, match="class index 1 of dataset SynthSet"):
        import_release(root, **RELEASE_KW, vocabulary_csv=VOCAB, classmap_json=CLASSMAP)


def test_missing_mask_file_is_named(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00"})
    (root / "masks" / "ct_00--SynthSet--C1--z_0007--0001_000.png").unlink()
    with pytest.raises(DataError, match=r"z_0007--0001_000\.png: cannot read"):
        import_release(root, **RELEASE_KW, vocabulary_csv=VOCAB, classmap_json=CLASSMAP)


def test_mask_of_another_size_is_named(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00"})
    _png(root / "masks" / "ct_00--SynthSet--C1--z_0003--0000_000.png", np.zeros((5, 5)))
    with pytest.raises(DataError, match=r"0000_000\.png: size 5x5 differs from its image"):
        import_release(root, **RELEASE_KW, vocabulary_csv=VOCAB, classmap_json=CLASSMAP)


def test_case_in_train_and_test_files_is_refused(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00"})
    mapping = json.loads((root / "SAMed2D_v1.json").read_text())
    image, masks = next(iter(mapping.items()))
    (root / "test.json").write_text(json.dumps({masks[0]: image}))
    (root / "train.json").write_text(json.dumps({k: v for k, v in mapping.items() if k != image}))
    with pytest.raises(DataError, match=r"both train and test.*C1"):
        import_release(
            root,
            image_to_masks=[("train.json", "train")],
            mask_to_image=[("test.json", "test")],
            class_mapping_json="SAMed2D_v1_class_mapping_id.json",
            vocabulary_csv=VOCAB,
            classmap_json=CLASSMAP,
        )


def test_mask_paired_with_the_wrong_image(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00"})
    mapping = json.loads((root / "SAMed2D_v1.json").read_text())
    first, second = list(mapping)
    (root / "bad.json").write_text(json.dumps({first: mapping[second]}))
    with pytest.raises(DataError, match="does not belong to image"):
        import_release(
            root,
            image_to_masks=[("bad.json", None)],
            class_mapping_json="SAMed2D_v1_class_mapping_id.json",
            vocabulary_csv=VOCAB,
            classmap_json=CLASSMAP,
        )


def test_writer_is_atomic_and_complete(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00", "C2": "ct_00"})
    out = tmp_path / "index"
    import_sa_med2d(
        root,
        out / "masks.parquet",
        out / "images.parquet",
        out / "summary.json",
        **RELEASE_KW,
        vocabulary_csv=VOCAB,
        classmap_json=CLASSMAP,
    )
    assert sorted(p.name for p in out.iterdir()) == ["images.parquet", "masks.parquet", "summary.json"]


def test_streamed_import_matches_the_in_memory_one(tmp_path: Path) -> None:
    cases = {f"Case_{i:03d}": "ct_00" for i in range(5)} | {f"Pat{i}": "mr_t2" for i in range(3)}
    root = _release(tmp_path / "rel", cases)
    masks, _, _ = import_release(root, **RELEASE_KW, vocabulary_csv=VOCAB, classmap_json=CLASSMAP, seed=4)
    summary = import_release_dataset(
        root,
        tmp_path / "ds",
        **RELEASE_KW,
        vocabulary_csv=VOCAB,
        classmap_json=CLASSMAP,
        seed=4,
        measure_area=True,
        chunk_rows=5,
    )
    assert summary["n_masks"] == len(masks) and summary["n_cases"] == 8
    assert count_masks(tmp_path / "ds", by="case") == {
        k: int(v) for k, v in sorted(masks["case"].value_counts().items())
    }
    assert count_masks(tmp_path / "ds") == {k: int(v) for k, v in sorted(masks["split"].value_counts().items())}
    assert count_masks(tmp_path / "ds", modality="mr", class_name="kidney_left") == {
        k: int(v)
        for k, v in sorted(
            masks[(masks["modality"] == "mr") & (masks["class_name"] == "kidney_left")]["split"].value_counts().items()
        )
    }


def test_streamed_import_with_unknown_classes_keeps_nothing(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00"})
    with pytest.raises(DataError, match="left_kidney"):
        import_release_dataset(root, tmp_path / "ds", **RELEASE_KW, vocabulary_csv=VOCAB)  # no class map
    assert not (tmp_path / "ds").exists()


@pytest.mark.usefixtures("_segsam_logger")
def test_cli_stream_mode(tmp_path: Path) -> None:
    root = _release(tmp_path / "rel", {"C1": "ct_00", "C2": "mr_t1"})
    rc = main(
        [
            str(root),
            "--out-dir",
            str(tmp_path / "out"),
            "--all-json",
            "SAMed2D_v1.json",
            "--stream",
            "--no-area",
            "--class-mapping",
            "SAMed2D_v1_class_mapping_id.json",
            "--vocabulary",
            str(VOCAB),
            "--classmap",
            str(CLASSMAP),
        ]
    )
    assert rc == 0
    assert sum(count_masks(tmp_path / "out" / "masks").values()) == 8
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_cases"] == 2


# --- names, classes, json streaming ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "info"),
    [
        ("ct_00--AbdomenCT1K--Case_00011--x_0040", SliceInfo("AbdomenCT1K", "ct", "Case_00011", "x", 40)),
        ("mr_t1--ACDC--patient001_frame01--z_0004", SliceInfo("ACDC", "mr", "patient001_frame01", "z", 4)),
        ("x_ray--Chest--img12--z_0000", SliceInfo("Chest", "x_ray", "img12", "z", 0)),
        ("ultrasound_00--Breast--b7--y_0003", SliceInfo("Breast", "ultrasound", "b7", "y", 3)),
        ("amos_0004_75", SliceInfo("amos", "ct", "amos_0004", "z", 75)),
        ("amos_0507_31", SliceInfo("amos", "mr", "amos_0507", "z", 31)),
        ("s0114_111", SliceInfo("totalsegmentator", "ct", "s0114", "z", 111)),
    ],
)
def test_image_names(stem: str, info: SliceInfo) -> None:
    assert parse_image_stem(stem) == info


@pytest.mark.parametrize("stem", ["whatever", "ct--a--b--q_0001", "brats_12_5", "a--b--c"])
def test_bad_image_names(stem: str) -> None:
    with pytest.raises(DataError, match=stem.replace(".", r"\.")):
        parse_image_stem(stem)


def test_mask_names() -> None:
    assert parse_mask_stem("ct_00--A--C1--x_0041--0003_002") == ("ct_00--A--C1--x_0041", 3, 2)
    assert parse_mask_stem("s0114_111_rib_left_9_000") == ("s0114_111", "rib_left_9", 0)
    assert parse_mask_stem("amos_0004_75_inferior_vena_cava_001") == ("amos_0004_75", "inferior_vena_cava", 1)
    with pytest.raises(DataError, match="not an SA-Med2D mask name"):
        parse_mask_stem("amos_0004_75")


def test_class_names_are_normalised() -> None:
    assert normalise_class_name(" Left Kidney ") == "left_kidney"
    assert normalise_class_name("prostate/uterus") == "prostate_uterus"
    assert normalise_class_name("vertebrae_T9") == "vertebrae_t9"


def test_png_size(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", np.zeros((7, 11)))
    assert png_size(tmp_path / "a.png") == (7, 11)
    (tmp_path / "b.png").write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(DataError, match=r"b\.png: not a PNG"):
        png_size(tmp_path / "b.png")


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_streamed_json_equals_json_load(tmp_path: Path, chunk: int) -> None:
    obj = {
        "a/b.png": ["x", "y\u00e9"],
        "n": 123456789,
        "neg": -1.5e3,
        "nested": {"k": [1, {"z": None}]},
        "t": True,
        "": "empty",
    }
    path = tmp_path / "x.json"
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    assert dict(iter_json_object(path, chunk_size=chunk)) == obj
    path.write_text("{}", encoding="utf-8")
    assert list(iter_json_object(path, chunk_size=chunk)) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"a": [1, 2', "malformed or truncated"),
        ('{"a": 1 "b": 2}', "expected ','"),
        ('{"a" 1}', 'expected "key": value'),
        ("", "expected a JSON object"),
    ],
)
def test_malformed_json_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="bad.json") as info:
        list(iter_json_object(path, chunk_size=4))
    assert message in str(info.value)

"""The per-plane loop, box refinement, and ``segsam predict`` end to end (small scans)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import yaml

from segsam.cli import main
from segsam.data.vocabulary import Vocabulary
from segsam.hashing import sha256_of
from segsam.methods import get_method
from segsam.models.method_model import trained_state
from segsam.models.preprocess import ResizeInfo
from segsam.predict.labels import LabelBuilder
from segsam.predict.model import Checkpoint, build_predictor
from segsam.predict.prompts import PlacedBox, PlacedPoint, PromptEntry
from segsam.predict.run import REFINE_MARGIN_MM, Refiner, RefineSweeps, refined_box, segment_with_prompts
from segsam.predict.volume import read_scan, to_input_grid
from tests.conftest import write_volume
from tests.helpers import method_model, write_dicom_series
from tests.predict.conftest import ct_phantom


def box(z0: int, z1: int, xy: tuple[int, int, int, int] = (5, 6, 30, 24), class_id: int = 1) -> PlacedBox:
    entry = PromptEntry("entry 1", class_id, "box", "voxel", (0.0,) * 6)
    return PlacedBox(entry, *xy, z0, z1)


def point(z: int, class_id: int = 2) -> PlacedPoint:
    return PlacedPoint(PromptEntry("entry 2", class_id, "point", "voxel", (0.0,) * 3), 10.0, 12.0, z)


@dataclass
class FakePredictor:
    """Counts encodings; each prompt's mask is a disc whose radius grows with the plane, cut to its box."""

    embedded: list[int] = field(default_factory=list)
    decoded: list[tuple[int, list[bool], np.ndarray]] = field(default_factory=list)

    def embed(self, plane: np.ndarray) -> tuple[torch.Tensor, ResizeInfo]:
        z = int(plane[0, 0])  # the test writes each plane's index into its corner
        self.embedded.append(z)
        return torch.full((1, 1), float(z)), ResizeInfo.for_shape(*plane.shape)

    def decode(self, embedding, info, is_point, boxes, points) -> np.ndarray:
        z = int(embedding[0, 0])
        self.decoded.append((z, list(is_point), boxes.copy()))
        height, width = info.original
        rows, cols = np.mgrid[:height, :width]
        disc = (rows - 15) ** 2 + (cols - 17) ** 2 <= (2 + z) ** 2
        out = []
        for b in boxes:
            inside = (cols >= b[0]) & (cols <= b[2]) & (rows >= b[1]) & (rows <= b[3])
            out.append((disc & inside).astype(np.float32))
        return np.stack(out)


@pytest.fixture
def indexed_scan(tmp_path: Path, slicing_cfg: dict[str, Any]):
    """A 40 x 30 x 8 LPS scan, 2 mm square pixels, whose plane z holds z in its corner (as uint8 after scaling)."""
    values = np.full((8, 30, 40), -160, dtype=np.int16)
    scan = read_scan(write_volume(tmp_path / "s.nii.gz", values, spacing=(2.0, 2.0, 3.0)), slicing_cfg)
    for z in range(8):
        scan.planes[z, 0, 0] = z
    return scan


def test_each_prompted_plane_is_encoded_once_and_decodes_all_its_prompts(indexed_scan) -> None:
    fake = FakePredictor()
    builder = LabelBuilder((8, 30, 40), 0.5)
    segment_with_prompts(fake, indexed_scan, [box(1, 4), box(3, 6, class_id=3), point(3)], builder)
    assert fake.embedded == [1, 2, 3, 4, 5, 6]
    assert [(z, kinds) for z, kinds, _ in fake.decoded if z == 3] == [(3, [False, False, True])]
    assert set(np.unique(builder.label[3])) == {0, 1}  # class 1 and 3 tie; the lower id wins
    assert not builder.label[0].any() and not builder.label[7].any()


def test_refined_box_tightens_the_given_box_only() -> None:
    given = np.array([2, 2, 30, 20], np.float32)
    mask = np.zeros((25, 35), bool)
    mask[8:12, 10:15] = True
    assert np.array_equal(refined_box(given, None, 2.0), given)
    assert np.array_equal(refined_box(given, np.zeros_like(mask), 2.0), given)
    assert np.array_equal(refined_box(given, mask, 2.0), [8, 6, 16, 13])
    assert np.array_equal(refined_box(given, mask, 20.0), given)  # grown past the given box: cut to it
    far = np.zeros((25, 35), bool)
    far[22:24, 32:34] = True
    assert np.array_equal(refined_box(given, far, 0.0), given)  # misses the given box: the given box


def test_refinement_sweeps_out_from_each_middle_plane_and_encodes_each_plane_once(indexed_scan) -> None:
    placed = [box(0, 6), box(3, 7, class_id=3), point(1)]
    sweeps = RefineSweeps.plan(placed)
    assert sweeps.up == {1: [2], 3: [0], 4: [0], 5: [0, 1], 6: [0, 1], 7: [1]}
    assert sweeps.down == {4: [1], 3: [1], 2: [0], 1: [0], 0: [0]}
    fake = FakePredictor()
    Refiner(fake, indexed_scan, placed, LabelBuilder((8, 30, 40), 0.5)).run()
    assert sorted(fake.embedded) == list(range(8))  # planes 1, 3, 4 serve both sweeps from one encoding
    decoded: dict[tuple[int, int], np.ndarray] = {}  # (plane, position in its batch) -> box, up sweep first
    for z, _, boxes in fake.decoded:
        for i, b in enumerate(boxes):
            decoded.setdefault((z, i), b)
    assert [z for z, _, _ in fake.decoded] == [1, 3, 4, 5, 6, 7, 4, 3, 2, 1, 0]
    assert np.array_equal(decoded[(3, 0)], [5, 6, 30, 24])  # the middle plane: the given box
    margin = REFINE_MARGIN_MM / 2.0
    disc_3 = np.array([17 - 5, 15 - 5, 17 + 5, 15 + 5])  # plane 3's disc (radius 5) inside the given box
    expected = np.clip(disc_3 + np.array([-margin, -margin, margin, margin]), [5, 6, 5, 6], [30, 24, 30, 24])
    assert np.allclose(decoded[(4, 0)], expected)  # plane 4's box from plane 3's mask


def test_prompt_free_cli_writes_the_label_on_the_input_grid(
    tmp_path: Path, small_ct: Path, unet_checkpoint: Path, default_config: dict[str, Any], capsys
) -> None:
    out = tmp_path / "out" / "seg.nii.gz"
    assert (
        main(
            [
                "predict",
                str(small_ct),
                str(out),
                "--method",
                "unet",
                "--model",
                str(unet_checkpoint),
                "--prompt-free",
                "--probabilities",
            ]
        )
        == 0
    )
    label, image = sitk.ReadImage(str(out)), sitk.ReadImage(str(small_ct))
    assert label.GetPixelID() == sitk.sitkUInt16
    assert label.GetSize() == image.GetSize() and label.GetSpacing() == image.GetSpacing()
    assert label.GetOrigin() == image.GetOrigin() and label.GetDirection() == image.GetDirection()
    # what the network gives plane by plane, mapped back by hand
    predictor = build_predictor(
        get_method("unet"), default_config, Checkpoint(unet_checkpoint, sha256_of(unet_checkpoint), "test")
    )
    scan = read_scan(small_ct, default_config["slicing"])
    ids = np.array([0, *predictor.vocabulary.ids])
    with torch.inference_mode():
        expected = np.stack([ids[scan.plane_grid.to_lps(predictor.segment(p)).argmax(0)] for p in scan.planes])
    assert np.array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(to_input_grid(expected, scan)))
    record = json.loads((tmp_path / "out" / "seg.json").read_text())
    present = sorted(int(v) for v in np.unique(expected) if v)
    assert record["method"] == "unet" and record["prompts"] is None and record["weights"] is None
    assert sorted(int(k) for k in record["classes"]) == present
    assert record["checkpoint"]["sha256"] == sha256_of(unet_checkpoint)
    assert "argmax" in record["rule"] and record["input"] == str(small_ct.resolve())
    assert record["input_orientation"] == "RPS" and record["working_plane"]["shape"] == [30, 50]
    assert set(record["probabilities"]) == {predictor.vocabulary.name_of(c) for c in present}
    name = next(iter(record["probabilities"]))
    probability = sitk.ReadImage(str(tmp_path / "out" / f"seg_prob_{name}.nii.gz"))
    assert probability.GetPixelID() == sitk.sitkFloat32 and probability.GetOrigin() == image.GetOrigin()
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_a_folder_of_scans_and_a_dicom_series(tmp_path: Path, small_ct: Path, unet_checkpoint: Path) -> None:
    folder = small_ct.parent
    shutil.copy(small_ct, folder / "second.nii.gz")
    volume = sitk.ReadImage(str(small_ct))
    volume.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    write_dicom_series(volume, folder / "series3")
    out = tmp_path / "labels"
    assert main(["predict", str(folder), str(out), "--method", "unet", "--model", str(unet_checkpoint)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "second.json",
        "second.nii.gz",
        "series3.json",
        "series3.nii.gz",
        "small.json",
        "small.nii.gz",
    ]
    dicom = sitk.ReadImage(str(out / "series3.nii.gz"))
    assert dicom.GetSize() == volume.GetSize() and np.allclose(dicom.GetOrigin(), volume.GetOrigin(), atol=1e-4)
    assert json.loads((out / "series3.json").read_text())["modality_source"].startswith("DICOM")


def test_the_model_comes_from_an_mlflow_run(tmp_path: Path, small_ct: Path, unet_checkpoint: Path) -> None:
    import mlflow

    from segsam.tracking import init_store

    store = tmp_path / "mlflow.db"
    uri = f"sqlite:///{store}"
    experiment = init_store(uri, "segsam", tmp_path / "artifacts", tmp_path / "initialised.json")
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = {}
    for method in ("unet", "unetr"):
        run = client.create_run(experiment, tags={"stage": "train", "method": method})
        client.log_artifact(run.info.run_id, str(unet_checkpoint), "checkpoint")
        runs[method] = run.info.run_id
    overlay = tmp_path / "tracking.yaml"
    overlay.write_text(yaml.safe_dump({"tracking": {"uri": uri}}))
    out = tmp_path / "seg.nii.gz"
    common = ["predict", str(small_ct), str(out), "--method", "unet", "--config", str(overlay)]
    assert main([*common, "--model", runs["unet"]]) == 0
    record = json.loads((tmp_path / "seg.json").read_text())
    assert record["checkpoint"]["mlflow_run_id"] == runs["unet"]
    assert record["checkpoint"]["sha256"] == sha256_of(unet_checkpoint)
    out.unlink()
    assert main([*common, "--model", runs["unetr"]]) == 1  # a run of another method
    assert main([*common, "--model", "0" * 32]) == 1  # no such run
    assert not out.exists()


def test_zero_shot_litemedsam_segments_the_boxed_planes(tmp_path: Path, small_ct: Path) -> None:
    image = sitk.ReadImage(str(small_ct))
    # the bright block: y 10..19, x 10..19 of the array (RPS file order), on planes 1 and 2, given in RAS mm
    corners = [np.array(image.TransformContinuousIndexToPhysicalPoint(c)) for c in ((9.5, 9.5, 1), (19.5, 19.5, 2))]
    ras = [c * np.array([-1.0, -1.0, 1.0]) for c in corners]
    low, high = np.minimum(*ras), np.maximum(*ras)
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(
        "class,frame,prompt,x0,y0,z0,x1,y1,z1\n"
        + "liver,ras,box,"
        + ",".join(f"{v:.4f}" for v in (*low, *high))
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", str(small_ct), str(out), "--method", "medsam_lite", "--prompts", str(prompts)]) == 0
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    truth = np.zeros_like(label, dtype=bool)
    truth[1:3, 10:20, 10:20] = True
    assert not label[[0, 3]].any()
    assert set(np.unique(label)) == {0, 1}
    dsc = 2 * np.logical_and(label == 1, truth).sum() / ((label == 1).sum() + truth.sum())
    assert dsc > 0.7  # a 10-pixel block blown up to 256: LiteMedSAM keeps about a pixel off each edge
    z, y, x = np.nonzero(label)
    assert set(z) == {1, 2} and y.min() >= 10 and y.max() <= 19 and x.min() >= 10 and x.max() <= 19
    assert abs(y.mean() - 14.5) < 0.6 and abs(x.mean() - 14.5) < 0.6  # centred: no shift on the way back
    record = json.loads((tmp_path / "seg.json").read_text())
    assert record["classes"] == {"1": "liver"} and record["weights"]["sha256"].startswith("79d8c9dc")
    assert record["prompts"]["entries"][0]["axial_planes"] == [1, 2] and record["threshold"] == 0.5
    assert record["checkpoint"] is None and record["modality"] == "ct"


def _voxel_prompts(path: Path, *entries: dict, frame: str = "voxel") -> Path:
    path.write_text(json.dumps({"frame": frame, "prompts": list(entries)}), encoding="utf-8")
    return path


def bad_cases(tmp: Path, scan: Path, unet: Path) -> dict[str, tuple[list[str], str]]:
    """{case: (command line after ``predict``, text its one error line holds)}."""
    out = str(tmp / "out" / "seg.nii.gz")
    lite = [str(scan), out, "--method", "medsam_lite", "--prompts"]
    series = tmp / "two_series"
    volume = sitk.GetImageFromArray(ct_phantom((2, 16, 16)))
    series.mkdir()
    for uid in ("1.2.3.4", "1.2.3.5"):
        for file in write_dicom_series(volume, tmp / uid, series_uid=uid).iterdir():
            file.rename(series / f"{uid}_{file.name}")
    p = tmp / "prompts"
    p.mkdir()
    return {
        "box-outside": (
            [*lite, str(_voxel_prompts(p / "a.json", {"class": 1, "box": [0, 0, 0, 45, 5, 2]}))],
            "a.json: entry 1: box",
        ),
        "empty-box": (
            [*lite, str(_voxel_prompts(p / "b.json", {"class": 1, "box": [1.2, 1, 1, 1.4, 5, 2]}))],
            "b.json: entry 1: empty box",
        ),
        "inverted-box": (
            [*lite, str(_voxel_prompts(p / "c.json", {"class": 1, "box": [9, 1, 1, 4, 5, 2]}))],
            "c.json: entry 1: inverted box",
        ),
        "unknown-class": (
            [*lite, str(_voxel_prompts(p / "d.json", {"class": "brain", "box": [1, 1, 1, 4, 5, 2]}))],
            "d.json: entry 1: unknown class 'brain'",
        ),
        "unknown-frame": (
            [*lite, str(_voxel_prompts(p / "e.json", {"class": 1, "point": [1, 1, 1]}, frame="mm"))],
            "e.json: unknown frame 'mm'",
        ),
        "malformed": ([*lite, str(p / "f.json")], "f.json: malformed prompt file"),
        "missing-input": (
            [str(tmp / "nope.nii.gz"), out, "--method", "unet", "--model", str(unet)],
            "nope.nii.gz: file not found",
        ),
        "two-series": ([str(series), out, "--method", "unet", "--model", str(unet)], "holds 2 DICOM series"),
        "no-prompts": ([str(scan), out, "--method", "medsam_lite"], "method 'medsam_lite' is promptable"),
        "prompts-for-unet": (
            [str(scan), out, "--method", "unet", "--model", str(unet), "--prompts", str(p / "a.json")],
            "method 'unet' is prompt-free",
        ),
        "model-for-zero-shot": ([*lite, str(p / "a.json"), "--model", str(unet)], "medsam_lite' is zero-shot"),
        "no-checkpoint": (
            [str(scan), out, "--method", "ft_decoder", "--prompts", str(p / "a.json")],
            "models/ft_decoder/checkpoint.pt: no checkpoint",
        ),
        "other-method-checkpoint": (
            [
                str(scan),
                out,
                "--method",
                "ft_decoder",
                "--model",
                str(unet),
                "--prompts",
                str(_voxel_prompts(p / "g.json", {"class": 1, "point": [3, 3, 1]})),
            ],
            "keys do not fit method 'ft_decoder'",
        ),
        "output-is-input": ([str(scan), str(scan), "--method", "unet", "--model", str(unet)], "overwrite the input"),
    }


CASES = [
    "box-outside",
    "empty-box",
    "inverted-box",
    "unknown-class",
    "unknown-frame",
    "malformed",
    "missing-input",
    "two-series",
    "no-prompts",
    "prompts-for-unet",
    "model-for-zero-shot",
    "no-checkpoint",
    "other-method-checkpoint",
    "output-is-input",
]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_input_writes_nothing_and_says_why_in_one_line(
    tmp_path: Path, small_ct: Path, unet_checkpoint: Path, capsys, monkeypatch, case: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no results/ folder here: trained methods find no workflow checkpoint
    args, expected = bad_cases(tmp_path, small_ct, unet_checkpoint)[case]
    (tmp_path / "prompts" / "f.json").write_text('{"frame": "voxel", "prompts": [', encoding="utf-8")
    before = sorted(p for p in tmp_path.rglob("*") if "prompts" not in p.parts)
    assert main(["predict", *args]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("segsam: ")]
    assert len(errors) == 1 and expected in errors[0], errors
    assert sorted(p for p in tmp_path.rglob("*") if "prompts" not in p.parts) == before  # nothing written
    assert small_ct.is_file()


def test_pg_sam_labels_every_plane_from_its_text_priors(
    tmp_path: Path, small_ct: Path, default_config: dict[str, Any]
) -> None:
    """PG-SAM takes no prompts: its frozen encoder's embedding and the class text priors label each plane."""
    torch.manual_seed(0)
    model = method_model("pg_sam", default_config, 384)
    checkpoint = tmp_path / "pg_sam.pt"
    torch.save(trained_state(model), checkpoint)
    vocabulary = Vocabulary.from_config(default_config)
    text = tmp_path / "class_embeddings.parquet"
    pd.DataFrame(
        {
            "class_id": vocabulary.ids,
            "name": vocabulary.names,
            "model": "test",
            "dim": 384,
            "vector": [np.random.default_rng(k).normal(size=384).astype(np.float32).tolist() for k in vocabulary.ids],
        }
    ).to_parquet(text)
    out = tmp_path / "seg.nii.gz"
    args = ["predict", str(small_ct), str(out), "--method", "pg_sam", "--model", str(checkpoint)]
    assert main([*args, "--prompt-free", "--text", str(text)]) == 0
    label, image = sitk.ReadImage(str(out)), sitk.ReadImage(str(small_ct))
    assert label.GetSize() == image.GetSize() and label.GetOrigin() == image.GetOrigin()
    assert json.loads((tmp_path / "seg.json").read_text())["method"] == "pg_sam"
    assert main([*args, "--prompts", str(tmp_path / "p.json")]) == 1  # it takes no prompts

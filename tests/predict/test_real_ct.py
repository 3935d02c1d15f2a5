"""Zero-shot LiteMedSAM on the real TotalSegmentator CT, stored with a flipped y axis and 6 mm planes.

The output must lie on the input's own grid (size, spacing, origin, direction), and
the organs boxed plane by plane must come back with a 3D DSC of at least 0.85.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segsam.cli import main
from segsam.data.vocabulary import Vocabulary
from tests.predict.realct import ORGANS, dice, plane_boxes, volume_boxes, write_case, write_prompts

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def case(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, vocabulary_csv: Path, labelmaps_dir: Path):
    """(flipped CT path, its label in the file's array order, the vocabulary)."""
    folder = tmp_path_factory.mktemp("realct")
    path, label = write_case(shared_data, folder, vocabulary_csv, labelmaps_dir / "totalseg_total.json")
    return path, label, Vocabulary.read(vocabulary_csv)


def test_boxed_organs_come_back_on_the_input_grid(case, tmp_path: Path) -> None:
    path, label, vocabulary = case
    assert label.shape == (56, 101, 122)
    # every other plane of each organ (half the encoder passes); the 3D DSC is scored on those planes
    entries = [e for e in plane_boxes(label, vocabulary) if int(e["box"][2]) % 2 == 0]
    prompts = write_prompts(tmp_path / "planes.json", entries)
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", str(path), str(out), "--method", "medsam_lite", "--prompts", str(prompts)]) == 0
    seg, image = sitk.ReadImage(str(out)), sitk.ReadImage(str(path))
    assert seg.GetSize() == image.GetSize() == (122, 101, 56)
    assert seg.GetSpacing() == image.GetSpacing() and seg.GetOrigin() == image.GetOrigin()
    assert seg.GetDirection() == image.GetDirection() == (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    predicted = sitk.GetArrayFromImage(seg)
    planes = sorted({int(e["box"][2]) for e in entries})
    assert not np.delete(predicted, planes, axis=0).any()
    scores = {
        name: dice(predicted[planes] == vocabulary.id_of(name), label[planes] == vocabulary.id_of(name))
        for name in ORGANS
    }
    assert min(scores.values()) >= 0.85, scores
    record = json.loads((tmp_path / "seg.json").read_text())
    assert set(record["classes"].values()) == set(ORGANS)


@pytest.mark.slow
def test_one_box_per_organ_with_and_without_refinement(case, tmp_path: Path) -> None:
    """Reports (does not assert) the 3D DSC of one 3D box per organ, with and without --refine-boxes."""
    path, label, vocabulary = case
    prompts = write_prompts(tmp_path / "boxes.json", volume_boxes(label, vocabulary))
    for flags in ([], ["--refine-boxes"]):
        out = tmp_path / f"seg{len(flags)}.nii.gz"
        assert main(["predict", str(path), str(out), "--method", "medsam_lite", "--prompts", str(prompts), *flags]) == 0
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
        scores = {n: round(dice(predicted == vocabulary.id_of(n), label == vocabulary.id_of(n)), 3) for n in ORGANS}
        print(f"one 3D box per organ{' ' + flags[0] if flags else ''}: 3D DSC {scores}")

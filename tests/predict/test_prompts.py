"""Prompt files: formats, frames, and every way a prompt can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segsam.data.vocabulary import Vocabulary
from segsam.predict.prompts import PlacedBox, PlacedPoint, PromptError, place_prompts, read_prompt_file
from segsam.predict.volume import Grid


@pytest.fixture(scope="module")
def vocabulary(vocabulary_csv: Path) -> Vocabulary:
    return Vocabulary.read(vocabulary_csv)


def grids(direction: tuple[float, ...]) -> tuple[Grid, Grid, sitk.Image]:
    """(input grid, LPS grid, input image) of a 40 x 30 x 12 volume, 1.5 x 1.2 x 4 mm, with ``direction``."""
    image = sitk.Image(40, 30, 12, sitk.sitkInt16)
    image.SetSpacing((1.5, 1.2, 4.0))
    image.SetOrigin((10.0, -5.0, 2.0))
    image.SetDirection(direction)
    return Grid.of(image), Grid.of(sitk.DICOMOrient(image, "LPS")), image


def write_json(path: Path, frame: str, prompts: list) -> Path:
    path.write_text(json.dumps({"frame": frame, "prompts": prompts}), encoding="utf-8")
    return path


def test_json_and_csv_name_the_same_prompts(tmp_path: Path, vocabulary: Vocabulary) -> None:
    as_json = write_json(
        tmp_path / "p.json", "voxel", [{"class": "liver", "box": [1, 2, 3, 4, 5, 6]}, {"class": 2, "point": [7, 8, 9]}]
    )
    as_csv = tmp_path / "p.csv"
    as_csv.write_text(
        "class,frame,prompt,x0,y0,z0,x1,y1,z1\nliver,voxel,box,1,2,3,4,5,6\n2,voxel,point,7,8,9,,,\n", encoding="utf-8"
    )
    first, second = read_prompt_file(as_json, vocabulary), read_prompt_file(as_csv, vocabulary)
    assert [(e.class_id, e.kind, e.frame, e.coords) for e in first.entries] == [
        (e.class_id, e.kind, e.frame, e.coords) for e in second.entries
    ]
    assert first.entries[0].class_id == vocabulary.id_of("liver") and first.entries[1].class_id == 2
    assert [e.where for e in second.entries] == ["line 2", "line 3"]


@pytest.mark.parametrize(
    "direction",
    [(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)],
    ids=["flipped-y", "permuted"],
)
def test_voxel_lps_and_ras_frames_give_the_same_planes(
    tmp_path: Path, vocabulary: Vocabulary, direction: tuple[float, ...]
) -> None:
    original, lps, image = grids(direction)
    low, high, point = (3, 4, 2), (20, 25, 9), (11, 12, 5)
    world = {
        name: np.array(image.TransformContinuousIndexToPhysicalPoint(v))
        for name, v in (("low", low), ("high", high), ("point", point))
    }

    def lps_and_ras(frame: str) -> list[dict]:
        sign = np.array([-1.0, -1.0, 1.0]) if frame == "ras" else np.ones(3)
        lo, hi = world["low"] * sign, world["high"] * sign
        return [
            {"class": "liver", "box": [*np.minimum(lo, hi), *np.maximum(lo, hi)]},
            {"class": "spleen", "point": list(world["point"] * sign)},
        ]

    files = {
        "voxel": write_json(
            tmp_path / "voxel.json",
            "voxel",
            [{"class": "liver", "box": [*low, *high]}, {"class": "spleen", "point": point}],
        ),
        "lps": write_json(tmp_path / "lps.json", "lps", lps_and_ras("lps")),
        "ras": write_json(tmp_path / "ras.json", "ras", lps_and_ras("ras")),
    }
    placed = {frame: place_prompts(read_prompt_file(f, vocabulary), original, lps) for frame, f in files.items()}
    keys = {
        frame: [
            (p.x0, p.y0, p.x1, p.y1, p.z0, p.z1) if isinstance(p, PlacedBox) else (round(p.x, 6), round(p.y, 6), p.z)
            for p in boxes
        ]
        for frame, boxes in placed.items()
    }
    assert keys["voxel"] == keys["lps"] == keys["ras"]
    box, spot = placed["voxel"]
    assert isinstance(box, PlacedBox) and isinstance(spot, PlacedPoint)
    # the box holds exactly the voxels between its corners, on the LPS grid
    lps_corners = np.array([lps.to_index(original.to_physical(np.array([c])))[0] for c in (low, high)])
    assert (box.x0, box.y0, box.z0) == tuple(int(round(v)) for v in lps_corners.min(0))
    assert (box.x1, box.y1, box.z1) == tuple(int(round(v)) for v in lps_corners.max(0))


def test_a_world_box_spans_the_planes_whose_centres_it_holds(tmp_path: Path, vocabulary: Vocabulary) -> None:
    original, lps, image = grids((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    # z from plane 2's centre + 1 mm to plane 5's centre + 1 mm: planes 3, 4, 5
    z0, z1 = 2.0 + 4.0 * 2 + 1.0, 2.0 + 4.0 * 5 + 1.0
    path = write_json(tmp_path / "p.json", "lps", [{"class": "liver", "box": [12.0, -3.0, z0, 30.0, 10.0, z1]}])
    (box,) = place_prompts(read_prompt_file(path, vocabulary), original, lps)
    assert (box.z0, box.z1) == (3, 5)
    assert (box.x0, box.x1) == (2, 13)  # centres 10 + 1.5 i within [12, 30]


BAD_FILES = {
    "unknown-class": (
        "p.json",
        {"frame": "voxel", "prompts": [{"class": "brain", "box": [1, 1, 1, 2, 2, 2]}]},
        "entry 1: unknown class 'brain'",
    ),
    "unknown-class-id": (
        "p.json",
        {"frame": "voxel", "prompts": [{"class": 999, "point": [1, 1, 1]}]},
        "entry 1: unknown class 999",
    ),
    "unknown-frame": ("p.json", {"frame": "ijk", "prompts": [{"class": 1, "point": [1, 1, 1]}]}, "unknown frame 'ijk'"),
    "no-frame": ("p.json", {"prompts": [{"class": 1, "point": [1, 1, 1]}]}, "malformed prompt file"),
    "inverted": (
        "p.json",
        {"frame": "voxel", "prompts": [{"class": 1, "point": [1, 1, 1]}, {"class": 1, "box": [5, 1, 1, 2, 2, 2]}]},
        "entry 2: inverted box",
    ),
    "too-few-numbers": (
        "p.json",
        {"frame": "voxel", "prompts": [{"class": 1, "box": [1, 1, 2, 2]}]},
        "entry 1: a box takes 6 numbers",
    ),
    "not-a-number": (
        "p.json",
        {"frame": "voxel", "prompts": [{"class": 1, "point": [1, "a", 1]}]},
        "entry 1: a point takes 3 finite numbers",
    ),
    "two-kinds": (
        "p.json",
        {"frame": "voxel", "prompts": [{"class": 1, "point": [1, 1, 1], "box": [1, 1, 1, 2, 2, 2]}]},
        "entry 1: malformed entry",
    ),
    "empty": ("p.json", {"frame": "voxel", "prompts": []}, "holds no prompt"),
    "bad-json": ("p.json", "{frame: voxel", "not readable JSON"),
    "csv-header": ("p.csv", "class,box\nliver,1\n", "line 1: malformed header"),
    "csv-kind": (
        "p.csv",
        "class,frame,prompt,x0,y0,z0,x1,y1,z1\nliver,voxel,circle,1,1,1,2,2,2\n",
        "line 2: unknown prompt 'circle'",
    ),
    "csv-frame": (
        "p.csv",
        "class,frame,prompt,x0,y0,z0,x1,y1,z1\nliver,mni,box,1,1,1,2,2,2\n",
        "line 2: unknown frame 'mni'",
    ),
    "csv-point-with-corner": (
        "p.csv",
        "class,frame,prompt,x0,y0,z0,x1,y1,z1\nliver,voxel,point,1,1,1,2,,\n",
        "line 2: a point takes x0, y0, z0 only",
    ),
    "wrong-suffix": ("p.txt", "liver 1 2 3", "unknown prompt file type '.txt'"),
}


@pytest.mark.parametrize("case", list(BAD_FILES), ids=list(BAD_FILES))
def test_a_bad_prompt_file_is_one_line_naming_file_and_entry(tmp_path: Path, vocabulary: Vocabulary, case: str) -> None:
    name, content, expected = BAD_FILES[case]
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    with pytest.raises(PromptError) as info:
        read_prompt_file(path, vocabulary)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


BAD_PLACES = {
    "box-outside": ({"class": 1, "box": [0, 0, 0, 40, 10, 3]}, "entry 1: box", "reaches outside the volume"),
    "box-below-zero": ({"class": 1, "box": [-2, 0, 0, 4, 10, 3]}, "entry 1: box", "reaches outside the volume"),
    "point-outside": ({"class": 1, "point": [5, 5, 12]}, "entry 1: point", "lies outside the volume"),
    "empty-box": ({"class": 1, "box": [3.2, 1, 1, 3.7, 9, 2]}, "entry 1: empty box", "no voxel centre along LPS x"),
}


@pytest.mark.parametrize("case", list(BAD_PLACES), ids=list(BAD_PLACES))
def test_a_prompt_that_does_not_fit_the_scan_is_one_line(tmp_path: Path, vocabulary: Vocabulary, case: str) -> None:
    entry, where, expected = BAD_PLACES[case]
    original, lps, _ = grids((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    path = write_json(tmp_path / "p.json", "voxel", [entry])
    with pytest.raises(PromptError) as info:
        place_prompts(read_prompt_file(path, vocabulary), original, lps)
    message = str(info.value)
    assert message.startswith(f"{path}: {where}") and expected in message and "\n" not in message

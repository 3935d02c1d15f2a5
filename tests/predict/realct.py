"""The real TotalSegmentator CT rewritten with a flipped y axis and 6 mm planes, and prompts from its label.

The flipped copy covers the same physical grid (the array is flipped along y and
the origin moved to the other end), so it is another voxel order of the same
scan; taking every other axial plane makes it anisotropic (3 x 3 x 6 mm) and
halves the planes to encode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segsam.data.prompts import mask_box
from segsam.data.vocabulary import LabelMap, Vocabulary

#: Organs scored (vocabulary names).
ORGANS = ("liver", "spleen", "kidney_left", "kidney_right")


def flip_y_and_thin(image: sitk.Image) -> sitk.Image:
    """The same physical grid with y flipped (origin at the other end), then every other axial plane."""
    array = sitk.GetArrayFromImage(image)[:, ::-1, :]
    origin = image.TransformIndexToPhysicalPoint((0, image.GetSize()[1] - 1, 0))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    direction[:, 1] *= -1
    thinned = sitk.GetImageFromArray(np.ascontiguousarray(array[::2]))
    spacing = image.GetSpacing()
    thinned.SetSpacing((spacing[0], spacing[1], spacing[2] * 2))
    thinned.SetOrigin(origin)
    thinned.SetDirection(tuple(float(v) for v in direction.ravel()))
    return thinned


def write_case(data: Path, folder: Path, vocabulary_csv: Path, labelmap_json: Path) -> tuple[Path, np.ndarray]:
    """Write the flipped, thinned CT; return its path and its label (vocabulary ids) in the file's array order."""
    source = data / "totalsegmentator"
    image = flip_y_and_thin(sitk.ReadImage(str(source / "example_ct.nii.gz")))
    label = flip_y_and_thin(sitk.ReadImage(str(source / "example_seg_fast_force_split.nii.gz")))
    vocabulary = Vocabulary.read(vocabulary_csv)
    values = sitk.GetArrayFromImage(label)
    lut = LabelMap.read(labelmap_json, vocabulary).lookup_table(np.unique(values), where="label")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ct_flipped.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, lut[values]


def plane_boxes(label: np.ndarray, vocabulary: Vocabulary) -> list[dict]:
    """One box per (organ, axial plane) in the file's voxel frame: the plane's tight box, z0 = z1."""
    entries = []
    for name in ORGANS:
        mask = label == vocabulary.id_of(name)
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            x0, y0, x1, y1 = (float(v) for v in mask_box(mask[k]))
            entries.append({"class": name, "box": [x0, y0, float(k), x1, y1, float(k)]})
    return entries


def volume_boxes(label: np.ndarray, vocabulary: Vocabulary) -> list[dict]:
    """One 3D box per organ in the file's voxel frame: the tight box of its voxels."""
    entries = []
    for name in ORGANS:
        z, y, x = np.nonzero(label == vocabulary.id_of(name))
        entries.append(
            {"class": name, "box": [float(v) for v in (x.min(), y.min(), z.min(), x.max(), y.max(), z.max())]}
        )
    return entries


def write_prompts(path: Path, entries: list[dict], frame: str = "voxel") -> Path:
    path.write_text(json.dumps({"frame": frame, "prompts": entries}), encoding="utf-8")
    return path


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """3D DSC of two boolean volumes."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total

"""Helpers several test modules import (fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from segsam.data.vocabulary import Vocabulary
from segsam.methods import get_method
from segsam.models.method_model import build_method_model
from segsam.models.segsam_net import PromptableModel


def method_model(name: str, config: dict[str, Any], text_dim: int | None = None) -> PromptableModel:
    """The model of a registry method as training and evaluation build it (pretrained weights loaded)."""
    return build_method_model(get_method(name), config, len(Vocabulary.read(config["vocabulary"])), text_dim)


def write_dicom_series(
    volume: sitk.Image, folder: Path, *, modality: str = "CT", series_uid: str | None = None
) -> Path:
    """Write a 3D volume as a DICOM series (one file per axial slice) that SimpleITK / GDCM read back.

    Each slice carries its position and the volume's orientation (DICOM's LPS
    frame), so the series describes the same grid as ``volume``. Pixel values
    are written as int16 (CT numbers).
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or "1.2.826.0.1.3680043.2.1125." + str(
        int(hashlib.sha256(str(folder).encode()).hexdigest()[:10], 16)
    )
    direction = volume.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (*direction[0:7:3], *direction[1:8:3]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    cast = sitk.Cast(volume, sitk.sitkInt16)
    for k in range(volume.GetDepth()):
        plane = cast[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT image storage
            "0008|0018": f"{uid}.{k + 1}",
            "0020|000d": f"{uid}.0",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": orientation,
            "0018|0050": f"{volume.GetSpacing()[2]:.6f}",
            "0028|0030": f"{volume.GetSpacing()[1]:.6f}\\{volume.GetSpacing()[0]:.6f}",
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:04d}.dcm"))
        writer.Execute(plane)
    return folder


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a 2D array as an 8-bit PNG (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def write_sa_med2d_release(
    root: Path, cases: dict[str, str], *, slices: tuple[int, ...] = (3, 7), shape: tuple[int, int] = (20, 30)
) -> Path:
    """A small SA-Med2D-16M-style release at ``root`` (the ``SAMed2Dv1`` folder): release naming,
    ``SAMed2D_v1.json`` (image -> masks, no split) and the class-mapping json.

    Args:
        root: The release folder.
        cases: ``{case: modality prefix}`` (``ct_00``, ``mr_t2``, ...).
        slices: The slice numbers of each case.
        shape: (height, width) of every slice; each has a liver mask (class 0, a square in the top-left
            corner) and a small left-kidney mask (class 1) below it.
    """
    height, width = shape
    image_to_masks: dict[str, list[str]] = {}
    for case, prefix in cases.items():
        for k in slices:
            stem = f"{prefix}--SynthSet--{case}--z_{k:04d}"
            image = np.full(shape, 100)
            image[: height // 2, : height // 2] = 180
            write_png(root / "images" / f"{stem}.png", image)
            masks = []
            areas = (
                (slice(0, height // 2), slice(0, height // 2)),
                (slice(height * 3 // 5, height * 7 // 10), slice(0, 3)),
            )
            for index, area in enumerate(areas):
                mask = np.zeros(shape)
                mask[area] = 255
                name = f"masks/{stem}--{index:04d}_000.png"
                write_png(root / name, mask)
                masks.append(f"SAMed2Dv1/{name}")
            image_to_masks[f"SAMed2Dv1/images/{stem}.png"] = masks
    (root / "SAMed2D_v1.json").write_text(json.dumps(image_to_masks))
    (root / "SAMed2D_v1_class_mapping_id.json").write_text(json.dumps({"SynthSet": {"liver": 0, "Left Kidney": 1}}))
    return root

"""Slice and mask file names (SA-Med2D-16M convention, docs/data.md#names). Written down once.

Image: ``<modality>--<dataset>--<case>--<axis>_<slice:04d>.png``
Mask:  ``<image stem>--<class id:04d>_<instance:03d>.png``

``axis`` is the axis held fixed by the slice in the canonical LPS orientation:
``x`` = sagittal, ``y`` = coronal, ``z`` = axial. ``instance`` numbers the
connected components of one class in one slice, largest first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AXES = ("x", "y", "z")
_FIELD = r"[A-Za-z0-9_.]+"
_IMAGE_RE = re.compile(
    rf"^(?P<modality>{_FIELD})--(?P<dataset>{_FIELD})--(?P<case>{_FIELD})--(?P<axis>[xyz])_(?P<slice>\d{{4}})$"
)
_MASK_RE = re.compile(r"^(?P<image>.+)--(?P<class_id>\d{4})_(?P<instance>\d{3})$")


@dataclass(frozen=True)
class SliceName:
    """The parts of a slice name."""

    modality: str
    dataset: str
    case: str
    axis: str
    slice: int

    def __post_init__(self) -> None:
        for field in ("modality", "dataset", "case"):
            value = getattr(self, field)
            if not re.fullmatch(_FIELD, value):
                raise ValueError(f"{field} {value!r} may hold only letters, digits, '_' and '.'")
        if self.axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}, got {self.axis!r}")
        if not 0 <= self.slice <= 9999:
            raise ValueError(f"slice index must be in 0..9999, got {self.slice}")

    @property
    def stem(self) -> str:
        return f"{self.modality}--{self.dataset}--{self.case}--{self.axis}_{self.slice:04d}"

    @property
    def image_file(self) -> str:
        return f"{self.stem}.png"

    def mask_file(self, class_id: int, instance: int) -> str:
        if not 0 <= class_id <= 9999 or not 0 <= instance <= 999:
            raise ValueError(f"class id {class_id} or instance {instance} out of range")
        return f"{self.stem}--{class_id:04d}_{instance:03d}.png"

    @classmethod
    def parse(cls, stem: str) -> SliceName:
        """Parse an image stem (file name without ``.png``)."""
        match = _IMAGE_RE.match(stem)
        if match is None:
            raise ValueError(
                f"{stem!r} is not an SA-Med2D image name <modality>--<dataset>--<case>--<axis>_<slice:04d>"
            )
        parts = match.groupdict()
        return cls(parts["modality"], parts["dataset"], parts["case"], parts["axis"], int(parts["slice"]))


def parse_mask_stem(stem: str) -> tuple[SliceName, int, int]:
    """Parse a mask stem into (image name, class id, instance)."""
    match = _MASK_RE.match(stem)
    if match is None:
        raise ValueError(f"{stem!r} is not an SA-Med2D mask name <image stem>--<class id:04d>_<instance:03d>")
    return SliceName.parse(match["image"]), int(match["class_id"]), int(match["instance"])

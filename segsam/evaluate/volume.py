"""Per-case 3D metrics, from the axial planes of each case (the 3D view of an evaluation).

The slice stage keeps every ``slicing.stride.z``-th axial plane of a case's isotropic
volume (``cross.stride`` for a cross dataset). For one (prompt type, case, class), the
union of the class's predicted masks on each of those planes, and the union of its
ground-truth masks, are stacked into two volumes whose plane spacing is the sampling step
(the greatest common divisor of the case's plane indices' differences) times the pixel
side. Planes of the case between its first and last test plane that hold no object of
the class are empty in both volumes. Then, per (prompt type, case, class):

* ``dsc_3d``: the volumes' DSC;
* ``hd95_3d_mm``: the symmetric 95th-percentile Hausdorff distance between the two
  volumes' surfaces, in mm (MONAI ``compute_hausdorff_distance`` with the anisotropic
  spacing). An empty prediction scores the volume's diagonal in mm, as in 2D. Unknown
  pixel spacing gives NaN.

These are 3D metrics of what the workflow evaluates: objects that the small-mask filter
dropped, and the planes it did not sample, are in neither volume. With ``stride.z`` = 1
every axial plane is evaluated.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_hausdorff_distance

from segsam.evaluate.metrics import dice_scores

#: The axis whose planes are stacked (axial, docs/data.md#orientation).
AXIS = "z"
PER_CASE_COLUMNS = [
    "method",
    "prompt",
    "case",
    "modality",
    "class_id",
    "class_name",
    "n_planes",
    "dsc_3d",
    "hd95_3d_mm",
]


def hd95_3d_mm(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """HD95 of two volumes, in mm (rules in the module docstring).

    Args:
        pred: D x H x W bool prediction.
        truth: D x H x W bool ground truth, not empty.
        spacing: Voxel sides (plane step, row, column) in mm; NaN: unknown.

    Returns:
        The distance in mm (NaN when the spacing is unknown).

    Raises:
        ValueError: Shapes differ, or the ground truth is empty.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    if not truth.any():
        raise ValueError("HD95 needs a non-empty ground truth")
    if not all(math.isfinite(s) for s in spacing):
        return float("nan")
    if not pred.any():
        return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))
    both = pred | truth
    window = []
    for axis in range(3):  # crop to the joint box, one voxel of background around it
        present = np.flatnonzero(both.any(axis=tuple(a for a in range(3) if a != axis)))
        window.append(slice(max(present[0] - 1, 0), present[-1] + 2))
    distance = compute_hausdorff_distance(
        torch.from_numpy(pred[tuple(window)][None, None]).float(),
        torch.from_numpy(truth[tuple(window)][None, None]).float(),
        include_background=True,
        percentile=95,
        spacing=[list(map(float, spacing))],
    )
    return float(distance[0, 0])


class CaseVolumes:
    """Collects, for one method, the axial-plane masks of each (prompt type, case, class) and scores them per case.

    Add the planes of one case together, then call :meth:`finish` before the next case:
    memory holds one case's planes at a time.

    Example::

        volumes = CaseVolumes("segsam")
        volumes.add("box", "case_1", "ct", 40, 3, "kidney", 0.8, pred_plane, truth_plane)
        volumes.finish(keep="case_2")   # scores case_1 (every case but case_2)
        per_case = volumes.table()      # scores what is left
    """

    def __init__(self, method: str) -> None:
        self.method = method
        # (prompt, case) -> {class_id: {plane: [pred union, truth union]}}
        self._planes: dict[tuple[str, str], dict[int, dict[int, list[np.ndarray]]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        self._meta: dict[tuple[str, str], tuple[str, float, set[int]]] = {}
        self._names: dict[int, str] = {}
        self._rows: list[dict] = []
        self._done: set[str] = set()

    def add(
        self,
        prompt: str,
        case: str,
        modality: str,
        plane: int,
        class_id: int,
        class_name: str,
        spacing_mm: float,
        pred: np.ndarray,
        truth: np.ndarray,
    ) -> None:
        """Add one object's prediction and ground truth on one axial plane (H x W bool each).

        Raises:
            ValueError: The case was scored already (:meth:`finish`).
        """
        if case in self._done:
            raise ValueError(f"case {case} was scored already: add the planes of one case together, then finish it")
        key = (prompt, case)
        self._meta.setdefault(key, (modality, float(spacing_mm), set()))[2].add(int(plane))
        self._names[int(class_id)] = class_name
        cell = self._planes[key][int(class_id)].get(int(plane))
        if cell is None:
            self._planes[key][int(class_id)][int(plane)] = [pred.astype(bool).copy(), truth.astype(bool).copy()]
        else:
            cell[0] |= pred.astype(bool)
            cell[1] |= truth.astype(bool)

    def finish(self, keep: str | None = None) -> None:
        """Score every case collected so far except ``keep``, and free its planes."""
        for key in sorted(k for k in self._planes if k[1] != keep):
            self._rows.extend(self._score(key, self._planes.pop(key)))
            self._done.add(key[1])

    def _score(self, key: tuple[str, str], classes: dict[int, dict[int, list[np.ndarray]]]) -> list[dict]:
        prompt, case = key
        modality, spacing, planes = self._meta.pop(key)
        ordered = sorted(planes)
        step = int(np.gcd.reduce(np.diff(ordered))) if len(ordered) > 1 else 1
        depth = (ordered[-1] - ordered[0]) // step + 1
        rows = []
        for class_id, by_plane in sorted(classes.items()):
            height, width = next(iter(by_plane.values()))[0].shape
            pred = np.zeros((depth, height, width), dtype=bool)
            truth = np.zeros_like(pred)
            for plane, (p, t) in by_plane.items():
                pred[(plane - ordered[0]) // step], truth[(plane - ordered[0]) // step] = p, t
            dsc = float(
                dice_scores(
                    torch.from_numpy(pred.reshape(1, depth * height, width)),
                    torch.from_numpy(truth.reshape(1, depth * height, width)),
                )[0]
            )
            rows.append(
                {
                    "method": self.method,
                    "prompt": prompt,
                    "case": case,
                    "modality": modality,
                    "class_id": class_id,
                    "class_name": self._names[class_id],
                    "n_planes": len(by_plane),
                    "dsc_3d": dsc,
                    "hd95_3d_mm": hd95_3d_mm(pred, truth, (step * spacing, spacing, spacing)),
                }
            )
        return rows

    def table(self) -> pd.DataFrame:
        """Scores what is left, then returns one row per (prompt type, case, class) (:data:`PER_CASE_COLUMNS`),
        sorted by prompt, case and class."""
        self.finish()
        table = pd.DataFrame(self._rows, columns=PER_CASE_COLUMNS)
        return table.sort_values(["prompt", "case", "class_id"], kind="stable").reset_index(drop=True)


def case_summary(per_case: Iterable[pd.DataFrame] | pd.DataFrame) -> pd.DataFrame:
    """Per (method, prompt): mean 3D DSC and median / mean 3D HD95 (mm) over (case, class) pairs.

    Returns:
        Columns method, prompt, dsc_3d (mean), hd95_3d_mm (median), hd95_3d_mm_mean, n (pairs).
    """
    frame = per_case if isinstance(per_case, pd.DataFrame) else pd.concat(list(per_case), ignore_index=True)
    if frame.empty:
        return pd.DataFrame(columns=["method", "prompt", "dsc_3d", "hd95_3d_mm", "hd95_3d_mm_mean", "n"])
    grouped = frame.groupby(["method", "prompt"], sort=False)
    return grouped.agg(
        dsc_3d=("dsc_3d", "mean"),
        hd95_3d_mm=("hd95_3d_mm", "median"),
        hd95_3d_mm_mean=("hd95_3d_mm", "mean"),
        n=("dsc_3d", "size"),
    ).reset_index()

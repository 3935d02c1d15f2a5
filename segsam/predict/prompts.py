"""The prompt file of a scan, and its placement on the scan's axial planes.

A prompt file gives boxes and points per class, the class by vocabulary name or
id, in one coordinate frame stated in the file:

* ``voxel``: voxel indices (x, y, z) = (i, j, k) of the input file as SimpleITK
  and ITK-SNAP number them (i fastest), a voxel's index being its centre;
* ``lps`` / ``ras``: world millimetres in DICOM's LPS frame, or in the RAS frame
  of NIfTI tools (x and y negated).

JSON::

    {"frame": "voxel",
     "prompts": [{"class": "liver", "box": [x0, y0, z0, x1, y1, z1]},
                 {"class": 2, "point": [x, y, z]}]}

CSV (header first; a point leaves ``x1, y1, z1`` empty)::

    class,frame,prompt,x0,y0,z0,x1,y1,z1
    liver,voxel,box,30,40,20,80,90,35
    spleen,ras,point,-60.5,20.0,110.0,,,

A box spans the axial planes (z planes of the LPS-reoriented volume) whose centres
it holds, and becomes one 2D box per plane: the extent of the voxel centres it
holds, inclusive (as the training prompts' tight boxes). A point prompts the plane
nearest to it. Every problem is a one-line :class:`PromptError` naming the file
and the entry (``entry 3`` of a JSON file, ``line 4`` of a CSV file).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segsam.data.vocabulary import Vocabulary
from segsam.errors import DataError
from segsam.predict.volume import Grid

__all__ = [
    "CSV_COLUMNS",
    "FRAMES",
    "PlacedBox",
    "PlacedPoint",
    "PromptEntry",
    "PromptError",
    "PromptFile",
    "place_prompts",
    "read_prompt_file",
]

#: Coordinate frames a prompt file may state.
FRAMES = ("voxel", "lps", "ras")
#: Prompt kinds and how many coordinates each takes.
KINDS = {"box": 6, "point": 3}
#: Columns of a CSV prompt file.
CSV_COLUMNS = ("class", "frame", "prompt", "x0", "y0", "z0", "x1", "y1", "z1")
#: How far (in voxels) a coordinate may lie beyond the outer voxel faces, for rounding in world frames.
TOLERANCE = 1e-3


class PromptError(DataError):
    """A prompt file is malformed, or one of its prompts does not fit the scan."""


@dataclass(frozen=True)
class PromptEntry:
    """One prompt as the file gives it.

    Attributes:
        where: The entry in messages: ``entry 3`` (JSON, from 1) or ``line 4`` (CSV).
        class_id: Vocabulary class id.
        kind: ``"box"`` or ``"point"``.
        frame: ``"voxel"``, ``"lps"`` or ``"ras"``.
        coords: (x0, y0, z0, x1, y1, z1) for a box, (x, y, z) for a point.
    """

    where: str
    class_id: int
    kind: str
    frame: str
    coords: tuple[float, ...]


@dataclass(frozen=True)
class PromptFile:
    """A parsed prompt file.

    Attributes:
        path: The file.
        entries: Its prompts, in file order.
    """

    path: Path
    entries: tuple[PromptEntry, ...]


@dataclass(frozen=True)
class PlacedBox:
    """A box on the scan's LPS grid.

    Attributes:
        entry: The file's entry.
        x0: First column (LPS voxel index x) of the voxel centres it holds.
        y0: First row (LPS voxel index y).
        x1: Last column, inclusive.
        y1: Last row, inclusive.
        z0: First axial plane it spans.
        z1: Last axial plane, inclusive.
    """

    entry: PromptEntry
    x0: int
    y0: int
    x1: int
    y1: int
    z0: int
    z1: int

    @property
    def planes(self) -> range:
        """The axial planes the box spans."""
        return range(self.z0, self.z1 + 1)

    @property
    def middle(self) -> int:
        """The middle plane, where box refinement starts."""
        return (self.z0 + self.z1) // 2

    @property
    def box(self) -> np.ndarray:
        """(x0, y0, x1, y1) as float32, LPS voxel indices of one plane."""
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float32)


@dataclass(frozen=True)
class PlacedPoint:
    """A point on the scan's LPS grid.

    Attributes:
        entry: The file's entry.
        x: Column (continuous LPS voxel index x).
        y: Row (continuous LPS voxel index y).
        z: The axial plane nearest to it.
    """

    entry: PromptEntry
    x: float
    y: float
    z: int


def _fail(path: Path, where: str | None, problem: str) -> PromptError:
    return PromptError(f"{path}: {where + ': ' if where else ''}{problem}")


def _class_id(value: Any, vocabulary: Vocabulary, path: Path, where: str) -> int:
    """A class named by vocabulary name or id (an int, or a string of digits)."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise _fail(path, where, f"no class (give a vocabulary name or id), got {value!r}")
    text = str(value).strip()
    if isinstance(value, int) or text.isdigit():
        if int(text) in vocabulary.class_index:
            return int(text)
    elif text in vocabulary.names:
        return vocabulary.id_of(text)
    raise _fail(path, where, f"unknown class {value!r}: not a name or id of the vocabulary (config key vocabulary)")


def _frame(value: Any, path: Path, where: str | None) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _fail(path, where, f"no frame: state it ({', '.join(FRAMES)})")
    frame = str(value).strip().lower()
    if frame not in FRAMES:
        raise _fail(path, where, f"unknown frame {value!r}; use {', '.join(FRAMES)}")
    return frame


def _coords(values: Sequence[Any], kind: str, path: Path, where: str) -> tuple[float, ...]:
    """The coordinates of a prompt: finite numbers, as many as its kind takes, a box's corners not inverted."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != KINDS[kind]:
        raise _fail(path, where, f"a {kind} takes {KINDS[kind]} numbers, got {values!r}")
    try:
        numbers = tuple(float(v) for v in values if not isinstance(v, bool))
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != KINDS[kind] or not all(math.isfinite(v) for v in numbers):
        raise _fail(path, where, f"a {kind} takes {KINDS[kind]} finite numbers, got {list(values)!r}")
    if kind == "box":
        inverted = [axis for axis, lo, hi in zip("xyz", numbers[:3], numbers[3:]) if lo > hi]
        if inverted:
            raise _fail(path, where, f"inverted box {list(numbers)}: {', '.join(inverted)}0 > {', '.join(inverted)}1")
    return numbers


def _json_entries(path: Path, vocabulary: Vocabulary) -> list[PromptEntry]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fail(path, None, f"malformed prompt file, not readable JSON ({err})") from err
    if not isinstance(document, Mapping) or set(document) != {"frame", "prompts"}:
        keys = sorted(document) if isinstance(document, Mapping) else type(document).__name__
        raise _fail(path, None, f"malformed prompt file: expected an object with keys frame and prompts, got {keys}")
    frame = _frame(document["frame"], path, None)
    if not isinstance(document["prompts"], list):
        raise _fail(path, None, "malformed prompt file: prompts must be a list")
    entries = []
    for number, item in enumerate(document["prompts"], start=1):
        where = f"entry {number}"
        kinds = [kind for kind in KINDS if isinstance(item, Mapping) and kind in item]
        if not isinstance(item, Mapping) or len(kinds) != 1 or set(item) != {"class", kinds[0]}:
            raise _fail(path, where, f'malformed entry {item!r}: expected {{"class": ..., "box" or "point": [...]}}')
        kind = kinds[0]
        class_id = _class_id(item["class"], vocabulary, path, where)
        entries.append(PromptEntry(where, class_id, kind, frame, _coords(item[kind], kind, path, where)))
    return entries


def _csv_entries(path: Path, vocabulary: Vocabulary) -> list[PromptEntry]:
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise _fail(path, None, f"malformed prompt file, not readable CSV ({err})") from err
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if header != list(CSV_COLUMNS):
        raise _fail(path, "line 1", f"malformed header {rows[0] if rows else []}: expected {','.join(CSV_COLUMNS)}")
    entries = []
    for number, row in enumerate(rows[1:], start=2):
        where = f"line {number}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(CSV_COLUMNS):
            raise _fail(path, where, f"malformed row: {len(row)} cells for {len(CSV_COLUMNS)} columns")
        cells = dict(zip(CSV_COLUMNS, (cell.strip() for cell in row)))
        kind = cells["prompt"].lower()
        if kind not in KINDS:
            raise _fail(path, where, f"unknown prompt {cells['prompt']!r}; use box or point")
        numbers = [cells[c] for c in CSV_COLUMNS[3 : 3 + KINDS[kind]]]
        if kind == "point" and any(cells[c] for c in ("x1", "y1", "z1")):
            raise _fail(path, where, "a point takes x0, y0, z0 only: leave x1, y1, z1 empty")
        frame = _frame(cells["frame"], path, where)
        class_id = _class_id(cells["class"], vocabulary, path, where)
        entries.append(PromptEntry(where, class_id, kind, frame, _coords(numbers, kind, path, where)))
    return entries


def read_prompt_file(path: str | Path, vocabulary: Vocabulary) -> PromptFile:
    """Read and check a prompt file (``.json`` or ``.csv``; format in the module docstring).

    Args:
        path: The file.
        vocabulary: The global vocabulary (class names and ids).

    Returns:
        PromptFile: Its entries, with their classes as vocabulary ids.

    Raises:
        PromptError: A missing or malformed file, an unknown frame or class, a
            coordinate that is not a finite number, an inverted box, or no prompt
            at all (one line naming the file and the entry).
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(path, None, "prompt file not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        entries = _json_entries(path, vocabulary)
    elif suffix == ".csv":
        entries = _csv_entries(path, vocabulary)
    else:
        raise _fail(path, None, f"unknown prompt file type {suffix!r}; use .json or .csv")
    if not entries:
        raise _fail(path, None, "the file holds no prompt")
    return PromptFile(path, tuple(entries))


def _to_lps_index(points: np.ndarray, frame: str, original: Grid, lps: Grid) -> np.ndarray:
    """N x 3 coordinates in ``frame`` -> N x 3 continuous voxel indices (x, y, z) of the LPS grid."""
    if frame == "voxel":
        return lps.to_index(original.to_physical(points))
    if frame == "ras":
        points = points * np.array([-1.0, -1.0, 1.0])
    return lps.to_index(points)


def _outside(indices: np.ndarray, lps: Grid) -> bool:
    """Whether any index lies beyond the outer voxel faces of the grid (half a voxel past the centres)."""
    size = np.array(lps.size, dtype=np.float64)
    return bool((indices < -0.5 - TOLERANCE).any() or (indices > size - 0.5 + TOLERANCE).any())


def _describe(entry: PromptEntry) -> str:
    return f"{entry.kind} {[round(v, 3) for v in entry.coords]} ({entry.frame})"


def _place_box(entry: PromptEntry, path: Path, original: Grid, lps: Grid) -> PlacedBox:
    corners = np.array(
        [
            [entry.coords[i + 3 * pick] for i, pick in enumerate(choice)]
            for choice in itertools.product((0, 1), repeat=3)
        ]
    )
    indices = _to_lps_index(corners, entry.frame, original, lps)
    if _outside(indices, lps):
        raise _fail(path, entry.where, f"{_describe(entry)} reaches outside the volume ({lps.describe_size()})")
    lo, hi = indices.min(0), indices.max(0)
    first = np.maximum(np.ceil(lo - TOLERANCE), 0).astype(int)
    last = np.minimum(np.floor(hi + TOLERANCE), np.array(lps.size) - 1).astype(int)
    empty = [axis for axis, a, b in zip("xyz", first, last) if a > b]
    if empty:
        raise _fail(path, entry.where, f"empty {_describe(entry)}: it holds no voxel centre along LPS {empty[0]}")
    return PlacedBox(entry, int(first[0]), int(first[1]), int(last[0]), int(last[1]), int(first[2]), int(last[2]))


def _place_point(entry: PromptEntry, path: Path, original: Grid, lps: Grid) -> PlacedPoint:
    index = _to_lps_index(np.array([entry.coords]), entry.frame, original, lps)
    if _outside(index, lps):
        raise _fail(path, entry.where, f"{_describe(entry)} lies outside the volume ({lps.describe_size()})")
    x, y, z = np.clip(index[0], 0, np.array(lps.size) - 1)
    return PlacedPoint(entry, float(x), float(y), int(np.clip(np.rint(z), 0, lps.size[2] - 1)))


def place_prompts(prompts: PromptFile, original: Grid, lps: Grid) -> list[PlacedBox | PlacedPoint]:
    """Put a file's prompts on the scan's LPS grid.

    Args:
        prompts: The parsed file.
        original: The input file's grid (voxel-frame coordinates refer to it).
        lps: The same voxels reoriented to LPS (axial planes are its z planes).

    Returns:
        One placed box or point per entry, in file order.

    Raises:
        PromptError: A box or point outside the volume (beyond the outer voxel
            faces), or an empty box (one that holds no voxel centre).
    """
    placed: list[PlacedBox | PlacedPoint] = []
    for entry in prompts.entries:
        place = _place_box if entry.kind == "box" else _place_point
        placed.append(place(entry, prompts.path, original, lps))
    return placed

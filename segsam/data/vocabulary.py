"""The global class vocabulary and per-dataset label maps into it (docs/data.md#vocabulary-and-label-maps)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segsam.errors import DataError


@dataclass(frozen=True)
class Vocabulary:
    """Class ids and names shared by every dataset.

    Attributes:
        table: DataFrame with columns ``class_id`` (1..), ``name``, ``parent``.
    """

    table: pd.DataFrame

    @classmethod
    def read(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            table = pd.read_csv(path, dtype={"class_id": int, "name": str, "parent": str}, keep_default_na=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read the vocabulary ({err})") from err
        missing = {"class_id", "name", "parent"} - set(table.columns)
        if missing:
            raise DataError(f"{path}: vocabulary lacks columns {sorted(missing)}")
        if table["class_id"].duplicated().any() or table["name"].duplicated().any():
            raise DataError(f"{path}: class ids and names must be unique")
        if (table["class_id"] <= 0).any():
            raise DataError(f"{path}: class ids start at 1 (0 is background)")
        return cls(table.sort_values("class_id").reset_index(drop=True))

    @property
    def names(self) -> list[str]:
        return self.table["name"].tolist()

    @property
    def ids(self) -> list[int]:
        return self.table["class_id"].tolist()

    def id_of(self, name: str) -> int:
        hit = self.table.loc[self.table["name"] == name, "class_id"]
        if hit.empty:
            raise DataError(f"class {name!r} is not in the vocabulary")
        return int(hit.iloc[0])

    def name_of(self, class_id: int) -> str:
        hit = self.table.loc[self.table["class_id"] == class_id, "name"]
        if hit.empty:
            raise DataError(f"class id {class_id} is not in the vocabulary")
        return str(hit.iloc[0])

    @property
    def class_index(self) -> dict[int, int]:
        """Class id -> position in the vocabulary: the models' class index (0..C-1)."""
        return {class_id: i for i, class_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True)
class LabelMap:
    """Maps a dataset's label values to vocabulary class ids.

    A label listed with ``null`` is known but deliberately ignored (mapped to
    background); a label value that is not listed at all is an error when a
    volume contains it.
    """

    source: Path
    mapping: dict[int, int | None]

    @classmethod
    def read(cls, path: str | Path, vocabulary: Vocabulary) -> LabelMap:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))["labels"]
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: not a label map with a 'labels' object ({err})") from err
        mapping: dict[int, int | None] = {}
        for value, name in raw.items():
            mapping[int(value)] = None if name is None else vocabulary.id_of(name)
        return cls(path, mapping)

    def lookup_table(self, values: np.ndarray, where: str) -> np.ndarray:
        """Return an array ``lut`` with ``lut[label] = vocabulary id`` (0 = background).

        Args:
            values: the label values present in a volume.
            where: the file the values come from (named in the error).

        Raises:
            DataError: naming the values the label map does not list.
        """
        values = np.asarray(values, dtype=np.int64)
        unknown = sorted(int(v) for v in values if v != 0 and int(v) not in self.mapping)
        if unknown:
            raise DataError(f"{where}: label values {unknown} are not in the label map {self.source}")
        top = int(max(values.max(initial=0), max(self.mapping, default=0)))
        lut = np.zeros(top + 1, dtype=np.uint16)
        for value, class_id in self.mapping.items():
            lut[value] = class_id or 0
        return lut

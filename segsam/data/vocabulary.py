"""The global class vocabulary and per-dataset label maps into it (docs/data.md#vocabulary-and-label-maps).

The vocabulary is ``config/vocabulary.csv`` (``config["vocabulary"]``) plus the
classes a user adds in the config (``vocabulary_extra: {name: id}``), merged by
:meth:`Vocabulary.read` wherever the vocabulary is read: slicing, text, training,
evaluation. :func:`read_classes` is the same reader without pandas, for the
workflow's start-up checks (``common.smk``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segsam.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

#: The config key of the classes a user adds to the vocabulary.
EXTRA_KEY = "vocabulary_extra"
_COLUMNS = ("class_id", "name", "parent")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a vocabulary CSV, ``class_id`` as int and every other column as text.

    Raises:
        DataError: unreadable file, missing columns or a non-integer id (naming ``path``).
    """
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            reader = csv.DictReader(stream)
            columns = list(reader.fieldnames or [])
            rows = [dict(row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the vocabulary ({err})") from err
    missing = set(_COLUMNS) - set(columns)
    if missing:
        raise DataError(f"{path}: vocabulary lacks columns {sorted(missing)}")
    out = []
    for row in rows:
        try:
            class_id = int(str(row["class_id"]).strip())
        except ValueError as err:
            raise DataError(
                f"{path}: cannot read the vocabulary (class id {row['class_id']!r} is not an integer)"
            ) from err
        out.append({**{key: "" if value is None else str(value) for key, value in row.items()}, "class_id": class_id})
    return out


def _add_extra(rows: list[dict[str, Any]], extra: Mapping[str, int], path: Path) -> list[dict[str, Any]]:
    """``rows`` with the user's classes (``vocabulary_extra``) appended, after checking they are new."""
    names = {row["name"]: row["class_id"] for row in rows}
    ids = {row["class_id"]: row["name"] for row in rows}
    added = []
    for name, class_id in extra.items():
        if name in names:
            raise ConfigError(
                f"config key '{EXTRA_KEY}.{name}': class {name!r} is already in {path} (id {names[name]}); "
                "remove it from vocabulary_extra"
            )
        if not isinstance(class_id, int) or isinstance(class_id, bool) or class_id <= 0:
            raise ConfigError(f"config key '{EXTRA_KEY}.{name}': expected a class id >= 1, got {class_id!r}")
        if class_id in ids:
            raise ConfigError(
                f"config key '{EXTRA_KEY}.{name}': id {class_id} is already class {ids[class_id]!r} in {path}; "
                "pick an unused id"
            )
        names[name], ids[class_id] = class_id, name
        added.append({"class_id": class_id, "name": name, "parent": ""})
    return rows + added


def read_classes(path: str | Path, extra: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """The vocabulary's classes as rows (``class_id``, ``name``, ``parent``, ...), sorted by id; no pandas.

    Args:
        path: The vocabulary CSV (``config["vocabulary"]``).
        extra: Classes added by the config (``vocabulary_extra``: ``{name: id}``).

    Returns:
        One dict per class, sorted by class id.

    Raises:
        DataError: an unreadable file, missing columns, duplicate ids or names, or ids below 1.
        ConfigError: an extra class whose name or id is already taken.
    """
    path = Path(path)
    rows = _add_extra(_read_rows(path), dict(extra or {}), path)
    ids = [row["class_id"] for row in rows]
    names = [row["name"] for row in rows]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise DataError(f"{path}: class ids and names must be unique")
    if any(class_id <= 0 for class_id in ids):
        raise DataError(f"{path}: class ids start at 1 (0 is background)")
    return sorted(rows, key=lambda row: row["class_id"])


@dataclass(frozen=True)
class Vocabulary:
    """Class ids and names shared by every dataset.

    Attributes:
        table: DataFrame with columns ``class_id`` (1..), ``name``, ``parent``.
    """

    table: pd.DataFrame

    @classmethod
    def read(cls, path: str | Path, extra: Mapping[str, int] | None = None) -> Vocabulary:
        """Read the vocabulary CSV, with the classes of ``extra`` added (see :func:`read_classes`)."""
        import pandas as pd  # here: read_classes serves the workflow's start-up without pandas

        rows = read_classes(path, extra)
        columns = list(dict.fromkeys(key for row in rows for key in row)) or list(_COLUMNS)
        table = pd.DataFrame(rows, columns=columns).fillna("")
        return cls(table.astype({"class_id": int}).reset_index(drop=True))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Vocabulary:
        """The vocabulary of a validated config: ``vocabulary`` plus ``vocabulary_extra``."""
        return cls.read(config["vocabulary"], config.get(EXTRA_KEY))

    @property
    def names(self) -> list[str]:
        return self.table["name"].tolist()

    @property
    def ids(self) -> list[int]:
        return self.table["class_id"].tolist()

    def id_of(self, name: str) -> int:
        hit = self.table.loc[self.table["name"] == name, "class_id"]
        if hit.empty:
            raise _not_in_vocabulary(name)
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


def _not_in_vocabulary(name: str) -> DataError:
    return DataError(f"class {name!r} is not in the vocabulary")


@dataclass(frozen=True)
class ClassIds:
    """The vocabulary's class id by name, read without pandas: what the workflow's start-up checks need."""

    ids: Mapping[str, int]

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> ClassIds:
        """From :func:`read_classes`' rows."""
        return cls({row["name"]: int(row["class_id"]) for row in rows})

    def id_of(self, name: str) -> int:
        if name not in self.ids:
            raise _not_in_vocabulary(name)
        return self.ids[name]


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
    def read(cls, path: str | Path, vocabulary: Vocabulary | ClassIds) -> LabelMap:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))["labels"]
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: not a label map with a 'labels' object ({err})") from err
        return cls.from_labels(raw, vocabulary, path)

    @classmethod
    def from_labels(
        cls, labels: Mapping[str | int, str | None], vocabulary: Vocabulary | ClassIds, source: str | Path
    ) -> LabelMap:
        """A label map given as ``{label value: vocabulary name or None}`` (what a label map file's
        ``labels`` holds), e.g. made from an nnU-Net ``dataset.json`` at workflow start-up.

        Args:
            labels: Label value (int, or its decimal string) -> vocabulary class name; None = ignored.
            vocabulary: The vocabulary the names are in.
            source: Where the map comes from (named in messages).

        Raises:
            DataError: a name the vocabulary lacks, or a value that is not an integer.
        """
        if not isinstance(labels, Mapping):
            raise DataError(f"{source}: 'labels' must map label values to class names, not {type(labels).__name__}")
        mapping: dict[int, int | None] = {}
        for value, name in labels.items():
            try:
                key = int(value)
            except (TypeError, ValueError) as err:
                raise DataError(f"{source}: label value {value!r} is not an integer") from err
            try:
                mapping[key] = None if name is None else vocabulary.id_of(name)
            except DataError as err:
                raise DataError(f"{source}: label {key}: {err}") from err
        return cls(Path(source), mapping)

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

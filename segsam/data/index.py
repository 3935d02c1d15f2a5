"""The dataset index: parquet tables of masks and images, split by case (docs/data.md#index-and-splits).

Splits are drawn per modality over *cases*, never slices: slices of one volume
along three axes would otherwise leak into the test set. ``split.assign`` fixes
the split of named cases (an official split, or a dataset with one case per
modality); the others are drawn.

Two builders:

* :func:`build_index` (the workflow's ``build_index`` rule): per-case manifests ->
  two parquet files held in memory (fine up to a few million masks).
* :func:`write_index_dataset` / :func:`build_index_dataset`: the masks table
  streamed in chunks into a partitioned parquet *dataset* (hive folders
  ``modality=<m>/dataset=<d>/``), in bounded memory, for SA-Med2D-16M scale;
  :func:`count_masks` queries it the same way (a filter, then counts per split).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from segsam.atomic import atomic_path, write_json
from segsam.data.slicing import MANIFEST, MASK_COLUMNS, SOURCE_CASE, SUMMARY
from segsam.errors import DataError

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["image", "dataset", "modality", "case", "axis", "slice", "height", "width", "n_masks", "split"]


SPLITS = ("train", "test")


def split_cases(
    cases: pd.DataFrame, test_fraction: float, seed: int, assign: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Assign each case to ``train`` or ``test``, per modality, deterministically.

    Args:
        cases: DataFrame with columns ``case`` and ``modality`` (one row per case).
        test_fraction: Share of each modality's cases in the test split; at
            least one case goes to each side when a modality has two or more.
            A modality with a single (unassigned) case puts it in ``test``
            only when ``round(test_fraction) == 1``.
        seed: Seed of the shuffle.
        assign: ``{case: "train" | "test"}`` fixed beforehand (``split.assign``);
            only the other cases are drawn, with the rule above.

    Returns:
        ``{case: split}``.

    Raises:
        DataError: ``assign`` names a case that is not in ``cases``, or a split
            other than train/test.
    """
    assign = dict(assign or {})
    known = set(cases["case"])
    unknown = sorted(set(assign) - known)
    if unknown:
        raise DataError(f"split.assign names cases that are not in the index: {unknown}")
    bad = sorted({v for v in assign.values() if v not in SPLITS})
    if bad:
        raise DataError(f"split.assign: splits must be 'train' or 'test', got {bad}")
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = dict(assign)
    for modality in sorted(cases["modality"].unique()):
        ids = sorted(c for c in cases.loc[cases["modality"] == modality, "case"].unique() if c not in assign)
        order = list(rng.permutation(len(ids)))
        n_test = int(round(test_fraction * len(ids)))
        if len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        for rank, position in enumerate(order):
            assignment[ids[position]] = "test" if rank < n_test else "train"
    return assignment


def _read_summary(folder: Path) -> dict[str, Any]:
    path = folder / SUMMARY
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable slice summary ({err})") from err


@dataclass
class _Manifests:
    """The per-case manifests of the slice stage, read: the kept ones and the cases left out (and why)."""

    frames: list[pd.DataFrame]  # one per case with masks; paths relative to the working directory
    skipped: dict[str, str]  # case -> why the slice stage skipped it
    no_masks: list[str]  # cases the slice stage kept no mask of


def _read_manifests(slice_dirs: Sequence[str | Path]) -> _Manifests:
    """Read each case folder's manifest, with its image and mask paths prefixed by the folder.

    Raises:
        DataError: a manifest is missing.
    """
    read = _Manifests(frames=[], skipped={}, no_masks=[])
    for folder in map(Path, slice_dirs):
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise DataError(f"{manifest}: slice manifest not found (did the slice stage finish?)")
        summary = _read_summary(folder)
        frame = pd.read_parquet(manifest)
        if summary.get("skipped"):
            read.skipped[str(summary.get("case", folder.name))] = str(summary["skipped"])
            continue
        if frame.empty:
            read.no_masks.append(str(summary.get("case", folder.name)))
            continue
        frame["image"] = [str(folder / p) for p in frame["image"]]
        frame["mask"] = [str(folder / p) for p in frame["mask"]]
        frame[SOURCE_CASE] = summary.get(SOURCE_CASE) or frame["case"]
        read.frames.append(frame)
    return read


def images_table(masks: pd.DataFrame) -> pd.DataFrame:
    """The images table (:data:`IMAGE_COLUMNS`) of a masks table with splits: one row per image, its mask count."""
    return (
        masks.groupby(
            ["image", "dataset", "modality", "case", "axis", "slice", "height", "width", "split"], as_index=False
        )
        .size()
        .rename(columns={"size": "n_masks"})[IMAGE_COLUMNS]
    )


def _index_summary(
    masks: pd.DataFrame, images: pd.DataFrame, manifests: _Manifests, splits: Mapping[str, str]
) -> dict[str, Any]:
    """What :func:`build_index` writes to ``summary_out``: counts per split, the skipped cases and why."""
    return {
        "n_cases": int(masks["case"].nunique()),
        "n_images": len(images),
        "n_masks": len(masks),
        "skipped": dict(sorted(manifests.skipped.items())),
        "no_masks": sorted(manifests.no_masks),
        "splits": {
            split: {
                "cases": sorted(c for c, s in splits.items() if s == split),
                "images": int((images["split"] == split).sum()),
                "masks": int((masks["split"] == split).sum()),
            }
            for split in SPLITS
        },
    }


def build_index(
    slice_dirs: Sequence[str | Path],
    masks_out: str | Path,
    images_out: str | Path,
    *,
    test_fraction: float,
    seed: int,
    assign: Mapping[str, str] | None = None,
    summary_out: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Combine per-case manifests into the masks and images tables.

    Paths in the tables are relative to the working directory (the folder the
    workflow runs in), e.g. ``results/slices/<case>/images/<name>.png``. The
    masks table has the manifests' columns, ``source_case`` (the case id as the
    user's files name it, where it had to be made safe; else the case id) and ``split``.
    Cases the slice stage skipped (an empty label volume: see
    :mod:`segsam.data.slicing`) and cases left without any mask are left out of
    the tables and the split, counted, and reported in the log and ``summary_out``.

    Args:
        slice_dirs: One folder per case (``manifest.parquet``, ``summary.json``).
        masks_out: The masks parquet file.
        images_out: The images parquet file.
        test_fraction: See :func:`split_cases`.
        seed: See :func:`split_cases`.
        assign: Fixed splits ``{case: split}`` (``split.assign``).
        summary_out: Optional JSON with counts per split, the skipped cases and why.

    Returns:
        (masks, images) tables.

    Raises:
        DataError: a manifest is missing, ``assign`` names an unknown case, or
            no masks at all were kept.
    """
    manifests = _read_manifests(slice_dirs)
    for case, reason in sorted(manifests.skipped.items()):
        log.warning("index: case %s skipped by the slice stage (%s)", case, reason)
    for case in manifests.no_masks:
        log.warning("index: case %s kept no mask (all below slicing.min_mask_fraction?)", case)
    masks = pd.concat(manifests.frames, ignore_index=True) if manifests.frames else pd.DataFrame()
    if masks.empty:
        raise DataError("no masks survived slicing and filtering: check slicing.min_mask_fraction and the label maps")
    left_out = set(manifests.skipped) | set(manifests.no_masks)
    assign = {c: s for c, s in (assign or {}).items() if c not in left_out}
    splits = split_cases(masks[["case", "modality"]].drop_duplicates(), test_fraction, seed, assign)
    masks["split"] = masks["case"].map(splits)
    masks = masks.sort_values(["case", "axis", "slice", "class_id", "instance"]).reset_index(drop=True)
    images = images_table(masks)
    for split in SPLITS:
        if split not in set(splits.values()):
            log.warning("index: the %s split is empty (see split.test_fraction / split.assign)", split)
    for table, out in ((masks, masks_out), (images, images_out)):
        with atomic_path(out) as tmp:
            table.to_parquet(tmp, index=False)
    if summary_out is not None:
        write_json(summary_out, _index_summary(masks, images, manifests, splits))
    log.info(
        "index: %d cases, %d images, %d masks; test cases: %s; skipped: %d",
        masks["case"].nunique(),
        len(images),
        len(masks),
        sorted(c for c, s in splits.items() if s == "test"),
        len(manifests.skipped),
    )
    return masks, images


# --- streaming: a partitioned parquet dataset, bounded memory ----------------------------

MASK_SCHEMA = pa.schema(
    [
        ("image", pa.string()),
        ("mask", pa.string()),
        ("dataset", pa.string()),
        ("modality", pa.string()),
        ("case", pa.string()),
        ("axis", pa.string()),
        ("slice", pa.int64()),
        ("class_id", pa.int64()),
        ("class_name", pa.string()),
        ("instance", pa.int64()),
        ("area_fraction", pa.float64()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("spacing_mm", pa.float64()),
        ("split", pa.string()),
    ]
)
PARTITION_COLUMNS = ("modality", "dataset")


def _partition_dir(columns: Sequence[str], values: Sequence[Any]) -> str:
    return "/".join(f"{c}={urllib.parse.quote(str(v), safe='')}" for c, v in zip(columns, values))


class _PartitionWriters:
    """The part files of a hive-partitioned dataset being written, and the rows buffered per partition.

    A partition's rows are buffered until ``buffer_rows``, then written as one
    row group to the partition's open file. At most ``max_open_files`` files are
    open: the least recently used one is closed, and its partition continues in
    a new part file (``part-<n>.parquet``).
    """

    def __init__(self, folder: Path, partitioning: Sequence[str], buffer_rows: int, max_open_files: int) -> None:
        self.folder = folder
        self.partitioning = list(partitioning)
        self.buffer_rows = buffer_rows
        self.max_open_files = max_open_files
        self.schema = pa.schema([f for f in MASK_SCHEMA if f.name not in self.partitioning])
        self.writers: OrderedDict[tuple[Any, ...], pq.ParquetWriter] = OrderedDict()  # most recently used last
        self.parts: dict[tuple[Any, ...], int] = {}
        self.buffers: dict[tuple[Any, ...], list[pa.Table]] = {}
        self.buffered: dict[tuple[Any, ...], int] = {}

    def add(self, key: tuple[Any, ...], rows: pa.Table) -> None:
        """Buffer rows of one partition (without the partition columns); write them once enough are buffered."""
        self.buffers.setdefault(key, []).append(rows)
        self.buffered[key] = self.buffered.get(key, 0) + rows.num_rows
        if self.buffered[key] >= self.buffer_rows:
            self.flush(key)

    def flush(self, key: tuple[Any, ...]) -> None:
        """Write a partition's buffered rows as one row group, opening its file if it is not open."""
        table = pa.concat_tables(self.buffers.pop(key))
        self.buffered.pop(key)
        writer = self.writers.pop(key, None)
        if writer is None:
            if len(self.writers) >= self.max_open_files:
                _, oldest = self.writers.popitem(last=False)
                oldest.close()
            folder = self.folder / _partition_dir(self.partitioning, key)
            folder.mkdir(parents=True, exist_ok=True)
            self.parts[key] = self.parts.get(key, -1) + 1
            writer = pq.ParquetWriter(folder / f"part-{self.parts[key]}.parquet", self.schema)
        writer.write_table(table, row_group_size=max(self.buffer_rows, table.num_rows))
        self.writers[key] = writer

    def flush_all(self) -> None:
        """Write every partition's buffered rows."""
        for key in list(self.buffers):
            self.flush(key)

    def close(self) -> None:
        """Close the open files (buffered rows not yet flushed are dropped)."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def write_index_dataset(
    chunks: Iterable[pd.DataFrame | pa.Table],
    out_dir: str | Path,
    *,
    splits: Mapping[str, str] | None = None,
    partitioning: Sequence[str] = PARTITION_COLUMNS,
    buffer_rows: int = 8_192,
    max_open_files: int = 64,
) -> int:
    """Stream mask rows into a partitioned parquet dataset (hive folders), atomically.

    Each chunk is split by the ``partitioning`` columns; each partition collects
    rows until ``buffer_rows`` and then writes them as one row group to its open
    file (``<col>=<value>/.../part-<n>.parquet``; the partition columns live in
    the folder names, as in any hive-partitioned dataset). Memory is therefore
    bounded by one chunk plus ``partitions x buffer_rows`` rows, whatever the
    total; at most ``max_open_files`` files are open (the least recently used is
    closed, and its partition continues in a new part file).

    Args:
        chunks: Tables with the :data:`MASK_COLUMNS` (``split`` optional).
        out_dir: The dataset folder (replaced if it exists).
        splits: ``{case: split}``, filled in where a chunk has no ``split`` column.
        partitioning: Columns that become folders (``modality=ct/dataset=amos/``).
        buffer_rows: Rows per partition before a row group is written (also the
            row-group size, except for each partition's last one).
        max_open_files: Parquet files open at a time.

    Returns:
        The number of rows written.

    Raises:
        DataError: a chunk lacks columns, or a case has no split.
        ValueError: ``buffer_rows`` or ``max_open_files`` below 1.
    """
    if buffer_rows < 1 or max_open_files < 1:
        raise ValueError("buffer_rows and max_open_files must be >= 1")
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    partitioning = list(partitioning)
    writers = _PartitionWriters(tmp, partitioning, buffer_rows, max_open_files)
    total = 0
    try:
        for chunk in chunks:
            table = _normalise_chunk(chunk, splits)
            total += table.num_rows
            if table.num_rows == 0:
                continue
            keys = table.select(partitioning).to_pandas()
            for key, rows in keys.groupby(partitioning, sort=False).indices.items():
                key = key if isinstance(key, tuple) else (key,)
                writers.add(key, table.take(pa.array(rows)).drop_columns(partitioning))
        writers.flush_all()
        writers.close()
        tmp.mkdir(parents=True, exist_ok=True)  # an empty index is still a (empty) dataset
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        writers.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("index dataset %s: %d mask rows", out_dir, total)
    return total


def _normalise_chunk(chunk: pd.DataFrame | pa.Table, splits: Mapping[str, str] | None) -> pa.Table:
    """A chunk as a table of :data:`MASK_SCHEMA`, with its split filled in from ``splits``."""
    table = chunk if isinstance(chunk, pa.Table) else pa.Table.from_pandas(chunk, preserve_index=False)
    if "split" not in table.column_names:
        if splits is None:
            raise DataError("index chunk has no 'split' column and no case -> split mapping was given")
        cases = table.column("case").to_pylist()
        missing = sorted({c for c in cases if c not in splits})
        if missing:
            raise DataError(f"cases without a split: {missing[:10]}")
        table = table.append_column("split", pa.array([splits[c] for c in cases], pa.string()))
    absent = [c for c in MASK_SCHEMA.names if c not in table.column_names]
    if absent:
        raise DataError(f"index chunk lacks columns {absent}")
    return table.select(MASK_SCHEMA.names).cast(MASK_SCHEMA)


def build_index_dataset(
    slice_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    test_fraction: float,
    seed: int,
    assign: Mapping[str, str] | None = None,
) -> int:
    """:func:`build_index`'s masks table as a partitioned dataset, one manifest in memory at a time.

    A first pass reads only the ``case`` and ``modality`` columns to draw the
    split; the second streams each manifest into :func:`write_index_dataset`.

    Returns:
        The number of mask rows written.

    Raises:
        DataError: a missing manifest, or no masks at all.
    """
    folders = [Path(f) for f in slice_dirs]
    case_rows = []
    for folder in folders:
        manifest = folder / MANIFEST
        if not manifest.is_file():
            raise DataError(f"{manifest}: slice manifest not found (did the slice stage finish?)")
        if _read_summary(folder).get("skipped"):
            continue
        case_rows.append(pd.read_parquet(manifest, columns=["case", "modality"]).drop_duplicates())
    cases = (
        pd.concat(case_rows, ignore_index=True).drop_duplicates()
        if case_rows
        else pd.DataFrame(columns=["case", "modality"])
    )
    if cases.empty:
        raise DataError("no masks survived slicing and filtering: check slicing.min_mask_fraction and the label maps")
    assign = {c: s for c, s in (assign or {}).items() if c in set(cases["case"])}
    splits = split_cases(cases, test_fraction, seed, assign)
    return write_index_dataset(_manifest_chunks(folders), out_dir, splits=splits)


def _manifest_chunks(folders: Sequence[Path]) -> Iterator[pd.DataFrame]:
    """Each case folder's manifest with folder-prefixed paths (:data:`MASK_COLUMNS`), one at a time."""
    for folder in folders:
        frame = pd.read_parquet(folder / MANIFEST)
        if frame.empty:
            continue
        frame["image"] = [str(folder / p) for p in frame["image"]]
        frame["mask"] = [str(folder / p) for p in frame["mask"]]
        yield frame[MASK_COLUMNS]


def count_masks(
    dataset_dir: str | Path,
    *,
    modality: str | None = None,
    class_name: str | None = None,
    dataset: str | None = None,
    by: str = "split",
    batch_size: int = 65_536,
) -> dict[str, int]:
    """Count mask rows of a partitioned index, filtered, grouped by one column; bounded memory.

    Partition filters (``modality``, ``dataset``) prune whole folders; the rest
    is scanned batch by batch, reading only the columns the query needs.

    Args:
        dataset_dir: A folder written by :func:`write_index_dataset`.
        modality: Keep this modality only.
        class_name: Keep this class only.
        dataset: Keep this source dataset only.
        by: The column to count by (``split``, ``class_name``, ...).
        batch_size: Rows per scanned batch.

    Returns:
        ``{value: count}``, sorted by value.

    Raises:
        DataError: the folder is not an index dataset.
    """
    path = Path(dataset_dir)
    if not path.is_dir():
        raise DataError(f"{path}: index dataset not found")
    data = pds.dataset(
        path,
        format="parquet",
        partitioning=pds.partitioning(pa.schema([MASK_SCHEMA.field(c) for c in PARTITION_COLUMNS]), flavor="hive"),
    )
    expr = None
    for column, value in (("modality", modality), ("class_name", class_name), ("dataset", dataset)):
        if value is not None:
            term = pc.field(column) == value
            expr = term if expr is None else expr & term
    counts: dict[str, int] = {}
    # one fragment and one batch ahead: memory stays flat whatever the index size
    for batch in data.to_batches(
        columns=[by], filter=expr, batch_size=batch_size, batch_readahead=1, fragment_readahead=1
    ):
        if batch.num_rows == 0:
            continue
        for item in pc.value_counts(batch.column(0)).to_pylist():
            key = str(item["values"])
            counts[key] = counts.get(key, 0) + int(item["counts"])
    return dict(sorted(counts.items()))

"""Table 3: cross-dataset semantic mDSC, beside the paper's cells, with the rule for classes unseen in training.

The models trained on the training dataset are scored zero-shot on each cross
dataset (KiTS23, BTCV, AMOS); :func:`cross_table` gives the rule for classes
that do not occur in the training split. The Markdown adds, per dataset, the
binary DSC and HD95 of every prompted method and the per-case 3D view
(:mod:`segsam.evaluate.volume`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from segsam.atomic import atomic_path, write_text
from segsam.errors import DataError
from segsam.evaluate.metrics import distance_summary, semantic_summarise, summarise
from segsam.evaluate.volume import case_summary
from segsam.methods import get_method
from segsam.report.inputs import Bootstrap, read_tables
from segsam.report.paper import CROSS_DATASET_NAMES, add_paper_columns, paper_values

log = logging.getLogger(__name__)

#: Columns of the binary DSC per (method, prompt) and cross dataset (table 3's Markdown).
BINARY_COLUMNS = ["method", "row", "prompt", "dataset", "dsc", "lo", "hi", "n"]
#: Columns of the HD95 per (method, prompt) and cross dataset (table 3's Markdown).
DISTANCE_COLUMNS = ["method", "row", "prompt", "dataset", "median", "mean", "n", "n_undefined"]
#: Columns of the per-case 3D view (table 3's Markdown).
VOLUME_COLUMNS = ["method", "row", "prompt", "dataset", "dsc_3d", "hd95_3d_mm", "hd95_3d_mm_mean", "n"]


def seen_classes(train_masks: pd.DataFrame) -> set[int]:
    """Class ids of the training split's masks: the classes a trained model has seen.

    Args:
        train_masks: The training dataset's masks index (columns ``class_id``, ``split``).
    """
    return {int(c) for c in train_masks.loc[train_masks["split"] == "train", "class_id"].unique()}


def cross_table(
    per_mask: Mapping[str, pd.DataFrame], seen: set[int], n_boot: int, ci: float, seed: int
) -> pd.DataFrame:
    """Table 3 layout: semantic mDSC (percent) per (method, prompt), one column group per cross dataset.

    The rule for classes unseen in training (README, "Metrics"): a cross dataset's
    mDSC (column ``<dataset>``) is taken over the classes of its test masks that
    occur in the training split (``seen``), as the paper's models were trained on
    every class they were scored on; ``<dataset>_all`` adds the unseen classes,
    scored like the others (a classifier that cannot name them scores 0 there),
    and ``unseen_<dataset>`` names them. A dataset's mDSC is the mean of its
    modalities' mDSC (:func:`~segsam.evaluate.metrics.semantic_summarise`).

    Args:
        per_mask: {dataset: per-mask rows of the evaluated methods on it}.
        seen: Class ids of the training split (:func:`seen_classes`).
        n_boot: Bootstrap resamples; ci: interval mass; seed: resampling seed.

    Returns:
        One row per (method, prompt) with a semantic output: ``method``, ``row``,
        ``prompt`` and per dataset ``<d>``, ``<d>_lo``, ``<d>_hi``, ``n_<d>`` (masks
        scored), ``classes_<d>`` (seen classes scored), ``<d>_all``, ``unseen_<d>``.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for dataset, frame in per_mask.items():
        frame = frame.dropna(subset=["sem_dsc"])
        known = frame["class_id"].isin(seen)
        on_seen = semantic_summarise(frame[known], n_boot, ci, seed)
        on_all = semantic_summarise(frame, n_boot, ci, seed)
        unseen = sorted(set(frame.loc[~known, "class_name"]))
        for (method, prompt), group in frame.groupby(["method", "prompt"], sort=False):
            row = rows.setdefault(
                (method, prompt), {"method": method, "row": get_method(method).display, "prompt": prompt}
            )
            mine = on_seen[
                (on_seen["method"] == method) & (on_seen["prompt"] == prompt) & (on_seen["modality"] == "avg")
            ]
            everything = on_all[
                (on_all["method"] == method) & (on_all["prompt"] == prompt) & (on_all["modality"] == "avg")
            ]
            if mine.empty:  # no class of this dataset was seen in training
                row.update(
                    {
                        dataset: float("nan"),
                        f"{dataset}_lo": float("nan"),
                        f"{dataset}_hi": float("nan"),
                        f"n_{dataset}": 0,
                        f"classes_{dataset}": 0,
                    }
                )
            else:
                cell = mine.iloc[0]
                row.update(
                    {
                        dataset: round(100 * cell["mean"], 2),
                        f"{dataset}_lo": round(100 * cell["low"], 2),
                        f"{dataset}_hi": round(100 * cell["high"], 2),
                        f"n_{dataset}": int(cell["n"]),
                        f"classes_{dataset}": int(group.loc[group["class_id"].isin(seen), "class_id"].nunique()),
                    }
                )
            row[f"{dataset}_all"] = round(100 * everything.iloc[0]["mean"], 2)
            row[f"unseen_{dataset}"] = "; ".join(unseen)
    return pd.DataFrame(list(rows.values()))


def cross_markdown(
    table: pd.DataFrame, datasets: Sequence[str], binary: pd.DataFrame, distances: pd.DataFrame, volume: pd.DataFrame
) -> str:
    """Table 3 for people: ``mDSC [lo, hi]`` per dataset beside the paper, the unseen classes, then
    the binary DSC (all masks, seen or not) and the HD95 of every prompted method, and the per-case 3D view."""
    head = ["Method", "Prompt", *[CROSS_DATASET_NAMES.get(d, d) for d in datasets]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.to_dict(orient="records"):
        cells = [row["row"], row["prompt"]]
        for d in datasets:
            if row.get(f"n_{d}", 0):
                cell = (
                    f"{row[d]:.2f} [{row[f'{d}_lo']:.2f}, {row[f'{d}_hi']:.2f}] (n={row[f'n_{d}']}, "
                    f"{row[f'classes_{d}']} classes)"
                )
            else:
                cell = "no seen class"
            cell += f"; all classes {row[f'{d}_all']:.2f}" if row.get(f"unseen_{d}") else ""
            paper = row.get(f"paper_{d}", float("nan"))
            cells.append(cell + (f"; paper {paper:.2f}" if paper == paper else ""))
        lines.append("| " + " | ".join(cells) + " |")
    unseen = [
        f"- {CROSS_DATASET_NAMES.get(d, d)}: {table[f'unseen_{d}'].iloc[0] or 'none'}"
        for d in datasets
        if f"unseen_{d}" in table
    ]
    parts = [
        "## Table 3: cross-dataset semantic mDSC (%)\n",
        "Models trained on the training dataset only. mDSC over the classes seen in training; "
        "'all classes' adds those unseen in training (scored as the others). Paper: its table 3.\n",
        "\n".join(lines) + "\n",
        "Classes unseen in training, per dataset:\n",
        "\n".join(unseen) + "\n",
        "\n## Binary DSC (%) of the prompted masks per dataset (all classes; avg of the modality means)\n",
        binary.to_markdown(index=False, floatfmt=".2f") + "\n"
        if not binary.empty
        else "No prompted method was evaluated.\n",
        "\n## HD95 (mm) of the prompted masks, median per dataset (2D, at each slice's pixel spacing)\n",
        distances.to_markdown(index=False, floatfmt=".2f") + "\n"
        if not distances.empty
        else "No prompted method was evaluated.\n",
        "\n## 3D per case: the axial planes of each (case, class) stacked; mean DSC (%), median and mean HD95 (mm)\n",
        volume.to_markdown(index=False, floatfmt=".2f") + "\n"
        if not volume.empty
        else "No axial plane was evaluated.\n",
    ]
    return "\n".join(parts)


def _read_cross(per_mask_files: Mapping[str, Sequence[str | Path]], out_csv: str | Path) -> dict[str, pd.DataFrame]:
    """{cross dataset: per-mask rows of its evaluated methods}.

    Raises:
        DataError: No cross dataset, or a dataset without any evaluated method.
    """
    if not per_mask_files:
        raise DataError(
            f"{out_csv}: no cross dataset to tabulate; list them under cross.datasets (see config/cross.yaml)"
        )
    per_mask = {}
    for dataset, files in per_mask_files.items():
        if not files:
            raise DataError(
                f"{out_csv}: no method evaluated on {dataset} (table 3 needs a method with SAWD or a "
                "prompt-free network)"
            )
        per_mask[dataset] = read_tables(files)
    return per_mask


def cross_binary(prompted: Mapping[str, pd.DataFrame], boot: Bootstrap) -> pd.DataFrame:
    """Binary DSC (percent, ``avg`` of the modality means, with its interval) per (method, prompt) and dataset.

    Args:
        prompted: {cross dataset: per-mask rows of its prompted methods}.
        boot: The bootstrap of the intervals.

    Returns:
        :data:`BINARY_COLUMNS`.
    """
    return pd.DataFrame(
        [
            {
                "method": r.method,
                "row": get_method(r.method).display,
                "prompt": r.prompt,
                "dataset": dataset,
                "dsc": round(100 * r.mean, 2),
                "lo": round(100 * r.low, 2),
                "hi": round(100 * r.high, 2),
                "n": r.n,
            }
            for dataset, frame in prompted.items()
            for r in summarise(frame, boot.n_boot, boot.ci, boot.seed)
            .query("modality == 'avg'")
            .itertuples(index=False)
        ],
        columns=BINARY_COLUMNS,
    )


def cross_distances(prompted: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """HD95 (mm) over all masks of each (method, prompt) and dataset: median, mean, masks, undefined ones.

    Args:
        prompted: {cross dataset: per-mask rows of its prompted methods}.

    Returns:
        :data:`DISTANCE_COLUMNS`.
    """
    return pd.DataFrame(
        [
            {
                "method": r.method,
                "row": get_method(r.method).display,
                "prompt": r.prompt,
                "dataset": dataset,
                "median": r.median,
                "mean": r.mean,
                "n": r.n,
                "n_undefined": r.n_undefined,
            }
            for dataset, frame in prompted.items()
            for r in distance_summary(frame.assign(modality=dataset))
            .query("modality == @dataset")
            .itertuples(index=False)
        ],
        columns=DISTANCE_COLUMNS,
    )


def cross_volume(per_case_files: Mapping[str, Sequence[str | Path]] | None) -> pd.DataFrame:
    """The per-case 3D view per dataset (:func:`segsam.evaluate.volume.case_summary`), DSC in percent.

    Args:
        per_case_files: {cross dataset: the per-case 3D tables of its methods}.

    Returns:
        :data:`VOLUME_COLUMNS`; an empty frame (no columns) when no dataset has per-case tables.
    """
    volumes = [
        case_summary(read_tables(files)).assign(dataset=dataset)
        for dataset, files in (per_case_files or {}).items()
        if files
    ]
    volume = pd.concat(volumes, ignore_index=True) if volumes else pd.DataFrame()
    if not volume.empty:
        volume.insert(1, "row", [get_method(m).display for m in volume["method"]])
        volume["dsc_3d"] = (100 * volume["dsc_3d"]).round(2)
        volume = volume[VOLUME_COLUMNS]
    return volume


def make_table3(
    per_mask_files: Mapping[str, Sequence[str | Path]],
    train_masks_parquet: str | Path,
    out_csv: str | Path,
    out_md: str | Path,
    *,
    config: Mapping[str, Any],
    per_case_files: Mapping[str, Sequence[str | Path]] | None = None,
) -> pd.DataFrame:
    """Table 3 (cross-dataset mDSC) beside the paper's cells, and its Markdown.

    Args:
        per_mask_files: {cross dataset: the per-mask parquet files of its evaluated methods}.
        train_masks_parquet: The training dataset's masks index (which classes were seen).
        out_csv: ``table3.csv``: :func:`cross_table` plus ``paper_<d>`` / ``delta_<d>``.
        out_md: ``table3.md``.
        config: The validated config (``methods``, ``evaluate``).
        per_case_files: {cross dataset: the per-case 3D tables of its methods}
            (:mod:`segsam.evaluate.volume`), summarised in the Markdown.

    Returns:
        The table, as written.

    Raises:
        DataError: No cross dataset, or a dataset without any evaluated method.
    """
    per_mask = _read_cross(per_mask_files, out_csv)
    boot = Bootstrap.from_config(config)
    datasets = list(per_mask_files)
    seen = seen_classes(pd.read_parquet(train_masks_parquet, columns=["class_id", "split"]))
    table = cross_table(per_mask, seen, boot.n_boot, boot.ci, boot.seed)
    if table.empty:
        raise DataError(f"{out_csv}: no semantic prediction among the evaluated methods")
    order = {m: i for i, m in enumerate(config["methods"])}
    table = table.sort_values("method", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    paper = paper_values("table3_cross_dataset_mdsc.csv").rename(columns={"dataset": "modality"})
    table = add_paper_columns(table, paper, datasets)
    prompted = {dataset: frame[frame["prompt"] != "none"] for dataset, frame in per_mask.items()}
    prompted = {dataset: frame for dataset, frame in prompted.items() if not frame.empty}
    binary, distances = cross_binary(prompted, boot), cross_distances(prompted)
    volume = cross_volume(per_case_files)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_text(out_md, cross_markdown(table, datasets, binary, distances, volume))
    log.info(
        "table 3: %s",
        "; ".join(
            f"{r['row']}/{r['prompt']}: " + ", ".join(f"{d}={r[d]}" for d in datasets)
            for r in table.to_dict(orient="records")
        ),
    )
    return table

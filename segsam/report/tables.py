"""Results tables in the paper's layout, with a provenance sidecar.

``table1.csv``: binary DSC (percent) per prompted mask; one row per
(method, prompt), one column per modality present, ``avg`` = mean of the
modality means, ``n`` masks per modality and bootstrap interval bounds.
The sidecar ``table1.json`` says which dataset, weights, config hash and
git commit produced it, so demo numbers are never mistaken for the paper's.
``table1.md`` adds the median HD95 (mm) of the same prompted masks below
the DSC table; the paper's table 1 has no distance column, so the CSV keeps
the paper's layout and the sidecar holds the HD95 summary.

``table2.csv`` / ``table4.csv`` / ``table5.csv`` (rule ``semantic_tables``):
semantic mDSC per modality, the ablation ladder, and the SAM ViT-B baselines
before and after plugging in SAWD (the paper's tables 5 and 7), each beside
the paper's cells; ``tables_semantic.md`` renders all three.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from segsam.atomic import atomic_path, write_json, write_text
from segsam.config import config_hash
from segsam.errors import DataError
from segsam.evaluate.metrics import distance_summary, semantic_summarise, summarise
from segsam.evaluate.volume import case_summary
from segsam.methods import get_method
from segsam.report.paper import (
    ABLATION_ROWS,
    CROSS_DATASET_NAMES,
    MODALITY_ORDER,
    PAPER_ROWS,
    PLUGIN_BASELINES,
    PLUGIN_PAPER_DATASET,
    PLUGIN_VARIANTS,
    add_paper_columns,
    modality_columns,
    paper_values,
)
from segsam.tracking import git_commit

log = logging.getLogger(__name__)


def _markdown_head(modalities: Sequence[str]) -> list[str]:
    head = ["Method", "Prompt", *[m.upper() if m != "avg" else "Avg." for m in modalities]]
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """Long means (method, prompt, modality, mean, low, high, n) -> one row per (method, prompt), percent.

    Columns: method, row (display name), prompt, one column per modality present, ``avg``, and
    ``<col>_lo`` / ``<col>_hi`` / ``n_<col>`` for each.
    """
    modalities = modality_columns(long["modality"])
    rows = []
    for (method, prompt), frame in long.groupby(["method", "prompt"], sort=False):
        by = frame.set_index("modality")
        row: dict[str, Any] = {"method": method, "row": get_method(method).display, "prompt": prompt}
        for m in [*modalities, "avg"]:
            row[m] = round(100 * by.loc[m, "mean"], 2) if m in by.index else float("nan")
        for m in [*modalities, "avg"]:
            if m in by.index:
                row[f"{m}_lo"] = round(100 * by.loc[m, "low"], 2)
                row[f"{m}_hi"] = round(100 * by.loc[m, "high"], 2)
                row[f"n_{m}"] = int(by.loc[m, "n"])
        rows.append(row)
    return pd.DataFrame(rows)


def binary_table(per_mask: pd.DataFrame, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """Table 1 layout: binary DSC (percent) per (method, prompt) and modality."""
    return wide_table(summarise(per_mask, n_boot, ci, seed))


def to_markdown(table: pd.DataFrame, modalities: Sequence[str]) -> str:
    """Render the table for people: ``mean [lo, hi]`` per cell, n in the header."""
    lines = _markdown_head(modalities)
    for row in table.to_dict(orient="records"):
        cells = [row["row"], row["prompt"]]
        for m in modalities:
            cell = f"{row[m]:.2f} [{row[f'{m}_lo']:.2f}, {row[f'{m}_hi']:.2f}] (n={row[f'n_{m}']})"
            paper = row.get(f"paper_{m}", float("nan"))
            if paper == paper:  # not NaN
                cell += f"; paper {paper:.2f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def distance_markdown(distances: pd.DataFrame) -> str:
    """Median HD95 (mm) per (method, prompt) and modality; undefined masks counted in the cell."""
    modalities = [*modality_columns(distances["modality"]), "avg"]
    lines = _markdown_head(modalities)
    for (method, prompt), frame in distances.groupby(["method", "prompt"], sort=False):
        by = frame.set_index("modality")
        cells = [get_method(method).display, prompt]
        for m in modalities:
            if m not in by.index:
                cells.append("")
                continue
            cell = f"{by.loc[m, 'median']:.2f} (n={int(by.loc[m, 'n'])})"
            if by.loc[m, "n_undefined"]:
                cell += f", {int(by.loc[m, 'n_undefined'])} undefined"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ordered(per_mask: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(config["methods"])}
    prompt_order = {p: i for i, p in enumerate(config["evaluate"]["prompts"])}
    return per_mask.sort_values(
        ["prompt", "method"], key=lambda s: s.map(prompt_order) if s.name == "prompt" else s.map(order), kind="stable"
    )


def make_table1(
    per_mask_files: Sequence[str | Path],
    out_csv: str | Path,
    out_md: str | Path,
    out_json: str | Path,
    *,
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, str]],
) -> pd.DataFrame:
    """Build ``results/table1.csv`` (+ Markdown and the provenance sidecar).

    Args:
        per_mask_files: The evaluation's per-mask tables, one per method.
        out_csv: ``table1.csv``.
        out_md: ``table1.md`` (DSC, then the median HD95).
        out_json: The provenance sidecar.
        config: The validated config.
        weights: {encoder: {"weights", "sha256"}} of the pretrained encoders the
            methods started from (the evaluations' provenance), for the sidecar.
    """
    per_mask = _ordered(pd.concat([pd.read_parquet(p) for p in per_mask_files], ignore_index=True), config)
    cfg = config["evaluate"]
    table = binary_table(per_mask, int(cfg["bootstrap"]), float(cfg["ci"]), int(cfg["seed"]))
    modalities = [c for c in table.columns if c in MODALITY_ORDER or c == "avg"]
    table = add_paper_columns(table, paper_values("table1_binary_dsc.csv"), modalities)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    distances = distance_summary(per_mask)
    write_text(
        out_md,
        to_markdown(table, modalities)
        + "\n### HD95 (mm), median over the same prompted masks (empty prediction = slice diagonal)\n\n"
        + distance_markdown(distances),
    )
    write_json(
        out_json,
        {
            "table": "table1: binary DSC (%) per prompted mask; avg = mean of modality means",
            "paper_columns": "paper_<col> = the paper's published cell (config/paper/table1_binary_dsc.csv), "
            "delta_<col> = ours - paper; "
            "the paper's avg covers 8 modalities, ours those present",
            "dataset": config["dataset"]["name"],
            "is_paper_data": config["dataset"]["name"] == "paper",
            "warning": None
            if config["dataset"]["name"] == "paper"
            else (
                f"computed on the '{config['dataset']['name']}' dataset, NOT on SA-Med2D-16M: "
                "these numbers are not comparable with the paper's Table 1"
            ),
            "weights": dict(weights),
            "methods": list(per_mask["method"].unique()),
            "config_hash": config_hash(config),
            "git_commit": git_commit(),
            "n_masks": int(per_mask["mask"].nunique()),
            "n_images": int(per_mask["image"].nunique()),
            "n_cases": int(per_mask["case"].nunique()),
            "bootstrap": {"resamples": int(cfg["bootstrap"]), "ci": float(cfg["ci"]), "seed": int(cfg["seed"])},
            "hd95_mm": distances.to_dict(orient="records"),
        },
    )
    log.info("table1:\n%s", to_markdown(table, modalities))
    return table


TABLE5_COLUMNS = [
    "baseline",
    "method",
    "row",
    "variant",
    "prompt",
    "dataset",
    "paper_dataset",
    "dsc",
    "mdsc",
    "paper_dsc",
    "paper_mdsc",
    "delta_dsc",
    "delta_mdsc",
    "gain_dsc",
    "paper_gain_dsc",
]


def _avg_percent(summary: pd.DataFrame, method: str, prompt: str) -> float:
    """``avg`` mean of one (method, prompt) in a long summary, in percent (2 decimals); NaN if absent."""
    hit = summary[(summary["method"] == method) & (summary["prompt"] == prompt) & (summary["modality"] == "avg")]
    return round(100 * float(hit["mean"].iloc[0]), 2) if not hit.empty else float("nan")


def plugin_table(
    binary: pd.DataFrame,
    semantic: pd.DataFrame,
    paper: pd.DataFrame,
    prompts: Sequence[str],
    dataset: str,
    paper_dataset: str = PLUGIN_PAPER_DATASET,
) -> pd.DataFrame:
    """Tables 5/7 layout: each SAM ViT-B baseline before (``orig``) and after (``+SAWD``) plugging in SAWD.

    A baseline of :data:`PLUGIN_BASELINES` gets rows when at least one of its two variants
    (``<baseline>`` or ``<baseline>+sawd``) was evaluated; it then has one row per variant and
    per prompt that either variant was evaluated with, so a variant that was not run shows the
    paper's cells beside NaN.

    Args:
        binary: Long binary DSC means (:func:`segsam.evaluate.metrics.summarise`).
        semantic: Long semantic mDSC means (:func:`segsam.evaluate.metrics.semantic_summarise`).
        paper: The paper's cells (``table5_7_plugin.csv``: method, variant, prompt, dataset,
            metric, value).
        prompts: Prompt types in row order; other prompts follow in order of appearance.
        dataset: The dataset the summaries are of (column ``dataset``).
        paper_dataset: The paper's column it is set beside: ``sa_med2d`` for the training
            dataset's test split, the dataset itself for a cross dataset.

    Returns:
        The columns of :data:`TABLE5_COLUMNS`: ``dsc`` (binary DSC avg) and ``mdsc`` (semantic
        mDSC avg, NaN without a semantic decoder) in percent, the paper's ``paper_dataset`` cells,
        ``delta_*`` = ours - paper, and ``gain_dsc`` / ``paper_gain_dsc`` = the ``+SAWD`` row's
        DSC minus its ``orig`` row's (NaN on ``orig`` rows and where either side is missing).
    """
    run = set(zip(binary["method"], binary["prompt"], strict=True))
    order = list(prompts) + [p for p in dict.fromkeys(binary["prompt"]) if p not in prompts]
    cells = paper[paper["dataset"] == paper_dataset]
    lookup = {(r.method, r.variant, r.prompt, r.metric): float(r.value) for r in cells.itertuples(index=False)}
    rows = []
    for prompt in order:
        for baseline in PLUGIN_BASELINES:
            names = [baseline + suffix for _, suffix in PLUGIN_VARIANTS]
            if not any((name, prompt) in run for name in names):
                continue
            label = PAPER_ROWS.get(baseline)
            for (variant, _), method in zip(PLUGIN_VARIANTS, names, strict=True):
                rows.append(
                    {
                        "baseline": baseline,
                        "method": method,
                        "row": get_method(method).display,
                        "variant": variant,
                        "prompt": prompt,
                        "dataset": dataset,
                        "paper_dataset": paper_dataset,
                        "dsc": _avg_percent(binary, method, prompt),
                        "mdsc": _avg_percent(semantic, method, prompt) if variant != "orig" else float("nan"),
                        "paper_dsc": lookup.get((label, variant, prompt, "DSC"), float("nan")),
                        "paper_mdsc": lookup.get((label, variant, prompt, "mDSC"), float("nan")),
                    }
                )
    table = pd.DataFrame(rows, columns=TABLE5_COLUMNS)
    table["delta_dsc"] = (table["dsc"] - table["paper_dsc"]).round(2)
    table["delta_mdsc"] = (table["mdsc"] - table["paper_mdsc"]).round(2)
    orig = table[table["variant"] == "orig"].set_index(["baseline", "prompt"])
    plugged = table["variant"] != "orig"
    keys = pd.MultiIndex.from_frame(table.loc[plugged, ["baseline", "prompt"]])
    for column, source in (("gain_dsc", "dsc"), ("paper_gain_dsc", "paper_dsc")):
        table[column] = float("nan")
        table.loc[plugged, column] = (
            table.loc[plugged, source].to_numpy() - orig[source].reindex(keys).to_numpy()
        ).round(2)
    return table


def plugin_markdown(table: pd.DataFrame) -> str:
    """Render :func:`plugin_table` for people: ours beside the paper's column of each dataset; ``-`` where none."""
    if table.empty:
        return "No SAM ViT-B baseline was run.\n"
    view = table[
        [
            "row",
            "prompt",
            "dataset",
            "paper_dataset",
            "dsc",
            "paper_dsc",
            "delta_dsc",
            "gain_dsc",
            "paper_gain_dsc",
            "mdsc",
            "paper_mdsc",
            "delta_mdsc",
        ]
    ]
    view = view.rename(
        columns={
            "row": "Method",
            "prompt": "Prompt",
            "dataset": "Data",
            "paper_dataset": "Paper column",
            "dsc": "DSC",
            "paper_dsc": "DSC (paper)",
            "delta_dsc": "Δ DSC",
            "gain_dsc": "SAWD gain",
            "paper_gain_dsc": "SAWD gain (paper)",
            "mdsc": "mDSC",
            "paper_mdsc": "mDSC (paper)",
            "delta_mdsc": "Δ mDSC",
        }
    )
    note = (
        "Ours: the test split of each dataset (Data); paper: the column it is set beside (the training "
        "dataset's test split stands for SA-Med2D; KiTS23 and BTCV, when configured as cross datasets, for their own). "
        "`-`: no value (a variant that was not run, or no paper cell); "
        "SAWD gain = the +SAWD row's DSC minus the original's.\n\n"
    )
    view = view.astype(object).where(view.notna(), None)  # tabulate's missingval applies to None, not NaN
    return note + view.to_markdown(index=False, floatfmt=".2f", missingval="-") + "\n"


def make_semantic_tables(
    per_mask_files: Sequence[str | Path],
    out_table2: str | Path,
    out_table4: str | Path,
    out_md: str | Path,
    *,
    config: Mapping[str, Any],
    out_table5: str | Path,
    cross_per_mask: Mapping[str, Sequence[str | Path]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tables 2, 4 and 5/7 with paper columns, and their Markdown rendering.

    Table 2: semantic mDSC per modality (methods with a semantic decoder only). Table 4:
    ablation ladder, DSC and mDSC avg, a row for every method of ``ABLATION_ROWS`` that
    was run. Table 5/7: the SAM ViT-B baselines before and after plugging in SAWD
    (:func:`plugin_table`).

    Args:
        per_mask_files: The per-mask parquet files of the evaluated methods.
        out_table2: ``table2.csv`` to write.
        out_table4: ``table4.csv`` to write.
        out_md: ``tables_semantic.md`` to write (all three tables).
        config: The validated config (``methods``, ``evaluate``).
        out_table5: ``table5.csv`` to write.
        cross_per_mask: {cross dataset: its per-mask parquet files}: table 5 gets their rows
            too, beside the paper's column of that dataset (KiTS23, BTCV).

    Returns:
        Tables 2, 4 and 5, as written.
    """
    per_mask = _ordered(pd.concat([pd.read_parquet(p) for p in per_mask_files], ignore_index=True), config)
    cfg = config["evaluate"]
    n_boot, ci, seed = int(cfg["bootstrap"]), float(cfg["ci"]), int(cfg["seed"])
    semantic = semantic_summarise(per_mask, n_boot, ci, seed)
    table2 = wide_table(semantic) if not semantic.empty else pd.DataFrame(columns=["method", "row", "prompt"])
    if not table2.empty:
        modalities = [c for c in table2.columns if c in MODALITY_ORDER or c == "avg"]
        table2 = add_paper_columns(table2, paper_values("table2_semantic_mdsc.csv"), modalities)
    binary = summarise(per_mask, n_boot, ci, seed)
    rows = []
    paper4 = paper_values("table4_8_ablation.csv")
    for (method, prompt), frame in binary[binary["modality"] == "avg"].groupby(["method", "prompt"], sort=False):
        if method not in ABLATION_ROWS:
            continue
        sem = semantic[
            (semantic["method"] == method) & (semantic["prompt"] == prompt) & (semantic["modality"] == "avg")
        ]
        paper = paper4[(paper4["row"] == ABLATION_ROWS[method]) & (paper4["prompt"] == prompt)].set_index("metric")[
            "value"
        ]
        rows.append(
            {
                "method": method,
                "row": get_method(method).display,
                "paper_row": ABLATION_ROWS[method],
                "prompt": prompt,
                "dsc": round(100 * float(frame["mean"].iloc[0]), 2),
                "mdsc": round(100 * float(sem["mean"].iloc[0]), 2) if not sem.empty else float("nan"),
                "paper_dsc": float(paper.get("DSC", float("nan"))),
                "paper_mdsc": float(paper.get("mDSC", float("nan"))),
            }
        )
    table4 = pd.DataFrame(
        rows, columns=["method", "row", "paper_row", "prompt", "dsc", "mdsc", "paper_dsc", "paper_mdsc"]
    )
    table4["delta_dsc"] = (table4["dsc"] - table4["paper_dsc"]).round(2)
    table4["delta_mdsc"] = (table4["mdsc"] - table4["paper_mdsc"]).round(2)
    paper5 = paper_values("table5_7_plugin.csv")
    parts5 = [plugin_table(binary, semantic, paper5, cfg["prompts"], dataset=config["dataset"]["name"])]
    for dataset, files in (cross_per_mask or {}).items():
        cross = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
        parts5.append(
            plugin_table(
                summarise(cross, n_boot, ci, seed),
                semantic_summarise(cross, n_boot, ci, seed),
                paper5,
                config["cross"]["prompts"],
                dataset=dataset,
                paper_dataset=dataset,
            )
        )
    filled = [t for t in parts5 if not t.empty]
    table5 = pd.concat(filled, ignore_index=True) if filled else parts5[0]
    outputs = [(table2, out_table2), (table4, out_table4), (table5, out_table5)]
    for table, out in outputs:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    parts = ["## Table 2: semantic mDSC (%)\n"]
    if table2.empty:
        parts.append("No method with a semantic decoder was run.\n")
    else:
        parts.append(to_markdown(table2, [c for c in table2.columns if c in MODALITY_ORDER or c == "avg"]))
    parts.append("\n## Table 4: ablation (avg over modalities, %)\n")
    parts.append(table4.to_markdown(index=False) if not table4.empty else "No ablation method was run.\n")
    parts.append("\n## Table 5/7: SAWD plugged into the SAM baselines (avg over modalities, %)\n")
    parts.append(plugin_markdown(table5))
    write_text(out_md, "\n".join(parts) + "\n")
    return table2, table4, table5


# --- table 3: cross-dataset mDSC ------------------------------------------------------------


#: The paper's names of the cross datasets (table 3's columns, in its order).
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
                cell = f"{row[d]:.2f} [{row[f'{d}_lo']:.2f}, {row[f'{d}_hi']:.2f}] (n={row[f'n_{d}']}, "
                f"{row[f'classes_{d}']} classes)"
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
    if not per_mask_files:
        raise DataError(
            f"{out_csv}: no cross dataset to tabulate; list them under cross.datasets (see config/cross.yaml)"
        )
    cfg = config["evaluate"]
    n_boot, ci, seed = int(cfg["bootstrap"]), float(cfg["ci"]), int(cfg["seed"])
    datasets = list(per_mask_files)
    per_mask = {}
    for dataset, files in per_mask_files.items():
        if not files:
            raise DataError(
                f"{out_csv}: no method evaluated on {dataset} (table 3 needs a method with SAWD or a "
                "prompt-free network)"
            )
        per_mask[dataset] = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
    seen = seen_classes(pd.read_parquet(train_masks_parquet, columns=["class_id", "split"]))
    table = cross_table(per_mask, seen, n_boot, ci, seed)
    if table.empty:
        raise DataError(f"{out_csv}: no semantic prediction among the evaluated methods")
    order = {m: i for i, m in enumerate(config["methods"])}
    table = table.sort_values("method", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    paper = paper_values("table3_cross_dataset_mdsc.csv").rename(columns={"dataset": "modality"})
    table = add_paper_columns(table, paper, datasets)
    prompted = {dataset: frame[frame["prompt"] != "none"] for dataset, frame in per_mask.items()}
    prompted = {dataset: frame for dataset, frame in prompted.items() if not frame.empty}
    binary = pd.DataFrame(
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
            for r in summarise(frame, n_boot, ci, seed).query("modality == 'avg'").itertuples(index=False)
        ],
        columns=["method", "row", "prompt", "dataset", "dsc", "lo", "hi", "n"],
    )
    distances = pd.DataFrame(
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
        columns=["method", "row", "prompt", "dataset", "median", "mean", "n", "n_undefined"],
    )
    volumes = [
        case_summary(pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)).assign(dataset=dataset)
        for dataset, files in (per_case_files or {}).items()
        if files
    ]
    volume = pd.concat(volumes, ignore_index=True) if volumes else pd.DataFrame()
    if not volume.empty:
        volume.insert(1, "row", [get_method(m).display for m in volume["method"]])
        volume["dsc_3d"] = (100 * volume["dsc_3d"]).round(2)
        volume = volume[["method", "row", "prompt", "dataset", "dsc_3d", "hd95_3d_mm", "hd95_3d_mm_mean", "n"]]
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

"""Tables 2, 4 and 5/7 (rule ``semantic_tables``), each beside the paper's cells.

``table2.csv``: semantic mDSC per modality (methods with a semantic output).
``table4.csv``: the ablation ladder, binary DSC and semantic mDSC averaged
over modalities. ``table5.csv``: the SAM ViT-B baselines before and after
plugging in SAWD (the paper's tables 5 and 7), on the training dataset's test
split and on each configured cross dataset. ``tables_semantic.md`` renders
all three.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from segsam.atomic import atomic_path, write_text
from segsam.evaluate.metrics import semantic_summarise, summarise
from segsam.methods import get_method
from segsam.report.inputs import Bootstrap, ordered, read_tables
from segsam.report.paired import LADDER_STEPS, attach_gains, gains, gains_markdown
from segsam.report.paper import (
    ABLATION_ROWS,
    PAPER_ROWS,
    PLUGIN_BASELINES,
    PLUGIN_PAPER_DATASET,
    PLUGIN_VARIANTS,
    add_paper_columns,
    paper_values,
)
from segsam.report.render import to_markdown, value_columns, wide_table

#: Columns of table 4 before its ``delta_*`` columns.
TABLE4_COLUMNS = ["method", "row", "paper_row", "prompt", "dsc", "mdsc", "paper_dsc", "paper_mdsc"]


def semantic_table(semantic: pd.DataFrame) -> pd.DataFrame:
    """Table 2 layout: semantic mDSC (percent) per (method, prompt) and modality, beside the paper's cells.

    Args:
        semantic: Long semantic mDSC means (:func:`segsam.evaluate.metrics.semantic_summarise`).

    Returns:
        The wide table (:func:`~segsam.report.render.wide_table`) with ``paper_<col>`` /
        ``delta_<col>``; no rows (columns method, row, prompt) when no method has a semantic output.
    """
    if semantic.empty:
        return pd.DataFrame(columns=["method", "row", "prompt"])
    table = wide_table(semantic)
    if table.empty:
        return table
    return add_paper_columns(table, paper_values("table2_semantic_mdsc.csv"), value_columns(table))


def _avg_row(summary: pd.DataFrame, method: str, prompt: str) -> pd.DataFrame:
    """The ``avg`` row(s) of one (method, prompt) in a long summary."""
    return summary[(summary["method"] == method) & (summary["prompt"] == prompt) & (summary["modality"] == "avg")]


def ablation_table(binary: pd.DataFrame, semantic: pd.DataFrame) -> pd.DataFrame:
    """Table 4 layout: the ablation ladder, DSC and mDSC averaged over modalities (percent), beside the paper.

    A row for every (method, prompt) of :data:`~segsam.report.paper.ABLATION_ROWS` that was evaluated.

    Args:
        binary: Long binary DSC means (:func:`segsam.evaluate.metrics.summarise`).
        semantic: Long semantic mDSC means (:func:`segsam.evaluate.metrics.semantic_summarise`).

    Returns:
        :data:`TABLE4_COLUMNS`, then ``delta_dsc`` / ``delta_mdsc`` = ours - paper.
    """
    rows = []
    paper4 = paper_values("table4_8_ablation.csv")
    for (method, prompt), frame in binary[binary["modality"] == "avg"].groupby(["method", "prompt"], sort=False):
        if method not in ABLATION_ROWS:
            continue
        sem = _avg_row(semantic, method, prompt)
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
    table4 = pd.DataFrame(rows, columns=TABLE4_COLUMNS)
    table4["delta_dsc"] = (table4["dsc"] - table4["paper_dsc"]).round(2)
    table4["delta_mdsc"] = (table4["mdsc"] - table4["paper_mdsc"]).round(2)
    return table4


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
    hit = _avg_row(summary, method, prompt)
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


def _plugin_tables(
    binary: pd.DataFrame,
    semantic: pd.DataFrame,
    config: Mapping[str, Any],
    boot: Bootstrap,
    cross_per_mask: Mapping[str, Sequence[str | Path]] | None,
) -> pd.DataFrame:
    """Table 5/7: :func:`plugin_table` of the training dataset's test split, then of each cross dataset."""
    paper5 = paper_values("table5_7_plugin.csv")
    parts = [plugin_table(binary, semantic, paper5, config["evaluate"]["prompts"], dataset=config["dataset"]["name"])]
    for dataset, files in (cross_per_mask or {}).items():
        cross = read_tables(files)
        parts.append(
            plugin_table(
                summarise(cross, boot.n_boot, boot.ci, boot.seed),
                semantic_summarise(cross, boot.n_boot, boot.ci, boot.seed),
                paper5,
                config["cross"]["prompts"],
                dataset=dataset,
                paper_dataset=dataset,
            )
        )
    filled = [t for t in parts if not t.empty]
    return pd.concat(filled, ignore_index=True) if filled else parts[0]


def semantic_markdown(table2: pd.DataFrame, table4: pd.DataFrame, table5: pd.DataFrame) -> str:
    """``tables_semantic.md``: tables 2, 4 and 5/7 for people, one section each."""
    parts = ["## Table 2: semantic mDSC (%)\n"]
    if table2.empty:
        parts.append("No method with a semantic decoder was run.\n")
    else:
        parts.append(to_markdown(table2, value_columns(table2)))
    parts.append("\n## Table 4: ablation (avg over modalities, %)\n")
    parts.append(table4.to_markdown(index=False) if not table4.empty else "No ablation method was run.\n")
    parts.append("\n## Table 5/7: SAWD plugged into the SAM baselines (avg over modalities, %)\n")
    parts.append(plugin_markdown(table5))
    return "\n".join(parts) + "\n"


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
    was run, with each rung's paired gain over the rung it extends (``gain_dsc``,
    ``gain_mdsc``: :mod:`segsam.report.paired`). Table 5/7: the SAM ViT-B baselines before and after plugging in SAWD
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
    per_mask = ordered(read_tables(per_mask_files), config)
    boot = Bootstrap.from_config(config)
    semantic = semantic_summarise(per_mask, boot.n_boot, boot.ci, boot.seed)
    binary = summarise(per_mask, boot.n_boot, boot.ci, boot.seed)
    table2 = semantic_table(semantic)
    table4 = ablation_table(binary, semantic)
    ladder = {"dsc": gains(per_mask, LADDER_STEPS, boot), "mdsc": gains(per_mask, LADDER_STEPS, boot, semantic=True)}
    for metric, found in ladder.items():
        table4 = attach_gains(table4, found, f"gain_{metric}")
    table5 = _plugin_tables(binary, semantic, config, boot, cross_per_mask)
    for table, out in ((table2, out_table2), (table4, out_table4), (table5, out_table5)):
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    display = {m: get_method(m).display for m in per_mask["method"].unique()}
    steps = (
        gains_markdown(ladder["dsc"], "binary DSC avg", display)
        + "\n"
        + gains_markdown(ladder["mdsc"], "mDSC avg", display)
    )
    write_text(out_md, semantic_markdown(table2, table4, table5) + steps)
    return table2, table4, table5

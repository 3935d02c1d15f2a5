"""Tables and figures of the paper, from the evaluation outputs.

One module per table: :mod:`segsam.report.table1` (binary DSC),
:mod:`segsam.report.semantic` (tables 2, 4 and 5/7) and
:mod:`segsam.report.cross` (table 3), sharing the wide layout and its Markdown
(:mod:`segsam.report.render`), the inputs (:mod:`segsam.report.inputs`) and the
paper's side (:mod:`segsam.report.paper`). The table builders and the figures
(:mod:`segsam.report.figures`) do not know each other; the functions here are
what the report rules call, each writing a table and the figure drawn from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Name of an evaluation's summary beside its ``per_mask.parquet``.
SUMMARY = "summary.json"


def evaluated_weights(per_mask_files: Sequence[str | Path]) -> dict[str, dict[str, str]]:
    """{encoder: {"weights", "sha256"}} of the pretrained encoders behind the evaluations.

    Read from each evaluation's ``summary.json`` (beside its per-mask table);
    prompt-free networks start from no pretrained encoder and add nothing.
    """
    found: dict[str, dict[str, str]] = {}
    for path in per_mask_files:
        record = json.loads(Path(path).with_name(SUMMARY).read_text(encoding="utf-8")).get("weights")
        if record:
            found[record["encoder"]] = {"weights": record["weights"], "sha256": record["sha256"]}
    return dict(sorted(found.items()))


def make_table1_with_figure(
    per_mask_files: Sequence[str | Path],
    out_csv: str | Path,
    out_md: str | Path,
    out_json: str | Path,
    out_png: str | Path,
    *,
    config: Mapping[str, Any],
) -> None:
    """Table 1 (CSV, Markdown, provenance JSON) and its bar chart."""
    from segsam.report.figures import modality_bars
    from segsam.report.table1 import make_table1

    weights = evaluated_weights(per_mask_files)
    table = make_table1(per_mask_files, out_csv, out_md, out_json, config=config, weights=weights)
    modality_bars(table, out_png, title=f"Binary DSC per modality ({config['dataset']['name']} dataset)")


def make_table3_with_figure(
    per_mask_files: Mapping[str, Sequence[str | Path]],
    train_masks_parquet: str | Path,
    out_csv: str | Path,
    out_md: str | Path,
    out_png: str | Path,
    *,
    config: Mapping[str, Any],
    per_case_files: Mapping[str, Sequence[str | Path]] | None = None,
) -> None:
    """Table 3 (cross-dataset mDSC, :func:`segsam.report.cross.make_table3`) and its bar chart."""
    from segsam.report.cross import make_table3
    from segsam.report.figures import modality_bars
    from segsam.report.paper import CROSS_DATASET_NAMES

    table = make_table3(
        per_mask_files, train_masks_parquet, out_csv, out_md, config=config, per_case_files=per_case_files
    )
    datasets = list(per_mask_files)
    modality_bars(
        table,
        out_png,
        title="Cross-dataset semantic mDSC (classes seen in training)",
        columns=datasets,
        ylabel="mDSC (%)",
        column_labels=[CROSS_DATASET_NAMES.get(d, d) for d in datasets],
    )

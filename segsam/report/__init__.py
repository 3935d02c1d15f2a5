"""Tables and figures of the paper, from the evaluation outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segsam.models.methods import get_method
from segsam.models.weights import LITEMEDSAM_SHA256, sha256_of


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
    from segsam.report.tables import make_table1

    weights = config["encoder"]["weights"]
    sha = config["encoder"]["sha256"] or (LITEMEDSAM_SHA256 if weights == "litemedsam" else sha256_of(weights))
    vit_b_sha = None
    if any(get_method(m).encoder == "vit_b" for m in config["methods"]):
        vit_b = config["encoder"]["vit_b"]
        vit_b_sha = vit_b["sha256"] or sha256_of(vit_b["weights"])
    table = make_table1(
        per_mask_files, out_csv, out_md, out_json, config=config, weights_sha256=sha, vit_b_sha256=vit_b_sha
    )
    modality_bars(table, out_png, title=f"Binary DSC per modality ({config['dataset']['name']} dataset)")

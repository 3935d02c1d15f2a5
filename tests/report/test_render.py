"""Tests of the shared wide layout and its Markdown (segsam.report.render)."""

from __future__ import annotations

import pandas as pd

from segsam.report.render import markdown_head, to_markdown, value_columns, wide_table


def _long() -> pd.DataFrame:
    """Long means of two methods: MR before CT, as a summary may list them."""
    means = (("mr", 0.5), ("ct", 0.75), ("avg", 0.625))
    return pd.DataFrame(
        [
            {"method": method, "prompt": "box", "modality": m, "mean": v, "low": v - 0.1, "high": v + 0.1, "n": 4}
            for method in ("segsam", "ft_decoder")
            for m, v in means
        ]
    )


def test_wide_table_has_one_row_per_method_and_the_paper_column_order() -> None:
    table = wide_table(_long())
    assert list(table["method"]) == ["segsam", "ft_decoder"]  # order of appearance
    assert value_columns(table) == ["ct", "mr", "avg"]  # the paper's modality order, avg last
    row = table.iloc[0]
    assert (row["row"], row["ct"], row["ct_lo"], row["ct_hi"], row["n_ct"]) == ("SEG-SAM", 75.0, 65.0, 85.0, 4)


def test_markdown_cells_and_the_paper_beside_them() -> None:
    table = wide_table(_long()).assign(paper_ct=[70.0, float("nan")])
    lines = to_markdown(table, ["ct", "avg"]).splitlines()
    assert lines[:2] == markdown_head(["ct", "avg"]) == ["| Method | Prompt | CT | Avg. |", "|---|---|---|---|"]
    assert lines[2] == "| SEG-SAM | box | 75.00 [65.00, 85.00] (n=4); paper 70.00 | 62.50 [52.50, 72.50] (n=4) |"
    assert "paper" not in lines[3]

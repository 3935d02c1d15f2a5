"""Tests of what every results table reads (segsam.report.inputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from segsam.report.inputs import Bootstrap, ordered, read_tables


def test_bootstrap_settings_come_from_the_evaluate_section(config: dict[str, Any]) -> None:
    config["evaluate"].update(bootstrap="50", ci=0.9, seed=7)
    assert Bootstrap.from_config(config) == Bootstrap(n_boot=50, ci=0.9, seed=7)


def test_rows_follow_the_config_order_prompt_first(tmp_path: Path, config: dict[str, Any]) -> None:
    config["methods"] = ["segsam", "ft_decoder"]
    config["evaluate"]["prompts"] = ["box", "point"]
    first = pd.DataFrame({"method": ["ft_decoder", "ft_decoder"], "prompt": ["point", "box"], "i": [0, 1]})
    second = pd.DataFrame({"method": ["segsam", "segsam"], "prompt": ["point", "box"], "i": [2, 3]})
    files = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for frame, path in zip((first, second), files, strict=True):
        frame.to_parquet(path, index=False)
    table = read_tables(files)
    assert list(table.index) == [0, 1, 2, 3]
    assert list(ordered(table, config)["i"]) == [3, 1, 2, 0]

"""What every results table reads: the evaluations' per-mask tables and the bootstrap settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Bootstrap:
    """The bootstrap of the tables' intervals (config ``evaluate``: ``bootstrap``, ``ci``, ``seed``)."""

    n_boot: int  # resamples
    ci: float  # interval mass
    seed: int  # resampling seed

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Bootstrap:
        """The settings of the validated config's ``evaluate`` section."""
        cfg = config["evaluate"]
        return cls(n_boot=int(cfg["bootstrap"]), ci=float(cfg["ci"]), seed=int(cfg["seed"]))


def read_tables(files: Sequence[str | Path]) -> pd.DataFrame:
    """The parquet tables, one after the other (a fresh index)."""
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)


def ordered(per_mask: pd.DataFrame, config: Mapping[str, Any]) -> pd.DataFrame:
    """Per-mask rows in config order: by prompt (``evaluate.prompts``), then method (``methods``), stably."""
    order = {m: i for i, m in enumerate(config["methods"])}
    prompt_order = {p: i for i, p in enumerate(config["evaluate"]["prompts"])}
    return per_mask.sort_values(
        ["prompt", "method"], key=lambda s: s.map(prompt_order) if s.name == "prompt" else s.map(order), kind="stable"
    )

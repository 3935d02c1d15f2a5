"""The annotated share of the training split a run learns from (``train.label_fraction``).

PG-SAM is reported trained with 10% of the annotations as well as with all
of them. Here that regime keeps a seeded subset of the training *cases*
(never of slices: the slices of one volume are too alike to count as separate
annotations) and drops every slice of the other cases:

* per modality, ``max(1, floor(fraction * n + 0.5))`` of its n training cases,
  so that every modality keeps at least one case;
* drawn without replacement by a generator of its own, seeded with
  ``train.seed`` (the training run's prompt and order streams are not
  touched), over the modalities in sorted order and each modality's cases in
  sorted order, so the same config picks the same cases on every machine;
* ``fraction = 1`` keeps the split as it is and draws nothing.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["kept_cases", "label_subset"]


def kept_cases(train_table: pd.DataFrame, fraction: float, seed: int) -> list[str]:
    """The training cases a run with ``train.label_fraction = fraction`` learns from.

    Args:
        train_table: The train split's rows of the masks index (columns ``case``, ``modality``).
        fraction: Share of the cases to keep, in (0, 1].
        seed: ``train.seed``.

    Returns:
        The kept case ids, sorted.

    Raises:
        ValueError: If ``fraction`` is outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"config key 'train.label_fraction' must lie in (0, 1], got {fraction}")
    cases = train_table[["case", "modality"]].drop_duplicates("case")
    if fraction == 1:
        return sorted(cases["case"])
    rng = np.random.default_rng(seed)
    kept: list[str] = []
    for _, group in cases.groupby("modality", sort=True):
        names = sorted(group["case"])
        count = max(1, math.floor(fraction * len(names) + 0.5))
        kept += [names[i] for i in rng.choice(len(names), size=count, replace=False)]
    return sorted(kept)


def label_subset(train_table: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """The rows of the kept cases (:func:`kept_cases`); the table itself when ``fraction`` is 1."""
    if fraction == 1:
        return train_table
    return train_table[train_table["case"].isin(kept_cases(train_table, fraction, seed))]

"""train.label_fraction: a seeded subset of the training cases, never of slices (segsam.train.subset)."""

from __future__ import annotations

import pandas as pd
import pytest

from segsam.train.subset import kept_cases, label_subset


def _table(cases_per_modality: dict[str, int], slices: int = 3) -> pd.DataFrame:
    rows = [
        {"case": f"{modality}{c:02d}", "modality": modality, "image": f"{modality}{c:02d}_{s}.png", "mask": f"m{s}"}
        for modality, n in cases_per_modality.items()
        for c in range(n)
        for s in range(slices)
    ]
    return pd.DataFrame(rows)


def test_a_fraction_keeps_whole_cases_seeded_per_modality() -> None:
    table = _table({"ct": 20, "mr": 5})
    kept = kept_cases(table, 0.1, seed=0)
    assert kept == kept_cases(table, 0.1, seed=0)  # seeded: the same cases every time
    assert kept != kept_cases(table, 0.1, seed=1)
    by_modality = table.drop_duplicates("case").set_index("case").loc[kept, "modality"].value_counts()
    assert by_modality.to_dict() == {"ct": 2, "mr": 1}  # 10% of 20, and at least one of 5 (0.5 rounds up)
    subset = label_subset(table, 0.1, seed=0)
    assert sorted(subset["case"].unique()) == kept
    assert len(subset) == 3 * len(kept)  # every slice of a kept case, none of the others
    assert set(subset["image"]) == set(table.loc[table["case"].isin(kept), "image"])


def test_the_whole_split_draws_nothing() -> None:
    table = _table({"ct": 4})
    assert label_subset(table, 1.0, seed=0) is table
    assert kept_cases(table, 1.0, seed=3) == sorted(table["case"].unique())
    assert kept_cases(_table({"ct": 1}), 0.01, seed=0) == ["ct00"]


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_a_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="train.label_fraction"):
        kept_cases(_table({"ct": 4}), fraction, seed=0)

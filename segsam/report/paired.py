"""Paired comparisons of two methods on the same saved prompts, with intervals resampled by case.

Every promptable method is scored on the same saved prompts, so the
difference between two methods is measured mask by mask. The masks of one
case are not independent (neighbouring slices, three axes of one volume), so
the interval of a difference resamples *cases*, within each modality, and
recomputes both methods' statistics on the same resampled cases
(docs/metrics.md#paired-gains).

Statistics, as in the tables: binary DSC ``avg`` = mean over modalities of
the modality's mean DSC; semantic mDSC ``avg`` = mean over modalities of the
mean over classes of the class's mean ``sem_dsc``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from segsam.report.inputs import Bootstrap

#: Table 1: each method set against the baseline it extends (SEG-SAM's and SAWD's gains).
TABLE1_BASELINES = {
    "segsam": "ft_decoder",
    "ft_sam+sawd": "ft_sam",
    "sam_med2d+sawd": "sam_med2d",
    "medsam+sawd": "medsam",
    "med_sa+sawd": "med_sa",
}
#: Table 4: each rung of the ablation ladder against the rung it adds a component to.
LADDER_STEPS = {
    "sawd_pmt": "ft_decoder",
    "sawd_unpmt": "sawd_pmt",
    "sawd_sem": "sawd_pmt",
    "t2vse": "sawd_unpmt",
    "cmsa": "t2vse",
    "segsam": "t2vse",
}
GAIN_COLUMNS = ["gain", "gain_lo", "gain_hi", "n_cases", "n_pairs"]


@dataclass(frozen=True)
class Paired:
    """Two methods' scores on the same prompts, with what the statistics group by.

    Attributes:
        a: The method's scores, one per paired (mask, prompt).
        b: The baseline's scores on the same rows.
        modality: Modality code of each row.
        klass: Class code of each row (semantic statistic).
        case_rows: Row indices of each case, and each case's modality code.
    """

    a: np.ndarray
    b: np.ndarray
    modality: np.ndarray
    klass: np.ndarray
    case_rows: list[tuple[int, np.ndarray]]


def pair(per_mask: pd.DataFrame, method: str, baseline: str, prompt: str, column: str) -> Paired | None:
    """The rows both methods scored for ``prompt`` (joined on the mask), or None when there are none."""
    keep = ["mask", "case", "modality", "class_id", column]
    a = per_mask[(per_mask["method"] == method) & (per_mask["prompt"] == prompt)][keep]
    b = per_mask[(per_mask["method"] == baseline) & (per_mask["prompt"] == prompt)][["mask", column]]
    joined = a.merge(b, on="mask", suffixes=("_a", "_b")).dropna(subset=[f"{column}_a", f"{column}_b"])
    if joined.empty:
        return None
    modality = pd.factorize(joined["modality"])[0]
    cases = pd.factorize(joined["case"])[0]
    case_rows = [
        (int(modality[rows[0]]), rows) for rows in (np.flatnonzero(cases == c) for c in range(cases.max() + 1))
    ]
    return Paired(
        a=joined[f"{column}_a"].to_numpy(np.float64),
        b=joined[f"{column}_b"].to_numpy(np.float64),
        modality=modality,
        klass=pd.factorize(joined["class_id"])[0],
        case_rows=case_rows,
    )


def modality_mean(values: np.ndarray, modality: np.ndarray, klass: np.ndarray, per_class: bool) -> float:
    """Mean over modalities of the modality's mean (of its class means, with ``per_class``)."""
    if per_class:  # class means first, then each modality's mean over its classes
        groups = modality * (klass.max() + 1) + klass
        sums, counts = np.bincount(groups, weights=values), np.bincount(groups)
        present = counts > 0
        class_means = sums[present] / counts[present]
        class_modality = np.flatnonzero(present) // (klass.max() + 1)
        sums, counts = np.bincount(class_modality, weights=class_means), np.bincount(class_modality)
    else:
        sums, counts = np.bincount(modality, weights=values), np.bincount(modality)
    present = counts > 0
    return float(np.mean(sums[present] / counts[present]))


def _draws(paired: Paired, boot: Bootstrap) -> list[np.ndarray]:
    """Row indices of each bootstrap resample: cases drawn with replacement within each modality."""
    rng = np.random.default_rng(boot.seed)
    by_modality: dict[int, list[np.ndarray]] = {}
    for modality, rows in paired.case_rows:
        by_modality.setdefault(modality, []).append(rows)
    draws = []
    for _ in range(boot.n_boot):
        picked = []
        for groups in by_modality.values():
            picked.extend(groups[k] for k in rng.integers(0, len(groups), size=len(groups)))
        draws.append(np.concatenate(picked))
    return draws


def paired_gain(paired: Paired, boot: Bootstrap, per_class: bool) -> dict[str, float]:
    """The method's statistic minus the baseline's, with its case-bootstrap interval (percent points)."""

    def gain(rows: np.ndarray | slice) -> float:
        modality, klass = paired.modality[rows], paired.klass[rows]
        return modality_mean(paired.a[rows], modality, klass, per_class) - modality_mean(
            paired.b[rows], modality, klass, per_class
        )

    point = gain(slice(None))
    samples = np.array([gain(rows) for rows in _draws(paired, boot)])
    alpha = (1.0 - boot.ci) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha]) if len(samples) else (np.nan, np.nan)
    return {
        "gain": round(100 * point, 2),
        "gain_lo": round(100 * float(low), 2),
        "gain_hi": round(100 * float(high), 2),
        "n_cases": len(paired.case_rows),
        "n_pairs": len(paired.a),
    }


def gains(
    per_mask: pd.DataFrame, baselines: dict[str, str], boot: Bootstrap, *, semantic: bool = False
) -> pd.DataFrame:
    """Paired gain of every evaluated method over its baseline, per prompt.

    Args:
        per_mask: The per-mask tables of the methods (and their baselines).
        baselines: method -> the method it is compared with (:data:`TABLE1_BASELINES`,
            :data:`LADDER_STEPS`).
        boot: Resamples, interval mass and seed.
        semantic: Compare semantic mDSC (``sem_dsc``, class means) instead of binary DSC.

    Returns:
        Columns method, baseline, prompt and :data:`GAIN_COLUMNS`; a pair with no shared
        prompt (a baseline not evaluated, or no semantic output) has no row.
    """
    rows = []
    column = "sem_dsc" if semantic else "dsc"
    evaluated = set(per_mask["method"])
    for method, baseline in baselines.items():
        if method not in evaluated or baseline not in evaluated:
            continue
        for prompt in per_mask.loc[per_mask["method"] == method, "prompt"].unique():
            paired = pair(per_mask, method, baseline, prompt, column)
            if paired is not None:
                rows.append(
                    {"method": method, "baseline": baseline, "prompt": prompt} | paired_gain(paired, boot, semantic)
                )
    return pd.DataFrame(rows, columns=["method", "baseline", "prompt", *GAIN_COLUMNS])


def attach_gains(table: pd.DataFrame, found: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Add ``<prefix>``, ``<prefix>_lo``, ``<prefix>_hi`` and the baseline to the table's (method, prompt) rows."""
    renamed = found.rename(
        columns={"gain": prefix, "gain_lo": f"{prefix}_lo", "gain_hi": f"{prefix}_hi", "baseline": f"{prefix}_vs"}
    )
    keep = ["method", "prompt", f"{prefix}_vs", prefix, f"{prefix}_lo", f"{prefix}_hi"]
    return table.merge(renamed[keep], on=["method", "prompt"], how="left")


def gains_markdown(found: pd.DataFrame, what: str, display: dict[str, str]) -> str:
    """The paired gains for people: method vs baseline, gain [interval], cases and pairs."""
    if found.empty:
        return ""
    lines = [
        f"### Paired gains in {what} (percent points; 95% interval resampling cases)",
        "",
        "| Method | vs | Prompt | Gain | Cases | Pairs |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in found.itertuples(index=False):
        cell = f"{r.gain:+.2f} [{r.gain_lo:+.2f}, {r.gain_hi:+.2f}]"
        lines.append(
            f"| {display.get(r.method, r.method)} | {display.get(r.baseline, r.baseline)} | {r.prompt} | {cell} "
            f"| {r.n_cases} | {r.n_pairs} |"
        )
    return "\n".join(lines) + "\n"

"""Metrics (docs/metrics.md): DSC per prompted mask, per-modality means, ``avg``, bootstrap CIs.

Rules, written down once:

* DSC of one prompted mask: the decoder's logits are resized back onto the
  slice and thresholded at ``threshold`` on the sigmoid (0.5).
* Empty masks: ground-truth masks are never empty (the slice stage drops
  masks below 0.153% of the slice). Should an empty ground truth reach the
  metric anyway, DSC is 1 when the prediction is empty too and 0 otherwise
  (MONAI ``compute_dice(..., ignore_empty=False)``). An empty prediction for
  a non-empty mask scores 0.
* Per modality: the mean DSC over the masks of that modality.
* ``avg``: the mean of the modality means (not of all masks), as in the
  paper's tables.
* 95% intervals: percentile bootstrap over masks, resampled within each
  modality; for ``avg`` every modality is resampled and the means of the
  modality means form the distribution.
* HD95 of one prompted mask: the symmetric 95th-percentile Hausdorff
  distance between the boundaries of prediction and ground truth, in mm
  (the slice's isotropic pixel spacing; MONAI
  ``compute_hausdorff_distance``). An empty prediction scores the slice's
  diagonal in mm (the largest distance the slice allows), so a method gains
  nothing by predicting nothing. Unknown spacing (the SA-Med2D-16M release
  gives none) leaves HD95 undefined (NaN); summaries then leave the mask out
  and count it in ``n_undefined``. Summaries give the median, HD95 being
  heavy-tailed, and the mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance


def dice_scores(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """DSC per mask.

    Args:
        pred: N x H x W bool predictions.
        target: N x H x W bool ground truth.

    Returns:
        N float DSC values in [0, 1].
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    scores = compute_dice(pred[:, None].float(), target[:, None].float(), include_background=True, ignore_empty=False)
    return scores[:, 0].numpy().astype(np.float64)


def hd95_mm(pred: torch.Tensor, target: torch.Tensor, spacing: Sequence[float]) -> np.ndarray:
    """HD95 per mask, in mm (rules in the module docstring).

    Args:
        pred: N x H x W bool predictions.
        target: N x H x W bool ground truth, none empty.
        spacing: N pixel sides in mm (NaN: unknown).

    Returns:
        N float HD95 values in mm (NaN where the spacing is unknown).

    Raises:
        ValueError: Shapes differ, or a ground-truth mask is empty.
    """
    if pred.shape != target.shape or len(spacing) != pred.shape[0]:
        raise ValueError(
            f"prediction {tuple(pred.shape)}, target {tuple(target.shape)} and {len(spacing)} spacings do not match"
        )
    pred_np, target_np = pred.numpy().astype(bool), target.numpy().astype(bool)
    if not target_np.any(axis=(1, 2)).all():
        raise ValueError("HD95 needs a non-empty ground-truth mask")
    spacing = np.asarray(spacing, dtype=np.float64)
    height, width = pred_np.shape[1:]
    out = np.hypot(height, width) * spacing  # empty prediction: the slice's diagonal
    known = np.isfinite(spacing)
    for i in np.flatnonzero(known & pred_np.any(axis=(1, 2))):
        # HD95 depends only on the two boundaries: crop to their joint box (1 px of background
        # around it keeps every boundary pixel) so that each call costs the organ, not the slice
        both = pred_np[i] | target_np[i]
        rows, cols = np.flatnonzero(both.any(1)), np.flatnonzero(both.any(0))
        window = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
        distance = compute_hausdorff_distance(
            torch.from_numpy(pred_np[i][window][None, None]).float(),
            torch.from_numpy(target_np[i][window][None, None]).float(),
            include_background=True,
            percentile=95,
            spacing=[[float(spacing[i])] * 2],
        )
        out[i] = float(distance[0, 0])
    out[~known] = np.nan
    return out


def distance_summary(per_mask: pd.DataFrame) -> pd.DataFrame:
    """HD95 per (method, prompt, modality incl. ``avg``): median, mean, n and n_undefined.

    ``avg`` is the mean of the modality medians (and of the modality means), as
    for DSC.

    Args:
        per_mask: Columns ``method``, ``prompt``, ``modality``, ``hd95_mm``.
    """
    rows = []
    for (method, prompt), frame in per_mask.groupby(["method", "prompt"], sort=False):
        modality_rows = []
        for modality, group in frame.groupby("modality", sort=True):
            values = group["hd95_mm"].to_numpy(dtype=np.float64)
            defined = values[np.isfinite(values)]
            modality_rows.append(
                {
                    "method": method,
                    "prompt": prompt,
                    "modality": modality,
                    "median": float(np.median(defined)) if len(defined) else float("nan"),
                    "mean": float(defined.mean()) if len(defined) else float("nan"),
                    "n": len(defined),
                    "n_undefined": len(values) - len(defined),
                }
            )
        modalities = pd.DataFrame(modality_rows)
        rows += [
            *modality_rows,
            {
                "method": method,
                "prompt": prompt,
                "modality": "avg",
                "median": float(modalities["median"].mean(skipna=False)),
                "mean": float(modalities["mean"].mean(skipna=False)),
                "n": int(modalities["n"].sum()),
                "n_undefined": int(modalities["n_undefined"].sum()),
            },
        ]
    return pd.DataFrame(rows, columns=["method", "prompt", "modality", "median", "mean", "n", "n_undefined"])


def bootstrap_modality_means(
    groups: Sequence[np.ndarray], n_boot: int, ci: float, seed: int
) -> tuple[float, float, float]:
    """Mean of per-group means and its percentile-bootstrap interval.

    Args:
        groups: One array of per-mask scores per modality (a single group
            gives the ordinary mean of that modality).
        n_boot: Bootstrap resamples (0: no interval, NaNs returned).
        ci: Interval mass, e.g. 0.95.
        seed: Seed of the resampling.

    Returns:
        (mean of group means, low, high).
    """
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    point = float(np.mean([g.mean() for g in groups]))
    if n_boot <= 0:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.zeros(n_boot)
    for g in groups:
        idx = rng.integers(0, len(g), size=(n_boot, len(g)))
        draws += g[idx].mean(axis=1)
    draws /= len(groups)
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return point, float(low), float(high)


def summarise(per_mask: pd.DataFrame, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """Long table of means: one row per (method, prompt, modality incl. ``avg``).

    Args:
        per_mask: Columns ``method``, ``prompt``, ``modality``, ``dsc``.

    Returns:
        Columns method, prompt, modality, mean, low, high, n.
    """
    rows = []
    for (method, prompt), frame in per_mask.groupby(["method", "prompt"], sort=False):
        groups = {m: f["dsc"].to_numpy() for m, f in frame.groupby("modality", sort=True)}
        for modality, scores in groups.items():
            mean, low, high = bootstrap_modality_means([scores], n_boot, ci, seed)
            rows.append(
                {
                    "method": method,
                    "prompt": prompt,
                    "modality": modality,
                    "mean": mean,
                    "low": low,
                    "high": high,
                    "n": len(scores),
                }
            )
        mean, low, high = bootstrap_modality_means(list(groups.values()), n_boot, ci, seed)
        rows.append(
            {
                "method": method,
                "prompt": prompt,
                "modality": "avg",
                "mean": mean,
                "low": low,
                "high": high,
                "n": len(frame),
            }
        )
    return pd.DataFrame(rows, columns=["method", "prompt", "modality", "mean", "low", "high", "n"])


def class_mean(scores: np.ndarray, classes: np.ndarray) -> float:
    """Mean over classes of the per-class mean score (each class weighs the same)."""
    return float(np.mean([scores[classes == c].mean() for c in np.unique(classes)]))


def semantic_summarise(per_mask: pd.DataFrame, n_boot: int, ci: float, seed: int) -> pd.DataFrame:
    """Long table of semantic mDSC: one row per (method, prompt, modality incl. ``avg``).

    The rule (docs/metrics.md#semantic-mdsc): a prompted object's semantic prediction (SAWD mask and
    class) counts for the class it is labelled with, and a wrong class scores 0
    (``sem_dsc``, see :mod:`segsam.evaluate.run`). mDSC of a modality = mean
    over its classes of the class's mean ``sem_dsc``; ``avg`` = mean of the
    modality mDSCs. Intervals: percentile bootstrap over masks within each
    modality, recomputing the class means of every resample. Methods without
    a semantic decoder (``sem_dsc`` NaN) are left out.

    Args:
        per_mask: Columns ``method``, ``prompt``, ``modality``, ``class_id``, ``sem_dsc``.
    """
    rows = []
    frame_all = per_mask.dropna(subset=["sem_dsc"]) if "sem_dsc" in per_mask else per_mask.iloc[0:0]
    for (method, prompt), frame in frame_all.groupby(["method", "prompt"], sort=False):
        rng = np.random.default_rng(seed)
        modality_draws = []
        modality_means = []
        for modality, group in frame.groupby("modality", sort=True):
            scores = group["sem_dsc"].to_numpy(dtype=np.float64)
            classes = group["class_id"].to_numpy()
            mean = class_mean(scores, classes)
            draws = (
                np.array(
                    [
                        class_mean(scores[idx], classes[idx])
                        for idx in rng.integers(0, len(scores), size=(n_boot, len(scores)))
                    ]
                )
                if n_boot > 0
                else np.array([])
            )
            modality_means.append(mean)
            modality_draws.append(draws)
            low, high = np.quantile(draws, [(1 - ci) / 2, 1 - (1 - ci) / 2]) if n_boot > 0 else (np.nan, np.nan)
            rows.append(
                {
                    "method": method,
                    "prompt": prompt,
                    "modality": modality,
                    "mean": mean,
                    "low": float(low),
                    "high": float(high),
                    "n": len(scores),
                    "n_classes": int(len(np.unique(classes))),
                }
            )
        avg_draws = np.mean(modality_draws, axis=0) if n_boot > 0 else np.array([])
        low, high = np.quantile(avg_draws, [(1 - ci) / 2, 1 - (1 - ci) / 2]) if n_boot > 0 else (np.nan, np.nan)
        rows.append(
            {
                "method": method,
                "prompt": prompt,
                "modality": "avg",
                "mean": float(np.mean(modality_means)),
                "low": float(low),
                "high": float(high),
                "n": len(frame),
                "n_classes": int(frame["class_id"].nunique()),
            }
        )
    return pd.DataFrame(rows, columns=["method", "prompt", "modality", "mean", "low", "high", "n", "n_classes"])

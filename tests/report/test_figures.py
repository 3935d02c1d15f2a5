"""Figures: the qualitative panel draws every method's example masks, prompted or prompt-free."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segsam.data.io import read_png, write_png
from segsam.report.figures import qualitative_panel


@pytest.mark.parametrize("methods", [("ft_decoder", "unet"), ("unet",)])
def test_qualitative_panel_from_the_saved_prompts(tmp_path: Path, methods: tuple[str, ...]) -> None:
    image = tmp_path / "ct--demo--case_a--z_0000.png"
    write_png(image, np.full((64, 64), 90, np.uint8))
    rows = []
    for k, (y0, x0) in enumerate(((5, 5), (30, 30))):
        mask = np.zeros((64, 64), np.uint8)
        mask[y0 : y0 + 20, x0 : x0 + 20] = 255
        path = tmp_path / f"{image.stem}--0001_{k:03d}.png"
        write_png(path, mask)
        rows += [{"image": str(image), "mask": str(path), "class_id": 1, "prompt": p} for p in ("box", "point")]
    prompts = tmp_path / "prompts.parquet"
    pd.DataFrame(rows).to_parquet(prompts)
    folders = []
    for method in methods:
        folder = tmp_path / method
        folder.mkdir()
        # a prompted method saves one mask per object; a prompt-free one its class region once per class
        for row in rows[:: 2] if method != "unet" else rows[:1]:
            write_png(folder / Path(row["mask"]).name, read_png(row["mask"]))
        folders.append(folder)
    out = tmp_path / "panel.png"
    qualitative_panel(prompts, folders, list(methods), out)
    assert read_png(out).shape[1] > 100 * (len(methods) + 1)  # one column per method after the ground truth

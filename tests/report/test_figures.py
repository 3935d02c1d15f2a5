"""Figures: the qualitative panel draws every method's example masks, prompted or prompt-free; the
table 1 bars keep one colour per method across the prompt panels, however many methods are listed;
the training curves mark the held-out class accuracy after the class-head refit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segsam.data.io import read_png, write_png
from segsam.report.figures import modality_bars, modality_bars_figure, qualitative_panel


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
        for row in rows[::2] if method != "unet" else rows[:1]:
            write_png(folder / Path(row["mask"]).name, read_png(row["mask"]))
        folders.append(folder)
    out = tmp_path / "panel.png"
    qualitative_panel(prompts, folders, list(methods), out)
    assert read_png(out).shape[1] > 100 * (len(methods) + 1)  # one column per method after the ground truth


def _table1(methods: list[str]) -> pd.DataFrame:
    rows = []
    for prompt in ("box", "point"):
        for k, method in enumerate(methods):
            value = 10.0 + k
            rows.append(
                {
                    "row": method,
                    "prompt": prompt,
                    **{c: value for c in ("ct", "mr", "avg")},
                    **{f"{c}_lo": value - 1 for c in ("ct", "mr", "avg")},
                    **{f"{c}_hi": value + 1 for c in ("ct", "mr", "avg")},
                }
            )
    return pd.DataFrame(rows)


def test_table1_bars_one_panel_per_prompt_and_one_colour_per_method(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    methods = [f"method {k}" for k in range(12)]  # more than tab10's colours: the config/vit_b.yaml overlay has 12
    fig = modality_bars_figure(_table1(methods), "t")
    try:
        panels = [ax for ax in fig.axes if ax.patches]
        assert [ax.get_title() for ax in panels] == ["box prompt", "point prompt"]
        for ax in panels:
            assert len(ax.patches) == len(methods) * 3  # a bar per method and column (CT, MR, Avg.)
        legend = fig.legends[0]
        assert [t.get_text() for t in legend.get_texts()] == methods  # one entry per method, not per (method, prompt)
        colours = [tuple(h.get_facecolor()) for h in legend.legend_handles]
        assert len(set(colours)) == len(methods)
        # a method's bars have its legend colour in both panels
        for ax in panels:
            first = ax.patches[::3]
            assert [tuple(p.get_facecolor()) for p in first] == colours
    finally:
        plt.close(fig)
    out = tmp_path / "table1.png"
    modality_bars(_table1(methods[:3]), out, "t")
    assert read_png(out).shape[1] > 400


def test_table3_bars_give_each_panel_only_its_own_methods() -> None:
    # table 3: the promptable methods have box rows only, the conventional networks "none" rows only
    table = pd.DataFrame(
        [
            {
                "row": "SEG-SAM",
                "prompt": "box",
                "kits23": 70.0,
                "kits23_lo": 60.0,
                "kits23_hi": 80.0,
                "amos": 50.0,
                "amos_lo": 45.0,
                "amos_hi": 55.0,
            },
            {
                "row": "MedSAM+SAWD",
                "prompt": "box",
                "kits23": 65.0,
                "kits23_lo": 60.0,
                "kits23_hi": 70.0,
                "amos": 40.0,
                "amos_lo": 35.0,
                "amos_hi": 45.0,
            },
            {
                "row": "nnU-Net (2D)",
                "prompt": "none",
                "kits23": 30.0,
                "kits23_lo": 25.0,
                "kits23_hi": 35.0,
                "amos": 20.0,
                "amos_lo": 15.0,
                "amos_hi": 25.0,
            },
        ]
    )
    fig = modality_bars_figure(
        table, "t3", columns=["kits23", "amos"], ylabel="mDSC (%)", column_labels=["KiTS23", "AMOS"]
    )
    box, none = fig.axes[:2]
    assert (box.get_title(), none.get_title()) == ("box prompt", "no prompt")
    assert [t.get_text() for t in box.get_xticklabels()] == ["KiTS23", "AMOS"]
    assert box.get_ylabel() == "mDSC (%)"
    # two methods share the box panel's slots; the network alone fills its panel's, centred on the tick
    assert len(box.patches) == 4 and len(none.patches) == 2
    centres = sorted(p.get_x() + p.get_width() / 2 for p in none.patches)
    assert centres == pytest.approx([0.0, 1.0])
    assert none.patches[0].get_width() == pytest.approx(0.8)
    assert sorted(p.get_height() for p in none.patches) == [20.0, 30.0]
    assert box.get_xlim() == pytest.approx((-0.5, 1.5))


def test_training_curves_mark_the_heldout_accuracy_after_the_class_head_refit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    from segsam.report import figures

    history = [{"epoch": e, "loss": 2.0 / e, "class_acc": 0.2 * e, "heldout_class_acc": 0.25 * e} for e in (1, 2)]
    summaries = []
    for method, refit in (("segsam", {"heldout_class_acc": 0.84}), ("sawd_pmt", None)):
        path = tmp_path / f"{method}.json"
        path.write_text(json.dumps({"method": method, "history": history, "class_head_refit": refit}))
        summaries.append(path)
    closed = []
    monkeypatch.setattr(figures.plt, "close", closed.append)
    figures.training_curves(summaries, tmp_path / "curves.png")
    try:
        stars = [line for line in closed[0].axes[1].lines if line.get_marker() == "*"]
        assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [([2], [0.84])]  # segsam's only
        assert read_png(tmp_path / "curves.png").shape[1] > 400
    finally:
        plt.close(closed[0])

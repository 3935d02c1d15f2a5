"""The random SAM ViT-B stand-in: official key layout, a reproducible sha256 printed by the CLI, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from segsam.cli import main
from segsam.models.build import build_model
from segsam.models.stand_in import official_sam
from segsam.models.weights import load_state_dict, sha256_of


def test_cli_writes_the_official_layout_and_prints_its_sha256(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mirror" / "sam_vit_b_01ec64.pth"
    assert main(["random-vit-b", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == sha256_of(out)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary file left beside it
    state = load_state_dict(out)
    reference = official_sam().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in reference.items()}
    assert state["image_encoder.pos_embed"].abs().sum() > 0  # drawn, not SAM's zeros: resizing it matters
    build_model(
        "ft_sam", encoder_weights=out, num_classes=3, text_dim=None
    )  # fits the 256-input ViT-B methods (tensors resized)
    # the same seed gives the same bytes (and digest) in another folder and under another name
    assert main(["random-vit-b", str(tmp_path / "again.pth")]) == 0
    assert capsys.readouterr().out.strip() == printed

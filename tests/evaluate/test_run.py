"""Scoring one test slice: a promptable model (per mask and prompt) and a prompt-free network
(the per-(slice, class) rule of the README's "Metrics")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from segsam.config import load_config
from segsam.data.io import write_png
from segsam.data.vocabulary import Vocabulary
from segsam.evaluate.run import NO_PROMPT, PER_MASK_COLUMNS, RowMasks, prompt_free_rows, prompted_rows
from segsam.methods import get_method
from segsam.models.build import build_model, with_backbone
from segsam.models.segsam_net import ModelOutput, PromptableModel
from segsam.models.vit import ViTGeometry

TEXT = 32
SMALL_VIT = ViTGeometry(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))


class FixedLabels(nn.Module):
    """A 'network' whose B x (C + 1) x S x S logits spell out one fixed label map."""

    def __init__(self, labels: torch.Tensor, channels: int) -> None:
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(labels, channels).permute(2, 0, 1).float() * 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(images.shape[0], -1, -1, -1)


def test_prompt_free_rows_score_each_class_of_the_slice(tmp_path: Path) -> None:
    vocabulary = Vocabulary.read(load_config()["vocabulary"])
    a, b, c = vocabulary.ids[:3]
    # a 128 x 128 slice: class a has two objects, class b one; the model finds a's two objects,
    # calls b's object class c, and adds a class-c blob where the slice has no class c
    image = tmp_path / "ct--demo--case--z_0000.png"
    write_png(image, np.full((128, 128), 100, np.uint8))
    truth = {}
    for name, (y0, y1, x0, x1) in {"a0": (10, 30, 10, 30), "a1": (60, 80, 10, 30), "b0": (40, 70, 60, 100)}.items():
        mask = np.zeros((128, 128), np.uint8)
        mask[y0:y1, x0:x1] = 255
        truth[name] = tmp_path / f"{image.stem}--{name}.png"
        write_png(truth[name], mask)
    labels = torch.zeros(256, 256, dtype=torch.long)  # model frame = 2 x the slice
    labels[20:60, 20:60] = labels[120:160, 20:60] = 1  # class a (index 0)
    labels[80:140, 120:200] = 3  # b's object, called class c (index 2)
    labels[200:240, 200:240] = 3  # spurious c
    model = PromptableModel(num_classes=len(vocabulary), semantic_net=FixedLabels(labels, len(vocabulary) + 1)).eval()
    group = pd.DataFrame(
        [
            {
                "mask": str(truth[n]),
                "image": str(image),
                "case": "case",
                "modality": "ct",
                "class_id": cls,
                "class_name": str(cls),
                "prompt": prompt,
                "spacing_mm": 1.5,
            }
            for n, cls in (("a0", a), ("a1", a), ("b0", b))
            for prompt in ("box", "point")
        ]
    )
    with torch.inference_mode():
        rows, shown = prompt_free_rows(model, str(image), group, 256, vocabulary.class_index)
    assert list(rows.columns) == PER_MASK_COLUMNS
    assert rows["prompt"].tolist() == [NO_PROMPT, NO_PROMPT]  # one row per class present, whatever the prompts
    by = rows.set_index("class_id")
    assert by.loc[a, "dsc"] == by.loc[a, "sem_dsc"] == 1.0  # both objects of a against their union
    assert by.loc[a, "gt_area"] == 800 and by.loc[a, "hd95_mm"] == 0.0
    assert by.loc[b, "sem_dsc"] == 0.0 and by.loc[b, "pred_class_id"] == -1  # wrong class: 0 for the true one
    assert c not in by.index  # a class only in the prediction is not scored
    assert set(shown) == {str(truth["a0"]), str(truth["b0"])} and shown[str(truth["a0"])][0].sum() == 800
    assert shown[str(truth["a0"])][1].sum() == 800  # the ground truth beside it: the union of both objects of a


def _tiny_model(method: str, classes: int) -> PromptableModel:
    """A random-weight model of the method on a small ViT-B geometry (16 x 16 embeddings), in eval mode."""
    torch.manual_seed(0)
    spec = with_backbone(get_method(method), "vit_b")
    return build_model(
        spec,
        encoder_weights=None,
        num_classes=classes,
        text_dim=TEXT,
        with_image_encoder=False,
        vit_geometry=SMALL_VIT,
    ).eval()


def _prompted_slice(tmp_path: Path, a: int, b: int) -> pd.DataFrame:
    """A 100 x 150 slice with one class-a and one class-b object, each with a box and a point prompt."""
    image = tmp_path / "ct--demo--case--z_0000.png"
    write_png(image, np.full((100, 150), 100, np.uint8))
    rows = []
    for name, cls, (y0, y1, x0, x1) in (("a0", a, (10, 40, 20, 60)), ("b0", b, (50, 90, 80, 140))):
        mask = np.zeros((100, 150), np.uint8)
        mask[y0:y1, x0:x1] = 255
        path = tmp_path / f"{image.stem}--{name}.png"
        write_png(path, mask)
        for prompt in ("box", "point"):
            rows.append(
                {
                    "mask": str(path),
                    "image": str(image),
                    "case": "case",
                    "modality": "ct",
                    "axis": "z",
                    "slice": 0,
                    "class_id": cls,
                    "class_name": str(cls),
                    "prompt": prompt,
                    "x0": float(x0),
                    "y0": float(y0),
                    "x1": float(x1 - 1),
                    "y1": float(y1 - 1),
                    "px": float((x0 + x1) // 2),
                    "py": float((y0 + y1) // 2),
                    "spacing_mm": 1.5,
                }
            )
    return pd.DataFrame(rows)


def test_prompted_rows_threshold_the_logits_on_the_slice_and_apply_the_semantic_rule(tmp_path: Path) -> None:
    vocabulary = Vocabulary.read(load_config()["vocabulary"])
    a, b = vocabulary.ids[:2]
    group = _prompted_slice(tmp_path, a, b)
    model = _tiny_model("segsam", len(vocabulary))
    with torch.no_grad():
        model.sawd.class_head.layers[-1].bias[vocabulary.class_index[a]] += 100.0  # every object is called a
    g = torch.Generator().manual_seed(0)
    embedding = torch.randn(1, 256, 16, 16, generator=g)
    text = torch.randn(len(vocabulary), TEXT, generator=g)
    image = group["image"].iloc[0]

    def score(threshold: float) -> tuple[pd.DataFrame, RowMasks]:
        with torch.inference_mode():
            return prompted_rows(
                model, image, group, embedding, size=256, threshold=threshold, vocabulary=vocabulary, text=text
            )

    # the random model's mask logits are within +-1: p = 0.01 keeps the whole slice, p = 0.99 nothing
    rows, masks = score(0.01)
    assert list(rows.columns) == PER_MASK_COLUMNS
    assert rows["prompt"].tolist() == ["box", "point", "box", "point"]
    assert masks.predicted.shape == masks.truth.shape == (4, 100, 150)  # mapped back onto the slice
    assert masks.predicted.all() and (rows["pred_area"] == 100 * 150).all()
    assert rows["gt_area"].tolist() == masks.truth.sum(axis=(1, 2)).tolist() == [1200, 1200, 2400, 2400]
    whole = 2 * rows["gt_area"] / (rows["gt_area"] + 100 * 150)  # DSC of the whole slice against each object
    np.testing.assert_allclose(rows["dsc"], whole, rtol=1e-6)
    assert (rows["pred_class_id"] == a).all()
    # the semantic rule: the class-b object, called a, scores 0
    np.testing.assert_allclose(rows["sem_dsc"], np.where(rows["class_id"] == a, whole, 0.0), rtol=1e-6)
    rows, masks = score(0.99)
    assert not masks.predicted.any() and (rows["dsc"] == 0).all() and (rows["pred_area"] == 0).all()


def test_prompted_rows_decode_box_rows_from_their_box_and_point_rows_from_their_point(tmp_path: Path) -> None:
    vocabulary = Vocabulary.read(load_config()["vocabulary"])
    group = _prompted_slice(tmp_path, *vocabulary.ids[:2])
    model = _tiny_model("segsam", len(vocabulary))
    g = torch.Generator().manual_seed(0)
    embedding = torch.randn(1, 256, 16, 16, generator=g)
    text = torch.randn(len(vocabulary), TEXT, generator=g)
    is_box = (group["prompt"] == "box").to_numpy()

    def predicted(prompts: pd.DataFrame) -> np.ndarray:
        with torch.inference_mode():
            _, masks = prompted_rows(
                model,
                prompts["image"].iloc[0],
                prompts,
                embedding,
                size=256,
                threshold=0.5,
                vocabulary=vocabulary,
                text=text,
            )
        return masks.predicted

    base = predicted(group)
    assert not np.array_equal(base[0], base[1])  # one object: its box and its point give different masks
    unused = group.copy()
    unused.loc[is_box, ["px", "py"]] = 5.0  # the point of a box row ...
    unused.loc[~is_box, ["x0", "y0", "x1", "y1"]] = [0.0, 0.0, 149.0, 99.0]  # ... and the box of a point row
    np.testing.assert_array_equal(predicted(unused), base)
    moved = group.copy()
    moved.loc[~is_box, ["px", "py"]] = [140.0, 5.0]
    after = predicted(moved)
    np.testing.assert_array_equal(after[is_box], base[is_box])
    assert not np.array_equal(after[~is_box], base[~is_box])


def test_prompted_rows_without_sawd_have_no_semantic_score(tmp_path: Path) -> None:
    vocabulary = Vocabulary.read(load_config()["vocabulary"])
    group = _prompted_slice(tmp_path, *vocabulary.ids[:2])
    model = _tiny_model("ft_decoder", len(vocabulary))
    with torch.inference_mode():
        rows, masks = prompted_rows(
            model,
            group["image"].iloc[0],
            group,
            torch.randn(1, 256, 16, 16),
            size=256,
            threshold=0.5,
            vocabulary=vocabulary,
        )
    assert list(rows.columns) == PER_MASK_COLUMNS and len(rows) == len(masks.predicted) == 4
    assert (rows["pred_class_id"] == -1).all() and rows["sem_dsc"].isna().all()
    assert rows["dsc"].between(0, 1).all()


class FixedPGSam(nn.Module):
    """A PG-SAM-like model: takes (inputs, text) and spells out one fixed label map; records what it was given."""

    def __init__(self, labels: torch.Tensor, channels: int) -> None:
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(labels, channels).permute(2, 0, 1).float() * 10)
        self.seen: list[tuple[tuple[int, ...], torch.Tensor | None]] = []

    def forward(self, inputs: torch.Tensor, text: torch.Tensor | None = None) -> ModelOutput:
        self.seen.append((tuple(inputs.shape), text))
        return ModelOutput(masks=None, iou=None, semantic=self.logits.expand(inputs.shape[0], -1, -1, -1))


def test_pg_sam_is_scored_like_a_prompt_free_network_from_its_own_inputs(tmp_path: Path) -> None:
    """PG-SAM gets the slice's cached embedding and the class text; its rows follow the prompt-free rule."""
    vocabulary = Vocabulary.read(load_config()["vocabulary"])
    a = vocabulary.ids[0]
    image = tmp_path / "ct--demo--case--z_0000.png"
    write_png(image, np.full((64, 64), 100, np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 255
    write_png(tmp_path / "a0.png", mask)
    labels = torch.zeros(256, 256, dtype=torch.long)
    labels[40:120, 40:120] = 1  # class a, 4 x the slice
    model = FixedPGSam(labels, len(vocabulary) + 1)
    group = pd.DataFrame(
        [
            {
                "mask": str(tmp_path / "a0.png"),
                "image": str(image),
                "case": "case",
                "modality": "ct",
                "class_id": a,
                "class_name": "a",
                "prompt": prompt,
                "spacing_mm": 1.0,
            }
            for prompt in ("box", "point")
        ]
    )
    embedding, text = torch.randn(1, 256, 64, 64), torch.randn(len(vocabulary), 8)
    rows, _ = prompt_free_rows(model, str(image), group, 256, vocabulary.class_index, inputs=embedding, text=text)
    assert model.seen[0][0] == (1, 256, 64, 64) and model.seen[0][1] is text
    assert rows["prompt"].tolist() == [NO_PROMPT] and rows["dsc"].tolist() == [1.0] == rows["sem_dsc"].tolist()

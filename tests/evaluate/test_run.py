"""Evaluation of a prompt-free network: the per-(slice, class) rule of the README's "Metrics"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from segsam.config import load_config
from segsam.data.io import write_png
from segsam.data.vocabulary import Vocabulary
from segsam.evaluate.run import NO_PROMPT, prompt_free_rows
from segsam.models.segsam_net import PromptableModel


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
    assert rows["prompt"].tolist() == [NO_PROMPT, NO_PROMPT]  # one row per class present, whatever the prompts
    by = rows.set_index("class_id")
    assert by.loc[a, "dsc"] == by.loc[a, "sem_dsc"] == 1.0  # both objects of a against their union
    assert by.loc[a, "gt_area"] == 800 and by.loc[a, "hd95_mm"] == 0.0
    assert by.loc[b, "sem_dsc"] == 0.0 and by.loc[b, "pred_class_id"] == -1  # wrong class: 0 for the true one
    assert c not in by.index  # a class only in the prediction is not scored
    assert set(shown) == {str(truth["a0"]), str(truth["b0"])} and shown[str(truth["a0"])][0].sum() == 800
    assert shown[str(truth["a0"])][1].sum() == 800  # the ground truth beside it: the union of both objects of a

"""Held-out class accuracy during training: does SAWD name the class of unseen objects?

At the end of every epoch, a method with SAWD's class head (and a frozen
encoder, whose cached embeddings make this cheap) is asked for the class of
every object on up to ``train.heldout_images`` slices of the test split, each
prompted by its tight box. The figure is logged (MLflow ``epoch/heldout_class_acc``
and the training summary) to watch the semantic head learn; nothing is selected
on it, and the test split's scores come from the evaluation stage only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from segsam.data.prompts import mask_box
from segsam.data.vocabulary import Vocabulary
from segsam.embed.store import EmbeddingStore
from segsam.models.segsam_net import PromptableModel
from segsam.train.batch import TrainImage
from segsam.train.stream import load_train_images


@dataclass
class HeldOut:
    """Test-split slices with their objects, and where their cached embeddings are.

    Attributes:
        items: The slices (masks in the model frame, class indices).
        store: Their cached embeddings.
    """

    items: list[TrainImage]
    store: EmbeddingStore

    @classmethod
    def from_index(
        cls, masks: pd.DataFrame, vocabulary: Vocabulary, size: int, cache_dir: str | Path, max_images: int
    ) -> HeldOut | None:
        """The first ``max_images`` test slices (sorted by path); None when there are none or it is off."""
        test = masks[masks["split"] == "test"]
        if max_images <= 0 or test.empty:
            return None
        images = sorted(test["image"].unique())[:max_images]
        test = test[test["image"].isin(images)]
        return cls(load_train_images(test, vocabulary, size), EmbeddingStore.open(cache_dir, test["case"].unique()))

    @torch.inference_mode()
    def class_accuracy(self, model: PromptableModel, text: torch.Tensor | None, device: torch.device) -> float:
        """Share of the held-out objects whose SAWD class is right (model left in its previous mode).

        SAWD alone runs (:meth:`~segsam.models.segsam_net.PromptableModel.semantic_decode`): the class is all
        that is read.
        """
        was_training = model.training
        model.eval()
        right = total = 0
        try:
            for item in self.items:
                boxes = np.stack([mask_box(mask.numpy()) for mask in item.masks])
                context = model.image_context(self.store.get([item.image]).to(device), text)
                out = model.semantic_decode(
                    context,
                    np.zeros(len(boxes), bool),
                    boxes,
                    np.zeros((len(boxes), 2), np.float32),
                    np.zeros(len(boxes), np.int64),
                )
                predicted = out.class_logits.argmax(1).cpu().numpy()
                right += int((predicted == item.classes).sum())
                total += len(boxes)
        finally:
            model.train(was_training)
        return right / max(total, 1)

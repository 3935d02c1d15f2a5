"""Training pieces: prompt simulation, mixed box/point decoding, the SAGD loss, one optimiser step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segsam.config import load_config
from segsam.models.methods import get_method, set_trainable
from segsam.train.loop import SagdLoss, build_decoder_model, decode_prompts, simulate_prompts


@pytest.fixture(scope="module")
def model():
    return build_decoder_model(load_config()["encoder"])


def _masks() -> torch.Tensor:
    masks = torch.zeros(4, 256, 256, dtype=torch.bool)
    masks[0, 10:60, 20:90] = True
    masks[1, 100:180, 100:140] = True
    masks[2, 200:230, 30:200] = True
    masks[3, 60:70, 60:70] = True
    return masks


def test_simulate_prompts_is_deterministic_and_inside_masks() -> None:
    masks = _masks()
    first = simulate_prompts(masks, 3, 5, 0.5, np.random.default_rng(7))
    second = simulate_prompts(masks, 3, 5, 0.5, np.random.default_rng(7))
    for a, b in zip(first, second):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    chosen, is_point, boxes, points = first
    assert chosen.shape == (3, 256, 256)
    for mask, point_prompt, box, point in zip(chosen, is_point, boxes, points):
        if point_prompt:
            assert mask[int(point[1]), int(point[0])]
        else:
            ys, xs = np.nonzero(mask.numpy())
            assert abs(box[0] - xs.min()) <= 5 and abs(box[3] - ys.max()) <= 5


def test_decode_prompts_keeps_prompt_order(model) -> None:
    torch.manual_seed(0)
    embeddings = torch.randn(4, 256, 64, 64)
    is_point = np.array([True, False, True, False])
    boxes = np.array([[0, 0, 0, 0], [10, 10, 80, 80], [0, 0, 0, 0], [100, 100, 200, 220]], np.float32)
    points = np.array([[30, 30], [0, 0], [150, 40], [0, 0]], np.float32)
    with torch.inference_mode():
        logits, iou = decode_prompts(model, embeddings, is_point, boxes, points)
        single, _ = model.decode(embeddings[1:2], boxes=torch.from_numpy(boxes[1:2]))
        point, _ = model.decode(embeddings[2:3], points=(torch.from_numpy(points[2:3])[:, None], torch.ones(1, 1, dtype=torch.int64)))
    assert logits.shape == (4, 1, 256, 256) and iou.shape == (4, 1)
    torch.testing.assert_close(logits[1:2], single, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits[2:3], point, rtol=1e-4, atol=1e-4)


def test_sagd_loss_terms_and_empty_masks() -> None:
    criterion = SagdLoss()
    target = torch.zeros(2, 1, 32, 32)
    target[0, 0, 4:20, 4:20] = 1
    perfect = criterion(target * 40 - 20, torch.ones(2, 1), target)
    wrong = criterion(20 - target * 40, torch.zeros(2, 1), target)
    assert set(perfect) == {"loss", "focal", "dice", "iou_mse"}
    assert all(torch.isfinite(v) for v in perfect.values())
    assert perfect["loss"] < wrong["loss"]
    empty = criterion(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1), torch.zeros(2, 1, 32, 32))
    assert all(torch.isfinite(v) for v in empty.values())


def test_one_step_changes_only_trainable_parameters(model) -> None:
    spec = get_method("ft_decoder")
    set_trainable(model, spec)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    masks = _masks()
    chosen, is_point, boxes, points = simulate_prompts(masks, 4, 3, 0.5, np.random.default_rng(0))
    assert is_point.any() and not is_point.all()  # both prompt kinds in the batch
    logits, iou = decode_prompts(model, torch.randn(4, 256, 64, 64), is_point, boxes, points)
    SagdLoss()(logits, iou, chosen[:, None].float())["loss"].backward()
    optimiser.step()
    after = model.state_dict()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.split(".")[0] in spec.trainable for n in trained)
    # trainable but unreachable from box / positive-point prompts without a mask input, and
    # the hypernetworks of SAM's multimask tokens 1-3 (single-mask output uses token 0)
    unused = (
        "prompt_encoder.point_embeddings.0.", "prompt_encoder.mask_downscaling.",
        *(f"mask_decoder.output_hypernetworks_mlps.{i}." for i in (1, 2, 3)),
    )
    for name, value in after.items():
        if name in trained and not name.startswith(unused):
            assert not torch.equal(before[name], value), f"{name} did not change"
        elif name not in trained:
            assert torch.equal(before[name], value), f"frozen {name} changed"

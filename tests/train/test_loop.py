"""Training pieces: prompt simulation, presence targets, one optimiser step through the trainer's model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segsam.config import load_config
from segsam.data.vocabulary import Vocabulary
from segsam.errors import DataError
from segsam.methods import get_method
from segsam.models.adapters import is_adapter_parameter
from segsam.models.weights import WeightsError, load_state_dict
from segsam.train.loop import (
    TrainImage,
    add_error_clicks,
    label_map,
    presence_targets,
    simulate_prompts,
    train_method,
)
from segsam.train.prompts import NO_CLICK, POSITIVE
from tests.helpers import method_model


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
    chosen, is_point, boxes, points, indices = first
    assert chosen.shape == (3, 256, 256) and len(set(indices.tolist())) == 3
    for mask, point_prompt, box, point in zip(chosen, is_point, boxes, points):
        if point_prompt:
            assert mask[int(point[1]), int(point[0])]
        else:
            ys, xs = np.nonzero(mask.numpy())
            assert abs(box[0] - xs.min()) <= 5 and abs(box[3] - ys.max()) <= 5


def test_presence_targets_are_the_unprompted_classes() -> None:
    item = TrainImage(image="x", masks=_masks(), classes=np.array([0, 3, 3, 5]))
    presence = presence_targets(item, np.array([1, 3]), num_classes=6)
    assert presence.shape == (2, 6)
    assert presence[0].nonzero().flatten().tolist() == [0, 3]  # mask 2 (class 3) was not prompted


def test_vit_b_methods_need_their_weights_file(tmp_path: Path) -> None:
    config = load_config()
    config["encoder"]["vit_b"]["weights"] = str(tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="missing.pth"):
        method_model("sam_med2d", config, None)


@pytest.mark.parametrize("method", ["ft_decoder", "segsam"])
def test_one_step_changes_only_trainable_parameters(method: str) -> None:
    config = load_config()
    spec = get_method(method)
    model = method_model(method, config, 384)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    masks = _masks()
    chosen, is_point, boxes, points, indices = simulate_prompts(masks, 4, 3, 0.5, np.random.default_rng(0))
    assert is_point.any() and not is_point.all()  # both prompt kinds in the batch
    num_classes = len(Vocabulary.read(config["vocabulary"]))
    item = TrainImage(image="x", masks=masks, classes=np.array([0, 1, 2, 3]))
    text = torch.randn(num_classes, 384) if spec.has_t2vse else None
    model.train()
    out = model(torch.randn(4, 256, 64, 64), is_point, boxes, points, text)
    losses = model.loss(
        out,
        chosen[:, None].float(),
        torch.from_numpy(item.classes[indices]),
        presence_targets(item, indices, num_classes),
        weights=config["loss"],
    )
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    optimiser.step()
    after = model.state_dict()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.split(".")[0] in spec.trainable for n in trained)
    # trainable but unreachable from box / positive-point prompts without a mask input, and
    # the hypernetworks of SAM's multimask tokens 1-3 (single-mask output uses token 0)
    unused = (
        "prompt_encoder.point_embeddings.0.",
        "prompt_encoder.mask_downscaling.",
        *(f"mask_decoder.output_hypernetworks_mlps.{i}." for i in (1, 2, 3)),
    )
    changed = {name for name in trained if not torch.equal(before[name], after[name])}
    assert {name for name in trained if not name.startswith(unused)} - changed == set()
    for name, value in after.items():
        if name not in trained:
            assert torch.equal(before[name], value), f"frozen {name} changed"


def test_add_error_clicks_rounds() -> None:
    """Round 0 has no click; each later round keeps the earlier clicks and adds one from its error."""
    torch.manual_seed(0)
    model = method_model("ft_decoder", load_config(), None).train()
    masks = _masks()
    chosen, is_point, boxes, points, _ = simulate_prompts(masks, 3, 5, 0.5, np.random.default_rng(1))
    targets = chosen.unsqueeze(1).float()
    embeddings = torch.randn(3, 256, 64, 64)
    coords, labels = add_error_clicks(model, embeddings, is_point, boxes, points, targets, None, rounds=2)
    assert coords.shape == (9, 2, 2) and labels.shape == (9, 2)
    assert (labels[:3] == NO_CLICK).all()  # round 0
    assert (labels[3:6, 1] == NO_CLICK).all() and (labels[3:6, 0] != NO_CLICK).all()  # round 1: one click
    np.testing.assert_array_equal(labels[6:, 0], labels[3:6, 0])  # round 2 keeps round 1's click
    for (x, y), label, target in zip(coords[3:6, 0], labels[3:6, 0], chosen):
        assert bool(target[int(y), int(x)]) == (label == POSITIVE)  # positive inside, negative outside


@pytest.mark.slow
def test_training_with_iterative_clicks_is_deterministic(tmp_path: Path) -> None:
    from tests.train.test_ddp import make_training_set, small_config

    masks, cache = make_training_set(tmp_path)
    config = small_config(tmp_path)
    weights = {}
    for name, clicks in (("a", 2), ("b", 2), ("none", 0)):
        config["train"]["iterative_clicks"] = clicks
        out = tmp_path / name
        summary = train_method(
            "ft_decoder", masks, cache, out / "ckpt.pt", out / "summary.json", config=config, threads=2
        )
        assert np.isfinite(summary["history"][0]["loss"])
        weights[name] = load_state_dict(out / "ckpt.pt")
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert any(not torch.equal(weights["a"][k], weights["none"][k]) for k in weights["a"])


@pytest.mark.slow
def test_micro_batches_match_the_whole_batch(tmp_path: Path) -> None:
    """Gradient accumulation over micro-batches gives the update of the whole batch at once.

    The runs differ in float summation order only; as in tests/train/test_ddp.py, losses agree
    to 1e-6 and parameters to within one maximal Adam step (lr).
    """
    from tests.train.test_ddp import make_training_set, small_config

    masks, cache = make_training_set(tmp_path)
    config = small_config(tmp_path)
    weights, losses = {}, {}
    for micro in (4, 1):
        config["train"]["micro_batch"] = micro
        out = tmp_path / f"micro{micro}"
        summary = train_method(
            "ft_decoder", masks, cache, out / "ckpt.pt", out / "summary.json", config=config, threads=2
        )
        weights[micro], losses[micro] = load_state_dict(out / "ckpt.pt"), summary["history"][0]["loss"]
    assert losses[1] == pytest.approx(losses[4], abs=1e-6)
    lr = config["train"]["lr"]
    assert max(float((weights[1][k].float() - weights[4][k].float()).abs().max()) for k in weights[1]) <= lr * 1.01


def test_label_map_marks_each_object_with_its_class_plus_one() -> None:
    masks = _masks()
    labels = label_map(TrainImage(image="x", masks=masks, classes=np.array([3, 0, 7, 1])))
    assert labels.dtype == torch.long and labels.shape == (256, 256)
    for mask, k in zip(masks, (3, 0, 7, 1)):
        assert (labels[mask] == k + 1).all()
    assert (labels[~masks.any(0)] == 0).all()


@pytest.mark.slow
def test_prompt_free_network_trains_on_images_deterministically(tmp_path: Path) -> None:
    """U-Net (table 2's nnU-Net row): the same loop, from the slices' images, deterministic, only semantic_net saved."""
    from tests.train.test_ddp import make_training_set, small_config

    masks, _ = make_training_set(tmp_path)
    config = small_config(tmp_path)
    config["train"].update({"batch_size": 2, "micro_batch": 1})
    runs = {}
    for name in ("a", "b"):
        torch.manual_seed(123)  # the model's initialisation must not depend on the caller's RNG
        out = tmp_path / name
        summary = train_method("unet", masks, None, out / "ckpt.pt", out / "summary.json", config=config, threads=2)
        runs[name] = (load_state_dict(out / "ckpt.pt"), summary)
    weights, summary = runs["a"]
    assert summary["steps"] == 2 and summary["train_images"] == 4
    assert {"loss", "ce", "dice"} <= set(summary["history"][0]) and np.isfinite(summary["history"][0]["loss"])
    assert weights and all(k.startswith("semantic_net.") for k in weights)
    assert all(torch.equal(weights[k], runs["b"][0][k]) for k in weights)
    torch.manual_seed(config["train"]["seed"])  # the trainer's initialisation
    init = method_model("unet", config, None).state_dict()
    assert any(not torch.equal(init[k], weights[k]) for k in weights if k.endswith("weight"))


def test_a_promptable_method_needs_the_embedding_cache(tmp_path: Path) -> None:
    from tests.train.test_ddp import make_training_set, small_config

    masks, _ = make_training_set(tmp_path, n_images=1)
    with pytest.raises(DataError, match="embedding cache"):
        train_method("ft_decoder", masks, None, tmp_path / "c.pt", tmp_path / "s.json", config=small_config(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["med_sa+sawd", "medsam"])
def test_encoder_training_methods_learn_from_images_and_save_their_encoder_part(
    tmp_path: Path, random_vit_b: tuple[Path, str], method: str
) -> None:
    """SAM-Med2D / Med-SA adapters and MedSAM's encoder train from the slices' images (no cache).

    The checkpoint holds the trained encoder tensors (the adapters, or MedSAM's whole encoder)
    and no frozen ones; the frozen tensors are still those of the ViT-B file.
    """
    from tests.train.test_ddp import make_training_set, small_config

    masks, _ = make_training_set(tmp_path, n_images=2)
    config = small_config(tmp_path)
    config["encoder"]["vit_b"].update(weights=str(random_vit_b[0]), sha256=random_vit_b[1])
    config["train"].update({"batch_size": 2, "micro_batch": 1})
    summary = train_method(method, masks, None, tmp_path / "c.pt", tmp_path / "s.json", config=config, threads=2)
    assert summary["steps"] == 1 and np.isfinite(summary["history"][0]["loss"])
    saved = load_state_dict(tmp_path / "c.pt")
    torch.manual_seed(config["train"]["seed"])  # the trainer's initialisation of adapters and SAWD
    initial = method_model(method, config, None)
    trainable = {n for n, p in initial.named_parameters() if p.requires_grad}
    encoder_saved = {k for k in saved if k.startswith("image_encoder.")}
    assert encoder_saved == {k for k in trainable if k.startswith("image_encoder.")} and encoder_saved
    if method == "medsam":
        assert encoder_saved == {k for k, _ in initial.named_parameters() if k.startswith("image_encoder.")}
    else:
        assert all(is_adapter_parameter(k) for k in encoder_saved)
    start = initial.state_dict()
    assert any(not torch.equal(start[k], saved[k]) for k in encoder_saved)  # the encoder part learnt
    assert all(torch.equal(start[k], saved[k]) for k in saved if k not in trainable)  # buffers, frozen prompt encoder

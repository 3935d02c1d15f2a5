"""Training (segsam.train.loop): one optimiser step through the trainer's model and loss, whole small runs."""

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
from segsam.models.losses import MethodLoss
from segsam.models.weights import WeightsError, load_state_dict
from segsam.train.batch import PromptBatch, TrainImage, class_masks, simulate_prompts
from segsam.train.job import TrainJob
from segsam.train.loop import train
from tests.helpers import method_model
from tests.train.test_batch import four_masks


def _train(method: str, masks: Path, cache: Path | None, out: Path, config: dict, threads: int = 1) -> dict:
    """Train in this process; the checkpoint and summary go to ``out``."""
    job = TrainJob(method, masks, cache, out / "ckpt.pt", out / "summary.json", config=config, threads=threads)
    return train(job)


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
    masks = four_masks()
    prompts = simulate_prompts(masks, 4, 3, 0.5, np.random.default_rng(0))
    assert prompts.is_point.any() and not prompts.is_point.all()  # both prompt kinds in the batch
    num_classes = len(Vocabulary.read(config["vocabulary"]))
    item = TrainImage(image="x", masks=masks, classes=np.array([0, 1, 2, 3]))
    inputs = PromptBatch.gather([item], [prompts], num_classes)
    text = torch.randn(num_classes, 384) if spec.has_t2vse else None
    model.train()
    out = model(torch.randn(4, 256, 64, 64), inputs.is_point, inputs.boxes, inputs.points, text)
    losses = MethodLoss.for_model(model, config["loss"])(out, inputs.targets, inputs.classes, inputs.presence)
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


@pytest.mark.slow
def test_training_with_iterative_clicks_is_deterministic(tmp_path: Path) -> None:
    from tests.train.test_ddp import make_training_set, small_config

    masks, cache = make_training_set(tmp_path)
    config = small_config(tmp_path)
    weights = {}
    for name, clicks in (("a", 2), ("b", 2), ("none", 0)):
        config["train"]["iterative_clicks"] = clicks
        out = tmp_path / name
        summary = _train("ft_decoder", masks, cache, out, config, threads=2)
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
        summary = _train("ft_decoder", masks, cache, out, config, threads=2)
        weights[micro], losses[micro] = load_state_dict(out / "ckpt.pt"), summary["history"][0]["loss"]
    assert losses[1] == pytest.approx(losses[4], abs=1e-6)
    lr = config["train"]["lr"]
    assert max(float((weights[1][k].float() - weights[4][k].float()).abs().max()) for k in weights[1]) <= lr * 1.01


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
        summary = _train("unet", masks, None, out, config, threads=2)
        runs[name] = (load_state_dict(out / "ckpt.pt"), summary)
    weights, summary = runs["a"]
    assert summary["steps"] == 2 and summary["train_images"] == 4
    assert {"loss", "ce", "dice"} <= set(summary["history"][0]) and np.isfinite(summary["history"][0]["loss"])
    assert weights and all(k.startswith("semantic_net.") for k in weights)
    assert all(torch.equal(weights[k], runs["b"][0][k]) for k in weights)
    torch.manual_seed(config["train"]["seed"])  # the trainer's initialisation
    init = method_model("unet", config, None).state_dict()
    assert any(not torch.equal(init[k], weights[k]) for k in weights if k.endswith("weight"))


def test_a_zero_shot_method_has_no_train_stage(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="zero-shot"):
        _train("medsam_lite", tmp_path / "masks.parquet", None, tmp_path, load_config())


def test_a_promptable_method_needs_the_embedding_cache(tmp_path: Path) -> None:
    from tests.train.test_ddp import make_training_set, small_config

    masks, _ = make_training_set(tmp_path, n_images=1)
    with pytest.raises(DataError, match="embedding cache"):
        _train("ft_decoder", masks, None, tmp_path, small_config(tmp_path))


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
    summary = _train(method, masks, None, tmp_path, config, threads=2)
    assert summary["steps"] == 1 and np.isfinite(summary["history"][0]["loss"])
    saved = load_state_dict(tmp_path / "ckpt.pt")
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


def test_the_semantic_branch_variant_learns_every_class_mask_of_its_images(tmp_path: Path) -> None:
    """sawd_sem (table 4, row 3): its unprompted branch is trained on each image's full per-class masks."""
    from tests.train.test_ddp import make_training_set, small_config

    masks, cache = make_training_set(tmp_path, n_images=2)
    config = small_config(tmp_path)
    config["train"].update({"batch_size": 2, "micro_batch": 2})
    summary = _train("sawd_sem", masks, cache, tmp_path / "out", config)
    record = summary["history"][0]
    assert {"class_mask_bce", "class_mask_dice"} <= set(record)
    assert np.isfinite(record["class_mask_bce"]) and record["class_mask_bce"] > 0


def test_class_masks_are_the_union_of_each_class_objects() -> None:
    masks = four_masks()
    item = TrainImage(image="x", masks=masks, classes=np.array([2, 0, 2, 1]))
    per_class = class_masks(item, num_classes=4)
    assert per_class.shape == (4, *masks.shape[-2:])
    assert torch.equal(per_class[2].bool(), masks[0] | masks[2])
    assert torch.equal(per_class[0].bool(), masks[1]) and not per_class[3].any()
    prompts = simulate_prompts(masks, 2, 0, 0.0, np.random.default_rng(0))
    batch = PromptBatch.gather([item, item], [prompts, prompts], 4, with_class_masks=True)
    assert batch.class_masks.shape == (4, 4, *masks.shape[-2:])
    assert torch.equal(batch.class_masks[0], per_class) and torch.equal(batch.repeat(2).class_masks[4], per_class)


def _class_text(path: Path, config: dict) -> Path:
    """A class_embeddings.parquet with a random 384-d vector per vocabulary class (as rule embed_text writes)."""
    import pandas as pd

    vocabulary = Vocabulary.read(config["vocabulary"])
    rng = np.random.default_rng(0)
    vectors = [rng.standard_normal(384).astype(np.float32).tolist() for _ in vocabulary.ids]
    pd.DataFrame({"class_id": list(vocabulary.ids), "vector": vectors}).to_parquet(path)
    return path


@pytest.mark.slow
def test_pg_sam_trains_from_the_cache_and_the_class_text(tmp_path: Path) -> None:
    """PG-SAM: cached embeddings, class text, label maps; the loss averages its rounds; only its modules are saved."""
    from tests.train.test_ddp import make_training_set, small_config

    masks, cache = make_training_set(tmp_path, n_images=2)
    config = small_config(tmp_path)
    config["train"].update({"batch_size": 2, "micro_batch": 2})
    job = TrainJob(
        "pg_sam",
        masks,
        cache,
        tmp_path / "ckpt.pt",
        tmp_path / "summary.json",
        config=config,
        text_parquet=_class_text(tmp_path / "text.parquet", config),
    )
    summary = train(job)
    record = summary["history"][0]
    assert {"loss", "ce", "dice", "last_round"} <= set(record) and np.isfinite(record["loss"])
    assert summary["train_cases"] == 1 and summary["label_fraction"] == 1.0
    saved = load_state_dict(tmp_path / "ckpt.pt")
    assert {k.split(".")[0] for k in saved} == set(get_method("pg_sam").trainable)  # no frozen encoder tensors


@pytest.mark.slow
def test_label_fraction_trains_on_a_subset_of_the_cases(tmp_path: Path) -> None:
    """train.label_fraction = 0.5 of 4 one-slice cases: 2 cases, their slices only, logged in the summary."""
    import pandas as pd

    from tests.train.test_ddp import make_training_set, small_config

    masks, _ = make_training_set(tmp_path, n_images=4)
    table = pd.read_parquet(masks)
    table["case"] = [f"case_{Path(image).stem[-1]}" for image in table["image"]]  # one case per slice
    table.to_parquet(masks)
    config = small_config(tmp_path)
    config["train"].update({"batch_size": 2, "micro_batch": 1, "label_fraction": 0.5})
    summary = _train("unet", masks, None, tmp_path / "out", config, threads=2)
    assert summary["train_cases"] == 2 and summary["train_images"] == 2 and summary["steps"] == 1


@pytest.mark.slow
def test_pg_sam_on_vit_b_trains_its_lora_from_the_images(tmp_path: Path, random_vit_b: tuple[Path, str]) -> None:
    """pg_sam_vit_b reads the slices' images (no cache); its checkpoint holds the LoRA tensors, no frozen ViT."""
    from tests.train.test_ddp import make_training_set, small_config

    masks, _ = make_training_set(tmp_path, n_images=2)
    config = small_config(tmp_path)
    config["encoder"]["vit_b"].update(weights=str(random_vit_b[0]), sha256=random_vit_b[1])
    config["train"].update({"batch_size": 2, "micro_batch": 1})
    job = TrainJob(
        "pg_sam_vit_b",
        masks,
        None,
        tmp_path / "ckpt.pt",
        tmp_path / "summary.json",
        config=config,
        threads=2,
        text_parquet=_class_text(tmp_path / "text.parquet", config),
    )
    summary = train(job)
    assert summary["steps"] == 1 and np.isfinite(summary["history"][0]["loss"])
    encoder_saved = {k for k in load_state_dict(tmp_path / "ckpt.pt") if k.startswith("image_encoder.")}
    assert encoder_saved and all(".attn.qkv.adapter_" in k for k in encoder_saved)

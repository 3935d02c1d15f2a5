"""Tests for segsam.models.litemedsam, including zero-shot DSC on a real CT."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from segsam.models.litemedsam import LiteMedSAM, PairedMaskDecoder, build_litemedsam
from segsam.models.preprocess import prepare_image
from segsam.models.sam_compat import MaskDecoder
from segsam.models.weights import LITEMEDSAM_SHA256, load_state_dict, resolve_weights

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ORGANS = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "liver": 5,
    "stomach": 6,
    "pancreas": 7,
    "aorta": 52,
    "inferior_vena_cava": None,  # looked up in labels_total.json
    "urinary_bladder": 21,
}


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return resolve_weights("litemedsam", LITEMEDSAM_SHA256)


@pytest.fixture(scope="module")
def model(checkpoint) -> LiteMedSAM:
    return build_litemedsam(checkpoint)


def test_checkpoint_loads_strictly(model, checkpoint):
    state = load_state_dict(checkpoint)
    assert set(model.state_dict()) == set(state)
    torch.testing.assert_close(
        model.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"], rtol=0, atol=0
    )
    assert isinstance(model.mask_decoder, PairedMaskDecoder)
    assert not model.training


def test_random_model_builds_without_checkpoint():
    model = build_litemedsam(None)
    assert model.prompt_encoder.image_embedding_size == (64, 64)
    assert model.mask_decoder.num_multimask_outputs == 3


def test_encode_shape(model):
    with torch.inference_mode():
        assert model.encode(torch.rand(1, 3, 256, 256)).shape == (1, 256, 64, 64)


def test_decode_shapes(model):
    torch.manual_seed(0)
    embeddings = torch.randn(3, 256, 64, 64)
    boxes = torch.tensor([[10.0, 20, 100, 120], [0, 0, 255, 255], [50, 60, 70, 90]])
    coords = torch.tensor([[[30.0, 40.0]], [[128.0, 128.0]], [[60.0, 70.0]]])
    labels = torch.ones(3, 1)
    with torch.inference_mode():
        for emb, box, pts in [
            (embeddings, boxes, None),
            (embeddings[:1], boxes, None),
            (embeddings, None, (coords, labels)),
            (embeddings, boxes, (coords, labels)),
        ]:
            logits, iou = model.decode(emb, boxes=box, points=pts)
            assert logits.shape == (3, 1, 256, 256)
            assert iou.shape == (3, 1)


def test_paired_decoder_matches_sam_decoder_per_image(model):
    torch.manual_seed(0)
    embeddings = torch.randn(3, 256, 64, 64)
    boxes = torch.tensor([[10.0, 20, 100, 120], [0, 0, 255, 255], [50, 60, 70, 90]])
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
        pe = model.prompt_encoder.get_dense_pe()
        paired = model.mask_decoder.predict_masks(embeddings, pe, sparse, dense)
        for i in range(3):
            reference = MaskDecoder.predict_masks(
                model.mask_decoder, embeddings[i : i + 1], pe, sparse[i : i + 1], dense[i : i + 1]
            )
            torch.testing.assert_close(paired[0][i : i + 1], reference[0], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(paired[1][i : i + 1], reference[1], rtol=1e-4, atol=1e-4)
        # One shared embedding for many prompts behaves like SAM's decoder.
        shared = model.mask_decoder.predict_masks(embeddings[:1], pe, sparse, dense)
        reference = MaskDecoder.predict_masks(model.mask_decoder, embeddings[:1], pe, sparse, dense)
        torch.testing.assert_close(shared[0], reference[0], rtol=1e-4, atol=1e-4)


def test_decode_validates(model):
    embeddings = torch.zeros(2, 256, 64, 64)
    with pytest.raises(ValueError, match="needs boxes, points"):
        model.decode(embeddings)
    with pytest.raises(ValueError, match="embeddings B x 256 x 64 x 64"):
        model.decode(torch.zeros(2, 256, 32, 32), boxes=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="boxes B x 4"):
        model.decode(embeddings, boxes=torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="disagree on the batch size"):
        model.decode(embeddings, boxes=torch.zeros(2, 4), points=(torch.zeros(1, 1, 2), torch.ones(1, 1)))
    with pytest.raises(ValueError, match="3 image embeddings for 2 prompts"):
        model.decode(torch.zeros(3, 256, 64, 64), boxes=torch.zeros(2, 4))


# ----------------------------------------------------------------------------- real data


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * np.logical_and(pred, truth).sum() / (pred.sum() + truth.sum()))


def _box_with_margin(mask: np.ndarray, margin: int = 1) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return np.array(
        [
            max(cols.min() - margin, 0),
            max(rows.min() - margin, 0),
            min(cols.max() + margin, width - 1),
            min(rows.max() + margin, height - 1),
        ],
        dtype=np.float32,
    )


@pytest.mark.slow
@pytest.mark.shared_data
def test_zero_shot_dsc_on_real_ct(model):
    folder = SHARED_DATA / "totalsegmentator"
    if not (folder / "example_ct.nii.gz").is_file():
        pytest.skip(f"real CT not available: {folder} is absent (shared data lives beside the repository)")
    sitk = pytest.importorskip("SimpleITK")
    start = time.perf_counter()

    image = sitk.DICOMOrient(sitk.ReadImage(str(folder / "example_ct.nii.gz")), "LPS")
    labels = sitk.DICOMOrient(sitk.ReadImage(str(folder / "example_seg_fast_force_split.nii.gz")), "LPS")
    hu = sitk.GetArrayFromImage(image).astype(np.float32)  # z, y, x
    seg = sitk.GetArrayFromImage(labels)
    ct = np.round((np.clip(hu, -160.0, 240.0) + 160.0) / 400.0 * 255.0).astype(np.uint8)

    names = {name: int(key) for key, name in json.loads((folder / "labels_total.json").read_text()).items()}
    organs = {name: (label if label is not None else names.get(name)) for name, label in ORGANS.items()}
    organs = {name: label for name, label in organs.items() if label is not None and (seg == label).any()}
    assert len(organs) >= 8, f"too few organs present: {sorted(organs)}"

    best_slice = {name: int((seg == label).sum(axis=(1, 2)).argmax()) for name, label in organs.items()}
    slices = sorted(set(best_slice.values()))
    prepared = {k: prepare_image(ct[k]) for k in slices}
    embeddings = {}
    with torch.inference_mode():
        for i in range(0, len(slices), 2):
            chunk = slices[i : i + 2]
            embeddings.update(zip(chunk, model.encode(torch.stack([prepared[k][0] for k in chunk]))))

        scores = {}
        for name, k in best_slice.items():
            truth = seg[k] == organs[name]
            info = prepared[k][1]
            box = torch.from_numpy(info.box_to_model_coords(_box_with_margin(truth)))[None]
            logits, _ = model.decode(embeddings[k][None], boxes=box)
            pred = torch.sigmoid(info.logits_to_original(logits[0, 0])).numpy() > 0.5
            scores[name] = _dice(pred, truth)

    for name, score in scores.items():
        print(f"{name:<20} slice {best_slice[name]:>3}  DSC {score:.3f}")
    mean = float(np.mean(list(scores.values())))
    print(f"mean DSC {mean:.3f} over {len(scores)} organs, {len(slices)} slices, {time.perf_counter() - start:.1f} s")
    assert mean >= 0.85, f"zero-shot mean DSC {mean:.3f} < 0.85: {scores}"

"""Text-to-vision semantic enhancement (segsam.models.t2vse)."""

from __future__ import annotations

import pytest
import torch

from segsam.models.t2vse import TextToVisionEnhancement

D, C, N, H = 256, 5, 3, 16


def _module(text_dim: int = 384) -> TextToVisionEnhancement:
    torch.manual_seed(0)
    return TextToVisionEnhancement(text_dim, D, mlp_dim=512).eval()


@pytest.mark.parametrize("text_dim", [384, 17, 1536])
def test_one_token_per_prompt_for_any_text_width(text_dim):
    module = _module(text_dim)
    out = module(torch.randn(N, D, H, H), torch.randn(1, D, H, H), torch.randn(C, text_dim))
    assert out.shape == (N, 1, D)
    assert torch.isfinite(out).all()


def test_token_depends_on_image_and_text():
    module = _module()
    image, pe, text = torch.randn(2, D, H, H), torch.randn(1, D, H, H), torch.randn(C, 384)
    with torch.inference_mode():
        base = module(image, pe, text)
        other_text = module(image, pe, text + 1.0)
        swapped = module(image.flip(0), pe, text)
    assert not torch.allclose(base, other_text)
    torch.testing.assert_close(swapped, base.flip(0), rtol=1e-5, atol=1e-5)  # per-prompt, no mixing across prompts
    assert not torch.allclose(base[0], base[1])


def test_any_number_of_classes():
    module = _module()
    image, pe = torch.randn(1, D, H, H), torch.randn(1, D, H, H)
    assert module(image, pe, torch.randn(1, 384)).shape == (1, 1, D)
    assert module(image, pe, torch.randn(40, 384)).shape == (1, 1, D)


def test_validation():
    module = _module()
    with pytest.raises(ValueError, match="C x 384"):
        module(torch.randn(1, D, H, H), torch.randn(1, D, H, H), torch.randn(C, 100))
    with pytest.raises(ValueError, match="image embeddings"):
        module(torch.randn(1, 128, H, H), torch.randn(1, D, H, H), torch.randn(C, 384))
    with pytest.raises(ValueError, match="text_dim"):
        TextToVisionEnhancement(0)
    with pytest.raises(ValueError, match="num_heads"):
        TextToVisionEnhancement(8, embed_dim=256, num_heads=7)

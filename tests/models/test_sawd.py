"""The semantic-aware decoder (segsam.models.sawd)."""

from __future__ import annotations

import pytest
import torch

from segsam.models.sam_compat import TwoWayTransformer
from segsam.models.sawd import MLP, SemanticAwareDecoder, TokenImageBlock

D, C, N, H = 256, 7, 3, 16


def _sawd(**flags) -> SemanticAwareDecoder:
    torch.manual_seed(0)
    transformer = TwoWayTransformer(depth=2, embedding_dim=D, mlp_dim=512, num_heads=8)
    return SemanticAwareDecoder(num_classes=C, transformer=transformer, mlp_dim=512, **flags).eval()


def _inputs(num: int = N, tokens: int = 2, shared: bool = False):
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1 if shared else num, D, H, H, generator=g)
    pe = torch.randn(1, D, H, H, generator=g)
    sparse = torch.randn(num, tokens, D, generator=g)
    dense = torch.randn(num, D, H, H, generator=g) * 0.1
    return image, pe, sparse, dense


@pytest.mark.parametrize("shared", [False, True])
def test_full_sawd_outputs(shared):
    out = _sawd()(*_inputs(shared=shared))
    assert out.mask.shape == (N, 1, 4 * H, 4 * H)
    assert out.class_logits.shape == (N, C)
    assert out.presence_logits.shape == (N, C)
    assert out.class_masks is None
    assert all(torch.isfinite(t).all() for t in (out.mask, out.class_logits, out.presence_logits))


def test_branch_switches():
    prompted = _sawd(unprompted=False)(*_inputs())
    assert prompted.mask.shape == (N, 1, 4 * H, 4 * H) and prompted.presence_logits is None
    assert not hasattr(_sawd(unprompted=False), "prior_mlp")
    unprompted = _sawd(prompted=False)(*_inputs())
    assert unprompted.mask is None and unprompted.class_logits is None and unprompted.presence_logits.shape == (N, C)
    semantic = _sawd(semantic_unprompted=True)(*_inputs())
    assert semantic.presence_logits is None
    assert semantic.class_masks.shape == (N, C, 4 * H, 4 * H)
    assert semantic.mask.shape == (N, 1, 4 * H, 4 * H)


def test_unprompted_branch_ignores_prompts():
    sawd = _sawd()
    image, pe, sparse, dense = _inputs()
    with torch.inference_mode():
        a = sawd(image, pe, sparse, dense)
        b = sawd(image, pe, torch.randn_like(sparse), torch.randn_like(dense))
    torch.testing.assert_close(a.presence_logits, b.presence_logits, rtol=0, atol=0)
    assert not torch.allclose(a.mask, b.mask)


@pytest.mark.parametrize("semantic", [False, True])
def test_unprompted_branch_once_per_image_is_what_forward_computes(semantic):
    sawd = _sawd(semantic_unprompted=semantic)
    image, pe, sparse, dense = _inputs()
    index = torch.tensor([2, 0, 2])
    with torch.inference_mode():
        per_image = sawd.unprompted_branch(image, pe)
        inside = sawd(image, pe, sparse, dense, image_index=index)
        given = sawd(image, pe, sparse, dense, image_index=index, unprompted=per_image)
    assert (per_image.presence_logits if not semantic else per_image.class_masks).shape[0] == N  # one per image
    assert per_image.mask is None and per_image.class_logits is None
    for field in ("mask", "class_logits", "presence_logits", "class_masks"):
        a, b = getattr(inside, field), getattr(given, field)
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), field
    with pytest.raises(ValueError, match="not one per image"):
        sawd(image, pe, sparse, dense, image_index=index, unprompted=sawd.unprompted_branch(image[:1], pe))
    with pytest.raises(ValueError, match="without its unprompted branch"):
        _sawd(unprompted=False).unprompted_branch(image, pe)


def test_presence_heads_are_one_linear_head_per_class():
    sawd = _sawd()
    captured = {}
    handle = sawd.co_blocks[-1].register_forward_hook(lambda module, args, output: captured.setdefault("co", output))
    with torch.no_grad():
        out = sawd(*_inputs())
        co = captured["co"]  # N x C x D refined CO-tokens
        expected = torch.stack([co[:, k] @ sawd.presence_weight[k] + sawd.presence_bias[k] for k in range(C)], dim=1)
    handle.remove()
    torch.testing.assert_close(out.presence_logits, expected, rtol=1e-5, atol=1e-5)


def test_presence_prior_is_added_to_the_so_token():
    sawd = _sawd()
    inputs = _inputs()
    with torch.inference_mode():
        before = sawd(*inputs)
        sawd.presence_bias.add_(3.0)  # changes only the presence logits ...
        after = sawd(*inputs)
    assert not torch.allclose(before.class_logits, after.class_logits)  # ... which reach the SO-token heads
    assert not torch.allclose(before.mask, after.mask)


def test_prompt_token_count_is_free():
    out = _sawd()(*_inputs(tokens=3))  # e.g. box corners + a T2VSE token (t2vse_v1)
    assert out.mask.shape == (N, 1, 4 * H, 4 * H)


def test_constructor_validation():
    transformer = TwoWayTransformer(depth=1, embedding_dim=D, mlp_dim=64, num_heads=8)
    with pytest.raises(ValueError, match="num_classes"):
        SemanticAwareDecoder(num_classes=0, transformer=transformer)
    with pytest.raises(ValueError, match="prompted branch, the unprompted branch or both"):
        SemanticAwareDecoder(num_classes=C, transformer=transformer, prompted=False, unprompted=False)
    with pytest.raises(ValueError, match="set unprompted=True"):
        SemanticAwareDecoder(num_classes=C, transformer=transformer, unprompted=False, semantic_unprompted=True)
    with pytest.raises(ValueError, match="needs a two-way transformer"):
        SemanticAwareDecoder(num_classes=C, transformer=None)
    with pytest.raises(ValueError, match="differs from transformer_dim"):
        SemanticAwareDecoder(num_classes=C, transformer=transformer, transformer_dim=128)
    with pytest.raises(ValueError, match="num_heads"):
        TokenImageBlock(256, 7, 64)
    with pytest.raises(ValueError, match="positive"):
        MLP(4, 4, 4, 0)


def test_forward_validation():
    sawd = _sawd()
    image, pe, sparse, dense = _inputs()
    with pytest.raises(ValueError, match="image embeddings"):
        sawd(image[:2], pe, sparse, dense)
    with pytest.raises(ValueError, match="prompt tokens"):
        sawd(image, pe, sparse[..., :8], dense)

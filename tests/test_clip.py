"""Tests of the frozen CLIP wrapper against open_clip itself (random weights, offline)."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU, Transformer
from safetensors.torch import save_file
from torch import nn

from clip4hoi.models.clip import CLIPEncoder, build_clip
from clip4hoi.weights import WeightsUnavailableError, download_clip, resolve_clip

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PREFIX, CONJUNCTION = "a photo of a person", "with the"
VERBS = ["ride", "hold", "no interaction", "sit on"]
OBJECTS = ["bicycle", "cup", "dining table", "couch"]
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny() -> CLIPEncoder:
    torch.manual_seed(0)
    return build_clip("tiny", None, model_cfg=TINY)


@pytest.fixture(scope="module")
def b16() -> CLIPEncoder:
    torch.manual_seed(0)
    return build_clip("ViT-B-16", None)


@pytest.fixture(params=["tiny", "b16"])
def enc(request: pytest.FixtureRequest) -> CLIPEncoder:
    return request.getfixturevalue(request.param)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ---- image side --------------------------------------------------------------------------


@torch.no_grad()
def test_encode_image_matches_open_clip(enc: CLIPEncoder) -> None:
    size, depth = enc.image_size, len(enc.model.visual.transformer.resblocks)
    pixels = torch.randn(2 if enc.width < 100 else 1, 3, size, size)
    feats = enc.encode_image(pixels, layers=(0, -1), dense=True)
    grid = size // enc.patch_size
    assert _max_diff(feats.global_embedding, enc.model.encode_image(pixels)) < TOL
    assert feats.grid == (grid, grid)
    reference = enc.model.visual.forward_intermediates(
        pixels, indices=[0, depth - 1], output_fmt="NLC", intermediates_only=True
    )["image_intermediates"]
    for tokens, ref in zip(feats.patch_tokens, reference, strict=True):
        assert tokens.shape == (len(pixels), grid * grid, enc.width)
        assert _max_diff(tokens, ref) < TOL
    assert feats.dense_embeddings.shape == (len(pixels), grid * grid, enc.embed_dim)
    assert torch.isfinite(feats.dense_embeddings.mean(dim=1)).all()


@torch.no_grad()
def test_dense_is_the_value_path_of_the_last_block(tiny: CLIPEncoder) -> None:
    visual = tiny.model.visual
    pixels = torch.randn(1, 3, 64, 64)
    feats = tiny.encode_image(pixels, layers=(-2,), dense=True)
    last = visual.transformer.resblocks[-1]
    w, b = last.attn.in_proj_weight[2 * tiny.width :], last.attn.in_proj_bias[2 * tiny.width :]
    values = last.attn.out_proj(nn.functional.linear(last.ln_1(feats.patch_tokens[0]), w, b))
    assert _max_diff(feats.dense_embeddings, visual.ln_post(values) @ visual.proj) < TOL
    assert _max_diff(tiny.project_tokens(values), visual.ln_post(values) @ visual.proj) < TOL


@torch.no_grad()
def test_other_resolutions(enc: CLIPEncoder) -> None:
    size = 96 if enc.width < 100 else 320
    feats = enc.encode_image(torch.randn(1, 3, size, size), dense=True)
    grid = size // enc.patch_size
    assert feats.grid == (grid, grid)
    assert feats.patch_tokens[0].shape == (1, grid * grid, enc.width)
    assert feats.dense_embeddings.shape == (1, grid * grid, enc.embed_dim)
    assert torch.isfinite(feats.global_embedding).all()
    # the interpolated positional embedding is open_clip's own resize (and is cached)
    state = {"visual.positional_embedding": enc.model.visual.positional_embedding.clone()}
    open_clip.model.resize_pos_embed(
        state, SimpleNamespace(visual=SimpleNamespace(grid_size=(grid, grid)))
    )
    assert (
        _max_diff(enc._positional_embedding(grid, grid), state["visual.positional_embedding"])
        < 1e-6
    )
    assert enc._positional_embedding(grid, grid) is enc._positional_embedding(grid, grid)


def test_non_square_input_and_layer_errors(tiny: CLIPEncoder) -> None:
    with torch.no_grad():
        assert tiny.encode_image(torch.randn(1, 3, 48, 80)).grid == (3, 5)
    with pytest.raises(IndexError):
        tiny.encode_image(torch.randn(1, 3, 64, 64), layers=(2,))


def test_preprocess_resizes_whole_image(tiny: CLIPEncoder) -> None:
    image = torch.zeros(3, 90, 200)
    image[:, :, :100] = 1.0  # left half white
    out = tiny.preprocess([image, torch.rand(3, 30, 40)])
    assert out.shape == (2, 3, 64, 64)
    mean, std = torch.tensor(tiny.mean).view(3, 1), torch.tensor(tiny.std).view(3, 1)
    assert torch.allclose(out[0, :, :, :31], ((1 - mean) / std)[..., None].expand(3, 64, 31))
    assert torch.allclose(out[0, :, :, 33:], (-mean / std)[..., None].expand(3, 64, 31))
    with pytest.raises(ValueError):
        tiny.preprocess([torch.zeros(3, 10, 10, dtype=torch.uint8)])


def test_frozen_and_eval(tiny: CLIPEncoder) -> None:
    parent = nn.Sequential(tiny, nn.Linear(2, 2))
    parent.train()
    assert not tiny.training and not tiny.model.training
    assert not any(m.training for m in tiny.modules())
    assert not any(p.requires_grad for p in tiny.parameters())
    assert parent[1].training


# ---- text side ---------------------------------------------------------------------------


@torch.no_grad()
def test_encode_text_matches_open_clip(enc: CLIPEncoder) -> None:
    texts = ["hold cup", "a photo of a person riding a bicycle", "x", "zebra " * 90, ""]
    reference = enc.model.encode_text(enc.tokenize(texts))
    assert _max_diff(enc.encode_text(texts, batch_size=2), reference) < TOL
    assert enc.tokenize(texts).shape == (len(texts), 77)


@torch.no_grad()
def test_encode_prompts_equals_sentence(enc: CLIPEncoder) -> None:
    prefix, conjunction = enc.word_embeddings(PREFIX), enc.word_embeddings(CONJUNCTION)
    assert prefix.shape == (5, enc.text_width) and conjunction.shape == (2, enc.text_width)
    out = enc.encode_prompts(VERBS, OBJECTS, prefix, conjunction)
    sentences = [f"{PREFIX} {v} {CONJUNCTION} {o}" for v, o in zip(VERBS, OBJECTS, strict=True)]
    assert out.shape == (len(VERBS), enc.embed_dim)
    assert _max_diff(out, enc.encode_text(sentences)) < TOL


def test_prompt_gradients_and_cache(tiny: CLIPEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = nn.Parameter(torch.randn(8, tiny.text_width) * 0.02)
    conjunction = nn.Parameter(torch.randn(2, tiny.text_width) * 0.02)
    tiny.encode_prompts(VERBS, OBJECTS, prefix, conjunction).pow(2).sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    assert conjunction.grad is not None and conjunction.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.parameters())

    calls = []
    monkeypatch.setattr(tiny.tokenizer, "encode", lambda text: calls.append(text) or [])
    with torch.no_grad():
        tiny.encode_prompts(list(VERBS), list(OBJECTS), prefix, conjunction)  # cached class set
    assert calls == []


def test_prompt_too_long_names_the_class(tiny: CLIPEncoder) -> None:
    prefix = torch.zeros(60, tiny.text_width)
    with pytest.raises(ValueError, match=r"class 1 \('hold', 'cup"):
        tiny.encode_prompts(["ride", "hold"], ["bike", "cup " * 20], prefix, prefix[:2])


@pytest.mark.parametrize("final_ln_after_pool", [False, True])
@torch.no_grad()
def test_avg_pool_and_eos_pool_variants(final_ln_after_pool: bool) -> None:
    """Towers with average pooling, no ln_pre, EOS-id pooling, a biased text projection."""
    vision = {**TINY["vision_cfg"], "pool_type": "avg", "no_ln_pre": True}
    vision["final_ln_after_pool"] = final_ln_after_pool
    text = {**TINY["text_cfg"], "pool_type": "eos", "eos_id": 49407, "proj_bias": True}
    enc = build_clip(
        "variant", None, model_cfg={**TINY, "vision_cfg": vision, "text_cfg": text}
    )
    pixels, texts = torch.randn(2, 3, 64, 64), ["ride bicycle", "a photo of a person", ""]
    assert (
        _max_diff(enc.encode_image(pixels).global_embedding, enc.model.encode_image(pixels)) < TOL
    )
    assert _max_diff(enc.encode_text(texts), enc.model.encode_text(enc.tokenize(texts))) < TOL
    prompts = enc.encode_prompts(
        ["ride"], ["bicycle"], enc.word_embeddings("a"), enc.word_embeddings("the")
    )
    assert _max_diff(prompts, enc.encode_text(["a ride the bicycle"])) < TOL


@torch.no_grad()
def test_sequence_first_transformers(tiny: CLIPEncoder) -> None:
    """Blocks of older open_clip versions take [L, B, W]; results must not change."""
    model = open_clip.model.CLIP(**TINY)
    model.load_state_dict(tiny.model.state_dict())
    for owner in (model.visual, model):
        old = owner.transformer
        heads = old.resblocks[0].attn.num_heads
        new = Transformer(old.width, old.layers, heads, batch_first=False)
        new.load_state_dict(old.state_dict())
        owner.transformer = new
    seq_first = CLIPEncoder(model, tiny.tokenizer)
    pixels, texts = torch.randn(2, 3, 64, 64), ["ride bicycle", "a photo of a person"]
    feats = seq_first.encode_image(pixels, layers=(0, -1), dense=True)
    ref = tiny.encode_image(pixels, layers=(0, -1), dense=True)
    assert _max_diff(feats.global_embedding, model.encode_image(pixels)) < TOL
    assert _max_diff(feats.patch_tokens[0], ref.patch_tokens[0]) < TOL
    assert _max_diff(feats.dense_embeddings, ref.dense_embeddings) < TOL
    assert (
        _max_diff(seq_first.encode_text(texts), model.encode_text(seq_first.tokenize(texts))) < TOL
    )


# ---- weights -----------------------------------------------------------------------------


def _online() -> bool:
    try:
        urllib.request.urlopen(
            urllib.request.Request("https://huggingface.co", method="HEAD"), timeout=3
        )
    except Exception:
        return False
    return True


def test_offline_error_then_local_file_is_found(tmp_path: Path, b16: CLIPEncoder) -> None:
    if _online():
        pytest.skip("internet access: the offline behaviour cannot be tested (it would download)")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as error:
        resolve_clip("ViT-B-16", "openai", cache_dir=tmp_path)
    assert time.monotonic() - start < 30
    message = str(error.value)
    assert "https://huggingface.co/timm/vit_base_patch16_clip_224.openai" in message
    assert "https://openaipublic.azureedge.net/clip/models/" in message
    destination = Path(re.search(r"save it as (\S+)", message).group(1))
    assert destination == tmp_path / "ViT-B-16-openai.safetensors"
    with pytest.raises(WeightsUnavailableError):
        download_clip("ViT-B-16", "openai", cache_dir=tmp_path)

    # put (random) weights where the message says: the next run finds them
    state = {k: v.half().contiguous() for k, v in b16.model.state_dict().items()}
    save_file(state, destination)
    assert download_clip("ViT-B-16", "openai", cache_dir=tmp_path) == destination
    loaded = build_clip("ViT-B-16", resolve_clip("ViT-B-16", "openai", cache_dir=tmp_path))
    key = "visual.transformer.resblocks.3.mlp.c_fc.weight"
    assert torch.equal(loaded.model.state_dict()[key], state[key].float())
    assert isinstance(
        loaded.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU
    )  # openai tag


def test_download_clip_finds_open_clip_caches(tmp_path: Path) -> None:
    """A file that open_clip already downloaded (HF hub cache layout) is found offline."""
    repo = tmp_path / "models--timm--vit_base_patch16_clip_224.laion400m_e32"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    weights = repo / "snapshots" / "0123abcd" / "open_clip_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not read here")
    assert download_clip("ViT-B-16", "laion400m-e32", cache_dir=tmp_path) == weights
    assert download_clip("ViT-B/16", str(weights), cache_dir=tmp_path) == weights
    with pytest.raises(ValueError, match="random weights"):
        download_clip("ViT-B-16", "", cache_dir=tmp_path)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_archive(tmp_path: Path, tiny: CLIPEncoder) -> None:
    """OpenAI's .pt files are TorchScript archives: read with torch.jit.load, QuickGELU."""
    traced = torch.jit.trace_module(
        tiny.model.eval(), {"encode_image": (torch.randn(1, 3, 64, 64),)}, check_trace=False
    )
    path = tmp_path / "tiny_openai.pt"
    traced.save(str(path))
    loaded = build_clip("tiny", str(path), model_cfg=TINY)
    key = "transformer.resblocks.1.attn.in_proj_weight"
    assert torch.equal(loaded.model.state_dict()[key], tiny.model.state_dict()[key])
    assert isinstance(loaded.model.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_state_dict_file(tmp_path: Path, tiny: CLIPEncoder) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    loaded = build_clip("tiny", path, model_cfg=TINY)
    with torch.no_grad():
        pixels = torch.randn(1, 3, 64, 64)
        assert torch.equal(
            loaded.encode_image(pixels).global_embedding, tiny.encode_image(pixels).global_embedding
        )
        # Built on the meta device, then loaded: nothing left on it, the causal attention
        # masks (not in the file) made as open_clip makes them.
        assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
        assert torch.equal(loaded.model.attn_mask, tiny.model.attn_mask)
        assert torch.equal(loaded.encode_text(["a photo"]), tiny.encode_text(["a photo"]))
    small = {**TINY, "embed_dim": 16}
    with pytest.raises(ValueError, match="cannot load weights"):
        build_clip("tiny", path, model_cfg=small)


def test_bad_names_and_tags() -> None:
    with pytest.raises(ValueError, match="ViT-B-16"):
        build_clip("ViT-B-61", None)
    with pytest.raises(ValueError, match="openai"):
        resolve_clip("ViT-B-16", "opnai")
    with pytest.raises(ValueError, match="ViT"):
        build_clip("RN50", None)
    with pytest.raises(FileNotFoundError, match="resolve_clip"):
        build_clip("tiny", "openai", model_cfg=TINY)
    with pytest.raises(ValueError, match="multiple"):
        build_clip("tiny", None, model_cfg=TINY, image_size=70)

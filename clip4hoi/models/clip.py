"""The frozen CLIP of CLIP4HOI (spec §2): a thin wrapper around an open_clip ``CLIP`` model.

It reuses open_clip's modules and weights as they are and adds what CLIP4HOI needs:

* image side: the whole image resized to the CLIP resolution (``preprocess``), one pass over
  the ViT that returns the global embedding (identical to ``model.encode_image``), the patch
  tokens after chosen blocks, and optionally dense joint-space embeddings (MaskCLIP);
  other input resolutions through a bicubic interpolation of the positional embedding;
* text side: ``encode_text`` with sequences trimmed to the longest text of the batch, and
  ``encode_prompts`` for the learnable prompt ``[SOT] prefix×n verb conjunction×m object
  [EOT]`` whose context vectors are parameters owned by the caller.

Every parameter is frozen and the model stays in eval mode when a parent calls ``.train()``.

``build_clip`` builds the network and loads a given weights file; pretrained tags are
looked up and downloaded by :func:`clip4hoi.weights.resolve_clip`.

Shapes: ``B`` images, ``N = gh * gw`` patches (row-major), ``W`` ViT width, ``E`` joint
embedding size, ``K`` texts or classes, ``L`` (trimmed) sequence length, ``Wt`` text width.
"""

from __future__ import annotations

import pickle
import sys
import warnings
import zipfile
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import Tensor, nn

from clip4hoi.errors import InputError

if TYPE_CHECKING:  # open_clip is imported where a network is built (2.5 s: transformers)
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.tokenizer import SimpleTokenizer

    from clip4hoi.weights import CLIPWeights

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "CLIPEncoder",
    "ImageFeatures",
    "build_clip",
    "resize_normalize",
]

OPENAI_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------------------
# Building from a weights file
# --------------------------------------------------------------------------------------

OPEN_CLIP_EXTRAS = ("transformers", "timm", "huggingface_hub")
"""What ``import open_clip`` imports for what clip4hoi never asks of it — Hugging Face text
towers and timm image towers (:func:`build_clip` refuses both), downloads from the Hub
(:mod:`clip4hoi.weights` makes its own) — 1–2 s of start-up."""


def import_open_clip_lean() -> ModuleType:
    """``import open_clip`` without the :data:`OPEN_CLIP_EXTRAS` not imported yet: 0.5 s
    instead of 1.5–2.5 s. open_clip imports each of them inside ``try: ... except
    ImportError`` and then lacks only what needs it, in this process; the libraries stay
    importable (Grounding DINO imports ``transformers`` later, :mod:`clip4hoi.weights`
    ``huggingface_hub``). For the processes of clip4hoi's own commands (``cli.py``): a
    library call leaves open_clip whole for the user's code."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"]
    hidden = [name for name in OPEN_CLIP_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` -> ImportError
    try:
        import open_clip
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return open_clip


def _is_torchscript(path: Path) -> bool:
    """OpenAI's ``.pt`` files are TorchScript archives (a zip with ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") for n in archive.namelist())


def _load_weights(model: nn.Module, path: Path, torchscript: bool) -> None:
    """Load a checkpoint with open_clip's loader (``weights_only=True`` / safetensors); an
    OpenAI TorchScript archive through ``torch.jit.load`` (no pickled Python objects). The
    tensors are assigned, not copied (``model`` may be on the meta device)."""
    import open_clip
    from open_clip.model import CustomTextCLIP

    try:
        if not torchscript:
            # open_clip's loader (format conversions, resized position embeddings) ends in
            # model.load_state_dict: assign the loaded tensors there.
            model.load_state_dict = partial(type(model).load_state_dict, model, assign=True)
            try:
                open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
            finally:
                del model.load_state_dict
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        if isinstance(model, CustomTextCLIP):
            state = open_clip.model.convert_to_custom_text_state_dict(state)
        # drop OpenAI's extra entries and non-persistent buffers (a traced attn_mask)
        skip = {"input_resolution", "context_length", "vocab_size"}
        skip |= {n for n, _ in model.named_buffers()} - model.state_dict().keys()
        state = {k: v for k, v in state.items() if k not in skip}
        model.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as e:
        raise InputError(f"cannot load weights of this CLIP architecture from {path}: {e}"
                         ) from e


def _build_loaded(model_class: type[nn.Module], cfg: dict[str, Any], path: Path,
                  torchscript: bool) -> nn.Module:
    """``model_class(**cfg)`` with the weights of ``path``, built on the meta device: no
    time is spent on a random initialisation that the weights overwrite (1.1 s for
    ViT-B/16 on a CPU). The only tensors a checkpoint lacks, open_clip's non-persistent
    causal attention masks (``attn_mask [L, L]``), are made as open_clip makes them; a
    model with any other one is built on the CPU instead."""
    with torch.device("meta"):
        model = model_class(**cfg)
    _load_weights(model, path, torchscript)
    for module in model.modules():
        for name, buffer in module.named_buffers(recurse=False):
            if not buffer.is_meta:
                continue
            if name != "attn_mask" or buffer.ndim != 2 or buffer.shape[0] != buffer.shape[1]:
                model = model_class(**cfg)
                _load_weights(model, path, torchscript)
                return model
            setattr(module, name, torch.full(buffer.shape, float("-inf")).triu_(1))
    return model


def build_clip(
    name: str = "ViT-B-16",
    weights: CLIPWeights | str | Path | None = None,
    image_size: int | None = None,
    model_cfg: dict[str, Any] | None = None,
) -> CLIPEncoder:
    """Build the frozen CLIP encoder and load its weights.

    Args:
        name: open_clip architecture (``ViT-B-16``, ``ViT-L-14``, ...); only a label when
            ``model_cfg`` is given.
        weights: a weights file — OpenAI TorchScript ``.pt``, or an open_clip state dict
            ``.pt/.pth/.bin/.safetensors`` — as a path or as the :class:`CLIPWeights` of a
            pretrained tag (:func:`clip4hoi.weights.resolve_clip` finds or downloads it);
            None for random weights. Tags trained with QuickGELU (``openai``, ...) get
            QuickGELU, as does any TorchScript archive; a plain path gets the activation of
            ``name``'s config (use a ``-quickgelu`` name for OpenAI weights saved as a state
            dict).
        image_size: resolution of ``preprocess`` (a multiple of the patch size); default the
            pretraining one.
        model_cfg: an open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) for a
            custom architecture.
    """
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.tokenizer import SimpleTokenizer

    from clip4hoi.weights import CLIPWeights, clip_architecture

    if weights is not None and not isinstance(weights, CLIPWeights):
        weights = CLIPWeights(Path(weights))
    if weights is not None and not weights.file.is_file():
        raise FileNotFoundError(f"CLIP weights {weights.file}: no such file (pretrained tags "
                                f"are resolved by clip4hoi.weights.resolve_clip)")
    if model_cfg is None:
        name = clip_architecture(name)
        cfg = open_clip.get_model_config(name)
    else:
        cfg = deepcopy(model_cfg)
    vision_cfg, text_cfg = cfg["vision_cfg"], cfg["text_cfg"]
    if not isinstance(vision_cfg.get("layers", 12), int) or vision_cfg.get("timm_model_name"):
        raise ValueError(f"{name}: only open_clip ViT image towers are supported (not ResNet/timm)")
    if (
        text_cfg.get("hf_model_name")
        or text_cfg.get("hf_tokenizer_name")
        or "multimodal_cfg" in cfg
    ):
        raise ValueError(f"{name}: only CLIP text towers with the CLIP BPE tokenizer are supported")

    torchscript = weights is not None and _is_torchscript(weights.file)
    if (weights is not None and weights.quick_gelu) or torchscript:
        cfg["quick_gelu"] = True
    model_class = CustomTextCLIP if cfg.pop("custom_text", False) else CLIP
    model = model_class(**cfg) if weights is None else _build_loaded(
        model_class, cfg, weights.file, torchscript)
    tokenizer = SimpleTokenizer(
        context_length=text_cfg.get("context_length", 77), **text_cfg.get("tokenizer_kwargs", {})
    )
    return CLIPEncoder(
        model.float(),
        tokenizer,
        image_size=image_size,
        mean=(weights and weights.mean) or OPENAI_MEAN,
        std=(weights and weights.std) or OPENAI_STD,
    )


# --------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------


def resize_normalize(images: Sequence[Tensor], size: int, mean: Tensor, std: Tensor) -> Tensor:
    """Float ``[3, H, W]`` images in [0, 1] -> ``[B, 3, size, size]`` on ``mean``'s device:
    each resized as a whole (bilinear, antialiased), then ``(x - mean) / std`` with
    ``mean``/``std`` ``[3, 1, 1]`` (:meth:`CLIPEncoder.preprocess`)."""
    out = []
    for image in images:
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(
                f"expected a float [3, H, W] image, got {image.dtype} {tuple(image.shape)}"
            )
        image = image.to(mean.device, torch.float32)[None]  # [1, 3, H, W]
        out.append(F.interpolate(image, size=(size, size), mode="bilinear",
                                 align_corners=False, antialias=True))
    return (torch.cat(out) - mean) / std  # [B, 3, S, S]


@dataclass
class ImageFeatures:
    """Output of ``CLIPEncoder.encode_image``."""

    global_embedding: Tensor  # [B, E], as open_clip's encode_image (not normalised)
    patch_tokens: list[Tensor]  # per requested block: [B, N, W], residual stream, CLS dropped
    grid: tuple[int, int]  # (gh, gw), N = gh * gw, tokens in row-major order
    dense_embeddings: Tensor | None = None  # [B, N, E] (MaskCLIP) when dense=True


@dataclass
class _PromptLayout:
    ids: Tensor  # [K, L] token ids (0 at learnable positions and after EOT)
    slot: Tensor  # [K, L] row of cat(prefix, conjunction) at learnable positions, else -1
    eot: Tensor  # [K] position of EOT
    groups: tuple[tuple[Tensor, int], ...] = ()  # (prompt indices, length): same-length groups


def _seq_first(block: nn.Module) -> bool:
    """Blocks of open_clip < 2.24 (and ``batch_first=False`` ones) take [L, B, W] sequences."""
    attn = getattr(block, "attn", None)
    return isinstance(attn, nn.MultiheadAttention) and not attn.batch_first


def _plain_block(block: nn.Module) -> bool:
    """An open_clip ``ResidualAttentionBlock`` with plain multi-head self-attention (what
    :meth:`CLIPEncoder._encode_shared_prefix` reimplements)."""
    attn = getattr(block, "attn", None)
    return (type(block).__name__ == "ResidualAttentionBlock" and not hasattr(block, "ln_1_kv")
            and isinstance(attn, nn.MultiheadAttention) and attn.in_proj_weight is not None
            and attn.in_proj_bias is not None and attn._qkv_same_embed_dim)


class CLIPEncoder(nn.Module):
    """Frozen open_clip CLIP: image features for the HOI decoder, text embeddings of prompts.

    Attributes: ``embed_dim`` (E), ``width`` (W), ``text_width`` (Wt), ``patch_size``,
    ``image_size`` (S of ``preprocess``), ``context_length``, ``mean``/``std`` (pixel
    normalisation), ``model`` (the open_clip model), ``tokenizer``.
    """

    def __init__(
        self,
        model: CLIP | CustomTextCLIP,
        tokenizer: SimpleTokenizer,
        image_size: int | None = None,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
    ) -> None:
        from open_clip.transformer import VisionTransformer

        super().__init__()
        visual = model.visual
        if not isinstance(visual, VisionTransformer):
            raise ValueError(f"only ViT image towers are supported, got {type(visual).__name__}")
        if visual.attn_pool is not None or visual.pool_type not in ("tok", "avg"):
            raise ValueError("ViT towers with attentional or no pooling (CoCa) are not supported")
        if visual.patch_size[0] != visual.patch_size[1]:
            raise ValueError(f"non-square patches {visual.patch_size} are not supported")
        text = getattr(model, "text", model)
        pool = getattr(text, "text_pool_type", None) or getattr(text, "pool_type", None)
        if getattr(text, "cls_emb", None) is not None or text.attn_mask is None:
            raise ValueError("the text tower must be causal and without a class token")
        if pool not in ("argmax", "eos"):
            raise ValueError(f"text pooling {pool!r} is not supported (needs EOT pooling)")
        if text.token_embedding.num_embeddings < tokenizer.vocab_size:
            raise ValueError("the text vocabulary is smaller than the CLIP BPE tokenizer's")

        self.model = model
        self.tokenizer = tokenizer
        self.width: int = visual.conv1.out_channels
        self.embed_dim: int = visual.proj.shape[1] if visual.proj is not None else self.width
        self.text_width: int = text.token_embedding.embedding_dim
        self.patch_size: int = visual.patch_size[0]
        self.image_size: int = image_size or visual.image_size[0]
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of {self.patch_size}")
        self.context_length: int = text.positional_embedding.shape[0]
        self.mean: tuple[float, ...] = tuple(mean)
        self.std: tuple[float, ...] = tuple(std)
        self._text_pool: str = pool
        self._eos_id: int | None = getattr(text, "text_eos_id", getattr(text, "eos_id", None))
        self.register_buffer("_pixel_mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("_pixel_std", torch.tensor(std).view(3, 1, 1), persistent=False)
        self._pos_cache: dict[tuple, Tensor] = {}
        self._prompt_cache: dict[tuple, _PromptLayout] = {}
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> CLIPEncoder:
        """Always eval mode (frozen), whatever a parent module asks."""
        return super().train(False)

    @property
    def _text(self) -> nn.Module:
        return getattr(self.model, "text", self.model)

    # ---- image side -------------------------------------------------------------------

    def preprocess(self, images: Sequence[Tensor]) -> Tensor:
        """Float ``[3, H, W]`` images in [0, 1] -> CLIP input ``[B, 3, S, S]``: each image is
        resized as a whole to S×S (bilinear, antialiased; no crop, so boxes map linearly)
        and normalised with ``mean``/``std``. Output on this module's device."""
        return resize_normalize(images, self.image_size, self._pixel_mean, self._pixel_std)

    def _positional_embedding(self, gh: int, gw: int) -> Tensor:
        """[1 + gh * gw, W]: the learned grid resized bicubically (antialiased, as open_clip's
        ``resize_pos_embed``), class position kept; cached per grid size, device and dtype."""
        pos = self.model.visual.positional_embedding  # [1 + G0h * G0w, W]
        g0h, g0w = self.model.visual.grid_size
        if (gh, gw) == (g0h, g0w):
            return pos
        key = (gh, gw, pos.device, pos.dtype)
        if key not in self._pos_cache:
            with torch.no_grad():
                grid = pos[1:].reshape(1, g0h, g0w, -1).permute(0, 3, 1, 2)  # [1, W, G0h, G0w]
                grid = F.interpolate(
                    grid.float(),
                    size=(gh, gw),
                    mode="bicubic",
                    align_corners=False,
                    antialias=True,
                )
                grid = grid.permute(0, 2, 3, 1).reshape(gh * gw, -1).to(pos.dtype)  # [gh * gw, W]
                self._pos_cache[key] = torch.cat([pos[:1], grid])
        return self._pos_cache[key]

    def encode_image(
        self, pixels: Tensor, layers: Sequence[int] = (-1,), dense: bool = False
    ) -> ImageFeatures:
        """One pass over the ViT for ``pixels [B, 3, H, W]`` (any H, W; usually ``preprocess``).

        Args:
            layers: blocks after which the patch tokens are returned (negative from the end).
            dense: also compute ``dense_embeddings [B, N, E]`` MaskCLIP-style (Zhou et al.,
                ECCV 2022): in the last block every token keeps its own value vector —
                ``ln_1`` → value projection → ``out_proj``, skipping the query-key attention,
                that block's residual and its MLP — then ``ln_post`` and ``proj``. The last
                block's attention mixes tokens globally (it is trained to pool into CLS), so
                plain projected patch tokens align poorly with text; the value path keeps each
                token local and lands in the space ``proj`` was trained for. It is computed from
                the last block's input during the same pass (one extra W×W projection per token).
        """
        visual = self.model.visual
        blocks = visual.transformer.resblocks
        keep = [i + len(blocks) if i < 0 else i for i in layers]
        if any(not 0 <= i < len(blocks) for i in keep):
            raise IndexError(f"layers {tuple(layers)} out of range for {len(blocks)} blocks")

        x = visual.conv1(pixels.to(visual.conv1.weight.dtype))  # [B, W, gh, gw]
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # [B, N, W]
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [B, 1, W]
        x = torch.cat([cls, x], dim=1) + self._positional_embedding(gh, gw).to(x.dtype)
        x = visual.ln_pre(visual.patch_dropout(x))  # [B, 1 + N, W]

        seq_first = _seq_first(blocks[0])
        h = x.transpose(0, 1) if seq_first else x
        taken: dict[int, Tensor] = {}
        values = None
        for i, block in enumerate(blocks):
            if dense and i == len(blocks) - 1:
                values = self._value_path(block, h)  # per token: layout-agnostic
            h = block(h)
            if i in keep:
                taken[i] = (h.transpose(0, 1) if seq_first else h)[:, 1:]  # [B, N, W]
        x = h.transpose(0, 1) if seq_first else h  # [B, 1 + N, W]

        if visual.pool_type == "tok":
            pooled = visual.ln_post(x[:, 0])  # [B, W]
        elif visual.final_ln_after_pool:
            pooled = visual.ln_post(x[:, 1:].mean(dim=1))
        else:
            pooled = visual.ln_post(x[:, 1:]).mean(dim=1)
        dense_embeddings = None
        if values is not None:
            values = values.transpose(0, 1) if seq_first else values  # [B, 1 + N, W]
            dense_embeddings = self.project_tokens(values[:, 1:])  # [B, N, E]
        return ImageFeatures(
            global_embedding=self._visual_proj(pooled),
            patch_tokens=[taken[i] for i in keep],
            grid=(int(gh), int(gw)),
            dense_embeddings=dense_embeddings,
        )

    @staticmethod
    def _value_path(block: nn.Module, x: Tensor) -> Tensor:
        """``out_proj(value(ln_1(x)))`` of a block, token by token: ``[..., W] -> [..., W]``."""
        attn = block.attn
        y = block.ln_1(x)
        width = y.shape[-1]
        if getattr(attn, "head_scale", None) is not None:
            raise NotImplementedError("dense embeddings with per-head scaling are not supported")
        if isinstance(attn, nn.MultiheadAttention) and not attn._qkv_same_embed_dim:
            weight = attn.v_proj_weight
        else:
            weight = attn.in_proj_weight[2 * width :]
        bias = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
        v = F.linear(y, weight, bias)
        v = getattr(attn, "ln_inner", nn.Identity())(v)
        return attn.out_proj(v)

    def _visual_proj(self, x: Tensor) -> Tensor:
        proj = self.model.visual.proj  # [W, E] or None
        return x @ proj if proj is not None else x

    def project_tokens(self, tokens: Tensor) -> Tensor:
        """ViT tokens ``[..., W]`` -> joint space ``[..., E]``: ``ln_post`` then ``proj``."""
        return self._visual_proj(self.model.visual.ln_post(tokens))

    # ---- text side --------------------------------------------------------------------

    def tokenize(self, texts: str | Sequence[str]) -> Tensor:
        """open_clip token ids ``[K, context_length]`` (SOT, BPE, EOT, zero padding)."""
        return self.tokenizer([texts] if isinstance(texts, str) else list(texts))

    def _token_embedding(self, ids: Tensor) -> Tensor:
        text = self._text
        return text.token_embedding(ids).to(text.transformer.get_cast_dtype())

    def word_embeddings(self, text: str) -> Tensor:
        """Token embeddings ``[n, Wt]`` of the words of ``text`` (no SOT/EOT), detached: to
        initialise learnable context vectors."""
        ids = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        device = self._text.token_embedding.weight.device
        with torch.no_grad():
            return self._token_embedding(ids.to(device)).clone()

    def _encode_sequences(self, x: Tensor, eot: Tensor, shared: int = 0) -> Tensor:
        """Text transformer over embedded sequences ``x [K, L, Wt]`` (causal) -> ``[K, E]``
        from the token at ``eot [K]``. The first ``shared`` tokens are the same in every
        sequence: as attention is causal their states are too, so they go through the
        transformer once (:meth:`_encode_shared_prefix`)."""
        text = self._text
        length = x.shape[1]
        x = x + text.positional_embedding[:length].to(x.dtype)
        blocks = text.transformer.resblocks
        if 0 < shared < length and len(x) > 1 and all(map(_plain_block, blocks)):
            x = self._encode_shared_prefix(x, shared)                  # [K, L - shared, Wt]
            eot = eot - shared
        else:
            mask = text.attn_mask[:length, :length]  # [L, L], -inf above the diagonal
            seq_first = _seq_first(blocks[0])
            h = x.transpose(0, 1) if seq_first else x
            for block in blocks:
                h = block(h, attn_mask=mask)
            x = h.transpose(0, 1) if seq_first else h  # [K, L, Wt]
        x = text.ln_final(x[torch.arange(x.shape[0], device=x.device), eot])  # [K, Wt]
        proj = text.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj  # [K, E]

    def _encode_shared_prefix(self, x: Tensor, shared: int) -> Tensor:
        """States ``[K, L - P, Wt]`` of the last ``L - P`` tokens of ``x [K, L, Wt]``
        (position embeddings added) whose first ``P = shared`` tokens are the same in all
        ``K`` sequences: the prefix runs through each block once (batch 1) and the other
        tokens attend to its keys and values. Equal to the full causal pass; for CLIP4HOI's
        prompts (``[SOT]`` + 8 ``[PREFIX]`` of about 14 tokens) it saves ~60 % of the text
        encoder's work, forward and backward."""
        prefix, rest = x[:1, :shared], x[:, shared:]
        n = rest.shape[1]
        # Rest tokens see the whole prefix and, causally, each other: [n, P + n], True = attend.
        allowed = torch.ones(n, shared + n, dtype=torch.bool, device=x.device)
        allowed[:, shared:] = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        causal = self._text.attn_mask[:shared, :shared]
        for block in self._text.transformer.resblocks:
            attn = block.attn
            p_in, r_in = block.ln_1(prefix), block.ln_1(rest)
            q, k, v = F.linear(r_in, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            _, pk, pv = F.linear(p_in, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
            k = torch.cat([pk.expand(len(rest), -1, -1), k], dim=1)          # [K, P + n, Wt]
            v = torch.cat([pv.expand(len(rest), -1, -1), v], dim=1)

            def heads(t: Tensor, heads: int = attn.num_heads) -> Tensor:
                return t.unflatten(-1, (heads, -1)).transpose(1, 2)      # [K, h, *, d]

            out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v),
                                                 attn_mask=allowed)       # [K, h, n, d]
            rest = rest + block.ls_1(attn.out_proj(out.transpose(1, 2).flatten(2)))
            rest = rest + block.ls_2(block.mlp(block.ln_2(rest)))
            prefix_h = prefix.transpose(0, 1) if _seq_first(block) else prefix
            prefix_h = block(prefix_h, attn_mask=causal)
            prefix = prefix_h.transpose(0, 1) if _seq_first(block) else prefix_h
        return rest

    def encode_text(self, texts: str | Sequence[str], batch_size: int = 256) -> Tensor:
        """``[K, E]``, equal to open_clip's ``encode_text`` (not normalised; too long texts are
        truncated as open_clip does), with each batch trimmed to its longest text — exact since
        attention is causal. Texts are sorted by length to reduce padding."""
        ids = self.tokenize(texts).to(self._text.token_embedding.weight.device)  # [K, C]
        if self._text_pool == "argmax":  # OpenAI BPE: EOT has the largest id
            eot = ids.argmax(dim=-1)
        else:
            eot = (ids == self._eos_id).int().argmax(dim=-1)
        order = eot.argsort()
        out = []
        for chunk in order.split(batch_size):
            length = int(eot[chunk].max()) + 1
            out.append(
                self._encode_sequences(self._token_embedding(ids[chunk, :length]), eot[chunk])
            )
        return torch.cat(out)[order.argsort()]

    def _prompt_layout(
        self, verbs: Sequence[str], objects: Sequence[str], n: int, m: int, device: torch.device
    ) -> _PromptLayout:
        """Token ids, learnable slots and EOT positions of the prompts; cached per class set."""
        key = (tuple(verbs), tuple(objects), n, m, str(device))
        if key in self._prompt_cache:
            return self._prompt_cache[key]
        if len(verbs) != len(objects):
            raise ValueError(f"{len(verbs)} verbs but {len(objects)} objects")
        words = {w: self.tokenizer.encode(w) for w in {*verbs, *objects}}
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        rows, slots = [], []
        for k, (verb, obj) in enumerate(zip(verbs, objects, strict=True)):
            v, o = words[verb], words[obj]
            rows.append([sot, *[0] * n, *v, *[0] * m, *o, eot])
            slots.append([-1, *range(n), *[-1] * len(v), *range(n, n + m), *[-1] * (len(o) + 1)])
            if len(rows[-1]) > self.context_length:
                raise ValueError(
                    f"the prompt of class {k} ({verb!r}, {obj!r}) has {len(rows[-1])} tokens, "
                    f"more than the context length {self.context_length}"
                )
        length = max((len(r) for r in rows), default=2)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        slot = torch.full((len(rows), length), -1, dtype=torch.long)
        for k, (r, s) in enumerate(zip(rows, slots, strict=True)):
            ids[k, : len(r)] = torch.tensor(r)
            slot[k, : len(s)] = torch.tensor(s)
        eot_pos = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
        groups = tuple((torch.nonzero(eot_pos == n - 1).squeeze(1).to(device), n)
                       for n in sorted({len(r) for r in rows}))
        layout = _PromptLayout(ids.to(device), slot.to(device), eot_pos.to(device), groups)
        if len(self._prompt_cache) >= 16:
            self._prompt_cache.clear()
        self._prompt_cache[key] = layout
        return layout

    def encode_prompts(
        self,
        verbs: Sequence[str],
        objects: Sequence[str],
        prefix: Tensor,
        conjunction: Tensor,
    ) -> Tensor:
        """Text embeddings ``[K, E]`` of ``[SOT] prefix verb_k conjunction object_k [EOT]``.

        Args:
            verbs, objects: the K classes' phrases, as text (``"dining table"``, not
                ``"dining_table"``); tokenised once per class set (cached).
            prefix: ``[n, Wt]`` learnable context before the verb (gradients flow to it).
            conjunction: ``[m, Wt]`` learnable context between verb and object.

        With ``prefix``/``conjunction`` set to ``word_embeddings`` of some words, the result
        equals ``encode_text("<prefix words> verb <conjunction words> object")``. Prompts are
        encoded in groups of one length, and the ``[SOT] prefix`` tokens they all share run
        through the transformer once. ValueError names a class whose prompt exceeds the
        context length.
        """
        for context in (prefix, conjunction):
            if context.ndim != 2 or context.shape[1] != self.text_width:
                raise ValueError(
                    f"prefix and conjunction must be [n, {self.text_width}] and "
                    f"[m, {self.text_width}], got {tuple(context.shape)}"
                )
        device = self._text.token_embedding.weight.device
        layout = self._prompt_layout(verbs, objects, len(prefix), len(conjunction), device)
        x = self._token_embedding(layout.ids)  # [K, L, Wt]
        if len(prefix) + len(conjunction):
            context = torch.cat([prefix, conjunction]).to(x)  # [n + m, Wt]
            learned = context[layout.slot.clamp(min=0)]  # [K, L, Wt]
            x = torch.where((layout.slot >= 0)[..., None], learned, x)
        # Prompts of one length at a time, each cut after its EOT (exact: causal attention).
        out = [self._encode_sequences(x[index, :length], layout.eot[index], 1 + len(prefix))
               for index, length in layout.groups]
        order = torch.cat([index for index, _ in layout.groups])
        return torch.cat(out)[torch.argsort(order)]

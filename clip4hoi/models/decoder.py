"""HOI decoder: pair tokens attend to the frozen CLIP image encoder's patch tokens.

Queries are the HO interactor's pair tokens; keys and values are the patch tokens of one or
several CLIP ViT blocks (layer-normed, projected to the decoder width, with a 2-D sine
position embedding and, for several blocks, a learned block embedding). Each layer is
pre-norm: self-attention among the image's pairs, cross-attention to the patches
(optionally only those inside the pair's union box), feed-forward. The output is projected
to the CLIP joint embedding space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clip4hoi.models.interactor import PairIndex, sine_embedding


def patch_centres(grid: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """Normalised ``(x, y)`` centres ``[gh * gw, 2]`` of a patch grid, row-major."""
    gh, gw = grid
    ys = (torch.arange(gh, device=device) + 0.5) / gh
    xs = (torch.arange(gw, device=device) + 0.5) / gw
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


def union_box_mask(union_boxes: Tensor, grid: tuple[int, int]) -> Tensor:
    """``[P, gh * gw]`` bool, True where a patch must NOT be attended: its centre lies
    outside the pair's union box (normalised xyxy ``[P, 4]``). The patch holding the box
    centre is always allowed, so no pair is left without keys."""
    centres = patch_centres(grid, union_boxes.device)                    # [N, 2]
    x, y = centres[:, 0], centres[:, 1]
    x1, y1, x2, y2 = (c[:, None] for c in union_boxes.unbind(1))          # [P, 1] each
    inside = (x >= x1) & (x <= x2) & (y >= y1) & (y <= y2)               # [P, N]
    gh, gw = grid
    cx = ((x1 + x2) / 2 * gw).long().clamp(0, gw - 1)
    cy = ((y1 + y2) / 2 * gh).long().clamp(0, gh - 1)
    inside.scatter_(1, cy * gw + cx, True)
    return ~inside


class HOIDecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention and feed-forward over pair tokens."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, memory_pos: Tensor, padding: Tensor,
                cross_mask: Tensor | None) -> Tensor:
        """``x`` ``[B, P, d]`` pair tokens, ``memory``/``memory_pos`` ``[B, N, d]``,
        ``padding`` ``[B, P]`` (True = padded pair), ``cross_mask`` ``[B*heads, P, N]``."""
        q = self.norms[0](x)
        x = x + self.dropout(self.self_attn(q, q, q, key_padding_mask=padding,
                                            need_weights=False)[0])
        q = self.norms[1](x)
        x = x + self.dropout(self.cross_attn(q, memory + memory_pos, memory,
                                             attn_mask=cross_mask, need_weights=False)[0])
        return x + self.dropout(self.ffn(self.norms[2](x)))


class HOIDecoder(nn.Module):
    """Maps pair tokens ``[P_i, token_dim]`` to pair features ``[P_i, out_dim]``."""

    def __init__(self, token_dim: int, clip_width: int, out_dim: int, num_levels: int = 1,
                 dim: int = 512, num_layers: int = 2, num_heads: int = 8, ffn_dim: int = 2048,
                 dropout: float = 0.1, union_mask: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.union_mask = union_mask
        self.query_proj = nn.Linear(token_dim, dim)
        # Without layers (the "no HOI decoder" ablation) nothing attends to CLIP: no memory
        # projection either (a parameter that never gets a gradient would stop DDP).
        attends = num_layers > 0
        self.memory_norm = nn.LayerNorm(clip_width) if attends else None
        self.memory_proj = nn.Linear(clip_width, dim) if attends else None
        self.level_embed = nn.Parameter(torch.zeros(num_levels, dim)) \
            if attends and num_levels > 1 else None
        self.layers = nn.ModuleList(
            HOIDecoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.out_proj = nn.Linear(dim, out_dim)

    def forward(self, pair_tokens: Tensor, patch_tokens: list[Tensor], grid: tuple[int, int],
                index: PairIndex, union_boxes: Tensor | None = None) -> Tensor:
        """``pair_tokens``: the batch's pairs ``[P, token_dim]`` (where they sit: ``index``);
        ``patch_tokens``: per CLIP block ``[B, N, clip_width]`` with ``N = gh * gw``;
        ``union_boxes``: ``[P, 4]`` normalised xyxy (needed with ``union_mask``). Returns the
        pair features ``[P, out_dim]``, all images at once."""
        if not index.pair_counts or max(index.pair_counts) == 0:
            return pair_tokens.new_zeros(0, self.out_proj.out_features)
        if not self.layers:                                            # no HOI decoder
            return self.out_proj(self.norm(self.query_proj(pair_tokens)))
        batch, p_max = len(index.pair_counts), max(index.pair_counts)
        dim = self.query_proj.out_features
        where = (index.pair_image, index.pair_position)

        # Keys/values: [B, L*N, dim], one block of N patches per CLIP layer.
        levels = [self.memory_proj(self.memory_norm(t)) for t in patch_tokens]
        if self.level_embed is not None:
            levels = [m + e for m, e in zip(levels, self.level_embed, strict=True)]
        memory = torch.cat(levels, dim=1)
        pos = sine_embedding(patch_centres(grid, memory.device), dim).to(memory.dtype)
        memory_pos = pos.repeat(len(levels), 1)[None]                  # [1, L*N, dim]

        queries = self.query_proj(pair_tokens)
        x = queries.new_zeros(batch, p_max, dim).index_put(where, queries)
        padding = torch.ones(batch, p_max, dtype=torch.bool, device=memory.device).index_put(
            where, torch.zeros((), dtype=torch.bool, device=memory.device))
        padding[:, 0] = False  # an image without pairs must not attend to nothing (NaN)

        cross_mask = None
        if self.union_mask:
            if union_boxes is None:
                raise ValueError("union_mask needs the pairs' union boxes")
            cross_mask = torch.zeros(batch, p_max, memory.shape[1], dtype=torch.bool,
                                     device=memory.device).index_put(
                where, union_box_mask(union_boxes, grid).repeat(1, len(levels)))
            cross_mask = cross_mask.repeat_interleave(self.num_heads, dim=0)

        for layer in self.layers:
            x = layer(x, memory, memory_pos.expand(batch, -1, -1), padding, cross_mask)
        return self.out_proj(self.norm(x))[where]                      # [P, out]


def normalised_union_boxes(boxes_h: Tensor, boxes_o: Tensor,
                           image_size: tuple[int, int] | Tensor) -> Tensor:
    """Union boxes of pairs ``[P, 4]`` (fp32), xyxy normalised by ``image_size`` ``(h, w)``
    (or per pair ``(w, h, w, h)`` ``[P, 4]``)."""
    boxes_h, boxes_o = boxes_h.float(), boxes_o.float()
    union = torch.cat([torch.minimum(boxes_h[:, :2], boxes_o[:, :2]),
                       torch.maximum(boxes_h[:, 2:], boxes_o[:, 2:])], dim=1)
    if isinstance(image_size, Tensor):
        scale = image_size.float()
    else:
        height, width = image_size
        scale = union.new_tensor([width, height, width, height])
    return (union / scale).clamp(0, 1)


"""HO interactor: from DETR detections to one token per human–object pair.

1. *Proposals*: the detector's boxes are thresholded, de-duplicated by per-class NMS and
   cut to a bounded number of humans and objects (:func:`select_proposals`).
2. *Pairs*: every kept human with every other kept instance, humans included
   (:func:`enumerate_pairs`).
3. *Feature interaction*: a transformer encoder lets the image's instances (DETR decoder
   features plus a sine embedding of their boxes) exchange information.
4. *Spatial information injection*: 36 box-pair features (:func:`spatial_encodings`) are
   embedded by an MLP and fused with the human and object features into the pair token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_convert, nms

from clip4hoi.config import DetectorConfig
from clip4hoi.data.metadata import HUMAN_OBJECT_ID
from clip4hoi.models.precision import full_precision

NUM_SPATIAL_FEATURES = 36


def select_proposals(boxes: Tensor, scores: Tensor, labels: Tensor, cfg: DetectorConfig
                     ) -> Tensor:
    """Indices of the kept detections of one image, humans first, each group by score.

    ``boxes`` ``[Q, 4]`` xyxy, ``scores`` ``[Q]``, ``labels`` ``[Q]`` COCO-80 ids (``-1``
    for classes outside COCO-80, never kept). After per-class NMS, detections scoring at
    least ``score_threshold`` are kept, but never fewer than ``min_*`` (topped up with
    the best remaining) nor more than ``max_*``, separately for humans and objects.
    """
    valid = torch.nonzero(labels >= 0).squeeze(1)
    keep = valid[batched_nms(boxes[valid], scores[valid], labels[valid], cfg.nms_threshold)]
    is_human = labels[keep] == HUMAN_OBJECT_ID

    def bounded(candidates: Tensor, low: int, high: int) -> Tensor:
        # `candidates` are sorted by descending score (batched_nms output order).
        n_above = int((scores[candidates] >= cfg.score_threshold).sum())
        return candidates[: min(max(n_above, low), high)]

    humans = bounded(keep[is_human], cfg.min_humans, cfg.max_humans)
    objects = bounded(keep[~is_human], cfg.min_objects, cfg.max_objects)
    return torch.cat([humans, objects])


@dataclass
class Instances:
    """The kept detections of one image, humans first."""

    boxes: Tensor    # [n, 4] xyxy, pixels of the input image
    scores: Tensor   # [n]
    objects: Tensor  # [n] COCO-80 ids
    hidden: Tensor   # [n, D] DETR decoder features
    n_humans: int | None = None  # the number of humans (first rows), when known on the host


def image_proposals(logits: Tensor, boxes: Tensor, hidden: Tensor, label_to_object: Tensor,
                    image_size: tuple[int, int], cfg: DetectorConfig) -> Instances:
    """Proposals of one image from raw DETR outputs: ``logits`` ``[Q, C+1]``, ``boxes``
    ``[Q, 4]`` (cxcywh normalised by the image size), ``hidden`` ``[Q, D]``;
    ``label_to_object`` maps DETR classes to COCO-80 ids (``-1``: none). Scores and boxes
    are computed in fp32 whatever the autocast state."""
    height, width = image_size
    with full_precision(boxes.device):
        scores, labels = logits.float().softmax(-1)[:, :-1].max(-1)
        objects = label_to_object[labels]
        boxes = box_convert(boxes.float(), "cxcywh", "xyxy") * boxes.new_tensor(
            [width, height, width, height], dtype=torch.float32)
        keep = select_proposals(boxes, scores, objects, cfg)
    return Instances(boxes[keep], scores[keep], objects[keep], hidden[keep])


def batch_proposals(logits: Tensor, boxes: Tensor, hidden: Tensor, label_to_object: Tensor,
                    image_sizes: list[tuple[int, int]], cfg: DetectorConfig
                    ) -> list[Instances]:
    """:func:`image_proposals` of a batch (``[B, Q, ...]`` DETR outputs) at once, with two
    host syncs whatever the batch size (NMS, and reading how many humans and objects each
    image keeps) instead of about ten per image. Per image and group (humans, objects),
    the same selection as :func:`select_proposals`: per-class NMS, then the detections
    scoring at least ``score_threshold``, but at least ``min_*`` and at most ``max_*``,
    by descending score (ties in score may be ordered differently)."""
    batch, queries = logits.shape[:2]
    device = boxes.device
    with full_precision(device):
        scores, labels = logits.float().softmax(-1)[..., :-1].max(-1)       # [B, Q]
        objects = label_to_object[labels]                                   # [B, Q]
        sizes = torch.tensor([[w, h, w, h] for h, w in image_sizes], dtype=torch.float32)
        xyxy = box_convert(boxes.float(), "cxcywh", "xyxy") * sizes.to(device)[:, None]
        scores, objects, xyxy = scores.flatten(), objects.flatten(), xyxy.flatten(0, 1)
        image = torch.arange(batch, device=device).repeat_interleave(queries)   # [B*Q]
        valid = objects >= 0
        # Per-(image, class) NMS in one call: boxes of different groups made disjoint.
        group = image * (len(label_to_object) + 1) + objects + 1           # -1: own group
        offsets = group.float() * (xyxy.max() + 1)
        keep = nms(xyxy + offsets[:, None], scores, cfg.nms_threshold)     # sync 1
        kept = torch.zeros_like(valid).index_fill_(0, keep, True) & valid
        # Rank each kept detection within its (image, humans | objects) bucket by score.
        bucket = image * 2 + (objects != HUMAN_OBJECT_ID).long()           # [B*Q]
        by_score = torch.argsort(scores, descending=True, stable=True)
        order = by_score[torch.argsort(bucket[by_score], stable=True)]     # bucket, -score
        kept_sorted = kept[order].long()
        before = torch.cumsum(kept_sorted, 0) - kept_sorted                 # kept ahead
        first = torch.searchsorted(bucket[order], bucket[order])            # bucket start
        rank = before - before[first]                                       # [B*Q]
        above = torch.zeros(2 * batch, dtype=torch.long, device=device).index_add_(
            0, bucket[order], kept_sorted * (scores[order] >= cfg.score_threshold).long())
        is_object = torch.arange(2 * batch, device=device) % 2
        low = torch.where(is_object == 1, cfg.min_objects, cfg.min_humans)
        high = torch.where(is_object == 1, cfg.max_objects, cfg.max_humans)
        limit = torch.minimum(torch.maximum(above, low), high)
        chosen = kept_sorted.bool() & (rank < limit[bucket[order]])
        counts = torch.zeros(2 * batch, dtype=torch.long, device=device).index_add_(
            0, bucket[order], chosen.long()).tolist()                       # sync 2
        # The chosen ones in (image, humans first, score) order, without a nonzero.
        picked = order[torch.argsort((~chosen).long(), stable=True)[: sum(counts)]]
    sizes = [counts[2 * i] + counts[2 * i + 1] for i in range(batch)]
    parts = [t[picked].split(sizes) for t in (xyxy, scores, objects, hidden.flatten(0, 1))]
    return [Instances(*fields, n_humans=counts[2 * i])
            for i, fields in enumerate(zip(*parts, strict=True))]


@dataclass
class PairIndex:
    """Where the instances and pairs of a batch of images sit once concatenated (``N``
    instances, ``P`` pairs), so that the head runs on the whole batch at once. Built on
    the host from the per-image counts (:func:`pair_index`): no host sync."""

    counts: list[int]        # instances per image
    pair_counts: list[int]   # pairs per image
    image: Tensor            # [N] image of each instance
    position: Tensor         # [N] its row within its image
    pair_h: Tensor           # [P] the pair's human, an index into the N instances
    pair_o: Tensor           # [P] the pair's object (another instance of the same image)
    pair_image: Tensor       # [P] image of each pair
    pair_position: Tensor    # [P] its row among its image's pairs
    local_h: Tensor          # [P] the human's row within its image
    local_o: Tensor          # [P] the object's row within its image
    scale: Tensor            # [B, 4] (w, h, w, h) of each image, fp32


def pair_index(n_humans: list[int], counts: list[int], image_sizes: list[tuple[int, int]],
               device: torch.device) -> PairIndex:
    """The :class:`PairIndex` of images with ``counts[i]`` instances, the first
    ``n_humans[i]`` of them humans; every (human, other instance) pair, humans first, in
    the order of :func:`enumerate_pairs`. One copy to ``device``."""
    images, positions, pair_h, pair_o, pair_images, pair_positions, local_h, local_o = \
        ([] for _ in range(8))
    offset = 0
    pair_counts = []
    for i, (n_h, n) in enumerate(zip(n_humans, counts, strict=True)):
        h, o = enumerate_pairs(torch.empty(n), n_h)                 # on the host
        images.append(torch.full((n,), i))
        positions.append(torch.arange(n))
        local_h.append(h)
        local_o.append(o)
        pair_h.append(h + offset)
        pair_o.append(o + offset)
        pair_images.append(torch.full((len(h),), i))
        pair_positions.append(torch.arange(len(h)))
        pair_counts.append(len(h))
        offset += n
    fields = [torch.cat(t).long() for t in (images, positions, pair_h, pair_o, pair_images,
                                             pair_positions, local_h, local_o)]
    packed = torch.cat(fields).to(device, non_blocking=True).split([len(f) for f in fields])
    scale = torch.tensor([[w, h, w, h] for h, w in image_sizes], dtype=torch.float32)
    return PairIndex(list(counts), pair_counts, *packed, scale=scale.to(device))


def enumerate_pairs(labels: Tensor, n_humans: int | None = None) -> tuple[Tensor, Tensor]:
    """All (human, other instance) index pairs of one image's kept detections.

    ``labels`` ``[n]`` are the kept detections' object ids, humans first (``n_humans``
    of them: counted on the device, a host sync, when not given). Returns human and
    object indices ``[P]`` each, ``P = n_humans * (n - 1)``; a human can be the object
    of another human.
    """
    n = labels.numel()
    if n_humans is None:
        n_humans = int((labels == HUMAN_OBJECT_ID).sum())
    if n_humans == 0 or n < 2:
        none = torch.zeros(0, dtype=torch.long, device=labels.device)
        return none, none
    h = torch.arange(n_humans, device=labels.device).repeat_interleave(
        n - 1, output_size=n_humans * (n - 1))
    other = torch.arange(n - 1, device=labels.device).repeat(n_humans)
    return h, other + (other >= h).long()        # every index but h itself, in order


def spatial_encodings(boxes_h: Tensor, boxes_o: Tensor,
                      image_size: tuple[int, int] | Tensor, eps: float = 1e-6) -> Tensor:
    """Box-pair layout features ``[P, 36]``: 18 raw values and their logs.

    Raw values: both centres (x, y) and sizes (w, h) normalised by the image size, both
    areas and their ratio, both aspect ratios, the IoU, and the x and y distance between
    the centres normalised by the human box size, split by direction (4 values).
    ``image_size`` is ``(height, width)``, or per pair ``(w, h, w, h)`` ``[P, 4]``; boxes
    are xyxy ``[P, 4]``. Computed in fp32 whatever the autocast state.
    """
    with full_precision(boxes_h.device):
        if isinstance(image_size, Tensor):
            scale = image_size.float()
        else:
            height, width = image_size
            scale = boxes_h.new_tensor([width, height, width, height], dtype=torch.float32)
        return _spatial_encodings(boxes_h.float(), boxes_o.float(), scale, eps)


def _spatial_encodings(boxes_h: Tensor, boxes_o: Tensor, scale: Tensor, eps: float
                       ) -> Tensor:
    ch, co = (box_convert(b, "xyxy", "cxcywh") / scale for b in (boxes_h, boxes_o))
    (cx_h, cy_h, w_h, h_h), (cx_o, cy_o, w_o, h_o) = ch.unbind(1), co.unbind(1)
    area_h, area_o = w_h * h_h, w_o * h_o
    dx = (cx_o - cx_h).abs() / (w_h + eps)
    dy = (cy_o - cy_h).abs() / (h_h + eps)
    iou = paired_box_iou(boxes_h, boxes_o)
    raw = torch.stack([
        cx_h, cy_h, cx_o, cy_o, w_h, h_h, w_o, h_o,
        area_h, area_o, area_o / (area_h + eps), w_h / (h_h + eps), w_o / (h_o + eps), iou,
        (cx_o > cx_h) * dx, (cx_o < cx_h) * dx, (cy_o > cy_h) * dy, (cy_o < cy_h) * dy,
    ], dim=1)
    return torch.cat([raw, torch.log(raw + eps)], dim=1)


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU ``[P]`` of each box of ``boxes1`` ``[P, 4]`` with the same row of ``boxes2`` (xyxy):
    the diagonal of ``box_iou`` without its ``[P, P]`` matrix."""
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(1)
    return inter / (area1 + area2 - inter)


def sine_embedding(coords: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Sine/cosine embedding ``[..., dim]`` of coordinates ``[..., k]`` in ``[0, 1]``."""
    k = coords.shape[-1]
    if dim % (2 * k):
        raise ValueError(f"embedding size {dim} is not a multiple of {2 * k}")
    n_freq = dim // (2 * k)
    freqs = temperature ** (torch.arange(n_freq, device=coords.device) / n_freq)
    angles = coords[..., None] * (2 * math.pi) / freqs                 # [..., k, n_freq]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # [..., dim]


class HOInteractor(nn.Module):
    """Turns each image's proposals into pair tokens of width ``dim`` (the DETR width)."""

    def __init__(self, dim: int, num_layers: int = 2, num_heads: int = 8, ffn_dim: int = 1024,
                 spatial_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        layer = nn.TransformerEncoderLayer(dim, num_heads, ffn_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.spatial = nn.Sequential(
            nn.Linear(NUM_SPATIAL_FEATURES, spatial_dim), nn.ReLU(),
            nn.Linear(spatial_dim, spatial_dim), nn.ReLU(),
        )
        self.fuse = nn.Sequential(
            nn.Linear(2 * dim + spatial_dim, dim), nn.ReLU(), nn.Linear(dim, dim),
            nn.LayerNorm(dim),
        )

    def forward(self, features: Tensor, boxes: Tensor, index: PairIndex) -> Tensor:
        """The batch's instances concatenated: features ``[N, dim]``, boxes ``[N, 4]`` (xyxy
        pixels of their images), and where they and their pairs sit (``index``). Returns
        the pair tokens ``[P, dim]``, all images at once."""
        if not index.counts or max(index.counts) == 0:
            return features.new_zeros(0, self.dim)
        batch, n_max = len(index.counts), max(index.counts)
        scale = index.scale[index.image]                                   # [N, 4]
        with full_precision(boxes.device):
            embedding = sine_embedding(box_convert(boxes.float(), "xyxy", "cxcywh") / scale,
                                       self.dim)
        # Pad the images' instances into one batch [B, n_max, dim] with a padding mask.
        tokens = features.new_zeros(batch, n_max, self.dim)
        tokens = tokens.index_put((index.image, index.position),
                                  (features + embedding).to(tokens.dtype))
        padding = torch.ones(batch, n_max, dtype=torch.bool, device=tokens.device)
        padding = padding.index_put((index.image, index.position),
                                    torch.zeros((), dtype=torch.bool, device=tokens.device))
        padding[:, 0] = False  # an image without instances must not attend to nothing (NaN)
        x = self.encoder(tokens, src_key_padding_mask=padding)[index.image, index.position]
        h, o = index.pair_h, index.pair_o
        spatial = self.spatial(spatial_encodings(boxes[h], boxes[o],
                                                 index.scale[index.pair_image]))  # [P, s]
        return self.fuse(torch.cat([x[h], x[o], spatial.to(x.dtype)], dim=1))

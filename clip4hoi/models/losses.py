"""Training targets and losses of CLIP4HOI.

* A proposal pair takes the class labels of every ground-truth pair it overlaps with
  ``min(IoU_h, IoU_o) >= match_iou`` (multi-label).
* Pair loss: binary focal loss on the *fused* pair scores
  ``S_pair^(1-α) · S_glob^α · (s_h·s_o)^λ`` over the classes valid for the detected object,
  normalised by the number of positive labels.
* Global loss: binary focal loss on ``S_glob`` against the image's multi-hot class labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou


def pair_labels(boxes_h: Tensor, boxes_o: Tensor, targets: list[dict[str, Tensor]],
                pair_image: Tensor, num_classes: int, match_iou: float) -> Tensor:
    """Multi-hot labels ``[P, K]`` (float32) of a batch's proposal pairs (xyxy ``[P, 4]``
    each, pair ``p`` in image ``pair_image[p]``) from the images' targets (``boxes_h``,
    ``boxes_o`` ``[N_i, 4]``, ``hoi`` ``[N_i]``). Dense, all images at once: no host sync."""
    device = boxes_h.device
    counts = [len(t["hoi"]) for t in targets]
    if len(boxes_h) == 0 or sum(counts) == 0:
        return torch.zeros(len(boxes_h), num_classes, device=device)
    gt_h = torch.cat([t["boxes_h"] for t in targets]).float()                  # [G, 4]
    gt_o = torch.cat([t["boxes_o"] for t in targets]).float()
    hoi = torch.cat([t["hoi"] for t in targets])                               # [G]
    gt_image = torch.repeat_interleave(torch.arange(len(targets)), torch.tensor(counts),
                                       output_size=sum(counts)).to(device)
    overlap = torch.minimum(box_iou(boxes_h.float(), gt_h), box_iou(boxes_o.float(), gt_o))
    matched = ((overlap >= match_iou) & (pair_image[:, None] == gt_image[None])).float()
    classes = torch.zeros(len(hoi), num_classes, device=device).scatter_(
        1, hoi[:, None], 1.0)                                                   # [G, K]
    return (matched @ classes).clamp(max=1).float()


def image_labels(targets: list[dict[str, Tensor]], num_classes: int, device: torch.device
                 ) -> Tensor:
    """Multi-hot labels ``[B, K]``: the classes annotated anywhere in each image."""
    counts = [len(t["hoi"]) for t in targets]
    labels = torch.zeros(len(targets), num_classes, device=device)
    if sum(counts) == 0:
        return labels
    image = torch.repeat_interleave(torch.arange(len(targets)), torch.tensor(counts),
                                    output_size=sum(counts)).to(device)
    hoi = torch.cat([t["hoi"] for t in targets]).to(device)
    return labels.index_put((image, hoi), torch.ones((), device=device))


def logit_from_log_prob(log_p: Tensor) -> Tensor:
    """``log(p / (1 - p))`` from ``log p`` (stable for p near 0 and 1)."""
    log_p = log_p.clamp(max=-1e-7)
    return log_p - torch.log(-torch.expm1(log_p))


def binary_focal_loss_with_logits(logits: Tensor, labels: Tensor, alpha: float, gamma: float,
                                  mask: Tensor | None = None) -> Tensor:
    """Summed binary focal loss ``-α_t (1 - p_t)^γ log p_t`` of ``sigmoid(logits)``.

    Same value as ``torchvision.ops.sigmoid_focal_loss``, but ``(1 - p_t)^γ`` is computed as
    ``exp(γ · logsigmoid(±logits))``: torchvision's ``(1 - p_t) ** γ`` has an infinite
    derivative once ``p_t`` rounds to 1, which turns gradients into NaN for ``γ < 1``
    (UPT's γ = 0.2) as soon as a logit exceeds about ±17.
    """
    ce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    modulator = torch.exp(gamma * F.logsigmoid((1 - 2 * labels) * logits))  # (1 - p_t)^γ
    weight = alpha * labels + (1 - alpha) * (1 - labels)
    if mask is not None:       # entries outside ``mask`` do not count
        weight = weight * mask
    return (weight * modulator * ce).sum()


def focal_loss_from_log_prob(log_p: Tensor, labels: Tensor, alpha: float, gamma: float,
                             mask: Tensor | None = None) -> Tensor:
    """Summed binary focal loss of probabilities given as logs (over ``mask`` if given)."""
    return binary_focal_loss_with_logits(logit_from_log_prob(log_p), labels, alpha, gamma,
                                         mask)


def fused_log_scores(pair_logits: Tensor, global_logits: Tensor, prior: Tensor, alpha: float,
                     lam: float) -> Tensor:
    """``log(S_pair^(1-α) · S_glob^α · prior^λ)`` ``[P, K]`` from pair logits ``[P, K]``,
    the global logits of each pair's image ``[P, K]`` and ``prior = s_h·s_o`` ``[P]``; in
    fp32 whatever the logits' type."""
    return ((1 - alpha) * F.logsigmoid(pair_logits.float())
            + alpha * F.logsigmoid(global_logits.float())
            + lam * torch.log(prior.float().clamp(min=1e-12))[:, None])

"""The assembled CLIP4HOI model, its factory and its checkpoints.

    images ─┬─ DETR ─ proposals ─ HO interactor ─ pair tokens ─┐  (or Grounding DINO)
            │                                              HOI decoder ─ pair features ─┐
            └─ CLIP image encoder ─┬─ patch tokens ────────┘                            │
                                   └─ global feature ─────────────── HOI classifier ────┴─ scores
                CLIP text encoder + learnable prompts ─ class embeddings ─┘

``forward(images, targets=None)`` returns a dict of losses in training mode and a list of
per-image detections otherwise (formats in ``docs/conventions.md``).

The frozen detector is DETR (COCO's 80 objects) or, with ``detector.type: grounding_dino``,
Grounding DINO prompted with the object names of the class set (any object); both hand the
head the same :class:`FrozenFeatures`, whose labels are object ids of the class set's
vocabulary (COCO-80 ids for COCO objects).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou

from clip4hoi.config import (
    CLIPConfig,
    DetectorConfig,
    ModelConfig,
    apply_overrides,
    stored_model_config,
    to_dict,
)
from clip4hoi.data.metadata import (
    COCO_CATEGORY_IDS,
    HUMAN_OBJECT_ID,
    HOIClassSet,
    load_classes,
)
from clip4hoi.errors import InputError
from clip4hoi.fileio import write_atomic
from clip4hoi.models.classifier import HOIClassifier
from clip4hoi.models.clip import CLIPEncoder, build_clip
from clip4hoi.models.decoder import HOIDecoder, normalised_union_boxes
from clip4hoi.models.detr import DETR, normalize
from clip4hoi.models.grounding_dino import GroundingDINO, build_grounding_dino
from clip4hoi.models.interactor import (
    HOInteractor,
    Instances,
    PairIndex,
    batch_proposals,
    pair_index,
)
from clip4hoi.models.losses import (
    binary_focal_loss_with_logits,
    focal_loss_from_log_prob,
    fused_log_scores,
    image_labels,
    pair_labels,
)
from clip4hoi.weights import (
    DEFAULT_OPEN_VOCAB,
    DETR_WEIGHTS,
    WeightsUnavailableError,
    resolve_clip,
    resolve_detr,
    resolve_open_vocab,
)

HEAD_FORMAT = "clip4hoi-head/1"
FROZEN_PREFIXES = ("detector.", "clip.")
DETECTOR_TYPES = ("detr", "grounding_dino")
FrozenDetector = DETR | GroundingDINO


@dataclass
class FrozenFeatures:
    """Outputs of the frozen DETR and CLIP for a batch: all the head needs from the image
    (and what the feature cache stores)."""

    logits: Tensor              # [B, Q, C+1] detector class logits (last = no object)
    boxes: Tensor               # [B, Q, 4] detector boxes, cxcywh normalised by the image size
    hidden: Tensor              # [B, Q, D] last decoder layer (after its final norm)
    clip_global: Tensor         # [B, E] CLIP global image embedding
    clip_patches: list[Tensor]  # L × [B, N, W] CLIP patch tokens of the chosen blocks
    grid: tuple[int, int]       # (gh, gw) with N = gh * gw

    def tensors(self) -> dict[str, Tensor]:
        """Flat name → tensor view (for safetensors); :meth:`from_tensors` inverts it."""
        out = {"logits": self.logits, "boxes": self.boxes, "hidden": self.hidden,
               "clip_global": self.clip_global,
               "grid": torch.tensor(self.grid)}
        out.update({f"clip_patches.{i}": p for i, p in enumerate(self.clip_patches)})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> FrozenFeatures:
        """Inverse of :meth:`tensors`."""
        n_levels = sum(1 for k in tensors if k.startswith("clip_patches."))
        return cls(tensors["logits"], tensors["boxes"], tensors["hidden"],
                   tensors["clip_global"],
                   [tensors[f"clip_patches.{i}"] for i in range(n_levels)],
                   tuple(int(v) for v in tensors["grid"]))

    @staticmethod
    def cat(items: list[FrozenFeatures]) -> FrozenFeatures:
        """Concatenate along the batch (all items must share the CLIP grid)."""
        if len({f.grid for f in items}) != 1:
            raise ValueError("cannot batch CLIP features of different grid sizes")
        return FrozenFeatures(
            torch.cat([f.logits for f in items]), torch.cat([f.boxes for f in items]),
            torch.cat([f.hidden for f in items]), torch.cat([f.clip_global for f in items]),
            [torch.cat(level) for level in zip(*(f.clip_patches for f in items), strict=True)],
            items[0].grid)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None,
           non_blocking: bool = False) -> FrozenFeatures:
        """Move to ``device`` (floating tensors cast to ``dtype`` when given)."""
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype or t.dtype, non_blocking=non_blocking)
        return self._map(move)

    def pin_memory(self) -> FrozenFeatures:
        """Page-locked copies (called by ``DataLoader(pin_memory=True)``)."""
        return self._map(Tensor.pin_memory)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> FrozenFeatures:
        return FrozenFeatures(fn(self.logits), fn(self.boxes), fn(self.hidden),
                              fn(self.clip_global), [fn(p) for p in self.clip_patches],
                              self.grid)


@dataclass
class Proposals:
    """A batch's proposals and pairs (the frozen part of the head, :meth:`CLIP4HOI.proposals`).
    ``P`` pairs over the batch, ``K`` classes."""

    instances: list[Instances]             # per image, humans first
    pairs: list[tuple[Tensor, Tensor]]     # per image: human and object indices [P_i]
    counts: list[int]                      # P_i (on the host)
    image_sizes: list[tuple[int, int]]     # (h, w) per image
    image_of_pair: Tensor                  # [P] image index of each pair
    prior: Tensor                          # [P] s_h * s_o (fp32)
    valid: Tensor                          # [P, K] bool: class object == detected object
    labels: Tensor | None = None           # [P, K] pair labels (training), 0 where not valid
    image_labels: Tensor | None = None     # [B, K] image labels (training)
    index: PairIndex | None = None         # where the instances and pairs sit, batched
    boxes: Tensor | None = None            # [N, 4] all images' instances, concatenated
    hidden: Tensor | None = None           # [N, D]


def detector_label_map(num_classes: int) -> Tensor:
    """COCO-80 id of each DETR class index (``-1`` where there is none): 80 classes are
    COCO-80 (HICO-DET fine-tuned DETRs), 91 are COCO category ids (original DETR)."""
    if num_classes == 80:
        return torch.arange(80)
    if num_classes == 91:
        table = torch.full((91,), -1, dtype=torch.long)
        table[torch.tensor(COCO_CATEGORY_IDS)] = torch.arange(80)
        return table
    raise ValueError(f"DETR with {num_classes} classes: expected 80 (COCO-80 order) or 91 "
                     f"(COCO category ids)")


def run_detector(detector: FrozenDetector, images: list[Tensor], classes: HOIClassSet
                 ) -> dict[str, Tensor]:
    """Raw outputs of the frozen detector on float ``[3, H, W]`` images in ``[0, 1]``:
    DETR's, or Grounding DINO's prompted with the names of the objects of ``classes``."""
    if isinstance(detector, GroundingDINO):
        return detector(normalize(images), classes.object_vocabulary, classes.used_objects)
    return detector(normalize(images))


def label_map(detector: FrozenDetector) -> Tensor:
    """Object id of each DETR class (:func:`detector_label_map`); empty for Grounding DINO,
    whose labels are object ids already (see :func:`object_ids`)."""
    if isinstance(detector, GroundingDINO):
        return torch.zeros(0, dtype=torch.long)
    return detector_label_map(detector.config["num_classes"])


def object_ids(label_to_object: Tensor, logits: Tensor) -> Tensor:
    """The label → object id table for detector ``logits [..., C+1]``: ``label_to_object``
    (:func:`label_map`), or the identity when that is empty (Grounding DINO)."""
    if len(label_to_object):
        return label_to_object
    return torch.arange(logits.shape[-1] - 1, device=logits.device)


class CLIP4HOI(nn.Module):
    """Frozen DETR + frozen CLIP + trainable HO interactor, HOI decoder, HOI classifier."""

    def __init__(self, config: ModelConfig, detector: FrozenDetector, clip: CLIPEncoder,
                 classes: HOIClassSet) -> None:
        super().__init__()
        self.config = config
        self.classes = classes
        self.detector = detector
        self.clip = clip
        head = config.head
        detr_dim = detector.config["hidden_dim"]
        self.interactor = HOInteractor(detr_dim, head.interactor_layers, head.interactor_heads,
                                       head.interactor_ffn, head.spatial_dim, head.dropout)
        self.decoder = HOIDecoder(detr_dim, clip.width, clip.embed_dim, len(config.clip.layers),
                                  head.decoder_dim, head.decoder_layers, head.decoder_heads,
                                  head.decoder_ffn, head.dropout, head.union_mask)
        self.classifier = HOIClassifier(clip, head)
        self.open_vocabulary = isinstance(detector, GroundingDINO)
        self.register_buffer("label_to_object", label_map(detector), persistent=False)

    # ---------------------------------------------------------------- frozen feature side

    @torch.no_grad()
    def extract_features(self, images: list[Tensor], classes: HOIClassSet | None = None
                         ) -> FrozenFeatures:
        """Run the detector and CLIP on float ``[3, H, W]`` images in ``[0, 1]`` (or
        ``uint8``; Grounding DINO is prompted with the objects of ``classes``, default the
        model's)."""
        images = [image if image.is_floating_point() else image.float() / 255
                  for image in images]
        detections = run_detector(self.detector, images, classes or self.classes)
        clip_out = self.clip.encode_image(self.clip.preprocess(images),
                                          layers=tuple(self.config.clip.layers))
        return FrozenFeatures(detections["pred_logits"], detections["pred_boxes"],
                              detections["hidden_states"], clip_out.global_embedding,
                              clip_out.patch_tokens, clip_out.grid)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None,
                classes: HOIClassSet | None = None) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """``images``: float ``[3, H, W]`` tensors in ``[0, 1]``. In training mode returns
        ``{"loss_pair", "loss_global"}``; otherwise one detection dict per image with boxes
        in the pixel frame of that image."""
        sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        return self.forward_features(self.extract_features(images, classes), sizes, targets,
                                     classes)

    # ---------------------------------------------------------------------- trainable head

    def forward_features(self, features: FrozenFeatures, image_sizes: list[tuple[int, int]],
                         targets: list[dict] | None = None, classes: HOIClassSet | None = None,
                         text: Tensor | None = None, normalizer: Tensor | None = None
                         ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """The head on precomputed :class:`FrozenFeatures`; ``image_sizes`` are ``(h, w)``.

        ``text``: the class embeddings ``[K, E]`` when the caller computed them (the trainer
        encodes the prompts once per optimiser step); ``normalizer``: the divisors
        ``[2]`` of the summed pair and global losses (default: this batch's positive
        labels), see :meth:`_losses`."""
        classes = classes or self.classes
        proposals = self.proposals(features, image_sizes, targets, classes)
        if text is None:
            text = self.classifier.text_embeddings(self.clip, classes)        # [K, E]
        log_scores, global_logits = self.score(features, proposals, text)
        if self.training:
            return self._losses(proposals, log_scores, global_logits, normalizer)
        return self._detections(proposals, log_scores, classes)

    @torch.no_grad()
    def proposals(self, features: FrozenFeatures, image_sizes: list[tuple[int, int]],
                  targets: list[dict] | None, classes: HOIClassSet) -> Proposals:
        """The frozen part of the head: proposals, pairs, their priors and object masks and,
        in training, their labels. Nothing here depends on a trainable weight, so the
        trainer computes it for every micro-batch first, to count the positives of the
        whole optimiser step before any loss."""
        if targets is None and (self.training or self.config.detector.use_gt_boxes):
            raise ValueError("CLIP4HOI needs targets in training mode (call .eval() to "
                             "detect) and with detector.use_gt_boxes")
        instances = self._instances(features, image_sizes, targets)
        device = features.boxes.device
        n_humans = [inst.n_humans if inst.n_humans is not None else
                    int((inst.objects == HUMAN_OBJECT_ID).sum()) for inst in instances]
        index = pair_index(n_humans, [len(inst.objects) for inst in instances], image_sizes,
                           device)
        boxes = torch.cat([inst.boxes for inst in instances])                # [N, 4]
        scores = torch.cat([inst.scores for inst in instances])              # [N]
        objects = torch.cat([inst.objects for inst in instances])            # [N]
        hidden = torch.cat([inst.hidden for inst in instances])              # [N, D]
        h, o = index.pair_h, index.pair_o
        prior = scores[h] * scores[o]                                        # [P]
        class_objects = torch.tensor(classes.objects, device=device)
        valid = objects[o][:, None] == class_objects[None, :]                # [P, K]
        labels = image = None
        if targets is not None and self.training:
            labels = pair_labels(boxes[h], boxes[o], targets, index.pair_image, len(classes),
                                 self.config.loss.match_iou) * valid
            image = image_labels(targets, len(classes), device)
        pairs = list(zip(index.local_h.split(index.pair_counts),
                         index.local_o.split(index.pair_counts), strict=True))
        return Proposals(instances, pairs, index.pair_counts, image_sizes, index.pair_image,
                         prior, valid, labels, image, index, boxes, hidden)

    def score(self, features: FrozenFeatures, proposals: Proposals, text: Tensor
              ) -> tuple[Tensor, Tensor]:
        """The trainable part: fused log scores ``[P, K]`` (fp32) of the pairs and global
        logits ``[B, K]`` from the frozen features, the proposals and class embeddings,
        all images at once."""
        head = self.config.head
        index, boxes = proposals.index, proposals.boxes
        tokens = self.interactor(proposals.hidden, boxes, index)             # [P, D]
        union_boxes = None
        if head.union_mask:
            union_boxes = normalised_union_boxes(boxes[index.pair_h], boxes[index.pair_o],
                                                 index.scale[index.pair_image])
        pair_features = self.decoder(tokens, features.clip_patches, features.grid, index,
                                     union_boxes)                            # [P, E]
        pair_logits, global_logits = self.classifier(
            pair_features, features.clip_global, text)                      # [P, K], [B, K]
        lam = head.lambda_train if self.training else head.lambda_test
        log_scores = fused_log_scores(pair_logits, global_logits[proposals.image_of_pair],
                                      proposals.prior, head.alpha, lam)       # [P, K]
        return log_scores, global_logits

    def _instances(self, features: FrozenFeatures, image_sizes: list[tuple[int, int]],
                   targets: list[dict] | None) -> list[Instances]:
        """Proposals of every image: the detector's, the annotated boxes instead
        (``detector.use_gt_boxes``), or both (``loss.add_gt_boxes``, in training)."""
        if self.config.detector.use_gt_boxes:
            instances = []
            for i, size in enumerate(image_sizes):
                boxes, hidden = features.boxes[i], features.hidden[i]
                none = torch.zeros(0, dtype=torch.long, device=boxes.device)
                inst = Instances(boxes[none].float(), features.logits[i][none, 0].float(),
                                 none, hidden[none])
                instances.append(self._add_ground_truth(inst, targets[i], boxes, size, hidden))
            return instances
        instances = batch_proposals(features.logits, features.boxes, features.hidden,
                                    object_ids(self.label_to_object, features.logits),
                                    image_sizes, self.config.detector)
        if self.training and self.config.loss.add_gt_boxes:
            instances = [self._add_ground_truth(inst, targets[i], features.boxes[i], size,
                                                features.hidden[i])
                         for i, (inst, size) in enumerate(zip(instances, image_sizes,
                                                              strict=True))]
        return instances

    @staticmethod
    def _add_ground_truth(inst: Instances, target: dict, detr_boxes: Tensor,
                          size: tuple[int, int], hidden: Tensor) -> Instances:
        """Append the unique ground-truth boxes (score 1; features of the DETR query that
        overlaps each most) and re-sort humans first."""
        height, width = size
        detr_boxes = detr_boxes.float()
        all_boxes = box_convert(detr_boxes, "cxcywh", "xyxy") * detr_boxes.new_tensor(
            [width, height, width, height])
        gt_boxes = torch.cat([target["boxes_h"], target["boxes_o"]]).float()
        gt_objects = torch.cat([torch.full_like(target["object"], HUMAN_OBJECT_ID),
                                target["object"]])
        if len(gt_boxes) == 0:
            return inst
        rows = torch.unique(torch.cat([gt_boxes, gt_objects[:, None].to(gt_boxes)], 1), dim=0)
        gt_boxes, gt_objects = rows[:, :4], rows[:, 4].long()
        nearest = box_iou(gt_boxes, all_boxes).argmax(1)
        boxes = torch.cat([inst.boxes, gt_boxes])
        objects = torch.cat([inst.objects, gt_objects])
        order = torch.argsort((objects != HUMAN_OBJECT_ID).int(), stable=True)
        return Instances(boxes[order],
                         torch.cat([inst.scores, torch.ones_like(gt_boxes[:, 0])])[order],
                         objects[order], torch.cat([inst.hidden, hidden[nearest]])[order])

    def _losses(self, proposals: Proposals, log_scores: Tensor, global_logits: Tensor,
                normalizer: Tensor | None = None) -> dict[str, Tensor]:
        """Summed focal losses divided by ``normalizer`` ``[2]`` (pair, global); by default
        this batch's positive pair labels and image labels (at least 1). The trainer passes
        the positives of the whole optimiser step (all ranks and micro-batches, divided by
        the world size, as DDP averages), so that the gradients do not depend on how the
        step's images are split."""
        cfg = self.config.loss
        labels, labels_global = proposals.labels, proposals.image_labels
        if normalizer is None:
            normalizer = torch.stack([labels.sum(), labels_global.sum()]).clamp(min=1)
        # Classes of another object than the pair's are masked out of the sum.
        loss_pair = focal_loss_from_log_prob(log_scores, labels, cfg.focal_alpha,
                                             cfg.focal_gamma, mask=proposals.valid)
        loss_pair = loss_pair / normalizer[0]
        if not proposals.counts or sum(proposals.counts) == 0:
            # No pair to score in this batch: keep every trainable parameter in the graph
            # (with zero gradient), as DDP expects gradients for all of them on every rank.
            loss_pair = loss_pair + sum(p.sum() for p in self.parameters() if p.requires_grad
                                        ) * 0.0
        loss_global = binary_focal_loss_with_logits(global_logits.float(), labels_global,
                                                    cfg.focal_alpha, cfg.focal_gamma)
        loss_global = cfg.global_weight * loss_global / normalizer[1]
        return {"loss_pair": loss_pair, "loss_global": loss_global}

    @staticmethod
    def _detections(proposals: Proposals, log_scores: Tensor, classes: HOIClassSet
                    ) -> list[dict[str, Tensor]]:
        verb_ids = torch.tensor(classes.verb_ids, device=log_scores.device)
        results = []
        for inst, (h, o), scores, mask in zip(proposals.instances, proposals.pairs,
                                              log_scores.split(proposals.counts),
                                              proposals.valid.split(proposals.counts),
                                              strict=True):
            p, k = torch.nonzero(mask).unbind(1)
            results.append({
                "human_boxes": inst.boxes[h[p]], "object_boxes": inst.boxes[o[p]],
                "objects": inst.objects[o[p]], "hoi": k, "verbs": verb_ids[k],
                "scores": scores[p, k].exp(),
            })
        return results


# -------------------------------------------------------------------------- factories


def build_detector(cfg: DetectorConfig, download: bool = True) -> FrozenDetector:
    """The frozen detector of ``cfg``: registered weights, a checkpoint file (a model folder
    for Grounding DINO), or ``random``."""
    if cfg.type not in DETECTOR_TYPES:
        raise ValueError(f"detector.type {cfg.type!r}: choose from {', '.join(DETECTOR_TYPES)}")
    if cfg.type == "grounding_dino":
        if cfg.weights == "random":
            tokenizer = cfg.tokenizer or resolve_open_vocab(DEFAULT_OPEN_VOCAB, download)
            return build_grounding_dino(None, cfg.architecture, tokenizer)
        weights = DEFAULT_OPEN_VOCAB if cfg.weights in DETR_WEIGHTS else cfg.weights
        return build_grounding_dino(resolve_open_vocab(weights, download),
                                    tokenizer=cfg.tokenizer)
    if cfg.weights == "random":
        return DETR(**(cfg.architecture or {"num_classes": 91}))
    dilation = cfg.dilation or (cfg.weights in DETR_WEIGHTS and DETR_WEIGHTS[cfg.weights].dilation)
    return DETR.from_checkpoint(resolve_detr(cfg.weights, download), num_heads=cfg.num_heads,
                                dilation=dilation)


def build_frozen(detector: DetectorConfig, clip: CLIPConfig, download: bool = True
                 ) -> tuple[DETR, CLIPEncoder]:
    """The frozen DETR and CLIP, fetching missing weights unless ``download`` is False.
    All unavailable weights are reported together, in one error."""
    errors: list[str] = []
    detr = encoder = None
    try:
        with torch.random.fork_rng(devices=[]):  # random weights: reproducible, RNG untouched
            torch.manual_seed(detector.random_seed)
            detr = build_detector(detector, download)
    except WeightsUnavailableError as error:
        errors.append(str(error))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(clip.random_seed)
            weights = resolve_clip(clip.name, clip.pretrained) if clip.pretrained else None
            encoder = build_clip(clip.name, weights, clip.image_size, model_cfg=clip.model_cfg)
    except WeightsUnavailableError as error:
        errors.append(str(error))
    if errors:
        raise WeightsUnavailableError("\n\n".join(errors))
    return detr, encoder


def build_model(config: ModelConfig, download: bool = True) -> CLIP4HOI:
    """Build CLIP4HOI from its config (see :func:`build_frozen` for the frozen parts)."""
    detector, clip = build_frozen(config.detector, config.clip, download)
    return CLIP4HOI(config, detector, clip, load_classes(
        config.classes, open_vocabulary=config.detector.type == "grounding_dino"))


# ------------------------------------------------------------------------- checkpoints


def head_state_dict(model: CLIP4HOI) -> dict[str, Tensor]:
    """The trainable head's weights (the frozen DETR and CLIP are referenced by config)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(FROZEN_PREFIXES)}


def save_checkpoint(model: CLIP4HOI, path: str | Path, extra: dict[str, str] | None = None
                    ) -> None:
    """Write the head's weights and the model config (JSON, in the safetensors metadata)
    atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": HEAD_FORMAT, "config": json.dumps(to_dict(model.config)),
                **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in head_state_dict(model).items()}
    write_atomic(path, save_safetensors(tensors, metadata=metadata))


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, Tensor], dict[str, str]]:
    """Config, head weights and metadata of a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types
        raise InputError(f"checkpoint {path} is not a safetensors file ({error}); CLIP4HOI "
                         f"checkpoints are written by clip4hoi train") from error
    if metadata.get("format") != HEAD_FORMAT:
        raise InputError(f"checkpoint {path} is not a CLIP4HOI head checkpoint (format "
                         f"{metadata.get('format')!r}, expected {HEAD_FORMAT!r})")
    try:
        stored = json.loads(metadata["config"])
    except KeyError:
        raise InputError(f"checkpoint {path}: its metadata has no model 'config'; it was not "
                         f"written by clip4hoi train") from None
    except (TypeError, ValueError) as error:
        raise InputError(f"checkpoint {path}: its model 'config' metadata is not valid JSON "
                         f"({error})") from None
    if not isinstance(stored, dict):
        raise InputError(f"checkpoint {path}: its model 'config' metadata is "
                         f"{type(stored).__name__}, expected a mapping")
    config = stored_model_config(stored, where=f"{path} config")
    check_finite(tensors, f"checkpoint {path}")   # before minutes of building the model
    return config, tensors, metadata


def load_checkpoint(path: str | Path, overrides: list[str] | None = None,
                    download: bool = True) -> CLIP4HOI:
    """Rebuild a model from a checkpoint (``overrides`` like ``detector.weights=FILE``)."""
    config, tensors, _ = read_checkpoint(path)
    model = build_model(apply_overrides(config, overrides or []), download)
    load_head(model, tensors, source=str(path))
    return model


def load_head(model: CLIP4HOI, tensors: dict[str, Tensor], source: str) -> None:
    """Load head weights strictly (the frozen parts are not in ``tensors``); weights that
    are not finite are refused (:class:`~clip4hoi.errors.InputError`)."""
    expected = head_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(tensors)
                        if expected[k].shape != tensors[k].shape)
    if missing or unexpected or mismatched:
        raise InputError(f"{source} does not fit this model: missing {missing}, unexpected "
                         f"{unexpected}, shape mismatch {mismatched}")
    check_finite(tensors, source)
    model.load_state_dict(tensors, strict=False)


def check_finite(tensors: dict[str, Tensor], source: str) -> None:
    """Refuse weights that are NaN or infinite (a diverged run) with an
    :class:`~clip4hoi.errors.InputError` naming ``source``."""
    broken = sorted(k for k, v in tensors.items()
                    if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if broken:
        raise InputError(f"{source} has non-finite weights (NaN or inf) in {broken[:3]}"
                         f"{' ...' if len(broken) > 3 else ''}: the run that wrote it "
                         f"diverged; use an earlier checkpoint")

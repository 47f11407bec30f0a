"""Training-free HOI detection: the frozen DETR and CLIP of CLIP4HOI, without a trained head.

    image ─ DETR (or Grounding DINO) ─ proposals ─ human–object pairs ─ union boxes ─┐
      └──────────── CLIP image encoder (crops, or one dense pass) ┴─ pair features ─┐
                    CLIP text encoder ─ class prompts (template ensemble) ─ text ───┴─ scores

The proposals and pairs are those of the trained model (:func:`image_proposals`,
:func:`enumerate_pairs`); only pairs whose detected object has a class in the class set are
scored. With Grounding DINO (``detector.type: grounding_dino``) the detector is prompted
with the class set's object names, so any noun can be the object.

Each pair's *union box* is grown by ``margin`` × its width and height on each side.
Its feature in CLIP's joint space comes from one of two modes:

* ``crop``: the union box, grown further to a square around its centre (CLIP was trained on
  undistorted images), is cut from the CLIP-normalised input image and resized to the CLIP
  resolution by ``torchvision.ops.roi_align`` — one call per batch of ``crop_batch_size``
  boxes; its adaptive sampling averages all pixels of a shrunk crop (antialiasing), and what
  lies outside the image reads as 0, i.e. CLIP's mean colour. The feature is CLIP's global
  image embedding of the crop. Pairs with the same union box — (h1, h2) and (h2, h1) — are
  encoded once.
* ``dense``: one pass of CLIP over the whole image (resized to the CLIP resolution, as the
  trained model sees it) yields MaskCLIP dense embeddings ``[gh * gw, E]`` from the **last**
  ViT block's value path, ``ln_post`` and ``proj`` (:meth:`CLIPEncoder.encode_image` with
  ``dense=True``). The pair feature pools the patches of the union box: ``mean`` (default)
  averages the patches whose centres lie in the box, at least the one holding the box centre
  (the HOI decoder's union mask); ``roi_align`` averages bilinear samples of the patch grid
  taken about one per patch length over the box, so partly covered patches count partly.

Class embeddings: each class's prompt under every template (``{sentence}``, ``{action}``,
``{verb}``, ``{object}``; see :class:`TrainingFreeConfig`) is encoded, normalised, averaged
over the templates and renormalised; cached per class set in memory, and on disk by
:mod:`clip4hoi.engine.text_cache` (``clip4hoi detect`` and the API).

Scores: the cosine similarities of a pair with the classes whose object is its detected
object, divided by ``temperature``, go through a softmax over those classes only — a
calibrated distribution over the interactions possible with that object — and are multiplied
by the detector prior ``(s_h · s_o)^λ``: a pair's scores sum to its prior.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, roi_align
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from clip4hoi.config import TrainingFreeConfig, check_training_free_config
from clip4hoi.data.metadata import HOIClassSet, describe, load_classes, words
from clip4hoi.models.clip import CLIPEncoder
from clip4hoi.models.decoder import normalised_union_boxes, union_box_mask
from clip4hoi.models.interactor import enumerate_pairs, image_proposals
from clip4hoi.models.model import (
    FrozenDetector,
    build_frozen,
    label_map,
    object_ids,
    run_detector,
)
from clip4hoi.models.precision import full_precision

_SENTENCE_START = "a photo of a person "  # how metadata.describe starts every sentence
_CACHE_SIZE = 4


def class_prompts(classes: HOIClassSet, templates: Sequence[str]) -> list[str]:
    """The ``K * T`` prompts of a class set, class-major (template ``t`` of class ``k`` at
    ``k * T + t``): ``"a person {action}."`` -> ``"a person riding a bicycle."``."""
    prompts = []
    for verb, obj, sentence in zip(classes.verbs, classes.object_names, classes.sentences,
                                   strict=True):
        sentence = sentence.rstrip(".")
        # The action of the class set's sentence (hand-written for HICO-DET and V-COCO,
        # e.g. "cutting with a knife"), else of the generated one.
        source = sentence if sentence.startswith(_SENTENCE_START) else describe(verb, obj)
        action = source.removeprefix(_SENTENCE_START)
        prompts += [t.format(sentence=sentence, action=action, verb=verb, object=words(obj))
                    for t in templates]
    return prompts


def ensemble_text(prompt_embeddings: Tensor, num_classes: int, num_templates: int) -> Tensor:
    """Class embeddings ``[K, E]`` from the class-major prompt embeddings ``[K * T, E]`` of
    :func:`class_prompts`: normalised, averaged over the templates, renormalised."""
    text = F.normalize(prompt_embeddings, dim=-1).view(num_classes, num_templates, -1)
    return F.normalize(text.mean(dim=1), dim=-1)


def union_boxes(boxes_h: Tensor, boxes_o: Tensor, image_size: tuple[int, int], margin: float
                ) -> Tensor:
    """Union boxes of pairs (xyxy pixels ``[P, 4]`` each) grown by ``margin`` × their width
    and height on each side: normalised xyxy ``[P, 4]`` clipped to the image."""
    union = normalised_union_boxes(boxes_h, boxes_o, image_size)             # [P, 4]
    grow = margin * (union[:, 2:] - union[:, :2])                            # [P, 2]
    return torch.cat([union[:, :2] - grow, union[:, 2:] + grow], dim=1).clamp(0, 1)


def square_boxes(boxes: Tensor) -> Tensor:
    """xyxy boxes ``[P, 4]`` grown to squares of side ``max(w, h)`` around their centres."""
    cx, cy, w, h = box_convert(boxes, "xyxy", "cxcywh").unbind(1)
    side = torch.maximum(w, h)
    return box_convert(torch.stack([cx, cy, side, side], dim=1), "cxcywh", "xyxy")


def crop_boxes(image: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crops ``[P, C, size, size]`` of ``image [C, H, W]`` at continuous xyxy pixel boxes
    ``[P, 4]``: bilinear samples, ``ceil(box / size)`` of them averaged per output pixel
    along each axis (antialiased); 0 beyond one pixel outside the image."""
    return roi_align(image[None], [boxes], output_size=size, sampling_ratio=-1, aligned=True)


def pool_patches(dense: Tensor, boxes: Tensor, grid: tuple[int, int], pooling: str = "mean"
                 ) -> Tensor:
    """Pool one image's dense embeddings ``[gh * gw, E]`` (row-major) over normalised xyxy
    boxes ``[P, 4]`` into ``[P, E]`` (``mean`` or ``roi_align``, see the module docstring)."""
    if pooling == "mean":
        weights = (~union_box_mask(boxes, grid)).to(dense.dtype)                # [P, N]
        return weights @ dense / weights.sum(dim=1, keepdim=True)
    gh, gw = grid
    feature_map = dense.T.reshape(1, -1, gh, gw)                                 # [1, E, gh, gw]
    in_patches = boxes * boxes.new_tensor([gw, gh, gw, gh])
    return roi_align(feature_map, [in_patches], output_size=1, sampling_ratio=-1,
                     aligned=True).flatten(1)                                    # [P, E]


def calibrated_scores(features: Tensor, text: Tensor, valid: Tensor, temperature: float
                      ) -> Tensor:
    """``[P, K]``: softmax of ``cos(feature, text) / temperature`` over each pair's valid
    classes, 0 elsewhere. ``features`` ``[P, E]``, ``text`` ``[K, E]`` normalised, ``valid``
    ``[P, K]`` with at least one True per row."""
    logits = F.normalize(features, dim=-1) @ text.T / temperature                # [P, K]
    return logits.masked_fill(~valid, float("-inf")).softmax(dim=-1)


class TrainingFreeHOI(nn.Module):
    """Scores the frozen DETR's human–object pairs against class prompts with the frozen
    CLIP: no trainable parameter. Called like :class:`CLIP4HOI` in eval mode."""

    def __init__(self, config: TrainingFreeConfig, detector: FrozenDetector, clip: CLIPEncoder,
                 classes: HOIClassSet) -> None:
        super().__init__()
        check_training_free_config(config)
        self.config = config
        self.classes = classes
        self.detector = detector
        self.clip = clip
        self.open_vocabulary = config.detector.type == "grounding_dino"
        self.register_buffer("label_to_object", label_map(detector), persistent=False)
        self._text_cache: OrderedDict[tuple, Tensor] = OrderedDict()

    def train(self, mode: bool = True) -> TrainingFreeHOI:
        """Nothing to train: always eval mode."""
        return super().train(False)

    def _text_key(self, classes: HOIClassSet) -> tuple:
        return (classes.verbs, classes.object_names, classes.sentences,
                tuple(self.config.templates), self.label_to_object.device)

    def text_embeddings(self, classes: HOIClassSet, text: Tensor | None = None) -> Tensor:
        """Normalised class embeddings ``[K, E]``: the template ensemble; cached in memory.
        ``text`` (``[K, E]``, e.g. read from :mod:`clip4hoi.engine.text_cache`) is stored
        as the embeddings of ``classes`` instead of encoding the prompts."""
        key = self._text_key(classes)
        if text is not None:
            self._text_cache[key] = text.to(self.label_to_object.device)
        elif key not in self._text_cache:
            templates = self.config.templates
            prompts = self.clip.encode_text(class_prompts(classes, templates))  # [K * T, E]
            self._text_cache[key] = ensemble_text(prompts, len(classes), len(templates))
        self._text_cache.move_to_end(key)
        while len(self._text_cache) > _CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return self._text_cache[key]

    def crop_features(self, image: Tensor, boxes: Tensor) -> Tensor:
        """CLIP embeddings ``[P, E]`` of the square crops around normalised xyxy ``boxes``
        ``[P, 4]`` of ``image [3, H, W]`` (in ``[0, 1]``)."""
        if len(boxes) == 0:
            return image.new_zeros(0, self.clip.embed_dim)
        height, width = image.shape[-2:]
        pixels = square_boxes(boxes * boxes.new_tensor([width, height, width, height]))
        unique, inverse = torch.unique(pixels, dim=0, return_inverse=True)     # [U, 4], [P]
        normalised = TF.normalize(image, list(self.clip.mean), list(self.clip.std))
        size = self.clip.image_size
        chunks = unique.split(self.config.crop_batch_size)
        # A crowded image has hundreds of crops (minutes on a CPU): show their progress.
        bar = tqdm(chunks, desc=f"encode {len(unique)} pair crops", unit="batch",
                   disable=len(chunks) < 4, leave=False, file=sys.stderr)
        features = [self.clip.encode_image(crop_boxes(normalised, chunk, size)).global_embedding
                    for chunk in bar]                                            # [b, E] each
        return torch.cat(features)[inverse]

    @torch.no_grad()
    def forward(self, images: list[Tensor], targets: list[dict] | None = None,
                classes: HOIClassSet | None = None) -> list[dict[str, Tensor]]:
        """``images``: float ``[3, H, W]`` tensors in ``[0, 1]``. One detection dict per image
        (``docs/conventions.md``), boxes in the pixel frame of that image."""
        if targets is not None:
            raise ValueError("the training-free model has nothing to train and computes no "
                             "losses; call it without targets")
        classes = classes or self.classes
        cfg = self.config
        with full_precision(self.label_to_object.device):  # encoded once: in fp32
            text = self.text_embeddings(classes).float()                         # [K, E]
        class_objects = torch.tensor(classes.objects, device=text.device)        # [K]
        verb_ids = torch.tensor(classes.verb_ids, device=text.device)            # [K]
        detections = run_detector(self.detector, images, classes)
        clip_out = (self.clip.encode_image(self.clip.preprocess(images), dense=True)
                    if cfg.mode == "dense" else None)

        results = []
        for i, image in enumerate(images):
            size = (int(image.shape[-2]), int(image.shape[-1]))
            logits = detections["pred_logits"][i]
            inst = image_proposals(logits, detections["pred_boxes"][i],
                                   detections["hidden_states"][i],
                                   object_ids(self.label_to_object, logits), size, cfg.detector)
            h, o = enumerate_pairs(inst.objects)                                 # [P] each
            valid = inst.objects[o][:, None] == class_objects[None, :]           # [P, K]
            scored = valid.any(dim=1)  # pairs whose object has no class are not scored
            h, o, valid = h[scored], o[scored], valid[scored]
            boxes = union_boxes(inst.boxes[h], inst.boxes[o], size, cfg.margin)  # [P, 4]
            if cfg.mode == "crop":
                features = self.crop_features(image, boxes)
            else:
                features = pool_patches(clip_out.dense_embeddings[i], boxes, clip_out.grid,
                                        cfg.dense_pooling)                       # [P, E]
            with full_precision(features.device):  # scoring in fp32 under autocast too
                prior = (inst.scores[h] * inst.scores[o]) ** cfg.detector_power  # [P]
                scores = calibrated_scores(features.float(), text, valid,
                                           cfg.temperature) * prior[:, None]
            p, k = torch.nonzero(valid).unbind(1)
            results.append({
                "human_boxes": inst.boxes[h[p]], "object_boxes": inst.boxes[o[p]],
                "objects": inst.objects[o[p]], "hoi": k, "verbs": verb_ids[k],
                "scores": scores[p, k],
            })
        return results


def build_training_free(config: TrainingFreeConfig, download: bool = True) -> TrainingFreeHOI:
    """Build the training-free model (see :func:`~clip4hoi.models.model.build_frozen`)."""
    detector, clip = build_frozen(config.detector, config.clip, download)
    return TrainingFreeHOI(config, detector, clip, load_classes(
        config.classes, open_vocabulary=config.detector.type == "grounding_dino"))


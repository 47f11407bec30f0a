"""Python API: find human–object interactions in images from text.

    from clip4hoi import HOIDetector
    detector = HOIDetector.from_checkpoint("outputs/smoke/checkpoints/best.safetensors")
    # or HOIDetector.from_pretrained("org/name") from the Hugging Face Hub
    results = detector(["photo.jpg"], classes="ride bicycle, hold cup", batch_size=4)

(no trained head is published yet; ``clip4hoi train`` writes one, and
:func:`build_training_free_detector` needs none.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from clip4hoi.config import ModelConfig, TrainingFreeConfig, apply_overrides
from clip4hoi.data.images import load_image
from clip4hoi.data.metadata import HOIClassSet, load_classes
from clip4hoi.data.transforms import HOITransform, TransformConfig, rescale_boxes
from clip4hoi.errors import InputError
from clip4hoi.evaluation.detections import box_indices
from clip4hoi.hub import HEAD_FILE, download_head, resolve_checkpoint
from clip4hoi.models.model import CLIP4HOI, build_model, load_checkpoint
from clip4hoi.models.training_free import TrainingFreeHOI, build_training_free

ImageInput = Union[str, Path, Image.Image, Tensor]  # noqa: UP007 (a runtime alias)

RANDOM_WEIGHTS_WARNING = ("--random-weights: the networks are randomly initialised; the "
                          "detections are MEANINGLESS (smoke test only).")
"""What ``detect`` and ``demo`` say loudly when run with ``--random-weights``."""


def as_uint8_tensor(image: ImageInput) -> Tensor:
    """A path, PIL image or ``[3, H, W]`` tensor (uint8, or float in ``[0, 1]``) as a uint8
    RGB tensor ``[3, H, W]``."""
    if isinstance(image, str | Path):
        return load_image(image)
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected an image tensor [3, H, W], got {tuple(image.shape)}")
        if image.is_floating_point():
            return (image.clamp(0, 1) * 255).round().to(torch.uint8)
        return image.to(torch.uint8)
    raise TypeError(f"unsupported image type {type(image).__name__}")


class HOIDetector:
    """Detects ⟨human, verb, object⟩ triplets for any class set given as text.

    ``model`` maps float images to per-image detections (a trained :class:`CLIP4HOI`
    or a training-free scorer); images are resized to the detector's test scale and the
    boxes mapped back to the original pixels (continuous xyxy).
    """

    def __init__(self, model: nn.Module, classes: HOIClassSet, mode: str,
                 device: str | torch.device = "cpu", min_size: int = 800,
                 max_size: int = 1333) -> None:
        self.model = model.to(device).eval()
        self.classes = classes
        self.mode = mode
        self.device = torch.device(device)
        self.transform = HOITransform(train=False, config=TransformConfig(
            scales=(min_size,), test_scale=min_size, max_size=max_size))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        overrides: list[str] | None = None, **sizes: int) -> HOIDetector:
        """A trained CLIP4HOI head (its config names the frozen DETR and CLIP weights):
        a local ``.safetensors`` file or ``hf://ORG/NAME[@REVISION]`` (:mod:`clip4hoi.hub`);
        ``sizes``: ``min_size``/``max_size`` of the test scale."""
        model = load_checkpoint(resolve_checkpoint(path), overrides)
        return cls(model, model.classes, "trained", device, **sizes)

    @classmethod
    def from_pretrained(cls, repo_id: str, revision: str | None = None,
                        device: str | torch.device = "cpu", overrides: list[str] | None = None,
                        filename: str = HEAD_FILE) -> HOIDetector:
        """A trained head from the Hugging Face Hub repository ``repo_id`` (``"org/name"``)
        at ``revision`` (branch, tag or commit; default ``main``), downloaded into the
        ``huggingface_hub`` cache or read from it offline. Raises
        :class:`~clip4hoi.weights.WeightsUnavailableError` when neither works."""
        return cls.from_checkpoint(download_head(repo_id, filename, revision), device,
                                   overrides)

    @classmethod
    def from_config(cls, config: ModelConfig, device: str | torch.device = "cpu",
                    **sizes: int) -> HOIDetector:
        """An untrained CLIP4HOI model (e.g. all-random weights for smoke tests)."""
        model = build_model(config)
        return cls(model, model.classes, "trained", device, **sizes)

    def resolve_classes(self, classes: str | HOIClassSet | None) -> HOIClassSet:
        """``None`` → the detector's default; text, file or ``hicodet``/``vcoco`` → parsed
        (with an open-vocabulary detector, any noun can be the object)."""
        if classes is None:
            return self.classes
        if isinstance(classes, HOIClassSet):
            return classes
        return load_classes(classes, getattr(self.model, "open_vocabulary", False))

    def preprocess(self, image: ImageInput, target: dict | None = None
                   ) -> tuple[Tensor, dict]:
        """``image`` resized to the detector's test scale: a float ``[3, H', W']`` tensor
        in ``[0, 1]`` (on the CPU) and ``target`` (default: no boxes) with its boxes
        resized alike and ``size``/``orig_size`` (a 5000×1 image becomes 1333×1)."""
        return preprocess_image(as_uint8_tensor(image), self.transform, target)

    def encode_classes(self, classes: str | HOIClassSet | None = None) -> HOIClassSet:
        """Resolve ``classes`` and compute their text embeddings now (with a progress bar
        for large class sets; from the disk cache when the model has one), so that the
        first image does not pay for them. Returns the class set."""
        from clip4hoi.engine.text_cache import cached_text_embeddings

        class_set = self.resolve_classes(classes)
        if isinstance(self.model, TrainingFreeHOI | CLIP4HOI):
            with torch.no_grad():
                cached_text_embeddings(self.model, class_set)
        return class_set

    @torch.no_grad()
    def detect(self, inputs: list[Tensor], targets: list[dict],
               classes: str | HOIClassSet | None = None) -> list[dict[str, Tensor]]:
        """The model on images already :meth:`preprocess`-ed (one forward pass): per image
        the detections, best first, with boxes in the original pixels. ``targets`` come
        from :meth:`preprocess`; their boxes are used only by a model with
        ``detector.use_gt_boxes`` (the oracle setting)."""
        class_set = self.resolve_classes(classes)
        device_targets = None
        if isinstance(self.model, CLIP4HOI) and self.model.config.detector.use_gt_boxes:
            device_targets = [{"boxes_h": t["boxes_h"].to(self.device),
                               "boxes_o": t["boxes_o"].to(self.device),
                               "object": t["object"].to(self.device)} for t in targets]
        outputs = self.model([image.to(self.device) for image in inputs], device_targets,
                             class_set)
        results = []
        for resized, target, out in zip(inputs, targets, outputs, strict=True):
            order = torch.argsort(out["scores"], descending=True, stable=True)
            original = target["orig_size"].tolist()
            result = rescale_boxes({key: value[order].cpu() for key, value in out.items()},
                                   resized.shape[-2:], original)
            result["size"] = torch.tensor(original)
            results.append(result)
        return results

    def __call__(self, images: ImageInput | list[ImageInput],
                 classes: str | HOIClassSet | None = None, batch_size: int = 1
                 ) -> list[dict[str, Tensor]]:
        """Detect interactions in one image or a list, ``batch_size`` images per forward
        pass. Returns per image the model's detection dict (see ``docs/conventions.md``)
        with boxes in the original image's pixels and ``size`` ``(h, w)``, sorted by
        descending score."""
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        class_set = self.resolve_classes(classes)
        batch = images if isinstance(images, list) else [images]
        results: list[dict[str, Tensor]] = []
        for start in range(0, len(batch), batch_size):
            prepared = [self.preprocess(image) for image in batch[start:start + batch_size]]
            results += self.detect([p[0] for p in prepared], [p[1] for p in prepared],
                                   class_set)
        return results


def preprocess_image(image: Tensor, transform: HOITransform, target: dict | None = None
                     ) -> tuple[Tensor, dict]:
    """A uint8 ``[3, H, W]`` image through a test ``transform`` (see
    :meth:`HOIDetector.preprocess`)."""
    height, width = (int(v) for v in image.shape[-2:])
    target = target or {"boxes_h": torch.zeros(0, 4), "boxes_o": torch.zeros(0, 4)}
    resized, target = transform(image, target)
    target["orig_size"] = torch.tensor([height, width])
    return resized, target


def build_training_free_detector(mode: str, device: str | torch.device = "cpu",
                                 random_weights: bool = False,
                                 overrides: list[str] | None = None, **sizes: int
                                 ) -> HOIDetector:
    """The :class:`HOIDetector` of ``clip4hoi detect --mode crop|dense``: the public DETR and
    CLIP weights, or — with ``random_weights`` — the full-size architectures (DETR-R50 with
    91 classes, ViT-B-16) randomly initialised. ``overrides`` are ``--set KEY=VALUE`` items
    of :class:`TrainingFreeConfig` (``margin=0.2``, ``detector.score_threshold=0.3``);
    ``sizes``: ``min_size``/``max_size`` of the test scale (:class:`HOIDetector`)."""
    base = ["detector.weights=random", "clip.pretrained=null"] if random_weights else []
    config = apply_overrides(TrainingFreeConfig(mode=mode), [*base, *(overrides or [])])
    model = build_training_free(config)
    return HOIDetector(model, model.classes, config.mode, device, **sizes)


def load_detector(mode: str | None = None, checkpoint: str | Path | None = None,
                  device: str | torch.device = "cpu", random_weights: bool = False,
                  overrides: list[str] | None = None, **sizes: int) -> HOIDetector:
    """The detector of ``clip4hoi detect`` and ``clip4hoi demo``. ``mode`` ``trained``
    (the default with a ``checkpoint``: a path or ``hf://`` URI; without one, all-random
    weights if ``random_weights``) or ``crop``/``dense`` (training-free, the default
    ``crop`` without a checkpoint). ``overrides``: ``--set KEY=VALUE`` items of
    :class:`ModelConfig` (trained) or :class:`TrainingFreeConfig` (crop, dense);
    ``sizes``: ``min_size``/``max_size`` of the test scale."""
    mode = mode or ("trained" if checkpoint else "crop")
    overrides = list(overrides or [])
    if mode != "trained":
        return build_training_free_detector(mode, device, random_weights, overrides, **sizes)
    if checkpoint:
        return HOIDetector.from_checkpoint(checkpoint, device, overrides, **sizes)
    if not random_weights:
        raise InputError("--mode trained needs --checkpoint (or --random-weights for a "
                         "smoke test)")
    config = apply_overrides(ModelConfig(), [
        "detector.weights=random", "clip.pretrained=null", *overrides])
    return HOIDetector.from_config(config, device, **sizes)


def image_payload(file_name: str, size: tuple[int, int], mode: str, classes: HOIClassSet,
                  records: list[dict], seconds: float) -> dict:
    """One image's result in the per-image schema of ``clip4hoi detect`` (``docs/outputs.md``):
    ``size`` is the original ``(h, w)``, ``records`` come from :func:`to_records`."""
    height, width = (int(v) for v in size)
    return {"file_name": file_name, "width": width, "height": height, "mode": mode,
            "classes": classes.name, "seconds": round(seconds, 3), "detections": records}


def to_records(result: dict[str, Tensor], classes: HOIClassSet, top_k: int = 0,
               min_score: float = 0.0) -> list[dict]:
    """JSON records of one image's detections (``clip4hoi detect`` schema): boxes as
    0-based inclusive pixel indices of the original image, best first. ``top_k`` 0 keeps
    every detection; a negative one is refused."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise InputError(f"--top-k {top_k!r}: must be an integer >= 0 (0 keeps all)")
    if min_score != min_score:
        raise InputError("--min-score nan: must be a number")
    keep = torch.nonzero(result["scores"] >= min_score).squeeze(1)
    if top_k:
        keep = keep[:top_k]
    records = []
    for i in keep.tolist():
        k = int(result["hoi"][i])
        records.append({
            "human_box": _pixel_indices(result["human_boxes"][i]),
            "object_box": _pixel_indices(result["object_boxes"][i]),
            "object": classes.object_vocabulary[int(result["objects"][i])],
            "verb": classes.verbs[k],
            "hoi": k,
            "score": round(float(result["scores"][i]), 6),
        })
    return records


def _pixel_indices(box: Tensor) -> list[float]:
    return [round(v, 2) for v in box_indices(np.asarray(box.tolist()))[0].tolist()]

"""The model call of the inference pipeline, and how the model is chosen.

    resolve_mode("auto", checkpoint, device, overrides)  ->  ("dense", "cpu")
    build_backend("dense", device="cpu")                  ->  TorchBackend
    backend(inputs, targets, classes)                    ->  per image: detections, best
                                                             first, boxes in its pixels

:class:`Backend` is the small interface that :mod:`clip4hoi.engine.predictor` calls:
``transform`` (the test resize, run in the decoding workers), ``resolve_classes`` /
``encode_classes`` and one forward pass over a batch of resized images. :class:`TorchBackend`
runs a PyTorch module (a trained :class:`~clip4hoi.models.model.CLIP4HOI` or the
training-free scorer) on a device; another backend (ONNX Runtime, another precision) is
another class with the same methods.

:func:`resolve_mode` is the one place where ``auto`` becomes a mode, for ``detect``,
``demo``, ``test`` and the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from clip4hoi.config import ModelConfig, TrainingFreeConfig, apply_overrides, parse_yaml
from clip4hoi.data.metadata import HOIClassSet, load_classes
from clip4hoi.data.transforms import HOITransform, TransformConfig, rescale_boxes
from clip4hoi.engine.checkpoint import load_checkpoint
from clip4hoi.engine.text_cache import cached_text_embeddings, text_in_fp32
from clip4hoi.errors import OptionError
from clip4hoi.models.model import CLIP4HOI, build_model
from clip4hoi.models.precision import autocast, resolve_precision
from clip4hoi.models.training_free import TrainingFreeHOI, build_training_free
from clip4hoi.options import MODE_KEYS, check_option, check_overrides

if TYPE_CHECKING:
    from clip4hoi.engine.export import OnnxExport



def resolve_mode(mode: str = "auto", checkpoint: object = None, device: str = "cpu",
                 overrides: Sequence[str] = (), exported: str | None = None
                 ) -> tuple[str, str]:
    """The mode to run and why: ``(mode, reason)``, ``reason`` one of ``""`` (asked for),
    ``"override"`` (``mode=...`` among ``overrides``), ``"checkpoint"``, ``"gpu"``,
    ``"cpu"``, ``"onnx"``. ``auto`` is ``trained`` with a checkpoint, else ``crop`` on a GPU
    and ``dense`` on a CPU (crop encodes every pair with CLIP: minutes per crowded image on
    a CPU); with an ONNX export (``exported``: its mode) the export's mode. A ``mode``
    override that disagrees with ``mode`` is an :class:`OptionError`."""
    check_option("mode", mode)
    if exported is not None:
        if mode not in ("auto", exported):
            raise OptionError("mode", mode, f"the ONNX export of {{onnx}} holds the {exported} "
                              f"mode's model")
        return exported, "onnx" if mode == "auto" else ""
    chosen = [str(parse_yaml(value)) for key, _, value in
              (item.partition("=") for item in overrides) if key.strip() in MODE_KEYS]
    if chosen:
        if mode not in ("auto", chosen[-1]):
            raise OptionError("mode", mode, f"disagrees with the override mode={chosen[-1]}; "
                              f"give only one of them")
        return chosen[-1], "override" if mode == "auto" else ""
    if mode != "auto":
        return mode, ""
    if checkpoint:
        return "trained", "checkpoint"
    if str(device).startswith("cuda"):
        return "crop", "gpu"
    return "dense", "cpu"


class Backend(Protocol):
    """What the pipeline needs of a model (see the module docstring)."""

    mode: str
    device: torch.device
    transform: HOITransform
    classes: HOIClassSet
    uses_boxes: bool

    def resolve_classes(self, classes: str | HOIClassSet | None) -> HOIClassSet: ...

    def encode_classes(self, classes: str | HOIClassSet | None = None) -> HOIClassSet: ...

    def __call__(self, inputs: list[Tensor], targets: list[dict], classes: HOIClassSet
                 ) -> list[dict[str, Tensor]]: ...


def prepare_image(pixels: Tensor, transform: HOITransform, target: dict | None = None
                  ) -> tuple[Tensor, dict]:
    """A uint8 ``[3, H, W]`` image through the test ``transform``: a float ``[3, H', W']``
    tensor in ``[0, 1]`` and ``target`` (default: no boxes) with its boxes resized alike
    and ``size``/``orig_size`` (a 5000×1 image becomes 1333×1)."""
    height, width = (int(v) for v in pixels.shape[-2:])
    target = target or {"boxes_h": torch.zeros(0, 4), "boxes_o": torch.zeros(0, 4)}
    resized, target = transform(pixels, target)
    target["orig_size"] = torch.tensor([height, width])
    return resized, target


class TorchBackend:
    """A PyTorch detection module in eval mode on ``device``: a trained
    :class:`CLIP4HOI` or the training-free scorer, fed images resized to short side
    ``min_size`` (long side at most ``max_size``); ``classes``: the default class set;
    ``precision``: ``auto``, ``fp32`` or ``bf16``
    (:func:`~clip4hoi.models.precision.resolve_precision`): bf16 is autocast around the
    model, whose boxes, proposals and score fusion stay fp32; class embeddings are encoded
    in fp32 before it."""

    def __init__(self, model: nn.Module, mode: str, device: str | torch.device = "cpu",
                 min_size: int = 800, max_size: int = 1333,
                 classes: HOIClassSet | None = None, precision: str = "auto") -> None:
        self.device = torch.device(device)
        self.dtype, self.precision = resolve_precision(check_option("precision", precision),
                                                       self.device)
        """The compute type, and why it was chosen (``"fp32: CPU (x86_64) has no ..."``;
        an option named as ``{precision}``: :func:`~clip4hoi.errors.worded`)."""
        self.model = model.to(self.device).eval()
        self.classes: HOIClassSet = classes or model.classes
        """The default class set (the model's unless given)."""
        self.mode = mode
        self.transform = HOITransform(train=False, config=TransformConfig(
            scales=(min_size,), test_scale=min_size, max_size=max_size))
        self._encoded: HOIClassSet | None = None   # the class set whose text is in fp32

    @property
    def uses_boxes(self) -> bool:
        """Whether the model takes the annotated boxes as proposals (``use_gt_boxes``)."""
        return isinstance(self.model, CLIP4HOI) and self.model.config.detector.use_gt_boxes

    def resolve_classes(self, classes: str | HOIClassSet | None) -> HOIClassSet:
        """``None`` → the model's default; text, file or ``hicodet``/``vcoco`` → parsed
        (with an open-vocabulary detector, any noun can be the object)."""
        if classes is None:
            return self.classes
        if isinstance(classes, HOIClassSet):
            return classes
        return load_classes(classes, getattr(self.model, "open_vocabulary", False))

    def encode_classes(self, classes: str | HOIClassSet | None = None) -> HOIClassSet:
        """Resolve ``classes`` and compute their text embeddings now (from the disk cache of
        :mod:`clip4hoi.engine.text_cache` when there), so that the first image does not pay
        for them. Returns the class set."""
        class_set = self.resolve_classes(classes)
        if isinstance(self.model, TrainingFreeHOI | CLIP4HOI):
            with torch.no_grad():
                cached_text_embeddings(self.model, class_set)
        self._encoded = class_set
        return class_set

    def _text_in_fp32(self, classes: HOIClassSet) -> None:
        """The class embeddings in fp32 before a bf16 forward (:func:`text_in_fp32`)."""
        if classes is not self._encoded:
            text_in_fp32(self.model, classes)
            self._encoded = classes

    @torch.no_grad()
    def __call__(self, inputs: list[Tensor], targets: list[dict], classes: HOIClassSet
                 ) -> list[dict[str, Tensor]]:
        """One forward pass over images made by :func:`prepare_image`: per image the
        detections (on the CPU), best first, boxes continuous xyxy in the original pixels
        (``targets``' ``orig_size``). The targets' boxes reach only a model that uses them
        (:attr:`uses_boxes`)."""
        device_targets = None
        # Non-blocking: from the loader's pinned memory, a GPU copy overlaps the work
        # queued before it (the first .cpu() below waits for everything).
        if self.uses_boxes:
            device_targets = [{key: t[key].to(self.device, non_blocking=True)
                               for key in ("boxes_h", "boxes_o", "object")} for t in targets]
        self._text_in_fp32(classes)
        images = [image.to(self.device, non_blocking=True) for image in inputs]
        with autocast(self.device, None if self.dtype == torch.float32 else self.dtype):
            outputs = self.model(images, device_targets, classes)
        results = []
        for resized, target, out in zip(inputs, targets, outputs, strict=True):
            order = torch.argsort(out["scores"], descending=True, stable=True)
            results.append(rescale_boxes(
                {key: (value[order].float() if value.is_floating_point() else value[order]
                       ).cpu() for key, value in out.items()},
                resized.shape[-2:], target["orig_size"].tolist()))
        return results


class OnnxBackend(TorchBackend):
    """The model of a folder written by ``clip4hoi export --format onnx``
    (:class:`~clip4hoi.engine.export.OnnxExport`): DETR and CLIP's image tower run by ONNX
    Runtime (CPU; CUDA with ``onnxruntime-gpu``), proposals, the trained head and the
    scoring in PyTorch, all in fp32. Class sets: the exported classes or a subset, whose
    embeddings come from the export."""

    def __init__(self, export: OnnxExport, device: str | torch.device = "cpu",
                 min_size: int = 800, max_size: int = 1333, precision: str = "auto",
                 overrides: Sequence[str] = ()) -> None:
        if check_option("precision", precision) == "bf16":
            raise OptionError("precision", "bf16", "the ONNX graphs of {onnx} run in fp32 "
                              "(ONNX Runtime); use the PyTorch path for bf16")
        super().__init__(export.model(list(overrides)), export.mode, device, min_size,
                         max_size, export.classes, "fp32")
        self.precision = "fp32: ONNX Runtime runs the exported fp32 graphs"
        self.export = export
        for runner in (export.detector, export.clip):   # open now, not in the first image
            runner.session()

    def resolve_classes(self, classes: str | HOIClassSet | None) -> HOIClassSet:
        """As :meth:`TorchBackend.resolve_classes`, among the exported classes (others: an
        :class:`~clip4hoi.errors.InputError` naming them)."""
        class_set = super().resolve_classes(classes)
        self.export.text_for(class_set)
        return class_set

    def encode_classes(self, classes: str | HOIClassSet | None = None) -> HOIClassSet:
        """Resolve ``classes`` and give the model their exported embeddings."""
        class_set = self.resolve_classes(classes)
        self.export.prime(self.model, class_set)
        self._encoded = class_set
        return class_set

    def _text_in_fp32(self, classes: HOIClassSet) -> None:
        if classes is not self._encoded:
            self.encode_classes(classes)


def build_backend(mode: str, checkpoint: str | None = None, device: str | torch.device = "cpu",
                  random_weights: bool = False, overrides: Sequence[str] = (), *,
                  boxes: bool = False, min_size: int = 800, max_size: int = 1333,
                  precision: str = "auto", onnx: str | Path | OnnxExport | None = None
                  ) -> TorchBackend:
    """The model of a resolved ``mode`` (:func:`resolve_mode`). ``trained``: the
    ``checkpoint`` (a path or ``hf://`` URI; all-random weights with ``random_weights``
    and none); ``crop``/``dense``: the training-free scorer on the public DETR and CLIP
    (with ``random_weights``: the full-size architectures randomly initialised).
    ``overrides``: ``KEY=VALUE`` items of the checkpoint's :class:`ModelConfig` (with or
    without ``model.``) or of :class:`TrainingFreeConfig` (with or without
    ``training_free.``); ``boxes``: the annotated boxes will be given as proposals (a
    trained model's ``detector.use_gt_boxes``); ``precision``: ``auto``, ``fp32`` or
    ``bf16`` (:class:`TorchBackend`). ``onnx``: a folder written by ``clip4hoi export
    --format onnx`` (or its :func:`~clip4hoi.engine.export.load_onnx`): the
    :class:`OnnxBackend` of its model, ``mode`` its mode (``resolve_mode(...,
    exported=...)``), no ``checkpoint`` nor ``random_weights``. Missing weights raise
    :class:`~clip4hoi.errors.WeightsUnavailableError`."""
    if onnx is not None:
        from clip4hoi.engine.export import OnnxExport, load_onnx

        export = onnx if isinstance(onnx, OnnxExport) else load_onnx(onnx)
        resolve_mode(mode, exported=export.mode)   # the export's mode, or an OptionError
        items = [*overrides, *(["detector.use_gt_boxes=true"] if boxes else [])]
        if boxes and export.mode != "trained":
            raise OptionError("boxes", None, "the annotated boxes replace the detector's "
                              "proposals of a trained checkpoint; the training-free modes "
                              "score the detector's own detections")
        return OnnxBackend(export, device, min_size, max_size, precision, items)
    check_overrides(mode, checkpoint, overrides)   # before any weights are read
    random = ["detector.weights=random", "clip.pretrained=null"] if random_weights else []
    if mode == "trained":
        items = [item.removeprefix("model.") for item in overrides]
        items += ["detector.use_gt_boxes=true"] if boxes else []
        if checkpoint:
            from clip4hoi.hub import resolve_checkpoint

            model: nn.Module = load_checkpoint(resolve_checkpoint(checkpoint), items)
        elif random_weights:
            model = build_model(apply_overrides(ModelConfig(), [*random, *items]))
        else:
            raise OptionError("mode", "trained", "needs a {checkpoint} (or {random_weights} "
                              "for a smoke test)")
    elif boxes:
        raise OptionError("boxes", None, "the annotated boxes replace the detector's "
                          "proposals of a trained checkpoint; the training-free modes score "
                          "the detector's own detections")
    else:
        items = [item.removeprefix("training_free.") for item in overrides]
        model = build_training_free(apply_overrides(TrainingFreeConfig(mode=mode),
                                                    [*random, *items]))
    return TorchBackend(model, mode, device, min_size, max_size, precision=precision)

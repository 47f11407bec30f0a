"""Python API: find human–object interactions in images and videos from text.

    from clip4hoi import HOIDetector
    detector = HOIDetector.from_checkpoint("outputs/smoke/checkpoints/best.safetensors")
    # or HOIDetector.from_pretrained("org/name") from the Hugging Face Hub
    results = detector(["photo.jpg"], classes="ride bicycle, hold cup", batch_size=4)
    results[0].records(top_k=5)       # JSON records; .plot(), .save(folder), .to_dict()
    for result in detector.stream("clip.mp4", every=5):   # folders and videos, lazily
        print(result.frame, result.records(top_k=1))

(no trained head is published yet; ``clip4hoi train`` writes one, and
:func:`build_training_free_detector` needs none.) Every call goes through the pipeline of
``clip4hoi detect`` (:class:`~clip4hoi.engine.predictor.Predictor`) and returns its
:class:`~clip4hoi.engine.results.Results`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from clip4hoi.data.metadata import HOIClassSet
from clip4hoi.data.sources import as_sources, as_uint8_tensor
from clip4hoi.engine.backend import (
    Backend,
    TorchBackend,
    build_backend,
    prepare_image,
    resolve_mode,
)
from clip4hoi.engine.predictor import Predictor, default_batch_size
from clip4hoi.engine.results import Results, to_records
from clip4hoi.errors import InputError, OptionError, worded
from clip4hoi.options import check_option

if TYPE_CHECKING:
    from clip4hoi.config import ModelConfig

# (The weight lookup, the Hub and checkpoints are imported by the constructors that use
# them: open_clip, huggingface_hub and safetensors' readers stay out of a bare import.)

__all__ = ["RANDOM_WEIGHTS_WARNING", "HOIDetector", "Results", "build_training_free_detector",
           "load_detector", "to_records"]

RANDOM_WEIGHTS_WARNING = ("the networks are randomly initialised; the detections are "
                          "MEANINGLESS (smoke test only).")
"""What ``detect`` and ``demo`` say loudly when run with random weights."""


class HOIDetector:
    """Detects ⟨human, verb, object⟩ triplets for any class set given as text.

    ``model`` maps float images to per-image detections (a trained :class:`CLIP4HOI`
    or a training-free scorer); ``classes`` is the default class set (the model's when
    None); images are resized to short side ``min_size`` (long side
    at most ``max_size``) and the boxes mapped back to the original pixels (continuous
    xyxy); ``precision`` ``auto`` (bf16 where the hardware runs it natively, else fp32),
    ``fp32`` or ``bf16`` (:attr:`precision` says what was chosen and why).
    :meth:`from_backend` wraps another backend (:mod:`clip4hoi.engine.backend`).
    """

    def __init__(self, model: nn.Module, classes: HOIClassSet | None = None,
                 mode: str = "trained", device: str | torch.device = "cpu",
                 min_size: int = 800, max_size: int = 1333, precision: str = "auto") -> None:
        self.backend: Backend = TorchBackend(model, mode, device, min_size, max_size, classes,
                                             precision)

    @classmethod
    def from_backend(cls, backend: Backend) -> HOIDetector:
        """A detector running ``backend``."""
        detector = cls.__new__(cls)
        detector.backend = backend
        return detector

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        overrides: list[str] | None = None, precision: str = "auto",
                        **sizes: int) -> HOIDetector:
        """A trained CLIP4HOI head (its config names the frozen DETR and CLIP weights):
        a local ``.safetensors`` file or ``hf://ORG/NAME[@REVISION]`` (:mod:`clip4hoi.hub`);
        ``sizes``: ``min_size``/``max_size`` of the test scale."""
        from clip4hoi.engine.checkpoint import load_checkpoint
        from clip4hoi.hub import resolve_checkpoint

        return cls(load_checkpoint(resolve_checkpoint(path), overrides), None, "trained",
                   device, precision=precision, **sizes)

    @classmethod
    def from_onnx(cls, directory: str | Path, device: str | torch.device = "cpu",
                  overrides: list[str] | None = None, **sizes: int) -> HOIDetector:
        """The model of a folder written by ``clip4hoi export --format onnx`` run by ONNX
        Runtime (:class:`~clip4hoi.engine.backend.OnnxBackend`; needs the ``onnx``
        extra); ``overrides``: thresholds of its config."""
        return cls.from_backend(build_backend("auto", device=device, overrides=overrides or [],
                                              onnx=directory, **_sizes(sizes)))

    @classmethod
    def from_pretrained(cls, repo_id: str, revision: str | None = None,
                        device: str | torch.device = "cpu", overrides: list[str] | None = None,
                        filename: str | None = None, precision: str = "auto") -> HOIDetector:
        """A trained head from the Hugging Face Hub repository ``repo_id`` (``"org/name"``)
        at ``revision`` (branch, tag or commit; default ``main``), downloaded into the Hub
        cache (:func:`clip4hoi.weights.hub_cache_dir`) or read from it offline. Raises
        :class:`~clip4hoi.errors.WeightsUnavailableError` when neither works."""
        from clip4hoi.hub import HEAD_FILE, download_head

        return cls.from_checkpoint(download_head(repo_id, filename or HEAD_FILE, revision),
                                   device, overrides, precision)

    @classmethod
    def from_config(cls, config: ModelConfig, device: str | torch.device = "cpu",
                    precision: str = "auto", **sizes: int) -> HOIDetector:
        """An untrained CLIP4HOI model (e.g. all-random weights for smoke tests)."""
        from clip4hoi.models.model import build_model

        return cls(build_model(config), None, "trained", device, precision=precision, **sizes)

    # ------------------------------------------------------------------ what it runs

    @property
    def model(self) -> nn.Module:
        return self.backend.model

    @property
    def mode(self) -> str:
        return self.backend.mode

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def precision(self) -> str:
        """The compute type and why: ``"fp32: CPU (x86_64) has no AMX, AVX512-BF16 or Arm
        BF16"``, ``"bf16: CUDA capability 9.0 >= 8"``, ``"fp32: precision fp32"``."""
        return worded(self.backend.precision)

    @property
    def classes(self) -> HOIClassSet:
        """The default class set (the checkpoint's, or ``hicodet``)."""
        return self.backend.classes

    def resolve_classes(self, classes: str | HOIClassSet | None) -> HOIClassSet:
        """``None`` → the detector's default; text, file or ``hicodet``/``vcoco`` → parsed
        (with an open-vocabulary detector, any noun can be the object)."""
        return self.backend.resolve_classes(classes)

    def encode_classes(self, classes: str | HOIClassSet | None = None) -> HOIClassSet:
        """Resolve ``classes`` and compute their text embeddings now (with a progress bar
        for large class sets; from the disk cache when there), so that the first image
        does not pay for them. Returns the class set."""
        return self.backend.encode_classes(classes)

    def preprocess(self, image: Any, target: dict | None = None) -> tuple[Tensor, dict]:
        """``image`` (path, PIL image, array or tensor) resized as the model takes it: a
        float ``[3, H', W']`` tensor in ``[0, 1]`` and ``target`` with ``orig_size``."""
        return prepare_image(as_uint8_tensor(image), self.backend.transform, target)

    # ------------------------------------------------------------------ detecting

    def stream(self, images: Any, classes: str | HOIClassSet | None = None, *,
               batch_size: int = 1, workers: int = 0, every: int = 1, fps: float = 0.0,
               keep_pixels: bool = True) -> Iterator[Results]:
        """Detect lazily: one :class:`Results` per image or video frame, in order, holding
        only a few in memory. ``images``: one or a list of image files, videos (every
        ``every``-th frame, or about ``fps`` per second), live sources (``rtsp://`` or
        ``http(s)://`` URLs, ``/dev/video0``: read until they end), folders (scanned
        recursively), PIL images, ``[H, W, 3]`` uint8 arrays or ``[3, H, W]`` tensors;
        ``batch_size`` pictures of one size per forward pass (0: 4 on a GPU, 1 on a CPU;
        the results do not depend on it); ``workers`` decoding processes. A file that
        cannot be read raises :class:`~clip4hoi.errors.InputError` naming it."""
        check_option("every", every)
        check_option("fps", fps)
        batch_size = check_option("batch_size", batch_size) or default_batch_size(self.device)
        predictor = Predictor(self.backend, self.resolve_classes(classes),
                              batch_size=batch_size, workers=workers, keep_pixels=keep_pixels)
        for result in predictor(as_sources(images, every, fps)):
            if result.error is not None:
                raise InputError(result.error)
            yield result

    def __call__(self, images: Any, classes: str | HOIClassSet | None = None,
                 batch_size: int = 1, **options: Any) -> list[Results]:
        """Detect interactions in one image or a list (anything :meth:`stream` takes),
        ``batch_size`` images per forward pass: a list of :class:`Results`, one per image
        (per frame for videos), with boxes in the original image's pixels, best first."""
        return list(self.stream(images, classes, batch_size=batch_size, **options))


def build_training_free_detector(mode: str, device: str | torch.device = "cpu",
                                 random_weights: bool = False,
                                 overrides: list[str] | None = None, precision: str = "auto",
                                 **sizes: int) -> HOIDetector:
    """The :class:`HOIDetector` of ``clip4hoi detect --mode crop|dense``: the public DETR and
    CLIP weights, or — with ``random_weights`` — the full-size architectures (DETR-R50 with
    91 classes, ViT-B-16) randomly initialised. ``overrides`` are ``KEY=VALUE`` items of
    :class:`~clip4hoi.config.TrainingFreeConfig` (``margin=0.2``,
    ``detector.score_threshold=0.3``); ``sizes``: ``min_size``/``max_size`` of the test
    scale."""
    return load_detector(mode, None, device, random_weights, overrides, precision, **sizes)


def load_detector(mode: str = "auto", checkpoint: str | Path | None = None,
                  device: str | torch.device = "cpu", random_weights: bool = False,
                  overrides: list[str] | None = None, precision: str = "auto",
                  **sizes: int) -> HOIDetector:
    """The detector of ``clip4hoi detect`` and ``clip4hoi demo``: ``mode`` ``auto``
    (:func:`~clip4hoi.engine.backend.resolve_mode`: ``trained`` with a ``checkpoint`` — a
    path or ``hf://`` URI — else ``dense`` on a CPU, ``crop`` on a GPU), ``trained``
    (without a checkpoint: all-random weights if ``random_weights``), ``crop`` or
    ``dense``. ``overrides``: ``KEY=VALUE`` items of the checkpoint's model config
    (trained) or of the training-free config; ``precision``: ``auto``, ``fp32`` or
    ``bf16``; ``sizes``: ``min_size``/``max_size`` of the test scale."""
    checkpoint = str(checkpoint) if checkpoint else None
    mode, _ = resolve_mode(mode, checkpoint, str(device), overrides or [])
    return HOIDetector.from_backend(build_backend(
        mode, checkpoint, device, random_weights, overrides or [], precision=precision,
        **_sizes(sizes)))


def _sizes(sizes: dict[str, int]) -> dict[str, int]:
    """``min_size``/``max_size`` of the test scale (800 and 1333 unless given), checked by
    the rules of ``detect``'s ``test_scale`` and ``max_size``."""
    unknown = set(sizes) - {"min_size", "max_size"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}")
    min_size, max_size = sizes.get("min_size", 800), sizes.get("max_size", 1333)
    for name, rule, value in (("min_size", "test_scale", min_size),
                              ("max_size", "max_size", max_size)):
        try:
            check_option(rule, value)   # detect's --test-scale and --max-size
        except OptionError as error:
            raise OptionError(name, value, error.problem) from None
    if max_size <= min_size:
        raise OptionError("min_size", min_size, f"must be below {{max_size}} {max_size}")
    return {"min_size": min_size, "max_size": max_size}

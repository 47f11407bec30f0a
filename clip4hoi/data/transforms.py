"""Joint image / box transforms for training and testing (``torchvision.transforms.v2``).

The transform takes the ``uint8`` image read by :func:`clip4hoi.data.images.load_image`
and a target dict whose ``boxes_h`` / ``boxes_o`` are continuous xyxy boxes in that
image's pixels, and returns a ``float32`` image ``[3, H, W]`` in ``[0, 1]`` — **not**
normalised: the model normalises each of its two views itself — with the boxes moved to
the new frame and ``size`` set to ``(H, W)``. Other target entries pass through.

* training: random horizontal flip; multi-scale resize, the short side drawn from
  480, 512, ..., 800 and the long side capped at 1333 (DETR / UPT); colour jitter of
  brightness, contrast and saturation 0.4 (UPT);
* testing (and training with ``augment=False``, e.g. to cache features): resize to short
  side 800, long side at most 1333.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2


@dataclass(frozen=True)
class TransformConfig:
    """Settings of :class:`HOITransform`.

    ``scales``: short-side lengths drawn from in training; ``test_scale``: the short side
    at test time; ``max_size``: cap on the long side (both modes); ``flip``: random
    horizontal flip in training; ``color_jitter``: brightness / contrast / saturation
    strength in training (0 turns it off); ``augment=False`` makes the training
    transform the deterministic test transform.
    """

    scales: tuple[int, ...] = tuple(range(480, 801, 32))
    test_scale: int = 800
    max_size: int = 1333
    flip: bool = True
    color_jitter: float = 0.4
    augment: bool = True

    def __post_init__(self) -> None:
        sizes = (*self.scales, self.test_scale)
        if not self.scales or min(sizes) <= 0 or max(sizes) >= self.max_size:
            raise ValueError(f"transform sizes must be positive and below max_size="
                             f"{self.max_size}; got scales={self.scales}, "
                             f"test_scale={self.test_scale}")
        if self.color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0, got {self.color_jitter}")


def test_size(height: int, width: int, scale: int, max_size: int) -> list[int]:
    """``[H', W']`` of the test resize: short side ``scale``, long side at most ``max_size``
    (as ``v2.Resize(scale, max_size=max_size)``), but never below one pixel — a 5000×1
    image becomes 1333×1, not 1333×0."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = scale, int(scale * long / short)
    if new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    new_short = max(1, new_short)
    return [new_long, new_short] if width <= height else [new_short, new_long]


class HOITransform:
    """``(uint8 image [3, H, W], target) -> (float image [3, H', W'] in [0, 1], target)``.

    ``target["boxes_h"]`` and ``target["boxes_o"]`` (``[N, 4]`` continuous xyxy) follow
    every geometric step exactly; ``target["size"]`` becomes ``(H', W')``. The input
    target is not modified.
    """

    def __init__(self, train: bool, config: TransformConfig | None = None,
                 uint8: bool = False) -> None:
        """``uint8``: return the image as ``uint8`` (4× less to copy to a GPU; the engine
        converts it to float there) instead of ``float32`` in ``[0, 1]``."""
        self.config = config or TransformConfig()
        self.train = train
        cfg = self.config
        self.random = train and cfg.augment
        steps: list[v2.Transform] = []
        if train and cfg.augment:
            if cfg.flip:
                steps.append(v2.RandomHorizontalFlip())
            steps.append(v2.RandomShortestSize(list(cfg.scales), max_size=cfg.max_size))
            if cfg.color_jitter > 0:
                jitter = cfg.color_jitter
                steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter,
                                            saturation=jitter))
        if not uint8:
            steps.append(v2.ToDtype(torch.float32, scale=True))
        self.pipeline = v2.Compose(steps) if steps else v2.Identity()

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        height, width = image.shape[-2:]
        n_h = len(target["boxes_h"])
        # One BoundingBoxes per sample, as torchvision asks: humans first, then objects.
        boxes = tv_tensors.BoundingBoxes(
            torch.cat([target["boxes_h"], target["boxes_o"]]).float(),
            format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width))
        image = tv_tensors.Image(image)
        if not (self.train and self.config.augment):
            size = test_size(height, width, self.config.test_scale, self.config.max_size)
            image, boxes = v2.functional.resize(image, size), v2.functional.resize(boxes, size)
        image, boxes = self.pipeline(image, boxes)
        boxes = boxes.as_subclass(torch.Tensor)
        out = dict(target)
        out["boxes_h"], out["boxes_o"] = boxes[:n_h], boxes[n_h:]
        out["size"] = torch.tensor(image.shape[-2:], dtype=torch.long)
        return image.as_subclass(torch.Tensor), out

    def transform_target(self, target: dict, image_size: tuple[int, int]) -> dict:
        """What :meth:`__call__` returns as the target for an image of ``image_size``
        ``(h, w)``, without the image: for a deterministic transform (testing, or
        ``augment=False``), whose geometry depends on the image size only."""
        if self.random:
            raise ValueError("a random (augmenting) transform needs the image")
        n_h = len(target["boxes_h"])
        height, width = image_size
        boxes = tv_tensors.BoundingBoxes(
            torch.cat([target["boxes_h"], target["boxes_o"]]).float(),
            format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width))
        size = test_size(height, width, self.config.test_scale, self.config.max_size)
        boxes = self.pipeline(v2.functional.resize(boxes, size))
        out = dict(target)
        out["size"] = torch.tensor(boxes.canvas_size, dtype=torch.long)
        boxes = boxes.as_subclass(torch.Tensor)
        out["boxes_h"], out["boxes_o"] = boxes[:n_h], boxes[n_h:]
        return out

    def __repr__(self) -> str:
        return f"HOITransform(train={self.train}, {self.pipeline})"


def rescale_boxes(detections: dict[str, Tensor], size: tuple[int, int] | list[int],
                  new_size: tuple[int, int] | list[int]) -> dict[str, Tensor]:
    """One image's detections with the boxes moved from an image of ``size`` ``(h, w)``
    to the same image resized to ``new_size`` (e.g. the model's input → the original)."""
    (h1, w1), (h0, w0) = size, new_size
    scale = detections["human_boxes"].new_tensor([w0 / w1, h0 / h1, w0 / w1, h0 / h1])
    return {**detections, "human_boxes": detections["human_boxes"] * scale,
            "object_boxes": detections["object_boxes"] * scale}

"""Per-picture detection results (the ``ultralytics`` ``Results`` convention).

    result = next(detector.stream("clip.mp4"))
    result.records(top_k=5)       # [{"human_box": [...], "verb": "ride", "score": 0.7, ...}]
    result.to_json()              # the per-image / per-frame schema of docs/outputs.md
    result.plot()                 # a PIL image with the best pairs drawn
    result.save("out/")           # out/<name>.json and out/<name>.drawn.jpg

A :class:`Results` knows its picture's name, size, frame index and time (videos), the class
set and the mode it was detected with, and the model's detections (boxes continuous xyxy in
the original pixels, best first). :func:`to_records` is the one conversion of detections to
JSON records; its boxes go through :func:`clip4hoi.evaluation.detections.box_indices`, as
``clip4hoi test``'s ``DETS.json`` records do.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from clip4hoi.data.metadata import HOIClassSet
from clip4hoi.data.sources import Source
from clip4hoi.evaluation.detections import box_indices
from clip4hoi.fileio import write_atomic
from clip4hoi.options import check_option


def to_records(detections: dict[str, Tensor], classes: HOIClassSet, top_k: int = 0,
               min_score: float = 0.0) -> list[dict]:
    """JSON records of one picture's detections (sorted best first, boxes continuous in
    its pixels): boxes as 0-based inclusive pixel indices (2 decimals), the object and
    verb by name, ``hoi`` the class index, ``score`` (6 decimals). ``top_k`` 0 keeps every
    detection; none scores below ``min_score``."""
    check_option("top_k", top_k)
    check_option("min_score", min_score)
    keep = torch.nonzero(detections["scores"] >= min_score).squeeze(1)
    if top_k:
        keep = keep[:top_k]
    rows = keep.tolist()
    humans = _rounded(box_indices(detections["human_boxes"][keep].double().numpy()))
    objects = _rounded(box_indices(detections["object_boxes"][keep].double().numpy()))
    return [{"human_box": humans[n], "object_box": objects[n],
             "object": classes.object_vocabulary[int(detections["objects"][i])],
             "verb": classes.verbs[int(detections["hoi"][i])],
             "hoi": int(detections["hoi"][i]),
             "score": round(float(detections["scores"][i]), 6)}
            for n, i in enumerate(rows)]


def _rounded(boxes: Any) -> list[list[float]]:
    return [[round(value, 2) for value in box] for box in boxes.tolist()]


@dataclass
class Results:
    """The detections of one picture (an image, or one frame of a video)."""

    source: Source
    """Where the picture came from; ``source.name`` names the result."""
    classes: HOIClassSet
    mode: str
    detections: dict[str, Tensor]
    """The model's detections: ``human_boxes``/``object_boxes`` ``[N, 4]`` continuous
    xyxy in the original pixels, ``objects``, ``hoi``, ``verbs``, ``scores`` ``[N]``, best
    first (docs/conventions.md)."""
    size: tuple[int, int]
    """``(height, width)`` of the picture."""
    frame: int | None = None
    """Index of the frame in the video (None for an image)."""
    time: float | None = None
    """Presentation time of the frame in seconds (None for an image)."""
    seconds: float = 0.0
    """Model time of this picture (its share of its batch)."""
    pixels: Tensor | None = None
    """The picture, uint8 ``[3, H, W]`` (for :meth:`plot`)."""
    error: str | None = None
    """Why the picture could not be read (then there are no detections)."""
    done: bool = False
    """A frame that an earlier run detected (a resumed video): decoded, not detected (no
    detections here; its line is in the video's JSON lines)."""

    @property
    def name(self) -> str:
        return self.source.name

    def __len__(self) -> int:
        return len(self.detections["scores"]) if self.detections else 0

    def to_dict(self) -> dict[str, Tensor]:
        """The model's detections and ``size`` ``(h, w)`` as one dict of tensors."""
        return {**self.detections, "size": torch.tensor(self.size)}

    def records(self, top_k: int = 0, min_score: float = 0.0) -> list[dict]:
        """The detections as JSON records (:func:`to_records`)."""
        return to_records(self.detections, self.classes, top_k, min_score)

    def to_json(self, top_k: int = 0, min_score: float = 0.0) -> dict[str, Any]:
        """The picture's result in the schema of ``clip4hoi detect`` (docs/outputs.md): the
        per-image file's, or for a video frame one line of the video's JSON lines."""
        height, width = self.size
        if self.frame is not None:
            return {"file_name": self.name, "frame": self.frame, "time": round(self.time, 4),
                    "width": width, "height": height,
                    "detections": self.records(top_k, min_score)}
        return {"file_name": self.name, "width": width, "height": height, "mode": self.mode,
                "classes": self.classes.name, "seconds": round(self.seconds, 3),
                "detections": self.records(top_k, min_score)}

    def plot(self, pairs: int = 5, min_score: float = 0.0, top_k: int = 0,
             records: list[dict] | None = None) -> Image.Image:
        """The picture with its ``pairs`` best human–object pairs scoring at least
        ``min_score`` drawn (:func:`clip4hoi.visualize.draw_detections`), from the
        ``top_k`` best detections or from ``records`` (of :meth:`records`)."""
        from clip4hoi.visualize import draw_detections

        if self.pixels is None:
            raise ValueError(f"{self.name}: the picture is not kept with this result")
        picture = Image.fromarray(self.pixels.permute(1, 2, 0).numpy())
        return draw_detections(picture, self.records(top_k) if records is None else records,
                               max_pairs=pairs, min_score=min_score)

    def save(self, folder: str | Path, top_k: int = 100, min_score: float = 0.0,
             draw: int = 5, draw_score: float = 0.0, picture: bool = True) -> Path:
        """Write ``FOLDER/<stem>.drawn.jpg`` (unless not ``picture``), then
        ``FOLDER/<stem>.json`` — last, because its presence marks the picture as done —
        both atomically; ``stem`` is the name, with ``@FRAME`` for a video frame. Returns
        the JSON file."""
        folder = Path(folder)
        stem = self.name if self.frame is None else f"{self.name}@{self.frame}"
        payload = self.to_json(top_k, min_score)
        if picture:
            buffer = io.BytesIO()
            self.plot(draw, draw_score, records=payload["detections"]).save(
                buffer, format="JPEG", quality=90)
            write_atomic(folder / f"{stem}.drawn.jpg", buffer.getvalue())
        return write_atomic(folder / f"{stem}.json", json.dumps(payload, indent=1))

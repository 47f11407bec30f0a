"""A synthetic video for the video tests: coloured rectangles (people and objects) moving on
known straight paths over a grey background, written with PyAV, and per frame the oracle
boxes of every rectangle — usable as ``--boxes``-style proposals, or as the detections of
a frame (:func:`oracle_records`) with interaction scores planted over known time spans.

The default scene (:data:`SCENE`, 8 s at 10 frames/s, 160x120 pixels): two people walking
in opposite directions on two rows that never cross, a cup carried along by the first from
1 s to 7 s, and a small ball moving its own width per sampled frame at 2 fps. A longer
video plays the scene again and again. Each frame carries its index as a barcode along
the bottom edge, so that :func:`oracle_backend` — a stand-in for the model in the real
pipeline — finds the oracle detections of the very frame it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Mover:
    """A rectangle of ``size`` (w, h) pixels whose top-left corner is at ``start`` (x, y)
    at time ``t_in`` and moves ``velocity`` (x, y) pixels per second until ``t_out``."""

    id: int
    label: str
    size: tuple[int, int]
    start: tuple[float, float]
    velocity: tuple[float, float]
    colour: tuple[int, int, int]
    t_in: float = 0.0
    t_out: float = math.inf

    def box(self, time: float) -> list[float] | None:
        """``[x1, y1, x2, y2]`` (0-based inclusive pixel indices, as ``clip4hoi detect``
        writes boxes) at ``time``, or ``None`` when it is not in the picture."""
        if not self.t_in <= time < self.t_out:
            return None
        x = round(self.start[0] + self.velocity[0] * (time - self.t_in))
        y = round(self.start[1] + self.velocity[1] * (time - self.t_in))
        return [float(x), float(y), float(x + self.size[0] - 1), float(y + self.size[1] - 1)]


@dataclass(frozen=True)
class Planted:
    """An interaction of human ``human`` with object ``obj`` (mover ids) of class ``hoi``
    scoring ``score`` from ``start`` to ``end`` seconds (both included) and ``background``
    at other times; at the ``dips`` times it scores ``dip`` (a one-frame drop)."""

    human: int
    obj: int
    hoi: int
    verb: str
    start: float
    end: float
    score: float = 0.8
    background: float = 0.02
    dips: tuple[float, ...] = ()
    dip: float = 0.05

    def score_at(self, time: float) -> float:
        if any(abs(time - t) < 1e-6 for t in self.dips):
            return self.dip
        return self.score if self.start - 1e-6 <= time <= self.end + 1e-6 else self.background


SIZE = (120, 160)  # (h, w)
RATE = 10
SECONDS = 8.0
SCENE = (
    Mover(1, "person", (24, 40), (8, 6), (12, 0), (40, 90, 200)),
    Mover(2, "person", (24, 40), (128, 70), (-12, 0), (60, 160, 230)),
    Mover(3, "cup", (8, 8), (36, 24), (12, 0), (220, 50, 40), t_in=1.0, t_out=7.0),
    Mover(4, "sports_ball", (8, 8), (4, 54), (16, 0), (40, 200, 60)),
)
PLANTED = (
    Planted(1, 3, 0, "hold", 2.0, 5.0, dips=(3.5,)),       # a one-frame dip to bridge
    Planted(2, 3, 0, "hold", 6.0, 6.0, score=0.6),         # a one-frame spike to drop
    Planted(2, 4, 1, "kick", 4.5, 7.5, score=0.7),
    Planted(1, 2, 2, "hug", math.inf, math.inf),           # never: both people always seen
)


BARCODE_BITS, BLOCK = 12, 4   # the frame index in 12 blocks of 4x4 pixels, bottom left


def oracle_frame(index: int, movers: tuple[Mover, ...] = SCENE, rate: int = RATE,
                 period: float = SECONDS) -> dict:
    """``{"frame", "time", "scene_time", "boxes": [{"id", "label", "box"}]}`` of frame
    ``index``: the oracle boxes (in mover order) of the scene at ``time`` modulo
    ``period``."""
    time = index / rate
    scene_time = time % period
    boxes = [{"id": m.id, "label": m.label, "box": box} for m in movers
             if (box := m.box(scene_time)) is not None]
    return {"frame": index, "time": time, "scene_time": scene_time, "boxes": boxes}


def write_moving_boxes(path: Path, movers: tuple[Mover, ...] = SCENE, rate: int = RATE,
                       seconds: float = SECONDS, size: tuple[int, int] = SIZE,
                       format: str | None = None, options: dict | None = None,
                       rotation: int = 0) -> list[dict]:
    """Write the H.264 video of ``movers`` to ``path`` (``format``: the container's, e.g.
    ``mpegts``; ``options``: the muxer's, e.g. ``{"movflags": "faststart"}``;
    ``rotation``: a display rotation in degrees counter-clockwise, as phones record);
    returns per frame :func:`oracle_frame`."""
    import av

    height, width = size
    frames = []
    with av.open(str(path), "w", format=format, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10"}
        if rotation:
            stream.set_display_rotation(rotation)
        for index in range(round(seconds * rate)):
            oracle = oracle_frame(index, movers, rate)
            pixels = np.full((height, width, 3), 128, dtype=np.uint8)
            for item, mover in zip(oracle["boxes"], [m for m in movers if m.box(
                    oracle["scene_time"]) is not None], strict=True):
                x1, y1, x2, y2 = (int(v) for v in item["box"])
                pixels[max(y1, 0):y2 + 1, max(x1, 0):x2 + 1] = mover.colour
            for bit in range(BARCODE_BITS):
                pixels[-BLOCK:, bit * BLOCK:(bit + 1) * BLOCK] = 255 * (index >> bit & 1)
            frames.append(oracle)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return frames


def read_barcode(image) -> int:
    """The frame index written along the bottom edge of a frame (``[3, H, W]``, uint8 or
    float in ``[0, 1]``, any scale of the video's pixels)."""
    height, width = image.shape[-2:]
    grey = image.float().mean(0)
    grey = grey if image.is_floating_point() else grey / 255
    scale = width / SIZE[1]
    row = min(height - 1, round(height - BLOCK * scale / 2))
    bits = [grey[row, min(width - 1, round((bit + 0.5) * BLOCK * scale))] > 0.5
            for bit in range(BARCODE_BITS)]
    return sum(int(b) << k for k, b in enumerate(bits))


def decoded_times(path: Path, every: int) -> list[tuple[int, float]]:
    """``(frame index, time in seconds)`` of every ``every``-th decoded frame of ``path``."""
    import av

    with av.open(str(path)) as container:
        return [(i, float(frame.time)) for i, frame in enumerate(container.decode(video=0))
                if i % every == 0]


def oracle_records(oracle: dict, planted: tuple[Planted, ...] = PLANTED, jitter: float = 0.0,
                   rng: np.random.Generator | None = None) -> list[dict]:
    """The detections of one oracle frame as ``clip4hoi detect`` records: every planted
    interaction whose two movers are in the frame, scored as planted, best first. Boxes
    move by up to ``jitter`` pixels (the same box in every record of the frame)."""
    boxes = {}
    for item in oracle["boxes"]:
        box = np.asarray(item["box"])
        if jitter:
            box = box + (rng or np.random.default_rng(0)).uniform(-jitter, jitter, 4)
        boxes[item["id"]] = (item["label"], [round(float(v), 2) for v in box])
    records = []
    for p in planted:
        if p.human in boxes and p.obj in boxes:
            records.append({"human_box": boxes[p.human][1], "object_box": boxes[p.obj][1],
                            "object": boxes[p.obj][0], "verb": p.verb, "hoi": p.hoi,
                            "score": p.score_at(oracle.get("scene_time", oracle["time"])),
                            "_truth": (p.human, p.obj)})
    records.sort(key=lambda r: -r["score"])
    return records


COCO_IDS = {"person": 0, "sports_ball": 32, "cup": 41}


def oracle_target(oracle: dict) -> dict:
    """The oracle boxes of one frame as a model target (the ``--boxes`` proposals of a
    model with ``detector.use_gt_boxes``): one row per (person, other box) pair, continuous
    xyxy pixels, COCO-80 object ids."""
    import torch

    people = [b for b in oracle["boxes"] if b["label"] == "person"]
    pairs = [(h, o) for h in people for o in oracle["boxes"] if o is not h]
    edges = torch.tensor([0.0, 0.0, 1.0, 1.0])   # inclusive pixel indices -> continuous
    return {"boxes_h": torch.tensor([h["box"] for h, _ in pairs]).reshape(-1, 4) + edges,
            "boxes_o": torch.tensor([o["box"] for _, o in pairs]).reshape(-1, 4) + edges,
            "object": torch.tensor([COCO_IDS[o["label"]] for _, o in pairs], dtype=torch.long)}


ORACLE_CLASSES = "hold cup, kick sports ball, hug person"
"""The class set whose HOI indices are :data:`PLANTED`'s (0 hold cup, 1 kick, 2 hug)."""


def oracle_backend(delay: float = 0.0, calls: list | None = None):
    """A ``TorchBackend.__call__`` giving each frame of a moving-boxes video (found by its
    barcode) its oracle detections with the planted scores (:func:`oracle_records`), in
    the frame's pixels, after ``delay`` seconds per batch; appends each frame index it
    detects to ``calls``. Use the class set :data:`ORACLE_CLASSES`."""
    import time

    import torch

    def call(self, inputs, targets, classes):
        time.sleep(delay)
        results = []
        for image in inputs:
            index = read_barcode(image)
            if calls is not None:
                calls.append(index)
            records = oracle_records(oracle_frame(index))
            edges = torch.tensor([0.0, 0.0, 1.0, 1.0])   # inclusive indices -> continuous
            results.append({
                "human_boxes": torch.tensor([r["human_box"] for r in records]).reshape(-1, 4)
                + edges,
                "object_boxes": torch.tensor([r["object_box"] for r in records]).reshape(-1, 4)
                + edges,
                "objects": torch.tensor([classes.object_vocabulary.index(r["object"])
                                         for r in records], dtype=torch.long),
                "hoi": torch.tensor([r["hoi"] for r in records], dtype=torch.long),
                "verbs": torch.tensor([r["hoi"] for r in records], dtype=torch.long),
                "scores": torch.tensor([r["score"] for r in records])})
        return results

    return call

"""Track ids for the humans and objects of a video's sampled frames.

:class:`VideoTracker` gives every human and object box of a frame a track id that stays
the same from frame to frame, with ByteTrack, the multi-object tracker of the
``trackers`` package (Roboflow, Apache-2.0; ``pip install 'clip4hoi[video]'``), matching
boxes by buffered IoU (each box widened by ``buffer`` of its size on every side, so that
a small object that moves more than its own width between two sampled frames is still
found). Boxes are tracked per object class — one tracker for people, one for
cups, ... — so a person never takes over the id of the bicycle they ride, however much
their boxes overlap. A person box that is both a human and the object of another human
(``hug person``) is one track. Ids are numbers from 1, unique across classes (``person 1``,
``cup 2``, ``person 3``), in the order the tracks are confirmed.

A new track is confirmed on its second sampled frame (as in ByteTrack, a box seen once is
not yet a track): its first frame has no id (``None``). A lost track keeps its id for
``lost_seconds``. Times, not frame counts, drive the motion model, so any sampling rate
(``--every``, ``--fps``, a stream with uneven frames) gives the same behaviour.

The tracker is a deterministic function of the boxes and times it is given: feeding the
boxes of the frames already written (their ``detections``) to a new tracker rebuilds its
state exactly, which is how an interrupted video resumes (:meth:`VideoTracker.replay`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clip4hoi.errors import EnvironmentFault, InputError
from clip4hoi.options import check_option

HUMAN = "person"


@dataclass(frozen=True)
class TrackerSettings:
    """How boxes are linked across frames."""

    lost_seconds: float = 2.0
    """How long a track that is not seen keeps its id, waiting to be seen again."""
    buffer: float = 0.3
    """Each box is widened by this fraction of its width and height on every side before
    boxes of two frames are compared (buffered IoU; 0: plain IoU)."""

    def check(self) -> None:
        """:class:`~clip4hoi.errors.OptionError` naming the setting that is out of range
        (the rules of :mod:`clip4hoi.options`)."""
        check_option("lost_seconds", self.lost_seconds)
        check_option("track_buffer", self.buffer)


def require_trackers() -> None:
    """Check that the tracker can be imported (:class:`EnvironmentFault` saying what to
    install, before a video run loads its model)."""
    _bytetrack()


def _bytetrack() -> tuple[type, type]:
    """The ``trackers`` classes ``ByteTrackTracker`` and ``BIoU``; ``EnvironmentFault``
    (one line, what to install) when the package or its OpenCV cannot be imported."""
    try:
        from trackers import BIoU, ByteTrackTracker
    except ImportError as error:
        if getattr(error, "name", None) == "trackers":
            raise EnvironmentFault("tracking people and objects in videos needs the trackers "
                                   "package: pip install 'clip4hoi[video]'") from None
        raise EnvironmentFault(
            f"the trackers package failed to import ({error}); on a server without "
            f"graphics libraries install them (Debian/Ubuntu: apt-get install libgl1 "
            f"libglib2.0-0) or replace opencv-python by opencv-python-headless") from None
    return ByteTrackTracker, BIoU


class VideoTracker:
    """Track ids for the boxes of one video's sampled frames, given in time order.

    ``rate`` is the number of sampled frames per second (the video's rate divided by
    ``--every``, or ``--fps``): the unit of the motion model's step."""

    def __init__(self, rate: float, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self.settings.check()
        if not (math.isfinite(rate) and rate > 0):
            raise InputError(f"tracker rate {rate!r}: must be a positive number of sampled "
                             f"frames per second")
        self.rate = float(rate)
        self._classes = _bytetrack()
        self._trackers: dict[str, Any] = {}          # label -> tracker of that class
        self._ids: dict[tuple[str, int], int] = {}   # (label, tracker's id) -> our id
        self._last_time: float | None = None

    def _new_tracker(self) -> Any:
        tracker, buffered_iou = self._classes
        # lost_track_buffer counts frames at 30 frames/s; with timestamps it is seconds * 30.
        return tracker(lost_track_buffer=round(self.settings.lost_seconds * 30),
                       frame_rate=self.rate, minimum_consecutive_frames=1,
                       iou=buffered_iou(self.settings.buffer))

    def _time(self, time: float) -> float:
        """``time``, moved just after the previous frame's when it is not later (a
        missing or repeated timestamp): the trackers need strictly increasing times."""
        last = self._last_time
        if last is not None and not (time > last):  # also NaN
            time = last + 1e-3
        elif last is None and not math.isfinite(time):
            time = 0.0
        self._last_time = time
        return time

    def update(self, time: float, boxes: Sequence[Sequence[float]], labels: Sequence[str],
               scores: Sequence[float] | None = None) -> list[int | None]:
        """Track the ``boxes`` (``[x1, y1, x2, y2]`` pixels) of the frame at ``time`` seconds,
        of classes ``labels`` (``person``, ``cup``, ...) and detector ``scores`` (``None``:
        all confident). Returns the track id of each box, ``None`` for a box not (yet)
        part of a confirmed track."""
        import numpy as np
        import supervision as sv

        if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
            raise ValueError("boxes, labels and scores must have the same length")
        time = self._time(float(time))
        for label in labels:
            if label not in self._trackers:
                self._trackers[label] = self._new_tracker()
        ids: list[int | None] = [None] * len(boxes)
        # Every class's tracker steps at every frame (deterministic ageing of lost tracks).
        for label, tracker in self._trackers.items():
            rows = [i for i, lab in enumerate(labels) if lab == label]
            detections = sv.Detections(
                xyxy=np.array([boxes[i] for i in rows], dtype=np.float64).reshape(-1, 4),
                confidence=None if scores is None else np.array([scores[i] for i in rows],
                                                                dtype=np.float64),
                data={"row": np.array(rows, dtype=np.int64)})
            tracked = tracker.update(detections, timestamp=time)
            if len(tracked) == 0:
                continue
            for row, local in zip(tracked.data["row"].tolist(), tracked.tracker_id.tolist(),
                                  strict=True):
                if local >= 0:
                    key = (label, local)
                    if key not in self._ids:
                        self._ids[key] = len(self._ids) + 1
                    ids[row] = self._ids[key]
        return ids

    def track_records(self, time: float, detections: list[dict]) -> list[dict]:
        """The ``detections`` of one frame (``clip4hoi detect`` records: ``human_box``,
        ``object_box``, ``object``, ...) with ``human_track`` and ``object_track`` added
        (new dicts, in the same order). The boxes tracked are the distinct human and
        object boxes of the records."""
        keys = box_keys(detections)
        unique = list(dict.fromkeys(key for pair in keys for key in pair))
        ids = dict(zip(unique, self.update(time, [list(k[1]) for k in unique],
                                           [k[0] for k in unique]), strict=True))
        return [{**det, "human_track": ids[h], "object_track": ids[o]}
                for det, (h, o) in zip(detections, keys, strict=True)]

    def replay(self, frames: Iterable[dict]) -> None:
        """Bring the tracker to the state it had after the given frame records (lines of
        ``NAME.jsonl``, oldest first) — to continue an interrupted video. ``ValueError``
        when the ids it finds differ from the recorded ones (lines of another run)."""
        for frame in frames:
            tracked = self.track_records(frame["time"], frame["detections"])
            for det, again in zip(frame["detections"], tracked, strict=True):
                recorded = (det.get("human_track"), det.get("object_track"))
                if recorded != (again["human_track"], again["object_track"]):
                    raise ValueError(f"frame {frame.get('frame')}: the recorded track ids "
                                     f"{recorded} are not the tracker's "
                                     f"{(again['human_track'], again['object_track'])}")


def box_keys(detections: list[dict]) -> list[tuple[tuple[str, tuple], tuple[str, tuple]]]:
    """Per record, the ``(label, box)`` keys of its human and its object: equal boxes of
    the same class are one instance."""
    return [((HUMAN, tuple(det["human_box"])), (det["object"], tuple(det["object_box"])))
            for det in detections]

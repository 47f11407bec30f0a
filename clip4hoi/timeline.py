"""Interactions over time: from per-frame scores to segments with a start and an end.

The input is a video's frame records (the lines of ``NAME.jsonl``: ``frame``, ``time`` and
``detections`` carrying ``human_track`` and ``object_track`` ids, see
:mod:`clip4hoi.tracking`). For every (human track, object track, HOI class) the per-frame
score — 0 in a frame where the pair does not have that class — goes through hysteresis:

* a segment **starts** at a frame scoring at least ``on_score``;
* it goes on through every later frame scoring at least ``off_score`` (lower, so that a
  score wavering around one threshold does not flicker on and off);
* frames scoring less are a gap, bridged while they are at most ``max_gap`` seconds after
  the segment's last frame scoring at least ``off_score``: the segment **ends** at that
  last frame when a frame more than ``max_gap`` seconds after it still scores less (or
  when the video ends);
* a segment shorter than ``min_length`` seconds (end − start) is dropped as noise.

Scores are not averaged over time, so the start and end are not delayed: they are the
times of the first and last frames of the segment. Each segment has ``start``, ``end``
(seconds), ``peak_score``, ``mean_score`` (over the segment's sampled frames, gap frames
included with the score they had) and ``frames`` (its number of sampled frames).

:class:`TimelineBuilder` takes the frames one at a time (a video being read, a stream) and
says at each frame which interactions are on and for how long; :func:`build_timeline` is
the same as a pure function of all the frames — which is how a resumed run rebuilds the
timeline from the lines already written (:func:`read_frames`). :func:`summary` prints it
(``person 1 hold cup 2  00:03.2–00:07.9``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clip4hoi.errors import OptionError
from clip4hoi.options import check_option
from clip4hoi.tracking import HUMAN

Key = tuple[int, int, int]  # (human track, object track, HOI class)


@dataclass(frozen=True)
class TimelineSettings:
    """When a per-frame score counts as an interaction going on."""

    on_score: float = 0.3
    """A segment starts at a frame scoring at least this."""
    off_score: float = 0.15
    """... and goes on through frames scoring at least this (at most ``on_score``)."""
    max_gap: float = 1.0
    """Frames scoring less than ``off_score`` at most this many seconds after the segment's
    last frame scoring at least ``off_score`` are bridged; a later one ends it."""
    min_length: float = 0.5
    """Segments shorter than this many seconds (end − start) are dropped."""

    def check(self) -> None:
        """:class:`~clip4hoi.errors.OptionError` naming the setting that is out of range
        (the rules of :mod:`clip4hoi.options`)."""
        for name in ("on_score", "off_score", "max_gap", "min_length"):
            check_option(name, getattr(self, name))
        if self.off_score > self.on_score:
            raise OptionError("off_score", self.off_score,
                              f"must be at most {{on_score}} {self.on_score}")


@dataclass
class _Open:
    """A segment being built."""

    start: float
    last_on: float          # time of its last frame scoring >= off_score
    peak: float
    total: float            # sum of the scores of its frames up to last_on
    frames: int             # its frames up to last_on
    gap_total: float = 0.0  # scores and count of the frames after last_on (a gap)
    gap_frames: int = 0


@dataclass
class _Track:
    label: str
    first: float
    last: float
    frames: int = 1


@dataclass
class TimelineBuilder:
    """The timeline of one video, built frame by frame (frames in time order)."""

    settings: TimelineSettings = field(default_factory=TimelineSettings)
    file_name: str | None = None

    def __post_init__(self) -> None:
        self.settings.check()
        self.frames = 0
        self.start: float | None = None
        self.end: float | None = None
        self._open: dict[Key, _Open] = {}
        self._segments: dict[Key, list[dict]] = {}
        self._names: dict[Key, tuple[str, str]] = {}      # key -> (verb, object)
        self._tracks: dict[int, _Track] = {}

    def add(self, frame: dict) -> list[dict]:
        """Take the next frame record (one whose ``time`` is missing or earlier than the
        last one's counts as taken at the last one's time); returns the interactions on at
        this frame, longest first: ``human_track``, ``object_track``, ``hoi``, ``verb``,
        ``object``, ``start`` and ``seconds`` (the duration so far), ``score``. An
        interaction is on at a frame of a segment that scores at least ``off_score`` once
        the segment is ``min_length`` long — so every frame it is shown at lies in a
        segment of the final timeline."""
        time = float(frame["time"])
        if self.end is not None and not time >= self.end:    # earlier, or NaN: no time passed
            time = self.end
        elif not math.isfinite(time):
            time = 0.0
        self.frames += 1
        self.start = time if self.start is None else self.start
        self.end = time
        scores: dict[Key, float] = {}
        seen: set[int] = set()
        for det in frame["detections"]:
            h, o = det.get("human_track"), det.get("object_track")
            for track, label in ((h, HUMAN), (o, det["object"])):
                if track is not None and track not in seen:
                    seen.add(track)
                    if track in self._tracks:
                        entry = self._tracks[track]
                        entry.last, entry.frames = time, entry.frames + 1
                    else:
                        self._tracks[track] = _Track(label, time, time)
            if h is None or o is None:
                continue
            key = (int(h), int(o), int(det["hoi"]))
            self._names.setdefault(key, (det["verb"], det["object"]))
            scores[key] = max(scores.get(key, 0.0), float(det["score"]))
        s = self.settings
        active = []
        for key in set(self._open) | {k for k, v in scores.items() if v >= s.on_score}:
            score = scores.get(key, 0.0)
            segment = self._open.get(key)
            if segment is None:                                      # score >= on_score
                segment = self._open[key] = _Open(time, time, score, score, 1)
            elif score >= s.off_score:
                segment.total += segment.gap_total + score
                segment.frames += segment.gap_frames + 1
                segment.gap_total, segment.gap_frames = 0.0, 0
                segment.last_on, segment.peak = time, max(segment.peak, score)
            else:
                segment.gap_total += score
                segment.gap_frames += 1
                if time - segment.last_on > s.max_gap:
                    self._close(key)
                continue
            if time - segment.start >= s.min_length:
                verb, obj = self._names[key]
                active.append({"human_track": key[0], "object_track": key[1], "hoi": key[2],
                               "verb": verb, "object": obj, "start": segment.start,
                               "seconds": round(time - segment.start, 4),
                               "score": round(score, 6)})
        active.sort(key=lambda a: (-a["seconds"], a["human_track"], a["object_track"],
                                   a["hoi"]))
        return active

    def _close(self, key: Key) -> None:
        segment = self._open.pop(key)
        if segment.last_on - segment.start >= self.settings.min_length:
            self._segments.setdefault(key, []).append({
                "start": round(segment.start, 4), "end": round(segment.last_on, 4),
                "peak_score": round(segment.peak, 6),
                "mean_score": round(segment.total / segment.frames, 6),
                "frames": segment.frames})

    def finish(self, complete: bool = True) -> dict:
        """The timeline (the ``NAME.timeline.json`` object, see ``docs/outputs.md``), open
        segments ending at their last frame; ``complete``: whether the frames were the
        whole video (not cut short by an interruption or an error). The builder is not
        used after this."""
        for key in sorted(self._open):
            self._close(key)
        interactions = []
        for key, segments in self._segments.items():
            verb, obj = self._names[key]
            interactions.append({"human_track": key[0], "object_track": key[1], "hoi": key[2],
                                 "verb": verb, "object": obj, "segments": segments})
        interactions.sort(key=lambda i: (i["segments"][0]["start"], i["human_track"],
                                         i["object_track"], i["hoi"]))
        tracks = [{"track": track, "label": t.label, "first": round(t.first, 4),
                   "last": round(t.last, 4), "frames": t.frames}
                  for track, t in sorted(self._tracks.items())]
        return {"file_name": self.file_name, "settings": asdict(self.settings),
                "frames": self.frames,
                "start": None if self.start is None else round(self.start, 4),
                "end": None if self.end is None else round(self.end, 4),
                "complete": complete, "tracks": tracks, "interactions": interactions}


def build_timeline(frames: Iterable[dict], settings: TimelineSettings | None = None,
                   file_name: str | None = None) -> dict:
    """The timeline of a video from all its frame records, oldest first (a pure function:
    the same frames give the same timeline, however they were produced)."""
    builder = TimelineBuilder(settings or TimelineSettings(), file_name)
    for frame in frames:
        builder.add(frame)
    return builder.finish()


def iter_frames(path: str | Path) -> Iterator[tuple[dict, int]]:
    """The complete frame records of a ``NAME.jsonl`` that may have been cut short (a
    killed run), read one at a time, each with the length in bytes of the file up to the
    end of its line: the lines up to the first one that is not whole JSON of a frame
    ending with a newline."""
    complete = 0
    with open(path, "rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                return
            try:
                record = json.loads(line)
            except ValueError:
                return
            if not isinstance(record, dict) or "time" not in record \
                    or not isinstance(record.get("detections"), list):
                return
            complete += len(line)
            yield record, complete


def read_frames(path: str | Path) -> tuple[list[dict], int]:
    """All the complete frame records of a ``NAME.jsonl`` (:func:`iter_frames`) and the
    length in bytes of that complete part (where appending may continue once the rest is
    cut off)."""
    frames: list[dict] = []
    complete = 0
    for record, end in iter_frames(path):
        frames.append(record)
        complete = end
    return frames, complete


def format_time(seconds: float) -> str:
    """``MM:SS.d`` (``H:MM:SS.d`` from one hour), tenths rounded down."""
    tenths = math.floor(seconds * 10 + 1e-6)
    minutes, rest = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    text = f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"
    return f"{hours}:{text}" if hours else text


def interaction_name(interaction: dict) -> str:
    """``person 1 hold cup 2``: the human track, the class and the object track."""
    return (f"{HUMAN} {interaction['human_track']} {interaction['verb']} "
            f"{interaction['object'].replace('_', ' ')} {interaction['object_track']}")


def summary(timeline: dict, limit: int = 20) -> list[str]:
    """One line per segment, in order of start: ``person 1 hold cup 2  00:03.2–00:07.9``;
    at most ``limit`` lines (0: all), then how many were left out."""
    rows = sorted(((segment["start"], segment["end"], interaction_name(interaction))
                   for interaction in timeline["interactions"]
                   for segment in interaction["segments"]), key=lambda r: (r[0], r[2]))
    lines = [f"{name}  {format_time(start)}–{format_time(end)}" for start, end, name in
             (rows[:limit] if limit else rows)]
    if limit and len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more (see the .timeline.json)")
    return lines

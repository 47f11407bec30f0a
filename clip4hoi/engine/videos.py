"""A video's result files: per-frame lines with track ids, the timeline, the drawn video;
videos cut short resume, live sources are read until they end.

    sink = VideoFiles(out, timeline=TimelineSettings(), tracker=TrackerSettings(), run={...})
    source, note = sink.claim(video)    # lock its lines; a resumed video goes on from there
    write_results(predictor([source]), [sink])

For a video ``NAME`` (a file or a live source), :class:`VideoFiles` writes into ``OUT``
(schemas in ``docs/outputs.md``):

* ``NAME.jsonl`` — one line per sampled frame, appended as the frame is done, each line
  whole (one ``write``): the frame's detections with ``human_track``/``object_track`` ids
  (:class:`~clip4hoi.tracking.VideoTracker`, fed the records as written);
* ``NAME.drawn.mp4`` — the frames with the tracked boxes and the interactions going on
  (:func:`~clip4hoi.visualize.draw_tracked_frame`), H.264 with each frame at its own
  time; made in a temporary file and renamed when the video stops;
* ``NAME.timeline.json`` — last, atomically: the segments of every interaction
  (:class:`~clip4hoi.timeline.TimelineBuilder`); ``"complete": true`` marks the video
  done, ``false`` says it stopped early (Ctrl-C, SIGTERM, an unreadable frame);
* ``.NAME.run.json`` — while the video is not done: the options its lines were made with.

Tracking, the timeline, the lines and the drawing run on a background thread, so the model
does not wait for them. **Resume**: a video whose lines are there without a complete
timeline goes on after its last whole line — the torn end of a killed run is cut off, the
earlier frames are decoded again but not detected (:attr:`VideoFile.resume_after`): their
lines are replayed through the tracker (which checks the recorded ids) and the timeline,
and drawn again, so the drawn video and the timeline of a resumed run are those of a run
that was never stopped. The lines are locked (``flock``) while a run writes them: a second
run on the same output folder leaves the video to the first.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from clip4hoi.data.sources import Source, VideoFile
from clip4hoi.engine.results import Results
from clip4hoi.engine.sinks import Sink
from clip4hoi.errors import InputError
from clip4hoi.fileio import write_atomic
from clip4hoi.timeline import TimelineBuilder, TimelineSettings, iter_frames
from clip4hoi.tracking import TrackerSettings, VideoTracker

try:
    import fcntl
except ImportError:   # Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

TIME_BASE = Fraction(1, 10000)
"""Time unit of the drawn video (the lines' times have 4 decimals)."""


def lines_path(out: Path, name: str) -> Path:
    return out / f"{name}.jsonl"


def timeline_path(out: Path, name: str) -> Path:
    return out / f"{name}.timeline.json"


def drawn_path(out: Path, name: str) -> Path:
    return out / f"{name}.drawn.mp4"


def run_path(out: Path, name: str) -> Path:
    """``OUT/.NAME.run.json`` (beside the lines, hidden)."""
    path = lines_path(out, name)
    return path.parent / f".{Path(name).name}.run.json"


def video_is_complete(out: Path, name: str) -> bool:
    """Whether video ``name`` is done in ``out``: its lines are there and its timeline
    says ``complete`` (a stopped or foreign file does not count)."""
    try:
        timeline = json.loads(timeline_path(out, name).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(timeline, dict) and timeline.get("file_name") == name and \
        timeline.get("complete") is True and lines_path(out, name).is_file()


def input_record(source: Source) -> dict | None:
    """What identifies a video file's content for a resume: its size and modification
    time (None for a live source)."""
    if not isinstance(source, VideoFile) or source.live:
        return None
    info = os.stat(source.path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


@dataclass(frozen=True)
class Interrupted:
    """The lines of a video that a run did not finish."""

    lines: int          # whole lines
    last_frame: int     # the frame index of the last whole line
    length: int         # bytes of the whole lines (the rest is cut off)
    run: dict | None    # the options they were made with (``.NAME.run.json``; None: none)


def interrupted_run(out: Path, name: str) -> Interrupted | None:
    """The whole lines of video ``name`` in ``out`` left by a run that did not finish it,
    or None when there are none (no file, or no whole line)."""
    path = lines_path(out, name)
    if not path.is_file():
        return None
    lines, last, length = 0, -1, 0
    for record, end in iter_frames(path):
        lines, last, length = lines + 1, record.get("frame", -1), end
    if not lines:
        return None
    try:
        run = json.loads(run_path(out, name).read_bytes())
    except (OSError, ValueError):
        run = None
    return Interrupted(lines, last, length, run if isinstance(run, dict) else None)


class VideoFiles(Sink):
    """The files of each video (see the module docstring). ``top_k``, ``min_score``: the
    detections kept per frame; ``draw``: interactions listed on a drawn frame;
    ``draw_score``: boxes of detections scoring less are not drawn; ``picture``: write the
    drawn video; ``timeline``, ``tracker``: their settings; ``run``: the options that make
    the lines (a resumed video must have been begun with the same); ``overwrite``: begin
    videos again; ``depth``: frames waiting for the writer thread."""

    def __init__(self, out: Path, top_k: int = 100, min_score: float = 0.0, draw: int = 5,
                 draw_score: float = 0.0, picture: bool = True,
                 timeline: TimelineSettings | None = None,
                 tracker: TrackerSettings | None = None, run: dict | None = None,
                 overwrite: bool = False, depth: int = 8) -> None:
        self.out = out
        self.top_k, self.min_score = top_k, min_score
        self.draw, self.draw_score, self.picture = draw, draw_score, picture
        self.timeline = timeline or TimelineSettings()
        self.tracker = tracker or TrackerSettings()
        self.timeline.check()
        self.tracker.check()
        self.run = json.loads(json.dumps(run or {}))   # as read back from its file
        self.overwrite = overwrite
        self._videos: dict[str, _Video] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip4hoi-video")
        self._pending: list[Future] = []
        self._depth = depth

    # ------------------------------------------------------------------ taking a video

    def claim(self, source: Source) -> tuple[Source | None, str]:
        """Take video ``source`` for this run before its frames are decoded: lock its
        lines, and for a video a run left unfinished cut its lines to the last whole one
        and return it with ``resume_after`` set. Returns ``(source, note)``: ``(None,
        why)`` when it is not to be detected (done, or being written by another run),
        else a note for the log (``""``, or where it resumes). Other sources pass."""
        if not isinstance(source, VideoFile) or source.name in self._videos:
            return source, ""
        if source.live:   # a second recording started within the same second
            source = replace(source, name=_unused_name(self.out, source.name))
        tracker = VideoTracker(source.rate(), self.tracker)   # (a video that cannot be
        path = lines_path(self.out, source.name)               # read fails here, first)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _locked(path)
        if fd is None:
            return None, f"{source.name}: being detected by another run; left to it"
        try:
            if not (self.overwrite or source.live) and video_is_complete(self.out,
                                                                         source.name):
                os.close(fd)
                return None, f"{source.name}: done by another run"
            previous = None if self.overwrite or source.live else \
                interrupted_run(self.out, source.name)
            run = {**self.run, "input": input_record(source)}
            if previous is None:      # begin: no timeline, no lines, then the options
                timeline_path(self.out, source.name).unlink(missing_ok=True)
                os.ftruncate(fd, 0)
                write_atomic(run_path(self.out, source.name), json.dumps(run))
                note = ""
            elif previous.run != run:
                raise InputError(f"{path}: begun with other options or another version of "
                                 f"the video; detect it again with overwrite")
            else:
                os.ftruncate(fd, previous.length)   # a killed run's torn last line
                source = replace(source, resume_after=previous.last_frame)
                note = (f"{source.name}: resuming after frame {previous.last_frame} "
                        f"({previous.lines} frame(s) done)")
        except BaseException:
            os.close(fd)
            raise
        self._videos[source.name] = _Video(self, source, path, fd, tracker,
                                           previous.lines if previous else 0)
        return source, note

    # ------------------------------------------------------------------ the sink

    def start(self, source: Source) -> None:
        if source.kind == "video" and source.name not in self._videos:
            claimed, why = self.claim(source)
            if claimed is None:
                raise InputError(why)

    def write(self, result: Results) -> None:
        video = self._videos.get(result.name)
        if video is None or result.frame is None:
            return
        self._pending.append(self._pool.submit(video.add, result))
        while len(self._pending) > self._depth or (self._pending and self._pending[0].done()):
            self._pending.pop(0).result()   # re-raises the writer's error

    def finish(self, source: Source, error: str | None) -> None:
        video = self._videos.get(source.name)
        if video is None:
            return
        self._drain()
        del self._videos[source.name]
        video.stop(complete=error is None)

    def interrupt(self, source: Source) -> None:
        """Keep what is done of ``source``: its lines, the drawn video so far and a
        timeline that says it is not complete (a file video resumes on the next run)."""
        video = self._videos.pop(source.name, None)
        if video is None:
            return
        with contextlib.suppress(Exception):   # the writer's own error is already raised
            self._drain()
        try:
            video.stop(complete=False)
        except Exception:
            video.release()

    def close(self) -> None:
        try:
            self._drain()
        finally:
            self._pool.shutdown(wait=True)
            for video in self._videos.values():   # taken, never started
                video.release(remove=True)
            self._videos.clear()

    def _drain(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


def _unused_name(out: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when results of that name are there."""
    unused, k = name, 1
    while lines_path(out, unused).exists() or timeline_path(out, unused).exists():
        k += 1
        unused = f"{name}-{k}"
    return unused


def _locked(path: Path) -> int | None:
    """A descriptor of ``path`` (created if missing) open for appending, locked for this
    run, or None when another run holds it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:   # a file system without locks (some network mounts): go on
        pass
    return fd


def in_use(path: Path) -> bool:
    """Whether another run holds the lock of the lines ``path``."""
    if fcntl is None or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


class _Video:
    """One video being written: its locked lines, tracker, timeline and drawn video."""

    def __init__(self, sink: VideoFiles, source: VideoFile, path: Path, fd: int,
                 tracker: VideoTracker, replayed: int) -> None:
        self.sink, self.source, self.path, self.fd = sink, source, path, fd
        self.tracker = tracker
        self.builder = TimelineBuilder(sink.timeline, source.name)
        # The lines of the earlier run, read as their frames come by again.
        self.replay: Iterator[dict] = (record for record, _ in itertools.islice(
            iter_frames(path), replayed)) if replayed else iter(())
        self.to_replay = replayed
        self.frames = 0          # lines in the file, taken by the timeline
        self.movie: tuple[Any, Any, Path] | None = None
        self.last_pts = -1

    def add(self, result: Results) -> None:
        """One frame (on the writer thread): its line (a new one, or the recorded one of a
        frame done), tracked, into the timeline, drawn."""
        if result.done:
            line = next(self.replay, None)
            if line is None or line.get("frame") != result.frame:
                raise self._mismatch(result.frame, line)
            self.to_replay -= 1
            try:
                self.tracker.replay([line])
            except ValueError as error:
                raise InputError(f"{self.path}: {error}; detect the video again with "
                                 f"overwrite") from None
        else:
            if self.to_replay:
                raise self._mismatch(result.frame, next(self.replay, None))
            line = result.to_json(self.sink.top_k, self.sink.min_score)
            line["detections"] = self.tracker.track_records(line["time"], line["detections"])
            self._append((json.dumps(line) + "\n").encode())
        active = self.builder.add(line)
        self.frames += 1
        if self.sink.picture and result.pixels is not None:
            self._draw(result, line, active)

    def _mismatch(self, frame: int | None, line: dict | None) -> InputError:
        recorded = "no line" if line is None else f"frame {line.get('frame')}"
        return InputError(f"{self.path}: its lines are not of this video (decoded frame "
                          f"{frame}, {recorded} in the file); detect the video again with "
                          f"overwrite")

    def _append(self, data: bytes) -> None:
        """One whole line at the end of the file (``O_APPEND``; a short write goes on)."""
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(self.path)) from error

    def _draw(self, result: Results, line: dict, active: list[dict]) -> None:
        from PIL import Image

        from clip4hoi.visualize import draw_tracked_frame

        picture = Image.fromarray(result.pixels.permute(1, 2, 0).numpy())
        boxes = [d for d in line["detections"] if d["score"] >= self.sink.draw_score]
        drawn = draw_tracked_frame(picture, boxes, active, max_lines=self.sink.draw)
        try:
            self._encode(drawn, line["time"])
        except OSError as error:
            path = self.movie[2] if self.movie else self.path
            raise OSError(error.errno, error.strerror, str(path)) from error

    def _encode(self, drawn: Any, time: float) -> None:
        import av

        if self.movie is None:
            final = drawn_path(self.sink.out, self.source.name)
            path = final.parent / f".{final.name}.{secrets.token_hex(4)}.tmp.mp4"
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            container = av.open(str(path), "w", format="mp4")
            try:
                rate = Fraction(min(max(self.source.rate(), 1.0), 1000.0)).limit_denominator(
                    1001)
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height = drawn.width // 2 * 2, drawn.height // 2 * 2
                stream.pix_fmt = "yuv420p"
                stream.time_base = stream.codec_context.time_base = TIME_BASE
            except BaseException:
                container.close()
                path.unlink(missing_ok=True)
                raise
            self.movie = (container, stream, path)
        container, stream, _ = self.movie
        if drawn.size != (stream.width, stream.height):   # a stream that changed size
            drawn = drawn.crop((0, 0, stream.width, stream.height)) if \
                drawn.width >= stream.width and drawn.height >= stream.height else \
                drawn.resize((stream.width, stream.height))
        frame = av.VideoFrame.from_ndarray(np.asarray(drawn), format="rgb24")
        self.last_pts = frame.pts = max(round(time / TIME_BASE), self.last_pts + 1)
        frame.time_base = TIME_BASE
        for packet in stream.encode(frame):
            container.mux(packet)

    # ------------------------------------------------------------------ stopping

    def stop(self, complete: bool) -> None:
        """Write what is done (on the main thread, the writer idle): the drawn video, then
        the timeline (``complete``: the video was read to its end) — or, when no frame was
        done at all, nothing: the video is not done."""
        out, name = self.sink.out, self.source.name
        try:
            if self.to_replay and complete:   # the video has fewer frames than its lines
                raise self._mismatch(None, next(self.replay, None))
            for line in self.replay:    # stopped before every done frame came by again
                self.builder.add(line)
                self.frames, self.to_replay = self.frames + 1, self.to_replay - 1
            if not self.frames:
                self.release(remove=True)
                return
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
            if self.movie is not None:
                container, stream, path = self.movie
                self.movie = None
                try:
                    for packet in stream.encode():
                        container.mux(packet)
                finally:
                    container.close()
                os.replace(path, drawn_path(out, name))
            timeline = self.builder.finish(complete)
            write_atomic(timeline_path(out, name), json.dumps(timeline, indent=1))
            if complete:
                run_path(out, name).unlink(missing_ok=True)
        finally:
            self.release()

    def release(self, remove: bool = False) -> None:
        """Unlock the lines, remove the temporary drawn video; ``remove``: and, when they
        hold no frame, the lines and the run's options (nothing was done)."""
        if self.movie is not None:
            container, _, path = self.movie
            self.movie = None
            with contextlib.suppress(Exception):
                container.close()
            path.unlink(missing_ok=True)
        if remove and not self.frames and not self.to_replay and self.fd >= 0:
            self.path.unlink(missing_ok=True)
            run_path(self.sink.out, self.source.name).unlink(missing_ok=True)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

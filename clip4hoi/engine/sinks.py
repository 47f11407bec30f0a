"""Where results go: files per image and per video, the combined ``detections.json``.

:func:`write_results` hands the stream of :class:`~clip4hoi.engine.results.Results` of
:class:`~clip4hoi.engine.predictor.Predictor` to sinks, each told when a source starts,
each picture's result, and when the source ends (with the error that ended it, if any) —
or that the run stopped in the middle of it (Ctrl-C, SIGTERM, a failing writer):

* :class:`ImageFiles` — ``OUT/<name>.drawn.jpg`` and then ``OUT/<name>.json`` per image,
  drawn and written on a background thread (the model never waits for JPEG encoding or
  the disk);
* :class:`~clip4hoi.engine.videos.VideoFiles` — per video ``OUT/<name>.jsonl`` (a line per
  frame, appended as it is done, with track ids), ``OUT/<name>.drawn.mp4`` and
  ``OUT/<name>.timeline.json`` (:mod:`clip4hoi.engine.videos`);
* :func:`write_combined` — ``OUT/detections.json``: every finished image result as one
  ``DETS.json`` for ``clip4hoi eval``, read back from the per-image files (so earlier runs'
  and other ranks' results count).

Every file is written atomically (:func:`clip4hoi.fileio.write_atomic`, or a temporary
file renamed into place) — but a video's lines, which grow a whole line at a time: a crash
leaves the old file or the new one, never a torn one. The schemas are in
``docs/outputs.md``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from clip4hoi.data.metadata import HOIClassSet
from clip4hoi.data.sources import Source
from clip4hoi.engine.results import Results
from clip4hoi.fileio import sweep_temp_files, write_atomic

COMBINED_NAME = "detections.json"


class Sink:
    """Receives the results of a run, source by source (every method optional)."""

    def start(self, source: Source) -> None:
        """``source``'s first result follows."""

    def write(self, result: Results) -> None:
        """One picture's result (never a failed one)."""

    def finish(self, source: Source, error: str | None) -> None:
        """``source`` is done; ``error``: why it stopped early (then it failed)."""

    def interrupt(self, source: Source) -> None:
        """The run stops in the middle of ``source`` (Ctrl-C, SIGTERM, an error of the run
        itself, which is raised next): keep what is done of it."""

    def close(self) -> None:
        """The run is over (also after an exception): release what is held."""


def write_results(results: Iterable[Results], sinks: Sequence[Sink]) -> list[str]:
    """Feed ``results`` (in source order, as a predictor yields them) to ``sinks``.
    Returns the errors that stopped sources (one message per failed source)."""
    current: Source | None = None
    error: str | None = None
    failures: list[str] = []

    def finish() -> None:
        nonlocal current
        failures.extend([error] if error is not None else [])
        for sink in sinks:
            sink.finish(current, error)
        current = None

    try:
        for result in results:
            if result.source is not current:
                if current is not None:
                    finish()
                current, error = result.source, None
                for sink in sinks:
                    sink.start(current)
            if result.error is not None:
                error = result.error
                continue
            for sink in sinks:
                sink.write(result)
        if current is not None:
            finish()
    except BaseException:
        if current is not None:
            for sink in sinks:
                with contextlib.suppress(Exception):   # the stop itself is raised
                    sink.interrupt(current)
        raise
    finally:
        for sink in sinks:
            sink.close()
    return failures


# ----------------------------------------------------------------------------- images


class ImageFiles(Sink):
    """``OUT/<name>.json`` and, unless ``picture`` is off, ``OUT/<name>.drawn.jpg`` per
    image (:meth:`Results.save`), on one background thread; at most ``depth`` results
    wait in memory. ``top_k``, ``min_score``: the detections kept; ``draw``,
    ``draw_score``: the pairs drawn."""

    def __init__(self, out: Path, top_k: int = 100, min_score: float = 0.0, draw: int = 5,
                 draw_score: float = 0.0, picture: bool = True, depth: int = 8) -> None:
        self.out = out
        self.options = {"top_k": top_k, "min_score": min_score, "draw": draw,
                        "draw_score": draw_score, "picture": picture}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip4hoi-writer")
        self._pending: list[Future] = []
        self._depth = depth

    def write(self, result: Results) -> None:
        if result.frame is not None:
            return
        self._pending.append(self._pool.submit(result.save, self.out, **self.options))
        while len(self._pending) > self._depth or (self._pending and self._pending[0].done()):
            self._pending.pop(0).result()   # re-raises the writer's error

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)


def image_is_complete(path: Path, name: str) -> bool:
    """Whether ``path`` holds a finished result of image ``name`` (an empty, torn or
    foreign file does not count, so the image is detected again)."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("file_name") == name and \
        isinstance(data.get("detections"), list)


# ----------------------------------------------------------------------------- all images


def dets_record(name: str, detections: list[dict], classes: HOIClassSet) -> dict:
    """One image's ``DETS.json`` record (``clip4hoi eval``'s format) from its records of
    :meth:`Results.records` (boxes already 0-based inclusive indices). V-COCO class sets
    also get ``actions`` (the class set's verb ids: V-COCO action-role ids)."""
    record = {"file_name": name, "human_boxes": [d["human_box"] for d in detections],
              "object_boxes": [d["object_box"] for d in detections],
              "hoi": [d["hoi"] for d in detections],
              "scores": [d["score"] for d in detections]}
    if classes.name == "vcoco":
        record["actions"] = [classes.verb_ids[d["hoi"]] for d in detections]
    return record


def write_combined(out: Path, sources: Sequence[Source], classes: HOIClassSet,
                   mode: str) -> Path:
    """``OUT/detections.json``: the finished image results of ``sources`` (this run's,
    earlier runs' and other ranks') as one ``{"classes", "mode", "images": [...]}``
    file, in the order of ``sources``."""
    images = []
    for source in sources:
        path = out / f"{source.name}.json"
        if image_is_complete(path, source.name):
            detections = json.loads(path.read_text())["detections"]
            images.append(dets_record(source.name, detections, classes))
    payload = {"classes": classes.name, "mode": mode, "images": images}
    return write_atomic(out / COMBINED_NAME, json.dumps(payload))


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>json|jsonl|drawn\.jpg|drawn\.mp4)"
                        r"\.[^.]+\.tmp(\.mp4)?$")


def remove_temporary_files(out: Path) -> int:
    """Delete the temporary files that killed runs left in ``out`` and below it: those of
    :func:`~clip4hoi.fileio.write_atomic` whose process no longer runs
    (:func:`~clip4hoi.fileio.sweep_temp_files`), and ``.NAME.XXXX.tmp`` beside a result file
    of these sinks (a drawn video's only when no other run is writing that video); run it
    before this run writes there. Returns how many."""
    from clip4hoi.engine.videos import in_use, lines_path

    found = list(out.rglob(".*.tmp*"))
    removed = sum(len(sweep_temp_files(folder)) for folder in {p.parent for p in found})
    stale = []
    for path in found:
        match = _TEMPORARY.match(path.name)
        if match and path.exists() and not (
                match["kind"] == "drawn.mp4" and in_use(lines_path(path.parent, match["name"]))):
            stale.append(path)
    for path in stale:
        path.unlink(missing_ok=True)
    return removed + len(stale)

"""``clip4hoi detect`` as a job: images, folders and videos in, result files out, on one
process or many.

    job = DetectJob(options)   # check the options, scan the inputs (no torch yet)
    job.start()                # join the ranks, choose the mode, load the model
    summary = job.run(log)     # detect this rank's share; rank 0 writes detections.json

The pictures go through the one pipeline (:class:`~clip4hoi.engine.predictor.Predictor`)
into the sinks of :mod:`clip4hoi.engine.sinks`: per image ``OUT/<name>.json`` (and
``.drawn.jpg``), per video ``OUT/<name>.jsonl`` with track ids, ``.timeline.json`` and
``.drawn.mp4`` (:mod:`clip4hoi.engine.videos`), and ``OUT/detections.json`` with every
image's detections in the format ``clip4hoi eval`` reads (``docs/outputs.md``). A live
source (a URL, a camera) is read until it ends or the run is stopped (Ctrl-C, SIGTERM):
what is done is written, the timeline too.

A run resumes: an input whose result file exists and parses is skipped (``overwrite``
redoes it); a video cut short goes on after its last whole line, if the options that make
its lines are those it was begun with (checked before the model loads). Under
``torchrun`` every rank scans the same inputs and takes its share —
image ``i`` and video ``j`` go to the ranks ``i % world_size`` and ``j % world_size`` —
on its own GPU (``LOCAL_RANK``) or its own share of the CPU cores; after all ranks are
done, rank 0 writes the combined file from the per-image files. Rank 0 first removes the
temporary files that a killed run left, while the other ranks wait, so a job restarted by
``torchrun --max-restarts`` resumes with every file valid. The output folder must be
shared by the ranks (one machine, or a shared file system).

Nothing here names a command-line flag: options are named by their field names
(:mod:`clip4hoi.options`), and ``cli.py`` words them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from clip4hoi.data.sources import Source, VideoFile, require_pyav, scan_inputs
from clip4hoi.errors import InputError, OptionError, sigterm_raises
from clip4hoi.options import DetectOptions, check_checkpoint

LINE_OPTIONS = ("checkpoint", "mode", "classes", "boxes", "random_weights", "top_k",
                "min_score", "every", "fps", "test_scale", "max_size", "lost_seconds",
                "track_buffer", "overrides")
"""The options that make a video's lines (a video cut short resumes only with the same);
the drawing and the timeline are made again from the lines."""

RANK_TIMEOUT = timedelta(days=7)
"""How long the ranks that are done wait for the others (videos are shared by file, so
one rank can take hours longer)."""


@dataclass
class Summary:
    """What a run did (on rank 0: all ranks together)."""

    done: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    combined: Path | None = None


class AnnotatedBoxes:
    """The annotated humans and objects of an annotation file as the proposals of each
    image (found by file name), for checkpoints trained with ``detector.use_gt_boxes``."""

    def __init__(self, path: str) -> None:
        from clip4hoi.data.custom import load_annotations

        self.annotations = load_annotations(path)   # HICO-DET or custom format
        self.index = self.annotations.index()
        self.source = path
        self.objects = self.annotations.objects      # ids of the detect run's vocabulary

    def use_vocabulary(self, vocabulary: tuple[str, ...]) -> None:
        """Give the objects as ids of ``vocabulary`` (the detect run's class set's; a
        custom file numbers its objects its own way), by name; -1 where absent."""
        import numpy as np

        from clip4hoi.data.metadata import COCO_OBJECTS

        own = self.annotations.class_set.object_vocabulary if self.annotations.classes \
            else COCO_OBJECTS   # a HICO-DET file: COCO-80 ids
        table = np.array([vocabulary.index(o) if o in vocabulary else -1 for o in own])
        self.objects = [table[o] for o in self.annotations.objects]

    def __call__(self, source: Source) -> dict:
        """The boxes of image ``source`` (continuous xyxy pixels) as a model target."""
        import torch

        key = source.name if source.name in self.index else Path(source.name).name
        if key not in self.index:
            raise InputError(f"{source.path}: not an image of the annotation file "
                             f"{self.source}")
        i = self.index[key]
        ann = self.annotations
        return {"boxes_h": torch.tensor(ann.boxes_h[i], dtype=torch.float32),
                "boxes_o": torch.tensor(ann.boxes_o[i], dtype=torch.float32),
                "object": torch.tensor(self.objects[i], dtype=torch.long)}


class Progress:
    """The run's counts and messages as a sink: a progress bar over the images (on
    ``show``), one line per failed input, per video done or stopped (with its timeline's
    summary)."""

    def __init__(self, log: IO[str], out: Path, images: int, show: bool) -> None:
        from tqdm import tqdm

        self.log, self.out = log, out
        self.summary = Summary()
        self.bar = tqdm(total=images, desc="detect", unit="img", file=log,
                        disable=not show or images < 2)
        self.started = 0.0
        self.frames = self.replayed = 0

    def note(self, text: str) -> None:
        self.bar.write(text, file=self.log)

    def start(self, source: Source) -> None:
        self.started, self.frames, self.replayed = time.perf_counter(), 0, 0

    def write(self, result: Any) -> None:
        if result.done:
            self.replayed += 1
        else:
            self.frames += 1

    def finish(self, source: Source, error: str | None) -> None:
        if source.kind == "image":
            self.bar.update(1)
        if error is not None:
            self.summary.errors.append(error)
            self.note(f"error: {error}")
        else:
            self.summary.done += 1
        if source.kind == "video":
            self._video(source, "" if error is None else "stopped by the error above; ")

    def interrupt(self, source: Source) -> None:
        if source.kind == "video":
            self._video(source, "interrupted; " + (
                "" if getattr(source, "live", False) else "run again to continue; "))

    def _video(self, source: Source, stopped: str) -> None:
        """The video's line (frames, speed, files) and its timeline's summary."""
        from clip4hoi.engine.videos import lines_path, timeline_path
        from clip4hoi.timeline import summary

        seconds = time.perf_counter() - self.started
        try:
            timeline = json.loads(timeline_path(self.out, source.name).read_bytes())
        except (OSError, ValueError):
            return       # nothing was done
        earlier = f", {self.replayed} done before" if self.replayed else ""
        self.note(f"{source.name}: {stopped}{self.frames} frame(s) detected in {seconds:.1f} "
                  f"s ({self.frames / max(seconds, 1e-9):.2f} frames/s){earlier} -> "
                  f"{lines_path(self.out, source.name)}, "
                  f"{timeline_path(self.out, source.name).name}")
        lines = summary(timeline)
        self.note(f"{source.name}: {len(timeline['tracks'])} track(s), "
                  f"{sum(len(i['segments']) for i in timeline['interactions'])} interaction "
                  f"segment(s)" + (":" if lines else ""))
        for line in lines:
            self.note(f"  {line}")

    def close(self) -> None:
        self.bar.close()


class DetectJob:
    """One ``clip4hoi detect`` run (see the module docstring)."""

    def __init__(self, options: DetectOptions) -> None:
        """Check the options and scan the inputs: what can fail before minutes of model
        loading fails here (no torch is imported)."""
        self.options = options.check()
        self.out = Path(options.out)
        if self.out.exists() and not self.out.is_dir():
            raise OptionError("out", self.out, "is a file; give a folder for the results")
        self.scan = scan_inputs(options.inputs, self.out, every=options.every,
                                fps=options.fps, exif=options.boxes is None)
        if self.scan.videos:
            from clip4hoi.tracking import require_trackers

            require_pyav()
            require_trackers()
            self._check_resumable()
        check_checkpoint(options.checkpoint)
        if options.boxes and not Path(options.boxes).is_file():
            raise OptionError("boxes", options.boxes, "no such file")

    def line_options(self) -> dict:
        """The options that make a video's lines (:data:`LINE_OPTIONS`), as recorded."""
        return {name: getattr(self.options, name) for name in LINE_OPTIONS}

    def _check_resumable(self) -> None:
        """Each video cut short by an earlier run (lines, no complete timeline) can go on:
        begun with the same options, from the same file. Else :class:`OptionError` naming
        the option that differs (or ``inputs``, ``out``), before the model loads."""
        from clip4hoi.engine.videos import input_record, interrupted_run, video_is_complete

        if self.options.overwrite:
            return
        line_options = json.loads(json.dumps(self.line_options()))
        for video in self.scan.videos:
            if video.live or video_is_complete(self.out, video.name):
                continue
            previous = interrupted_run(self.out, video.name)
            if previous is None:
                continue
            if previous.run is None:
                raise OptionError("out", self.out, f"holds the lines of {video.name} but not "
                                  f"the record of the run that made them (.{Path(video.name).name}"
                                  f".run.json): move them away, or give {{overwrite}} to "
                                  f"detect the video again")
            for name, value in line_options.items():
                if previous.run.get(name) != value:
                    raise OptionError(name, value, f"differs from the run that began "
                                      f"{video.name} and was cut short ({name} "
                                      f"{previous.run.get(name)!r}): give the same to go on "
                                      f"with it, or {{overwrite}} to begin it again")
            if previous.run.get("input") != input_record(video):
                raise OptionError("inputs", video.path, "changed since a run began it and was "
                                  "cut short: give {overwrite} to detect it again")

    def start(self) -> None:
        """Join the ranks, resolve the device and the mode, build the model and resolve
        the classes (missing weights: :class:`~clip4hoi.errors.WeightsUnavailableError`)."""
        from clip4hoi.devices import parse_device
        from clip4hoi.engine.backend import build_backend, resolve_mode
        from clip4hoi.engine.distributed import init_distributed, share_cpu_cores
        from clip4hoi.engine.predictor import default_batch_size, set_cpu_threads

        options = self.options
        device = parse_device(options.device, local_rank=int(os.environ.get("LOCAL_RANK", 0)))
        export = None
        if options.onnx is not None:
            from clip4hoi.engine.export import load_onnx

            export = load_onnx(options.onnx)
        self.mode, self.reason = resolve_mode(options.mode, options.checkpoint, str(device),
                                              options.overrides, export and export.mode)
        self.random_weights = options.random_weights or bool(export and export.random_weights)
        self.out.mkdir(parents=True, exist_ok=True)  # OSErrors: exit 4 (disk, permission) or 2
        self.info = init_distributed(str(device), timeout=RANK_TIMEOUT)
        if self.info.device.type == "cpu":
            set_cpu_threads(options.threads, share_cpu_cores(self.info.local_rank))
        self.batch_size = options.batch_size or default_batch_size(device)
        self.boxes = AnnotatedBoxes(options.boxes) if options.boxes else None
        self.backend = build_backend(self.mode, options.checkpoint, self.info.device,
                                     options.random_weights, options.overrides,
                                     boxes=self.boxes is not None, min_size=options.test_scale,
                                     max_size=options.max_size, precision=options.precision,
                                     onnx=export)
        if self.backend.uses_boxes and self.boxes is None:
            raise OptionError("boxes", None, f"{options.checkpoint} was trained with "
                              f"detector.use_gt_boxes (the annotated boxes as proposals): give "
                              f"the annotation file, or override detector.use_gt_boxes=false "
                              f"to use the detector's boxes")
        self.classes = self.backend.resolve_classes(options.classes)
        if self.boxes is not None:
            self.boxes.use_vocabulary(self.classes.object_vocabulary)

    def pending(self) -> tuple[list[Source], int]:
        """This rank's share of the inputs that are not done yet, and how many of its share
        are done."""
        info, out, overwrite = self.info, self.out, self.options.overwrite
        from clip4hoi.engine.sinks import image_is_complete
        from clip4hoi.engine.videos import video_is_complete

        images = self.scan.images[info.rank::info.world_size]
        videos = self.scan.videos[info.rank::info.world_size]
        todo = [s for s in images if overwrite or not image_is_complete(
            out / f"{s.name}.json", s.name)]
        todo += [s for s in videos if overwrite or s.live or not video_is_complete(
            out, s.name)]
        return todo, len(images) + len(videos) - len(todo)

    def run(self, log: IO[str]) -> Summary:
        """Detect this rank's pending inputs; rank 0 then writes ``detections.json`` and
        returns the summary of all ranks (the others their own)."""
        from clip4hoi.engine.distributed import barrier, gather_to_main
        from clip4hoi.engine.predictor import Predictor
        from clip4hoi.engine.sinks import (
            ImageFiles,
            remove_temporary_files,
            write_combined,
            write_results,
        )
        from clip4hoi.engine.videos import VideoFiles

        todo, skipped = self.pending()
        if self.info.is_main:   # before any rank writes: the leftovers of a killed run
            remove_temporary_files(self.out)
            self._encode(todo, log)
        barrier()
        if not self.info.is_main:
            self._encode(todo, log)
        options = self.options
        kept = {"top_k": options.top_k, "min_score": options.min_score, "draw": options.draw,
                "draw_score": options.draw_score, "picture": not options.no_draw}
        progress = Progress(log, self.out, sum(s.kind == "image" for s in todo),
                            self.info.is_main)
        predictor = Predictor(self.backend, self.classes, batch_size=self.batch_size,
                              workers=options.workers, targets=self.boxes,
                              keep_pixels=not options.no_draw)
        videos = VideoFiles(self.out, **kept, timeline=options.timeline_settings(),
                            tracker=options.tracker_settings(), run=self.line_options(),
                            overwrite=options.overwrite)
        claimed = _claimed(todo, videos, progress)
        with sigterm_raises():
            write_results(predictor(claimed), [ImageFiles(self.out, **kept), videos,
                                               progress])
        summary = progress.summary
        summary.skipped += skipped
        barrier()   # every rank's files are written
        gathered = gather_to_main(summary)
        if not self.info.is_main:
            return summary
        total = Summary(sum(s.done for s in gathered), sum(s.skipped for s in gathered),
                        [e for s in gathered for e in s.errors])
        if self.scan.images:
            total.combined = write_combined(self.out, self.scan.images, self.classes,
                                            self.mode)
        return total

    def _encode(self, todo: list[Source], log: IO[str]) -> None:
        if todo:
            start = time.perf_counter()
            self.backend.encode_classes(self.classes)
            print(f"{len(self.classes)} class embeddings ready in "
                  f"{time.perf_counter() - start:.1f} s", file=log)


def _claimed(sources: Iterable[Source], videos: Any, progress: Progress) -> Iterator[Source]:
    """``sources``, each video claimed (:meth:`VideoFiles.claim`) when the pipeline comes to
    it: a video done or being written by another run meanwhile is left out (counted as
    skipped), a resumed one comes with where it goes on."""
    for source in sources:
        if not isinstance(source, VideoFile):
            yield source
            continue
        try:
            claimed, note = videos.claim(source)
        except InputError as error:
            progress.summary.errors.append(str(error))
            progress.note(f"error: {error}")
            continue
        if note:
            progress.note(note)
        if claimed is None:
            progress.summary.skipped += 1
            continue
        yield claimed

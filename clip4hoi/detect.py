"""The run loop of ``clip4hoi detect``: images, folders and videos in, result files out.

    inputs ─ scan (files, folders recursively, symlinks followed once) ─┬─ images ─┐
                                                                        └─ videos ─┤
    DataLoader workers: decode + resize ─ batches ─ HOIDetector.detect (main thread)
                                                     └─ writer thread: draw, JSON, atomic

Per image ``OUT/<name>.json`` (and ``OUT/<name>.drawn.jpg``), per video
``OUT/<name>.jsonl`` (and ``OUT/<name>.drawn.mp4``), and ``OUT/detections.json`` with every
image's detections in the format ``clip4hoi eval`` reads. ``<name>`` is the input's path
relative to its folder, suffix included (``a.jpg`` and ``a.png`` stay apart). The schemas
are in ``docs/outputs.md``.

A run resumes: an input whose result file exists and parses is skipped (``overwrite``
redoes it). Every file is written atomically (a unique temporary file in the same folder,
fsync, rename), never over an input; an output folder inside an input folder is left out
of the scan, and an output folder equal to an input folder is refused.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from clip4hoi.errors import EXIT_OK, EXIT_PARTIAL, EnvironmentFault, InputError
from clip4hoi.fileio import same_file, write_atomic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
COMBINED_NAME = "detections.json"


@dataclass
class DetectOptions:
    """What ``clip4hoi detect`` was asked to do (the command-line flags)."""

    inputs: list[str]
    out: str = "detections"
    checkpoint: str | None = None
    mode: str = "auto"
    classes: str | None = None
    boxes: str | None = None
    random_weights: bool = False
    device: str = "auto"
    batch_size: int = 0
    workers: int = -1
    overwrite: bool = False
    top_k: int = 100
    min_score: float = 0.0
    draw: int = 5
    draw_score: float = 0.0
    no_draw: bool = False
    every: int = 1
    fps: float = 0.0
    test_scale: int = 800
    max_size: int = 1333
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DetectOptions:
        """From the parsed ``clip4hoi detect`` arguments."""
        names = set(cls.__dataclass_fields__) - {"overrides"}
        return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)},
                   overrides=list(args.set or []))

    def check(self) -> None:
        """Reject out-of-range values before anything is loaded."""
        for name in ("top_k", "draw"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must be 0 or more, got "
                                 f"{getattr(self, name)}")
        if self.batch_size < 0:
            raise InputError(f"--batch-size must be 1 or more, got {self.batch_size}")
        if self.every < 1:
            raise InputError(f"--every must be 1 or more, got {self.every}")
        if self.fps < 0:
            raise InputError(f"--fps must be positive, got {self.fps}")
        if self.test_scale < 1 or self.max_size <= self.test_scale:
            raise InputError(f"--test-scale {self.test_scale} must be at least 1 and below "
                             f"--max-size {self.max_size}")


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Item:
    """One input file and its output name (its path relative to its input folder)."""

    path: Path
    name: str


@dataclass
class Scan:
    """What the inputs hold: images, videos, and files of other types by suffix."""

    images: list[Item]
    videos: list[Item]
    unknown: Counter

    def describe_unknown(self) -> str:
        """``"3 files of other types left out (.heic 2, .txt 1)"`` or ``""``."""
        if not self.unknown:
            return ""
        kinds = ", ".join(f"{suffix or '(none)'} {n}" for suffix, n in
                          self.unknown.most_common())
        return f"{sum(self.unknown.values())} file(s) of other types left out ({kinds})"


def _walk(folder: Path, skip: Path | None) -> list[Path]:
    """Every file under ``folder``, sorted, following symlinked folders once each (loop
    protection by device and inode), leaving out ``skip`` (the output folder)."""
    seen: set[tuple[int, int]] = set()
    files: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        here = Path(root)
        info = here.stat()
        if (info.st_dev, info.st_ino) in seen or (skip is not None and same_file(here, skip)):
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs.sort()
        files += [here / name for name in names]
    return sorted(files)


def scan_inputs(inputs: list[str], out: Path) -> Scan:
    """Images and videos of ``inputs`` (files and folders); ``InputError`` for a missing
    input, an output folder equal to an input folder, two inputs with one output name, or
    no image or video at all."""
    images: list[Item] = []
    videos: list[Item] = []
    unknown: Counter = Counter()
    names: dict[str, Path] = {}
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            if same_file(path, out):
                raise InputError(f"--out {out} is the input folder {text}: the results would "
                                 f"mix with the inputs; choose another --out")
            files = [(file, file.relative_to(path).as_posix()) for file in _walk(path, out)]
        elif path.is_file():
            files = [(path, path.name)]
        else:
            raise InputError(f"{text}: no such file or directory")
        for file, name in files:
            suffix = file.suffix.lower()
            kind = images if suffix in IMAGE_SUFFIXES else videos if suffix in VIDEO_SUFFIXES \
                else None
            if kind is None:
                if not file.name.startswith("."):
                    unknown[suffix] += 1
                continue
            if name in names:
                if same_file(names[name], file):
                    continue
                raise InputError(f"{names[name]} and {file} would both write {out / name}"
                                 f".json; detect them in separate runs with different --out")
            names[name] = file
            kind.append(Item(file, name))
    if not images and not videos:
        extra = Scan([], [], unknown).describe_unknown()
        raise InputError(f"no images or videos found in {' '.join(inputs)}"
                         + (f"; {extra}" if extra else ""))
    return Scan(images, videos, unknown)


def result_is_complete(path: Path, name: str, key: str = "detections") -> bool:
    """Whether ``path`` holds a finished result of input ``name`` (an empty, torn or
    foreign file does not count, so the input is detected again)."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("file_name") == name and \
        isinstance(data.get(key), list)


def video_is_complete(path: Path, name: str) -> bool:
    """Whether the JSON-lines file ``path`` holds a finished result of video ``name`` (it
    is renamed into place only when the whole video is done)."""
    try:
        lines = path.read_text().splitlines()
        records = [json.loads(line) for line in lines]
    except (OSError, ValueError):
        return False
    return all(isinstance(r, dict) and r.get("file_name") == name for r in records)


# ----------------------------------------------------------------------------- writing


class Writer:
    """Draws and writes results on a background thread, so the model never waits for
    JPEG encoding or the disk; at most ``depth`` results wait in memory."""

    def __init__(self, depth: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip4hoi-writer")
        self._pending: list[Future] = []
        self._depth = depth

    def submit(self, function: Any, *args: Any) -> None:
        """Run ``function(*args)`` in order after the earlier ones; re-raises their errors."""
        self._pending.append(self._pool.submit(function, *args))
        while len(self._pending) > self._depth or (self._pending and self._pending[0].done()):
            self._pending.pop(0).result()

    def close(self) -> None:
        """Wait for everything submitted (re-raising the first error)."""
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)


def save_image_result(out: Path, item: Item, payload: dict, original: Any | None,
                      options: DetectOptions) -> None:
    """``OUT/<name>.drawn.jpg`` (unless ``no_draw``), then ``OUT/<name>.json`` — last,
    because its presence marks the image as done."""
    from PIL import Image

    from clip4hoi.visualize import draw_detections

    if original is not None:
        picture = Image.fromarray(original.permute(1, 2, 0).numpy())
        buffer = io.BytesIO()
        draw_detections(picture, payload["detections"], max_pairs=options.draw,
                        min_score=options.draw_score).save(buffer, format="JPEG", quality=90)
        write_atomic(out / f"{item.name}.drawn.jpg", buffer.getvalue())
    write_atomic(out / f"{item.name}.json", json.dumps(payload, indent=1))


def write_combined(out: Path, items: list[Item], classes: Any, mode: str) -> Path:
    """``OUT/detections.json``: every finished image result of ``items`` (this run's and
    earlier ones') as one ``{"images": [...]}`` file for ``clip4hoi eval``, file names
    relative to the input folder. V-COCO class sets also get ``actions`` (the class set's
    verb ids, V-COCO action-role ids)."""
    images = []
    vcoco = classes.name == "vcoco"
    for item in items:
        path = out / f"{item.name}.json"
        if not result_is_complete(path, item.name):
            continue
        detections = json.loads(path.read_text())["detections"]
        record = {"file_name": item.name,
                  "human_boxes": [d["human_box"] for d in detections],
                  "object_boxes": [d["object_box"] for d in detections],
                  "hoi": [d["hoi"] for d in detections],
                  "scores": [d["score"] for d in detections]}
        if vcoco:
            record["actions"] = [classes.verb_ids[d["hoi"]] for d in detections]
        images.append(record)
    payload = {"classes": classes.name, "mode": mode, "images": images}
    return write_atomic(out / COMBINED_NAME, json.dumps(payload))


# ----------------------------------------------------------------------------- images


class ImageReader:
    """Map-style dataset over image items for a ``DataLoader``: decodes and resizes in the
    worker processes. Item ``i`` is ``(i, original uint8 [3, H, W], model input, target,
    None)``, or ``(i, None, None, None, message)`` when the image cannot be used."""

    def __init__(self, items: list[Item], transform: Any, boxes: Any | None = None) -> None:
        self.items = items
        self.transform = transform  # the detector's HOITransform (not the model: workers
        self.boxes = boxes          # may be spawned, and would copy it)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple:
        from clip4hoi.api import preprocess_image
        from clip4hoi.data.images import ImageError, load_image

        item = self.items[i]
        try:
            # Annotated boxes are drawn on the stored pixels: no EXIF rotation with them.
            original = load_image(item.path, apply_exif_orientation=self.boxes is None)
            target = self.boxes.target(item) if self.boxes is not None else None
            resized, target = preprocess_image(original, self.transform, target)
        except (ImageError, InputError) as error:
            message = str(error)
            return i, None, None, None, message if str(item.path) in message \
                else f"{item.path}: {message}"
        return i, original, resized, target, None


class AnnotatedBoxes:
    """``--boxes``: the annotated humans and objects of an annotation file as the
    proposals of each image (found by file name), for checkpoints trained with
    ``detector.use_gt_boxes``."""

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

        own = self.annotations.class_set.object_vocabulary if self.annotations.classes \
            else vocabulary[:80]
        table = np.array([vocabulary.index(o) if o in vocabulary else -1 for o in own])
        self.objects = [table[o] for o in self.annotations.objects]

    def target(self, item: Item) -> dict:
        """The boxes of ``item`` (continuous xyxy pixels) as a model target."""
        import torch

        key = item.name if item.name in self.index else item.path.name
        if key not in self.index:
            raise InputError(f"{item.path}: not an image of --boxes {self.source}")
        i = self.index[key]
        ann = self.annotations
        return {"boxes_h": torch.tensor(ann.boxes_h[i], dtype=torch.float32),
                "boxes_o": torch.tensor(ann.boxes_o[i], dtype=torch.float32),
                "object": torch.tensor(self.objects[i], dtype=torch.long)}


def default_workers(count: int) -> int:
    """Decoding workers for ``count`` images: none for a few, else up to 4 (one core is
    left to the model)."""
    if count < 4:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def detect_images(detector: Any, classes: Any, items: list[Item], out: Path,
                  options: DetectOptions, boxes: AnnotatedBoxes | None, writer: Writer,
                  progress: Any, log: Any) -> tuple[int, list[str]]:
    """Detect on ``items`` (all pending) in batches; returns (done, error messages)."""
    from torch.utils.data import DataLoader

    from clip4hoi.api import image_payload, to_records

    workers = options.workers if options.workers >= 0 else default_workers(len(items))
    loader = DataLoader(ImageReader(items, detector.transform, boxes),
                        batch_size=options.batch_size,
                        num_workers=workers, collate_fn=list,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    done, errors = 0, []
    for batch in loader:
        ready = [entry for entry in batch if entry[4] is None]
        for entry in batch:
            if entry[4] is not None:
                errors.append(entry[4])
                progress.write(f"error: {entry[4]}", file=log)
                progress.update(1)
        if not ready:
            continue
        start = time.perf_counter()
        results = detector.detect([e[2] for e in ready], [e[3] for e in ready], classes)
        seconds = (time.perf_counter() - start) / len(ready)
        for (i, original, _, _, _), result in zip(ready, results, strict=True):
            item = items[i]
            records = to_records(result, classes, options.top_k, options.min_score)
            payload = image_payload(item.name, original.shape[-2:], detector.mode, classes,
                                    records, seconds)
            writer.submit(save_image_result, out, item, payload,
                          None if options.no_draw else original, options)
            done += 1
            progress.update(1)
    return done, errors


# ----------------------------------------------------------------------------- videos


def sampled_frames(container: Any, stream: Any, every: int, fps: float) -> Any:
    """Yield ``(index, seconds, frame)`` of the frames to detect on: every ``every``-th
    frame, or about ``fps`` per second when ``fps`` > 0."""
    next_time = 0.0
    for index, frame in enumerate(container.decode(stream)):
        seconds = float(frame.time) if frame.time is not None else index / float(
            stream.average_rate or 25)
        if fps > 0:
            if seconds + 1e-6 < next_time:
                continue
            next_time += 1.0 / fps
            while next_time <= seconds:
                next_time += 1.0 / fps
        elif index % every:
            continue
        yield index, seconds, frame


def detect_video(detector: Any, classes: Any, item: Item, out: Path, options: DetectOptions
                 ) -> int:
    """Detect on the sampled frames of one video: ``OUT/<name>.jsonl`` (one line per
    frame) and, unless ``no_draw``, ``OUT/<name>.drawn.mp4``. Returns the frames done."""
    try:
        import av
    except ImportError:
        raise EnvironmentFault("reading videos needs PyAV: pip install 'clip4hoi[video]' (or "
                               "pip install av)") from None
    import numpy as np
    import torch
    from PIL import Image
    from tqdm import tqdm

    from clip4hoi.api import to_records
    from clip4hoi.visualize import draw_detections

    jsonl = out / f"{item.name}.jsonl"
    movie = out / f"{item.name}.drawn.mp4"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    tmp_jsonl = jsonl.with_name(f".{jsonl.name}.{os.getpid()}.tmp")
    tmp_movie = movie.with_name(f".{movie.name}.{os.getpid()}.tmp.mp4")
    try:
        container = av.open(str(item.path))
    except (av.error.FFmpegError, OSError) as error:
        raise InputError(f"{item.path}: cannot read the video ({error})") from error
    frames_done = 0
    encoder = output = None
    try:
        with container, open(tmp_jsonl, "w") as lines:
            if not container.streams.video:
                raise InputError(f"{item.path}: the file has no video stream")
            stream = container.streams.video[0]
            rate = Fraction(stream.average_rate or 25)
            out_rate = Fraction(options.fps).limit_denominator(1000) if options.fps \
                else rate / options.every
            total = stream.frames or None
            expected = None
            if total:
                expected = (int(total / rate * Fraction(options.fps).limit_denominator(1000))
                            + 1 if options.fps else -(-total // options.every))
            bar = tqdm(total=expected, desc=item.name, unit="frame", file=sys.stderr,
                       leave=False)
            batch: list[tuple[int, float, np.ndarray]] = []

            def flush() -> None:
                nonlocal frames_done, encoder, output
                prepared = [detector.preprocess(torch.from_numpy(rgb).permute(2, 0, 1))
                            for _, _, rgb in batch]
                results = detector.detect([p[0] for p in prepared], [p[1] for p in prepared],
                                          classes)
                for (index, seconds, rgb), result in zip(batch, results, strict=True):
                    records = to_records(result, classes, options.top_k, options.min_score)
                    line = {"file_name": item.name, "frame": index,
                            "time": round(seconds, 4), "width": rgb.shape[1],
                            "height": rgb.shape[0], "detections": records}
                    lines.write(json.dumps(line) + "\n")
                    if not options.no_draw:
                        if encoder is None:
                            output = av.open(str(tmp_movie), "w", format="mp4")
                            encoder = output.add_stream("libx264", rate=out_rate)
                            encoder.width = rgb.shape[1] // 2 * 2
                            encoder.height = rgb.shape[0] // 2 * 2
                            encoder.pix_fmt = "yuv420p"
                        drawn = np.asarray(draw_detections(
                            Image.fromarray(rgb), records, max_pairs=options.draw,
                            min_score=options.draw_score))
                        frame = av.VideoFrame.from_ndarray(
                            np.ascontiguousarray(drawn[:encoder.height, :encoder.width]),
                            format="rgb24")
                        for packet in encoder.encode(frame):
                            output.mux(packet)
                    frames_done += 1
                    bar.update(1)
                batch.clear()

            for index, seconds, frame in sampled_frames(container, stream, options.every,
                                                        options.fps):
                batch.append((index, seconds, frame.to_ndarray(format="rgb24")))
                if len(batch) == options.batch_size:
                    flush()
            if batch:
                flush()
            bar.close()
            lines.flush()
            os.fsync(lines.fileno())
        if encoder is not None:
            for packet in encoder.encode():
                output.mux(packet)
            output.close()
            output = None
            os.replace(tmp_movie, movie)
        os.replace(tmp_jsonl, jsonl)
    except av.error.FFmpegError as error:
        raise InputError(f"{item.path}: cannot decode the video ({error})") from error
    finally:
        if output is not None:
            output.close()
        for tmp in (tmp_jsonl, tmp_movie):
            if tmp.exists():
                tmp.unlink()
    return frames_done


# ----------------------------------------------------------------------------- the run


def resolve_mode(mode: str, checkpoint: str | None, device: str) -> tuple[str, str]:
    """The mode to run and why: ``auto`` is ``trained`` with a checkpoint, else ``crop``
    on a GPU and ``dense`` on a CPU (crop encodes every pair: minutes per crowded image
    on a CPU)."""
    if mode != "auto":
        return mode, ""
    if checkpoint:
        return "trained", " (auto: a checkpoint is given)"
    if device.startswith("cuda"):
        return "crop", " (auto: GPU; --mode dense is faster)"
    return "dense", " (auto: CPU; --mode crop is more accurate but much slower on a CPU)"


def _strip_prefix(overrides: list[str], prefix: str) -> list[str]:
    """``model.detector.weights=x`` → ``detector.weights=x``: ``detect`` accepts the key
    names of ``train``/``test`` as well as the short ones."""
    return [item.removeprefix(prefix) for item in overrides]


def build_detector(options: DetectOptions, mode: str, device: str) -> Any:
    """The :class:`HOIDetector` of ``mode`` (weights missing → ``WeightsUnavailableError``):
    :func:`clip4hoi.api.load_detector`, with the ``model.``/``training_free.`` key prefixes
    of ``train``/``test`` accepted and ``--boxes`` turned into ``detector.use_gt_boxes``."""
    from clip4hoi.api import load_detector

    if mode == "trained":
        overrides = _strip_prefix(options.overrides, "model.")
        if options.boxes:
            overrides.append("detector.use_gt_boxes=true")
    elif options.boxes:
        raise InputError("--boxes replaces the detector's proposals of a trained checkpoint; "
                         "the training-free modes score DETR's own detections")
    else:
        overrides = _strip_prefix(options.overrides, "training_free.")
    return load_detector(mode, options.checkpoint, device, options.random_weights, overrides,
                         min_size=options.test_scale, max_size=options.max_size)


def _check_checkpoint(path: str | None) -> None:
    if path is not None and not path.startswith("hf://") and not Path(path).is_file():
        raise InputError(f"--checkpoint {path}: no such file")


def run_detect(options: DetectOptions, log: Any = None) -> int:
    """``clip4hoi detect``: returns the exit code (0 all done, 1 some inputs failed)."""
    log = log or sys.stderr
    options.check()
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the results")
    scan = scan_inputs(options.inputs, out)
    _check_checkpoint(options.checkpoint)
    if options.boxes and not Path(options.boxes).is_file():
        raise InputError(f"--boxes {options.boxes}: no such file")
    out.mkdir(parents=True, exist_ok=True)  # OSErrors: exit 4 (disk, permission) or 2

    from clip4hoi.devices import parse_device

    device = str(parse_device(options.device))
    mode, why = resolve_mode(options.mode, options.checkpoint, device)
    if options.batch_size == 0:
        options.batch_size = 4 if device.startswith("cuda") else 1
    boxes = AnnotatedBoxes(options.boxes) if options.boxes else None
    detector = build_detector(options, mode, device)
    if getattr(detector.model.config.detector, "use_gt_boxes", False) and boxes is None:
        raise InputError(f"{options.checkpoint} was trained with detector.use_gt_boxes (the "
                         f"annotated boxes as proposals): give --boxes ANNOTATIONS, or --set "
                         f"detector.use_gt_boxes=false to use the detector's boxes")
    classes = detector.resolve_classes(options.classes)
    if boxes is not None:
        boxes.use_vocabulary(classes.object_vocabulary)
    inputs = f"{len(scan.images)} image(s)" + (f", {len(scan.videos)} video(s)"
                                               if scan.videos else "")
    print(f"clip4hoi detect: mode {detector.mode}{why}, {len(classes)} classes "
          f"({classes.name}), {inputs} -> {out}", file=log)
    if scan.unknown:
        print(f"clip4hoi detect: {scan.describe_unknown()}", file=log)
    if options.random_weights:
        print("WARNING: --random-weights: the networks are randomly initialised; the "
              "detections are MEANINGLESS (smoke test only).", file=log)

    pending = [item for item in scan.images if options.overwrite
               or not result_is_complete(out / f"{item.name}.json", item.name)]
    videos = [item for item in scan.videos if options.overwrite
              or not video_is_complete(out / f"{item.name}.jsonl", item.name)]
    skipped = len(scan.images) - len(pending) + len(scan.videos) - len(videos)
    done, errors = 0, []
    if pending or videos:
        start = time.perf_counter()
        detector.encode_classes(classes)
        print(f"clip4hoi detect: {len(classes)} class embeddings ready in "
              f"{time.perf_counter() - start:.1f} s", file=log)
    if pending:
        from tqdm import tqdm

        writer = Writer()
        progress = tqdm(total=len(pending), desc="detect", unit="img", file=log,
                        disable=len(pending) < 2)
        try:
            done, errors = detect_images(detector, classes, pending, out, options, boxes,
                                         writer, progress, log)
        finally:
            progress.close()
            writer.close()
    for item in videos:
        start = time.perf_counter()
        try:
            frames = detect_video(detector, classes, item, out, options)
        except InputError as error:
            errors.append(str(error))
            print(f"error: {error}", file=log)
            continue
        seconds = time.perf_counter() - start
        print(f"clip4hoi detect: {item.name}: {frames} frame(s) in {seconds:.1f} s "
              f"({frames / seconds:.2f} frames/s) -> {out / item.name}.jsonl", file=log)
        done += 1
    if scan.images:
        combined = write_combined(out, scan.images, classes, detector.mode)
        print(f"clip4hoi detect: all image results in {combined} (clip4hoi eval "
              f"--detections reads it)", file=log)
    print(f"clip4hoi detect: {done} done, {skipped} skipped (already done; --overwrite to "
          f"redo), {len(errors)} failed", file=log)
    return EXIT_PARTIAL if errors else EXIT_OK

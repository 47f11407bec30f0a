"""The one inference pipeline: sources in, :class:`~clip4hoi.engine.results.Results` out.

    sources ─ DataLoader workers: decode + resize ─ batches of one size ─ backend ─ Results
     (images: many at once; a video: its frames, in order)      (in the input's order)

:class:`Predictor` is a streaming generator behind every surface: ``clip4hoi detect``
(images, folders, videos; :mod:`clip4hoi.engine.detect` writes its results through the
sinks of :mod:`clip4hoi.engine.sinks`), the Python API (``HOIDetector.__call__`` and
``.stream()``) and the demo. Nothing is held beyond a small window of frames.

**Batches do not change results.** DETR pads a batch to its largest image, and the padding
changes its position encoding and attention, so an image's detections would depend on its
batch-mates. The predictor therefore batches only frames whose resized sizes are equal
(no padding at all): it keeps a window of ``window`` decoded frames, runs a batch as soon
as ``batch_size`` frames of one size are waiting, and when the window is full runs the
group whose first frame is oldest. A video's frames share one size; photos of one camera
mostly do. Results come out in the input's order whatever the batching, so the detections
of a picture are the same at any batch size, any number of workers and any number of
ranks (within float rounding: ``tests/test_predictor.py``).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain, count
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from clip4hoi.data.metadata import HOIClassSet
from clip4hoi.data.sources import Frame, Source
from clip4hoi.engine.backend import Backend, prepare_image
from clip4hoi.engine.results import Results
from clip4hoi.errors import InputError
from clip4hoi.options import check_option

TargetFn = Callable[[Source], dict]
"""The annotated boxes of a source as a model target (``clip4hoi detect --boxes``)."""


@dataclass
class Prepared:
    """A decoded and resized frame on its way to the model, or why it could not be read,
    or a frame done by an earlier run (``frame.done``: passed on, not resized)."""

    source: int                   # the source's place in the list given to the predictor
    frame: Frame | None = None
    input: Tensor | None = None   # float [3, H', W'] in [0, 1]
    target: dict | None = None
    error: str | None = None
    order: int = -1               # place in the stream (set by the predictor)

    def pin_memory(self) -> Prepared:
        """The same frame with its model input in pinned memory (``DataLoader``'s
        ``pin_memory``, for a GPU)."""
        return self if self.input is None else replace(self, input=self.input.pin_memory())


def _prepare(position: int, source: Source, frame: Frame, transform: object,
             targets: TargetFn | None) -> Prepared:
    target = targets(source) if targets is not None else None
    resized, target = prepare_image(frame.pixels, transform, target)
    return Prepared(position, frame, resized, target)


def _failed(position: int, source: Source, error: InputError) -> Prepared:
    message = str(error)
    where = str(source.path) if source.path is not None else source.name
    return Prepared(position, error=message if where in message else f"{where}: {message}")


class ImageFrames(Dataset):
    """Map-style dataset over image sources (one frame each) for a ``DataLoader``: decodes
    and resizes in its worker processes (it holds the backend's transform, not the model,
    which spawned workers would copy)."""

    def __init__(self, sources: Sequence[tuple[int, Source]], transform: object,
                 targets: TargetFn | None = None) -> None:
        self.sources, self.transform, self.targets = sources, transform, targets

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Prepared:
        position, source = self.sources[i]
        try:
            (frame,) = source.frames()
            return _prepare(position, source, frame, self.transform, self.targets)
        except InputError as error:
            return _failed(position, source, error)


class VideoFrames(IterableDataset):
    """The frames of one video source, decoded and resized in order (by one worker process
    when there is one, ahead of the model); a frame that cannot be decoded ends it with an
    error. Frames done by an earlier run are passed on as they are."""

    def __init__(self, position: int, source: Source, transform: object) -> None:
        self.position, self.source, self.transform = position, source, transform

    def __iter__(self) -> Iterator[Prepared]:
        decoded = 0
        try:
            for frame in self.source.frames():
                decoded += 1
                yield Prepared(self.position, frame) if frame.done else _prepare(
                    self.position, self.source, frame, self.transform, None)
        except InputError as error:
            yield _failed(self.position, self.source, error)
            return
        if not decoded:
            yield _failed(self.position, self.source, InputError("no frame could be decoded"))


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count() or 1


def default_workers(images: int, device: torch.device | str = "cpu") -> int:
    """Decoding workers for ``images`` images: none for a few; else on a GPU up to 4
    (decoding and resizing a photo takes about as long as the model's pass on it), on a CPU
    one (there they are ~1 % of an image's time; more would take cores from the model)."""
    if images < 4:
        return 0
    if torch.device(device).type == "cpu":
        return 1
    return max(0, min(4, _cores() - 1))


def default_batch_size(device: torch.device | str) -> int:
    """Frames per forward pass: 4 on a GPU; 1 on a CPU, where a batch of 2 or 4 took as
    long per image as one alone (``docs/inference.md``) and only adds latency."""
    return 4 if torch.device(device).type == "cuda" else 1


def default_threads(cores: int | None = None) -> int:
    """torch's intra-op threads on a CPU: the cores of this process (``cores``) that other
    work leaves idle — the cores less the load average of the last minute, at least one.
    Measured on 2 cores with other jobs running: DETR took 3.5× longer with 2 threads than
    with 1 (threads that wait on each other), and on an idle machine 2 threads were
    faster (``docs/inference.md``)."""
    cores = cores or _cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - load)))


def set_cpu_threads(threads: int = 0, cores: int | None = None) -> int:
    """Set torch's intra-op threads (and so ONNX Runtime's) to ``threads``, or with 0 to
    :func:`default_threads` of ``cores``; returns the number."""
    threads = check_option("threads", threads) or default_threads(cores)
    torch.set_num_threads(threads)
    return threads


def _quiet_when_left(worker_id: int) -> None:
    """In a decoding worker: when the main process stops (Ctrl-C, SIGTERM) while taking a
    frame, the worker's thread that hands over the frame's shared memory (multiprocessing's
    resource sharer, which reports through ``sys.excepthook``) finds its connection reset
    and would print a traceback under the run's last line; that, and only that, is not
    reported."""
    default = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, trace: Any) -> None:
        if not (issubclass(kind, ConnectionError | EOFError) and any(
                frame.filename.endswith("resource_sharer.py")
                for frame in traceback.extract_tb(trace))):
            default(kind, error, trace)

    sys.excepthook = hook


def _unchanged(item: Prepared) -> Prepared:   # the loader's collate_fn (picklable)
    return item


class Predictor:
    """Detects on a sequence of sources with ``backend`` and the class set ``classes``,
    ``batch_size`` frames of one size per forward pass, decoding with ``workers``
    processes (-1: :func:`default_workers`); yields one :class:`Results` per frame, in
    order (see the module docstring). ``targets``: annotated boxes per image source;
    ``keep_pixels``: keep each picture in its result (for drawing)."""

    def __init__(self, backend: Backend, classes: HOIClassSet, *, batch_size: int = 1,
                 workers: int = 0, targets: TargetFn | None = None, keep_pixels: bool = True,
                 window: int | None = None) -> None:
        self.backend, self.classes, self.targets = backend, classes, targets
        self.batch_size = max(1, check_option("batch_size", batch_size))
        self.workers = check_option("workers", workers)
        self.keep_pixels = keep_pixels
        self.window = window or 4 * self.batch_size

    def __call__(self, sources: Iterable[Source]) -> Iterator[Results]:
        """The results of ``sources``' frames, one by one, in order. ``sources`` is read
        lazily: a source is taken when the frames before it have been decoded."""
        seen: list[Source] = []
        order = count()
        prepared = (replace(item, order=next(order)) for item in self._decoded(sources, seen))
        done: dict[int, Results] = {}
        following = 0
        for batch in self._batches(prepared):
            for item, result in zip(batch, self._run(batch, seen), strict=True):
                done[item.order] = result
            while following in done:
                yield done.pop(following)
                following += 1

    def _loader(self, dataset: Dataset, workers: int) -> DataLoader:
        """Decoded frames, ahead of the model: a video's wait for two batches, an image
        folder's four images per worker; for a GPU in pinned memory, so that copies to it
        need not wait (``non_blocking``)."""
        ahead = max(4, 2 * self.batch_size) if isinstance(dataset, VideoFrames) else 4
        return DataLoader(dataset, batch_size=None, num_workers=workers,
                          collate_fn=_unchanged, prefetch_factor=ahead if workers else None,
                          pin_memory=self.backend.device.type == "cuda",
                          worker_init_fn=_quiet_when_left if workers else None)

    def _decoded(self, sources: Iterable[Source], seen: list[Source]) -> Iterator[Prepared]:
        """Every frame of every source, decoded and resized: runs of image sources through
        one loader of ``workers`` processes, each video through a loader of its own (one
        process decoding ahead). Each source taken is appended to ``seen``."""
        images: list[tuple[int, Source]] = []
        for source in chain(sources, [None]):   # None: the end, flushes the images
            position = len(seen)
            if source is not None:
                seen.append(source)
            if source is not None and source.kind == "image":
                images.append((position, source))
                continue
            if images:
                workers = default_workers(len(images), self.backend.device) \
                    if self.workers < 0 else self.workers
                yield from self._loader(ImageFrames(images, self.backend.transform,
                                                    self.targets), workers)
                images = []
            if source is not None:
                yield from self._loader(VideoFrames(position, source, self.backend.transform),
                                        1 if self.workers else 0)

    def _batches(self, prepared: Iterator[Prepared]) -> Iterator[list[Prepared]]:
        """Batches of frames of one resized size (errors and frames done alone, not run)."""
        groups: dict[tuple[int, int], list[Prepared]] = {}
        waiting = 0
        for item in prepared:
            if item.input is None:
                yield [item]
                continue
            group = groups.setdefault(tuple(item.input.shape[-2:]), [])
            group.append(item)
            waiting += 1
            if len(group) == self.batch_size or waiting >= self.window:
                oldest = group if len(group) == self.batch_size else min(
                    groups.values(), key=lambda g: g[0].order)
                groups = {k: g for k, g in groups.items() if g is not oldest}
                waiting -= len(oldest)
                yield oldest
        yield from sorted(groups.values(), key=lambda g: g[0].order)

    def _run(self, batch: list[Prepared], sources: list[Source]) -> list[Results]:
        """The backend on one batch (nothing for an error or a frame done)."""
        first = batch[0]
        if first.error is not None:
            return [Results(sources[first.source], self.classes, self.backend.mode, {},
                            (0, 0), error=first.error)]
        if first.input is None:
            frame = first.frame
            return [Results(sources[first.source], self.classes, self.backend.mode, {},
                            tuple(int(v) for v in frame.pixels.shape[-2:]), frame.index,
                            frame.time, pixels=frame.pixels if self.keep_pixels else None,
                            done=True)]
        start = time.perf_counter()
        detections = self.backend([item.input for item in batch],
                                  [item.target for item in batch], self.classes)
        seconds = (time.perf_counter() - start) / len(batch)
        results = []
        for item, found in zip(batch, detections, strict=True):
            frame = item.frame
            video = sources[item.source].kind == "video"
            results.append(Results(
                sources[item.source], self.classes, self.backend.mode, found,
                tuple(int(v) for v in frame.pixels.shape[-2:]),
                frame.index if video else None, frame.time, seconds,
                frame.pixels if self.keep_pixels else None))
        return results

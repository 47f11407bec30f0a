"""Where the pictures to detect on come from: image files, folders, videos, in-memory images.

    scan_inputs(["photos/", "clip.mp4"], out)  ->  Scan(images=[ImageFile...], videos=[VideoFile])
    as_sources(["a.jpg", pil_image, array])     ->  [ImageFile, InMemoryImage, InMemoryImage]

A :class:`Source` has a ``name`` (the output name of its results), a ``kind`` (``image`` or
``video``) and :meth:`Source.frames`, which decodes its pictures as :class:`Frame` s
(index, time in seconds, uint8 ``[3, H, W]`` RGB pixels): one for an image, the sampled
frames of a video (every N-th, or about F per second). A source that cannot be read raises
:class:`~clip4hoi.errors.InputError` naming it — also in the middle of a video. Sources are
small picklable records: the DataLoader workers of :mod:`clip4hoi.engine.predictor` decode
them. Scanning imports no torch (the command line answers a wrong path at once). A live
stream (http, rtsp, a webcam) is a :class:`VideoFile` whose ``path`` PyAV opens.

A folder is scanned recursively (sorted; symlinked folders followed once each, a symlink
loop visited once); a file's ``name`` is its path relative to the folder, suffix included
(``a.jpg`` and ``a.png`` stay apart), or its file name when given as a file.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from clip4hoi.errors import EnvironmentFault, InputError, OptionError
from clip4hoi.fileio import same_file

if TYPE_CHECKING:
    from torch import Tensor

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                            ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})


@dataclass(frozen=True)
class Frame:
    """One decoded picture of a source."""

    index: int             # the frame's index in the video stream (0 for an image)
    time: float | None     # its presentation time in seconds (None for an image)
    pixels: Tensor         # uint8 [3, H, W], RGB


class Source:
    """Something to detect on (see the module docstring)."""

    kind: ClassVar[str] = "image"
    name: str
    path: Path | None   # the file (None for an in-memory image)

    def frames(self) -> Iterator[Frame]:
        """The source's pictures, decoded (InputError naming the source when it cannot)."""
        raise NotImplementedError


@dataclass(frozen=True)
class ImageFile(Source):
    """An image file; ``exif``: apply its EXIF orientation (off when annotated boxes, drawn
    on the stored pixels, come with it)."""

    path: Path
    name: str
    exif: bool = True

    def frames(self) -> Iterator[Frame]:
        from clip4hoi.data.images import load_image

        yield Frame(0, None, load_image(self.path, apply_exif_orientation=self.exif))


@dataclass(frozen=True)
class InMemoryImage(Source):
    """A PIL image, an ``[H, W, 3]`` uint8 RGB array or a ``[3, H, W]`` tensor (uint8, or
    float in ``[0, 1]``)."""

    image: Any
    name: str
    path: None = None

    def frames(self) -> Iterator[Frame]:
        yield Frame(0, None, as_uint8_tensor(self.image))


def as_uint8_tensor(image: Any) -> Tensor:
    """A path, PIL image, ``[H, W, 3]`` uint8 array or ``[3, H, W]`` tensor (uint8, or float
    in ``[0, 1]``) as a uint8 RGB tensor ``[3, H, W]``."""
    import numpy as np
    import torch
    from PIL import Image

    from clip4hoi.data.images import load_image

    if isinstance(image, str | Path):
        return load_image(image)
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"expected an image array [H, W, 3] of uint8 RGB, got "
                             f"{image.dtype} {tuple(image.shape)}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise InputError(f"expected an image tensor [3, H, W], got {tuple(image.shape)}")
        if image.is_floating_point():
            return (image.clamp(0, 1) * 255).round().to(torch.uint8)
        return image.to(torch.uint8)
    raise TypeError(f"unsupported image type {type(image).__name__}")


@dataclass(frozen=True)
class VideoFile(Source):
    """A video (a file, or any URL PyAV opens), sampled every ``every``-th frame or, when
    ``fps`` > 0, at about ``fps`` frames per second. Needs PyAV (the ``video`` extra)."""

    kind: ClassVar[str] = "video"
    path: Path
    name: str
    every: int = 1
    fps: float = 0.0

    def frames(self) -> Iterator[Frame]:
        import torch

        av = require_pyav()
        with self._open(av) as container:
            stream = container.streams.video[0]
            try:
                for index, seconds, frame in _sampled(container.decode(stream), stream,
                                                      self.every, self.fps):
                    pixels = torch.from_numpy(frame.to_ndarray(format="rgb24"))
                    yield Frame(index, seconds, pixels.permute(2, 0, 1).contiguous())
            except av.error.FFmpegError as error:
                raise InputError(f"{self.path}: cannot decode the video ({error})") from error

    def rate(self) -> Fraction:
        """Frames per second of the sampled frames (for a video of them)."""
        if self.fps:
            return Fraction(self.fps).limit_denominator(1000)
        with self._open(require_pyav()) as container:
            return Fraction(container.streams.video[0].average_rate or 25) / self.every

    def _open(self, av: Any) -> Any:
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as error:
            raise InputError(f"{self.path}: cannot read the video ({error})") from error
        if not container.streams.video:
            container.close()
            raise InputError(f"{self.path}: the file has no video stream")
        return container


def require_pyav() -> Any:
    """The ``av`` module (PyAV), or :class:`EnvironmentFault` saying how to install it."""
    try:
        import av
    except ImportError:
        raise EnvironmentFault("reading videos needs PyAV: pip install 'clip4hoi[video]' (or "
                               "pip install av)") from None
    return av


def _sampled(frames: Iterator[Any], stream: Any, every: int, fps: float
             ) -> Iterator[tuple[int, float, Any]]:
    """``(index, seconds, frame)`` of the frames to detect on: every ``every``-th frame, or
    about ``fps`` per second when ``fps`` > 0."""
    next_time = 0.0
    for index, frame in enumerate(frames):
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


# ----------------------------------------------------------------------------- scanning


@dataclass
class Scan:
    """What the inputs hold: images, videos, and files of other types by suffix."""

    images: list[ImageFile]
    videos: list[VideoFile]
    unknown: Counter

    def describe_unknown(self) -> str:
        """``"3 file(s) of other types left out (.heic 2, .txt 1)"`` or ``""``."""
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


def _files(text: str, out: Path | None) -> list[tuple[Path, str]]:
    """(path, name) of the files of one input."""
    path = Path(text)
    if path.is_dir():
        if out is not None and same_file(path, out):
            raise OptionError("out", out, f"is the input folder {text}: the results would "
                              f"mix with the inputs; choose another")
        return [(file, file.relative_to(path).as_posix()) for file in _walk(path, out)]
    if path.is_file():
        return [(path, path.name)]
    raise InputError(f"{text}: no such file or directory")


def scan_inputs(inputs: Sequence[str | Path], out: Path | None = None, *, every: int = 1,
                fps: float = 0.0, exif: bool = True) -> Scan:
    """Images and videos of ``inputs`` (files and folders), leaving out the output folder
    ``out``. ``InputError`` for a missing input, ``out`` equal to an input folder, two
    inputs with one output name, or no image or video at all."""
    scan = Scan([], [], Counter())
    names: dict[str, Path] = {}
    for text in map(str, inputs):
        for file, name in _files(text, out):
            suffix = file.suffix.lower()
            if suffix not in IMAGE_SUFFIXES and suffix not in VIDEO_SUFFIXES:
                if not file.name.startswith("."):
                    scan.unknown[suffix] += 1
                continue
            if name in names:
                if same_file(names[name], file):
                    continue
                raise InputError(f"{names[name]} and {file} would both give the results of "
                                 f"{name}; detect them in separate runs with different "
                                 f"output folders")
            names[name] = file
            if suffix in IMAGE_SUFFIXES:
                scan.images.append(ImageFile(file, name, exif))
            else:
                scan.videos.append(VideoFile(file, name, every, fps))
    if not scan.images and not scan.videos:
        extra = scan.describe_unknown()
        raise InputError(f"no images or videos found in {' '.join(map(str, inputs))}"
                         + (f"; {extra}" if extra else ""))
    return scan


def as_sources(inputs: Any, every: int = 1, fps: float = 0.0) -> list[Source]:
    """The sources of the Python API's ``images``: one or a list of paths (image files,
    videos, folders — scanned as :func:`scan_inputs` does), PIL images, arrays and tensors.
    In-memory images are named ``image<i>`` (``i`` their place in the list)."""
    items = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
    sources: list[Source] = []
    for i, item in enumerate(items):
        if isinstance(item, Source):
            sources.append(item)
        elif isinstance(item, str | Path):
            path = Path(item)
            if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                sources.append(VideoFile(path, path.name, every, fps))
            elif path.is_dir():
                scan = scan_inputs([path], every=every, fps=fps)
                sources += [*scan.images, *scan.videos]
            else:   # an image file; a missing or unreadable one fails when decoded
                sources.append(ImageFile(path, path.name))
        else:
            sources.append(InMemoryImage(item, f"image{i}"))
    return sources

"""Where the pictures to detect on come from: image files, folders, videos, in-memory images.

    scan_inputs(["photos/", "clip.mp4"], out)  ->  Scan(images=[ImageFile...], videos=[VideoFile])
    as_sources(["a.jpg", pil_image, array])     ->  [ImageFile, InMemoryImage, InMemoryImage]

A :class:`Source` has a ``name`` (the output name of its results), a ``kind`` (``image`` or
``video``) and :meth:`Source.frames`, which decodes its pictures as :class:`Frame` s
(index, time in seconds, uint8 ``[3, H, W]`` RGB pixels): one for an image, the sampled
frames of a video (every N-th, or about F per second), upright (an image's EXIF
orientation, a video's display matrix applied). A source that cannot be read raises
:class:`~clip4hoi.errors.InputError` naming it — also in the middle of a video. Sources are
small picklable records: the DataLoader workers of :mod:`clip4hoi.engine.predictor` decode
them. Scanning imports no torch (the command line answers a wrong path at once). A live
source (an ``http(s)://`` or ``rtsp://`` URL, a camera: :func:`is_stream`) is a
:class:`VideoFile` whose ``path`` PyAV opens, read until it ends.

A folder is scanned recursively (sorted; symlinked folders followed once each, a symlink
loop visited once); a file's ``name`` is its path relative to the folder, suffix included
(``a.jpg`` and ``a.png`` stay apart), or its file name when given as a file.
"""

from __future__ import annotations

import math
import os
import re
import struct
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from clip4hoi.errors import EnvironmentFault, InputError, OptionError
from clip4hoi.fileio import same_file

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                            ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})


@dataclass(frozen=True)
class Frame:
    """One decoded picture of a source."""

    index: int             # the frame's index in the video stream (0 for an image)
    time: float | None     # its presentation time in seconds (None for an image)
    pixels: Tensor         # uint8 [3, H, W], RGB, upright
    done: bool = False     # detected by an earlier run (a resumed video): not to detect


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
    """A video file, or a live source (``live``: a URL or a camera, :func:`is_stream`),
    sampled every ``every``-th frame or, when ``fps`` > 0, at about ``fps`` frames per
    second. Its frames are shown upright: the display matrix of the stream (a phone's
    rotation, a mirror) is applied, as video players apply it. The frames up to index
    ``resume_after`` are already done (a resumed video): they come marked ``done``. A live
    source's times count from its first frame. Needs PyAV (the ``video`` extra)."""

    kind: ClassVar[str] = "video"
    path: Path | str
    name: str
    every: int = 1
    fps: float = 0.0
    live: bool = False
    resume_after: int = -1

    def frames(self) -> Iterator[Frame]:
        import torch

        av = require_pyav()
        with self._open(av) as container:
            stream = container.streams.video[0]
            try:
                for index, seconds, frame in _sampled(_timed(container.decode(stream), stream,
                                                             self.live), self.every, self.fps):
                    pixels = torch.from_numpy(upright(frame.to_ndarray(format="rgb24"), frame))
                    yield Frame(index, seconds, pixels.permute(2, 0, 1).contiguous(),
                                index <= self.resume_after)
            except av.error.FFmpegError as error:
                raise InputError(redacted(f"{self.shown}: cannot decode the video ({error})")
                                 ) from None

    @property
    def shown(self) -> str:
        """The path or URL as messages show it (a URL without its password)."""
        return redacted(str(self.path)) if self.live else str(self.path)

    def rate(self) -> float:
        """Sampled frames per second: ``fps``, or the video's rate divided by ``every`` (25
        when a live source does not say)."""
        if self.fps:
            return float(self.fps)
        if self.live:
            return 25.0 / self.every
        with self._open(require_pyav()) as container:
            return float(container.streams.video[0].average_rate or 25) / self.every

    def _open(self, av: Any) -> Any:
        format_name, target = capture_device(str(self.path)) if self.live else (None, None)
        try:
            if self.live:   # a stream that stalls is an error after 30 s, not a hang
                container = av.open(target, format=format_name, timeout=(30.0, 30.0))
            else:
                container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as error:
            raise InputError(redacted(f"{self.shown}: cannot read the video ({error})")
                             ) from None
        if not container.streams.video:
            container.close()
            raise InputError(f"{self.shown}: the file has no video stream")
        return container


def require_pyav() -> Any:
    """The ``av`` module (PyAV), or :class:`EnvironmentFault` saying how to install it."""
    try:
        import av
    except ImportError:
        raise EnvironmentFault("reading videos needs PyAV: pip install 'clip4hoi[video]' (or "
                               "pip install av)") from None
    return av


def _timed(frames: Iterator[Any], stream: Any, live: bool
           ) -> Iterator[tuple[int, float, Any]]:
    """``(index, seconds, frame)`` of every decoded frame: its presentation time, or its
    index over the stream's rate when it has none; from the first frame's time on when
    ``live``."""
    origin = None
    for index, frame in enumerate(frames):
        seconds = float(frame.time) if frame.time is not None else index / float(
            stream.average_rate or 25)
        if live:
            origin = seconds if origin is None else origin
            seconds -= origin
        yield index, seconds, frame


def _sampled(frames: Iterator[tuple[int, float, Any]], every: int, fps: float
             ) -> Iterator[tuple[int, float, Any]]:
    """The frames to detect on: every ``every``-th one, or when ``fps`` > 0 the first frame
    at or after each multiple of ``1 / fps`` seconds (the next one after a frame at ``t``
    is due at the first multiple beyond ``t``)."""
    due = -math.inf
    for index, seconds, frame in frames:
        if fps > 0:
            if seconds + 1e-6 < due:
                continue
            due = (math.floor((seconds + 1e-6) * fps) + 1) / fps
        elif index % every:
            continue
        yield index, seconds, frame


def upright(pixels: np.ndarray, frame: Any) -> np.ndarray:
    """A decoded frame's ``[H, W, 3]`` pixels as shown: the stream's display matrix
    applied as FFmpeg's players apply it (``ffmpeg``'s autorotate: rotations by quarter
    turns, mirrors; another angle is taken to the nearest quarter turn)."""
    import numpy as np

    matrix = _display_matrix(frame)
    if matrix is None:
        return pixels
    a, b, c, d = matrix
    ccw = math.degrees(math.atan2(b / (math.hypot(b, d) or 1), a / (math.hypot(a, c) or 1)))
    clockwise = round(ccw) % 360          # av_display_rotation_get gives -ccw
    quarter = round(clockwise / 90) % 4
    if quarter == 1:
        pixels = pixels.transpose(1, 0, 2) if c > 0 else np.rot90(pixels, -1)
    elif quarter == 2:
        pixels = pixels[:, ::-1] if a < 0 else pixels
        pixels = pixels[::-1] if d < 0 else pixels
    elif quarter == 3:
        pixels = np.rot90(pixels, -1)[::-1] if c < 0 else np.rot90(pixels, 1)
    elif d < 0:
        pixels = pixels[::-1]
    return np.ascontiguousarray(pixels)


def _display_matrix(frame: Any) -> tuple[float, float, float, float] | None:
    """The 2×2 part ``(a, b, c, d)`` of a frame's display matrix, or None."""
    try:
        from av.sidedata.sidedata import Type

        data = frame.side_data.get(Type.DISPLAYMATRIX)
    except (AttributeError, ImportError, KeyError, TypeError):
        return None
    if data is None:
        return None
    m = struct.unpack("<9i", bytes(data))
    return tuple(value / 65536 for value in (m[0], m[1], m[3], m[4]))


# ----------------------------------------------------------------------------- streams

CAPTURE_FORMATS = ("v4l2", "avfoundation", "dshow")
"""FFmpeg's camera inputs: ``FORMAT:DEVICE`` (``avfoundation:0`` on macOS,
``dshow:video=Integrated Camera`` on Windows, ``v4l2:/dev/video0`` on Linux)."""
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_stream(text: str) -> bool:
    """Whether an input names a live source: a URL PyAV opens (``rtsp://``, ``http(s)://``,
    ...), a Linux camera (``/dev/video0``) or a camera as ``FORMAT:DEVICE``."""
    return bool(_URL.match(text)) or capture_device(text)[0] is not None


def capture_device(text: str) -> tuple[str | None, str]:
    """``(FFmpeg input format, what to open)`` of a live source (format None: a URL)."""
    head, colon, rest = text.partition(":")
    if colon and head in CAPTURE_FORMATS:
        return head, rest
    if text.startswith("/dev/video"):
        return "v4l2", text
    return None, text


def redacted(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it hidden."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@", r"\1***@", text)


def stream_name(text: str, started: float) -> str:
    """The output name of a live source: its host, port and path (or its device), and the
    local time it ``started`` (``127.0.0.1-8000_cam.mp4.20250131-140307``), so that a
    second recording of the same stream never replaces the first."""
    format_name, target = capture_device(text)
    if format_name is None:
        parts = urlsplit(text)
        base = "-".join(str(v) for v in (parts.hostname, parts.port) if v) + parts.path
    elif target.startswith("/dev/"):
        base = Path(target).name
    else:
        base = f"{format_name}-{target}"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-")[:100] or "stream"
    return f"{base}.{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}"


def stream_source(text: str, every: int = 1, fps: float = 0.0,
                  started: float | None = None) -> VideoFile:
    """The :class:`VideoFile` of a live source (:func:`is_stream`), named by
    :func:`stream_name`."""
    return VideoFile(text, stream_name(text, time.time() if started is None else started),
                     every, fps, live=True)


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
    """Images and videos of ``inputs`` (files, folders and live sources such as
    ``rtsp://...`` or ``/dev/video0``, :func:`is_stream`), leaving out the output folder
    ``out``. ``InputError`` for a missing input, ``out`` equal to an input folder, two
    inputs with one output name, or no image or video at all."""
    scan = Scan([], [], Counter())
    names: dict[str, Path | str] = {}
    for text in map(str, inputs):
        if is_stream(text):
            stream = stream_source(text, every, fps)
            if stream.name in names:
                raise InputError(f"{stream.shown} is given twice")
            names[stream.name] = text
            scan.videos.append(stream)
            continue
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
    videos, folders — scanned as :func:`scan_inputs` does), live sources (URLs, cameras:
    :func:`is_stream`), PIL images, arrays and tensors.
    In-memory images are named ``image<i>`` (``i`` their place in the list)."""
    items = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
    sources: list[Source] = []
    for i, item in enumerate(items):
        if isinstance(item, Source):
            sources.append(item)
        elif isinstance(item, str) and is_stream(item):
            sources.append(stream_source(item, every, fps))
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

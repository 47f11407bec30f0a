"""Where pretrained weights come from and where they are kept.

DETR checkpoints are registered by name (:data:`DETR_WEIGHTS`) and cached under
``$CLIP4HOI_HOME/detr`` (default ``~/.cache/clip4hoi``); CLIP weights are fetched by
open_clip into ``$CLIP4HOI_HOME/clip`` (see :func:`clip4hoi.models.clip.build_clip`). A
local file path is accepted wherever a name is. When a file is neither on disk nor
downloadable, :class:`WeightsUnavailableError` says which file to fetch and where to put it.
"""

from __future__ import annotations

import os
import socket
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch

from clip4hoi.errors import EXIT_WEIGHTS, UserError


class WeightsUnavailableError(UserError, RuntimeError):
    """Pretrained weights are neither on disk nor downloadable; the message says what to
    download and where to put it."""

    exit_code = EXIT_WEIGHTS


@dataclass(frozen=True)
class DETRWeights:
    """A published DETR checkpoint in the facebookresearch layout."""

    file: str
    url: str
    description: str
    dilation: bool = False


def _google_drive(file_id: str) -> str:
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


DETR_WEIGHTS: dict[str, DETRWeights] = {
    "detr-r50": DETRWeights(
        "detr-r50-e632da11.pth", "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth",
        "DETR-R50 trained on COCO 2017 (facebookresearch/detr), 91 COCO category ids"),
    "detr-r50-dc5": DETRWeights(
        "detr-r50-dc5-f0fb7ef5.pth",
        "https://dl.fbaipublicfiles.com/detr/detr-r50-dc5-f0fb7ef5.pth",
        "DETR-R50-DC5 trained on COCO 2017 (facebookresearch/detr)", dilation=True),
    "detr-r101": DETRWeights(
        "detr-r101-2c7b67e5.pth", "https://dl.fbaipublicfiles.com/detr/detr-r101-2c7b67e5.pth",
        "DETR-R101 trained on COCO 2017 (facebookresearch/detr)"),
    "detr-r101-dc5": DETRWeights(
        "detr-r101-dc5-a2e86def.pth",
        "https://dl.fbaipublicfiles.com/detr/detr-r101-dc5-a2e86def.pth",
        "DETR-R101-DC5 trained on COCO 2017 (facebookresearch/detr)", dilation=True),
    "detr-r50-hicodet": DETRWeights(
        "detr-r50-hicodet.pth", _google_drive("1BQ-0tbSH7UC6QMIMMgdbNpRw2NcO8yAD"),
        "DETR-R50 fine-tuned on HICO-DET by UPT (fredzzhang/upt model zoo), 80 objects"),
    "detr-r101-hicodet": DETRWeights(
        "detr-r101-hicodet.pth", _google_drive("1pZrRp8Qcs5FNM9CJsWzVxwzU7J8C-t8f"),
        "DETR-R101 fine-tuned on HICO-DET by UPT (fredzzhang/upt model zoo), 80 objects"),
    "detr-r101-dc5-hicodet": DETRWeights(
        "detr-r101-dc5-hicodet.pth", _google_drive("1kkyVeoUGb8rT9b5J5Q3f51OFmm4Z73UD"),
        "DETR-R101-DC5 fine-tuned on HICO-DET by UPT (fredzzhang/upt model zoo)",
        dilation=True),
    "detr-r50-vcoco": DETRWeights(
        "detr-r50-vcoco.pth", _google_drive("1AIqc2LBkucBAAb_ebK9RjyNS5WmnA4HV"),
        "DETR-R50 fine-tuned for V-COCO by UPT (fredzzhang/upt model zoo)"),
    "detr-r101-vcoco": DETRWeights(
        "detr-r101-vcoco.pth", _google_drive("1XbOaGiVPuxmB9PwrcUdf0XlGnuTXARjX"),
        "DETR-R101 fine-tuned for V-COCO by UPT (fredzzhang/upt model zoo)"),
}
"""Registered DETR checkpoints (``--detector NAME``)."""


def cache_root() -> Path:
    """``$CLIP4HOI_HOME``, or ``~/.cache/clip4hoi``."""
    return Path(os.environ.get("CLIP4HOI_HOME", Path.home() / ".cache" / "clip4hoi"))


def detr_cache_path(name: str) -> Path:
    """Where the registered DETR checkpoint ``name`` is kept."""
    return cache_root() / "detr" / DETR_WEIGHTS[name].file


def _unavailable_detr(name: str, reason: str) -> WeightsUnavailableError:
    entry = DETR_WEIGHTS[name]
    return WeightsUnavailableError(
        f"DETR weights '{name}' ({entry.description}) are not on disk and could not be "
        f"downloaded ({reason}).\n  download: {entry.url}\n  save as:  {detr_cache_path(name)}"
        f"\n  (or pass the path of a local checkpoint instead of the name)")


def resolve_detr(name_or_path: str, download: bool = True) -> Path:
    """Path of a DETR checkpoint given by registered name or local path; downloads a
    registered one into the cache when missing (unless ``download`` is False)."""
    if name_or_path not in DETR_WEIGHTS:
        path = Path(name_or_path).expanduser()
        if path.is_file():
            return path
        raise FileNotFoundError(
            f"DETR weights {name_or_path!r}: no such file, and not a registered name "
            f"({', '.join(DETR_WEIGHTS)})")
    path = detr_cache_path(name_or_path)
    if path.is_file():
        return path
    if not download:
        raise _unavailable_detr(name_or_path, "downloads disabled")
    return download_detr(name_or_path)


def download_detr(name: str, timeout: float = 20.0) -> Path:
    """Download the registered DETR checkpoint ``name`` into the cache (atomic, checked
    against the hash prefix in the file name of facebookresearch releases)."""
    entry = DETR_WEIGHTS[name]
    path = detr_cache_path(name)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = entry.file.rsplit(".", 1)[0]
    hash_prefix = stem.rsplit("-", 1)[1] if "dl.fbaipublicfiles.com" in entry.url else None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.download_url_to_file(entry.url, str(path), hash_prefix=hash_prefix)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise _unavailable_detr(name, str(getattr(error, "reason", error))) from error
    finally:
        socket.setdefaulttimeout(previous)
    with path.open("rb") as handle:
        is_web_page = handle.read(1) == b"<"  # Google Drive answered with a web page
    if is_web_page:
        path.unlink()
        raise _unavailable_detr(name, "the server returned a web page instead of the file; "
                                "download it in a browser")
    return path

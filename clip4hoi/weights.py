"""Where pretrained weights come from and where they are kept.

All lookup and download of weights lives here; ``clip4hoi.models`` only builds networks and
loads given files.

* DETR checkpoints are registered by name (:data:`DETR_WEIGHTS`) and cached under
  ``$CLIP4HOI_HOME/detr`` (default ``~/.cache/clip4hoi``).
* CLIP weights are open_clip pretrained tags (:func:`resolve_clip`). The conventional file
  ``$CLIP4HOI_HOME/clip/<name>-<tag>.<ext>`` (``ext`` one of ``.safetensors``, ``.bin``,
  ``.pt``, ``.pth``) is looked up first, then the tag's Hugging Face file, then its
  original URL (downloaded into ``$CLIP4HOI_HOME/clip``).
* Every file of the Hugging Face Hub — Grounding DINO repositories
  (:data:`OPEN_VOCAB_WEIGHTS`), trained heads (``hf://``, :mod:`clip4hoi.hub`) and CLIP
  tags published there — goes through one helper, :func:`fetch_hub`, into one cache,
  :func:`hub_cache_dir`: ``$CLIP4HOI_HOME/huggingface``, or the user's Hugging Face cache
  when ``HF_HUB_CACHE`` or ``HF_HOME`` is set. ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` are
  read in :func:`hub_environment` only.

A local file (or, for Grounding DINO, a local model folder) is accepted wherever a name is.
When weights are neither on disk nor downloadable, :class:`WeightsUnavailableError` says
within seconds which file to fetch and where to put it.
"""

from __future__ import annotations

import difflib
import os
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clip4hoi.errors import InputError, UserError, WeightsUnavailableError


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


# --------------------------------------------------------------------------------------
# CLIP (open_clip pretrained tags)
# --------------------------------------------------------------------------------------

CLIP_WEIGHT_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth")
PROBE_TIMEOUT_S = 5.0  # connectivity check before a download


@dataclass(frozen=True)
class CLIPWeights:
    """A CLIP weights file and what its pretrained tag says about it."""

    file: Path
    quick_gelu: bool = False
    """The tag was trained with QuickGELU (OpenAI's)."""
    mean: tuple[float, ...] | None = None
    """Pixel normalisation of the tag (None: OpenAI's)."""
    std: tuple[float, ...] | None = None


def clip_cache_dir() -> Path:
    """``$CLIP4HOI_HOME/clip`` (default ``~/.cache/clip4hoi/clip``): where CLIP weights are
    looked up and downloaded when no ``cache_dir`` is given."""
    return cache_root() / "clip"


def clip_architecture(name: str) -> str:
    """open_clip's architecture name (``ViT-B/16`` -> ``ViT-B-16``); ValueError if unknown."""
    import open_clip  # here, not at the top: a run that resolves no CLIP never imports it

    known = open_clip.list_models()
    canonical = name.replace("/", "-")
    if canonical in known:
        return canonical
    close = difflib.get_close_matches(canonical, known, n=6, cutoff=0.6)
    hint = f"close matches: {close}" if close else f"available: {known}"
    raise ValueError(f"unknown CLIP model {name!r} ({hint})")


def _tag_cfg(name: str, tag: str) -> tuple[str, dict[str, Any]]:
    """(cleaned tag, open_clip pretrained config); ValueError naming the tags of ``name``."""
    from open_clip import pretrained as oc_pretrained

    clean = tag.lower().replace("-", "_")
    cfg = oc_pretrained.get_pretrained_cfg(name, clean)
    if cfg:
        return clean, cfg
    tags = oc_pretrained.list_pretrained_tags_by_model(name)
    close = difflib.get_close_matches(clean, tags, n=4, cutoff=0.5)
    raise ValueError(
        f"{tag!r} is neither a file nor a pretrained tag of {name} "
        f"(close matches: {close}; tags of {name}: {tags})"
    )


def _hf_files(cfg: dict[str, Any]) -> tuple[str, list[str]] | None:
    """(HF repo, candidate file names, safetensors first) of a tag, as open_clip fetches them."""
    if not cfg.get("hf_hub"):
        return None
    repo, filename = os.path.split(cfg["hf_hub"])
    filename = filename or "open_clip_pytorch_model.bin"
    if filename == "open_clip_pytorch_model.bin":
        return repo, ["open_clip_model.safetensors", filename]
    if filename.endswith((".bin", ".pth")):
        return repo, [filename[:-4] + ".safetensors", filename]
    return repo, [filename]


def _hf_url(repo: str, filename: str) -> str:
    return f"{hub_environment()[1]}/{repo}/resolve/main/{filename}"


def _find_on_disk(name: str, tag: str, cfg: dict[str, Any], cache_dir: Path,
                  hub_cache: Path) -> Path | None:
    """The weights of ``name``/``tag`` if already on disk: the conventional file in
    ``cache_dir``, the tag's Hugging Face file in ``hub_cache``, its URL's file in
    ``cache_dir``."""
    for ext in CLIP_WEIGHT_EXTENSIONS:
        path = cache_dir / f"{name}-{tag}{ext}"
        if path.is_file():
            return path
    hf = _hf_files(cfg)
    for filename in hf[1] if hf else []:
        found = _hub_cached(hf[0], filename, None, None, hub_cache)
        if found is not None:
            return found
    if cfg.get("url"):
        path = cache_dir / os.path.basename(cfg["url"])
        if path.is_file():
            return path
    return None


def _unreachable(url: str, timeout: float = PROBE_TIMEOUT_S, any_answer: bool = False
                 ) -> str | None:
    """None if ``url`` answers a HEAD request within ``timeout`` seconds (with any HTTP
    status if ``any_answer``, else a success), else the reason. Runs in a thread so that a
    hanging name resolution cannot exceed the timeout either."""
    result: list[str | None] = ["timed out"]

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            result[0] = None
        except urllib.error.HTTPError as e:
            result[0] = None if any_answer else f"HTTP {e.code}"
        except Exception as e:  # URLError, socket errors, timeouts
            result[0] = str(getattr(e, "reason", e)) or type(e).__name__

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return result[0]


def _unavailable_message(
    name: str, tag: str, cfg: dict[str, Any], cache_dir: Path, reasons: list[str]
) -> str:
    hf = _hf_files(cfg)
    sources = (
        [f"  {_hf_url(hf[0], f)}   (Hugging Face repo {hf[0]}, file {f})" for f in hf[1]]
        if hf
        else []
    )
    if cfg.get("url"):
        kind = "OpenAI TorchScript archive" if "openaipublic" in cfg["url"] else "checkpoint"
        sources.append(f"  {cfg['url']}   ({kind})")
    ext = ".safetensors" if hf else Path(cfg.get("url", "x.pt")).suffix
    return "\n".join(
        [
            f"CLIP weights {name} / {tag} are not on disk and cannot be downloaded "
            f"({'; '.join(reasons)}).",
            "Download one of these files (any one is enough):",
            *sources,
            f"and save it as {cache_dir / f'{name}-{tag}{ext}'}",
            f"(a .bin, .pt or .pth file keeps its extension: {name}-{tag}.pt in that folder), "
            "where the next run looks first;",
            "or pass the file's path as the CLIP `pretrained` setting instead of the tag.",
            "`clip4hoi download` fetches the weights on a machine with internet access.",
        ]
    )


def resolve_clip(
    name: str, pretrained: str | Path, cache_dir: str | Path | None = None
) -> CLIPWeights:
    """The weights of CLIP ``name`` (``ViT-B-16``, ``ViT-B/16``) given by an open_clip
    pretrained tag (``openai``, ``laion2b_s34b_b88k``, ...) or a local file; a tag's file
    is looked up on disk, else downloaded through open_clip (Hugging Face hub first, then
    the original URL) into ``cache_dir`` (default :func:`clip_cache_dir`).

    Raises ``WeightsUnavailableError`` (what to download, where to put it) when offline,
    ``ValueError`` for an unknown model name or tag.
    """
    from open_clip import pretrained as oc_pretrained

    if not oc_pretrained.is_pretrained_cfg(name, str(pretrained)) and Path(pretrained).is_file():
        return CLIPWeights(Path(pretrained))
    name = clip_architecture(name)
    file, cfg = _clip_file(name, str(pretrained), cache_dir)
    mean, std = cfg.get("mean"), cfg.get("std")
    return CLIPWeights(file, bool(cfg.get("quick_gelu")), mean and tuple(mean),
                       std and tuple(std))


def _clip_file(name: str, pretrained: str, cache_dir: str | Path | None
               ) -> tuple[Path, dict[str, Any]]:
    """(weights file, tag config) of a pretrained tag; downloads if needed. An explicit
    ``cache_dir`` holds everything (also the Hugging Face files); by default the files of
    the Hub are in :func:`hub_cache_dir`, the others in :func:`clip_cache_dir`."""
    tag, cfg = _tag_cfg(name, pretrained)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else clip_cache_dir()
    hub_cache = folder if cache_dir is not None else hub_cache_dir()
    found = _find_on_disk(name, tag, cfg, folder, hub_cache)
    if found is not None:
        return found, cfg

    reasons: list[str] = []
    hf = _hf_files(cfg)
    if hf is not None:
        try:
            return _hub_download(hf[0], hf[1][-1], None, None, hub_cache,
                                 f"CLIP weights {name} / {tag}"), cfg
        except HubUnreachable as error:
            reasons.append(f"Hugging Face hub: {error}")
    if cfg.get("url"):
        reason = _unreachable(cfg["url"])
        if reason is None:
            from open_clip import pretrained as oc_pretrained

            try:
                return Path(
                    oc_pretrained.download_pretrained_from_url(cfg["url"], str(folder))
                ), cfg
            except Exception as e:
                reason = str(e)
        reasons.append(f"{cfg['url'].split('/')[2]}: {reason}")
    raise WeightsUnavailableError(_unavailable_message(name, tag, cfg, folder, reasons))


def download_clip(
    name: str = "ViT-B-16", pretrained: str = "openai", cache_dir: str | Path | None = None
) -> Path:
    """Make sure the weights of ``name``/``pretrained`` are on disk and return their file.

    Looks up ``<cache_dir>/<name>-<tag>.<ext>`` and open_clip's caches, otherwise downloads
    through open_clip (Hugging Face hub first, then the original URL) into ``cache_dir``
    (default: ``clip_cache_dir()``). Raises ``WeightsUnavailableError`` (what to download,
    where to put it) when offline, ``ValueError`` for an unknown model name or tag.
    """
    if not pretrained:
        raise ValueError("nothing to download: `pretrained` is empty (random weights)")
    return resolve_clip(name, pretrained, cache_dir).file



# --------------------------------------------------------------------------------------
# The Hugging Face Hub: one route, one cache
# --------------------------------------------------------------------------------------


def hub_cache_dir() -> Path:
    """The one cache of every Hugging Face Hub file (detector repositories, heads, CLIP
    tags): ``$HF_HUB_CACHE``, else ``$HF_HOME/hub`` when the user set one of them (their
    Hugging Face cache, shared with other libraries), else ``$CLIP4HOI_HOME/huggingface``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return cache_root() / "huggingface"


def hub_environment() -> tuple[bool, str]:
    """``(offline, endpoint)``: ``HF_HUB_OFFLINE`` (as ``huggingface_hub`` read it at its
    import, or set since) and ``HF_ENDPOINT`` (default ``https://huggingface.co``) — the
    only place the package reads them."""
    from huggingface_hub import constants

    offline = bool(constants.HF_HUB_OFFLINE) or os.environ.get(
        "HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES
    return offline, os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


class HubUnreachable(Exception):
    """The Hub cannot be asked (offline, no network); the message says why."""


def _hub_get(repo: str, filename: str | None, revision: str | None,
             patterns: list[str] | None, cache: Path, local_only: bool) -> Path:
    """One file (``filename``) or a snapshot (``patterns``) of ``repo`` through
    ``huggingface_hub``, in ``cache``."""
    from huggingface_hub import hf_hub_download, snapshot_download

    if filename is None:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache,
                                      allow_patterns=patterns, local_files_only=local_only,
                                      library_name="clip4hoi"))
    return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache,
                                local_files_only=local_only, library_name="clip4hoi"))


def _hub_cached(repo: str, filename: str | None, revision: str | None,
                patterns: list[str] | None, cache: Path) -> Path | None:
    """The file or snapshot if ``cache`` holds it, else None."""
    try:
        return _hub_get(repo, filename, revision, patterns, cache, local_only=True)
    except Exception:  # not (completely) in the cache: huggingface_hub's own error types
        return None


def _hub_download(repo: str, filename: str | None, revision: str | None,
                  patterns: list[str] | None, cache: Path, what: str) -> Path:
    """Download into ``cache``. :class:`HubUnreachable` when offline or the Hub does not
    answer; a missing, private or gated repository, revision or file is the user's
    (:class:`InputError`, :class:`UserError`, naming ``what``)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline, endpoint = hub_environment()
    reason = "HF_HUB_OFFLINE is set" if offline else _unreachable(endpoint, any_answer=True)
    if reason is not None:
        raise HubUnreachable(reason)
    try:
        return _hub_get(repo, filename, revision, patterns, cache, local_only=False)
    except LocalEntryNotFoundError as error:   # the connection failed on the way
        raise HubUnreachable(str(error).splitlines()[0]) from error
    except GatedRepoError as error:   # (a RepositoryNotFoundError: catch it first)
        raise UserError(f"{what}: the repository is gated; accept its terms on "
                        f"{endpoint}/{repo} and log in (hf auth login, or set HF_TOKEN)"
                        ) from error
    except RepositoryNotFoundError as error:
        raise InputError(f"{what}: no such model repository on the Hub (or it is private: "
                         f"log in with hf auth login, or set HF_TOKEN)") from error
    except RevisionNotFoundError as error:
        raise InputError(f"{what}: the repository has no revision {revision!r}") from error
    except (EntryNotFoundError, HFValidationError) as error:
        raise InputError(f"{what}: {error}") from error
    except Exception as error:  # network and server errors of huggingface_hub
        raise HubUnreachable(str(error) or type(error).__name__) from error


def fetch_hub(repo: str, filename: str | None = None, *, revision: str | None = None,
              patterns: list[str] | None = None, what: str, hint: str = "",
              download: bool = True) -> Path:
    """The one route to the Hugging Face Hub: the path of ``filename`` of model repository
    ``repo`` at ``revision`` (branch, tag or commit; default ``main``) — or, without
    ``filename``, the folder of its files matching ``patterns`` — in :func:`hub_cache_dir`,
    downloaded when missing (unless ``download`` is False).

    Raises :class:`WeightsUnavailableError` (exit 3) when it is neither cached nor
    downloadable, saying how to fetch it: ``what`` names it, ``hint`` is a last line.
    """
    cache = hub_cache_dir()
    found = _hub_cached(repo, filename, revision, patterns, cache)
    if found is not None:
        return found
    try:
        if not download:
            raise HubUnreachable("downloads disabled")
        return _hub_download(repo, filename, revision, patterns, cache, what)
    except HubUnreachable as error:
        command = " ".join(["hf download", repo, *([filename] if filename else []),
                            *(["--revision", revision] if revision else [])])
        raise WeightsUnavailableError(
            f"{what} is not in the Hugging Face cache and could not be downloaded ({error})."
            f"\n  download on a machine with internet:  {command}"
            f"\n  then copy its cache folder to:        {cache}"
            + (f"\n  {hint}" if hint else "")) from None


# --------------------------------------------------------------------------------------
# Open-vocabulary detectors (Hugging Face model repositories)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubWeights:
    """A public model repository on the Hugging Face hub."""

    repo: str
    description: str


OPEN_VOCAB_WEIGHTS: dict[str, HubWeights] = {
    "grounding-dino-tiny": HubWeights(
        "IDEA-Research/grounding-dino-tiny",
        "Grounding DINO Swin-T (IDEA-Research), open vocabulary, ~690 MB"),
    "grounding-dino-base": HubWeights(
        "IDEA-Research/grounding-dino-base",
        "Grounding DINO Swin-B (IDEA-Research), open vocabulary, ~930 MB"),
}
"""Registered open-vocabulary detectors (``detector.type: grounding_dino``)."""
DEFAULT_OPEN_VOCAB = "grounding-dino-tiny"
_HUB_FILES = ["*.json", "*.safetensors", "*.txt"]  # config, weights, tokenizer


def resolve_open_vocab(name_or_path: str, download: bool = True) -> Path:
    """The local folder (``config.json``, weights, tokenizer files) of an open-vocabulary
    detector given by registered name (:data:`OPEN_VOCAB_WEIGHTS`) or local folder; a
    registered one comes through :func:`fetch_hub`."""
    if name_or_path not in OPEN_VOCAB_WEIGHTS:
        path = Path(name_or_path).expanduser()
        if (path / "config.json").is_file():
            return path
        raise FileNotFoundError(
            f"detector weights {name_or_path!r}: not a model folder (with config.json) and "
            f"not a registered name ({', '.join(OPEN_VOCAB_WEIGHTS)})")
    entry = OPEN_VOCAB_WEIGHTS[name_or_path]
    return fetch_hub(entry.repo, patterns=_HUB_FILES, download=download,
                     what=f"detector weights '{name_or_path}' ({entry.description}, "
                     f"{hub_environment()[1]}/{entry.repo})",
                     hint=f"or: CLIP4HOI_HOME={cache_root()} clip4hoi download {name_or_path}"
                     f"\n  (or give the path of a local copy of the repository instead of "
                     f"the name)")

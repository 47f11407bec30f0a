"""Class text embeddings, cached on disk.

Encoding the prompts of the 600 HICO-DET classes under the training-free scorer's 4
templates (2400 texts through the CLIP text encoder) takes 30 s or more on a CPU, at the
start of every run (a trained head's 600 learned prompts about a quarter of that). The
embeddings depend only on the CLIP text tower's weights, the prompts (templates, or the
head's learned prompt embeddings) and the class set, so they are kept in
``$CLIP4HOI_HOME/text/<key>.safetensors`` (default ``~/.cache/clip4hoi/text``) with ``key``
a SHA-256 of:

* the CLIP text tower's weights: every tensor's name, shape, dtype and up to 65536 of its
  values taken at an even stride (exact for any two different checkpoints in practice,
  and well under a second for ViT-L);
* the prompt templates, or a SHA-256 of the trained head's ``[PREFIX]`` and ``[CONJUN]``
  embeddings; per class, the verb, object id and sentence;
* the format version of this module.

Files are written atomically (a unique temporary file in the same folder, fsync, rename),
so concurrent runs never read a torn file. Every read is checked
(:func:`embedding_problem`: shape, finite values): a file that cannot be read or fails the
check is encoded anew and replaced, with a warning. ``CLIP4HOI_TEXT_CACHE`` moves the
cache to another folder, or turns it off with ``0``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import Tensor
from tqdm import tqdm

from clip4hoi.data.metadata import HOIClassSet
from clip4hoi.fileio import sweep_temp_files, write_atomic
from clip4hoi.models.clip import CLIPEncoder
from clip4hoi.models.model import CLIP4HOI
from clip4hoi.models.precision import full_precision
from clip4hoi.models.training_free import TrainingFreeHOI, class_prompts, ensemble_text

FORMAT = "clip4hoi-text-embeddings-1"
_SAMPLES = 65536
_CHUNK = 256  # prompts per text-encoder call (one progress step)


def text_cache_dir() -> Path | None:
    """``$CLIP4HOI_TEXT_CACHE`` (``0``: no cache), else ``$CLIP4HOI_HOME/text``."""
    setting = os.environ.get("CLIP4HOI_TEXT_CACHE", "")
    if setting == "0":
        return None
    if setting:
        return Path(setting)
    from clip4hoi.weights import cache_root

    return cache_root() / "text"


def clip_text_fingerprint(clip: CLIPEncoder) -> str:
    """SHA-256 of the text tower's weights (sampled, see the module docstring)."""
    digest = hashlib.sha256()
    for name, tensor in clip.model.state_dict().items():
        if name.startswith("visual."):
            continue
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLES)
        sample = flat[::step].float().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def cache_key(model: TrainingFreeHOI | CLIP4HOI, classes: HOIClassSet) -> str:
    """The file name stem of ``classes``' embeddings under ``model``'s CLIP text tower and
    prompts: the templates of the training-free scorer, the learned ``[PREFIX]`` and
    ``[CONJUN]`` embeddings of a trained head."""
    if isinstance(model, CLIP4HOI):
        learned = torch.cat([model.classifier.prefix.detach().float().cpu().reshape(-1),
                             model.classifier.conjunction.detach().float().cpu().reshape(-1)])
        prompts = ["learned", hashlib.sha256(learned.numpy().tobytes()).hexdigest()]
    else:
        prompts = list(model.config.templates)
    description = {"format": FORMAT, "clip": clip_text_fingerprint(model.clip),
                   "prompts": prompts,
                   "classes": [list(classes.verbs), list(classes.object_names),
                               list(classes.sentences)]}
    return hashlib.sha256(json.dumps(description).encode()).hexdigest()[:32]


def encode_with_progress(model: TrainingFreeHOI | CLIP4HOI, classes: HOIClassSet) -> Tensor:
    """``[K, E]`` class embeddings, with a progress bar on stderr when there are many
    (a trained head's prompts are encoded in one call)."""
    if isinstance(model, CLIP4HOI):
        with torch.no_grad():
            return model.classifier.text_embeddings(model.clip, classes)
    templates = model.config.templates
    prompts = class_prompts(classes, templates)
    chunks = range(0, len(prompts), _CHUNK)
    bar = tqdm(chunks, desc=f"encode {len(prompts)} class prompts", unit="chunk",
               disable=len(chunks) < 3, leave=False, file=sys.stderr)
    with torch.no_grad():
        embeddings = [model.clip.encode_text(prompts[i:i + _CHUNK]) for i in bar]
    return ensemble_text(torch.cat(embeddings), len(classes), len(templates))


def text_in_fp32(model: object, classes: HOIClassSet) -> None:
    """Have ``model``'s memory cache hold ``classes``' embeddings (a training-free scorer or
    a trained CLIP4HOI; others: nothing), encoding them now in fp32 when it does not: a
    bf16 forward would encode them in bf16."""
    if isinstance(model, CLIP4HOI):
        with torch.no_grad(), full_precision(model.classifier.prefix.device):
            model.classifier.text_embeddings(model.clip, classes)
    elif isinstance(model, TrainingFreeHOI):
        with torch.no_grad():
            model.text_embeddings(classes)   # (in fp32 whatever the autocast state)


def remember_text(model: TrainingFreeHOI | CLIP4HOI, classes: HOIClassSet, text: Tensor
                  ) -> Tensor:
    """Put ``text`` into the model's memory cache (what its forward pass reads)."""
    if isinstance(model, CLIP4HOI):
        with torch.no_grad():
            return model.classifier.text_embeddings(model.clip, classes, text)
    return model.text_embeddings(classes, text)


def cached_text_embeddings(model: TrainingFreeHOI | CLIP4HOI, classes: HOIClassSet,
                           cache_dir: Path | None = None) -> tuple[Tensor, bool]:
    """``classes``' embeddings ``[K, E]`` for ``model`` (a training-free scorer or a
    trained CLIP4HOI; also stored in its memory cache) and whether they came from the
    disk cache in ``cache_dir`` (default :func:`text_cache_dir`)."""
    folder = cache_dir if cache_dir is not None else text_cache_dir()
    path = folder / f"{cache_key(model, classes)}.safetensors" if folder else None
    if path is not None and path.is_file():
        try:
            text = load_file(str(path))["text"]
            problem = embedding_problem(text, len(classes), model.clip.embed_dim)
        except Exception as error:  # a torn or foreign file: encode anew and replace it
            problem = f"unreadable: {str(error).strip() or type(error).__name__}"
        if problem is None:
            return remember_text(model, classes, text), True
        print(f"clip4hoi: warning: the cached class embeddings {path} are unusable "
              f"({problem}); encoding them again", file=sys.stderr)
    text = encode_with_progress(model, classes)
    if path is not None:
        try:
            _save_atomic(path, text)
        except OSError as error:  # a read-only or full cache is not fatal
            print(f"clip4hoi: could not cache the class embeddings in {path.parent} "
                  f"({error.strerror or error})", file=sys.stderr)
    return remember_text(model, classes, text), False


def embedding_problem(text: Tensor, rows: int, dim: int) -> str | None:
    """Why cached class embeddings cannot be used, or None when they can: they must be
    ``[rows, dim]`` floating-point values, finite, with no all-zero row (a disk error, a
    half-written or foreign file, an encoder that overflowed)."""
    if not text.is_floating_point():
        return f"{text.dtype} values, expected floating point"
    if tuple(text.shape) != (rows, dim):
        return f"shape {tuple(text.shape)}, expected ({rows}, {dim})"
    if not bool(torch.isfinite(text).all()):
        return "non-finite values (NaN or infinity)"
    if not bool((text != 0).any(dim=1).all()):
        return "an all-zero row"
    return None


def _save_atomic(path: Path, text: Tensor) -> None:
    sweep_temp_files(path.parent)   # what killed runs left
    write_atomic(path, save({"text": text.detach().cpu().contiguous()},
                            metadata={"format": FORMAT}))

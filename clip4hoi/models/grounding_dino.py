"""A frozen Grounding DINO (Liu et al., ECCV 2024): the open-vocabulary detector of CLIP4HOI.

It wraps ``transformers``' ``GroundingDinoForObjectDetection`` (optional extra
``clip4hoi[openvocab]``) and hands the head the same raw outputs as :class:`~.detr.DETR`:

* ``pred_boxes [B, Q', 4]``: normalised cxcywh boxes (those of the last decoder layer);
* ``hidden_states [B, Q', D]``: the last decoder layer after its LayerNorm — the states the
  box and class heads read (``D = d_model = 256`` for the public checkpoints, as DETR's);
* ``pred_logits [B, Q', V + 1]``: each query's best object of the vocabulary, written as
  DETR-style logits whose softmax is ``p`` for that object, ``1 - p`` for the last "no
  object" column and 0 elsewhere — so DETR's proposal code reads Grounding DINO's
  detections unchanged (:func:`best_object_logits`).

The detector is prompted with object names: ``"person. guitar. camel."``. A name's score is
the sigmoid of the best logit over its own tokens (the separators ``.`` and ``[CLS]`` /
``[SEP]`` are not part of any name); a query's label is its best-scoring name. Labels are
ids of a *vocabulary* — the class set's object names (:attr:`HOIClassSet.object_vocabulary`),
``person`` = 0 — so "the class's object is the detected object" compares vocabulary ids.
The text encoder reads at most ``max_text_len`` (256) tokens: a longer vocabulary is split
into chunks of whole names, each prompted with ``person`` first, and the queries of all
chunks are concatenated (``Q' = Q × chunks``; per-class NMS later merges the duplicates).
The whole detector runs in fp32 whatever the autocast state: its boxes are refined layer by
layer through the decoder, so unlike DETR there is no separate box head to keep in fp32
(:mod:`.precision`); being frozen, it costs only speed under bf16 training.

Shapes: ``B`` images, ``Q`` queries, ``L`` text tokens, ``V`` vocabulary size, ``n`` names
of one chunk.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from clip4hoi.errors import UserError
from clip4hoi.models.detr import pad_images
from clip4hoi.models.precision import full_precision

__all__ = ["GroundingDINO", "Prompt", "best_object_logits", "build_grounding_dino",
           "name_logits", "postprocess", "write_word_tokenizer"]

SEPARATOR = "."
_CACHE_SIZE = 8


def _transformers() -> Any:
    """The ``transformers`` module, or a clear error naming the extra to install."""
    try:
        import transformers
    except ImportError as error:
        raise UserError("detector.type grounding_dino needs the Hugging Face transformers "
                        "package: pip install 'clip4hoi[openvocab]'") from error
    return transformers


@dataclass(frozen=True)
class Prompt:
    """One text input of the detector: a chunk of object names."""

    input_ids: Tensor                 # [L] "[CLS] name . name . ... [SEP]"
    spans: tuple[tuple[int, int], ...]  # per name: its tokens input_ids[start:end]
    objects: Tensor                   # [n] vocabulary id of each name


def build_prompts(tokenizer: Any, names: Sequence[str], objects: Sequence[int],
                  max_length: int) -> list[Prompt]:
    """Prompts of at most ``max_length`` tokens for ``names`` (vocabulary ids ``objects``;
    the first name, ``person``, starts every chunk)."""
    separator = tokenizer.convert_tokens_to_ids(SEPARATOR)
    pieces = [tokenizer(name.replace("_", " ").lower(), add_special_tokens=False)["input_ids"]
              for name in names]
    for name, piece in zip(names, pieces, strict=True):
        if not piece or len(piece) + len(pieces[0]) + 4 > max_length:
            raise ValueError(f"object name {name!r} has {len(piece)} tokens: it does not fit "
                             f"the detector's text length ({max_length} tokens)")
    chunks: list[list[int]] = []
    for i in range(1, len(names)):
        used = 2 + sum(len(pieces[j]) + 1 for j in [0, *(chunks[-1] if chunks else [])])
        if not chunks or used + len(pieces[i]) + 1 > max_length:
            chunks.append([])
        chunks[-1].append(i)
    prompts = []
    for chunk in chunks or [[]]:
        ids, spans = [tokenizer.cls_token_id], []
        for j in [0, *chunk]:
            spans.append((len(ids), len(ids) + len(pieces[j])))
            ids += [*pieces[j], separator]
        ids.append(tokenizer.sep_token_id)
        prompts.append(Prompt(torch.tensor(ids), tuple(spans),
                              torch.tensor([objects[j] for j in [0, *chunk]])))
    return prompts


def name_logits(token_logits: Tensor, spans: Sequence[tuple[int, int]]) -> Tensor:
    """``[..., L]`` token logits -> ``[..., n]``: per name, the best logit over its tokens."""
    return torch.stack([token_logits[..., start:end].amax(-1) for start, end in spans], -1)


def best_object_logits(logits: Tensor, objects: Tensor, vocabulary_size: int) -> Tensor:
    """DETR-style logits ``[..., V + 1]`` of each query's best name: ``logits [..., n]`` (the
    names' logits) with vocabulary ids ``objects [n]``. The softmax of the result is the
    best name's probability ``p`` at its vocabulary id, ``1 - p`` in the last column ("no
    object") and 0 elsewhere."""
    best, index = logits.max(-1)                                               # [...] each
    out = logits.new_full((*logits.shape[:-1], vocabulary_size + 1), float("-inf"))
    out.scatter_(-1, objects.to(logits.device)[index][..., None], F.logsigmoid(best)[..., None])
    out[..., -1] = F.logsigmoid(-best)
    return out


class GroundingDINO(nn.Module):
    """Frozen Grounding DINO prompted with a vocabulary of object names.

    ``forward(images, vocabulary)`` returns ``pred_logits [B, Q', V + 1]``, ``pred_boxes
    [B, Q', 4]`` and ``hidden_states [B, Q', D]`` (see the module docstring). ``config``
    holds ``hidden_dim`` (D), ``num_queries`` (Q) and ``max_text_len`` like DETR's.
    """

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config: dict[str, int] = {"hidden_dim": model.config.d_model,
                                       "num_queries": model.config.num_queries,
                                       "max_text_len": model.config.max_text_len}
        self._prompt_cache: OrderedDict[tuple, list[Prompt]] = OrderedDict()
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> GroundingDINO:
        """Always eval mode (frozen), whatever a parent module asks."""
        return super().train(False)

    def prompts(self, vocabulary: Sequence[str], objects: Sequence[int] | None = None
                ) -> list[Prompt]:
        """The prompts for the vocabulary ids ``objects`` (default: all; ``0``, person,
        is always included); cached per vocabulary."""
        used = sorted({0, *(range(len(vocabulary)) if objects is None else objects)})
        key = (tuple(vocabulary), tuple(used))
        if key not in self._prompt_cache:
            self._prompt_cache[key] = build_prompts(
                self.tokenizer, [vocabulary[i] for i in used], used,
                self.config["max_text_len"])
            while len(self._prompt_cache) > _CACHE_SIZE:
                self._prompt_cache.popitem(last=False)
        self._prompt_cache.move_to_end(key)
        return self._prompt_cache[key]

    @torch.no_grad()
    def forward(self, images: Sequence[Tensor], vocabulary: Sequence[str],
                objects: Sequence[int] | None = None) -> dict[str, Tensor]:
        """``images``: ImageNet-normalised ``[3, H, W]`` tensors (any sizes; padded
        bottom/right). Prompts with the names of ``vocabulary`` whose ids are in
        ``objects`` (default: all) and returns the outputs of all prompts' queries."""
        pixels, padding = pad_images(images)                          # [B, 3, H, W], [B, H, W]
        with full_precision(pixels.device):
            return self._forward(pixels.float(), padding, vocabulary, objects)

    def _forward(self, pixels: Tensor, padding: Tensor, vocabulary: Sequence[str],
                 objects: Sequence[int] | None) -> dict[str, Tensor]:
        logits, boxes, hidden = [], [], []
        for prompt in self.prompts(vocabulary, objects):
            ids = prompt.input_ids.to(pixels.device).repeat(len(pixels), 1)        # [B, L]
            out = self.model(pixel_values=pixels, pixel_mask=(~padding).long(),
                             input_ids=ids, attention_mask=torch.ones_like(ids),
                             token_type_ids=torch.zeros_like(ids))
            names = name_logits(out.logits.float(), prompt.spans)                  # [B, Q, n]
            logits.append(best_object_logits(names, prompt.objects, len(vocabulary)))
            boxes.append(out.pred_boxes)
            hidden.append(out.intermediate_hidden_states[:, -1])                   # [B, Q, D]
        return {"pred_logits": torch.cat(logits, 1), "pred_boxes": torch.cat(boxes, 1),
                "hidden_states": torch.cat(hidden, 1)}


def postprocess(outputs: dict[str, Tensor], image_sizes: Sequence[Sequence[int]],
                threshold: float = 0.0) -> list[dict[str, Tensor]]:
    """Detections from :meth:`GroundingDINO.forward` outputs, like ``transformers``'
    ``post_process_grounded_object_detection`` but with labels as vocabulary ids: per image
    ``scores [N]``, ``labels [N]`` and ``boxes [N, 4]`` (xyxy pixels of ``image_sizes``
    ``(h, w)``) of the queries scoring above ``threshold``."""
    results = []
    for logits, boxes, (height, width) in zip(outputs["pred_logits"], outputs["pred_boxes"],
                                             image_sizes, strict=True):
        scores, labels = logits.softmax(-1)[:, :-1].max(-1)                          # [Q']
        keep = scores > threshold
        scale = boxes.new_tensor([width, height, width, height])
        results.append({"scores": scores[keep], "labels": labels[keep],
                        "boxes": box_convert(boxes[keep], "cxcywh", "xyxy") * scale})
    return results


SPECIAL_TOKEN_IDS = {"[CLS]": 101, "[SEP]": 102, ".": 1012, "?": 1029}
"""The BERT (``bert-base-uncased``) ids that Grounding DINO's text masks treat as special."""


def write_word_tokenizer(folder: str | Path, words: Sequence[str]) -> Path:
    """A tiny BERT WordPiece tokenizer folder (``vocab.txt``, ``tokenizer_config.json``)
    knowing ``words`` and Grounding DINO's special tokens at their BERT ids: for random
    tiny models (tests, smoke runs) when the real tokenizer cannot be downloaded. Its ids
    stay below ``1030 + len(words)``."""
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]",
             "[MASK]"]
    for token, index in sorted(SPECIAL_TOKEN_IDS.items(), key=lambda item: item[1]):
        if token not in vocab:
            vocab += [f"[unused{i}]" for i in range(len(vocab), index)] + [token]
    vocab += [w for w in dict.fromkeys(words) if w not in vocab]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    return folder


def _load_tokenizer(source: str | Path) -> Any:
    """A tokenizer from a local folder (``vocab.txt`` / ``tokenizer.json`` and
    ``tokenizer_config.json``, as in a model repository); never downloads."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"Grounding DINO tokenizer {source}: not a folder (expected a "
                                f"model or tokenizer folder with its tokenizer files)")
    return _transformers().AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def build_grounding_dino(folder: str | Path | None = None,
                         architecture: dict[str, Any] | None = None,
                         tokenizer: str | Path | None = None) -> GroundingDINO:
    """The frozen Grounding DINO of a local model folder (``config.json``, weights and the
    tokenizer files, as ``clip4hoi.weights.resolve_open_vocab`` returns it), or — with
    ``folder`` None — randomly initialised from ``architecture`` (``GroundingDinoConfig``
    keyword arguments; default the Swin-T "grounding-dino-tiny" one) with the tokenizer of
    the folder ``tokenizer``."""
    transformers = _transformers()
    if folder is not None:
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"Grounding DINO weights {folder}: not a model folder "
                                    f"(no config.json)")
        model = transformers.GroundingDinoForObjectDetection.from_pretrained(
            str(folder), local_files_only=True)
        tokenizer = tokenizer or folder
    else:
        if tokenizer is None:
            raise ValueError("random Grounding DINO weights need a tokenizer folder")
        model = transformers.GroundingDinoForObjectDetection(
            transformers.GroundingDinoConfig(**(architecture or {})))
    return GroundingDINO(model.float(), _load_tokenizer(tokenizer))

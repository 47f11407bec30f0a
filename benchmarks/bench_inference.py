"""Inference speed of CLIP4HOI and of the training-free modes, full-size architectures with
random weights (DETR-R50 with 91 classes, CLIP ViT-B/16), on one 640×480 photo-like image
resized to the detector's test scale (800×1066) as :class:`HOIDetector` does.

(a) Trained-model path (:func:`clip4hoi.models.model.build_model`): the time of each stage —
    DETR, CLIP image encoder, head (HO interactor + HOI decoder + HOI classifier, timed by
    forward hooks; text embeddings of the 600 HICO-DET classes cached), post-processing
    (the rest of ``forward_features``: proposals, pairs, score fusion, outputs) — with the
    DETR outputs replaced by 15 humans and 15 objects (435 pairs), and the ratio
    (head + post) / (DETR + CLIP image), which should stay below 15 %. Also the text
    encoding of the 600 classes (learnable prompts and plain sentences, trimmed to the
    longest prompt) against open_clip's encoder on sequences padded to 77 tokens, and the
    trainable parameter count.
(b) Training-free (:mod:`clip4hoi.models.training_free`): ``crop`` pairs per second (distinct
    union boxes: crop + CLIP image encoder), and the ``dense`` mode's CLIP work (one dense
    pass, pooling and scoring of the 435 pairs) relative to one plain CLIP image pass
    (target ≤ 1.3×); the one-off text embedding of 600 classes × the default templates.
(c) Optionally (``--cli``): ``clip4hoi detect --random-weights --mode crop|dense`` on two
    copies of the image, as a subprocess: wall time and the per-image ``seconds`` of the
    JSONs (the first image includes the class prompts' encoding).
(d) Optionally (``--open-vocab``, needs transformers): the open-vocabulary detector,
    Grounding DINO Swin-T (the "grounding-dino-tiny" architecture, random weights, a
    30522-token BERT vocabulary written on the fly), against DETR-R50 on the same image:
    prompted with "person. guitar. camel.", then with 100 and 200 more object names (one
    token each, as most COCO names; 200 more exceed the 256-token text length, so the
    detector runs twice), giving the cost per extra 100 names within one prompt and beyond.
(e) Frozen networks, variants interleaved (``--sections frozen``): DETR-R50 (batch-norm
    statistics randomised, so that folding is not a no-op) and the CLIP image pass of the
    trained path in today's eager fp32 (the reference), batch norm folded, folded +
    channels-last, bf16 autocast and ONNX Runtime fp32 (unless ``--no-onnx``; the graphs of
    ``clip4hoi.engine.export.export_onnx``), with each variant's error against the
    reference: DETR boxes in pixels and class probabilities, CLIP embedding cosines; and
    the sum of the fastest DETR and CLIP forwards.
(f) bf16 against fp32 (``--sections bf16``): ``detect --mode dense`` and the trained path
    (random head) on the 15 × 15 scene, 600 HICO-DET classes, two images: how many of the
    fp32 top-100 detections are not in the bf16 top-100, and the score error.
(g) The whole ``clip4hoi detect`` (``--sections detect``), as a subprocess on one thread,
    on ``--images`` photo-like 640×480 images with 15 humans and 15 objects each given by
    ``--boxes`` (435 pairs for the head, 600 classes), with (e)'s DETR and CLIP as weights
    files and a random trained head on them: PyTorch fp32, PyTorch bf16, ONNX Runtime
    (``detect --onnx`` of the export) and, with ``--baseline COMMIT`` (as
    ``bench_train.py``; default be3736a, before this work), that commit's ``detect`` on
    the same files; per image (between the first and the last image's result), the
    speed-up against the baseline, and the ratio to the sum of (e)'s fastest DETR and CLIP
    forwards (goal <= 1.15: the rest of the pipeline nearly free).
(h) Start-up to the first image, from the same runs (the process's start to the first
    image's result, less that image's own time), and of a one-image ``detect
    --random-weights --mode dense`` here and at the baseline (goal <= 0.5×).
    (g) and (h) interleave the variants over ``--rounds`` rounds after a warm-up round.
(i) Threads and batches (``--sections threads``): (e)'s folded channels-last DETR and CLIP
    image pass per image with 1 and 2 torch threads at batch 1, and with 1 thread at batch
    2 and 4 — what ``detect``'s CPU defaults of ``--threads`` and ``--batch-size`` rest on.

Each timing is the median of ``--repeat`` runs after one warm-up, the functions compared
run interleaved (a slow phase of a shared machine hits all of them alike); torch keeps its
default number of threads unless ``--threads`` says otherwise. The load average before and
after is printed: with other jobs on the cores, torch's threads wait on each other and
times can grow tenfold (``--threads 1`` is then steadier).

Usage::

    python benchmarks/bench_inference.py [--repeat 3] [--crops 64] [--cli] [--open-vocab]
        [--sections trained,text,free,frozen,bf16,detect,threads] [--no-onnx] [--threads N]
        [--baseline be3736a] [--images 3] [--rounds 2] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.ops import box_convert, box_iou
from torchvision.ops.misc import FrozenBatchNorm2d

from clip4hoi.config import ModelConfig, TrainingFreeConfig, apply_overrides
from clip4hoi.data.metadata import COCO_CATEGORY_IDS, hicodet_classes, words
from clip4hoi.data.transforms import HOITransform
from clip4hoi.models.clip import build_clip
from clip4hoi.models.detr import DETR, normalize
from clip4hoi.models.interactor import enumerate_pairs, image_proposals
from clip4hoi.models.model import CLIP4HOI, FrozenFeatures, build_model
from clip4hoi.models.training_free import (
    TrainingFreeHOI,
    calibrated_scores,
    pool_patches,
    union_boxes,
)

REPO = Path(__file__).resolve().parents[1]
RANDOM = ["detector.weights=random", "clip.pretrained=null"]
N_HUMANS = N_OBJECTS = 15


def median_times(functions: dict[str, Callable[[], Any]], repeat: int, warmup: int = 1
                 ) -> dict[str, float]:
    """Median wall time in seconds of each function over ``repeat`` rounds after ``warmup``
    rounds; each round calls every function once, interleaved, so that a slow phase of a
    shared machine affects all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_ in range(warmup + repeat):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def machine() -> str:
    """CPU model, cores, torch threads and version, load average (other jobs)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads; load average {load}")


def photo_like(width: int = 640, height: int = 480, seed: int = 0) -> Tensor:
    """A uint8 image ``[3, H, W]`` with photo-like statistics: smooth colour regions at
    several scales plus sensor noise."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, 3, height, width)
    for cells, weight in ((3, 0.5), (12, 0.3), (48, 0.15)):
        field = torch.rand(1, 3, cells, cells * width // height, generator=generator)
        image += weight * F.interpolate(field, size=(height, width), mode="bicubic",
                                        align_corners=False)
    image += 0.03 * torch.randn(1, 3, height, width, generator=generator)
    return (image[0].clamp(0, 1) * 255).round().to(torch.uint8)


def scene_detections(num_classes: int, size: tuple[int, int], queries: int
                     ) -> tuple[Tensor, Tensor]:
    """DETR logits ``[1, Q, C+1]`` and boxes ``[1, Q, 4]`` (cxcywh normalised) holding 15
    humans and 15 objects in disjoint cells of a 6×5 grid (all survive NMS; shifted a
    little so that only (h1, h2) and (h2, h1) share a union box), probability 0.9 each,
    no-object elsewhere. Labels are COCO category ids (91-class DETR)."""
    height, width = size
    logits = torch.full((1, queries, num_classes + 1), -30.0)
    logits[..., -1] = 0.0
    boxes = torch.full((1, queries, 4), 0.5)
    labels = [COCO_CATEGORY_IDS[0]] * N_HUMANS + list(COCO_CATEGORY_IDS[1:N_OBJECTS + 1])
    for i, label in enumerate(labels):
        row, col = divmod(i, 6)
        box = torch.tensor([col * width / 6 + 8 + i / 2, row * height / 5 + 8,  # no two
                            (col + 1) * width / 6 - 8, (row + 1) * height / 5 - 8 - i / 4])
        logits[0, i, label], logits[0, i, -1] = torch.tensor(0.9).log(), torch.tensor(0.1).log()
        boxes[0, i] = box_convert(box / torch.tensor([width, height, width, height]),
                                  "xyxy", "cxcywh")
    return logits, boxes


class StageTimer:
    """Wall time spent in named submodules (forward hooks), summed since ``reset``."""

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        self.totals = dict.fromkeys(modules, 0.0)
        self._start = 0.0
        for name, module in modules.items():
            module.register_forward_pre_hook(self._enter)
            module.register_forward_hook(lambda *_, name=name: self._exit(name))

    def reset(self) -> None:
        self.totals = dict.fromkeys(self.totals, 0.0)

    def _enter(self, *_: Any) -> None:
        self._start = time.perf_counter()

    def _exit(self, name: str) -> None:
        self.totals[name] += time.perf_counter() - self._start


# ----------------------------------------------------------------------- (a) trained model


def bench_trained(model: CLIP4HOI, image: Tensor, repeat: int) -> dict[str, Any]:
    size = (int(image.shape[1]), int(image.shape[2]))
    real = model.extract_features([image])
    logits, boxes = scene_detections(model.detector.config["num_classes"], size,
                                     model.detector.config["num_queries"])
    features = FrozenFeatures(logits, boxes, real.hidden, real.clip_global, real.clip_patches,
                              real.grid)
    (out,) = model.forward_features(features, [size])  # caches the text embeddings
    assert len(out["scores"]) > 0
    timer = StageTimer({"interactor": model.interactor, "decoder": model.decoder,
                        "classifier": model.classifier})
    parts: list[dict[str, float]] = []

    def run_head() -> None:
        timer.reset()
        model.forward_features(features, [size])
        parts.append(timer.totals)

    times = median_times({
        "detr": lambda: model.detector(normalize([image])),
        "clip": lambda: model.clip.encode_image(model.clip.preprocess([image]),
                                                layers=tuple(model.config.clip.layers)),
        "head_and_post": run_head}, repeat)
    parts = parts[1:]  # the first round is the warm-up
    head_parts = {name: statistics.median(p[name] for p in parts) for name in timer.totals}
    head_time = statistics.median(sum(p.values()) for p in parts)
    post_time = times["head_and_post"] - head_time
    return {
        "image_size": list(size), "pairs": N_HUMANS * (N_HUMANS - 1 + N_OBJECTS),
        "detections": len(out["scores"]), "detr_s": times["detr"],
        "clip_image_s": times["clip"], "head_s": head_time, "head_parts_s": head_parts,
        "post_s": post_time,
        "head_ratio": (head_time + post_time) / (times["detr"] + times["clip"]),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def bench_text(model: CLIP4HOI, repeat: int) -> dict[str, Any]:
    """600 HICO-DET classes: learnable prompts and plain sentences, trimmed, against
    open_clip's ``encode_text`` on the sentences padded to 77 tokens."""
    classes = hicodet_classes()
    clip, classifier = model.clip, model.classifier
    objects = [words(name) for name in classes.object_names]
    sentences = list(classes.sentences)
    ids = clip.tokenize(sentences)
    times = median_times({
        "prompts": lambda: clip.encode_prompts(list(classes.verbs), objects, classifier.prefix,
                                               classifier.conjunction),
        "trimmed": lambda: clip.encode_text(sentences),
        "padded": lambda: clip.model.encode_text(ids)}, repeat, warmup=0)
    eot = ids.argmax(-1)
    return {"classes": len(classes), "prompts_trimmed_s": times["prompts"],
            "sentences_trimmed_s": times["trimmed"], "sentences_padded77_s": times["padded"],
            "longest_sentence_tokens": int(eot.max()) + 1,
            "prompt_tokens": int(eot.max()) + 1 + len(classifier.prefix)
            + len(classifier.conjunction)}


# -------------------------------------------------------------------------- (b) training-free


def bench_training_free(model: CLIP4HOI, image: Tensor, repeat: int, n_crops: int
                        ) -> dict[str, Any]:
    size = (int(image.shape[1]), int(image.shape[2]))
    config = apply_overrides(TrainingFreeConfig(), RANDOM)
    free = TrainingFreeHOI(config, model.detector, model.clip, hicodet_classes())
    classes = hicodet_classes()
    start = time.perf_counter()
    text = free.text_embeddings(classes)
    text_time = time.perf_counter() - start

    logits, boxes = scene_detections(model.detector.config["num_classes"], size,
                                     model.detector.config["num_queries"])
    hidden = torch.zeros(1, logits.shape[1], model.detector.config["hidden_dim"])
    inst = image_proposals(logits[0], boxes[0], hidden[0], free.label_to_object, size,
                           config.detector)
    h, o = enumerate_pairs(inst.objects)
    union = union_boxes(inst.boxes[h], inst.boxes[o], size, config.margin)    # [P, 4]
    distinct = torch.unique(union, dim=0)
    crops = distinct[:n_crops]
    valid = inst.objects[o][:, None] == torch.tensor(classes.objects)[None]   # [P, K]

    def dense() -> Tensor:
        out = free.clip.encode_image(free.clip.preprocess([image]), dense=True)
        pooled = pool_patches(out.dense_embeddings[0], union, out.grid, config.dense_pooling)
        return calibrated_scores(pooled, text, valid, config.temperature)

    times = median_times({
        "crop": lambda: free.crop_features(image, crops),
        "plain": lambda: free.clip.encode_image(free.clip.preprocess([image])),
        "dense_pass": lambda: free.clip.encode_image(free.clip.preprocess([image]),
                                                     dense=True),
        "dense": dense}, repeat)
    return {
        "text_embeddings_s": text_time, "templates": len(config.templates),
        "crop_batch_size": config.crop_batch_size, "crops": len(crops),
        "crop_s": times["crop"], "crop_pairs_per_s": len(crops) / times["crop"],
        "scene_pairs": len(h), "scene_distinct_crops": len(distinct),
        "clip_plain_s": times["plain"], "clip_dense_pass_s": times["dense_pass"],
        "dense_scoring_s": times["dense"], "dense_ratio": times["dense"] / times["plain"],
    }


# ------------------------------------------------------------------- (d) open vocabulary


def write_bert_vocabulary(folder: Path, words_: list[str]) -> Path:
    """A 30522-token BERT WordPiece vocabulary (bert-base-uncased's size and special ids:
    [CLS] 101, [SEP] 102, "." 1012) holding ``words_``, as a tokenizer folder."""
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]",
             "[MASK]"]
    vocab += [f"[unused{i}]" for i in range(len(vocab), 1012)] + ["."]
    vocab += [f"[unused{i}]" for i in range(len(vocab), 1029)] + ["?", *words_]
    vocab += [f"##x{i}" for i in range(30522 - len(vocab))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    return folder


def bench_open_vocab(model: CLIP4HOI, image: Tensor, repeat: int) -> dict[str, Any]:
    """Grounding DINO Swin-T vs DETR-R50 on ``image``; prompts of 3, 103 and 203 names."""
    from clip4hoi.models.grounding_dino import build_grounding_dino

    extra = [f"thing{i}" for i in range(200)]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = write_bert_vocabulary(Path(tmp), ["person", "guitar", "camel", *extra])
        gdino = build_grounding_dino(None, None, tokenizer)
    base = ["person", "guitar", "camel"]
    vocabularies = {n: base + extra[:n - 3] for n in (3, 103, 203)}
    pixels = normalize([image])
    times = median_times({
        "detr": lambda: model.detector(pixels),
        "gdino_3": lambda: gdino(pixels, vocabularies[3])}, repeat)
    more = median_times({f"gdino_{n}": (lambda v=v: gdino(pixels, v))
                         for n, v in vocabularies.items() if n > 3}, 1)
    times.update(more)
    prompts = {n: gdino.prompts(v) for n, v in vocabularies.items()}
    return {
        "image_size": [int(image.shape[1]), int(image.shape[2])],
        "detr_s": times["detr"], "gdino_s": {n: times[f"gdino_{n}"] for n in vocabularies},
        "tokens": {n: [len(p.input_ids) for p in ps] for n, ps in prompts.items()},
        "ratio_to_detr": times["gdino_3"] / times["detr"],
        "per_100_names_in_prompt_s": times["gdino_103"] - times["gdino_3"],
        "per_100_names_new_chunk_s": times["gdino_203"] - times["gdino_103"],
        "parameters": sum(p.numel() for p in gdino.parameters()),
    }


# ------------------------------------------------------- (e) frozen networks: variants


def randomize_batchnorm(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random frozen batch-norm statistics (scale and variance in [0.5, 1.5], shift and
    mean ±0.2), as a trained network has: folding them is then not a no-op."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, FrozenBatchNorm2d):
                n = bn.weight.numel()
                bn.weight.copy_(0.5 + torch.rand(n, generator=generator))
                bn.bias.copy_(0.2 * torch.randn(n, generator=generator))
                bn.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return module


@dataclass
class Networks:
    """The full-size frozen networks of sections (e), (g) and (h), once: DETR-R50 (91
    classes, batch-norm statistics randomised) and CLIP ViT-B/16 with random weights, as
    weights files (DETR in the facebookresearch layout), a random trained head on them
    that takes the annotated boxes as proposals (``head.safetensors``, its config naming
    the two files) and, unless ``--no-onnx``, the ONNX export of that model."""

    detr: DETR                 # unfolded: today's eager network
    clip: Any                  # CLIPEncoder
    folder: Path
    head: Path
    onnx: Path | None
    onnx_export_s: dict[str, float]


def prepare_networks(folder: Path, onnx: bool) -> Networks:
    from safetensors.torch import save_file

    from clip4hoi.engine.checkpoint import save_checkpoint
    from clip4hoi.engine.export import export_onnx

    torch.manual_seed(0)
    detr = randomize_batchnorm(DETR(num_classes=91))
    clip = build_clip("ViT-B-16")
    save_file({k: v.contiguous() for k, v in detr.state_dict().items()},
              folder / "detr.safetensors")
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()},
              folder / "clip.safetensors")
    config = apply_overrides(ModelConfig(), [
        f"detector.weights={folder / 'detr.safetensors'}",
        f"clip.pretrained={folder / 'clip.safetensors'}", "detector.use_gt_boxes=true",
        "head.logits=learned"])   # the form the baseline has: both read the same weights
    model = build_model(config).eval()
    save_checkpoint(model, folder / "head.safetensors")
    write_baseline_head(folder / "head.safetensors", folder / "baseline_head.safetensors")
    export_s: dict[str, float] = {}
    if onnx:
        start = time.perf_counter()
        export_onnx(model, folder / "onnx", log=sys.stdout)   # a line per graph
        export_s["detr + clip"] = time.perf_counter() - start
    return Networks(detr, clip, folder, folder / "head.safetensors",
                    folder / "onnx" if onnx else None, export_s)


def write_baseline_head(head: Path, out: Path) -> None:
    """``head`` as the baseline (before issue 19) reads it: its config without the keys
    that issue 19 added (``head.logits``, learned there; ``head.temperature``)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(head), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    config = json.loads(metadata["config"])
    assert config["head"].pop("logits") == "learned"
    config["head"].pop("temperature")
    save_file(tensors, str(out), metadata={**metadata, "config": json.dumps(config)})


def bench_frozen(image: Tensor, repeat: int, networks: Networks) -> dict[str, Any]:
    """DETR-R50 (91 classes, batch-norm statistics randomised) and the CLIP ViT-B/16 image
    pass of the trained path on ``image``, each variant interleaved with the others:
    today's eager fp32 (the reference), batch norm folded, folded + channels-last, bf16
    autocast (folded, channels-last) and ONNX Runtime fp32 (when exported)."""
    detr, clip = networks.detr, networks.clip
    folded = copy.deepcopy(detr).prepare_for_inference(channels_last=False)
    channels_last = copy.deepcopy(detr).prepare_for_inference(channels_last=True)
    layers = tuple(ModelConfig().clip.layers)
    pixels = normalize([image])
    clip_pixels = clip.preprocess([image])
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    detr_fns: dict[str, Callable[[], Any]] = {
        "eager fp32": lambda: detr(pixels),
        "folded fp32": lambda: folded(pixels),
        "folded channels-last fp32": lambda: channels_last(pixels)}
    clip_fns: dict[str, Callable[[], Any]] = {
        "eager fp32": lambda: clip.encode_image(clip_pixels, layers=layers)}

    def detr_bf16() -> Any:
        with bf16:
            return channels_last(pixels)

    def clip_bf16() -> Any:
        with bf16:
            return clip.encode_image(clip_pixels, layers=layers)

    detr_fns["bf16 autocast (folded, channels-last)"] = detr_bf16
    clip_fns["bf16 autocast"] = clip_bf16
    if networks.onnx is not None:
        from clip4hoi.engine.export import load_onnx

        export = load_onnx(networks.onnx)
        detr_fns["onnxruntime fp32"] = lambda: export.detector(pixels)
        clip_fns["onnxruntime fp32"] = lambda: export.clip.encode_image(clip_pixels, layers)
    functions = {**{f"detr: {k}": f for k, f in detr_fns.items()},
                 **{f"clip: {k}": f for k, f in clip_fns.items()}}
    times = median_times(functions, repeat)
    errors = {name: detr_error(detr(pixels), fn(), image.shape[-2:])
              for name, fn in detr_fns.items() if name != "eager fp32"}
    reference = clip.encode_image(clip_pixels, layers=layers)
    errors.update({f"clip: {name}": clip_error(reference, fn())
                   for name, fn in clip_fns.items() if name != "eager fp32"})
    detr_ref, clip_ref = times["detr: eager fp32"], times["clip: eager fp32"]
    return {
        "image_size": [int(image.shape[1]), int(image.shape[2])],
        "detr_s": {k: times[f"detr: {k}"] for k in detr_fns},
        "clip_s": {k: times[f"clip: {k}"] for k in clip_fns},
        "detr_speedup": {k: detr_ref / times[f"detr: {k}"] for k in detr_fns},
        "clip_speedup": {k: clip_ref / times[f"clip: {k}"] for k in clip_fns},
        "fastest_detr_plus_clip_s": min(times[f"detr: {k}"] for k in detr_fns)
        + min(times[f"clip: {k}"] for k in clip_fns),
        "onnx_export_s": networks.onnx_export_s, "errors_vs_eager_fp32": errors,
    }


def bench_threads(image: Tensor, repeat: int, networks: Networks) -> dict[str, Any]:
    """(i) DETR (folded, channels-last) + the CLIP image pass per image: 1 and 2 torch
    threads at batch 1, 1 thread at batch 2 and 4; variants interleaved."""
    detr = copy.deepcopy(networks.detr).prepare_for_inference(channels_last=True)
    clip, layers = networks.clip, tuple(ModelConfig().clip.layers)
    threads = torch.get_num_threads()

    def per_image(count: int, threads_: int) -> Callable[[], Any]:
        def run() -> None:
            torch.set_num_threads(threads_)
            detr(normalize([image] * count))
            clip.encode_image(clip.preprocess([image] * count), layers=layers)
        return run

    variants = {"1 thread, batch 1": (1, 1), "2 threads, batch 1": (1, 2),
                "1 thread, batch 2": (2, 1), "1 thread, batch 4": (4, 1)}
    times = median_times({name: per_image(*v) for name, v in variants.items()}, repeat)
    torch.set_num_threads(threads)
    return {name: times[name] / variants[name][0] for name in variants}


def detr_error(reference: dict[str, Tensor], other: dict[str, Tensor], size: Any
               ) -> dict[str, float]:
    """Box error in pixels of the image (max, median over the queries), class-probability
    error and relative logit error of ``other`` against ``reference``."""
    height, width = (int(v) for v in size)
    scale = torch.tensor([width, height, width, height])
    boxes = (box_convert(other["pred_boxes"].float(), "cxcywh", "xyxy")
             - box_convert(reference["pred_boxes"], "cxcywh", "xyxy")).abs() * scale
    probs = (other["pred_logits"].float().softmax(-1) - reference["pred_logits"].softmax(-1))
    logits = reference["pred_logits"]
    return {"box_px_max": float(boxes.max()), "box_px_median": float(boxes.median()),
            "prob_max": float(probs.abs().max()),
            "logit_rel": float((other["pred_logits"].float() - logits).abs().max()
                               / logits.abs().max())}


def clip_error(reference: Any, other: Any) -> dict[str, float]:
    """Smallest cosine between the global embeddings and between the patch tokens."""
    cos = F.cosine_similarity(other.global_embedding.float(), reference.global_embedding, -1)
    tokens = min(float(F.cosine_similarity(o.float(), r, -1).min())
                 for o, r in zip(other.patch_tokens, reference.patch_tokens, strict=True))
    return {"global_cos_min": float(cos.min()), "patch_cos_min": tokens}


class SceneDETR(torch.nn.Module):
    """A DETR whose detections are the 15 × 15 scene of :func:`scene_detections` (its
    decoder states are the real DETR's): a random DETR's queries differ so little that its
    class decisions would flip with any rounding, which a trained one's do not."""

    def __init__(self, detr: DETR) -> None:
        super().__init__()
        self.detr, self.config = detr, detr.config

    def forward(self, images: list[Tensor]) -> dict[str, Tensor]:
        out = self.detr(images)
        size = (int(images[0].shape[-2]), int(images[0].shape[-1]))
        logits, boxes = scene_detections(self.config["num_classes"], size,
                                         self.config["num_queries"])
        return {"pred_logits": logits.expand(len(images), -1, -1),
                "pred_boxes": boxes.expand(len(images), -1, -1),
                "hidden_states": out["hidden_states"]}


def bench_bf16_detections(images: list[Tensor]) -> dict[str, Any]:
    """What bf16 autocast changes in the detections against fp32 on the same images, for
    ``detect --mode dense`` and the trained path (random head), HICO-DET's 600 classes,
    on the 15 × 15 scene's proposals (:class:`SceneDETR`; DETR's own box and class
    errors are in (e)): how many of the fp32 top-100 are not in the bf16 top-100 (same
    class, both boxes at IoU >= 0.9) and the score error of those found in both."""
    from clip4hoi.engine.text_cache import cached_text_embeddings

    torch.manual_seed(0)
    detr = SceneDETR(randomize_batchnorm(DETR(num_classes=91)).prepare_for_inference())
    dense = apply_overrides(TrainingFreeConfig(mode="dense"), RANDOM)
    trained = build_model(apply_overrides(ModelConfig(), RANDOM)).eval()
    models = {"dense": TrainingFreeHOI(dense, detr, trained.clip, hicodet_classes()).eval()}
    trained.detector = detr
    models["trained"] = trained
    out: dict[str, Any] = {"images": len(images)}
    for name, model in models.items():
        with torch.no_grad():
            cached_text_embeddings(model, model.classes)
        per_image = []
        for image in images:
            with torch.no_grad():
                fp32 = model([image])[0]
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    bf16 = model([image])[0]
            per_image.append(compare_top(fp32, bf16))
        out[name] = {
            "detections": [p["detections"] for p in per_image],
            "changed_in_top100": [p["changed_in_top100"] for p in per_image],
            "score_abs_max": max(p["score_abs_max"] for p in per_image),
            "score_rel_median": statistics.median(p["score_rel_median"] for p in per_image)}
    return out


def compare_top(fp32: dict[str, Tensor], bf16: dict[str, Tensor], top: int = 100
                ) -> dict[str, Any]:
    """Top-``top`` detections of ``fp32`` missing from ``bf16``'s top (same class, both
    boxes at IoU >= 0.9); score and box errors of the matched ones."""
    def best(d: dict[str, Tensor]) -> dict[str, Tensor]:
        order = torch.argsort(d["scores"], descending=True)[:top]
        return {k: v[order] for k, v in d.items()}

    a, b = best(fp32), best(bf16)
    if not (len(a["scores"]) and len(b["scores"])):
        raise RuntimeError(f"no detections to compare ({len(a['scores'])} fp32, "
                           f"{len(b['scores'])} bf16)")
    iou = torch.minimum(box_iou(a["human_boxes"], b["human_boxes"]),
                        box_iou(a["object_boxes"], b["object_boxes"]))       # [top, top]
    same = (iou >= 0.9) & (a["hoi"][:, None] == b["hoi"][None, :])
    found = same.any(1)
    match = (iou * same).argmax(1)
    matched = found.nonzero().squeeze(1)
    j = match[matched]
    score_a, score_b = a["scores"][matched], b["scores"][j].float()
    boxes = torch.cat([(a["human_boxes"][matched] - b["human_boxes"][j]).abs(),
                       (a["object_boxes"][matched] - b["object_boxes"][j]).abs()])
    return {"detections": len(fp32["scores"]), "changed_in_top100": int((~found).sum()),
            "score_abs_max": float((score_a - score_b).abs().max()),
            "score_rel_median": float(((score_a - score_b).abs() / score_a).median()),
            "box_px_max": float(boxes.max()), "box_px_median": float(boxes.median())}


# -------------------------------------------------------------------------------- (c) CLI


def bench_cli(image: Tensor) -> dict[str, Any]:
    """``clip4hoi detect --random-weights --mode crop|dense`` on two copies of the 640×480
    image (the first one also encodes the class prompts)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for name in ("photo1.jpg", "photo2.jpg"):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(photos / name, quality=90)
        for mode in ("crop", "dense"):
            out = Path(tmp) / mode
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "clip4hoi", "detect", str(photos), "--out",
                            str(out), "--random-weights", "--mode", mode, "--device", "cpu"],
                           check=True, capture_output=True)
            wall = time.perf_counter() - start
            payloads = [json.loads((out / f"photo{i}.json").read_text()) for i in (1, 2)]
            results[mode] = {"wall_s": wall, "images": 2,
                             "seconds": [p["seconds"] for p in payloads],
                             "detections": [len(p["detections"]) for p in payloads]}
    return results


# --------------------------------------------- (g) detect per image, (h) start-up


def scene_target(width: int, height: int) -> dict[str, Tensor]:
    """The 15 humans and 15 objects of :func:`scene_detections` as annotated boxes of a
    ``width`` × ``height`` image (continuous xyxy pixels; objects: COCO-80 ids 1..15), a
    model target for ``detector.use_gt_boxes``."""
    _, boxes = scene_detections(91, (height, width), 100)
    xyxy = box_convert(boxes[0, :N_HUMANS + N_OBJECTS], "cxcywh", "xyxy") * torch.tensor(
        [width, height, width, height])
    return {"boxes_h": xyxy[:N_HUMANS], "boxes_o": xyxy[N_HUMANS:],
            "object": torch.arange(1, N_OBJECTS + 1)}


def write_scene(folder: Path, count: int) -> tuple[Path, Path]:
    """``count`` photo-like 640×480 JPEGs and a HICO-DET annotation file giving each the
    15 humans and 15 objects of :func:`scene_detections` (one annotated pair per human),
    for ``detect --boxes``: the head scores their 435 pairs on 600 classes."""
    from clip4hoi.data.metadata import COCO_OBJECTS, HICO_VERBS, hicodet_rare

    photos = folder / "photos"
    photos.mkdir(parents=True)
    classes = hicodet_classes()
    width, height = 640, 480
    target = scene_target(width, height)
    humans, objects = target["boxes_h"].tolist(), target["boxes_o"].tolist()
    hois = [classes.objects.index(o) for o in target["object"].tolist()]  # a class each
    names, annotation = [], []
    for i in range(count):
        name = f"scene{i}.jpg"
        Image.fromarray(photo_like(width, height, seed=i).permute(1, 2, 0).numpy()).save(
            photos / name, quality=90)
        names.append(name)
        annotation.append({"boxes_h": humans, "boxes_o": objects, "hoi": hois,
                           "object": [classes.objects[k] for k in hois],
                           "verb": [classes.verb_ids[k] for k in hois]})
    rare = set(hicodet_rare())
    data = {"annotation": annotation, "filenames": names, "size": [[width, height]] * count,
            "empty": [], "objects": list(COCO_OBJECTS), "verbs": list(HICO_VERBS),
            "correspondence": [[k, o, v] for k, (o, v) in
                               enumerate(zip(classes.objects, classes.verb_ids, strict=True))],
            "rare": sorted(rare), "non_rare": [k for k in range(len(classes)) if k not in rare]}
    path = folder / "instances_scene.json"
    path.write_text(json.dumps(data))
    return photos, path


def run_detect(tree: Path, argv: list[str], names: list[str], out: Path) -> dict[str, Any]:
    """``python -m clip4hoi detect`` of the code in ``tree`` on one thread
    (``OMP_NUM_THREADS=1``), writing into ``out``: when each image's JSON appears, counted
    from the start of the process. ``startup_s``: until the first image's JSON, less that
    image's own ``seconds`` (imports, building and loading the model, class embeddings,
    decoding; what a one-image run pays besides the image); ``intervals_s``: between
    consecutive JSONs (the whole pipeline per image, as a folder runs); ``seconds``: each
    image's model time (its JSON's)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "clip4hoi", "detect", *argv, "--out", str(out),
               "--device", "cpu", "--workers", "0", "--no-draw"]
    appeared: dict[str, float] = {}
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=tree)
        while process.poll() is None or len(appeared) < len(names):
            for name in names:
                if name not in appeared and (out / f"{name}.json").is_file():
                    appeared[name] = time.perf_counter() - start
            if process.poll() is not None and len(appeared) < len(names):
                break
            time.sleep(0.01)
        wall = time.perf_counter() - start
        if process.returncode or len(appeared) < len(names):
            log.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed:\n{log.read()[-3000:]}")
    seconds = [json.loads((out / f"{n}.json").read_text())["seconds"] for n in names]
    times = [appeared[n] for n in names]
    return {"startup_s": times[0] - seconds[0], "wall_s": wall, "seconds": seconds,
            "intervals_s": [b - a for a, b in pairwise(times)]}


def bench_detect(networks: Networks, baseline: Path | None, label: str, images: int,
                 rounds: int, folder: Path) -> dict[str, Any]:
    """(g) the whole ``detect`` of ``images`` scene images (:func:`write_scene`) with the
    trained head on the annotated boxes, in each precision and runtime of this tree and
    at the ``baseline`` commit (fp32, its only precision), from the same weights files;
    (h) a one-image ``detect --random-weights --mode dense``. All runs one thread, the
    variants interleaved over ``rounds`` rounds after a warm-up round (one image each:
    page cache, class-embedding caches)."""
    photos, annotations = write_scene(folder, images)
    names = sorted(p.name for p in photos.iterdir())
    one = folder / "one"
    one.mkdir()
    (one / names[0]).symlink_to(photos / names[0])
    head = ["--checkpoint", str(networks.head), "--boxes", str(annotations)]
    dense = ["--random-weights", "--mode", "dense"]
    thread = ["--threads", "1"]   # (the baseline has no such flag: OMP_NUM_THREADS=1)
    scene: dict[str, tuple[Path, list[str]]] = {
        "pytorch fp32": (REPO, [*head, "--precision", "fp32", *thread]),
        "pytorch bf16": (REPO, [*head, "--precision", "bf16", *thread])}
    if networks.onnx is not None:
        scene["onnxruntime fp32"] = (REPO, ["--onnx", str(networks.onnx), "--boxes",
                                            str(annotations), *thread])
    startup = {"this tree": (REPO, [*dense, *thread])}
    if baseline is not None:
        scene[f"{label} fp32"] = (baseline, ["--checkpoint", str(networks.folder /
                                             "baseline_head.safetensors"),
                                             *head[2:]])
        startup[label] = (baseline, dense)
    runs: dict[str, list[dict[str, Any]]] = {f"scene: {k}": [] for k in scene}
    runs.update({f"startup: {k}": [] for k in startup})
    count = 0
    for round_ in range(rounds + 1):
        for key, (tree, argv) in [*((f"scene: {k}", v) for k, v in scene.items()),
                                  *((f"startup: {k}", v) for k, v in startup.items())]:
            warm, is_scene = round_ == 0, key.startswith("scene")
            source, kept = (photos, names) if is_scene and not warm else (one, names[:1])
            count += 1
            result = run_detect(tree, [str(source), *argv], kept, folder / f"out{count}")
            if not warm:
                runs[key].append(result)
    out: dict[str, Any] = {"images": images, "rounds": rounds, "baseline": label}
    for key, results in runs.items():
        out[key] = {"startup_s": statistics.median(r["startup_s"] for r in results),
                    "runs": results}
        if key.startswith("scene"):   # the images after the first of each run
            out[key]["per_image_s"] = statistics.median(
                t for r in results for t in r["intervals_s"])
            out[key]["model_s"] = statistics.median(
                t for r in results for t in r["seconds"][1:])
    return out


SECTIONS = ("trained", "text", "free", "frozen", "bf16", "detect", "threads")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--crops", type=int, default=64,
                        help="distinct union boxes timed in crop mode")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--no-onnx", action="store_true",
                        help="(e), (g) without the ONNX Runtime variants")
    parser.add_argument("--baseline", default="be3736a",
                        help="(g), (h): also run the detect of this commit or source folder "
                        "(default: %(default)s, before issue 21; '' for none)")
    parser.add_argument("--images", type=int, default=3,
                        help="(g) scene images per detect run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="(g), (h) timed runs of each variant (default: %(default)s)")
    parser.add_argument("--cli", action="store_true",
                        help="also time clip4hoi detect --random-weights in both modes")
    parser.add_argument("--open-vocab", action="store_true",
                        help="also time Grounding DINO Swin-T against DETR-R50 (transformers)")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: torch's; 1 is steadier on a busy machine)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        parser.error(f"--sections: unknown {sorted(sections - set(SECTIONS))}")
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    original = photo_like()
    transform = HOITransform(train=False)
    no_boxes = {"boxes_h": torch.zeros(0, 4), "boxes_o": torch.zeros(0, 4)}
    image = transform(original, dict(no_boxes))[0]
    results: dict[str, Any] = {"machine": machine(), "cpu_flags": cpu_flags(),
                               "repeat": args.repeat}
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        if sections & {"trained", "text", "free"} or args.open_vocab:
            model = build_model(apply_overrides(ModelConfig(), RANDOM)).eval()
        if "trained" in sections:
            results["trained"] = bench_trained(model, image, args.repeat)
        if "text" in sections:
            results["text"] = bench_text(model, args.repeat)
        if "free" in sections:
            results["training_free"] = bench_training_free(model, image, args.repeat,
                                                           args.crops)
        if args.open_vocab:
            results["open_vocab"] = bench_open_vocab(model, image, args.repeat)
        if sections & {"frozen", "detect", "threads"}:
            networks = prepare_networks(Path(tmp), onnx=not args.no_onnx and
                                        bool(sections & {"frozen", "detect"}))
        if "frozen" in sections:
            results["frozen"] = bench_frozen(image, args.repeat, networks)
        if "bf16" in sections:
            images = [transform(photo_like(seed=seed), dict(no_boxes))[0] for seed in (0, 1)]
            results["bf16_vs_fp32"] = bench_bf16_detections(images)
        if "threads" in sections:
            results["threads"] = bench_threads(image, args.repeat, networks)
        if "detect" in sections:
            from bench_train import baseline_tree

            baseline = baseline_tree(args.baseline, Path(tmp) / "baseline") \
                if args.baseline else None
            (Path(tmp) / "detect").mkdir()
            results["detect"] = bench_detect(networks, baseline, args.baseline, args.images,
                                             args.rounds, Path(tmp) / "detect")
    if args.cli:
        results["cli"] = bench_cli(original)
    results["machine_after"] = machine()
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return results


def cpu_flags() -> list[str]:
    """The /proc/cpuinfo flags that decide the fast paths (AVX2/512, bf16, AMX, VNNI)."""
    from clip4hoi.models.precision import cpu_bf16_feature

    try:
        with open("/proc/cpuinfo") as handle:
            flags = next(line.split(":", 1)[1].split() for line in handle
                         if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = []
    wanted = [f for f in flags if f.startswith(("avx2", "avx512", "amx")) or "vnni" in f]
    return [*wanted, f"bf16 native: {cpu_bf16_feature() or 'no'}"]


def print_table(results: dict[str, Any]) -> None:
    """The results as a two-column table."""
    rows = [("machine", results["machine"]), ("after the run", results["machine_after"]),
            ("CPU flags", " ".join(results["cpu_flags"]))]
    if "trained" in results:
        t = results["trained"]
        rows += [
            ("image", f"640x480 -> {t['image_size'][1]}x{t['image_size'][0]} (w x h)"),
            ("(a) DETR-R50", f"{t['detr_s'] * 1000:8.1f} ms"),
            ("    CLIP image encoder", f"{t['clip_image_s'] * 1000:8.1f} ms"),
            (f"    head, {t['pairs']} pairs", f"{t['head_s'] * 1000:8.1f} ms  ("
             + ", ".join(f"{k} {v * 1000:.1f}" for k, v in t["head_parts_s"].items()) + ")"),
            ("    post-processing", f"{t['post_s'] * 1000:8.1f} ms"),
            ("    (head + post) / (DETR + CLIP)",
             f"{t['head_ratio'] * 100:8.1f} %  (target <= 15 %)"),
            ("    trainable parameters", f"{t['trainable_parameters']:,}"),
        ]
    if "text" in results:
        x = results["text"]
        rows += [
            (f"    text, {x['classes']} prompts (learnable, "
             f"{x['prompt_tokens']} tok)", f"{x['prompts_trimmed_s'] * 1000:8.1f} ms"),
            (f"    text, {x['classes']} sentences trimmed "
             f"({x['longest_sentence_tokens']} tok)",
             f"{x['sentences_trimmed_s'] * 1000:8.1f} ms"),
            (f"    text, {x['classes']} sentences padded (77 tok)",
             f"{x['sentences_padded77_s'] * 1000:8.1f} ms"),
        ]
    if "training_free" in results:
        f = results["training_free"]
        rows += [
            (f"(b) crop: {f['crops']} crops, batch {f['crop_batch_size']}",
             f"{f['crop_s']:8.2f} s = {f['crop_pairs_per_s']:.1f} pairs/s"),
            (f"    crop: 15x15 scene = {f['scene_pairs']} pairs",
             f"{f['scene_distinct_crops']} distinct crops, "
             f"~{f['scene_distinct_crops'] / f['crop_pairs_per_s']:.1f} s"),
            ("    plain CLIP image pass", f"{f['clip_plain_s'] * 1000:8.1f} ms"),
            ("    dense CLIP pass", f"{f['clip_dense_pass_s'] * 1000:8.1f} ms"),
            (f"    dense pass + pool + score, {f['scene_pairs']} pairs",
             f"{f['dense_scoring_s'] * 1000:8.1f} ms = {f['dense_ratio']:.2f}x plain "
             f"(target <= 1.3x)"),
            (f"    text, {len(hicodet_classes())} classes x {f['templates']} templates (once)",
             f"{f['text_embeddings_s']:8.2f} s"),
        ]
    for mode, c in results.get("cli", {}).items():
        rows.append((f"(c) clip4hoi detect --mode {mode}, 2 images",
                     f"{c['wall_s']:.1f} s wall; JSON seconds {c['seconds'][0]:.2f}, "
                     f"{c['seconds'][1]:.2f} ({sum(c['detections'])} detections)"))
    if "open_vocab" in results:
        o = results["open_vocab"]
        rows += [
            ("(d) DETR-R50, same image", f"{o['detr_s'] * 1000:8.1f} ms"),
            *((f"    Grounding DINO Swin-T, {n} names ({'+'.join(map(str, o['tokens'][n]))} "
               f"tok)", f"{s * 1000:8.1f} ms") for n, s in o["gdino_s"].items()),
            ("    Grounding DINO / DETR (3 names)", f"{o['ratio_to_detr']:8.2f}x"),
            ("    +100 names, same prompt", f"{o['per_100_names_in_prompt_s'] * 1000:8.1f} ms"),
            ("    +100 names, one more prompt", f"{o['per_100_names_new_chunk_s'] * 1000:8.1f} ms"),
        ]
    if "frozen" in results:
        z = results["frozen"]
        h, w = z["image_size"]
        rows.append((f"(e) DETR-R50 at {w}x{h}, random BN statistics", ""))
        for name, seconds in z["detr_s"].items():
            error = z["errors_vs_eager_fp32"].get(name)
            note = (f"; boxes {error['box_px_max']:.2g} px max, {error['box_px_median']:.2g} "
                    f"median, probs {error['prob_max']:.1g}") if error else ""
            rows.append((f"    {name}", f"{seconds * 1000:8.1f} ms = "
                         f"{z['detr_speedup'][name]:.2f}x{note}"))
        rows.append(("    CLIP ViT-B/16 image pass (trained path)", ""))
        for name, seconds in z["clip_s"].items():
            error = z["errors_vs_eager_fp32"].get(f"clip: {name}")
            note = (f"; cosine >= {error['global_cos_min']:.5f} global, "
                    f"{error['patch_cos_min']:.5f} patches") if error else ""
            rows.append((f"    {name}", f"{seconds * 1000:8.1f} ms = "
                         f"{z['clip_speedup'][name]:.2f}x{note}"))
        rows.append(("    fastest DETR + fastest CLIP", f"{z['fastest_detr_plus_clip_s']:8.2f} s"))
        if z["onnx_export_s"]:
            rows.append(("    ONNX export (DETR, CLIP)", ", ".join(
                f"{v:.0f} s" for v in z["onnx_export_s"].values())))
    if "bf16_vs_fp32" in results:
        b = results["bf16_vs_fp32"]
        rows.append((f"(f) bf16 vs fp32 detections, {b['images']} images, 15x15 scene", ""))
        for name in ("dense", "trained"):
            m = b[name]
            rows.append((f"    {name}: fp32 top-100 not in bf16 top-100",
                         f"{m['changed_in_top100']} of {m['detections']} detections; score "
                         f"error {m['score_abs_max']:.2g} max, {m['score_rel_median']:.2g} "
                         f"median relative"))
    if "detect" in results:
        rows += detect_rows(results["detect"], results.get("frozen"))
    if "threads" in results:
        one = results["threads"]["1 thread, batch 1"]
        rows.append(("(i) DETR + CLIP image pass per image (folded, channels-last)", ""))
        rows += [(f"    {name}", f"{t * 1000:6.0f} ms = {one / t:.2f}x")
                 for name, t in results["threads"].items()]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def detect_rows(d: dict[str, Any], frozen: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Rows of (g) and (h): per image, speed-up against the baseline, ratio to the
    fastest DETR + CLIP forwards of (e); start-ups and their ratio to the baseline's."""
    label = d["baseline"]
    scene = {k.removeprefix("scene: "): v for k, v in d.items() if k.startswith("scene: ")}
    before = scene.get(f"{label} fp32")
    limit = frozen and frozen["fastest_detr_plus_clip_s"]
    rows = [(f"(g) detect, {d['images']} images 640x480, 15x15 pairs (--boxes), 600 classes, "
             f"1 thread, {d['rounds']} runs", "per image (model); speed-up; / (fastest "
             "DETR + CLIP)" if limit else "per image (model); speed-up")]
    for name, v in scene.items():
        speed = f" = {before['per_image_s'] / v['per_image_s']:.2f}x" if before else ""
        ratio = f"; {v['per_image_s'] / limit:.2f} (goal <= 1.15)" if limit else ""
        rows.append((f"    {name}", f"{v['per_image_s'] * 1000:6.0f} ms "
                     f"({v['model_s'] * 1000:.0f}){speed}{ratio}"))
    rows.append(("(h) start-up to the first image (one thread)", ""))
    for name, v in scene.items():
        ratio = f" = {v['startup_s'] / before['startup_s']:.2f}x of the baseline's" \
            if before and v is not before else ""
        rows.append((f"    --checkpoint (weights files), {name}",
                     f"{v['startup_s']:8.2f} s{ratio}"))
    mine, theirs = d.get("startup: this tree"), d.get(f"startup: {label}")
    if mine:
        ratio = f" = {mine['startup_s'] / theirs['startup_s']:.2f}x of {label}'s " \
            f"{theirs['startup_s']:.2f} s (goal <= 0.5)" if theirs else ""
        rows.append(("    --random-weights --mode dense, 1 image",
                     f"{mine['startup_s']:8.2f} s{ratio}"))
    return rows


if __name__ == "__main__":
    main()

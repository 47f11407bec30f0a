"""The GPU check of inference (issue 21): one script, for a machine with a CUDA GPU.

The whole pipeline of ``clip4hoi detect`` (:class:`~clip4hoi.engine.predictor.Predictor`:
decoding workers, batches of one size, the backend, results) on the full-size
architectures with random weights (DETR-R50 with 91 classes, CLIP ViT-B/16, a random
trained head, 600 HICO-DET classes), photo-like 640×480 images resized to 800×1066, each
with the 15 humans and 15 objects of ``bench_inference.scene_target`` as proposals (435
pairs for the head). For PyTorch fp32, PyTorch bf16 (autocast) and ONNX Runtime (CUDA
execution provider, ``onnxruntime-gpu``; the export of ``clip4hoi export --format onnx``)
at batch 1, 8 and 32, it reports images/s (after one warm-up pass) and the peak GPU memory:
torch's allocator peak (``max_memory_allocated``) and the memory in use on the device
(``mem_get_info``, which also counts ONNX Runtime's own arena). For comparison, UPT reports
0.042 s per image (24 images/s) on an RTX 3090.

Usage::

    python benchmarks/gpu_detect.py [--images 64] [--onnx DIR | --no-onnx]
        [--json $OUT/gpu_detect.json]
    python benchmarks/gpu_detect.py --tiny    # CPU smoke run of the script itself
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_inference import machine, photo_like, scene_target

from clip4hoi.config import ModelConfig, apply_overrides
from clip4hoi.data.sources import InMemoryImage
from clip4hoi.engine.backend import OnnxBackend, TorchBackend
from clip4hoi.engine.predictor import Predictor
from clip4hoi.models.model import build_model

TINY = ['detector.architecture={"num_classes": 91, "hidden_dim": 64, "num_heads": 4, '
        '"num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 128, '
        '"num_queries": 40, "backbone": "resnet18"}', "detector.num_heads=4",
        'clip.model_cfg={"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, '
        '"width": 64, "patch_size": 16, "head_width": 32}, "text_cfg": {"context_length": '
        '77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}',
        "head.decoder_dim=64", "head.decoder_ffn=128", "head.interactor_ffn=128",
        "head.spatial_dim=32", "head.prefix_length=4", "head.conjunction_length=2",
        "head.decoder_heads=4", "head.interactor_heads=4"]
"""Tiny DETR, CLIP and head for ``--tiny`` (seconds on a CPU)."""


def build(tiny: bool) -> torch.nn.Module:
    """The trained-path model, random weights, proposals from the annotated boxes."""
    overrides = ["detector.weights=random", "clip.pretrained=null",
                 "detector.use_gt_boxes=true", *(TINY if tiny else [])]
    torch.manual_seed(0)
    return build_model(apply_overrides(ModelConfig(), overrides)).eval()


def images_per_second(backend: TorchBackend, images: int, batch: int, workers: int,
                      size: tuple[int, int]) -> dict[str, Any]:
    """``images`` photo-like images through the pipeline at ``batch``: images/s of the
    second of two passes, peak memory of both."""
    width, height = size
    target = scene_target(width, height)
    sources = [InMemoryImage(photo_like(width, height, seed=i % 4), f"image{i}")
               for i in range(images)]
    classes = backend.resolve_classes(None)
    backend.encode_classes(classes)
    cuda = backend.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(backend.device)
    walls = []
    for _ in range(2):
        predictor = Predictor(backend, classes, batch_size=batch, workers=workers,
                              targets=lambda source: {k: v.clone() for k, v in target.items()},
                              keep_pixels=False)
        start = time.perf_counter()
        results = list(predictor(sources))
        walls.append(time.perf_counter() - start)
        assert all(r.error is None and len(r.detections["scores"]) for r in results)
    out: dict[str, Any] = {"batch": batch, "images": images, "seconds": walls[-1],
                           "images_per_s": images / walls[-1],
                           "model_s_per_image": statistics.median(r.seconds for r in results)}
    if cuda:
        free, total = torch.cuda.mem_get_info(backend.device)
        out["torch_peak_gib"] = torch.cuda.max_memory_allocated(backend.device) / 2**30
        out["device_in_use_gib"] = (total - free) / 2**30
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64,
                        help="images per pass (at least 2 batches of the largest batch)")
    parser.add_argument("--workers", type=int, default=4, help="decoding workers")
    parser.add_argument("--onnx", type=Path, help="an export of the same model to reuse")
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny model on the CPU, batches 1, 2, 4: a smoke run")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here (--tiny runs the script on the CPU)")
    batches = (1, 2, 4) if args.tiny else (1, 8, 32)
    size = (160, 120) if args.tiny else (640, 480)
    scale = {"min_size": 120, "max_size": 200} if args.tiny else {}
    images = max(args.images, 2 * batches[-1])
    workers = 0 if args.tiny else args.workers
    model = build(args.tiny)
    result: dict[str, Any] = {
        "machine": machine(), "device": torch.cuda.get_device_name(device)
        if device.type == "cuda" else "cpu", "torch": torch.__version__, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        backends: dict[str, Any] = {
            precision: lambda p=precision: TorchBackend(model, "trained", device,
                                                        precision=p, **scale)
            for precision in ("fp32", "bf16")}
        if not args.no_onnx:
            folder = args.onnx or Path(tmp) / "onnx"
            backends["onnxruntime"] = lambda: onnx_backend(model, folder, device, scale)
        for name, make in backends.items():
            try:
                backend = make()
            except Exception as error:   # e.g. onnxruntime without CUDA: say so, go on
                result["runs"].append({"variant": name, "skipped": str(error)})
                continue
            for batch in batches:
                run = images_per_second(backend, images, batch, workers, size)
                result["runs"].append({"variant": name, "precision": backend.precision,
                                       **run})
    print_table(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


def onnx_backend(model: torch.nn.Module, folder: Path, device: torch.device,
                 scale: dict[str, int]) -> OnnxBackend:
    """The :class:`OnnxBackend` of ``folder``, exported from ``model`` first if empty."""
    from clip4hoi.engine.export import MANIFEST, export_onnx, load_onnx

    if not (folder / MANIFEST).is_file():
        start = time.perf_counter()
        export_onnx(model.to("cpu"), folder)
        print(f"ONNX export: {time.perf_counter() - start:.0f} s")
    if device.type == "cuda":
        torch.cuda.empty_cache()   # torch's cached blocks would count as ONNX Runtime's
    return OnnxBackend(load_onnx(folder), device, **scale)


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['device']}; {result['machine']}")
    print(f"{'variant':14s} {'batch':>5s} {'images/s':>9s} {'s/image':>8s} "
          f"{'torch peak GiB':>15s} {'in use GiB':>11s}")
    for run in result["runs"]:
        if "skipped" in run:
            print(f"{run['variant']:14s} skipped: {run['skipped']}")
            continue
        peak = f"{run['torch_peak_gib']:15.2f}" if "torch_peak_gib" in run else f"{'-':>15s}"
        used = f"{run['device_in_use_gib']:11.2f}" if "device_in_use_gib" in run \
            else f"{'-':>11s}"
        print(f"{run['variant']:14s} {run['batch']:5d} {run['images_per_s']:9.2f} "
              f"{1 / run['images_per_s']:8.3f} {peak} {used}")


if __name__ == "__main__":
    main()

"""Benchmark of a training step of the full-size model, with and without the feature cache.

The model has the paper's sizes with random weights: DETR-R50 (91 classes), CLIP
ViT-B/16, the default head; 600 HICO-DET classes; batch 2. Images come from the synthetic
dataset at ``--image-size`` (long side; default 640, short side 480..640), resized to the
800 test scale (augmentation off, so that they can be cached). It times, through the real
:class:`clip4hoi.engine.trainer.Trainer`:

* full training steps (DETR and CLIP run on the images; median of ``--steps``);
* the parts of a step on one batch: DETR forward, CLIP image encoder forward, the CLIP text
  encoder forward + backward over the 600 learnable prompts, and the head with the
  optimiser step (the rest);
* steps on cached features (``feature_cache.enabled``), and the one-off cost of filling
  the cache.

Usage::

    python benchmarks/bench_train.py [--steps 3] [--repeat 2] [--threads N] [--image-size 640]
        [--json benchmarks/results/bench_train.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from clip4hoi.data.synthetic import make_synthetic
from clip4hoi.engine.config import load_experiment
from clip4hoi.engine.feature_cache import fill_cache, frozen_fingerprint
from clip4hoi.engine.trainer import Trainer
from clip4hoi.models.detr import normalize

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "hicodet.yaml"


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_trainer(workdir: Path, data: Path, cached: bool) -> Trainer:
    config = load_experiment(CONFIG, [
        "model.detector.weights=random", "model.detector.architecture={num_classes: 91}",
        "model.clip.pretrained=null", f"data.root={data}",
        "data.train_images=images/train2015", "data.test_images=images/test2015",
        "data.transform.augment=false", "data.num_workers=0", "train.batch_size=2",
        "train.eval_every=0", f"train.output_dir={workdir / ('cached' if cached else 'plain')}",
        f"feature_cache.enabled={str(cached).lower()}", f"feature_cache.dir={workdir / 'cache'}"])
    return Trainer(config)


def time_steps(trainer: Trainer, steps: int) -> list[float]:
    """Seconds of ``steps`` training steps after one warm-up step."""
    trainer.model.train()
    trainer.sampler.set_epoch(0)
    batches = itertools.cycle(list(trainer.loader))
    trainer.train_step([next(batches)])
    return [timed(lambda: trainer.train_step([next(batches)])) for _ in range(steps)]


def time_parts(trainer: Trainer, repeat: int) -> dict[str, float]:
    """Median seconds of DETR, the CLIP image encoder and the text encoder (forward + backward)
    on one batch, and of DETR on two 800 × 1066 images (a 640 × 480 HICO-DET image at the
    800 scale; the synthetic images are squarer)."""
    model, device = trainer.model, trainer.info.device
    trainer.sampler.set_epoch(0)
    images, _ = next(iter(trainer.loader))
    images = [image.to(device) for image in images]
    classes = trainer.train_set.class_set
    layers = tuple(model.config.clip.layers)
    with torch.no_grad():
        detr = timed(lambda: model.detector(normalize(images)), repeat)
        hico = [torch.rand(3, 800, 1066, device=device) for _ in images]
        detr_hico = timed(lambda: model.detector(normalize(hico)), repeat)
        clip = timed(lambda: model.clip.encode_image(model.clip.preprocess(images),
                                                     layers=layers), repeat)

    def text_step() -> None:
        model.classifier.text_embeddings(model.clip, classes).sum().backward()

    text = timed(text_step, repeat)
    trainer.optimizer.zero_grad(set_to_none=True)
    return {"detr": detr, "clip_image": clip, "text_encoder": text, "detr_800x1066": detr_hico}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--repeat", type=int, default=2, help="timings per part (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--json", default="benchmarks/results/bench_train.json")
    parser.add_argument("--workdir", help="default: a temporary folder")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        data = workdir / "data"
        make_synthetic(data, n_train=2 * (args.steps + 1), n_test=1, seed=0,
                       image_size=args.image_size)

        start = time.perf_counter()
        plain = build_trainer(workdir, data, cached=False)
        build = time.perf_counter() - start
        model, transform = plain.model, plain.config.data.transform
        fingerprint = timed(lambda: frozen_fingerprint(model, transform, "float32"))
        sizes = sorted({tuple(plain.train_set[i][0].shape[-2:]) for i in range(2)})
        full = time_steps(plain, args.steps)
        parts = time_parts(plain, args.repeat)

        start = time.perf_counter()
        cached = build_trainer(workdir, data, cached=True)    # fills the cache on creation
        fill = time.perf_counter() - start - build - fingerprint
        assert fill_cache(cached.model, cached.train_set, cached.cache, cached.info) == 0
        head = time_steps(cached, args.steps)

    step, step_cached = statistics.median(full), statistics.median(head)
    detr_hico = parts.pop("detr_800x1066")
    parts["rest (head, loss, optimiser)"] = max(step - sum(parts.values()), 0.0)
    n_images = 2 * (args.steps + 1)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads",
        "torch": torch.__version__, "device": "cpu", "batch_size": 2, "classes": 600,
        "image_sizes": [list(s) for s in sizes],
        "steps_timed": {"full": full, "cached": head},
        "step_s": step, "steps_per_s": 1 / step, "step_s_cached": step_cached,
        "steps_per_s_cached": 1 / step_cached, "cache_speedup": step / step_cached,
        "cache_fill_s_per_image": fill / n_images, "fingerprint_s": fingerprint,
        "parts_s": parts, "parts_share": {k: v / step for k, v in parts.items()},
        "detr_s_two_800x1066_images": detr_hico,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print(f"CLIP4HOI training step, full-size random model, batch 2, 600 classes, images "
          f"{sizes} ({result['machine']})")
    print(f"{'':34s} {'s/step':>8s} {'steps/s':>8s} {'share':>7s}")
    print(f"{'full step (images)':34s} {step:8.2f} {1 / step:8.3f} {'100%':>7s}")
    for name, seconds in parts.items():
        print(f"{'  ' + name:34s} {seconds:8.2f} {'':8s} {100 * seconds / step:6.1f}%")
    print(f"{'  (DETR on two 800x1066 images)':34s} {detr_hico:8.2f}")
    print(f"{'step on cached features':34s} {step_cached:8.2f} {1 / step_cached:8.3f} "
          f"{100 * step_cached / step:6.1f}%")
    print(f"feature cache: {result['cache_speedup']:.2f}x faster steps; filling it costs "
          f"{result['cache_fill_s_per_image']:.2f} s per image once (and {fingerprint:.1f} s to "
          f"hash the frozen weights at start); peak RSS "
          f"{result['peak_rss_gb']:.1f} GB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""The GPU check of training (issue 8): one script, for a machine with a CUDA GPU.

On the full-size model with random weights (DETR-R50, CLIP ViT-B/16, 600 classes) and
synthetic images at the 800 test scale, 2 images per GPU, DETR's proposals plus the
annotated boxes (``loss.add_gt_boxes``: the random DETR's boxes match nothing), it
reports:

* bf16 vs fp32 training step: the loss parts and the gradients' agreement (cosine and
  relative error of the whole gradient, and the worst parameter);
* the step time (median, bf16 and fp32) and the peak GPU memory;
* the host syncs and kernel-launching ops of one step (``step_counters.StepCounter``);
* that boxes and detections stay float32 under autocast.

Usage::

    python benchmarks/gpu_train_check.py [--steps 10] [--json $OUT/gpu_train_check.json]
    python benchmarks/gpu_train_check.py --tiny    # CPU smoke run of the script itself
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from step_counters import StepCounter

from clip4hoi.data.synthetic import make_synthetic
from clip4hoi.engine.config import load_experiment
from clip4hoi.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def build(workdir: Path, tiny: bool) -> Trainer:
    data = workdir / "data"
    make_synthetic(data, n_train=8, n_test=1, seed=0, image_size=128 if tiny else 1066)
    if tiny:
        config, extra = REPO / "configs" / "smoke.yaml", [
            "data.transform.scales=[112,128]", "data.transform.test_scale=128",
            "data.transform.max_size=256", "train.device=cpu"]
    else:
        config, extra = REPO / "configs" / "hicodet.yaml", [
            "model.detector.weights=random", "model.detector.architecture={num_classes: 91}",
            "model.clip.pretrained=null", "data.train_images=images/train2015",
            "data.test_images=images/test2015", "train.device=cuda"]
    trainer = Trainer(load_experiment(config, [
        *extra, f"data.root={data}", "data.transform.augment=false", "data.num_workers=0",
        "model.detector.use_gt_boxes=false", "model.loss.add_gt_boxes=true",
        "model.head.dropout=0", "train.batch_size=2",
        "train.eval_every=0", "feature_cache.enabled=false", 'train.amp="off"',
        f"train.output_dir={workdir / 'run'}"]))
    return trainer


def gradients(trainer: Trainer, batch: tuple, amp: torch.dtype | None
              ) -> tuple[list[float], dict[str, torch.Tensor]]:
    trainer.amp = amp
    trainer.optimizer.zero_grad(set_to_none=True)
    stats = trainer.accumulate_gradients([batch]).tolist()
    grads = {n: p.grad.detach().float().clone() for n, p in trainer.model.named_parameters()
             if p.requires_grad and p.grad is not None}
    trainer.optimizer.zero_grad(set_to_none=True)
    return stats[:2], grads


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny for a CPU check of the script")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(Path(tmp), args.tiny)
        device = trainer.info.device
        trainer.model.train()
        trainer.sampler.set_epoch(0)
        batches = list(trainer.loader)
        batch = batches[0]
        low = torch.bfloat16
        loss32, grad32 = gradients(trainer, batch, None)
        loss16, grad16 = gradients(trainer, batch, low)
        flat32 = torch.cat([g.flatten() for g in grad32.values()])
        flat16 = torch.cat([grad16[n].flatten() for n in grad32])
        worst = max(grad32, key=lambda n: float((grad16[n] - grad32[n]).norm()
                                                / grad32[n].norm().clamp(min=1e-30)))
        agreement = {
            "loss_fp32": loss32, "loss_bf16": loss16,
            "grad_cosine": float(torch.nn.functional.cosine_similarity(flat32, flat16, 0)),
            "grad_relative_error": float((flat16 - flat32).norm() / flat32.norm()),
            "worst_parameter": worst,
            "worst_relative_error": float((grad16[worst] - grad32[worst]).norm()
                                          / grad32[worst].norm().clamp(min=1e-30)),
        }

        timings = {}
        for name, amp in (("fp32", None), ("bf16", low)):
            trainer.amp = amp
            trainer.train_step([batch])                                   # warm-up
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for i in range(args.steps):
                synchronize(device)
                start = time.perf_counter()
                trainer.train_step([batches[i % len(batches)]])
                synchronize(device)
                times.append(time.perf_counter() - start)
            timings[name] = {
                "step_s": statistics.median(times),
                "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30
                if device.type == "cuda" else None}
        trainer.amp = low
        counter = StepCounter()
        counter.mark_host([targets for _, targets in batches])
        counter.mark_host([s["step"] for s in trainer.optimizer.state.values()])
        with counter:
            trainer.train_step([batch])

        trainer.model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=low):
            images = [image.to(device).float() / 255 for image in batch[0]]
            detections = trainer.model(images)
        float32 = all(d["human_boxes"].dtype == d["object_boxes"].dtype == d["scores"].dtype
                      == torch.float32 for d in detections)

    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu (tiny)", "images_per_gpu": 2, "bf16_vs_fp32": agreement,
              "timings": timings, "host_syncs": counter.total_syncs,
              "sync_ops": dict(counter.syncs), "launches": counter.launches,
              "detections_float32_under_autocast": float32}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Benchmark of the training step: FLOPs by part, host syncs and kernel launches, step
time — before (``--baseline``, a git commit or source folder) and after, in one run.

1. **FLOPs by part**, per optimiser step and rank, of the full-size default config
   (DETR-R50 at 800 × 1200, CLIP ViT-B/16, 600 classes, 2 images per micro-batch),
   counted with ``FlopCounterMode`` on the meta device (no weights, no compute): DETR,
   the CLIP image encoder, the text encoder (forward + backward of the 600 prompts) and
   the head (forward + backward, 15 humans and 15 objects per image: 435 pairs), for
   world sizes 1 and 8 and accumulation 1 and 8. Before: the text encoder runs on every
   micro-batch of every rank, padded to the longest prompt; after: once per step,
   sharded over the ranks, shared prefix run once, prompts grouped by length.
2. **Host syncs and kernel-launching ops** per training step
   (:class:`step_counters.StepCounter`), tiny config at 2 and 8 images per step: on
   cached features with the annotated boxes as proposals (``configs/smoke.yaml``), and on
   images with the (random, person-biased) DETR's proposals.
3. **Step time** on this CPU, tiny config (cached features and images), and with
   ``--full-size`` the full-size model on cached features (random weights), as ratios of
   the baseline's to this tree's.

Usage::

    python benchmarks/bench_train.py [--baseline c89cc60] [--full-size] [--steps 3]
        [--threads 1] [--json benchmarks/results/bench_train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
MICRO_BATCH = 2


# ------------------------------------------------------------------------ 1. FLOPs

def flops_by_part() -> dict[str, float]:
    """GFLOP of one micro-batch of 2 images by part, on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from clip4hoi.data.metadata import hicodet_classes, words
    from clip4hoi.engine.config import load_experiment
    from clip4hoi.models.detr import normalize
    from clip4hoi.models.interactor import pair_index
    from clip4hoi.models.model import FrozenFeatures, Proposals, build_model

    config = load_experiment(REPO / "configs" / "hicodet.yaml", [
        "model.detector.weights=random", "model.detector.architecture={num_classes: 91}",
        "model.clip.pretrained=null"]).model
    with torch.device("meta"):
        model = build_model(config).train()
    classes = hicodet_classes()
    clip, classifier = model.clip, model.classifier

    def gflop(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e9

    images = [torch.empty(3, 800, 1200, device="meta") for _ in range(MICRO_BATCH)]
    out: dict[str, float] = {}
    with torch.no_grad():
        out["detr"] = gflop(lambda: model.detector(normalize(images)))
        out["clip_image"] = gflop(lambda: clip.encode_image(clip.preprocess(images),
                                                            layers=(-1,)))

    def text_new() -> None:
        classifier.prompt_embeddings(clip, classes).sum().backward()

    def text_old() -> None:  # one padded batch through every token (the code before)
        verbs, objects = list(classes.verbs), [words(n) for n in classes.object_names]
        layout = clip._prompt_layout(verbs, objects, len(classifier.prefix),
                                     len(classifier.conjunction), torch.device("meta"))
        x = clip._token_embedding(layout.ids)
        context = torch.cat([classifier.prefix, classifier.conjunction]).to(x)
        x = torch.where((layout.slot >= 0)[..., None], context[layout.slot.clamp(min=0)], x)
        clip._encode_sequences(x, layout.eot).sum().backward()

    out["text_old"], out["text_new"] = gflop(text_old), gflop(text_new)

    n_h, n = 15, 30
    k = len(classes)
    detr_dim = model.detector.config["hidden_dim"]
    meta = {"device": "meta"}
    index = pair_index([n_h] * MICRO_BATCH, [n] * MICRO_BATCH, [(800, 1200)] * MICRO_BATCH,
                       torch.device("meta"))
    p = sum(index.pair_counts)
    features = FrozenFeatures(torch.empty(MICRO_BATCH, 100, 92, **meta),
                              torch.empty(MICRO_BATCH, 100, 4, **meta),
                              torch.empty(MICRO_BATCH, 100, detr_dim, **meta),
                              torch.empty(MICRO_BATCH, clip.embed_dim, **meta),
                              [torch.empty(MICRO_BATCH, 196, clip.width, **meta)], (14, 14))
    proposals = Proposals([], [], index.pair_counts, [(800, 1200)] * MICRO_BATCH,
                          index.pair_image, torch.empty(p, **meta),
                          torch.ones(p, k, dtype=torch.bool, **meta),
                          torch.zeros(p, k, **meta), torch.zeros(MICRO_BATCH, k, **meta),
                          index, torch.empty(MICRO_BATCH * n, 4, **meta),
                          torch.empty(MICRO_BATCH * n, detr_dim, **meta))
    text = torch.empty(k, clip.embed_dim, device="meta", requires_grad=True)

    def head() -> None:
        losses = model._losses(proposals, *model.score(features, proposals, text),
                               torch.ones(2, device="meta"))
        (losses["loss_pair"] + losses["loss_global"]).backward()

    out["head"] = gflop(head)
    return out


def step_flops(parts: dict[str, float], world: int, accumulation: int, new: bool
               ) -> dict[str, float]:
    """GFLOP by part of one optimiser step on one rank."""
    text = parts["text_new"] / world if new else parts["text_old"] * accumulation
    return {"detr": parts["detr"] * accumulation,
            "clip_image": parts["clip_image"] * accumulation,
            "text_encoder": text, "head": parts["head"] * accumulation}


# ------------------------------------------------------- 2./3. counts and step times

CHILD_OVERRIDES = ["model.head.dropout=0", "train.eval_every=0", "data.num_workers=0"]


def child(spec: dict) -> dict:
    """Runs in a subprocess with the measured tree first on ``PYTHONPATH``."""
    from step_counters import StepCounter

    from clip4hoi.data.synthetic import make_synthetic
    from clip4hoi.engine.config import load_experiment
    from clip4hoi.engine.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    work = Path(spec["workdir"])
    data = work / "data"
    if not (data / "instances_train2015.json").is_file():
        make_synthetic(data, n_train=8, n_test=1, seed=0, image_size=spec["image_size"])
    configs = Path.cwd() / "configs"    # the measured tree's own configs
    if spec["full_size"]:
        config = configs / "hicodet.yaml"
        overrides = ["model.detector.weights=random",
                     "model.detector.architecture={num_classes: 91}",
                     "model.clip.pretrained=null", "data.transform.augment=false",
                     "data.train_images=images/train2015", "data.test_images=images/test2015"]
    else:
        config = configs / "smoke.yaml"
        overrides = ["data.transform.scales=[112,128]", "data.transform.test_scale=128",
                     "data.transform.max_size=256"]
    if spec.get("detector"):   # DETR's proposals instead of the annotated boxes
        overrides += ["model.detector.use_gt_boxes=false"]
    overrides += [*CHILD_OVERRIDES, f"data.root={data}",
                  f"train.batch_size={spec['images']}",
                  f"feature_cache.enabled={str(spec['cached']).lower()}",
                  f"feature_cache.dir={work / 'cache'}",
                  f"train.output_dir={work / ('run-' + str(os.getpid()))}"]
    trainer = Trainer(load_experiment(config, overrides))
    if spec.get("detector"):
        with torch.no_grad():   # the random DETR sees persons in about half its queries
            trainer.model.detector.class_embed.bias[0] += 4.0
    trainer.model.train()
    trainer.sampler.set_epoch(0)
    batches = list(trainer.loader)
    trainer.train_step([batches[0]])                                     # warm-up
    counter = StepCounter()
    counter.mark_host([targets for _, targets in batches])
    # AdamW keeps its step counts on the host (not capturable): reading them is no sync.
    counter.mark_host([state["step"] for state in trainer.optimizer.state.values()])
    with counter:
        trainer.train_step([batches[0]])
    times = []
    for i in range(spec["steps"]):
        start = time.perf_counter()
        trainer.train_step([batches[i % len(batches)]])
        times.append(time.perf_counter() - start)
    return {"syncs": counter.total_syncs, "sync_ops": dict(counter.syncs),
            "launches": counter.launches, "step_s": statistics.median(times)}


def run_child(tree: Path, spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(BENCH)]),
           "OMP_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode:
        raise RuntimeError(f"benchmark child in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_tree(ref: str, where: Path) -> Path | None:
    """A folder with the source of ``ref`` (a folder, or a commit of this checkout)."""
    if Path(ref).is_dir():
        return Path(ref).resolve()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True)
    if archive.returncode:
        print(f"baseline {ref!r} is neither a folder nor a commit here: no before figures")
        return None
    where.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


# ------------------------------------------------------------------------------ main

def describe(run: dict) -> str:
    return (f"{run['images_per_step']} img, {'cached' if run['cached'] else 'images'}, "
            f"{'DETR boxes' if run['detector'] else 'GT boxes'}"
            f"{', full' if run['full_size'] else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="c89cc60",
                        help="commit or folder of the code before (default: c89cc60)")
    parser.add_argument("--full-size", action="store_true",
                        help="also time full-size steps on cached features (minutes)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="benchmarks/results/bench_train.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    result: dict = {"machine": f"{platform.processor() or platform.machine()}, "
                               f"{args.threads} torch thread(s)", "torch": torch.__version__}
    parts = flops_by_part()
    result["gflop_per_micro_batch_of_2"] = parts
    print("GFLOP per optimiser step and rank (full-size model, 2 images per micro-batch; "
          "meta device)")
    print(f"{'world':>5s} {'accum':>5s} {'':6s} {'DETR':>7s} {'CLIP img':>8s} {'text':>7s} "
          f"{'head':>6s} {'total':>7s} {'text %':>7s}")
    table = []
    for world in (1, 8):
        for accumulation in (1, 8):
            for label, new in (("before", False), ("after", True)):
                row = step_flops(parts, world, accumulation, new)
                total = sum(row.values())
                table.append({"world_size": world, "accumulation": accumulation,
                              "code": label, **row, "total": total,
                              "text_share": row["text_encoder"] / total})
                print(f"{world:5d} {accumulation:5d} {label:6s} {row['detr']:7.0f} "
                      f"{row['clip_image']:8.0f} {row['text_encoder']:7.0f} {row['head']:6.0f}"
                      f" {total:7.0f} {100 * row['text_encoder'] / total:6.1f}%")
    result["flops"] = table

    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": REPO}
        old = baseline_tree(args.baseline, Path(tmp) / "baseline")
        if old is not None:
            trees["before"] = old
        # (images per step, cached features, full size, DETR proposals)
        settings = [(2, True, False, False), (8, True, False, False),
                    (2, False, False, True), (8, False, False, True)]
        if args.full_size:
            settings.append((2, True, True, False))
        runs = []
        for images, cached, full, detector in settings:
            work = Path(tmp) / f"work-{images}-{cached}-{full}-{detector}"
            for code, tree in trees.items():
                spec = {"images": images, "cached": cached, "full_size": full,
                        "detector": detector,
                        "steps": 1 if full else args.steps, "threads": args.threads,
                        "workdir": str(work), "image_size": 640 if full else 128}
                runs.append({"code": code, "images_per_step": images, "cached": cached,
                             "full_size": full, "detector": detector,
                             **run_child(tree, spec)})
    result["steps"] = runs
    print("\nPer training step (one process; tiny config unless 'full')")
    print(f"{'setting':36s} {'code':6s} {'syncs':>6s} {'launches':>9s} {'s/step':>8s} "
          f"{'speed-up':>8s}")
    for run in runs:
        setting = describe(run)
        before = next((r for r in runs if r["code"] == "before" and all(
            r[k] == run[k] for k in ("images_per_step", "cached", "full_size", "detector"))),
            None)
        speedup = f"{before['step_s'] / run['step_s']:7.2f}x" if before else ""
        print(f"{setting:36s} {run['code']:6s} {run['syncs']:6d} {run['launches']:9d} "
              f"{run['step_s']:8.3f} {speedup:>8s}")
    for run in runs:
        print(f"  syncs {run['code']}, {describe(run)}: {run['sync_ops']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

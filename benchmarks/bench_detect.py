"""Throughput of ``clip4hoi detect`` on a folder: the pipeline against the old one-image loop,
and one process against ``torchrun`` ranks.

* default: **sequential** (per image, in one thread: read, resize, model, records, draw,
  JPEG, write — the loop ``cli.py`` had before the pipeline) against **pipeline**
  (``clip4hoi detect``: ``DataLoader`` workers decode and resize ahead, batches of one
  size, drawing and writing on a background thread), on the same images with identical
  JSON results;
* ``--ranks N``: **1 process × 1 thread**, **1 process × N threads** (``clip4hoi detect``
  with ``OMP_NUM_THREADS``) and **N processes × 1 thread** (``torchrun --nproc_per_node=N
  -m clip4hoi detect``, each rank pinned to its own core); the scaling efficiency of each
  N-core run is its images/s divided by N × those of one process at one thread.
  Throughput is the steady state: the images after the first ``--warmup`` ones divided by
  the time between their result files' modification times (start-up, model building and
  class encoding left out); with ``--repeat R`` the settings run R times, interleaved,
  and the best of each counts.

Both run the training-free ``dense`` mode with random weights (``--tiny``: the tests' tiny
DETR and CLIP; default: the full-size DETR-R50 and ViT-B/16) on ``--images`` photo-like
random images of ``--size``, writing JSON and drawn copies. Prints a table (with the CPU
model) and writes JSON (``--json``). On a GPU machine, ``--device cuda --ranks N`` gives
the figures of N GPUs against one. The load average is printed: on a shared machine the
numbers move with the other jobs.

Usage::

    python benchmarks/bench_detect.py [--images 8] [--size 640x480] [--tiny]
        [--batch-size 1] [--workers -1] [--ranks N [--repeat R]] [--device cpu]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TINY = ['detector.architecture={"num_classes": 80, "hidden_dim": 64, "num_heads": 4, '
        '"num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 128, '
        '"num_queries": 20, "backbone": "resnet18"}', "detector.num_heads=4",
        'clip.model_cfg={"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, '
        '"width": 64, "patch_size": 16, "head_width": 32}, "text_cfg": {"context_length": 77,'
        ' "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}']
CLASSES = "ride bicycle, hold cup, hug person, sit on chair, carry backpack"


def make_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Smooth random images (JPEG-compressible like photos)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.BILINEAR).save(folder / f"{i:04d}.jpg",
                                                                 quality=90)


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split(
                "\n"):
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def results(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(out.glob("*.jpg.json")):
        payload = json.loads(path.read_text())
        payload.pop("seconds")
        found[path.name] = payload
    return found


def steady_rate(out: Path, warmup: int) -> float:
    """Images per second after the first ``warmup`` results (by file modification time)."""
    times = sorted(p.stat().st_mtime for p in out.glob("*.jpg.json"))
    return (len(times) - 1 - warmup) / (times[-1] - times[warmup])


def detect_argv(photos: Path, out: Path, args: argparse.Namespace) -> list[str]:
    overrides = TINY if args.tiny else []
    return ["detect", str(photos), "--out", str(out), "--mode", "dense", "--random-weights",
            "--device", args.device, "--classes", CLASSES, "--batch-size", str(args.batch_size),
            "--workers", str(args.workers), *[w for o in overrides for w in ("--set", o)]]


# ----------------------------------------------------------------- pipeline vs old loop


def sequential(detector, classes, folder: Path, out: Path, draw: int = 5) -> None:
    """The old loop: everything in one thread, one image after the other."""
    from clip4hoi.data.images import load_image
    from clip4hoi.engine.results import to_records
    from clip4hoi.fileio import write_atomic
    from clip4hoi.visualize import draw_detections

    for path in sorted(folder.iterdir()):
        image = load_image(path)
        start = time.perf_counter()
        result = detector(image, classes)[0]
        records = to_records(result.detections, classes, 100, 0.0)
        payload = {"file_name": path.name, "width": int(image.shape[2]),
                   "height": int(image.shape[1]), "mode": detector.mode,
                   "classes": classes.name, "seconds": round(time.perf_counter() - start, 3),
                   "detections": records}
        picture = Image.fromarray(image.permute(1, 2, 0).numpy())
        buffer = io.BytesIO()
        draw_detections(picture, records, max_pairs=draw).save(buffer, format="JPEG",
                                                               quality=90)
        write_atomic(out / f"{path.name}.drawn.jpg", buffer.getvalue())
        write_atomic(out / f"{path.name}.json", json.dumps(payload, indent=1).encode())


def compare_loops(root: Path, args: argparse.Namespace) -> dict:
    from clip4hoi.api import build_training_free_detector
    from clip4hoi.cli import main
    from clip4hoi.engine import backend

    detector = build_training_free_detector("dense", args.device, True,
                                            TINY if args.tiny else [])
    classes = detector.encode_classes(CLASSES)
    (root / "seq").mkdir()
    start = time.perf_counter()
    sequential(detector, classes, root / "photos", root / "seq")
    seq_time = time.perf_counter() - start
    backend.build_backend = lambda *a, **k: detector.backend   # the same, built and encoded
    with open(os.devnull, "w") as quiet:
        stderr, sys.stderr = sys.stderr, quiet
        try:
            start = time.perf_counter()
            main(detect_argv(root / "photos", root / "new", args))
            new_time = time.perf_counter() - start
        finally:
            sys.stderr = stderr
    count = len(results(root / "seq"))
    rows = [("sequential (old loop)", seq_time),
            (f"pipeline: workers {args.workers}, batch {args.batch_size}, writer thread",
             new_time)]
    print(f"{'path':56s} {'seconds':>8s} {'images/s':>9s}")
    for name, seconds in rows:
        print(f"{name:56s} {seconds:8.2f} {count / seconds:9.3f}")
    same = results(root / "seq") == results(root / "new")
    print(f"identical JSON results (but 'seconds'): {same}")
    return {"sequential_s": seq_time, "pipeline_s": new_time, "identical": same,
            "sequential_images_per_s": count / seq_time,
            "pipeline_images_per_s": count / new_time}


# ----------------------------------------------------------------- processes vs threads


def run_detect(argv: list[str], ranks: int, threads: int) -> float:
    """``clip4hoi detect`` in a fresh process (or ``torchrun`` with ``ranks`` > 1); wall
    seconds."""
    launcher = [sys.executable, "-m", "clip4hoi"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={ranks}", "-m", "clip4hoi"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run([*launcher, *argv], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - start


def compare_ranks(root: Path, args: argparse.Namespace) -> dict:
    n = args.ranks
    runs = {"1x1": (1, 1), f"1x{n}": (1, n), f"{n}x1": (n, 1)}
    report: dict = {}
    for repeat in range(args.repeat):   # interleaved: the machine's load moves them alike
        for name, (ranks, threads) in runs.items():
            out = root / f"{name}.{repeat}"
            wall = run_detect(detect_argv(root / "photos", out, args), ranks, threads)
            rate = steady_rate(out, args.warmup)
            if name not in report or rate > report[name]["images_per_s"]:
                report[name] = {"ranks": ranks, "threads": threads, "wall_s": wall,
                                "images_per_s": rate}
    base = report["1x1"]["images_per_s"]
    print(f"{'run':40s} {'wall s':>8s} {'images/s':>9s} {'efficiency':>10s}")
    for name, (ranks, threads) in runs.items():
        row = report[name]
        row["efficiency"] = row["images_per_s"] / (ranks * threads * base)
        label = f"{ranks} process(es) x {threads} thread(s)" + (
            " (torchrun)" if ranks > 1 else "")
        print(f"{label:40s} {row['wall_s']:8.1f} {row['images_per_s']:9.3f} "
              f"{100 * row['efficiency']:9.0f}%")
    report["ranks_vs_threads"] = report[f"{n}x1"]["images_per_s"] / \
        report[f"1x{n}"]["images_per_s"]
    report["identical_files"] = all(results(root / f"{name}.0").keys() == results(
        root / "1x1.0").keys() for name in runs)
    print(f"{n} ranks x 1 thread vs 1 process x {n} threads: "
          f"{report['ranks_vs_threads']:.2f}x images/s")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="images in the folder")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the images")
    parser.add_argument("--tiny", action="store_true", help="tiny random DETR and CLIP")
    parser.add_argument("--batch-size", type=int, default=1, help="pipeline's batch size")
    parser.add_argument("--workers", type=int, default=-1, help="pipeline's workers")
    parser.add_argument("--ranks", type=int, default=0,
                        help="compare N torchrun ranks x 1 thread with 1 process x N threads")
    parser.add_argument("--warmup", type=int, default=2,
                        help="--ranks: results left out of the steady-state rate")
    parser.add_argument("--repeat", type=int, default=1,
                        help="--ranks: runs of each setting, interleaved; the best counts")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for N GPUs")
    parser.add_argument("--json", default="bench_detect.json", help="write results here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    load_before = os.getloadavg()[0]
    print(f"clip4hoi detect --mode dense --random-weights on {args.images} images "
          f"{args.size} ({'tiny' if args.tiny else 'full-size'} networks), {cpu_model()}, "
          f"{os.cpu_count()} CPUs, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("CLIP4HOI_TEXT_CACHE", str(root / "text"))
        make_images(root / "photos", args.images, (width, height))
        report = compare_ranks(root, args) if args.ranks else compare_loops(root, args)
    report.update({"images": args.images, "repeat": args.repeat, "size": args.size,
                   "tiny": args.tiny,
                   "batch_size": args.batch_size, "workers": args.workers,
                   "cpu": cpu_model(), "cpus": os.cpu_count(), "device": args.device,
                   "load_average": [load_before, os.getloadavg()[0]]})
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

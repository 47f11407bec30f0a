"""Throughput of ``clip4hoi detect`` on a folder: the pipeline against the old one-image loop,
and one process against ``torchrun`` ranks; and on a video (``--video``).

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

``--video``: a synthetic clip (rectangles moving over a photo-like background, ``--size``,
30 frames/s, ``--clip-seconds`` long) sampled at ``--fps`` (default 2), with the full-size
random networks (``--tiny``: the tests'): the sampled frames per second of **decoding
alone** (the pipeline's decoding process: decode every frame, convert and resize the
sampled ones), of **the model alone** (on those frames, already in memory, ``--batch-size``
per pass, ``--threads`` torch threads) and of **the whole video path** (``clip4hoi detect
CLIP --fps F --threads N`` in a new process: its own steady-state rate, start-up and class
encoding left out), with its peak memory (sampled every 0.2 s). Then **memory
over a long clip**: ``clip4hoi detect`` on a ``--long-seconds`` clip (default 600: ten
minutes) at ``--fps``, with the tiny networks unless ``--long-full-size``, RSS sampled
through the run and reported at each tenth of the frames done: flat when nothing grows
with the video. Memory is the proportional set size (PSS) of the process and its decoding
worker, so that the pages the forked worker shares with its parent count once.

Usage::

    python benchmarks/bench_detect.py [--images 8] [--size 640x480] [--tiny]
        [--batch-size 1] [--workers -1] [--ranks N [--repeat R]] [--device cpu]
        [--json OUT.json]
    python benchmarks/bench_detect.py --video [--size 1280x720] [--clip-seconds 10]
        [--fps 2] [--test-scale 800] [--long-seconds 600] [--long-test-scale 800]
        [--long-full-size] [--tiny] [--batch-size 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
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


# ----------------------------------------------------------------- video


def make_clip(path: Path, seconds: float, size: tuple[int, int], rate: int = 30) -> int:
    """A photo-like background with three rectangles moving across it; returns frames."""
    import av

    width, height = size
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    background = np.asarray(Image.fromarray(small).resize(size, Image.BILINEAR))
    frames = round(seconds * rate)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for index in range(frames):
            pixels = background.copy()
            for k, colour in enumerate(((40, 90, 200), (220, 50, 40), (40, 200, 60))):
                w, h = width // 8, height // (3 + k)
                x = int((index * (2 + k) + k * width // 3) % (width - w))
                y = int(height // 8 + k * height // 4)
                pixels[y:y + h, x:x + w] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return frames


def tree_memory(pid: int) -> int:
    """Memory in bytes of process ``pid`` and its descendants (the decoding worker): the sum
    of their proportional set sizes (PSS: pages shared by the forked worker with its parent
    count once), from Linux's /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(
                int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        found = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
        total += int(found.group(1)) * 1024 if found else 0
        todo += children.get(current, [])
    return total


def detect_video(clip: Path, out: Path, args: argparse.Namespace, tiny: bool,
                 test_scale: int, samples: list | None = None) -> tuple[float, float, str]:
    """``clip4hoi detect CLIP --fps F`` in a new process, its memory (:func:`tree_memory`)
    sampled every 0.2 s (with the lines written so far, into ``samples``); returns (its
    frames/s, peak memory, stderr)."""
    overrides = TINY if tiny else []
    argv = [sys.executable, "-m", "clip4hoi", "detect", str(clip), "--out", str(out),
            "--mode", "dense", "--random-weights", "--device", args.device, "--classes",
            CLASSES, "--fps", str(args.fps), "--batch-size", str(args.batch_size),
            "--workers", str(args.workers), "--threads", str(args.threads), "--test-scale",
            str(test_scale), "--max-size", str(test_scale * 5 // 3),
            *[w for o in overrides for w in ("--set", o)]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO),
                                                        os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    lines = out / f"{clip.name}.jsonl"
    peak = 0
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(process.stderr), daemon=True)
    reader.start()
    while process.poll() is None:
        rss = tree_memory(process.pid)
        peak = max(peak, rss)
        if samples is not None:
            done = lines.read_bytes().count(b"\n") if lines.is_file() else 0
            samples.append((time.perf_counter(), done, rss))
        time.sleep(0.2)
    reader.join()
    text = "".join(err)
    if process.returncode != 0:
        raise SystemExit(text[-3000:])
    rate = float(re.search(r"frame\(s\) detected in [\d.]+ s \(([\d.]+) frames/s\)",
                           text).group(1))
    return rate, peak, text


def video_rates(root: Path, args: argparse.Namespace, size: tuple[int, int]) -> dict:
    """Decoding alone, the model alone and the whole path on a short clip."""
    import torch

    from clip4hoi.api import build_training_free_detector
    from clip4hoi.data.sources import VideoFile
    from clip4hoi.engine.predictor import Predictor

    clip = root / "clip.mp4"
    frames = make_clip(clip, args.clip_seconds, size)
    torch.set_num_threads(args.threads)   # as the whole path's process (--threads)
    detector = build_training_free_detector("dense", args.device, True,
                                            TINY if args.tiny else [],
                                            min_size=args.test_scale,
                                            max_size=args.test_scale * 5 // 3)
    classes = detector.encode_classes(CLASSES)
    source = VideoFile(clip, clip.name, fps=args.fps)
    predictor = Predictor(detector.backend, classes, batch_size=args.batch_size, workers=1)
    start = time.perf_counter()
    prepared = [item for item in predictor._decoded([source], [])]
    decode_s = time.perf_counter() - start
    sampled = len(prepared)
    inputs = [item.input for item in prepared]
    targets = [{"orig_size": torch.tensor(item.frame.pixels.shape[-2:])} for item in prepared]
    b = args.batch_size
    detector.backend(inputs[:b], targets[:b], classes)          # warm-up
    start = time.perf_counter()
    for i in range(0, sampled, b):
        detector.backend(inputs[i:i + b], targets[i:i + b], classes)
    model_s = time.perf_counter() - start
    del detector, predictor, prepared, inputs
    whole, peak, _ = detect_video(clip, root / "out", args, args.tiny, args.test_scale)
    report = {"clip_frames": frames, "sampled_frames": sampled,
              "decode_frames_per_s": sampled / decode_s,
              "decode_all_frames_per_s": frames / decode_s,
              "model_frames_per_s": sampled / model_s, "whole_frames_per_s": whole,
              "whole_peak_memory_mib": peak / 2**20}
    print(f"{'video path (sampled frames at --fps ' + str(args.fps) + ')':44s} "
          f"{'frames/s':>9s}")
    print(f"{'decoding alone (decode all, resize sampled)':44s} "
          f"{report['decode_frames_per_s']:9.2f}   ({report['decode_all_frames_per_s']:.0f} "
          f"decoded frames/s)")
    print(f"{'model alone (batch ' + str(b) + ')':44s} {report['model_frames_per_s']:9.3f}")
    print(f"{'whole path (clip4hoi detect, steady state)':44s} {whole:9.3f}   (peak "
          f"memory {report['whole_peak_memory_mib']:.0f} MiB)")
    return report


def video_memory(root: Path, args: argparse.Namespace, size: tuple[int, int]) -> dict:
    """RSS over a long clip, at each tenth of its sampled frames."""
    clip = root / "long.mp4"
    start = time.perf_counter()
    frames = make_clip(clip, args.long_seconds, size)
    made = time.perf_counter() - start
    samples: list = []
    tiny = not args.long_full_size
    rate, peak, _ = detect_video(clip, root / "long_out", args, tiny, args.long_test_scale,
                                 samples)
    total = max(done for _, done, _ in samples)
    rows = []
    for tenth in range(1, 11):
        after = [rss for _, done, rss in samples if done >= total * tenth / 10]
        if after:
            rows.append((tenth * 10, total * tenth // 10, after[0] / 2**20))
    print(f"long clip: {args.long_seconds:.0f} s, {frames} frames ({made:.0f} s to make), "
          f"{total} sampled at --fps {args.fps}, {'tiny' if tiny else 'full-size'} "
          f"networks at --test-scale {args.long_test_scale}, {rate:.2f} frames/s")
    print(f"{'frames done':>14s} {'memory MiB':>10s}")
    for percent, done, rss in rows:
        print(f"{done:8d} ({percent:3d}%) {rss:10.0f}")
    print(f"peak memory {peak / 2**20:.0f} MiB")
    return {"long_seconds": args.long_seconds, "long_frames": frames, "long_sampled": total,
            "long_tiny": tiny, "long_test_scale": args.long_test_scale,
            "long_frames_per_s": rate, "long_peak_memory_mib": peak / 2**20,
            "long_memory_mib": [{"percent": p, "frames": d, "mib": r} for p, d, r in rows]}


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
    parser.add_argument("--threads", type=int, default=1,
                        help="--video: torch threads of the model alone and of detect's "
                        "process (default: %(default)s, steadiest on a shared machine)")
    parser.add_argument("--video", action="store_true",
                        help="video: decoding, model and whole path; memory over a long clip")
    parser.add_argument("--clip-seconds", type=float, default=10.0,
                        help="--video: length of the clip for the frames/s")
    parser.add_argument("--fps", type=float, default=2.0, help="--video: sampled frames/s")
    parser.add_argument("--long-seconds", type=float, default=600.0,
                        help="--video: length of the long clip for memory (0: none)")
    parser.add_argument("--long-full-size", action="store_true",
                        help="--video: the full-size networks on the long clip too")
    parser.add_argument("--test-scale", type=int, default=800,
                        help="--video: short side the frames are resized to")
    parser.add_argument("--long-test-scale", type=int, default=800,
                        help="--video: the same for the long clip")
    parser.add_argument("--json", default="bench_detect.json", help="write results here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    load_before = os.getloadavg()[0]
    what = f"a {args.size} video at 30 frames/s" if args.video else \
        f"{args.images} images {args.size}"
    print(f"clip4hoi detect --mode dense --random-weights on {what} "
          f"({'tiny' if args.tiny else 'full-size'} networks), {cpu_model()}, "
          f"{os.cpu_count()} CPUs, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("CLIP4HOI_TEXT_CACHE", str(root / "text"))
        if args.video:
            report = video_rates(root, args, (width, height))
            if args.long_seconds:
                report.update(video_memory(root, args, (width, height)))
            report.update({"fps": args.fps, "clip_seconds": args.clip_seconds})
        else:
            make_images(root / "photos", args.images, (width, height))
            report = compare_ranks(root, args) if args.ranks else compare_loops(root, args)
            report.update({"images": args.images, "repeat": args.repeat,
                           "workers": args.workers})
    report.update({"size": args.size, "tiny": args.tiny, "batch_size": args.batch_size,
                   "cpu": cpu_model(), "cpus": os.cpu_count(), "device": args.device,
                   "load_average": [load_before, os.getloadavg()[0]]})
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

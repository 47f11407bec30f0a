"""Folder throughput of ``clip4hoi detect``: the one-image-at-a-time loop it used to run
against the new path, on the same images, with identical JSON results.

* **sequential**: per image, in one thread — read, resize, model, records, draw, JPEG,
  write (the loop ``cli.py`` had before ``clip4hoi.detect`` existed);
* **new**: :func:`clip4hoi.detect.run_detect` — a ``DataLoader`` whose workers
  decode and resize ahead, ``--batch-size`` images per forward pass, drawing and writing on
  a background thread.

Both run the training-free ``dense`` mode with random weights (``--tiny``: the tests' tiny
DETR and CLIP; default: the full-size DETR-R50 and ViT-B/16) on ``--images`` photo-like
random images of ``--size``, writing JSON and drawn copies. The per-image JSONs of the two
runs must be identical but for ``seconds``. The text embeddings are encoded before timing.
Prints a table and writes JSON (``--json``). The load average is printed: on a shared
machine the numbers move with the other jobs.

Usage::

    python benchmarks/bench_detect.py [--images 8] [--size 640x480] [--tiny]
        [--batch-size 1] [--workers -1] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clip4hoi.api import build_training_free_detector, to_records
from clip4hoi.data.images import load_image
from clip4hoi.detect import DetectOptions, run_detect
from clip4hoi.fileio import write_atomic
from clip4hoi.visualize import draw_detections

TINY = ['detector.architecture={"num_classes": 80, "hidden_dim": 64, "num_heads": 4, '
        '"num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 128, '
        '"num_queries": 20, "backbone": "resnet18"}', "detector.num_heads=4",
        'clip.model_cfg={"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, '
        '"width": 64, "patch_size": 16, "head_width": 32}, "text_cfg": {"context_length": 77,'
        ' "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}']
CLASSES = "hicodet"


def make_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Smooth random images (JPEG-compressible like photos)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.BILINEAR).save(folder / f"{i:04d}.jpg",
                                                                 quality=90)


def sequential(detector, classes, folder: Path, out: Path, draw: int = 5) -> None:
    """The old loop: everything in one thread, one image after the other."""
    for path in sorted(folder.iterdir()):
        image = load_image(path)
        start = time.perf_counter()
        result = detector(image, classes)[0]
        records = to_records(result, classes, 100, 0.0)
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


def results(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(out.glob("*.jpg.json")):
        payload = json.loads(path.read_text())
        payload.pop("seconds")
        found[path.name] = payload
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="images in the folder")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the images")
    parser.add_argument("--tiny", action="store_true", help="tiny random DETR and CLIP")
    parser.add_argument("--batch-size", type=int, default=1, help="new path's batch size")
    parser.add_argument("--workers", type=int, default=-1, help="new path's workers")
    parser.add_argument("--json", default="bench_detect.json", help="write results here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    overrides = TINY if args.tiny else []
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root / "photos", args.images, (width, height))
        detector = build_training_free_detector("dense", "cpu", True, overrides)
        classes = detector.encode_classes(CLASSES)
        (root / "seq").mkdir()
        start = time.perf_counter()
        sequential(detector, classes, root / "photos", root / "seq")
        seq_time = time.perf_counter() - start

        # the new path, with the same (already built and encoded) detector
        from clip4hoi import detect

        detect.build_detector = lambda *_: detector
        options = DetectOptions(inputs=[str(root / "photos")], out=str(root / "new"),
                                mode="dense", classes=CLASSES, random_weights=True,
                                device="cpu", batch_size=args.batch_size,
                                workers=args.workers)
        with open(os.devnull, "w") as quiet:
            start = time.perf_counter()
            run_detect(options, log=quiet)
            new_time = time.perf_counter() - start
        same = results(root / "seq") == results(root / "new")
        count = len(results(root / "seq"))

    workers = args.workers if args.workers >= 0 else detect.default_workers(args.images)
    rows = [("sequential (old loop)", seq_time), (f"new: {workers} worker(s), batch "
                                                  f"{args.batch_size}, writer thread", new_time)]
    print(f"clip4hoi detect --mode dense --random-weights on {count} images {args.size} "
          f"({'tiny' if args.tiny else 'full-size'} networks), {platform.processor() or ''} "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load "
          f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'path':48s} {'seconds':>8s} {'images/s':>9s}")
    for name, seconds in rows:
        print(f"{name:48s} {seconds:8.2f} {count / seconds:9.3f}")
    print(f"identical JSON results (but 'seconds'): {same}")
    report = {"images": count, "size": args.size, "tiny": args.tiny,
              "batch_size": args.batch_size, "workers": workers, "cpus": os.cpu_count(),
              "sequential_s": seq_time, "new_s": new_time,
              "sequential_images_per_s": count / seq_time, "new_images_per_s": count / new_time,
              "identical": same, "load_average": [load_before, os.getloadavg()[0]]}
    Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

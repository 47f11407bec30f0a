"""Start-up time of ``clip4hoi demo``: from the command to the page answering.

Runs ``python -m clip4hoi demo --random-weights --port P`` as a subprocess and polls
``http://127.0.0.1:P/`` until it answers 200, then the API's ``/detect`` once through
``gradio_client`` on one 640×480 image (the first request). Two detectors: the full-size
architectures with random weights (DETR-R50, CLIP ViT-B/16 — what a real checkpoint
builds, less reading its weights from disk) and a tiny one (``--set`` overrides as in the
tests), so the share of Gradio's own start-up shows. Each case runs ``--repeat`` times;
the table shows the median. No network is used.

Usage::

    python benchmarks/bench_demo.py [--repeat 2] [--cases full,tiny] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TINY = ["detector.architecture={num_classes: 80, hidden_dim: 64, num_heads: 4, "
        "num_encoder_layers: 1, num_decoder_layers: 1, dim_feedforward: 128, "
        "num_queries: 20, backbone: resnet18}", "detector.num_heads=4",
        "clip.model_cfg={embed_dim: 32, vision_cfg: {image_size: 64, layers: 2, width: 64, "
        "patch_size: 16, head_width: 32}, text_cfg: {context_length: 77, vocab_size: 49408, "
        "width: 32, heads: 2, layers: 2}}",
        "head={interactor_layers: 1, interactor_heads: 4, interactor_ffn: 128, spatial_dim: 32, "
        "decoder_dim: 64, decoder_layers: 1, decoder_heads: 4, decoder_ffn: 128, "
        "prefix_length: 4, conjunction_length: 2}"]
CASES = {"full": [], "tiny": TINY}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_once(overrides: list[str], image: Path, timeout: float = 600) -> dict[str, float]:
    """Seconds to the page answering and to the first detection."""
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    sets = [part for item in overrides for part in ("--set", item)]
    command = [sys.executable, "-m", "clip4hoi", "demo", "--random-weights", "--device",
               "cpu", "--port", str(port), *sets]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"clip4hoi demo exited: {process.stderr.read()}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError("the page did not answer in time")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        page = time.perf_counter() - start
        from gradio_client import Client, handle_file

        client = Client(url, verbose=False, download_files=False)
        begin = time.perf_counter()
        client.predict([handle_file(str(image))], "trained", "custom (the text below)",
                       "ride bicycle, hold cup", 0.0, 100, 10, api_name="/detect")
        return {"page_s": page, "first_detect_s": time.perf_counter() - begin}
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cases", default="full,tiny")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    from PIL import Image

    image = Path(tempfile.mkdtemp()) / "photo.jpg"
    Image.effect_noise((640, 480), 60).convert("RGB").save(image)
    load = os.getloadavg()[0]
    results = {}
    for case in args.cases.split(","):
        runs = [run_once(CASES[case], image) for _ in range(args.repeat)]
        results[case] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        results[case]["runs"] = runs
    print(f"clip4hoi demo start-up ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {load:.1f} -> {os.getloadavg()[0]:.1f}; "
          f"median of {args.repeat})")
    print(f"{'detector':<10} {'page answers (s)':>17} {'first /detect (s)':>18}")
    for case, result in results.items():
        print(f"{case:<10} {result['page_s']:>17.1f} {result['first_detect_s']:>18.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

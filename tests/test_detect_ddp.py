"""``torchrun --nproc_per_node=2 -m clip4hoi detect`` on the CPU (gloo): the ranks share the
inputs and give the results of one process; a rank killed with SIGKILL is restarted by
``--max-restarts=1`` and the job completes; a rank that raises ends the job within seconds.

The ranks run ``tests/distributed_worker.py detect...`` (``clip4hoi detect`` with the tiny
random networks, DETR's queries labelled person / bicycle); every rank logs the results it
writes, so the tests see who did what, and how often.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    people_and_bicycles,
    seconds_after,
    set_flags,
    tiny_training_free_flags,
    write_test_video,
)
from PIL import Image

from clip4hoi.cli import main
from clip4hoi.models.detr import DETR

TESTS = Path(__file__).resolve().parent
SIZES = [(48, 64), (64, 48), (40, 64), (64, 64), (30, 90), (48, 64)]


def _inputs(folder: Path) -> Path:
    """12 photos of six sizes (four in a sub-folder) and a video of 6 frames."""
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = SIZES[i % len(SIZES)]
        path = folder / ("sub" if i >= 8 else "") / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    write_test_video(folder / "clip.mp4", frames=6, rate=4, size=(48, 64))
    return folder


def _argv(inputs: Path, out: Path) -> list[str]:
    return ["detect", str(inputs), "--out", str(out), "--random-weights", "--mode", "dense",
            "--device", "cpu", "--workers", "0", "--top-k", "0", "--test-scale", "96",
            "--max-size", "160", "--classes", "ride bicycle, hold bicycle, hug person",
            "--every", "2", *set_flags(tiny_training_free_flags())]


def _torchrun(how: str, log: Path, argv: list[str], *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", *options, str(TESTS / "distributed_worker.py"), how,
               str(log), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _same_detections(a: list[dict], b: list[dict]) -> None:
    """Equal up to float rounding: scores within 1e-5, boxes within 1e-3 pixels (in an
    order that does not depend on near-tied scores)."""
    def key(d: dict) -> tuple:
        return d["hoi"], *np.round(d["human_box"], 1), *np.round(d["object_box"], 1)

    assert len(a) == len(b)
    for x, y in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert (x["hoi"], x["verb"], x["object"]) == (y["hoi"], y["verb"], y["object"])
        assert abs(x["score"] - y["score"]) <= 1e-5
        np.testing.assert_allclose(x["human_box"] + x["object_box"],  # written to 0.01 px
                                   y["human_box"] + y["object_box"], atol=0.01 + 1e-3)


def _results(out: Path) -> dict[str, list[dict]]:
    found = {}
    for path in sorted(out.rglob("*.json")):
        if path.name != "detections.json" and not path.name.endswith(".timeline.json"):
            found[str(path.relative_to(out))] = json.loads(path.read_text())["detections"]
    for path in sorted(out.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            frame = json.loads(line)
            found[f"{path.name}@{frame['frame']}"] = frame["detections"]
    return found


def _check_complete(out: Path, log: Path, images: int = 12) -> Counter:
    """Every input has one valid result, the combined file lists each image once, no
    temporary file is left; returns how often each result was written."""
    written = Counter(line.split()[1] for line in log.read_text().splitlines())
    combined = json.loads((out / "detections.json").read_text())["images"]
    assert sorted(r["file_name"] for r in combined) == sorted(
        n for n in written if n != "clip.mp4")
    assert len(combined) == images and len(written) == images + 1
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    for name in written:
        if name != "clip.mp4":
            assert json.loads((out / f"{name}.json").read_text())["file_name"] == name
            assert (out / f"{name}.drawn.jpg").is_file()
    assert len((out / "clip.mp4.jsonl").read_text().splitlines()) == 3
    return written


def test_two_ranks_give_the_results_of_one_process(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    inputs = _inputs(tmp_path / "inputs")
    log = tmp_path / "ranks.log"
    process = _torchrun("detect", log, _argv(inputs, tmp_path / "ranks"))
    monkeypatch.setattr(DETR, "forward", people_and_bicycles(DETR.forward))
    with monkeypatch.context() as one_thread:   # the one-process run, meanwhile
        one_thread.setenv("OMP_NUM_THREADS", "1")
        assert main(_argv(inputs, tmp_path / "one")) == 0
    capsys.readouterr()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-4000:]
    assert "on 2 ranks" in stderr
    assert "13 done, 0 skipped" in stderr   # 12 images and the video, counted on rank 0

    written = _check_complete(tmp_path / "ranks", log)
    assert set(written.values()) == {1}                 # each input done by one rank, once
    ranks = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert ranks == {"0": 7, "1": 6}                    # 6 images each, the video on rank 0
    one, two = _results(tmp_path / "one"), _results(tmp_path / "ranks")
    assert one.keys() == two.keys() and len(one) == 15 and sum(map(len, one.values()))
    for name in one:
        _same_detections(one[name], two[name])
    combined = [json.loads((tmp_path / run / "detections.json").read_text())
                for run in ("one", "ranks")]
    assert [r["file_name"] for r in combined[0]["images"]] == \
        [r["file_name"] for r in combined[1]["images"]]
    for a, b in zip(combined[0]["images"], combined[1]["images"], strict=True):
        np.testing.assert_allclose(sorted(a["scores"]), sorted(b["scores"]), atol=1e-5)

    again = _torchrun("detect", log, _argv(inputs, tmp_path / "ranks"))
    _, stderr = again.communicate(timeout=300)     # a rerun resumes: nothing to do
    assert again.returncode == 0 and "0 done, 13 skipped" in stderr, stderr[-4000:]


def test_a_killed_rank_is_restarted_and_the_job_completes(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "inputs")
    log = tmp_path / "ranks.log"
    process = _torchrun("detect-kill", log, _argv(inputs, tmp_path / "out"),
                        "--max-restarts=1")
    _, stderr = process.communicate(timeout=400)
    assert process.returncode == 0, stderr[-4000:]
    assert "SIGKILL" in stderr or "Signals.SIGKILL" in stderr or "-9" in stderr
    written = _check_complete(tmp_path / "out", log)
    assert set(written.values()) == {1}, written   # nothing finished was done again


def test_a_failing_rank_ends_the_job_within_seconds(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "inputs")
    process = _torchrun("detect-fail", tmp_path / "ranks.log",
                        _argv(inputs, tmp_path / "out"))
    seconds, stderr = seconds_after(process, "rank 1 failed")
    assert process.returncode != 0, stderr[-4000:]
    assert seconds is not None, stderr[-4000:]
    assert "clip4hoi detect: rank 1 failed: RuntimeError: simulated failure on rank 1" in stderr
    print(f"the job ended {seconds:.1f} s after rank 1 failed")
    assert seconds < 30, stderr[-4000:]

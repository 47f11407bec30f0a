"""Distributed training: ``torchrun --nproc_per_node=2 -m clip4hoi train`` on the CPU (gloo)
trains, checkpoints and evaluates with the detections of both ranks gathered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import seconds_after, set_flags
from test_engine import CONFIGS, make_small_data

from clip4hoi.cli import main
from clip4hoi.engine.checkpoint import load_state


def test_two_process_gloo_run_checkpoints_and_evaluates(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    data = make_small_data(tmp_path / "data")
    run = tmp_path / "run"
    settings = [f"data.root={data}", f"feature_cache.dir={tmp_path / 'cache'}",
                "data.transform.scales=[112,128]", "data.transform.test_scale=128",
                "data.transform.max_size=256", "train.epochs=2", "train.batch_size=4",
                "train.test_batch_size=1", "train.eval_every=2"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "clip4hoi", "train", str(CONFIGS / "smoke.yaml"),
               "--output-dir", str(run), *set_flags(settings)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-4000:]

    state = load_state(run / "checkpoints" / "step_00000004.state.pt")
    assert (state["world_size"], state["micro_batch"], state["epoch"]) == (2, 2, 2)
    assert len(state["rng"]) == 2                     # every rank's RNG state
    assert (run / "checkpoints" / "best.safetensors").is_file()
    evaluation = [json.loads(line) for line in (run / "metrics.jsonl").open()][-1]
    assert "map_full" in evaluation and evaluation["step"] == 4

    # The gathered evaluation equals a single-process test of the same weights.
    dets = tmp_path / "dets.json"
    assert main(["test", str(CONFIGS / "smoke.yaml"), "--checkpoint",
                 str(run / "checkpoints" / "step_00000004.safetensors"), "--output", str(dets),
                 *set_flags(settings)]) == 0
    capsys.readouterr()
    single = json.loads((tmp_path / "dets.results.json").read_text())["map"]
    assert single["full"] == pytest.approx(evaluation["map_full"])
    assert len(json.loads(dets.read_text())["images"]) == 4


def test_a_failing_rank_ends_the_job_within_seconds(tmp_path: Path) -> None:
    """Rank 1 raises in its second optimiser step while rank 0 waits in a collective: no
    barrier holds the job until the gloo/NCCL timeout; it exits non-zero, naming rank 1."""
    data = make_small_data(tmp_path / "data")
    settings = [f"data.root={data}", f"feature_cache.dir={tmp_path / 'cache'}",
                "data.transform.scales=[112,128]", "data.transform.test_scale=128",
                "data.transform.max_size=256", "train.epochs=5", "train.batch_size=4",
                "train.eval_every=0"]
    tests = Path(__file__).resolve().parent
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(tests / "distributed_worker.py"), "fail", "train",
               str(CONFIGS / "smoke.yaml"), "--output-dir", str(tmp_path / "run"),
               *set_flags(settings)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    # Time from the failure on (start-up, imports and the first step come before it).
    seconds, stderr = seconds_after(process, "rank 1 failed")
    assert process.returncode != 0, stderr[-4000:]
    assert seconds is not None, stderr[-4000:]
    assert "rank 1 failed: RuntimeError: CUDA out of memory (simulated on rank 1)" in stderr
    print(f"the job ended {seconds:.1f} s after rank 1 failed")
    assert seconds < 30, stderr[-4000:]

"""The gradient of an optimiser step does not depend on how its images are split (issue 8,
defects 2 and 5): one process × 4 images, two gloo ranks × 2 images, and one process × 2
micro-batches of 2 give the same head and prompt gradients; the text encoder sharded over
the ranks gives the same prompt gradients as unsharded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_worker import first_step_gradients
from test_engine import make_small_data, single_thread, tiny_experiment

from clip4hoi.engine.trainer import Trainer

TESTS = Path(__file__).resolve().parent
# Dropout off; batch 4 per optimiser step; the frozen features come from the cache (one
# image at a time, so they do not depend on the batch either).
COMMON = ["model.head.dropout=0", "train.batch_size=4", "train.eval_every=0"]


def relative_error(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> float:
    assert expected.keys() == got.keys()
    return max(float((got[k] - expected[k]).norm() / expected[k].norm().clamp(min=1e-30))
               for k in expected)


@pytest.fixture(scope="module")
def single_process(tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Path, Path, dict[int, dict[str, torch.Tensor]]]:
    root = tmp_path_factory.mktemp("gradients")
    data = make_small_data(root / "data")
    grads = {}
    with single_thread():
        for accumulation in (1, 2):
            trainer = Trainer(tiny_experiment(data, root / f"acc{accumulation}", *COMMON,
                                              f"feature_cache.dir={root / 'cache'}",
                                              f"train.accumulation_steps={accumulation}"))
            grads[accumulation] = first_step_gradients(trainer)
    return root, data, grads


def test_micro_batches_give_the_full_batch_gradient(single_process: tuple) -> None:
    _, _, grads = single_process
    assert {k for k, g in grads[1].items() if g.abs().sum() > 0} >= {
        "classifier.prefix", "classifier.conjunction", "classifier.pair_proj.weight",
        "interactor.fuse.0.weight", "decoder.out_proj.weight"}
    error = relative_error(grads[1], grads[2])
    print(f"1 × 4 vs 1 × 2 micro-batches of 2: relative gradient error {error:.2e}")
    assert error < 1e-5


def test_two_ranks_and_the_sharded_text_encoder_give_the_full_batch_gradient(
        single_process: tuple) -> None:
    root, data, grads = single_process
    out = root / "ddp.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(TESTS / "distributed_worker.py"), "gradients",
               str(data), str(root / "ddp"), str(out), *COMMON,
               f"feature_cache.dir={root / 'cache'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    result = torch.load(out, weights_only=True)
    ranks, sharding = (relative_error(grads[1], result["sharded"]),
                       relative_error(result["unsharded"], result["sharded"]))
    print(f"1 × 4 vs 2 ranks × 2: {ranks:.2e}; sharded vs unsharded prompts: {sharding:.2e}")
    assert ranks < 1e-5 and sharding < 1e-5

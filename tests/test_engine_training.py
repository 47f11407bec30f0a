"""Training runs end to end (tiny random models on synthetic data, one CPU thread): the
smoke config fits its training set, a killed run resumes to the same weights, a
non-finite loss stops the run, missing files fail at once, ``clip4hoi train`` / ``test``."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import set_flags
from test_engine import CONFIGS, make_small_data, single_thread, tiny_experiment

from clip4hoi.cli import main
from clip4hoi.data.synthetic import make_synthetic
from clip4hoi.engine.checkpoint import CheckpointManager, load_state, read_checkpoint
from clip4hoi.engine.config import load_experiment
from clip4hoi.engine.evaluate import evaluate_model
from clip4hoi.engine.trainer import Trainer, TrainingError
from clip4hoi.models.model import CLIP4HOI, head_state_dict

TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small_data(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture()
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_smoke_config_fits_its_training_set(tmp_path: Path, one_thread: None) -> None:
    """Acceptance: configs/smoke.yaml as is, evaluated on its training images."""
    make_synthetic(tmp_path / "data", n_train=64, n_test=32, seed=0)
    config = load_experiment(CONFIGS / "smoke.yaml", [
        f"data.root={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'run'}",
        f"feature_cache.dir={tmp_path / 'cache'}", "train.eval_every=0",
        "train.eval_at_end=false", "data.test_images=images/train2015",
        "data.test_annotations=instances_train2015.json"])
    trainer = Trainer(config)
    before = evaluate_model(trainer.model, trainer.test_set, trainer.info, batch_size=8,
                            cache=trainer.cache)
    trainer.fit()
    after = evaluate_model(trainer.model, trainer.test_set, trainer.info, batch_size=8,
                           cache=trainer.cache)
    print(f"train-set Full mAP: {before.maps['full']:.2f} before, {after.maps['full']:.2f} "
          f"after training")
    assert before.maps["full"] < 50
    assert after.maps["full"] >= 90
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert {"epoch", "step", "loss", "loss_pair", "loss_global", "lr"} <= set(lines[0])
    assert lines[-1]["loss"] < lines[0]["loss"]


def _head(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in head_state_dict(trainer.model).items()}


def test_a_killed_run_resumes_to_the_same_weights(small_data: Path, tmp_path: Path,
                                                  one_thread: None) -> None:
    """6 steps in one go vs. a run killed after step 5 whose last checkpoint is step 3,
    resumed by fresh objects (and with DataLoader workers: the order and augmentation do
    not depend on them). Augmentation and dropout are on; the run crosses an epoch."""
    common = ["data.transform.augment=true", "train.batch_size=2", "train.eval_at_end=false",
              "feature_cache.enabled=false", "model.head.dropout=0.3", "train.lr=1.0e-3"]
    whole = Trainer(tiny_experiment(small_data, tmp_path / "whole", *common,
                                    "train.max_steps=6"))
    assert whole.steps_per_epoch == 4
    whole.fit()

    killed_dir = tmp_path / "killed"
    Trainer(tiny_experiment(small_data, killed_dir, *common, "train.max_steps=5",
                            "train.checkpoint_every=3")).fit()
    step_3 = killed_dir / "checkpoints" / "step_00000003.safetensors"
    assert load_state(killed_dir / "checkpoints" / "step_00000003.state.pt")["batches_done"] == 3
    resumed = Trainer(tiny_experiment(small_data, killed_dir, *common, "train.max_steps=6",
                                      "data.num_workers=2"), resume=step_3)
    assert (resumed.epoch, resumed.batches_done, resumed.step) == (0, 3, 3)
    resumed.fit()

    expected, got = _head(whole), _head(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], rtol=1e-5, atol=1e-7), name
    steps = [json.loads(line)["step"] for line in (killed_dir / "metrics.jsonl").open()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))   # no stale lines
    _, tensors, meta = read_checkpoint(killed_dir / "checkpoints" / "step_00000006.safetensors")
    assert meta["step"] == "6" and torch.equal(tensors["classifier.pair_proj.bias"],
                                               got["classifier.pair_proj.bias"])


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(
        small_data: Path, tmp_path: Path, one_thread: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(tiny_experiment(small_data, tmp_path, "train.batch_size=2",
                                      "train.eval_every=0", "train.checkpoint_every=2"))
    original = CLIP4HOI._losses
    calls = {"n": 0}

    def failing_losses(self: CLIP4HOI, *args: object) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        losses = original(self, *args)
        if calls["n"] == 3:
            losses["loss_pair"] = losses["loss_pair"] * float("nan")
        return losses

    monkeypatch.setattr(CLIP4HOI, "_losses", failing_losses)
    message = r"non-finite loss at epoch 1, step 3 \(rank 0: loss_pair=nan, loss_global=[0-9.]+\)"
    with pytest.raises(TrainingError, match=message):
        trainer.fit()
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert [p.name for p in manager.checkpoints()] == ["step_00000002.state.pt"]
    config, _, _ = read_checkpoint(tmp_path / "checkpoints" / "step_00000002.safetensors")
    assert config.detector.use_gt_boxes


def test_missing_files_fail_before_any_model_is_built(
        small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr("clip4hoi.engine.trainer.build_model", no_model)
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        Trainer(tiny_experiment(small_data, tmp_path, "data.train_annotations=nothing.json"))
    with pytest.raises(FileNotFoundError, match="no_images"):
        Trainer(tiny_experiment(small_data, tmp_path, "data.test_images=no_images"))


def test_cli_train_then_test(small_data: Path, tmp_path: Path, one_thread: None,
                             capsys: pytest.CaptureFixture) -> None:
    config = CONFIGS / "smoke.yaml"
    settings = [f"data.root={small_data}", f"feature_cache.dir={tmp_path / 'cache'}",
                "data.transform.scales=[112,128]", "data.transform.test_scale=128",
                "data.transform.max_size=256", "train.epochs=1", "train.batch_size=4",
                f"train.tensorboard={str(TENSORBOARD).lower()}"]
    assert main(["train", str(config), "--output-dir", str(tmp_path / "run"),
                 *set_flags(settings)]) == 0
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "best.safetensors").is_file()
    assert (run / "tensorboard").is_dir() == TENSORBOARD
    entries = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert {"map_full", "map_rare", "map_non_rare"} <= set(entries[-1])
    # Resuming a finished run does nothing more; a fresh run there is refused.
    assert main(["train", str(config), "--output-dir", str(run), "--resume",
                 *set_flags(settings)]) == 0
    assert main(["train", str(config), "--output-dir", str(run), *set_flags(settings)]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err

    dets = tmp_path / "dets.json"
    assert main(["test", str(config), "--checkpoint",
                 str(run / "checkpoints" / "best.safetensors"), "--output", str(dets),
                 "--precision", "fp32", *set_flags(settings)]) == 0
    out = capsys.readouterr().out
    assert "clip4hoi test: mode trained, precision fp32 (--precision fp32)" in out
    assert "Full" in out
    results = json.loads((tmp_path / "dets.results.json").read_text())
    assert results["map"]["full"] == pytest.approx(entries[-1]["map_full"])
    # Oracle boxes come back in original pixels: they are the annotated boxes, written as
    # 0-based inclusive indices.
    annotations = json.loads((small_data / "instances_test2015.json").read_text())
    records = {r["file_name"]: r for r in json.loads(dets.read_text())["images"]}
    for name, ann in zip(annotations["filenames"], annotations["annotation"], strict=True):
        if not ann["hoi"]:
            continue
        written = np.unique(np.array(records[name]["human_boxes"]).round(3), axis=0)
        annotated = np.unique(np.array(ann["boxes_h"]) - [1, 1, 1, 1], axis=0)
        assert np.allclose(written, annotated, atol=1e-3)


def test_a_run_without_positive_pairs_stops_with_the_likely_causes(
        small_data: Path, tmp_path: Path, one_thread: None) -> None:
    """The random DETR's proposals never match an annotated pair (the oracle boxes are off;
    it finds no person, as a detector with a wrong label map): only the global loss could
    train, so the run stops; metrics.jsonl shows why."""
    trainer = Trainer(tiny_experiment(small_data, tmp_path, "model.detector.use_gt_boxes=false",
                                      "train.batch_size=2", "train.eval_every=0",
                                      "train.log_every=1", "train.max_steps_without_positives=3"))
    with pytest.raises(TrainingError, match=r"no proposal pair matched an annotated pair in "
                                            r"the last 3 optimiser steps.*detector\.weights"):
        trainer.fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(line["positives"] == 0 and line["pairs"] >= 0 and line["loss_pair"] == 0
               for line in lines)

"""The training engine's parts: experiment configs, samplers, schedules, checkpoints, the
feature cache and the test loop (tiny random models, synthetic data)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from clip4hoi.data.synthetic import make_synthetic
from clip4hoi.data.transforms import TransformConfig, rescale_boxes
from clip4hoi.engine.checkpoint import (
    CheckpointManager,
    load_state,
    resolve_resume,
    rng_state,
    seed_everything,
    set_rng_state,
)
from clip4hoi.engine.config import ExperimentConfig, TrainConfig, load_experiment
from clip4hoi.engine.data import ResumableSampler, SeededDataset, ShardSampler, build_dataset
from clip4hoi.engine.distributed import DistInfo
from clip4hoi.engine.evaluate import evaluate_records, predict
from clip4hoi.engine.feature_cache import (
    CachedFeatures,
    FeatureCache,
    fill_cache,
    frozen_fingerprint,
)
from clip4hoi.engine.trainer import lr_factor
from clip4hoi.evaluation import detections_from_ground_truth, detections_to_records
from clip4hoi.models.model import build_model

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread: on a small shared CPU, two threads can be many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture()
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


def tiny_experiment(root: Path, output_dir: Path, *overrides: str) -> ExperimentConfig:
    """``configs/smoke.yaml`` on a synthetic dataset at ``root`` with 128-pixel images."""
    return load_experiment(CONFIGS / "smoke.yaml", [
        f"data.root={root}", f"train.output_dir={output_dir}",
        f"feature_cache.dir={output_dir / 'cache'}",
        "data.transform.scales=[112,128]", "data.transform.test_scale=128",
        "data.transform.max_size=256", *overrides])


def make_small_data(root: Path) -> Path:
    """8 training and 4 test images of 128 pixels."""
    make_synthetic(root, n_train=8, n_test=4, seed=0, image_size=128)
    return root


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small_data(tmp_path_factory.mktemp("synthetic"))


# ----------------------------------------------------------------------------- configs

def test_every_config_loads() -> None:
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    expected = {"hicodet", "hicodet_rf_uc", "hicodet_nf_uc", "hicodet_uo", "hicodet_uv",
                "vcoco", "smoke", *(f"hicodet_uc{i}" for i in range(5))}
    assert expected <= names
    for name in sorted(names):
        config = load_experiment(CONFIGS / f"{name}.yaml")
        assert config.name == name
    assert load_experiment(CONFIGS / "hicodet_rf_uc.yaml").data.zero_shot == "rf_uc"
    assert load_experiment(CONFIGS / "hicodet_uc3.yaml").data.zero_shot == "uc3"
    vcoco = load_experiment(CONFIGS / "vcoco.yaml")
    assert vcoco.data.dataset == "vcoco" and vcoco.model.classes == "vcoco"
    full = load_experiment(CONFIGS / "hicodet.yaml")
    assert (full.train.lr, full.train.weight_decay, full.train.epochs) == (1e-4, 1e-4, 20)
    assert (full.train.lr_drop_epochs, full.train.clip_grad_norm) == ([10], 0.1)
    assert full.train.batch_size == 16 and full.data.zero_shot is None


def test_base_includes_overrides_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(
        {"train": {"lr": 0.5, "epochs": 3}, "data": {"transform": {"test_scale": 600}}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(
        {"base": "a.yaml", "train": {"epochs": 4}}))
    config = load_experiment(tmp_path / "b.yaml", ["train.seed=7"])
    assert (config.train.lr, config.train.epochs, config.train.seed) == (0.5, 4, 7)
    assert config.data.transform.test_scale == 600 and config.data.transform.max_size == 1333
    assert config.output_dir == Path("outputs/b")
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_experiment(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("train: {lr_schedule: linear}\n")
    with pytest.raises(ValueError, match="lr_schedule"):
        load_experiment(tmp_path / "e.yaml")
    with pytest.raises(ValueError, match="unknown key"):
        load_experiment(tmp_path / "a.yaml", ["train.learning_rate=1"])
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_experiment(tmp_path / "missing.yaml")


def test_lr_schedules() -> None:
    cfg = TrainConfig()                                   # step: × 0.1 after epoch 10 of 20
    factors = [lr_factor(s, cfg, 100, 2000) for s in (0, 999, 1000, 1999)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1])
    cfg = TrainConfig(lr_schedule="cosine", warmup_steps=10)
    assert lr_factor(0, cfg, 100, 2000) == pytest.approx(0.1)
    assert lr_factor(1000, cfg, 100, 2000) == pytest.approx(0.5)
    assert lr_factor(2000, cfg, 100, 2000) == pytest.approx(0.0)
    assert lr_factor(5, TrainConfig(lr_schedule="constant"), 100, 2000) == 1.0


# ----------------------------------------------------------------------------- sampling

def test_resumable_sampler_order_shards_and_offsets() -> None:
    samplers = [ResumableSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for sampler in samplers:
        sampler.set_epoch(1)
    keys = [list(s) for s in samplers]
    assert [len(k) for k in keys] == [4, 4, 4]       # padded to 12 like DistributedSampler
    assert {i for k in keys for i, _ in k} == set(range(10))
    again = ResumableSampler(10, seed=3, rank=1, world_size=3)
    again.set_epoch(1, start=2)
    assert list(again) == keys[1][2:] and len(again) == 2
    other_epoch = ResumableSampler(10, seed=3)
    other_epoch.set_epoch(2)
    first_epoch = ResumableSampler(10, seed=3)
    first_epoch.set_epoch(1)
    assert [i for i, _ in other_epoch] != [i for i, _ in first_epoch]
    assert list(ShardSampler(5, rank=1, world_size=2)) == [1, 3]


def test_seeded_items_do_not_touch_the_training_rng(small_data: Path, tmp_path: Path) -> None:
    config = tiny_experiment(small_data, tmp_path, "data.transform.augment=true")
    dataset = SeededDataset(build_dataset(config.data, train=True))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = dataset[(0, 123)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(dataset[(0, 123)][0], first[0])           # same seed, same draw
    draws = {float(dataset[(0, seed)][0].float().mean()) for seed in range(6)}
    assert len(draws) > 1                                        # augmentation varies


# ----------------------------------------------------------------------------- checkpoints

def test_rng_state_survives_a_weights_only_round_trip(tmp_path: Path) -> None:
    import random

    import numpy as np

    seed_everything(11)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    seed_everything(99)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_checkpoint_manager_keeps_the_last_k(tmp_path: Path) -> None:
    from conftest import tiny_model_config

    model = build_model(tiny_model_config())
    manager = CheckpointManager(tmp_path / "checkpoints", keep=2)
    for step in (5, 10, 15):
        manager.save(model, {"epoch": 0, "step": step}, step)
    names = sorted(p.name for p in manager.dir.iterdir())
    assert names == ["step_00000010.safetensors", "step_00000010.state.pt",
                     "step_00000015.safetensors", "step_00000015.state.pt"]
    assert manager.latest().name == "step_00000015.state.pt"
    assert load_state(manager.latest())["step"] == 15
    weights, state = resolve_resume(tmp_path, tmp_path)
    assert (weights.name, state.name) == ("step_00000015.safetensors", "step_00000015.state.pt")
    assert resolve_resume(weights, tmp_path) == (weights, state)
    (manager.dir / "step_00000015.state.pt").unlink()        # an incomplete checkpoint
    assert manager.latest().name == "step_00000010.state.pt"
    with pytest.raises(FileNotFoundError, match=r"step_00000015\.state\.pt"):
        resolve_resume(weights, tmp_path)
    manager.save_best(model, "full", 12.5, 10)
    assert (manager.dir / "best.safetensors").is_file()


# ----------------------------------------------------------------------------- feature cache

def test_the_cached_training_path_decodes_no_image(small_data: Path, tmp_path: Path,
                                                   one_thread: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With the feature cache filled, a training epoch builds its targets from the
    annotations alone: no image is decoded (and the targets are those of the image path)."""
    from clip4hoi.engine.trainer import Trainer

    trainer = Trainer(tiny_experiment(small_data, tmp_path, "train.batch_size=2",
                                      "train.eval_every=0"))   # fills the cache
    decoded = {}
    expected = {t["file_name"]: t for t in (trainer.train_set[i][1]
                                            for i in range(len(trainer.train_set)))}
    import clip4hoi.data.hicodet as hicodet

    original = hicodet.load_image

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        decoded[str(args[0])] = True
        return original(*args, **kwargs)

    monkeypatch.setattr(hicodet, "load_image", counting)
    trainer.model.train()
    trainer.sampler.set_epoch(0)
    for batch in trainer.loader:
        for target in batch[1]:
            want = expected[target["file_name"]]
            assert torch.equal(target["size"], want["size"])
            assert torch.allclose(target["boxes_h"], want["boxes_h"])
            assert torch.allclose(target["boxes_o"], want["boxes_o"])
        trainer.train_step([batch])
    assert decoded == {}, f"{len(decoded)} images decoded"


def test_feature_cache_is_keyed_and_matches_the_uncached_head(small_data: Path, tmp_path: Path,
                                                              one_thread: None) -> None:
    from conftest import tiny_model_config

    config = tiny_experiment(small_data, tmp_path)
    dataset = build_dataset(config.data, train=False)
    torch.manual_seed(0)
    model_config = tiny_model_config()
    model_config.detector.use_gt_boxes = True    # random DETR proposals make no pairs
    model = build_model(model_config).eval()
    transform = TransformConfig(scales=(112, 128), test_scale=128, max_size=256)
    key = frozen_fingerprint(model, transform, "float32")
    assert key == frozen_fingerprint(model, transform, "float32")
    assert key != frozen_fingerprint(model, TransformConfig((112,), test_scale=96, max_size=256),
                                     "float32")
    assert key != frozen_fingerprint(model, transform, "float16")
    with torch.no_grad():
        model.detector.class_embed.bias.add_(1e-3)   # other frozen weights
    assert key != frozen_fingerprint(model, transform, "float32")
    with torch.no_grad():
        model.detector.class_embed.bias.sub_(1e-3)

    cache = FeatureCache(tmp_path / "cache", key)
    info = DistInfo()
    assert fill_cache(model, dataset, cache, info) == len(dataset)
    assert fill_cache(model, dataset, cache, info) == 0          # nothing left to compute
    features, target = CachedFeatures(dataset, cache)[0]
    image, _ = dataset[0]
    direct = model.extract_features([image])
    for name, tensor in direct.tensors().items():
        assert torch.equal(tensor, features.tensors()[name]), name
    with pytest.raises(ValueError, match="computed on"):
        cache.load(dataset.image_paths[target["index"]], (1, 1))
    with pytest.raises(FileNotFoundError, match="no entry"):
        cache.load("unknown.jpg", (1, 1))

    # The test loop gives the same detections with and without the cache.
    plain = predict(model, dataset, info, dataset.class_set, batch_size=1)
    cached = predict(model, dataset, info, dataset.class_set, batch_size=2, cache=cache)
    assert sum(len(r["scores"]) for r in plain) > 0
    for a, b in zip(plain, cached, strict=True):
        assert a["file_name"] == b["file_name"] and a["hoi"] == b["hoi"]
        assert torch.allclose(torch.tensor(a["object_boxes"]), torch.tensor(b["object_boxes"]),
                              atol=1e-4)
        assert torch.allclose(torch.tensor(a["scores"]), torch.tensor(b["scores"]), rtol=1e-4)


# ----------------------------------------------------------------------------- evaluation

def test_ground_truth_records_evaluate_to_100(small_data: Path, tmp_path: Path) -> None:
    config = tiny_experiment(small_data, tmp_path)
    dataset = build_dataset(config.data, train=False)
    records = detections_to_records(detections_from_ground_truth(dataset.annotations),
                                    dataset.annotations)
    result = evaluate_records(records, dataset, zero_shot="rf_uc")
    assert result.maps["full"] == pytest.approx(100.0)
    assert set(result.maps) == {"full", "rare", "non_rare", "unseen", "seen"}


def test_boxes_return_to_the_original_frame() -> None:
    output = {"human_boxes": torch.tensor([[0.0, 0, 100, 50]]),
              "object_boxes": torch.tensor([[10.0, 10, 20, 20]]), "scores": torch.ones(1)}
    target = {"orig_size": torch.tensor([100, 400]), "size": torch.tensor([50, 200])}
    moved = rescale_boxes(output, target["size"].tolist(), target["orig_size"].tolist())
    assert moved["human_boxes"].tolist() == [[0, 0, 200, 100]]
    assert moved["object_boxes"].tolist() == [[20, 20, 40, 40]]


def test_vcoco_records_are_scored_by_role_ap(shared_dir: Path, tmp_path: Path) -> None:
    import json

    from clip4hoi.data.vcoco import VCOCO

    data = json.loads((shared_dir / "data" / "vcoco" / "instances_vcoco_test.json").read_text())
    data["images"], data["annotations"] = data["images"][:40], data["annotations"][:40]
    (tmp_path / "vcoco.json").write_text(json.dumps(data))
    (tmp_path / "images" / "val2014").mkdir(parents=True)
    for entry in data["annotations"]:     # only the names are checked before loading
        (tmp_path / "images" / "val2014" / entry["file_name"]).touch()
    dataset = VCOCO(tmp_path / "images", tmp_path / "vcoco.json", skip_empty=False)
    records = detections_to_records(detections_from_ground_truth(dataset.annotations),
                                    dataset.annotations)
    result = evaluate_records(records, dataset)
    assert {"agent", "role_scenario_1", "role_scenario_2"} <= set(result.maps)
    assert result.maps["role_scenario_2"] > 90
    assert "role AP" in result.table and "NOT the official" in result.table


def test_yaml_off_is_a_string_and_true_a_boolean(tmp_path: Path) -> None:
    """YAML 1.2 booleans: ``amp: off`` (file or --set) is the mode "off", not False."""
    config = tmp_path / "run.yaml"
    config.write_text(f"base: {REPO / 'configs' / 'smoke.yaml'}\ntrain:\n  amp: off\n"
                      "  eval_at_end: false\n")
    experiment = load_experiment(config)
    assert experiment.train.amp == "off" and experiment.train.eval_at_end is False
    experiment = load_experiment(config, ["train.amp=bf16", "train.eval_at_end=true"])
    assert experiment.train.amp == "bf16" and experiment.train.eval_at_end is True
    assert load_experiment(config, ["train.amp=off"]).train.amp == "off"

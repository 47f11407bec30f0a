"""The paper's ablations, one YAML each (``configs/ablation_*.yaml``): each is a few model
settings over its base, and each trains: one optimiser step on the synthetic data with the
tiny networks of the smoke config, every trainable parameter getting a gradient (DDP runs
without ``find_unused_parameters``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_engine import CONFIGS, make_small_data, single_thread, tiny_experiment

from clip4hoi.config import parse_yaml
from clip4hoi.engine.config import load_experiment
from clip4hoi.engine.trainer import Trainer

ABLATIONS = sorted(CONFIGS.glob("ablation_*.yaml"))
REPRODUCE = CONFIGS.parent / "docs" / "reproduce.md"


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small_data(tmp_path_factory.mktemp("synthetic"))


def test_the_ablations_are_there_and_listed() -> None:
    names = {p.stem for p in ABLATIONS}
    assert names == {"ablation_no_decoder", "ablation_pairwise_only", "ablation_global_only",
                     "ablation_no_detector_prior"}
    listed = REPRODUCE.read_text()
    for name in names:
        assert f"`{name}.yaml`" in listed, f"{name}.yaml is not in docs/reproduce.md"


@pytest.mark.parametrize("path", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_each_ablation_trains_one_step(path: Path, small_data: Path, tmp_path: Path) -> None:
    own = parse_yaml(path.read_text())
    base = own.pop("base")
    changes = _flatten(own)
    # a few model settings over the base, nothing else (the test applies exactly these)
    assert 1 <= len(changes) <= 4 and all(k.startswith("model.") for k in changes), changes
    resolved = load_experiment(path)
    assert resolved.name == path.stem and (CONFIGS / base).is_file()
    base_config = load_experiment(CONFIGS / base)
    for key, value in changes.items():
        section, *rest = key.split(".")
        got, was = getattr(resolved, section), getattr(base_config, section)
        for part in rest:
            got, was = getattr(got, part), getattr(was, part)
        assert got == value != was, f"{key}: {was!r} -> {got!r} (expected {value!r})"

    config = tiny_experiment(small_data, tmp_path / "run", "train.batch_size=2",
                             "train.max_steps=1", "train.eval_every=0",
                             "train.eval_at_end=false", "train.log_every=1",
                             f"data.zero_shot={resolved.data.zero_shot}",
                             *(f"{k}={json.dumps(v)}" for k, v in changes.items()))
    with single_thread():
        trainer = Trainer(config)
        trainer.model.train()
        trainer.accumulate_gradients([next(iter(trainer.loader))])
        without = [name for name, p in trainer.model.named_parameters()
                   if p.requires_grad and p.grad is None]
        assert not without, f"{path.name}: parameters without a gradient: {without}"
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.fit()
    assert trainer.step == 1
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [line["step"] for line in lines] == [1] and math.isfinite(lines[0]["loss"])

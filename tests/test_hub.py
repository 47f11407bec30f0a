"""Hugging Face Hub: ``hf://`` checkpoints and ``from_pretrained`` offline from a real
``huggingface_hub`` cache laid out by the test, the model card, ``clip4hoi push`` (no
network: the Hub API is replaced by a recorder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import tiny_model_config

from clip4hoi.api import HOIDetector
from clip4hoi.cli import main
from clip4hoi.engine.checkpoint import save_checkpoint
from clip4hoi.hub import HEAD_FILE, model_card, parse_hub_uri, read_metrics
from clip4hoi.models.model import build_model, head_state_dict
from clip4hoi.weights import WeightsUnavailableError

huggingface_hub = pytest.importorskip("huggingface_hub")

COMMIT_MAIN = "a" * 40
COMMIT_V1 = "b" * 40


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny heads with different weights (seeds 0 and 1)."""
    folder = tmp_path_factory.mktemp("heads")
    paths = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths[seed] = folder / f"head{seed}.safetensors"
        save_checkpoint(build_model(tiny_model_config()), paths[seed])
    return paths


@pytest.fixture
def hub_cache(tmp_path: Path, heads: dict[int, Path], monkeypatch: pytest.MonkeyPatch
              ) -> Path:
    """An offline ``huggingface_hub`` cache holding ``org/tiny-head``: ``main`` at one
    commit (head 0) and the tag ``v1`` at another (head 1), in the hub's own layout
    (``models--org--tiny-head/{refs,snapshots,blobs}``)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    repo = cache / "models--org--tiny-head"
    for ref, commit, head in (("main", COMMIT_MAIN, heads[0]), ("v1", COMMIT_V1, heads[1])):
        blob = repo / "blobs" / f"blob{commit[:4]}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(head.read_bytes())
        snapshot = repo / "snapshots" / commit / HEAD_FILE
        snapshot.parent.mkdir(parents=True)
        snapshot.symlink_to(Path("../..") / "blobs" / blob.name)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads its environment once, at import: set the values it uses.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _loaded(detector: HOIDetector, head: Path) -> bool:
    """Whether ``detector`` holds exactly the head weights saved in ``head``."""
    from safetensors.torch import load_file

    saved, loaded = load_file(str(head)), head_state_dict(detector.model)
    return saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k])
                                                 for k in saved)


def test_parse_hub_uri() -> None:
    assert parse_hub_uri("hf://org/name") == ("org/name", HEAD_FILE, None)
    assert parse_hub_uri("hf://org/name@v1") == ("org/name", HEAD_FILE, "v1")
    assert parse_hub_uri("hf://org/name/heads/uc0.safetensors@" + COMMIT_V1) == (
        "org/name", "heads/uc0.safetensors", COMMIT_V1)
    for bad in ("hf://org", "hf://org/name@", "hf://"):
        with pytest.raises(ValueError, match="hf://ORG/NAME"):
            parse_hub_uri(bad)


def test_from_pretrained_offline_from_the_cache(hub_cache: Path, heads: dict[int, Path]
                                                ) -> None:
    for kwargs, head in (({}, heads[0]), ({"revision": "v1"}, heads[1]),
                         ({"revision": COMMIT_V1}, heads[1])):
        detector = HOIDetector.from_pretrained("org/tiny-head", **kwargs)
        assert _loaded(detector, head), kwargs
    assert not _loaded(detector, heads[0])
    assert _loaded(HOIDetector.from_checkpoint("hf://org/tiny-head@v1"), heads[1])


def test_offline_and_not_cached_is_a_clear_weights_error(hub_cache: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as caught:
        HOIDetector.from_pretrained("org/missing", revision="v2")
    message = str(caught.value)
    assert caught.value.exit_code == 3
    assert "hf://org/missing/model.safetensors@v2" in message
    assert "hf download org/missing model.safetensors --revision v2" in message
    assert str(hub_cache) in message


def test_detect_cli_offline_missing_hub_head_exits_3(hub_cache: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (32, 24)).save(image)
    code = main(["detect", str(image), "--checkpoint", "hf://org/missing",
                 "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 3
    assert "not in the Hugging Face cache" in capsys.readouterr().err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, heads: dict[int, Path]) -> Path:
    """A finished training run: config.yaml, metrics.jsonl and checkpoints/step_20."""
    from clip4hoi.engine.config import ExperimentConfig, dump_experiment

    run = tmp_path_factory.mktemp("run")
    config = ExperimentConfig()
    config.data.zero_shot = "rf_uc"
    (run / "config.yaml").write_text(dump_experiment(config))
    lines = [{"epoch": 1, "step": 10, "loss": 1.5, "lr": 1e-4},
             {"epoch": 1, "step": 10, "map_full": 20.5, "map_unseen": 11.25, "map_seen": None},
             {"epoch": 2, "step": 20, "map_full": 28.125, "map_unseen": 14.5, "map_seen": 31.0},
             {"epoch": 3, "step": 30, "map_full": 27.0, "map_unseen": 13.0, "map_seen": 30.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    checkpoint = run / "checkpoints" / "step_20.safetensors"
    checkpoint.parent.mkdir()
    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_model_config()), checkpoint,
                    extra={"step": "20", "epoch": "2"})
    return run


def test_read_metrics_takes_the_checkpoints_evaluation(run_dir: Path) -> None:
    assert read_metrics(run_dir / "metrics.jsonl", step=20)["map_full"] == 28.125
    assert read_metrics(run_dir / "metrics.jsonl", step=15)["map_full"] == 20.5
    assert read_metrics(run_dir / "metrics.jsonl")["step"] == 30
    assert read_metrics(run_dir / "nothing.jsonl") is None


def test_model_card_content(run_dir: Path) -> None:
    card = model_card(run_dir / "checkpoints" / "step_20.safetensors", "org/tiny-head")
    front, body = card.split("---\n", 2)[1:]
    assert "library_name: clip4hoi" in front and "human-object-interaction" in front
    assert "license: mit" in front
    assert 'HOIDetector.from_pretrained("org/tiny-head")' in body
    assert "--checkpoint hf://org/tiny-head" in body
    assert "`hicodet` (600 classes, 117 verbs)" in body                 # class set
    assert "HICO-DET" in body and "rf_uc" in body                       # training data
    assert "epoch 2, step 20" in body
    assert "| full | 28.12 |" in body and "| unseen | 14.50 |" in body  # step 20's mAPs
    assert "| seen | 31.00 |" in body
    assert "decoder_layers: 1" in body and "weights: random" in body     # the config
    assert "@inproceedings{mao2023clip4hoi" in body


def test_model_card_without_a_run(heads: dict[int, Path]) -> None:
    card = model_card(heads[0], "org/x")
    assert "Not recorded" in card and "No evaluation recorded" in card


class _RecordingApi:
    """Stands in for ``huggingface_hub.HfApi``: records the calls, sends nothing."""

    calls: ClassVar[list] = []

    def __init__(self, token: str | None = None, library_name: str | None = None) -> None:
        pass

    def create_repo(self, repo_id: str, **kwargs: object) -> None:
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id: str, **kwargs: object) -> None:
        self.calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id: str, operations: list, **kwargs: object) -> object:
        self.calls.append(("create_commit", repo_id, operations, kwargs))

        class Info:
            commit_url = f"https://huggingface.co/{repo_id}/commit/{COMMIT_MAIN}"
        return Info()


def test_push_uploads_head_config_and_card(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingApi)
    _RecordingApi.calls = []
    checkpoint = run_dir / "checkpoints" / "step_20.safetensors"
    assert main(["push", str(checkpoint), "org/tiny-head", "--revision", "rf-uc",
                 "--private"]) == 0
    (_, repo, created), (_, _, branch), (_, _, operations, commit) = _RecordingApi.calls
    assert repo == "org/tiny-head" and created["private"] and created["exist_ok"]
    assert branch["branch"] == "rf-uc" and commit["revision"] == "rf-uc"
    files = {op.path_in_repo: op for op in operations}
    assert set(files) == {"model.safetensors", "config.json", "README.md"}
    assert files["model.safetensors"].path_or_fileobj == str(checkpoint)
    assert json.loads(files["config.json"].path_or_fileobj)["head"]["decoder_layers"] == 1
    assert b"| full | 28.12 |" in files["README.md"].path_or_fileobj
    assert "https://huggingface.co/org/tiny-head/commit/" in capsys.readouterr().err


def test_push_rejects_a_file_that_is_not_a_head(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "notes.safetensors"
    bad.write_text("hello")
    assert main(["push", str(bad), "org/x"]) == 2
    assert "not a safetensors file" in capsys.readouterr().err

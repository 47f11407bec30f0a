"""The HOI classifier's score formula: the paper's σ(cos / τ) with one fixed τ shared by
S_pair and S_glob and no bias by default, the learned scale-and-bias (SigLIP-style) variant
as ``head.logits: learned``, and checkpoints written before the option existed, which
load as the learned form with the same scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import SCENE, SIZE, crafted_features, edit_stored_config, tiny_model_config

from clip4hoi.config import ModelConfig, stored_model_config, to_dict
from clip4hoi.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from clip4hoi.models.model import build_model


def test_the_paper_form_is_the_default() -> None:
    head = ModelConfig().head
    assert head.logits == "fixed" and head.temperature > 0
    torch.manual_seed(0)
    model = build_model(tiny_model_config()).eval()
    classifier = model.classifier
    names = {name for name, _ in classifier.named_parameters()}
    assert not names & {"log_scale", "bias"}                 # no learned scale, no bias
    pairs, images = torch.randn(5, 32), torch.randn(2, 32)
    text = F.normalize(torch.randn(7, 32), dim=-1)
    pair_logits, global_logits = classifier(pairs, images, text)
    tau = model.config.head.temperature
    expected_pair = F.normalize(classifier.pair_proj(pairs), dim=-1) @ text.T / tau
    expected_global = F.normalize(classifier.image_proj(images), dim=-1) @ text.T / tau
    torch.testing.assert_close(pair_logits, expected_pair)
    torch.testing.assert_close(global_logits, expected_global)
    # cos / τ: a logit can never leave [-1/τ, 1/τ]
    assert pair_logits.abs().max() <= 1 / tau + 1e-4


def test_the_learned_form_is_one_setting() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_config(logits="learned")).eval()
    classifier = model.classifier
    assert classifier.log_scale.requires_grad and classifier.bias.requires_grad
    with torch.no_grad():
        classifier.log_scale.copy_(torch.tensor([1.0, 2.0]))
        classifier.bias.copy_(torch.tensor([-3.0, -4.0]))
    pairs, images = torch.randn(5, 32), torch.randn(2, 32)
    text = F.normalize(torch.randn(7, 32), dim=-1)
    pair_logits, global_logits = classifier(pairs, images, text)
    cos_pair = F.normalize(classifier.pair_proj(pairs), dim=-1) @ text.T
    cos_global = F.normalize(classifier.image_proj(images), dim=-1) @ text.T
    torch.testing.assert_close(pair_logits, torch.e * cos_pair - 3.0)
    torch.testing.assert_close(global_logits, torch.e ** 2 * cos_global - 4.0)


@pytest.mark.parametrize(("setting", "message"), [
    ({"logits": "siglip"}, "model.head.logits='siglip': choose from fixed, learned"),
    ({"temperature": 0.0}, r"model.head.temperature=0.0 is out of range: it must be in \(0, "),
    ({"temperature": float("nan")}, "model.head.temperature=nan is out of range"),
    ({"logits": "learned", "logit_scale_init": 0.0}, "model.head.logit_scale_init=0.0 is out")])
def test_bad_settings_are_named(setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(tiny_model_config(**setting))


def _older(stored: dict) -> None:
    """A stored config as written before ``head.logits`` existed."""
    del stored["head"]["logits"], stored["head"]["temperature"]


def test_checkpoints_written_before_the_option_load_unchanged(tmp_path: Path) -> None:
    """Checkpoints of the learned form (the only form before) store no ``logits`` field:
    they load as ``learned`` and give the same scores."""
    torch.manual_seed(0)
    model = build_model(tiny_model_config(logits="learned")).eval()
    with torch.no_grad():
        model.classifier.bias.add_(torch.tensor([1.5, -0.5]))    # a trained value
        model.classifier.log_scale.add_(0.3)
    new = tmp_path / "new.safetensors"
    save_checkpoint(model, new)
    old = edit_stored_config(new, tmp_path / "old.safetensors", _older)
    config, tensors, _ = read_checkpoint(old)
    assert config.head.logits == "learned" and config == model.config
    assert {"classifier.bias", "classifier.log_scale"} <= set(tensors)

    restored = load_checkpoint(old).eval()
    features = crafted_features(model, [SCENE])
    expected = model.forward_features(features, [SIZE])[0]
    actual = restored.forward_features(features, [SIZE])[0]
    assert len(expected["scores"]) > 0
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key])

    # the paper form has neither tensor: such a checkpoint cannot pass for the other form
    stored = to_dict(model.config)
    del stored["head"]["logits"]
    assert stored_model_config(stored).head.logits == "learned"
    stored["head"]["logits"] = "fixed"
    assert stored_model_config(stored).head.logits == "fixed"


def test_a_paper_form_checkpoint_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_model_config(temperature=0.07)
    model = build_model(config).eval()
    path = tmp_path / "head.safetensors"
    save_checkpoint(model, path)
    restored = load_checkpoint(path).eval()
    assert restored.config.head.logits == "fixed"
    assert restored.config.head.temperature == 0.07
    features = crafted_features(model, [SCENE])
    torch.testing.assert_close(restored.forward_features(features, [SIZE])[0]["scores"],
                               model.forward_features(features, [SIZE])[0]["scores"])


def test_resuming_a_run_of_an_older_version_keeps_its_form(tmp_path: Path) -> None:
    """A training state written before ``head.logits`` existed resumes with ``--set
    model.head.logits=learned`` (the form it trained), and says so otherwise."""
    from types import SimpleNamespace

    import yaml

    from clip4hoi.engine.config import ExperimentConfig, dump_experiment
    from clip4hoi.engine.trainer import Trainer
    from clip4hoi.errors import InputError

    old = yaml.safe_load(dump_experiment(ExperimentConfig()))
    del old["model"]["head"]["logits"], old["model"]["head"]["temperature"]
    state = {"config": yaml.safe_dump(old)}
    trainer = SimpleNamespace(config=ExperimentConfig(), info=SimpleNamespace(is_main=True))
    with pytest.raises(InputError, match=r"model\.head\.logits: 'learned' -> 'fixed'"):
        Trainer._check_resumed_config(trainer, state, tmp_path / "step_1.state.pt")
    trainer.config.model.head.logits = "learned"
    Trainer._check_resumed_config(trainer, state, tmp_path / "step_1.state.pt")
    trainer.config.model.head.temperature = 0.5           # a setting the old run did not have
    with pytest.raises(InputError, match=r"model\.head\.temperature"):
        Trainer._check_resumed_config(trainer, state, tmp_path / "step_1.state.pt")

"""Shared test fixtures.

Tests that need the reference data of the project (``shared/``: annotation files, class
lists, checkpoint fixtures) find it beside the checkout (``../shared``) or at
``$CLIP4HOI_SHARED``, and skip with a reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    return Path(os.environ.get("CLIP4HOI_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` reference folder; skips the test when it is not there."""
    root = _shared_root()
    if not root.is_dir():
        pytest.skip(f"reference data not found at {root} (set CLIP4HOI_SHARED)")
    return root


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


TINY_DETR = {"num_classes": 80, "hidden_dim": 64, "num_heads": 4, "num_encoder_layers": 1,
             "num_decoder_layers": 1, "dim_feedforward": 128, "num_queries": 20,
             "backbone": "resnet18"}
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16,
                            "head_width": 32},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
                          "heads": 2, "layers": 2}}


def tiny_model_config(**head: object):
    """A CLIP4HOI config with tiny random DETR and CLIP (seconds on a CPU)."""
    from clip4hoi.config import HeadConfig, ModelConfig

    config = ModelConfig()
    config.detector.weights = "random"
    config.detector.num_heads = TINY_DETR["num_heads"]
    config.detector.architecture = dict(TINY_DETR)
    config.clip.pretrained = None
    config.clip.model_cfg = dict(TINY_CLIP)
    config.head = HeadConfig(interactor_layers=1, interactor_heads=4, interactor_ffn=128,
                             spatial_dim=32, decoder_dim=64, decoder_layers=1,
                             decoder_heads=4, decoder_ffn=128, prefix_length=4,
                             conjunction_length=2, **head)
    return config

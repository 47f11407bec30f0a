"""Shared test fixtures.

Tests that need the reference data of the project (``shared/``: annotation files, class
lists, checkpoint fixtures) find it beside the checkout (``../shared``) or at
``$CLIP4HOI_SHARED``, and skip with a reason when it is absent.
"""

from __future__ import annotations

import math
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


@pytest.fixture(autouse=True, scope="session")
def _text_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Class text embeddings are cached in a temporary folder, not the user's cache."""
    os.environ["CLIP4HOI_TEXT_CACHE"] = str(tmp_path_factory.mktemp("text_cache"))


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


def set_flags(settings: list[str]) -> list[str]:
    """``--set`` takes one KEY=VALUE per flag: ``["--set", a, "--set", b, ...]``."""
    return [part for item in settings for part in ("--set", item)]


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


# Hand-made scenes: per image a list of (COCO-80 label, probability, xyxy box in pixels).
SIZE = (120, 160)  # (h, w) of the crafted images
PERSON, BICYCLE, CUP = 0, 1, 41
SCENE = [(PERSON, 0.9, [10, 10, 60, 110]), (PERSON, 0.8, [80, 5, 130, 100]),
         (BICYCLE, 0.95, [20, 60, 90, 118]), (CUP, 0.7, [55, 40, 70, 55])]


def crafted_detr_outputs(detr_config: dict, images: list[list[tuple[int, float, list[float]]]]
                         ) -> dict[str, torch.Tensor]:
    """Raw DETR outputs (``pred_logits``, ``pred_boxes``, ``hidden_states``) holding the
    given detections of SIZE-d images, and "no object" in every other query."""
    from torchvision.ops import box_convert

    q, c = detr_config["num_queries"], detr_config["num_classes"]
    logits = torch.full((len(images), q, c + 1), -30.0)
    logits[..., c] = 0.0
    boxes = torch.full((len(images), q, 4), 0.5)
    scale = torch.tensor([SIZE[1], SIZE[0], SIZE[1], SIZE[0]], dtype=torch.float)
    for b, detections in enumerate(images):
        for i, (label, prob, box) in enumerate(detections):
            logits[b, i, label] = math.log(prob)
            logits[b, i, c] = math.log(1 - prob)
            boxes[b, i] = box_convert(torch.tensor(box) / scale, "xyxy", "cxcywh")
    hidden = torch.randn(len(images), q, detr_config["hidden_dim"])
    return {"pred_logits": logits, "pred_boxes": boxes, "hidden_states": hidden}


def crafted_features(model, images: list[list[tuple[int, float, list[float]]]]):
    """``FrozenFeatures`` of a CLIP4HOI model whose DETR part holds the given detections
    (CLIP features of random pixels)."""
    from clip4hoi.models.model import FrozenFeatures

    detr = crafted_detr_outputs(model.detector.config, images)
    clip = model.clip.encode_image(torch.randn(len(images), 3, 64, 64), layers=(-1,))
    return FrozenFeatures(detr["pred_logits"], detr["pred_boxes"], detr["hidden_states"],
                          clip.global_embedding, clip.patch_tokens, clip.grid)


def write_test_video(path: Path, frames: int = 8, rate: int = 4, size: tuple[int, int] = (48, 64)
                     ) -> Path:
    """A small H.264 video (``size`` = (h, w)) whose frames brighten one step at a time."""
    import av
    import numpy as np

    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            pixels = np.full((height, width, 3), 10 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_keyless_video(source: Path, path: Path) -> Path:
    """``source``'s packets but its key frames, remuxed into ``path``: a video whose frames
    cannot be decoded, without any decoding error (the decoder waits for a key frame)."""
    import av

    with av.open(str(source)) as reader, av.open(str(path), "w") as writer:
        stream = writer.add_stream_from_template(reader.streams.video[0])
        for packet in reader.demux(video=0):
            if packet.dts is not None and not packet.is_keyframe:
                packet.stream = stream
                writer.mux(packet)
    return path


def seconds_after(process, marker: str, timeout: float = 120) -> tuple[float | None, str]:
    """Wait for ``process`` (a ``Popen`` with text ``stderr``) to end: the seconds from the
    first ``stderr`` line holding ``marker`` to the end (None if none did) and
    ``stderr``."""
    import time

    seen, lines = None, []
    for line in process.stderr:
        lines.append(line)
        if marker in line and seen is None:
            seen = time.monotonic()
    process.wait(timeout=timeout)
    return None if seen is None else time.monotonic() - seen, "".join(lines)


def people_and_bicycles(forward):
    """A DETR ``forward`` that calls ``forward`` (the real one: boxes, hidden states and
    scores depend on the pixels and on padding) and labels the even queries "person" and
    the odd ones "bicycle", so that a random tiny DETR finds pairs to score."""
    def labelled(self, images):
        out = forward(self, images)
        logits = out["pred_logits"].clone()
        logits[:, ::2, PERSON] += 6.0
        logits[:, 1::2, BICYCLE] += 6.0
        return {**out, "pred_logits": logits}

    return labelled


def tiny_training_free_flags() -> list[str]:
    """``--set`` items of a training-free detector with the tiny random DETR and CLIP."""
    import json

    return [f"detector.architecture={json.dumps(TINY_DETR)}",
            f"detector.num_heads={TINY_DETR['num_heads']}",
            f"clip.model_cfg={json.dumps(TINY_CLIP)}"]


def edit_stored_config(path: Path, out: Path, edit) -> Path:
    """The head checkpoint ``path`` written to ``out`` with the model config stored in it
    changed by ``edit(config_dict)``: a checkpoint as an older version wrote it."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    config = json.loads(metadata["config"])
    edit(config)
    save_file(tensors, str(out), metadata={**metadata, "config": json.dumps(config)})
    return out

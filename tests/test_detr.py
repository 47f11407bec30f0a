"""DETR: parity with the original implementation on the tiny fixture, checkpoint loading
(original DETR-R50 key layouts, .pth/.safetensors/state dicts, clear errors) and freezing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from clip4hoi.models.detr import (
    DETR,
    CheckpointError,
    normalize,
    pad_images,
    postprocess,
)

# (h, w) of the two reference images, as the fixture's post-processing used them
SIZES = [(240, 320), (200, 288)]


@pytest.fixture(scope="module")
def detr_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "detr_reference"


@pytest.fixture(scope="module")
def tiny_sd(detr_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(detr_dir / "tiny_detr_r18.safetensors")


@pytest.fixture(scope="module")
def reference(detr_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(detr_dir / "tiny_detr_r18_io.safetensors")


@pytest.fixture(scope="module")
def tiny(detr_dir: Path) -> DETR:
    arch = json.loads((detr_dir / "tiny_detr_r18.json").read_text())
    return DETR.from_checkpoint(detr_dir / "tiny_detr_r18.safetensors", num_heads=arch["heads"])


@pytest.fixture(scope="module")
def tiny_outputs(tiny: DETR, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return tiny((reference["batch_tensors"], reference["batch_mask"]))


def test_architecture_inferred_from_fixture(tiny: DETR, detr_dir: Path) -> None:
    arch = json.loads((detr_dir / "tiny_detr_r18.json").read_text())
    assert tiny.config == {
        "num_classes": arch["num_classes"],
        "hidden_dim": arch["hidden"],
        "num_heads": arch["heads"],
        "num_encoder_layers": arch["enc"],
        "num_decoder_layers": arch["dec"],
        "dim_feedforward": arch["ffn"],
        "num_queries": arch["queries"],
        "backbone": arch["backbone"],
        "dilation": arch["dilation"],
    }
    # fp16 checkpoint values are cast to fp32
    assert all(t.dtype == torch.float32 for t in tiny.state_dict().values())


def test_fixture_parity(
    tiny_outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> None:
    out = tiny_outputs
    assert out["pred_logits"].shape == (2, 20, 81)
    assert out["pred_boxes"].shape == (2, 20, 4)
    assert out["hidden_states"].shape == (2, 20, 64)
    close = {"atol": 1e-4, "rtol": 0.0}
    torch.testing.assert_close(out["pred_logits"], reference["pred_logits"], **close)
    torch.testing.assert_close(out["pred_boxes"], reference["pred_boxes"], **close)
    torch.testing.assert_close(out["hidden_states"], reference["decoder_hidden_last"], **close)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_postprocess_parity(
    tiny_outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], as_tensor: bool
) -> None:
    sizes = torch.tensor(SIZES) if as_tensor else SIZES
    results = postprocess(tiny_outputs, sizes)
    assert results[0].keys() == {"scores", "labels", "boxes"}
    assert len(results) == 2
    for res, tag in zip(results, "ab", strict=True):
        torch.testing.assert_close(
            res["scores"], reference[f"post_scores_{tag}"], atol=1e-4, rtol=0
        )
        assert torch.equal(res["labels"], reference[f"post_labels_{tag}"])
        # absolute pixels (~300): allow float32 rounding of the pixel values themselves
        torch.testing.assert_close(
            res["boxes"], reference[f"post_boxes_{tag}"], atol=1e-4, rtol=1e-5
        )
    method = DETR.postprocess(tiny_outputs, sizes)
    assert torch.equal(method[1]["boxes"], results[1]["boxes"])


def test_list_input_matches_padded(
    tiny: DETR, tiny_outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> None:
    # the stored single images are in [0, 1]; the stored batch is normalised and padded
    images = normalize([reference["image_a"], reference["image_b"]])
    batch, mask = pad_images(images)
    torch.testing.assert_close(batch, reference["batch_tensors"], atol=1e-6, rtol=0)
    assert torch.equal(mask, reference["batch_mask"])
    out = tiny(images)
    for key in ("pred_logits", "pred_boxes", "hidden_states"):
        torch.testing.assert_close(out[key], tiny_outputs[key], atol=1e-6, rtol=0)


def _random_state_dict(keys_file: Path) -> dict[str, torch.Tensor]:
    shapes = json.loads(keys_file.read_text())
    gen = torch.Generator().manual_seed(0)
    return {k: torch.rand(shape, generator=gen) for k, shape in shapes.items()}


@pytest.mark.parametrize(("keys", "num_classes"), [("92", 91), ("81", 80)])
def test_original_r50_layouts_load_strictly(detr_dir: Path, keys: str, num_classes: int) -> None:
    sd = _random_state_dict(detr_dir / f"detr_r50_keys_{keys}.json")
    model = DETR.from_checkpoint({"model": sd})
    assert model.config == {
        "num_classes": num_classes,
        "hidden_dim": 256,
        "num_heads": 8,
        "num_encoder_layers": 6,
        "num_decoder_layers": 6,
        "dim_feedforward": 2048,
        "num_queries": 100,
        "backbone": "resnet50",
        "dilation": False,
    }
    loaded = model.state_dict()
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    out = model([torch.zeros(3, 64, 96)])  # tiny input: shapes only
    assert out["pred_logits"].shape == (1, 100, num_classes + 1)
    assert out["pred_boxes"].shape == (1, 100, 4)
    assert out["hidden_states"].shape == (1, 100, 256)


def test_pth_round_trip(
    tmp_path: Path,
    tiny_sd: dict[str, torch.Tensor],
    tiny_outputs: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
) -> None:
    # as detr's main.py saves it: model, optimizer state, epoch and the argparse Namespace
    path = tmp_path / "checkpoint.pth"
    args = argparse.Namespace(backbone="resnet18", hidden_dim=64, nheads=4, lr=1e-4, dilation=False)
    torch.save({"model": tiny_sd, "epoch": 3, "args": args}, path)
    model = DETR.from_checkpoint(path, num_heads=4)
    out = model((reference["batch_tensors"], reference["batch_mask"]))
    torch.testing.assert_close(out["pred_logits"], tiny_outputs["pred_logits"], atol=0, rtol=0)
    # the saved args contradict the requested architecture
    with pytest.raises(CheckpointError, match="nheads=4"):
        DETR.from_checkpoint(path)


def test_state_dict_inputs(
    tiny_sd: dict[str, torch.Tensor], tiny: DETR, reference: dict[str, torch.Tensor]
) -> None:
    expected = tiny.state_dict()
    for source in (tiny_sd, {"model": tiny_sd}):
        model = DETR.from_checkpoint(source, num_heads=4)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    # num_batches_tracked buffers (torchvision BatchNorm exports) are ignored, as in detr
    extra = dict(tiny_sd, **{"backbone.0.body.bn1.num_batches_tracked": torch.tensor(0)})
    DETR.from_checkpoint(extra, num_heads=4)


def test_wrong_keys_are_listed(tmp_path: Path, tiny_sd: dict[str, torch.Tensor]) -> None:
    sd = dict(tiny_sd)
    sd["transformer.decoder.layers.0.norm3.scale"] = sd.pop(
        "transformer.decoder.layers.0.norm3.weight"
    )
    sd["extra_head.weight"] = torch.zeros(3)
    sd["input_proj.bias"] = torch.zeros(65)
    path = tmp_path / "broken.safetensors"
    save_file(sd, path)
    with pytest.raises(CheckpointError) as info:
        DETR.from_checkpoint(path, num_heads=4)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys (1)" in message
    assert "transformer.decoder.layers.0.norm3.weight" in message
    assert "unexpected keys (2)" in message
    assert "transformer.decoder.layers.0.norm3.scale" in message
    assert "extra_head.weight" in message
    assert "shape mismatches (1)" in message
    assert "input_proj.bias" in message


class _NotAllowed:
    pass


def test_not_a_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    other = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, other)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {}, "args": _NotAllowed()}, pickled)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    for path in (text, other, pickled, garbage):
        with pytest.raises(CheckpointError, match="not a") as info:
            DETR.from_checkpoint(path)
        assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="not a DETR checkpoint"):
        DETR.from_checkpoint({"weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        DETR.from_checkpoint(tmp_path / "missing.pth")


def test_frozen(tiny: DETR, reference: dict[str, torch.Tensor]) -> None:
    assert not any(p.requires_grad for p in tiny.parameters())
    parent = nn.ModuleDict({"detector": tiny, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training
    assert not tiny.training
    assert not any(m.training for m in tiny.modules())
    image = normalize(reference["image_b"]).requires_grad_(True)
    out = tiny([image])
    assert not any(t.requires_grad for t in out.values())


def test_dilation_needs_bottleneck() -> None:
    with pytest.raises(ValueError, match="Bottleneck"):
        DETR(backbone="resnet18", dilation=True)

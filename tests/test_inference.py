"""Inference-ready frozen networks (issue 21): batch norms folded into DETR's convolutions,
channels-last, the ``--precision`` rule, fp32 scoring under bf16 autocast, and the ONNX
export with its ONNX Runtime runners against the PyTorch fp32 path."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_DETR, tiny_model_config
from safetensors.torch import load_file
from torchvision.ops.misc import FrozenBatchNorm2d

from clip4hoi.config import TrainingFreeConfig, apply_overrides
from clip4hoi.data.metadata import load_classes
from clip4hoi.errors import InputError, UserError
from clip4hoi.models import precision
from clip4hoi.models.detr import DETR, fold_frozen_batchnorm, nearest_index, normalize
from clip4hoi.models.model import CLIP4HOI, build_model
from clip4hoi.models.precision import cpu_bf16_feature, resolve_precision
from clip4hoi.models.training_free import build_training_free

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_inference import randomize_batchnorm

CLASSES = "ride bicycle, hold cup, hug person"


def assert_outputs_close(a: dict, b: dict, rtol: float = 2e-5) -> None:
    """Equal within fp32 rounding: relative to each output's magnitude."""
    for key in ("pred_logits", "pred_boxes", "hidden_states"):
        scale = float(a[key].abs().max())
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=rtol * scale)


# ------------------------------------------------------------------------- folding


@pytest.mark.parametrize(("backbone", "count"), [("resnet18", 20), ("resnet50", 53)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_detr_equals_unfolded(backbone: str, count: int, channels_last: bool) -> None:
    detr = randomize_batchnorm(DETR(**dict(TINY_DETR, backbone=backbone)))
    images = normalize([torch.rand(3, 96, 128), torch.rand(3, 80, 112)])
    expected = detr(images)
    folded = copy.deepcopy(detr)
    assert fold_frozen_batchnorm(folded.backbone[0].body) == count
    assert fold_frozen_batchnorm(folded.backbone[0].body) == 0  # nothing left to fold
    folded.prepare_for_inference(channels_last=channels_last)
    assert folded.folded
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    assert_outputs_close(expected, folded(images))


def test_mask_downsampling_picks_the_pixels_of_f_interpolate() -> None:
    """DETR's padding mask at the feature map: the same pixels as the original's
    ``F.interpolate`` (and as the ONNX graph: see test_onnx_runners_equal_the_torch_networks,
    where 90 rows padded to 120 put a feature row exactly on the first padded row)."""
    for size_in in range(1, 1400, 7):
        for size_out in {-(-size_in // 32), -(-size_in // 16), max(1, size_in // 3), size_in}:
            pixels = torch.arange(size_in, dtype=torch.float32)[None, None, :, None]
            expected = F.interpolate(pixels, size=(size_out, 1))[0, 0, :, 0].long()
            assert torch.equal(nearest_index(size_in, size_out, torch.device("cpu")), expected)


def test_original_checkpoint_loads_unchanged_then_folds(shared_dir: Path) -> None:
    """The facebookresearch/detr layout loads strictly; the folded model still matches the
    original implementation's outputs on the fixture."""
    detr_dir = shared_dir / "fixtures" / "detr_reference"
    reference = load_file(detr_dir / "tiny_detr_r18_io.safetensors")
    detr = DETR.from_checkpoint(detr_dir / "tiny_detr_r18.safetensors", num_heads=4)
    detr.prepare_for_inference()
    out = detr((reference["batch_tensors"], reference["batch_mask"]))
    close = {"atol": 1e-4, "rtol": 0.0}
    torch.testing.assert_close(out["pred_logits"], reference["pred_logits"], **close)
    torch.testing.assert_close(out["pred_boxes"], reference["pred_boxes"], **close)
    # Loaded without a random initialisation (meta device), and never sharing the tensors
    # of a state dict it was given.
    state = load_file(detr_dir / "tiny_detr_r18.safetensors")
    given = state["class_embed.bias"].clone()
    model = DETR.from_checkpoint(state, num_heads=4)
    with torch.no_grad():
        model.class_embed.bias.add_(1.0)
    assert torch.equal(state["class_embed.bias"], given)
    assert not any(p.is_meta for p in model.parameters())


def test_built_detector_is_folded_and_keeps_bf16_activations() -> None:
    """build_model folds (inference, training and the feature cache share it); under bf16
    autocast the folded backbone's activations stay bf16 (an unfolded batch norm's fp32
    scale promotes them to fp32), while the box and class heads stay fp32."""
    model = build_model(tiny_model_config())
    detr = model.detector
    assert detr.folded and detr.backbone[0].channels_last
    dtypes = []
    detr.backbone[0].body.layer2.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    unfolded = DETR(**TINY_DETR)
    unfolded.backbone[0].body.layer2.register_forward_hook(
        lambda m, i, o: dtypes.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = detr(normalize([torch.rand(3, 64, 96)]))
        unfolded(normalize([torch.rand(3, 64, 96)]))
    assert dtypes == [torch.bfloat16, torch.float32]
    assert out["pred_boxes"].dtype == out["pred_logits"].dtype == torch.float32


# ----------------------------------------------------------------------- precision


def test_precision_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: "AMX")
    assert resolve_precision("auto", "cpu") == (torch.bfloat16, "bf16: CPU has AMX")
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: None)
    dtype, reason = resolve_precision("auto", "cpu")
    assert dtype == torch.float32 and reason.startswith("fp32: CPU")
    dtype, reason = resolve_precision("bf16", "cpu")
    assert dtype == torch.bfloat16 and "emulated" in reason
    assert resolve_precision("fp32", "cpu") == (torch.float32, "fp32: --precision fp32")
    for capability, expected in (((7, 5), (torch.float32, "fp32: CUDA capability 7.5 < 8")),
                                 ((8, 0), (torch.bfloat16, "bf16: CUDA capability 8.0 >= 8"))):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d, c=capability: c)
        assert resolve_precision("auto", "cuda:0") == expected
    with pytest.raises(InputError, match="--precision 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_cpu_bf16_feature_from_cpuinfo() -> None:
    assert cpu_bf16_feature("flags\t\t: fpu avx2 avx512f avx512_bf16\n") == "AVX512-BF16"
    assert cpu_bf16_feature("flags : avx512f amx_bf16 amx_tile avx512_bf16\n") == "AMX"
    assert cpu_bf16_feature("Features\t: fp asimd sve bf16 i8mm\n") == "Arm BF16"
    assert cpu_bf16_feature("flags : fpu avx2 avx512f avx512_vnni\n") is None
    assert cpu_bf16_feature() in (None, "AMX", "AVX512-BF16", "Arm BF16")


def test_training_free_scores_stay_fp32_under_bf16_autocast() -> None:
    model = build_training_free(tiny_training_free_config())
    bias_to_people_and_bicycles(model.detector)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        (out,) = model([torch.rand(3, 120, 160)])
    assert len(out["scores"]) > 0
    assert out["scores"].dtype == out["human_boxes"].dtype == torch.float32


# ------------------------------------------------------------------------------ ONNX


def tiny_training_free_config() -> TrainingFreeConfig:
    """Dense training-free mode on the tiny DETR and CLIP of :func:`tiny_model_config`,
    NMS off (every query is a proposal)."""
    tiny = tiny_model_config()
    config = apply_overrides(TrainingFreeConfig(mode="dense"), [f"classes={CLASSES}"])
    config.detector, config.clip = tiny.detector, tiny.clip
    config.detector.nms_threshold = 1.0
    return config


def bias_to_people_and_bicycles(detr: DETR) -> None:
    """Half of the queries become persons, the other half bicycles (random decoder states
    differ little: their class is set along the direction that splits them), so that there
    are pairs to score; probabilities stay below 1 (no ties in the proposal selection)."""
    with torch.no_grad():
        hidden = detr([torch.rand(3, 120, 160)])["hidden_states"][0]
        split = hidden[::2].mean(0) - hidden[1::2].mean(0)
        split = 5 * split / split.norm()
        detr.class_embed.bias[:] = -20
        detr.class_embed.bias[[0, 1]] = 3
        detr.class_embed.weight[0], detr.class_embed.weight[1] = split, -split


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[CLIP4HOI, Path]:
    """A tiny CLIP4HOI (random head, 2 CLIP blocks taken) and its ONNX export."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from clip4hoi.engine.export import export_onnx

    torch.manual_seed(0)
    config = tiny_model_config()
    config.classes = CLASSES
    config.clip.layers = [-1, 0]
    config.detector.nms_threshold = 1.0
    model = build_model(config).eval()
    bias_to_people_and_bicycles(model.detector)
    out = tmp_path_factory.mktemp("onnx_trained")
    export_onnx(model, out)
    return model, out


def assert_same_detections(expected: list[dict], got: list[dict]) -> None:
    """Scores within 1e-4, boxes within 0.01 px, the same pairs and classes."""
    assert [len(e["scores"]) for e in expected] == [len(g["scores"]) for g in got]
    assert sum(len(e["scores"]) for e in expected) > 0
    for e, g in zip(expected, got, strict=True):
        for key in ("objects", "hoi", "verbs"):
            assert torch.equal(e[key], g[key])
        torch.testing.assert_close(g["scores"], e["scores"], rtol=0, atol=1e-4)
        for key in ("human_boxes", "object_boxes"):
            torch.testing.assert_close(g[key], e[key], rtol=0, atol=0.01)


def test_onnx_runners_equal_the_torch_networks(trained: tuple[CLIP4HOI, Path]) -> None:
    """Any batch and image size (dynamic axes); the exported CLIP blocks."""
    from clip4hoi.engine.export import load_onnx

    model, folder = trained
    export = load_onnx(folder)
    assert export.mode == "trained" and len(export.classes) == 3
    for sizes in ([(120, 160)], [(120, 160), (90, 130)], [(97, 131), (200, 150), (64, 64)]):
        images = normalize([torch.rand(3, h, w) for h, w in sizes])
        assert_outputs_close(model.detector(images), export.detector(images), rtol=1e-5)
    pixels = model.clip.preprocess([torch.rand(3, 50, 70), torch.rand(3, 90, 60)])
    torch.testing.assert_close(export.clip.preprocess([torch.rand(3, 5, 5)]).shape[-1],
                               model.clip.image_size)
    expected = model.clip.encode_image(pixels, layers=(-1, 0))
    got = export.clip.encode_image(pixels, layers=(-1, 0))
    assert got.grid == expected.grid
    torch.testing.assert_close(got.global_embedding, expected.global_embedding,
                               rtol=0, atol=1e-5)
    for a, b in zip(got.patch_tokens, expected.patch_tokens, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    with pytest.raises(InputError, match="dense"):
        export.clip.encode_image(pixels, dense=True)


def test_onnx_trained_detections_equal_pytorch(trained: tuple[CLIP4HOI, Path]) -> None:
    from clip4hoi.engine.export import load_onnx

    model, folder = trained
    export = load_onnx(folder)
    images = [torch.rand(3, 120, 160), torch.rand(3, 100, 150)]
    subset = load_classes("hug person, ride bicycle")
    with torch.no_grad():
        expected, expected_subset = model(images), model(images, classes=subset)
        onnx_model = export.attach(copy.deepcopy(model))
        assert_same_detections(expected, onnx_model(images))
        export.prime(onnx_model, subset)
        assert_same_detections(expected_subset, onnx_model(images, classes=subset))
    with pytest.raises(InputError, match=r"ride horse.*not among the 3 classes exported"):
        export.text_for(load_classes("ride horse"))


def test_onnx_training_free_needs_no_torch_network(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from clip4hoi.engine.export import export_onnx, load_onnx

    model = build_training_free(tiny_training_free_config())
    bias_to_people_and_bicycles(model.detector)
    export_onnx(model, tmp_path)
    onnx_model = load_onnx(tmp_path).training_free_model()
    assert not list(onnx_model.parameters())
    images = [torch.rand(3, 120, 160), torch.rand(3, 90, 130)]
    with torch.no_grad():
        assert_same_detections(model(images), onnx_model(images))


def test_missing_onnx_runtime_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                          ) -> None:
    from clip4hoi.engine import export

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"pip install 'clip4hoi\[onnx\]'"):
        export.onnxruntime()
    with pytest.raises(InputError, match=r"no clip4hoi_onnx\.json"):
        export.load_onnx(tmp_path)

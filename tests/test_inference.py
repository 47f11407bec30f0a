"""Inference-ready frozen networks (issue 21): batch norms folded into DETR's convolutions,
channels-last, the ``--precision`` rule, fp32 scoring under bf16 autocast, and the ONNX
export with its ONNX Runtime runners against the PyTorch fp32 path."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    REPO,
    TINY_DETR,
    people_and_bicycles,
    set_flags,
    tiny_model_config,
    tiny_training_free_flags,
    write_test_video,
)
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision.ops.misc import FrozenBatchNorm2d

from clip4hoi.api import load_detector
from clip4hoi.cli import build_parser, main
from clip4hoi.config import TrainingFreeConfig, apply_overrides
from clip4hoi.data.metadata import load_classes
from clip4hoi.errors import InputError, OptionError, UserError
from clip4hoi.models import precision
from clip4hoi.models.detr import DETR, fold_frozen_batchnorm, nearest_index, normalize
from clip4hoi.models.model import CLIP4HOI, build_model
from clip4hoi.models.precision import cpu_bf16_feature, resolve_precision
from clip4hoi.models.training_free import build_training_free
from clip4hoi.options import DetectOptions

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


# ------------------------------------------------------------------------- start-up


def test_start_up_imports_only_what_is_used() -> None:
    """``import clip4hoi.api`` imports neither open_clip nor what it pulls in, nor scipy;
    the CLI's lean open_clip import leaves transformers, timm and huggingface_hub out and
    still importable."""
    code = (
        "import sys\nimport clip4hoi.api\n"
        "heavy = {'open_clip', 'transformers', 'timm', 'scipy', 'huggingface_hub'}\n"
        "assert not heavy & set(sys.modules), sorted(heavy & set(sys.modules))\n"
        "from clip4hoi.models.clip import import_open_clip_lean\n"
        "assert import_open_clip_lean().create_model\n"
        "assert not heavy - {'open_clip', 'scipy'} & set(sys.modules)\n"
        "import transformers, timm, huggingface_hub\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_cpu_defaults_of_threads_workers_and_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from clip4hoi.engine import predictor

    monkeypatch.setattr(predictor.os, "getloadavg", lambda: (2.6, 2.0, 1.0))
    assert predictor.default_threads(cores=2) == 1    # the other jobs take both cores
    assert predictor.default_threads(cores=16) == 13
    monkeypatch.setattr(predictor.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert predictor.default_threads(cores=2) == 2
    before = torch.get_num_threads()
    try:
        assert predictor.set_cpu_threads(1) == 1 == torch.get_num_threads()
        with pytest.raises(OptionError, match=r"^threads -1"):
            predictor.set_cpu_threads(-1)
    finally:
        torch.set_num_threads(before)
    assert predictor.default_workers(3, "cpu") == 0 and predictor.default_workers(8, "cpu") == 1
    assert predictor.default_batch_size("cpu") == 1
    assert predictor.default_batch_size("cuda") == 4


# ----------------------------------------------------------------------- precision


def test_precision_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: "AMX")
    assert resolve_precision("auto", "cpu") == (torch.bfloat16, "bf16: CPU has AMX")
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: None)
    dtype, reason = resolve_precision("auto", "cpu")
    assert dtype == torch.float32 and reason.startswith("fp32: CPU")
    dtype, reason = resolve_precision("bf16", "cpu")
    assert dtype == torch.bfloat16 and "emulated" in reason
    assert resolve_precision("fp32", "cpu") == (torch.float32, "fp32: {precision} fp32")
    for capability, expected in (((7, 5), (torch.float32, "fp32: CUDA capability 7.5 < 8")),
                                 ((8, 0), (torch.bfloat16, "bf16: CUDA capability 8.0 >= 8"))):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d, c=capability: c)
        assert resolve_precision("auto", "cuda:0") == expected
    with pytest.raises(InputError, match=r"^precision 'fp16': choose from auto"):
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


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """``clip4hoi export --format onnx --mode dense`` of a tiny person/bicycle DETR (its
    weights file: the facebookresearch layout) and a tiny random CLIP; the folder and the
    ``--set`` flags that rebuild the same model in PyTorch."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    folder = tmp_path_factory.mktemp("onnx_dense")
    torch.manual_seed(0)
    detr = DETR(**TINY_DETR)
    bias_to_people_and_bicycles(detr)
    weights = folder / "detr.safetensors"
    save_file({k: v.contiguous() for k, v in detr.state_dict().items()}, weights)
    flags = set_flags([*tiny_training_free_flags(), f"detector.weights={weights}",
                       "clip.pretrained=null", "detector.nms_threshold=1.0"])
    assert main(["export", "--format", "onnx", "--out", str(folder / "export"), "--mode",
                 "dense", "--classes", CLASSES, *flags]) == 0
    return folder / "export", flags


def test_onnx_training_free_needs_no_torch_network(dense: tuple[Path, list[str]]) -> None:
    from clip4hoi.engine.export import load_onnx

    folder, flags = dense
    onnx_model = load_onnx(folder).training_free_model()
    assert not list(onnx_model.parameters())
    model = load_detector("dense", overrides=[*flags[1::2], f"classes={CLASSES}"],
                          precision="fp32").model
    images = [torch.rand(3, 120, 160), torch.rand(3, 90, 130)]
    with torch.no_grad():
        assert_same_detections(model(images), onnx_model(images))


def _photos(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(1)
    for i, (w, h) in enumerate(sizes):
        pixels = torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(folder / f"photo{i}.png")
    return folder


def _detections(out: Path, name: str) -> list[dict]:
    if name.endswith(".jsonl"):
        return [d for line in (out / name).read_text().splitlines()
                for d in json.loads(line)["detections"]]
    return json.loads((out / name).read_text())["detections"]


def assert_same_records(expected: list[dict], got: list[dict]) -> None:
    """JSON records: the same pairs and classes, scores within 1e-4, boxes 0.01 px."""
    assert [(d["hoi"], d["object"]) for d in got] == [(d["hoi"], d["object"])
                                                      for d in expected]
    for e, g in zip(expected, got, strict=True):
        assert abs(e["score"] - g["score"]) <= 1e-4
        for key in ("human_box", "object_box"):
            assert max(abs(a - b) for a, b in zip(e[key], g[key], strict=True)) <= 0.01


def test_detect_onnx_equals_the_pytorch_path(dense: tuple[Path, list[str]], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """``clip4hoi detect --onnx`` on a folder (two image sizes) and a video gives the
    detections of the PyTorch fp32 path, within 1e-4 in scores and 0.01 px in boxes."""
    folder, flags = dense
    photos = _photos(tmp_path / "photos", [(160, 120), (130, 90), (160, 120)])
    video = write_test_video(tmp_path / "clip.mp4", frames=3, size=(90, 120))
    scale = ["--test-scale", "120", "--max-size", "200"]   # the sizes of the DETR's bias
    common = [str(photos), str(video), "--workers", "0", "--no-draw", "--top-k", "0",
              "--device", "cpu", *scale]
    assert main(["detect", *common, "--onnx", str(folder), "--out", str(tmp_path / "onnx")]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert "mode dense (the ONNX export's), precision fp32 (auto: ONNX Runtime" in first
    assert main(["detect", *common, "--mode", "dense", "--precision", "fp32", "--classes",
                 CLASSES, "--out", str(tmp_path / "torch"), *flags]) == 0
    assert "precision fp32 (--precision fp32)" in capsys.readouterr().err.splitlines()[0]
    found = 0
    for name in ("photo0.png.json", "photo1.png.json", "photo2.png.json", "clip.mp4.jsonl"):
        expected = _detections(tmp_path / "torch", name)
        assert_same_records(expected, _detections(tmp_path / "onnx", name))
        found += len(expected)
    assert found > 0
    # A subset of the exported classes; others are named in one line.
    assert main(["detect", str(photos), "--onnx", str(folder), "--classes", "ride bicycle",
                 "--out", str(tmp_path / "subset"), "--workers", "0", "--no-draw", *scale]) == 0
    subset = [d for i in range(3) for d in _detections(tmp_path / "subset",
                                                       f"photo{i}.png.json")]
    assert {d["verb"] for d in subset} == {"ride"}
    capsys.readouterr()
    assert main(["detect", str(photos), "--onnx", str(folder), "--classes", "ride horse",
                 "--out", str(tmp_path / "horse")]) == 2
    err = capsys.readouterr().err
    assert "ride horse not among the 3 classes exported" in err and "Traceback" not in err


def test_detect_onnx_refuses_what_the_export_fixes(dense: tuple[Path, list[str]],
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    folder, _ = dense
    photo = _photos(tmp_path / "p", [(64, 48)]) / "photo0.png"
    for extra, message in (
            (["--checkpoint", str(photo)], "--checkpoint: the ONNX export given by --onnx"),
            (["--random-weights"], "--random-weights: the ONNX export given by --onnx"),
            (["--precision", "bf16"], "--precision bf16: the ONNX graphs of --onnx run in fp32"),
            (["--mode", "crop"], "--mode crop: the ONNX export of --onnx holds the dense"),
            (["--set", "clip.image_size=96"], "clip.image_size=96: the ONNX graphs of")):
        assert main(["detect", str(photo), "--onnx", str(folder), "--out",
                     str(tmp_path / "out"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_onnx_trained_backend_equals_pytorch_with_annotated_boxes(
        trained: tuple[CLIP4HOI, Path]) -> None:
    """The trained export's head (head.safetensors) on the runners, without building
    DETR or CLIP: the PyTorch fp32 results, also with the annotated boxes as proposals
    (``--boxes``)."""
    from clip4hoi.engine.backend import OnnxBackend, TorchBackend, build_backend, prepare_image

    model, folder = trained
    images = [(torch.rand(3, 120, 160) * 255).to(torch.uint8),
              (torch.rand(3, 100, 150) * 255).to(torch.uint8)]
    boxes = {"boxes_h": torch.tensor([[5.0, 5, 60, 100], [70, 10, 120, 90]]),
             "boxes_o": torch.tensor([[20.0, 50, 90, 110], [60, 30, 80, 60]]),
             "object": torch.tensor([1, 41])}
    for use_boxes in (False, True):
        reference = copy.deepcopy(model)
        reference.config.detector.use_gt_boxes = use_boxes
        torch_backend = TorchBackend(reference, "trained", precision="fp32", min_size=120,
                                     max_size=200)
        onnx_backend = build_backend("auto", onnx=folder, boxes=use_boxes, min_size=120,
                                     max_size=200)
        assert isinstance(onnx_backend, OnnxBackend) and onnx_backend.uses_boxes == use_boxes
        assert not any(p.is_meta for p in onnx_backend.model.parameters())
        prepared = [prepare_image(image, torch_backend.transform,
                                  {k: v.clone() for k, v in boxes.items()})
                    for image in images]
        inputs, targets = [p[0] for p in prepared], [p[1] for p in prepared]
        classes = torch_backend.resolve_classes(None)
        assert_same_detections(torch_backend(inputs, targets, classes),
                               onnx_backend(inputs, targets, onnx_backend.encode_classes()))


# ------------------------------------------------------------------------ precision


def test_precision_is_one_option_of_detect_the_api_and_test() -> None:
    with pytest.raises(OptionError, match=r"^precision 'fp16': choose from auto, fp32"):
        DetectOptions(["photo.jpg"], precision="fp16").check()
    with pytest.raises(OptionError, match=r"^precision 'half'"):
        load_detector("dense", random_weights=True, overrides=tiny_training_free_flags(),
                      precision="half")
    with pytest.raises(SystemExit):   # argparse's choices
        build_parser().parse_args(["detect", "x.jpg", "--precision", "fp16"])
    for argv in (["detect", "x.jpg"], ["demo"], ["test", "x.yaml"]):
        assert build_parser().parse_args([*argv, "--precision", "bf16"]).precision == "bf16"


def test_detect_defaults_agree_between_the_cli_the_options_and_the_video_settings() -> None:
    """Each default of detect stands in the parser, in DetectOptions (the API) and, for
    videos, in TimelineSettings / TrackerSettings: one run gets the same from each."""
    from dataclasses import fields

    from clip4hoi.timeline import TimelineSettings
    from clip4hoi.tracking import TrackerSettings

    args = build_parser().parse_args(["detect", "x.jpg"])
    options = DetectOptions(["x.jpg"])
    for option in fields(DetectOptions):
        parsed = getattr(args, "set" if option.name == "overrides" else option.name)
        assert parsed == getattr(options, option.name), option.name
    assert options.timeline_settings() == TimelineSettings()
    assert options.tracker_settings() == TrackerSettings()


def test_bf16_backend_autocasts_the_networks_and_keeps_text_boxes_scores_fp32(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16: the CLIP and DETR blocks run in bf16; the class embeddings (encoded by the
    backend before its first bf16 forward), boxes and scores stay fp32."""
    from clip4hoi.engine.backend import TorchBackend, prepare_image

    config = tiny_model_config()
    config.classes = CLASSES
    model = build_model(config)
    monkeypatch.setattr(DETR, "forward", people_and_bicycles(DETR.forward))
    dtypes = []
    model.clip.model.visual.transformer.resblocks[0].register_forward_hook(
        lambda m, i, o: dtypes.append(o.dtype))
    backend = TorchBackend(model, "trained", precision="bf16", min_size=96, max_size=160)
    assert backend.dtype == torch.bfloat16 and backend.precision.startswith("bf16")
    image, target = prepare_image((torch.rand(3, 120, 160) * 255).to(torch.uint8),
                                  backend.transform)
    (out,) = backend([image], [target], backend.resolve_classes(None))
    assert dtypes == [torch.bfloat16]
    assert len(out["scores"]) > 0
    assert out["scores"].dtype == out["human_boxes"].dtype == torch.float32
    assert [t.dtype for t in model.classifier._text_cache.values()] == [torch.float32]


def test_detect_says_what_auto_precision_chose(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    photos = _photos(tmp_path / "photos", [(64, 48)])
    argv = ["detect", str(photos), "--random-weights", "--device", "cpu", "--mode", "dense",
            "--workers", "0", "--test-scale", "64", "--max-size", "96", "--classes", CLASSES,
            "--no-draw", *set_flags(tiny_training_free_flags())]
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: None)
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert "precision fp32 (auto: CPU (" in first and "has no AMX, AVX512-BF16" in first
    monkeypatch.setattr(precision, "cpu_bf16_feature", lambda: "AMX")
    assert main([*argv, "--out", str(tmp_path / "b"), "--threads", "1"]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert "precision bf16 (auto: CPU has AMX), 1 CPU thread(s)" in first


def test_missing_onnx_runtime_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                          ) -> None:
    from clip4hoi.engine import export

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"pip install 'clip4hoi\[onnx\]'"):
        export.onnxruntime()
    with pytest.raises(InputError, match=r"no clip4hoi_onnx\.json"):
        export.load_onnx(tmp_path)


def test_gpu_benchmark_script_runs_in_its_tiny_cpu_mode(tmp_path: Path) -> None:
    """benchmarks/gpu_detect.py (images/s at three batch sizes, fp32 / bf16 / ONNX Runtime,
    peak memory) cannot run here without a GPU: its --tiny mode runs the same code on the
    CPU (ONNX Runtime left out: the export is tested above)."""
    import gpu_detect

    result = gpu_detect.main(["--tiny", "--no-onnx", "--images", "4",
                              "--json", str(tmp_path / "gpu.json")])
    runs = [(r["variant"], r["batch"]) for r in result["runs"]]
    assert runs == [(p, b) for p in ("fp32", "bf16") for b in (1, 2, 4)]
    assert all(r["images_per_s"] > 0 and r["images"] == 8 for r in result["runs"])
    assert json.loads((tmp_path / "gpu.json").read_text())["runs"] == result["runs"]

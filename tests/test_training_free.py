"""Training-free HOI detection (crop and dense modes) on tiny random DETR and CLIP."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import (
    BICYCLE,
    CUP,
    PERSON,
    SCENE,
    SIZE,
    TINY_CLIP,
    TINY_DETR,
    crafted_detr_outputs,
    set_flags,
)
from PIL import Image

from clip4hoi import api
from clip4hoi.cli import main
from clip4hoi.config import TrainingFreeConfig
from clip4hoi.data.metadata import hicodet_classes, load_classes, parse_class_text
from clip4hoi.engine import backend
from clip4hoi.engine.backend import TorchBackend
from clip4hoi.models.training_free import (
    TrainingFreeHOI,
    build_training_free,
    calibrated_scores,
    class_prompts,
    crop_boxes,
    pool_patches,
    square_boxes,
    union_boxes,
)

TINY_OVERRIDES = [f"detector.architecture={json.dumps(TINY_DETR)}",
                  f"detector.num_heads={TINY_DETR['num_heads']}",
                  f"clip.model_cfg={json.dumps(TINY_CLIP)}"]


def tiny_config(mode: str, **settings: object) -> TrainingFreeConfig:
    """Tiny random DETR and CLIP; proposals exactly the crafted detections."""
    config = TrainingFreeConfig(mode=mode, **settings)
    config.detector.weights = "random"
    config.detector.architecture = dict(TINY_DETR)
    config.detector.min_humans = config.detector.min_objects = 0
    config.clip.pretrained = None
    config.clip.model_cfg = dict(TINY_CLIP)
    return config


def detections_of(model: TrainingFreeHOI, images: list[list[tuple[int, float, list[float]]]]
                  ) -> dict[str, torch.Tensor]:
    """Raw DETR outputs holding the given detections (see ``crafted_detr_outputs``)."""
    return crafted_detr_outputs(model.detector.config, images)


def run(model: TrainingFreeHOI, scenes: list, monkeypatch: pytest.MonkeyPatch,
        classes=None) -> list[dict[str, torch.Tensor]]:
    """The model on random images whose DETR output is ``scenes``."""
    crafted = detections_of(model, scenes)
    monkeypatch.setattr(model.detector, "forward", lambda images: crafted)
    return model([torch.rand(3, *SIZE) for _ in scenes], classes=classes)


@pytest.fixture(scope="module", params=["crop", "dense"])
def model(request: pytest.FixtureRequest) -> TrainingFreeHOI:
    torch.manual_seed(0)
    return build_training_free(tiny_config(request.param))


def pairs_of(det: dict[str, torch.Tensor]) -> dict[tuple, list[int]]:
    """Row indices of each (human box, object box) pair, boxes rounded to the pixel."""
    rows: dict[tuple, list[int]] = {}
    for i, (h, o) in enumerate(zip(det["human_boxes"].round().tolist(),
                                   det["object_boxes"].round().tolist(), strict=True)):
        rows.setdefault((*h, *o), []).append(i)
    return rows


# ------------------------------------------------------------------------------- the model


def test_output_format_and_calibrated_scores(model: TrainingFreeHOI,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    classes = hicodet_classes()
    (det,) = run(model, [SCENE], monkeypatch)
    assert set(det) == {"human_boxes", "object_boxes", "objects", "hoi", "verbs", "scores"}
    per_object = {o: classes.objects.count(o) for o in (PERSON, BICYCLE, CUP)}
    # 2 humans x 3 other instances; each pair yields the classes of its object.
    assert len(det["scores"]) == 2 * sum(per_object.values())
    assert torch.equal(torch.tensor(classes.objects)[det["hoi"]], det["objects"])
    assert torch.equal(torch.tensor(classes.verb_ids)[det["hoi"]], det["verbs"])
    # Softmax over the pair's valid classes, times (s_h * s_o)^λ: sums to the prior.
    score = {tuple(map(float, box)): p for _, p, box in SCENE}
    lam = model.config.detector_power
    pairs = pairs_of(det)
    assert len(pairs) == 6
    for key, rows in pairs.items():
        prior = (score[key[:4]] * score[key[4:]]) ** lam
        assert len(rows) == per_object[int(det["objects"][rows[0]])]
        torch.testing.assert_close(det["scores"][rows].sum().item(), prior, rtol=1e-5,
                                   atol=0)
        assert (det["scores"][rows] > 0).all()


def test_images_without_pairs_give_empty_results(model: TrainingFreeHOI,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    no_human = [(BICYCLE, 0.9, [20, 60, 90, 118]), (CUP, 0.7, [55, 40, 70, 55])]
    lonely_human = [(PERSON, 0.9, [10, 10, 60, 110])]
    outputs = run(model, [no_human, lonely_human, [], SCENE], monkeypatch)
    for out in outputs[:3]:
        assert len(out["scores"]) == 0
        assert out["human_boxes"].shape == (0, 4) and out["hoi"].dtype == torch.long
    assert len(outputs[3]["scores"]) > 0
    (empty,) = run(model, [lonely_human], monkeypatch)  # alone in its batch
    assert len(empty["scores"]) == 0


def test_free_text_classes(model: TrainingFreeHOI, monkeypatch: pytest.MonkeyPatch) -> None:
    classes = parse_class_text("ride bicycle, hold cup")
    (det,) = run(model, [SCENE], monkeypatch, classes)
    # 2 humans x (bicycle, cup); human-human pairs have no class and are not scored.
    assert sorted(det["hoi"].tolist()) == [0, 0, 1, 1]
    assert sorted(det["objects"].tolist()) == [BICYCLE, BICYCLE, CUP, CUP]
    # One valid class per pair: the softmax gives 1, the score is the prior.
    expected = sorted((s_h * s_o) ** model.config.detector_power
                      for s_h in (0.9, 0.8) for s_o in (0.95, 0.7))
    torch.testing.assert_close(sorted(det["scores"].tolist()), expected, rtol=1e-5, atol=0)


def test_losses_are_refused_and_eval_mode_is_kept(model: TrainingFreeHOI) -> None:
    model.train()
    assert not model.training and not model.detector.training and not model.clip.training
    with pytest.raises(ValueError, match="no losses"):
        model([torch.rand(3, *SIZE)], targets=[{}])


def test_crop_batches_and_shared_union_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = build_training_free(tiny_config("crop", crop_batch_size=2))
    batches: list[int] = []
    encode = model.clip.encode_image

    def counting(pixels: torch.Tensor, *args, **kwargs):
        batches.append(len(pixels))
        return encode(pixels, *args, **kwargs)

    monkeypatch.setattr(model.clip, "encode_image", counting)
    crafted = detections_of(model, [SCENE])
    monkeypatch.setattr(model.detector, "forward", lambda images: crafted)
    image = torch.rand(3, *SIZE)
    (small,) = model([image])
    # 6 pairs, 5 union boxes: (h0, h1) and (h1, h0) share one crop.
    assert batches == [2, 2, 1]
    model.config.crop_batch_size = 64
    (large,) = model([image])
    assert batches[3:] == [5]
    for key in small:
        torch.testing.assert_close(small[key], large[key], rtol=1e-5, atol=1e-7)


def test_text_embeddings_average_the_templates() -> None:
    torch.manual_seed(0)
    model = build_training_free(tiny_config("dense"))
    classes = parse_class_text("ride bicycle, hold cup")
    text = model.text_embeddings(classes)
    assert model.text_embeddings(classes) is text  # cached
    prompts = class_prompts(classes, model.config.templates)
    each = torch.nn.functional.normalize(model.clip.encode_text(prompts), dim=-1)
    mean = each.view(2, len(model.config.templates), -1).mean(1)
    torch.testing.assert_close(text, mean / mean.norm(dim=-1, keepdim=True))


def test_prompts_from_templates() -> None:
    templates = ["{sentence}.", "a person {action}.", "{verb} {object}"]
    assert class_prompts(parse_class_text("sit on dining table"), templates) == [
        "a photo of a person sitting on a dining table.", "a person sitting on a dining table.",
        "sit on dining table"]
    exit_bus = next(k for k, (v, o) in enumerate(zip(hicodet_classes().verbs,
                                                      hicodet_classes().object_names,
                                                      strict=True))
                    if (v, o) == ("exit", "bus"))
    hico = hicodet_classes().subset([exit_bus])
    assert class_prompts(hico, templates)[1] == "a person exiting a bus."  # hand-written
    with pytest.raises(ValueError, match="template"):
        TrainingFreeHOI(TrainingFreeConfig(templates=["a {person}"]), None, None, hico)
    oracle = TrainingFreeConfig()
    oracle.detector.use_gt_boxes = True
    with pytest.raises(ValueError, match="use_gt_boxes"):
        TrainingFreeHOI(oracle, None, None, hico)


# ------------------------------------------------------------------- geometry and pooling


def test_calibrated_scores_use_only_valid_classes() -> None:
    features = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    text = torch.eye(3)
    valid = torch.tensor([[True, True, False], [False, False, True]])
    scores = calibrated_scores(features, text, valid, temperature=1.0)
    e = math.e
    torch.testing.assert_close(scores, torch.tensor([[e / (e + 1), 1 / (e + 1), 0.0],
                                                     [0.0, 0.0, 1.0]]))


def test_union_and_square_boxes() -> None:
    boxes_h = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    boxes_o = torch.tensor([[40.0, 30.0, 90.0, 70.0]])
    union = union_boxes(boxes_h, boxes_o, (100, 200), margin=0.1)  # (h, w)
    # union [10, 20, 90, 70] grown by 8 and 5 pixels, normalised, clipped at 0
    torch.testing.assert_close(union, torch.tensor([[2 / 200, 15 / 100, 98 / 200, 75 / 100]]))
    torch.testing.assert_close(square_boxes(torch.tensor([[10.0, 20.0, 90.0, 40.0]])),
                               torch.tensor([[10.0, -10.0, 90.0, 70.0]]))


def test_crop_boxes() -> None:
    image = torch.arange(48.0).view(3, 4, 4)
    torch.testing.assert_close(crop_boxes(image, torch.tensor([[0.0, 0, 4, 4]]), 4)[0], image)
    torch.testing.assert_close(crop_boxes(image, torch.tensor([[1.0, 2, 3, 4]]), 2)[0],
                               image[:, 2:4, 1:3])
    # 2x downscale: each output pixel averages a 2x2 block
    torch.testing.assert_close(crop_boxes(image, torch.tensor([[0.0, 0, 4, 4]]), 2)[0],
                               torch.nn.functional.avg_pool2d(image[None], 2)[0])
    outside = crop_boxes(image, torch.tensor([[10.0, 10, 14, 14]]), 2)
    assert torch.equal(outside, torch.zeros(1, 3, 2, 2))


def test_dense_pooling_on_a_hand_made_grid() -> None:
    grid = (4, 4)
    dense = torch.eye(16)  # patch n has embedding e_n (row-major)
    boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75],    # patches (1,1) (1,2) (2,1) (2,2)
                          [0.0, 0.0, 0.5, 0.25],       # patches (0,0) (0,1)
                          [0.55, 0.3, 0.6, 0.35]])     # inside patch (1,2): its centre
    mean = pool_patches(dense, boxes, grid, "mean")
    expected = torch.zeros(3, 16)
    expected[0, [5, 6, 9, 10]] = 0.25
    expected[1, [0, 1]] = 0.5
    expected[2, 6] = 1.0
    torch.testing.assert_close(mean, expected)
    # roi_align samples the patch centres of boxes aligned with the grid
    aligned = pool_patches(dense, boxes[:2], grid, "roi_align")
    torch.testing.assert_close(aligned, expected[:2])
    assert pool_patches(dense, boxes[:0], grid, "mean").shape == (0, 16)


# ----------------------------------------------------------------------------------- CLI


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("a.png", (200, 30, 30)), ("c.png", (30, 200, 30))):
        Image.new("RGB", (64, 48), colour).save(folder / name)
    (folder / "b_corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


def test_cli_detect_errors_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder, out = _folder(tmp_path), tmp_path / "out"
    argv = ["detect", str(folder), "--out", str(out), "--random-weights", "--mode", "crop",
            "--device", "cpu", "--classes", "ride bicycle, hold cup, hug person",
            *set_flags(TINY_OVERRIDES)]
    calls = 0
    detect = TorchBackend.__call__

    def interrupted(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return detect(self, *args, **kwargs)

    monkeypatch.setattr(TorchBackend, "__call__", interrupted)
    assert main(argv) == 130  # a.png done, b_corrupt.jpg failed, interrupted on c.png
    monkeypatch.setattr(TorchBackend, "__call__", detect)
    assert sorted(p.name for p in out.iterdir()) == ["a.png.drawn.jpg", "a.png.json"]
    first = (out / "a.png.json").stat().st_mtime_ns
    capsys.readouterr()

    assert main(argv) == 1  # an image failed
    err = capsys.readouterr().err
    assert "mode crop" in err and "MEANINGLESS" in err
    assert "b_corrupt.jpg" in err
    assert "1 done, 1 skipped" in err and "1 failed" in err
    assert (out / "a.png.json").stat().st_mtime_ns == first  # not redone
    payload = json.loads((out / "c.png.json").read_text())
    assert payload["mode"] == "crop" and payload["seconds"] > 0
    assert (payload["width"], payload["height"]) == (64, 48)
    assert not (out / "b_corrupt.jpg.json").exists()
    combined = json.loads((out / "detections.json").read_text())
    assert [r["file_name"] for r in combined["images"]] == ["a.png", "c.png"]

    assert main([*argv, "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "2 done, 0 skipped" in err and "1 failed" in err


def test_cli_dense_mode(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = _folder(tmp_path) / "a.png"
    out = tmp_path / "out"
    assert main(["detect", str(image), "--out", str(out), "--random-weights", "--mode",
                 "dense", "--device", "cpu", "--no-draw", *set_flags([*TINY_OVERRIDES,
                 "margin=0.2"])]) == 0
    assert "mode dense" in capsys.readouterr().err
    payload = json.loads((out / "a.png.json").read_text())
    assert payload["mode"] == "dense"
    assert sorted(os.listdir(out)) == ["a.png.json", "detections.json"]


def test_random_weights_are_full_size(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[TrainingFreeConfig] = []

    def fake_build(config: TrainingFreeConfig) -> TrainingFreeHOI:
        built.append(config)
        return build_training_free(tiny_config(config.mode))

    monkeypatch.setattr(backend, "build_training_free", fake_build)
    detector = api.build_training_free_detector("dense", "cpu", True, ["margin=0.3"])
    (config,) = built
    assert detector.mode == "dense" and config.margin == 0.3
    assert config.detector.weights == "random" and config.detector.architecture is None
    assert config.clip.pretrained is None and config.clip.model_cfg is None
    assert config.clip.name == "ViT-B-16"  # DETR-R50 (91 classes) and ViT-B-16, random
    assert detector.classes == load_classes("hicodet")

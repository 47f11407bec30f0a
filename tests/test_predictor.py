"""The one inference pipeline: batches that do not change results, ``Results``, streams of
folders, videos and in-memory images, one mode rule and one rule per option."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    people_and_bicycles,
    set_flags,
    tiny_training_free_flags,
    write_test_video,
)
from PIL import Image

from clip4hoi.api import HOIDetector, build_training_free_detector
from clip4hoi.cli import main
from clip4hoi.engine.backend import prepare_image, resolve_mode
from clip4hoi.errors import InputError, OptionError
from clip4hoi.models.detr import DETR

CLASSES = "ride bicycle, hold bicycle, hug person"
SIZES = [(48, 64), (64, 48), (48, 64), (40, 64), (64, 64), (48, 64), (30, 90), (64, 48)]


@pytest.fixture(scope="module", autouse=True)
def labelled_detr() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DETR, "forward", people_and_bicycles(DETR.forward))
        yield


@pytest.fixture(scope="module")
def detector() -> HOIDetector:
    torch.manual_seed(0)
    return build_training_free_detector("dense", "cpu", True, tiny_training_free_flags(),
                                        min_size=96, max_size=160)


def _images(seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8)
            for h, w in SIZES]


def _difference(a: dict, b: dict) -> tuple[float, float]:
    """Largest score and box differences of two detection dicts of equal length."""
    boxes = [(a[k] - b[k]).abs().max().item() for k in ("human_boxes", "object_boxes")]
    return (a["scores"] - b["scores"]).abs().max().item(), max(boxes)


def test_batches_of_mixed_sizes_give_the_same_detections(detector: HOIDetector) -> None:
    images = _images()
    classes = detector.encode_classes(CLASSES)
    # A padded batch of mixed sizes changes DETR's output (what the pipeline avoids).
    backend = detector.backend
    prepared = [prepare_image(image, backend.transform) for image in images[:4]]
    alone = [backend([p[0]], [p[1]], classes)[0] for p in prepared]
    padded = backend([p[0] for p in prepared], [p[1] for p in prepared], classes)
    worst = max(_difference(a, b) for a, b in zip(alone, padded, strict=True)
                if len(a["scores"]) == len(b["scores"]))
    assert worst[0] > 1e-3 or worst[1] > 1e-2, worst

    one = detector(images, classes, batch_size=1)
    four = detector(images, classes, batch_size=4)
    assert [r.name for r in four] == [f"image{i}" for i in range(len(SIZES))]  # in order
    assert [r.size for r in four] == SIZES
    for a, b in zip(one, four, strict=True):
        assert len(a) == len(b) > 0
        score, box = _difference(a.to_dict(), b.to_dict())
        assert score < 1e-5 and box < 1e-3, (a.name, score, box)
        assert torch.equal(a.to_dict()["hoi"], b.to_dict()["hoi"])


def test_results(detector: HOIDetector, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(_images()[0].permute(1, 2, 0).numpy()).save(photo)
    (result,) = detector(photo, CLASSES)
    assert (result.name, result.size, result.mode, result.frame) == ("photo.png", (48, 64),
                                                                     "dense", None)
    assert result.classes.name == "custom" and len(result) > 0
    data = result.to_dict()
    assert data["size"].tolist() == [48, 64]
    assert {"human_boxes", "object_boxes", "objects", "hoi", "verbs", "scores"} <= data.keys()
    records = result.records(top_k=1)
    assert len(records) == 1 and records[0]["verb"] in ("ride", "hold", "hug")
    x2 = records[0]["human_box"][2]   # 0-based inclusive: continuous x2 - 1
    assert x2 == round(float(data["human_boxes"][0, 2]) - 1, 2)
    payload = result.to_json(top_k=100)
    assert payload["file_name"] == "photo.png" and payload["mode"] == "dense"
    assert (payload["width"], payload["height"]) == (64, 48)
    assert result.plot(pairs=2).size == (64, 48)
    written = result.save(tmp_path / "out")
    assert json.loads(written.read_text())["detections"] == payload["detections"]
    assert (tmp_path / "out" / "photo.png.drawn.jpg").is_file()


def test_stream_of_a_folder_a_video_and_memory(detector: HOIDetector, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(_images()[:2]):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    write_test_video(folder / "clip.mp4", frames=6, rate=4)
    stream = detector.stream(folder, CLASSES, every=2, keep_pixels=False)
    first = next(stream)   # lazily: one result at a time
    assert first.name == "0.png" and first.pixels is None
    rest = list(stream)
    assert [(r.name, r.frame) for r in rest] == [("1.png", None), ("clip.mp4", 0),
                                                 ("clip.mp4", 2), ("clip.mp4", 4)]
    assert rest[2].time == pytest.approx(0.5)
    assert rest[1].to_json()["frame"] == 0 and "mode" not in rest[1].to_json()

    pil = Image.new("RGB", (40, 30), (200, 10, 10))
    array = np.zeros((30, 40, 3), np.uint8)
    results = detector([pil, array, torch.rand(3, 30, 40)], CLASSES)
    assert [(r.name, r.size) for r in results] == [(f"image{i}", (30, 40)) for i in range(3)]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(InputError, match=r"broken\.jpg"):
        detector([tmp_path / "broken.jpg"], CLASSES)
    with pytest.raises(OptionError, match="batch_size -1"):
        detector([pil], CLASSES, batch_size=-1)


def test_one_rule_resolves_the_mode() -> None:
    assert resolve_mode("auto", None, "cpu") == ("dense", "cpu")
    assert resolve_mode("auto", None, "cuda:0") == ("crop", "gpu")
    assert resolve_mode("auto", "head.safetensors", "cpu") == ("trained", "checkpoint")
    assert resolve_mode("crop", None, "cpu") == ("crop", "")
    assert resolve_mode("auto", None, "cpu", ["mode=crop"]) == ("crop", "override")
    assert resolve_mode("crop", None, "cpu", ["training_free.mode=crop"]) == ("crop", "")
    with pytest.raises(OptionError, match="mode dense: disagrees with the override "
                                          "mode=crop"):
        resolve_mode("dense", None, "cpu", ["mode=crop"])
    with pytest.raises(OptionError, match="choose from auto"):
        resolve_mode("fast")


def test_the_command_line_names_flags(tmp_path: Path, capsys: pytest.CaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from clip4hoi.engine import backend

    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48)).save(photo)
    monkeypatch.setattr(backend, "build_backend", lambda *a, **k: pytest.fail("loaded"))
    for argv, message in (
            (["--mode", "crop", "--set", "mode=dense"],
             "--mode crop: disagrees with the override mode=dense"),
            (["--fps", "-1"], "--fps -1.0: must be a number from 0 to 1000 (frames per "
                              "second; 0: use --every)"),
            (["--test-scale", "900", "--max-size", "800"],
             "--test-scale 900: must be below --max-size 800"),
            (["--batch-size", "-2"], "--batch-size -2: must be an integer from 1 to 1024")):
        assert main(["detect", str(photo), "--out", str(tmp_path / "o"), "--device", "cpu",
                     *argv]) == 2
        assert message in capsys.readouterr().err


def test_a_mode_override_is_used_and_said(tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48)).save(photo)
    assert main(["detect", str(photo), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--random-weights", "--no-draw", "--test-scale", "96", "--max-size", "160",
                 "--classes", CLASSES, *set_flags([*tiny_training_free_flags(),
                                                   "mode=crop"])]) == 0
    assert "mode crop (from --set mode=...)" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "photo.png.json").read_text())["mode"] == "crop"

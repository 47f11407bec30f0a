"""``clip4hoi detect`` with a trained checkpoint, on the image kinds users have."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SCENE, crafted_detr_outputs, tiny_model_config
from PIL import Image

from clip4hoi.api import HOIDetector, to_records
from clip4hoi.cli import main
from clip4hoi.engine.checkpoint import save_checkpoint
from clip4hoi.models.detr import DETR
from clip4hoi.models.model import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "head.safetensors"
    save_checkpoint(build_model(tiny_model_config()), path)
    return path


@pytest.fixture(autouse=True)
def scene_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """The random DETR finds nothing useful: make it see SCENE (two people, a bicycle and
    a cup, boxes relative to the image size) in every image."""
    def forward(self: DETR, images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return crafted_detr_outputs(self.config, [SCENE] * len(images))

    monkeypatch.setattr(DETR, "forward", forward)


def _images(folder: Path) -> dict[str, tuple[int, int]]:
    """Odd images and the (width, height) each must be read with."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    folder.mkdir()
    Image.fromarray(rgb[..., 0]).save(folder / "grey.png")
    Image.fromarray(rgb).quantize(8).save(folder / "palette.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA").save(folder / "alpha.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: stored 64x48, shown 48x64
    Image.fromarray(rgb).save(folder / "rotated.jpg", exif=exif)
    (folder / "sub").mkdir()
    Image.fromarray(rgb).save(folder / "sub" / "nested.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return {"grey.png": (64, 48), "palette.png": (64, 48), "alpha.png": (64, 48),
            "deep.png": (64, 48), "rotated.jpg": (48, 64), "sub/nested.jpg": (64, 48)}


def test_detect_folder_with_a_checkpoint(tmp_path: Path, checkpoint: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    expected = _images(tmp_path / "photos")
    out = tmp_path / "out"
    code = main(["detect", str(tmp_path / "photos"), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--device", "cpu", "--classes", "ride bicycle, hug person",
                 "--top-k", "5"])
    assert code == 1  # broken.jpg failed
    err = capsys.readouterr().err
    assert "mode trained" in err and "broken.jpg" in err
    assert "6 done, 0 skipped" in err and "1 failed" in err
    for name, (width, height) in expected.items():
        payload = json.loads((out / f"{name}.json").read_text())
        assert payload["file_name"] == name  # the sub-folder is kept
        assert (payload["width"], payload["height"]) == (width, height)
        assert (out / f"{name}.drawn.jpg").is_file()
        detections = payload["detections"]
        assert 0 < len(detections) <= 5
        assert {d["verb"] for d in detections} <= {"ride", "hug"}
        scores = [d["score"] for d in detections]
        assert scores == sorted(scores, reverse=True)
        for d in detections:
            x1, y1, x2, y2 = d["human_box"]
            assert -1 <= x1 <= x2 <= width and -1 <= y1 <= y2 <= height


def test_api_boxes_are_in_original_pixels(checkpoint: Path) -> None:
    detector = HOIDetector.from_checkpoint(checkpoint)
    image = torch.rand(3, 90, 200)
    (result,) = detector([image], classes="ride bicycle")
    detections = result.to_dict()
    assert result.size == (90, 200) and detections["size"].tolist() == [90, 200]
    boxes = torch.cat([detections["human_boxes"], detections["object_boxes"]])
    assert len(boxes) and (boxes[:, 2] <= 200 + 1e-3).all() and (boxes[:, 3] <= 90 + 1e-3).all()
    records = to_records(detections, detector.resolve_classes("ride bicycle"), top_k=3)
    assert len(records) == 3 and records[0]["object"] == "bicycle"
    assert result.records(top_k=3) == records

"""Boxes narrower than a pixel, or 1 px wide up to float rounding, as DETR can predict them:
what ``clip4hoi test`` and ``clip4hoi detect`` write, ``clip4hoi eval`` must score — to the
mAP of the in-process evaluation. Truly inverted boxes are still refused, naming the file,
the image and the row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BICYCLE, PERSON, SIZE, crafted_detr_outputs, tiny_model_config
from PIL import Image
from torch import Tensor, nn

from clip4hoi.cli import main
from clip4hoi.data.metadata import COCO_OBJECTS, HICO_VERBS, hicodet_classes
from clip4hoi.data.synthetic import hoi_id
from clip4hoi.data.transforms import TransformConfig
from clip4hoi.engine.checkpoint import save_checkpoint
from clip4hoi.engine.config import DataConfig
from clip4hoi.engine.data import build_dataset
from clip4hoi.engine.distributed import DistInfo
from clip4hoi.engine.evaluate import evaluate_model
from clip4hoi.errors import InputError
from clip4hoi.evaluation import (
    evaluate_hicodet,
    parse_records,
    read_detections,
    records_from_outputs,
)
from clip4hoi.evaluation.detections import box_indices
from clip4hoi.models.detr import DETR
from clip4hoi.models.model import build_model

RIDE_BICYCLE = hoi_id("ride", "bicycle")
HOLD_BICYCLE = hoi_id("hold", "bicycle")
# A float64 x1 for which (x1 + 1) - 1 < x1: an exact 1-px box becomes inverted by 1.4e-14.
ROUNDING_X1 = 127.35847192167104


def write_annotations(path: Path, names: list[str], size: tuple[int, int],
                      pairs: list[list[tuple[list[float], list[float], int]]]) -> Path:
    """A fredzzhang-format HICO-DET file; ``pairs[i]``: (human, object, HOI id) with boxes
    1-based inclusive, as the real files have them; ``size`` is (w, h)."""
    classes = hicodet_classes()
    annotation = [{"boxes_h": [h for h, _, _ in rows], "boxes_o": [o for _, o, _ in rows],
                   "hoi": [k for _, _, k in rows], "object": [classes.objects[k] for *_, k in rows],
                   "verb": [classes.verb_ids[k] for *_, k in rows]} for rows in pairs]
    path.write_text(json.dumps({
        "annotation": annotation, "filenames": names, "size": [list(size)] * len(names),
        "empty": [i for i, rows in enumerate(pairs) if not rows],
        "objects": list(COCO_OBJECTS), "verbs": list(HICO_VERBS),
        "correspondence": [[k, o, v] for k, (o, v) in
                           enumerate(zip(classes.objects, classes.verb_ids, strict=True))],
        "rare": [], "non_rare": list(range(len(classes)))}))
    return path


# ----------------------------------------------------------------------------- the conversion


def test_box_indices_clamps_sub_pixel_and_rounding_degenerate_boxes() -> None:
    boxes = np.array([[50.0, 60.0, 50.5, 90.0],                  # half a pixel wide
                      [ROUNDING_X1, 5.0, ROUNDING_X1 + 1, 6.0],   # 1 px, x2 - 1 < x1 in floats
                      [10.0, 20.0, 30.0, 40.0],                   # an ordinary box
                      [np.nan] * 4])                              # V-COCO: no role object
    out = box_indices(boxes)
    assert (ROUNDING_X1 + 1) - 1 < ROUNDING_X1                    # the case is real
    np.testing.assert_array_equal(out[0], [50.0, 60.0, 50.0, 89.0])
    np.testing.assert_array_equal(out[1], [ROUNDING_X1, 5.0, ROUNDING_X1, 5.0])
    np.testing.assert_array_equal(out[2], [10.0, 20.0, 29.0, 39.0])
    assert np.isnan(out[3]).all()
    assert (out[:3, 2:] >= out[:3, :2]).all()
    np.testing.assert_array_equal(boxes[0], [50.0, 60.0, 50.5, 90.0])   # input untouched
    records = records_from_outputs(["a.jpg"], [{
        "human_boxes": torch.tensor([[ROUNDING_X1, 5.0, ROUNDING_X1 + 1, 6.0]],
                                    dtype=torch.float64),
        "object_boxes": torch.tensor([[50.0, 60.0, 50.5, 90.0]]),
        "hoi": torch.tensor([RIDE_BICYCLE]), "scores": torch.tensor([0.5])}])
    assert records[0]["object_boxes"] == [[50.0, 60.0, 50.0, 89.0]]
    assert records[0]["human_boxes"][0][2] >= records[0]["human_boxes"][0][0]


def test_the_reader_tolerates_rounding_and_names_the_row_of_an_inverted_box(
        tmp_path: Path) -> None:
    ann_path = write_annotations(tmp_path / "ann.json", ["a.jpg"], (200, 100),
                                 [[([1, 1, 20, 50], [30, 30, 40, 40], RIDE_BICYCLE)]])
    from clip4hoi.data.annotations import load_hicodet_annotations
    annotations = load_hicodet_annotations(ann_path)
    ok = [0.0, 0.0, 19.0, 49.0]
    rounded = [ROUNDING_X1, 5.0, (ROUNDING_X1 + 1) - 1, 6.0]      # 1.4e-14 below x1
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps({"images": [{
        "file_name": "a.jpg", "human_boxes": [ok, rounded], "object_boxes": [ok, ok],
        "hoi": [RIDE_BICYCLE, RIDE_BICYCLE], "scores": [0.9, 0.8]}]}))
    read = read_detections(dets, annotations)
    assert read.boxes_h[1].tolist() == rounded                      # scored as written
    inverted = [30.0, 30.0, 29.5, 40.0]                            # half a pixel inverted
    dets.write_text(json.dumps({"images": [{
        "file_name": "a.jpg", "human_boxes": [ok, ok, ok], "object_boxes": [ok, ok, inverted],
        "hoi": [RIDE_BICYCLE] * 3, "scores": [0.9, 0.8, 0.7]}]}))
    with pytest.raises(InputError, match=r"dets\.json: image a\.jpg: field 'object_boxes' "
                                         r"row 2 has box \[30\.0, 30\.0, 29\.5, 40\.0\]"):
        read_detections(dets, annotations)


# ----------------------------------------------------------------------------- test -> eval


class SubPixelModel(nn.Module):
    """Stands for a trained model in the test loop: per image, the annotated pair with a
    1-px object box predicted 0.4 px wide (a true positive), and a false positive with a
    box 1 px wide up to float rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: list[Tensor], targets: list[dict] | None = None,
                classes: object = None) -> list[dict[str, Tensor]]:
        out = []
        for _ in images:
            self.calls += 1
            score = 0.9 - 0.1 * (self.calls % 5)
            out.append({
                "human_boxes": torch.tensor([[10.0, 10.0, 60.0, 110.0],
                                             [ROUNDING_X1 - 60, 5.0, ROUNDING_X1 - 59, 6.0]]),
                "object_boxes": torch.tensor([[70.0, 60.0, 70.4, 118.0],
                                              [50.0, 60.0, 50.3, 90.0]]),
                "hoi": torch.tensor([RIDE_BICYCLE, RIDE_BICYCLE]),
                "scores": torch.tensor([score, score + 0.05])})
        return out


def test_test_outputs_with_sub_pixel_boxes_evaluate_again_to_the_same_map(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    height, width = SIZE
    names = [f"HICO_test2015_{i:08d}.jpg" for i in range(1, 4)]
    (tmp_path / "images").mkdir()
    for name in names:
        Image.new("RGB", (width, height), (90, 120, 150)).save(tmp_path / "images" / name)
    gt = [([11, 11, 60, 110], [71, 61, 71, 118], RIDE_BICYCLE)]    # a 1-px wide object
    ann = write_annotations(tmp_path / "instances_test2015.json", names, (width, height),
                            [gt, gt, []])
    data = DataConfig(root=str(tmp_path), test_images="images",
                      test_annotations=ann.name, num_workers=0,
                      transform=TransformConfig(scales=[height], test_scale=height,
                                                max_size=1333, augment=False))
    dataset = build_dataset(data, train=False)
    out = tmp_path / "detections.json"
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    result = evaluate_model(SubPixelModel(), dataset, info, detections_path=out)
    assert result is not None and result.maps["full"] > 0     # the 0.4-px boxes are hits
    report = tmp_path / "report.json"
    assert main(["eval", "--annotations", str(ann), "--detections", str(out),
                 "--json", str(report)]) == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["map"]["full"] == pytest.approx(
        result.maps["full"], abs=1e-9)


# ----------------------------------------------------------------------------- detect -> eval

SUB_PIXEL_SCENE = [(PERSON, 0.9, [10, 10, 60, 110]), (PERSON, 0.8, [80, 5, 130, 100]),
                   (BICYCLE, 0.95, [70.2, 60, 70.6, 118])]      # the bicycle: 0.4 px wide


def test_detect_outputs_with_sub_pixel_boxes_evaluate_again_to_the_same_map(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    def forward(self: DETR, images: list[Tensor]) -> dict[str, Tensor]:
        outputs = []
        for _ in images:        # the same random features in every run and batching
            torch.manual_seed(0)
            outputs.append(crafted_detr_outputs(self.config, [SUB_PIXEL_SCENE]))
        return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}

    monkeypatch.setattr(DETR, "forward", forward)
    height, width = SIZE
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    names = ["a.png", "b.png"]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            photos / name)
    ann = write_annotations(tmp_path / "ann.json", names, (width, height), [
        [([11, 11, 60, 110], [71, 61, 71, 118], RIDE_BICYCLE)],
        [([81, 6, 130, 100], [71, 61, 71, 118], HOLD_BICYCLE)]])
    checkpoint = tmp_path / "head.safetensors"
    model = build_model(tiny_model_config())
    save_checkpoint(model, checkpoint)
    out = tmp_path / "out"
    assert main(["detect", str(photos), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--device", "cpu", "--workers", "0", "--classes", "hicodet", "--top-k", "0",
                 "--no-draw", "--test-scale", "96", "--max-size", "160"]) == 0
    report = tmp_path / "report.json"
    assert main(["eval", "--annotations", str(ann), "--detections",
                 str(out / "detections.json"), "--json", str(report)]) == 0, \
        capsys.readouterr().err

    from clip4hoi.api import HOIDetector
    from clip4hoi.data.annotations import load_hicodet_annotations

    detector = HOIDetector.from_checkpoint(checkpoint, min_size=96, max_size=160)
    results = detector([photos / n for n in names], "hicodet")
    annotations = load_hicodet_annotations(ann)
    in_process = evaluate_hicodet(parse_records(
        {"images": records_from_outputs(names, [r.to_dict() for r in results])}, annotations),
        annotations)
    assert in_process.maps["full"] > 0
    assert json.loads(report.read_text())["map"]["full"] == pytest.approx(
        100 * in_process.maps["full"], abs=1e-6)

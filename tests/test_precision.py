"""Boxes stay fp32 under autocast: DETR's heads, the proposals, the box encodings and the
detections (issue 8, defect 1), checked on the real HICO-DET test boxes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_DETR, crafted_features, tiny_model_config
from test_engine import single_thread
from torchvision.ops import box_convert

from clip4hoi.config import DetectorConfig
from clip4hoi.data.metadata import HUMAN_OBJECT_ID
from clip4hoi.models.detr import DETR
from clip4hoi.models.interactor import image_proposals, paired_box_iou, spatial_encodings
from clip4hoi.models.model import CLIP4HOI, build_model

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def box_replay_detr() -> DETR:
    """A tiny DETR whose box head maps the decoder state ``[x, -x, 0, ...]`` to
    ``sigmoid(x)`` exactly (``relu(x) - relu(-x) = x``): feeding it ``x = logit(box)``
    replays given boxes through the real head."""
    detr = DETR(**TINY_DETR)
    dim = TINY_DETR["hidden_dim"]
    layers = detr.bbox_embed.layers
    with torch.no_grad():
        for layer in layers[:2]:
            layer.weight.copy_(torch.eye(dim))
            layer.bias.zero_()
        layers[2].weight.zero_()
        layers[2].weight[:, :4] = torch.eye(4)
        layers[2].weight[:, 4:8] = -torch.eye(4)
        layers[2].bias.zero_()
    return detr


def hicodet_test_boxes(shared_dir: Path, scale: int = 800, max_size: int = 1333
                       ) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """The unique boxes of every annotated test image at the test scale, grouped by image
    size ``(h, w)`` there: xyxy boxes (float64) and whether each is a human."""
    data = json.loads((shared_dir / "data" / "hicodet" / "instances_test2015.json").read_text())
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    for (width, height), ann in zip(data["size"], data["annotation"], strict=True):
        if not ann["hoi"]:
            continue
        factor = min(scale / min(width, height), max_size / max(width, height))
        boxes = torch.tensor(ann["boxes_h"] + ann["boxes_o"], dtype=torch.float64) * factor
        human = torch.tensor([True] * len(ann["boxes_h"]) + [o == HUMAN_OBJECT_ID
                                                           for o in ann["object"]])
        groups.setdefault((round(height * factor), round(width * factor)), []).append(
            torch.unique(torch.cat([boxes, human[:, None].double()], 1), dim=0))
    return {size: (torch.cat(rows)[:, :4], torch.cat(rows)[:, 4].bool())
            for size, rows in groups.items()}


def test_proposals_from_real_hicodet_boxes_are_fp32_exact_under_bf16_autocast(
        shared_dir: Path) -> None:
    """Every unique box of the 9,546 annotated test images, at the 800 test scale, through
    DETR's box head, the proposal selection and the spatial encodings, with and without bf16
    autocast (images of one size are replayed together: NMS at threshold 1 keeps all)."""
    detr = box_replay_detr()
    chunks = [(size, boxes[i:i + 500], human[i:i + 500])
              for size, (boxes, human) in hicodet_test_boxes(shared_dir).items()
              for i in range(0, len(boxes), 500)]
    with single_thread():
        worst, n_boxes, n_small = replay(detr, chunks)
    print(f"{n_boxes} boxes ({n_small} under 32² px): worst IoU bf16 vs fp32 {worst:.6f}")
    assert n_boxes > 50_000 and worst >= 0.9999


def replay(detr: DETR, chunks: list) -> tuple[float, int, int]:
    """Worst IoU, number of boxes and of small boxes of the replay."""
    label_to_object = torch.arange(80)
    cfg = DetectorConfig(score_threshold=0.0, nms_threshold=1.0, min_humans=0,
                         max_humans=10**6, min_objects=0, max_objects=10**6)
    dim, classes = TINY_DETR["hidden_dim"], TINY_DETR["num_classes"]
    worst, n_boxes, n_small = 1.0, 0, 0
    for (height, width), boxes, human in chunks:
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        x = torch.logit(box_convert(boxes, "xyxy", "cxcywh") / scale).float()   # [n, 4]
        hs = torch.zeros(1, len(boxes), dim)
        hs[0, :, :4], hs[0, :, 4:8] = x, -x
        logits = torch.full((len(boxes), classes + 1), -10.0)
        logits[:, 0] = torch.where(human, 10.0, -10.0)          # person
        logits[:, 1] = torch.where(human, -10.0, 10.0)          # an object class
        outputs = {}
        for name, enabled in (("fp32", False), ("bf16", True)):
            with torch.autocast(**BF16, enabled=enabled):
                _, pred = detr.predict(hs)
                inst = image_proposals(logits, pred[0], hs[0], label_to_object,
                                       (height, width), cfg)
                spatial = spatial_encodings(inst.boxes, inst.boxes.roll(1, 0), (height, width))
            assert pred.dtype == inst.boxes.dtype == spatial.dtype == torch.float32
            outputs[name] = inst.boxes, spatial
        (fp32, spatial32), (bf16, spatial16) = outputs["fp32"], outputs["bf16"]
        assert len(fp32) == len(boxes)
        iou = paired_box_iou(fp32, bf16)
        worst = min(worst, float(iou.min()))
        n_boxes += len(boxes)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        n_small += int((areas < 32 ** 2).sum())
        assert torch.allclose(spatial16, spatial32, rtol=1e-4, atol=1e-4)
    return worst, n_boxes, n_small


def test_detections_and_losses_are_float32_under_bf16_autocast() -> None:
    model = build_model(tiny_model_config())
    scene = [(0, 0.9, [10, 10, 60, 110]), (1, 0.95, [20, 60, 90, 118])]
    features = crafted_features(model, [scene, scene])
    model.eval()
    with torch.no_grad(), torch.autocast(**BF16):
        detections = model.forward_features(features, [(120, 160)] * 2)
        images = model([torch.rand(3, 96, 128)])
    for out in (*detections, *images):
        assert out["human_boxes"].dtype == out["object_boxes"].dtype == torch.float32
        assert out["scores"].dtype == torch.float32
    assert torch.allclose(detections[0]["human_boxes"][0], torch.tensor([10., 10., 60., 110.]),
                          atol=1e-4)
    assert isinstance(model, CLIP4HOI)


@pytest.mark.parametrize("autocast", [False, True])
def test_detr_heads_output_float32(autocast: bool) -> None:
    detr = DETR(**TINY_DETR)
    with torch.autocast(**BF16, enabled=autocast):
        out = detr([torch.rand(3, 64, 80)])
    assert out["pred_boxes"].dtype == out["pred_logits"].dtype == torch.float32

"""make_synthetic: real HICO-DET file layout, sensible layouts, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip4hoi.data.annotations import load_hicodet_annotations
from clip4hoi.data.hicodet import HICODet
from clip4hoi.data.metadata import COCO_OBJECTS, HICO_VERBS, hicodet_classes, hicodet_rare
from clip4hoi.data.synthetic import hoi_id, make_synthetic, synthetic_classes


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), n_train=30, n_test=12,
                          image_size=128)


def test_classes() -> None:
    classes = synthetic_classes()
    assert len(classes) == 12
    assert len({hicodet_classes().objects[k] for k in classes}) == 5
    assert hoi_id("ride", "bicycle") == 18 and hoi_id("no_interaction", "bicycle") == 23
    assert set(classes) & set(hicodet_rare())  # one rare class, unseen in RF-UC


def test_files_have_the_fredzzhang_layout(synthetic: dict) -> None:
    assert synthetic["root"].is_dir() and synthetic["classes"] == synthetic_classes()
    for split, count in (("train", 30), ("test", 12)):
        data = json.loads(synthetic[f"{split}_annotations"].read_text())
        expected = {"annotation", "filenames", "size", "empty", "objects", "verbs",
                    "correspondence"} | ({"rare", "non_rare"} if split == "test" else set())
        assert set(data) == expected
        assert data["objects"] == list(COCO_OBJECTS) and data["verbs"] == list(HICO_VERBS)
        assert len(data["correspondence"]) == 600
        assert len(data["filenames"]) == len(data["size"]) == len(data["annotation"]) == count
        assert data["filenames"][0] == f"HICO_{split}2015_00000001.jpg"
        for name, (width, height), ann in zip(data["filenames"], data["size"],
                                              data["annotation"], strict=True):
            assert Image.open(synthetic[f"{split}_images"] / name).size == (width, height)
            assert set(ann) == {"boxes_h", "boxes_o", "hoi", "object", "verb"}
            for box in ann["boxes_h"] + ann["boxes_o"]:  # 1-based inclusive, integer-valued
                assert all(isinstance(v, float) and v == int(v) for v in box)
                assert 1 <= box[0] <= box[2] <= width and 1 <= box[1] <= box[3] <= height
            assert set(ann["hoi"]) <= set(synthetic_classes())
        assert data["empty"] == [i for i, a in enumerate(data["annotation"]) if not a["hoi"]]
        assert 11 in data["empty"]
    test = json.loads(synthetic["test_annotations"].read_text())
    assert test["rare"] == list(hicodet_rare()) and len(test["non_rare"]) == 462


def test_loads_with_the_parser_and_the_dataset(synthetic: dict) -> None:
    annotations = load_hicodet_annotations(synthetic["train_annotations"])
    pairs_per_image = [len({(*h, *o) for h, o in zip(bh.tolist(), bo.tolist(), strict=True)})
                       for bh, bo in zip(annotations.boxes_h, annotations.boxes_o, strict=True)]
    assert max(pairs_per_image) <= 3
    assert sum(n > 0 for n in pairs_per_image) == 30 - len(annotations.empty)
    assert set(np.concatenate(annotations.hoi).tolist()) == set(synthetic_classes())

    dataset = HICODet(synthetic["train_images"], synthetic["train_annotations"])
    assert len(dataset) == 30 - len(annotations.empty)
    image, target = dataset[0]
    assert image.shape[0] == 3 and target["size"].tolist() == list(image.shape[-2:])


def _rows(annotations: object, hoi: int) -> tuple[np.ndarray, np.ndarray]:
    h = np.concatenate(annotations.boxes_h)
    o = np.concatenate(annotations.boxes_o)
    keep = np.concatenate(annotations.hoi) == hoi
    return h[keep], o[keep]


def test_layouts_encode_the_interaction(synthetic: dict) -> None:
    ann = load_hicodet_annotations(synthetic["train_annotations"])
    height = lambda b: b[:, 3] - b[:, 1]  # noqa: E731
    h, o = _rows(ann, hoi_id("carry", "skateboard"))      # board above the head
    assert len(h) and (o[:, 3] <= h[:, 1] + 0.1 * height(h)).all()
    h, o = _rows(ann, hoi_id("ride", "skateboard"))       # board under the feet
    assert len(h) and (o[:, 1] >= h[:, 3] - 0.1 * height(h)).all()
    h, o = _rows(ann, hoi_id("kick", "sports_ball"))      # ball at foot level
    assert len(h) and (o[:, 3] >= h[:, 3] - 0.1 * height(h)).all()
    h, o = _rows(ann, hoi_id("spin", "sports_ball"))      # ball above the head
    assert len(h) and ((o[:, 1] + o[:, 3]) / 2 < h[:, 1] + 0.1 * height(h)).all()
    h, o = _rows(ann, hoi_id("no_interaction", "bicycle"))  # bicycle apart
    assert len(h) and ((o[:, 0] > h[:, 2]) | (o[:, 2] < h[:, 0])).all()
    h, o = _rows(ann, hoi_id("ride", "bicycle"))          # bicycle overlaps the legs
    assert len(h) and ((o[:, 0] < h[:, 0]) & (o[:, 2] > h[:, 2]) & (o[:, 1] < h[:, 3])).all()


def test_deterministic(tmp_path: Path) -> None:
    runs = [make_synthetic(tmp_path / name, n_train=4, n_test=2, seed=seed, image_size=96)
            for name, seed in (("a", 1), ("b", 1), ("c", 2))]

    def content(run: dict) -> list[bytes]:
        files = sorted(run["root"].rglob("*.*"))
        return [f.read_bytes() for f in files]

    assert content(runs[0]) == content(runs[1])
    assert content(runs[0]) != content(runs[2])


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_train"):
        make_synthetic(tmp_path, n_train=0)
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic(tmp_path, image_size=32)

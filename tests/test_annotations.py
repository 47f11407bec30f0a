"""Annotation readers: real files of shared/data and small synthetic files of every format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip4hoi.data import metadata
from clip4hoi.data.annotations import (
    VCOCO_AGENT_ACTIONS,
    VCOCO_ROLE_ACTION,
    HOIAnnotations,
    load_hicodet_annotations,
    load_vcoco_annotations,
)
from clip4hoi.data.vcoco_official import load_vcoco_official, vcoco_ground_truth

CLASSES = metadata.hicodet_classes()
# coco80 index of each alphabetical HICO object name
HICO_ORDER = sorted(metadata.COCO_OBJECTS)

# Two images: image 0 with two pairs (ride bicycle, hold cup), image 1 without annotation.
RIDE_BICYCLE = next(k for k in range(600) if CLASSES.object_names[k] == "bicycle"
                    and metadata.HICO_VERBS[CLASSES.verb_ids[k]] == "ride")
HOLD_CUP = next(k for k in range(600) if CLASSES.object_names[k] == "cup"
                and metadata.HICO_VERBS[CLASSES.verb_ids[k]] == "hold")
H1, O1 = [11.0, 21.0, 50.0, 80.0], [31.0, 41.0, 90.0, 100.0]   # 1-based inclusive
H2, O2 = [1.0, 1.0, 10.0, 10.0], [5.0, 5.0, 8.0, 9.0]


def fredzzhang(order: str = "coco80") -> dict:
    names = list(metadata.COCO_OBJECTS) if order == "coco80" else HICO_ORDER

    def obj(k: int) -> int:
        return names.index(metadata.COCO_OBJECTS[CLASSES.objects[k]])

    return {
        "filenames": ["a.jpg", "b.jpg"],
        "size": [[640, 480], [320, 240]],
        "annotation": [
            {"boxes_h": [H1, H2], "boxes_o": [O1, O2], "hoi": [RIDE_BICYCLE, HOLD_CUP],
             "object": [obj(RIDE_BICYCLE), obj(HOLD_CUP)],
             "verb": [CLASSES.verb_ids[RIDE_BICYCLE], CLASSES.verb_ids[HOLD_CUP]]},
            {"boxes_h": [], "boxes_o": [], "hoi": [], "object": [], "verb": []},
        ],
        "empty": [1],
        "objects": names,
        "verbs": list(metadata.HICO_VERBS),
        "correspondence": [[k, obj(k), CLASSES.verb_ids[k]] for k in range(600)],
        "rare": [RIDE_BICYCLE],
    }


def qpic(with_hoi_id: bool = True) -> list:
    def pair(s: int, o: int, k: int) -> dict:
        p = {"subject_id": s, "object_id": o, "category_id": CLASSES.verb_ids[k] + 1}
        if with_hoi_id:
            p["hoi_category_id"] = k + 1
        return p

    cid = metadata.COCO_CATEGORY_IDS
    return [
        {"file_name": "a.jpg",
         "annotations": [{"bbox": H1, "category_id": 1},
                         {"bbox": O1, "category_id": cid[CLASSES.objects[RIDE_BICYCLE]]},
                         {"bbox": H2, "category_id": 1},
                         {"bbox": O2, "category_id": cid[CLASSES.objects[HOLD_CUP]]}],
         "hoi_annotation": [pair(0, 1, RIDE_BICYCLE), pair(2, 3, HOLD_CUP)]},
        {"file_name": "b.jpg", "annotations": [], "hoi_annotation": []},
    ]


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def check_synthetic(ann: HOIAnnotations) -> None:
    assert ann.file_names == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(ann.boxes_h[0], [[10, 20, 50, 80], [0, 0, 10, 10]])
    np.testing.assert_array_equal(ann.boxes_o[0], [[30, 40, 90, 100], [4, 4, 8, 9]])
    np.testing.assert_array_equal(ann.hoi[0], [RIDE_BICYCLE, HOLD_CUP])
    np.testing.assert_array_equal(ann.objects[0], [metadata.COCO_OBJECTS.index("bicycle"),
                                                   metadata.COCO_OBJECTS.index("cup")])
    np.testing.assert_array_equal(ann.verbs[0], [CLASSES.verb_ids[RIDE_BICYCLE],
                                                 CLASSES.verb_ids[HOLD_CUP]])
    assert ann.boxes_h[1].shape == (0, 4) and ann.hoi[1].shape == (0,)
    np.testing.assert_array_equal(ann.empty, [1])
    assert ann.boxes_h[0].dtype == np.float64 and ann.hoi[0].dtype == np.int64


# ----------------------------------------------------------------------------- real files

def test_real_hicodet_test_file(shared_dir: Path) -> None:
    path = shared_dir / "data" / "hicodet" / "instances_test2015.json"
    ann = load_hicodet_annotations(path)  # parsing speed: benchmarks/bench_eval.py
    assert len(ann) == 9658 and ann.num_pairs == 33405
    assert len(ann.empty) == 112 and all(len(ann.hoi[i]) == 0 for i in ann.empty)
    assert ann.rare is not None and len(ann.rare) == 138
    assert sorted(ann.rare.tolist()) == list(metadata.hicodet_rare())
    # raw file values 320, 306, 359, 349 (1-based inclusive) -> continuous
    np.testing.assert_array_equal(ann.boxes_h[0][0], [319, 305, 359, 349])
    np.testing.assert_array_equal(ann.sizes[0], [640, 427])
    assert ann.file_names[0] == "HICO_test2015_00000001.jpg"
    assert set(np.concatenate(ann.hoi).tolist()) == set(range(600))


def test_real_alphabetical_file_matches_coco80_file(shared_dir: Path) -> None:
    a = load_hicodet_annotations(shared_dir / "data" / "hicodet" / "instances_test2015.json")
    b = load_hicodet_annotations(
        shared_dir / "data" / "hicodet" / "instances_test2015_hicoorder.json")
    assert a.file_names == b.file_names
    for field in ("boxes_h", "boxes_o", "hoi", "objects", "verbs"):
        assert all(np.array_equal(x, y) for x, y in zip(getattr(a, field), getattr(b, field),
                                                         strict=True)), field
    np.testing.assert_array_equal(a.rare, b.rare)


def test_real_vcoco_files(shared_dir: Path) -> None:
    path = shared_dir / "data" / "vcoco" / "instances_vcoco_test.json"
    ann = load_vcoco_annotations(path)
    raw = json.loads(path.read_text())
    assert ann.dataset == "vcoco" and len(ann) == 4946 and ann.num_pairs == 12402
    np.testing.assert_array_equal(ann.image_ids, raw["images"])
    # object index k of the file (background first) is COCO-80 id k - 1
    first = raw["annotations"][1]
    np.testing.assert_array_equal(ann.objects[1], np.array(first["objects"]) - 1)
    names = [raw["objects"][k].replace(" ", "_") for k in first["objects"]]
    assert [metadata.COCO_OBJECTS[o] for o in ann.objects[1]] == names
    np.testing.assert_array_equal(ann.boxes_h[1], first["boxes_h"])   # unchanged
    np.testing.assert_array_equal(ann.hoi[1], first["actions"])
    gt = vcoco_ground_truth(ann)
    assert not gt.complete and gt.notes
    # every pair is one role box of its person; no person has a role twice
    assert sum(int((~np.isnan(r[..., 0])).sum()) for r in gt.role_boxes) == ann.num_pairs
    for split in ("train", "val", "trainval"):
        assert len(load_vcoco_annotations(path.with_name(f"instances_vcoco_{split}.json")))


# ----------------------------------------------------------------------------- synthetic files

@pytest.mark.parametrize("order", ["coco80", "hico"])
def test_fredzzhang_both_object_orders(tmp_path: Path, order: str) -> None:
    ann = load_hicodet_annotations(write(tmp_path, "ann.json", fredzzhang(order)))
    check_synthetic(ann)
    np.testing.assert_array_equal(ann.sizes, [[640, 480], [320, 240]])
    np.testing.assert_array_equal(ann.rare, [RIDE_BICYCLE])
    assert ann.source.endswith("ann.json")


@pytest.mark.parametrize("with_hoi_id", [True, False])
def test_qpic_format(tmp_path: Path, with_hoi_id: bool) -> None:
    ann = load_hicodet_annotations(write(tmp_path, "test_hico.json", qpic(with_hoi_id)))
    check_synthetic(ann)
    assert ann.rare is None
    np.testing.assert_array_equal(ann.sizes, 0)


def test_fredzzhang_without_optional_fields(tmp_path: Path) -> None:
    data = fredzzhang()
    for key in ("empty", "rare", "correspondence", "verbs"):
        del data[key]
    ann = load_hicodet_annotations(write(tmp_path, "a.json", data))
    np.testing.assert_array_equal(ann.empty, [1])          # computed
    assert ann.rare is None


def vcoco_file() -> dict:
    objects = ["background", *(o.replace("_", " ") for o in metadata.COCO_OBJECTS)]
    eat_obj, eat_instr = (metadata.VCOCO_ACTIONS.index(n) for n in ("eat obj", "eat instr"))
    return {
        "images": [42, 43],
        "classes": list(metadata.VCOCO_ACTIONS),
        "objects": objects,
        "action_to_object": [[] for _ in range(24)],
        "annotations": [
            {"file_name": "COCO_val2014_000000000042.jpg",
             "boxes_h": [[10.5, 10, 50, 90], [10.5, 10, 50, 90], [60, 10, 90, 90]],
             "boxes_o": [[40, 40, 60, 60], [45, 41, 47, 60], [70, 50, 80, 60]],
             "actions": [eat_obj, eat_instr, eat_obj],
             "objects": [54, 43, 54]},          # pizza (coco80 53), fork (coco80 42)
            {"file_name": "COCO_val2014_000000000043.jpg", "boxes_h": [], "boxes_o": [],
             "actions": [], "objects": []},
        ],
    }


def test_vcoco_synthetic_and_ground_truth(tmp_path: Path) -> None:
    ann = load_vcoco_annotations(write(tmp_path, "v.json", vcoco_file()))
    assert [metadata.COCO_OBJECTS[o] for o in ann.objects[0]] == ["pizza", "fork", "pizza"]
    np.testing.assert_array_equal(ann.boxes_h[0][0], [10.5, 10, 50, 90])
    np.testing.assert_array_equal(ann.verbs[0], ann.hoi[0])
    np.testing.assert_array_equal(ann.empty, [1])
    gt = vcoco_ground_truth(ann)
    eat = VCOCO_AGENT_ACTIONS.index("eat")
    eat_obj, eat_instr = (metadata.VCOCO_ACTIONS.index(n) for n in ("eat obj", "eat instr"))
    assert gt.person_boxes[0].shape == (2, 4) and gt.person_boxes[1].shape == (0, 4)
    np.testing.assert_array_equal(gt.agent_labels[0][:, eat], [1, 1])
    assert gt.agent_labels[0].sum() == 2
    np.testing.assert_array_equal(gt.role_boxes[0][0, eat_instr], [45, 41, 47, 60])
    assert np.isnan(gt.role_boxes[0][1, eat_instr]).all()     # second person: no instrument
    np.testing.assert_array_equal(gt.role_boxes[0][1, eat_obj], [70, 50, 80, 60])
    assert VCOCO_ROLE_ACTION[eat_obj] == VCOCO_ROLE_ACTION[eat_instr] == eat


def test_vcoco_official_layout(tmp_path: Path) -> None:
    """Persons not in V-COCO are ignored (-1); role object 0 = not visible; COCO boxes are
    cleaned like vsrl_eval (x2 = x + w - 1, clipped) and stored continuous (+1)."""
    coco = {
        "categories": [{"id": 1, "name": "person"}, {"id": 53, "name": "pizza"}],
        "images": [{"id": 7, "width": 100, "height": 80, "file_name": "img7.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 30, 60], "area": 9,
             "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [50, 5, 60, 90], "area": 9,
             "iscrowd": 0},                                   # clipped to 99, 79
            {"id": 3, "image_id": 7, "category_id": 53, "bbox": [20, 40, 10, 10], "area": 9,
             "iscrowd": 0},
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 9,
             "iscrowd": 0},                                   # person not in V-COCO
        ],
    }
    vsrl = [
        {"action_name": "eat", "role_name": ["agent", "obj", "instr"], "image_id": [7, 7],
         "ann_id": [1, 2], "label": [1, 0], "role_object_id": [1, 2, 3, 0, 0, 0]},
        {"action_name": "stand", "role_name": ["agent"], "image_id": [7, 7],
         "ann_id": [1, 2], "label": [1, 1], "role_object_id": [1, 2]},
    ]
    gt = load_vcoco_official(write(tmp_path, "vcoco_test.json", vsrl),
                             write(tmp_path, "coco.json", coco))
    eat = VCOCO_AGENT_ACTIONS.index("eat")
    eat_obj, eat_instr = (metadata.VCOCO_ACTIONS.index(n) for n in ("eat obj", "eat instr"))
    assert gt.complete and gt.file_names == ["img7.jpg"]
    np.testing.assert_array_equal(gt.person_boxes[0],
                                  [[10, 10, 40, 70], [50, 5, 100, 80], [0, 0, 5, 5]])
    np.testing.assert_array_equal(gt.agent_labels[0][:, eat], [1, 0, -1])
    assert (gt.agent_labels[0][2] == -1).all()
    np.testing.assert_array_equal(gt.role_boxes[0][0, eat_obj], [20, 40, 30, 50])
    assert np.isnan(gt.role_boxes[0][0, eat_instr]).all()


# ----------------------------------------------------------------------------- errors

def expect_error(path: Path, *fragments: str) -> None:
    loader = load_vcoco_annotations if "vcoco" in path.name else load_hicodet_annotations
    with pytest.raises(ValueError) as info:
        loader(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"filenames": [')
    expect_error(path, "not valid JSON")


def test_fredzzhang_errors(tmp_path: Path) -> None:
    data = fredzzhang()
    del data["annotation"][0]["verb"]
    expect_error(write(tmp_path, "a.json", data), "image 0 (a.jpg)", "'verb'")

    data = fredzzhang()
    data["annotation"][0]["hoi"].append(3)
    expect_error(write(tmp_path, "b.json", data), "image 0 (a.jpg)", "differ in length")

    data = fredzzhang()
    data["annotation"][0]["hoi"][1] = 600
    expect_error(write(tmp_path, "c.json", data), "image 0 (a.jpg)", "'hoi'", "600")

    data = fredzzhang()
    data["annotation"][0]["object"][0] = 0      # person, but HOI 'ride bicycle'
    expect_error(write(tmp_path, "d.json", data), "image 0 (a.jpg)", "'object'")

    data = fredzzhang()
    data["annotation"][0]["boxes_o"][0] = [30, 40, 20, 100]
    expect_error(write(tmp_path, "e.json", data), "image 0 (a.jpg)", "'boxes_o'", "x2 < x1")

    data = fredzzhang()
    data["annotation"][0]["boxes_h"][1] = [1, 2, 3]
    expect_error(write(tmp_path, "f.json", data), "image 0 (a.jpg)", "'boxes_h'")

    data = fredzzhang()
    data["size"].pop()
    expect_error(write(tmp_path, "g.json", data), "'size'", "differ in length")

    data = fredzzhang()
    del data["filenames"]
    expect_error(write(tmp_path, "h.json", data), "missing field 'filenames'")

    data = fredzzhang("hico")
    data["objects"][0] = "spaceship"
    expect_error(write(tmp_path, "i.json", data), "'objects'", "spaceship")

    data = fredzzhang()
    data["annotation"][0]["verb"][0] = 1.5
    expect_error(write(tmp_path, "j.json", data), "image 0 (a.jpg)", "'verb'")

    data = fredzzhang()
    data["annotation"][0]["hoi"][0] = str(RIDE_BICYCLE)    # numbers as strings
    expect_error(write(tmp_path, "k.json", data), "image 0 (a.jpg)", "'hoi'")


def test_qpic_errors(tmp_path: Path) -> None:
    data = qpic()
    data[0]["hoi_annotation"][1]["object_id"] = 9
    expect_error(write(tmp_path, "a.json", data), "image 0 (a.jpg)", "object_id")

    data = qpic()
    data[0]["annotations"][1]["category_id"] = 12          # not a COCO category id
    expect_error(write(tmp_path, "b.json", data), "image 0 (a.jpg)", "category_id")

    data = qpic()
    data[0]["hoi_annotation"][0]["hoi_category_id"] = HOLD_CUP + 1   # inconsistent
    expect_error(write(tmp_path, "c.json", data), "image 0 (a.jpg)", "'object'")

    data = qpic()
    del data[0]["hoi_annotation"]
    expect_error(write(tmp_path, "d.json", data), "image 0 (a.jpg)", "'hoi_annotation'")

    data = qpic()
    data[0]["annotations"][0]["bbox"] = [1, 2]
    expect_error(write(tmp_path, "e.json", data), "image 0 (a.jpg)", "bbox")


def test_vcoco_errors(tmp_path: Path) -> None:
    data = vcoco_file()
    data["annotations"][0]["objects"][0] = 0
    expect_error(write(tmp_path, "vcoco_a.json", data), "image 0", "background")

    data = vcoco_file()
    data["annotations"][0]["actions"][0] = 24
    expect_error(write(tmp_path, "vcoco_b.json", data), "image 0", "'actions'")

    data = vcoco_file()
    data["objects"] = data["objects"][1:]
    expect_error(write(tmp_path, "vcoco_c.json", data), "'objects'")

    data = vcoco_file()
    del data["annotations"][1]["boxes_o"]
    expect_error(write(tmp_path, "vcoco_d.json", data), "image 1", "'boxes_o'")

"""V-COCO agent / role AP (vsrl_eval semantics): hand-computed scenarios 1 and 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip4hoi.data import metadata
from clip4hoi.data.annotations import (
    VCOCO_AGENT_ACTIONS,
    VCOCO_ROLE_ACTION,
    load_vcoco_annotations,
)
from clip4hoi.data.vcoco_official import VCOCOGroundTruth, vcoco_ground_truth
from clip4hoi.evaluation import (
    HOIDetections,
    evaluate_vcoco,
    evaluate_vcoco_files,
    format_vcoco_table,
    read_detections,
    vcoco_result_to_json,
    write_detections,
)
from clip4hoi.evaluation.vcoco import voc_ap

EAT = VCOCO_AGENT_ACTIONS.index("eat")
EAT_OBJ = metadata.VCOCO_ACTIONS.index("eat obj")
EAT_INSTR = metadata.VCOCO_ACTIONS.index("eat instr")
NAN4 = [np.nan] * 4

P0 = [0.0, 0.0, 100.0, 200.0]       # eats; pizza visible, instrument not visible
P1 = [300.0, 0.0, 400.0, 200.0]     # COCO person not annotated in V-COCO (ignored)
P2 = [150.0, 0.0, 250.0, 200.0]     # annotated, does nothing
PIZZA = [50.0, 50.0, 80.0, 80.0]
ELSEWHERE = [400.0, 300.0, 450.0, 350.0]


def ground_truth() -> VCOCOGroundTruth:
    labels = np.zeros((3, len(VCOCO_AGENT_ACTIONS)), dtype=np.int8)
    labels[0, EAT] = 1
    labels[1] = -1
    roles = np.full((3, 24, 4), np.nan)
    roles[0, EAT_OBJ] = PIZZA
    return make_gt([np.array([P0, P1, P2])], [labels], [roles])


def make_gt(persons: list[np.ndarray], labels: list[np.ndarray], roles: list[np.ndarray]
            ) -> VCOCOGroundTruth:
    n = len(persons)
    return VCOCOGroundTruth(source="<test>", file_names=[f"{i}.jpg" for i in range(n)],
                            image_ids=np.arange(1, n + 1), sizes=np.zeros((n, 2), np.int64),
                            person_boxes=persons, agent_labels=labels, role_boxes=roles,
                            role_objects=[np.full(r.shape[:2], -1) for r in roles])


def idx(box: list[float]) -> list[float]:
    return [box[0], box[1], box[2] - 1, box[3] - 1]


def dets(rows: list[tuple[int, list[float], list[float], int, float]], num_images: int
         ) -> HOIDetections:
    """(image, continuous human box, continuous role box or NAN4, action-role, score)."""
    return HOIDetections(
        image=np.array([r[0] for r in rows], dtype=np.int64),
        boxes_h=np.array([idx(r[1]) for r in rows], dtype=np.float64),
        boxes_o=np.array([idx(r[2]) for r in rows], dtype=np.float64),
        labels=np.array([r[3] for r in rows], dtype=np.int64),
        scores=np.array([r[4] for r in rows], dtype=np.float64), num_images=num_images)


def test_voc_ap_every_point() -> None:
    # rec 0.5 at precision 1, then 1.0 at precision 2/3
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == \
        pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_ap(np.array([]), np.array([])) == 0.0


def test_invisible_role_object_scenarios() -> None:
    """'eat instr' of P0: the instrument is not visible."""
    det = dets([
        (0, P0, ELSEWHERE, EAT_INSTR, 0.9),   # predicts an instrument box
        (0, P0, NAN4, EAT_INSTR, 0.8),        # predicts "no instrument"
        (0, P1, NAN4, EAT_INSTR, 0.95),       # on a person V-COCO did not annotate
        (0, P2, NAN4, EAT_INSTR, 0.85),       # on a person who is not eating
    ], 1)
    res = evaluate_vcoco(det, ground_truth())
    # scenario 1: 0.9 FP (a box where none is visible), 0.85 FP, 0.8 TP -> AP 1/3
    assert res.role_ap_s1[EAT_INSTR] == pytest.approx(1 / 3)
    # scenario 2: any role box is fine: 0.9 TP, 0.85 FP, 0.8 duplicate -> AP 1
    # (the ignored 0.95 detection would make it 0.5 if it counted as a false positive)
    assert res.role_ap_s2[EAT_INSTR] == pytest.approx(1.0)
    assert res.role_npos[EAT_INSTR] == 1 and res.agent_npos[EAT] == 1
    assert res.role_ap_s1[EAT_OBJ] == 0.0          # ground truth but no detection


def test_visible_role_object_needs_a_matching_box() -> None:
    det = dets([
        (0, P0, ELSEWHERE, EAT_OBJ, 0.9),     # wrong pizza box: FP in both scenarios
        (0, [1, 2, 101, 199], [51, 50, 80, 79], EAT_OBJ, 0.7),   # right boxes: TP
        (0, P0, NAN4, EAT_OBJ, 0.6),          # no box although the pizza is visible: FP
    ], 1)
    res = evaluate_vcoco(det, ground_truth())
    assert res.role_ap_s1[EAT_OBJ] == pytest.approx(0.5)
    assert res.role_ap_s2[EAT_OBJ] == pytest.approx(0.5)
    # role classes without ground truth are NaN, those with ground truth and no detection 0
    assert np.isnan(res.role_ap_s1[metadata.VCOCO_ACTIONS.index("hold obj")])


def test_agent_ap_and_merging_rows_of_one_person() -> None:
    gt = ground_truth()
    two = make_gt([gt.person_boxes[0], np.array([P0])],
                  [gt.agent_labels[0], gt.agent_labels[0][:1]],
                  [gt.role_boxes[0], gt.role_boxes[0][:1]])
    det = dets([(0, P0, PIZZA, EAT_OBJ, 0.9), (0, P0, NAN4, EAT_INSTR, 0.8),
                (1, P0, PIZZA, EAT_OBJ, 0.7)], 2)
    # per person: the rows of P0 in image 0 are one entry (agent score 0.9): 2 TPs
    assert evaluate_vcoco(det, two, rows="per-person").agent_ap[EAT] == pytest.approx(1.0)
    # every row on its own (the default): 0.9 TP, 0.8 duplicate, 0.7 TP
    assert evaluate_vcoco(det, two).agent_ap[EAT] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert evaluate_vcoco(det, two).agent_npos[EAT] == 2
    with pytest.raises(ValueError, match="per-row, per-person"):
        evaluate_vcoco(det, two, rows="merged")


def test_detections_without_ground_truth_person_are_false_positives() -> None:
    gt = ground_truth()
    two = make_gt([gt.person_boxes[0], np.zeros((0, 4))],
                  [gt.agent_labels[0], np.zeros((0, 21), np.int8)],
                  [gt.role_boxes[0], np.zeros((0, 24, 4))])
    det = dets([(1, P0, PIZZA, EAT_OBJ, 0.9), (0, P0, PIZZA, EAT_OBJ, 0.5)], 2)
    res = evaluate_vcoco(det, two)
    assert res.role_ap_s1[EAT_OBJ] == pytest.approx(0.5)
    assert res.agent_ap[EAT] == pytest.approx(0.5)


def test_fredzzhang_files_perfect_detections(shared_dir: Path, tmp_path: Path) -> None:
    path = shared_dir / "data" / "vcoco" / "instances_vcoco_test.json"
    ann = load_vcoco_annotations(path)
    gt = vcoco_ground_truth(ann)
    rows = []   # one row per person and action-role of an action it does
    for i in range(len(gt)):
        for p, box in enumerate(gt.person_boxes[i]):
            for k in range(24):
                if gt.agent_labels[i][p, VCOCO_ROLE_ACTION[k]] == 1:
                    rows.append((i, box.tolist(), gt.role_boxes[i][p, k].tolist(), k, 1.0))
    # per person: the rows of one person and action are one agent detection (per row, the
    # second action-role of eat, hit, cut would be a duplicate agent detection)
    res = evaluate_vcoco(dets(rows, len(gt)), ann, rows="per-person")
    assert evaluate_vcoco(dets(rows, len(gt)), ann).maps["agent"] < 1.0
    assert res.maps == {"agent": 1.0, "agent_vsrl_eval": None, "role_scenario_1": 1.0,
                        "role_scenario_2": 1.0, "role_scenario_1_with_point": None,
                        "role_scenario_2_with_point": None}
    assert not res.complete and "NOT the official V-COCO protocol" in format_vcoco_table(res)
    # the pairs alone miss the rows of invisible roles: scenario 1 and 2 both lose them
    pairs = [(i, h.tolist(), o.tolist(), int(k), 1.0) for i in range(len(ann))
             for h, o, k in zip(ann.boxes_h[i], ann.boxes_o[i], ann.hoi[i], strict=True)]
    res_pairs = evaluate_vcoco(dets(pairs, len(ann)), ann)
    assert res_pairs.role_ap_s2[EAT_INSTR] < 1.0 and res_pairs.role_ap_s2[EAT_OBJ] < 1.0
    # through DETS.json with "actions" and null object boxes
    det = dets(rows[:50], len(gt))
    dets_path = write_detections(tmp_path / "v.json", det, ann)
    raw = json.loads(dets_path.read_text())
    assert "actions" in raw["images"][0]
    back = read_detections(dets_path, ann)
    np.testing.assert_array_equal(back.boxes_o, det.boxes_o)      # NaN rows survive
    out = vcoco_result_to_json(evaluate_vcoco_files(path, dets_path))
    assert set(out["map"]) == {"agent", "agent_vsrl_eval", "role_scenario_1",
                               "role_scenario_2", "role_scenario_1_with_point",
                               "role_scenario_2_with_point"}
    assert out["protocol"].startswith("per-pair") and "NOT" in out["warning"]
    assert len(out["roles"]) == 24 and len(out["agent"]) == 21
    json.dumps(out, allow_nan=False)


def test_vcoco_detection_file_validation(tmp_path: Path) -> None:
    from clip4hoi.evaluation import parse_records

    gt_file = tmp_path / "instances_vcoco_x.json"
    gt_file.write_text(json.dumps({
        "images": [1], "classes": list(metadata.VCOCO_ACTIONS),
        "objects": ["background", *(o.replace("_", " ") for o in metadata.COCO_OBJECTS)],
        "annotations": [{"file_name": "a.jpg", "boxes_h": [P0], "boxes_o": [PIZZA],
                         "actions": [EAT_OBJ], "objects": [54]}]}))
    ann = load_vcoco_annotations(gt_file)
    record = {"file_name": "a.jpg", "human_boxes": [idx(P0)], "object_boxes": [None],
              "actions": [EAT_INSTR], "scores": [0.5]}
    det = parse_records({"images": [record]}, ann)
    assert np.isnan(det.boxes_o).all()
    for change, what in (({"actions": [29]}, "'actions'"),      # 24..28: point, stand, ...
                         ({"object_boxes": [[1, 2, 0, 5]]}, "'object_boxes'"),
                         ({"scores": [None]}, "'scores'")):
        with pytest.raises(ValueError, match=what):
            parse_records({"images": [{**record, **change}]}, ann, source="x.json")

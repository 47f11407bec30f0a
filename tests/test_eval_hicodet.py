"""HICO-DET evaluation: hand-computed cases, conventions, detection files, MATLAB export."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from clip4hoi.data import metadata
from clip4hoi.data.annotations import HOIAnnotations, load_hicodet_annotations
from clip4hoi.evaluation import (
    HOIDetections,
    detections_from_ground_truth,
    evaluate_files,
    evaluate_hicodet,
    export_matlab,
    format_table,
    load_matlab_export,
    matlab_colon,
    read_detections,
    records_from_outputs,
    result_to_json,
    write_detections,
)
from clip4hoi.evaluation.hicodet import THRESHOLDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_eval import baseline_evaluate, synthetic_detections

CLASSES = metadata.hicodet_classes()
BICYCLE = metadata.COCO_OBJECTS.index("bicycle")
K, K2, K3 = (int(k) for k in np.flatnonzero(np.asarray(CLASSES.objects) == BICYCLE)[:3])


def make_ann(images: list[list[tuple[list[float], list[float], int]]],
             rare: list[int] | None = None) -> HOIAnnotations:
    """Annotations from (continuous human box, object box, HOI) triplets per image."""
    def arr(rows: list, i: int) -> np.ndarray:
        return np.array([r[i] for r in rows], dtype=np.float64).reshape(-1, 4)
    return HOIAnnotations(
        source="<test>", file_names=[f"{i}.jpg" for i in range(len(images))],
        sizes=np.tile([640, 480], (len(images), 1)),
        boxes_h=[arr(rows, 0) for rows in images], boxes_o=[arr(rows, 1) for rows in images],
        hoi=[np.array([r[2] for r in rows], dtype=np.int64) for rows in images],
        objects=[np.array([CLASSES.objects[r[2]] for r in rows], dtype=np.int64)
                 for rows in images],
        verbs=[np.array([CLASSES.verb_ids[r[2]] for r in rows], dtype=np.int64)
               for rows in images],
        empty=np.array([i for i, rows in enumerate(images) if not rows], dtype=np.int64),
        rare=None if rare is None else np.asarray(rare))


def idx(box: list[float]) -> list[float]:
    """Continuous box -> 0-based inclusive indices, as exported."""
    return [box[0], box[1], box[2] - 1, box[3] - 1]


def make_dets(rows: list[tuple[int, list[float], list[float], int, float]],
              num_images: int) -> HOIDetections:
    """Detections from (image, continuous human box, object box, HOI, score) rows."""
    return HOIDetections(
        image=np.array([r[0] for r in rows], dtype=np.int64),
        boxes_h=np.array([idx(r[1]) for r in rows], dtype=np.float64).reshape(-1, 4),
        boxes_o=np.array([idx(r[2]) for r in rows], dtype=np.float64).reshape(-1, 4),
        labels=np.array([r[3] for r in rows], dtype=np.int64),
        scores=np.array([r[4] for r in rows], dtype=np.float64), num_images=num_images)


def matlab_ap(precisions: list[float]) -> float:
    """``ap = ap + p / 11`` over the 11 thresholds, in MATLAB's order."""
    ap = 0.0
    for p in precisions:
        ap = ap + p / 11
    return ap


A = [0.0, 0.0, 100.0, 100.0]
B = [200.0, 200.0, 300.0, 260.0]
C = [50.0, 300.0, 150.0, 400.0]
FAR = [500.0, 400.0, 520.0, 420.0]


# ----------------------------------------------------------------------------- thresholds

def test_matlab_thresholds_are_built_like_the_colon_operator() -> None:
    t = THRESHOLDS["matlab"]
    np.testing.assert_array_equal(t, matlab_colon(0.0, 0.1, 1.0))
    assert t.tolist()[3] == 0.30000000000000004 and t[3] > 0.3
    assert t[6] == 0.6 and t[7] == 0.7 and t[4] == 0.4 and t[10] == 1.0
    assert t.tolist()[1:3] == [0.1, 0.2] and t.tolist()[8:10] == [0.8, 0.9]
    numpy_t = THRESHOLDS["numpy"]
    assert numpy_t[6] == 0.6000000000000001 > 0.6 and numpy_t[7] == 0.7000000000000001 > 0.7
    assert t[3] > 3 / 10 and t[6] <= 6 / 10 and t[7] <= 7 / 10
    np.testing.assert_array_equal(matlab_colon(0.0, 0.3, 1.0)[-1], 0.8999999999999999)


def test_recall_exactly_on_03_06_07() -> None:
    """npos = 10 and recall steps landing on 0.3, 0.6 and 0.7 exactly."""
    ann = make_ann([[(A, A, K)] for _ in range(10)])
    pattern = "TTTFFFTTTFT"        # descending scores
    rows, image = [], 0
    for n, flag in enumerate(pattern):
        score = 1.0 - n / 100
        if flag == "T":
            rows.append((image, A, A, K, score))
            image += 1
        else:
            rows.append((9, FAR, FAR, K, score))
    det = make_dets(rows, 10)
    res = evaluate_hicodet(det, ann)
    third = 6 / 9                  # best precision once recall exceeds 0.3
    expected = matlab_ap([1, 1, 1, third, third, third, third, 7 / 11, 0, 0, 0])
    assert res.ap[K] == expected
    res_np = evaluate_hicodet(det, ann, thresholds="numpy")
    assert res_np.ap[K] == matlab_ap([1, 1, 1, third, third, third, 7 / 11, 0, 0, 0, 0])
    assert res.recall[K] == 0.7 and res.npos[K] == 10 and res.num_detections[K] == 11


# ----------------------------------------------------------------------------- hand-computed

def scenario() -> tuple[HOIAnnotations, HOIDetections]:
    """Image 0: pairs A (K) and B (K, missed); image 1: C (K), B (K2), A (K3); image 2: no
    annotation. Class K: TP, duplicate, FP on the empty image, TP; K2 gets a wrong-class
    detection on A's boxes; K3 gets nothing."""
    ann = make_ann([[(A, A, K), (B, B, K)], [(C, C, K), (B, B, K2), (A, A, K3)], []])
    det = make_dets([
        (0, A, A, K, 0.9),
        (0, [1, 0, 100, 100], A, K, 0.8),      # duplicate of A
        (2, A, A, K, 0.7),                     # image without annotation
        (1, C, C, K, 0.6),
        (0, A, A, K2, 0.95),                   # right boxes, wrong class
    ], 3)
    return ann, det


def test_duplicates_miss_wrong_class_empty_image_no_detections() -> None:
    ann, det = scenario()
    res = evaluate_hicodet(det, ann)
    # K: rec 1/3 1/3 1/3 2/3, prec 1 .5 1/3 .5 -> t <= 0.3: 1; 0.4..0.6: 0.5; above: 0
    assert res.ap[K] == matlab_ap([1] * 4 + [0.5] * 3 + [0] * 4)
    assert res.recall[K] == 2 / 3 and res.npos[K] == 3 and res.num_detections[K] == 4
    assert res.ap[K2] == 0.0 and res.recall[K2] == 0.0 and res.num_detections[K2] == 1
    assert res.ap[K3] == 0.0 and res.num_detections[K3] == 0 and res.npos[K3] == 1
    assert np.isnan(res.ap).sum() == 597             # classes without ground truth
    assert res.maps["full"] == pytest.approx(res.ap[K] / 3)


def test_known_object_and_skip_empty_drop_the_empty_image() -> None:
    ann, det = scenario()
    expected = matlab_ap([1] * 4 + [2 / 3] * 3 + [0] * 4)   # TP, dup, TP
    assert evaluate_hicodet(det, ann, known_object=True).ap[K] == expected
    assert evaluate_hicodet(det, ann, skip_empty=True).ap[K] == expected
    ko = evaluate_hicodet(det, ann, known_object=True)
    assert ko.num_detections[K2] == 1                       # image 0 has a bicycle
    # an object absent from the image: the detection is dropped, not a false positive
    cup = int(np.flatnonzero(np.asarray(CLASSES.objects) == metadata.COCO_OBJECTS.index(
        "cup"))[0])
    ann2 = make_ann([[(A, A, K)], [(A, A, cup)]])
    det2 = make_dets([(0, A, A, cup, 0.9), (1, A, A, cup, 0.5)], 2)
    assert evaluate_hicodet(det2, ann2).ap[cup] == matlab_ap([0.5] * 11)
    assert evaluate_hicodet(det2, ann2, known_object=True).ap[cup] == matlab_ap([1.0] * 11)


def test_tied_scores_keep_input_order() -> None:
    ann = make_ann([[(A, A, K)], [(B, B, K)]])
    bad, good = (0, FAR, FAR, K, 0.5), (0, A, A, K, 0.5)
    assert evaluate_hicodet(make_dets([bad, good], 2), ann).ap[K] == \
        matlab_ap([0.5] * 6 + [0] * 5)
    assert evaluate_hicodet(make_dets([good, bad], 2), ann).ap[K] == \
        matlab_ap([1.0] * 6 + [0] * 5)
    # across images: annotation order decides, whatever the row order
    fp_img0, tp_img1 = (0, FAR, FAR, K, 0.5), (1, B, B, K, 0.5)
    for rows in ([fp_img0, tp_img1], [tp_img1, fp_img0]):
        assert evaluate_hicodet(make_dets(rows, 2), ann).ap[K] == \
            matlab_ap([0.5] * 6 + [0] * 5)


def test_no_fallback_to_the_next_best_pair() -> None:
    a2 = [0.0, 0.0, 100.0, 120.0]
    ann = make_ann([[(A, A, K), (a2, a2, K)]])
    near = [0.0, 0.0, 100.0, 105.0]            # IoU 0.95 with A (used), 0.875 with a2
    det = make_dets([(0, A, A, K, 0.9), (0, near, near, K, 0.8)], 1)
    assert evaluate_hicodet(det, ann).ap[K] == matlab_ap([1.0] * 6 + [0] * 5)
    # identical ground-truth pairs: the first one is always the best, so the second
    # identical detection is a false positive
    ann_same = make_ann([[(A, A, K), (A, A, K)]])
    det_same = make_dets([(0, A, A, K, 0.9), (0, A, A, K, 0.8)], 1)
    assert evaluate_hicodet(det_same, ann_same).recall[K] == 0.5


def test_offset_strict_and_pocket_conventions() -> None:
    gt = [0.0, 0.0, 10.0, 10.0]
    half = [0.0, 0.0, 5.0, 10.0]               # IoU exactly 0.5
    ann = make_ann([[(gt, gt, K)], []])
    det = make_dets([(0, half, half, K, 0.9), (1, gt, gt, K, 0.1)], 2)
    assert evaluate_hicodet(det, ann).ap[K] == matlab_ap([1.0] * 11)
    assert evaluate_hicodet(det, ann, strict=True).ap[K] == 0.0
    assert evaluate_hicodet(det, ann, offset=0).ap[K] == 0.0   # IoU 36/114 without +1
    assert evaluate_hicodet(det, ann, preset="pocket").ap[K] == 0.0
    pocket = evaluate_hicodet(det, ann, preset="pocket", strict=False)
    assert pocket.ap[K] == matlab_ap([1.0] * 11) and pocket.num_detections[K] == 1
    with pytest.raises(TypeError, match="unknown evaluation option"):
        evaluate_hicodet(det, ann, offest=1)
    with pytest.raises(ValueError, match="thresholds"):
        evaluate_hicodet(det, ann, thresholds="every-point")


def test_top_k_per_image() -> None:
    ann = make_ann([[(A, A, K)]])
    det = make_dets([(0, FAR, FAR, K, 0.9), (0, FAR, FAR, K2, 0.8), (0, A, A, K, 0.7)], 1)
    assert evaluate_hicodet(det, ann, top_k=2).recall[K] == 0.0
    assert evaluate_hicodet(det, ann, top_k=3).recall[K] == 1.0
    assert evaluate_hicodet(det, ann, preset="genvlkt").num_detections[K] == 2


def test_rare_groups_and_zero_shot() -> None:
    ann, det = scenario()
    res = evaluate_hicodet(det, ann, zero_shot="rf_uc")
    np.testing.assert_array_equal(res.rare, sorted(metadata.hicodet_rare()))
    assert set(res.maps) == {"full", "rare", "non_rare", "unseen", "seen"}
    np.testing.assert_array_equal(res.unseen, metadata.zero_shot_unseen("rf_uc"))
    ann.rare = np.array([K])
    res = evaluate_hicodet(det, ann)
    assert res.maps["rare"] == res.ap[K] and K not in res.non_rare


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_per_detection_loop(seed: int) -> None:
    """Random annotations and detections with many ties: same AP as the reference loop."""
    rng = np.random.default_rng(seed)
    classes = [K, K2, K3]
    images = []
    for _ in range(30):
        rows = []
        for _ in range(rng.integers(0, 4)):
            h, o = rng.uniform(0, 200, 2), rng.uniform(0, 200, 2)
            rows.append((np.r_[h, np.add(h, [40, 60])].tolist(), np.r_[o, o + 30].tolist(),
                         int(rng.choice(classes))))
        images.append(rows)
    ann = make_ann(images)
    det = synthetic_detections(ann, per_image=20, seed=seed)
    det = det.select(np.isin(det.labels, classes) | (rng.random(len(det)) < 0.05))
    det.scores = np.round(det.scores, 1)        # many ties
    np.testing.assert_array_equal(evaluate_hicodet(det, ann).ap, baseline_evaluate(det, ann))


# ----------------------------------------------------------------------------- real file

def test_ground_truth_as_detections_gives_100(shared_dir: Path, tmp_path: Path) -> None:
    path = shared_dir / "data" / "hicodet" / "instances_test2015.json"
    ann = load_hicodet_annotations(path)
    det = detections_from_ground_truth(ann)
    for kwargs in ({}, {"known_object": True}, {"zero_shot": "uo"}, {"preset": "pocket"}):
        res = evaluate_hicodet(det, ann, **kwargs)
        for name, value in res.maps.items():
            assert round(100 * value, 2) == 100.0, (kwargs, name)
    dets_path = write_detections(tmp_path / "DETS.json", det, ann)
    res = evaluate_files(path, dets_path)
    assert result_to_json(res)["map"] == {"full": 100.0, "rare": 100.0, "non_rare": 100.0}
    # a subset of the real file against the reference loop
    sub = HOIAnnotations(ann.source, ann.file_names[:300], ann.sizes[:300],
                         ann.boxes_h[:300], ann.boxes_o[:300], ann.hoi[:300],
                         ann.objects[:300], ann.verbs[:300], ann.empty[ann.empty < 300],
                         ann.rare)
    syn = synthetic_detections(sub, per_image=40, seed=3)
    np.testing.assert_array_equal(evaluate_hicodet(syn, sub).ap, baseline_evaluate(syn, sub))


# ----------------------------------------------------------------------------- reports

def test_evaluate_files_table_and_json(tmp_path: Path) -> None:
    ann, det = scenario()
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps({
        "filenames": ann.file_names, "size": ann.sizes.tolist(),
        "annotation": [{"boxes_h": np.add(h, [1, 1, 0, 0]).tolist(),
                        "boxes_o": np.add(o, [1, 1, 0, 0]).tolist(), "hoi": k.tolist(),
                        "object": ob.tolist(), "verb": v.tolist()}
                       for h, o, k, ob, v in zip(ann.boxes_h, ann.boxes_o, ann.hoi,
                                                 ann.objects, ann.verbs, strict=True)],
        "objects": list(metadata.COCO_OBJECTS)}))
    write_detections(tmp_path / "DETS.json", det, ann)
    res = evaluate_files(ann_path, tmp_path / "DETS.json", zero_shot="rf_uc",
                         known_object=True, preset="official", offset=1)
    np.testing.assert_array_equal(res.ap, evaluate_hicodet(det, ann, known_object=True,
                                                           zero_shot="rf_uc").ap)
    out = result_to_json(res)
    assert set(out) == {"map", "per_class"} and len(out["per_class"]) == 600
    assert set(out["map"]) == {"full", "rare", "non_rare", "unseen", "seen"}
    entry = out["per_class"][K]
    assert entry["ap"] == pytest.approx(100 * res.ap[K]) and entry["npos"] == 3
    assert out["per_class"][0]["ap"] is None              # no ground truth
    json.dumps(out, allow_nan=False)
    table = format_table(res, per_class=True)
    assert "Known-Object" in table and "Full" in table and "Unseen" in table
    assert "ride bicycle" in table or CLASSES.verbs[K] in table


# ----------------------------------------------------------------------------- DETS.json

def test_detection_file_round_trip_and_outputs(tmp_path: Path) -> None:
    import torch

    ann, det = scenario()
    path = write_detections(tmp_path / "d.json", det, ann)
    back = read_detections(path, ann)
    for field in ("image", "boxes_h", "boxes_o", "labels", "scores"):
        np.testing.assert_array_equal(getattr(back, field), getattr(det.select(
            np.argsort(det.image, kind="stable")), field))
    # model outputs: continuous boxes -> x2 - 1, y2 - 1
    outputs = [{"human_boxes": torch.tensor([[10.0, 20.0, 30.5, 40.0]]),
                "object_boxes": torch.tensor([[0.0, 0.0, 5.0, 6.0]]),
                "hoi": torch.tensor([K]), "scores": torch.tensor([0.25]),
                "objects": torch.tensor([BICYCLE]), "verbs": torch.tensor([0])},
               {"human_boxes": np.zeros((0, 4)), "object_boxes": np.zeros((0, 4)),
                "hoi": np.zeros(0, int), "scores": np.zeros(0)}]
    records = records_from_outputs(["0.jpg", "2.jpg"], outputs)
    assert records[0]["human_boxes"] == [[10.0, 20.0, 29.5, 39.0]]
    assert records[0]["object_boxes"] == [[0.0, 0.0, 4.0, 5.0]]
    assert records[0]["hoi"] == [K] and records[0]["scores"] == [0.25]
    back = read_detections(write_detections(tmp_path / "o.json", records, ann), ann)
    assert len(back) == 1 and back.image.tolist() == [0]


def test_boxes_outside_the_image_are_kept_as_they_are(tmp_path: Path) -> None:
    """Rule: accepted unchanged (the official evaluator does not clip)."""
    ann = make_ann([[([-5.0, -5.0, 700.0, 500.0], A, K)]])     # image is 640 x 480
    records = [{"file_name": "0.jpg", "human_boxes": [[-5.0, -5.0, 699.0, 499.0]],
                "object_boxes": [idx(A)], "hoi": [K], "scores": [0.5]}]
    det = read_detections(write_detections(tmp_path / "d.json", records), ann)
    np.testing.assert_array_equal(det.boxes_h, [[-5, -5, 699, 499]])
    assert evaluate_hicodet(det, ann).ap[K] == matlab_ap([1.0] * 11)


BAD_RECORDS = [
    ({"scores": [float("nan")]}, "'scores'", "finite"),
    ({"scores": [float("inf")]}, "'scores'", "finite"),
    ({"human_boxes": [[10, 10, 5, 20]]}, "'human_boxes'", "x2 < x1"),
    ({"object_boxes": [[10, 10, 20, 5]]}, "'object_boxes'", "y2 < y1"),
    ({"object_boxes": [[10, 10, 20]]}, "'object_boxes'", "[x1, y1, x2, y2]"),
    ({"human_boxes": [["a", 1, 2, 3]]}, "'human_boxes'", "[x1, y1, x2, y2]"),
    ({"hoi": [600]}, "'hoi'", "600"),
    ({"hoi": [1.5]}, "'hoi'", "integer"),
    ({"hoi": [-1]}, "'hoi'", "integer"),
    ({"file_name": "nope.jpg"}, "'nope.jpg'", "not an image"),
    ({"scores": [0.5, 0.4]}, "differ in length", "[1, 1, 1, 2]"),
    ({"hoi": None}, "'hoi'", "missing"),
]


@pytest.mark.parametrize(("change", "field", "what"), BAD_RECORDS)
def test_bad_detection_files(tmp_path: Path, change: dict, field: str, what: str) -> None:
    ann = make_ann([[(A, A, K)], []])
    record = {"file_name": "0.jpg", "human_boxes": [idx(A)], "object_boxes": [idx(A)],
              "hoi": [K], "scores": [0.5]}
    record.update(change)
    if record["hoi"] is None:
        del record["hoi"]
    path = tmp_path / "DETS.json"
    path.write_text(json.dumps({"images": [record]}))
    with pytest.raises(ValueError) as info:
        read_detections(path, ann)
    message = str(info.value)
    assert str(path) in message and field in message and what in message, message
    if "file_name" not in change:
        assert "0.jpg" in message


def test_bad_detection_file_structure(tmp_path: Path) -> None:
    ann = make_ann([[(A, A, K)], []])
    path = tmp_path / "DETS.json"
    record = {"file_name": "0.jpg", "human_boxes": [], "object_boxes": [], "hoi": [],
              "scores": []}
    for content, what in (("{not json", "not valid JSON"),
                          (json.dumps([record]), "top level"),
                          (json.dumps({"images": [record, record]}), "more than once"),
                          (json.dumps({"images": [{"hoi": []}]}), "'file_name'")):
        path.write_text(content)
        with pytest.raises(ValueError) as info:
            read_detections(path, ann)
        assert str(path) in str(info.value) and what in str(info.value), str(info.value)
    path.write_text(json.dumps({"images": [record]}))
    assert len(read_detections(path, ann)) == 0        # images may have no detections


# ----------------------------------------------------------------------------- MATLAB

def test_matlab_export_round_trip(tmp_path: Path) -> None:
    ann, det = scenario()
    paths = export_matlab(det, ann, tmp_path)
    assert [p.name for p in paths] == [f"detections_{o:02d}.mat" for o in range(1, 81)]
    cells = scipy.io.loadmat(tmp_path / f"detections_{BICYCLE + 1:02d}.mat")["all_boxes"]
    bike_hois = np.flatnonzero(np.asarray(CLASSES.objects) == BICYCLE)
    assert cells.dtype == object and cells.shape == (len(bike_hois), 3)
    cell = cells[K - bike_hois[0], 0]                   # class K, image 0: two rows
    np.testing.assert_array_equal(cell, [[*idx(A), *idx(A), 0.9],
                                         [1, 0, 99, 99, *idx(A), 0.8]])
    assert cells[K - bike_hois[0], 1].shape == (1, 9)
    assert cells[K3 - bike_hois[0], 0].shape == (0, 0)  # empty cell
    person = scipy.io.loadmat(tmp_path / "detections_01.mat")["all_boxes"]
    assert person.shape == (int((np.asarray(CLASSES.objects) == 0).sum()), 3)
    back = load_matlab_export(tmp_path, len(ann))
    np.testing.assert_array_equal(evaluate_hicodet(back, ann).ap, evaluate_hicodet(det, ann).ap)

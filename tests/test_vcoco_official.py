"""V-COCO on the official layout (vcoco_SPLIT.json + instances_vcoco_all_2014.json +
vcoco_SPLIT.ids): a synthetic split in that layout with ignored persons, crowds, invisible
roles, point agents, clipped and invalid boxes and heavy score ties, scored by
``clip4hoi eval --vcoco`` and by an independent implementation of ``vsrl_eval.py``'s rules
written for this test; file look-up; tie order; dataset and test loop on official files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from clip4hoi.cli import main
from clip4hoi.data import metadata
from clip4hoi.data.annotations import VCOCO_ROLE_ACTION
from clip4hoi.data.vcoco_official import (
    PER_PAIR_WARNING,
    find_vcoco_files,
    load_vcoco_official,
    training_pairs,
)
from clip4hoi.errors import InputError
from clip4hoi.evaluation.vcoco import descending, evaluate_vcoco_files

# The 26 actions of the official files and their roles, in file order (vcoco_*.json).
ACTIONS = [("hold", ["agent", "obj"]), ("stand", ["agent"]), ("sit", ["agent", "instr"]),
           ("ride", ["agent", "instr"]), ("walk", ["agent"]), ("look", ["agent", "obj"]),
           ("hit", ["agent", "instr", "obj"]), ("eat", ["agent", "obj", "instr"]),
           ("jump", ["agent", "instr"]), ("lay", ["agent", "instr"]),
           ("talk_on_phone", ["agent", "instr"]), ("carry", ["agent", "obj"]),
           ("throw", ["agent", "obj"]), ("catch", ["agent", "obj"]),
           ("cut", ["agent", "instr", "obj"]), ("run", ["agent"]),
           ("work_on_computer", ["agent", "instr"]), ("ski", ["agent", "instr"]),
           ("surf", ["agent", "instr"]), ("skateboard", ["agent", "instr"]),
           ("smile", ["agent"]), ("drink", ["agent", "instr"]), ("kick", ["agent", "obj"]),
           ("point", ["agent", "instr"]), ("read", ["agent", "obj"]),
           ("snowboard", ["agent", "instr"])]
CATEGORIES = [{"id": 1 + i, "name": name.replace("_", " ")}
              for i, name in enumerate(metadata.COCO_OBJECTS)]
SCORES = [0.25, 0.5, 0.75, 0.9]          # few values: many ties


# ----------------------------------------------------------------------------- the files

def make_split(root: Path, seed: int = 0, n_images: int = 24) -> Path:
    """The v-coco repository layout under ``root``; returns ``root / "v-coco"``."""
    rng = np.random.default_rng(seed)
    images, anns, persons_of = [], [], {}
    ann_id = 100
    for i in range(n_images):
        image_id = 5000 + 7 * i
        w, h = int(rng.integers(200, 640)), int(rng.integers(200, 480))
        images.append({"id": image_id, "width": w, "height": h,
                       "file_name": f"COCO_val2014_{image_id:012d}.jpg"})
        persons_of[image_id] = []
        n_persons = 0 if i == 3 else int(rng.integers(1, 6))
        for p in range(n_persons + int(rng.integers(0, 5))):
            is_person = p < n_persons
            x, y = float(rng.uniform(-20, w - 30)), float(rng.uniform(-20, h - 30))
            bw, bh = float(rng.uniform(20, 260)), float(rng.uniform(20, 300))  # may leave
            ann = {"id": ann_id, "image_id": image_id,
                   "category_id": 1 if is_person else int(rng.integers(2, 81)),
                   "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                   "area": bw * bh, "iscrowd": int(is_person and rng.random() < 0.08)}
            if is_person and rng.random() < 0.05:
                ann["area"] = 0                                   # invalid: dropped
            if is_person and rng.random() < 0.05:
                ann["ignore"] = 1                                 # skipped
            anns.append(ann)
            if is_person and not ann["iscrowd"]:
                persons_of[image_id].append(ann)
            ann_id += 1
    valid_ids = {a["id"] for a in anns if a["area"] > 0 and a.get("ignore", 0) != 1}
    objects_of = {im["id"]: [a["id"] for a in anns if a["image_id"] == im["id"]
                             and a["id"] in valid_ids] for im in images}
    annotated = [(a["image_id"], a["id"]) for im in images for a in persons_of[im["id"]]
                 if rng.random() < 0.75]                           # the rest: ignored
    idle = rng.random(len(annotated)) < 0.15                       # annotated, no action
    vsrl = []
    for action, roles in ACTIONS:
        labels = ((rng.random(len(annotated)) < (0.5 if action == "point" else 0.22))
                  & ~idle).astype(int)
        role_ids = np.zeros((len(annotated), len(roles)), dtype=np.int64)
        for j, (image_id, pid) in enumerate(annotated):
            role_ids[j, 0] = pid
            for r in range(1, len(roles)):
                others = [o for o in objects_of[image_id] if o != pid]
                if labels[j] and others and rng.random() < 0.6:      # else not visible
                    role_ids[j, r] = others[int(rng.integers(len(others)))]
        vsrl.append({"action_name": action, "role_name": roles,
                     "image_id": [a for a, _ in annotated], "ann_id": [b for _, b in annotated],
                     "label": labels.tolist(), "role_object_id": role_ids.T.reshape(-1).tolist(),
                     "include": [[] for _ in roles]})
    repo = root / "v-coco"
    (repo / "data" / "vcoco").mkdir(parents=True)
    (repo / "data" / "splits").mkdir()
    (repo / "data" / "vcoco" / "vcoco_test.json").write_text(json.dumps(vsrl))
    (repo / "data" / "instances_vcoco_all_2014.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": CATEGORIES}))
    ids = sorted({a for a, _ in annotated})
    (repo / "data" / "splits" / "vcoco_test.ids").write_text("".join(f"{i}\n" for i in ids))
    return repo


def make_detections(repo: Path, path: Path, seed: int = 1) -> Path:
    """DETS.json rows around the ground truth: jittered person boxes (some below IoU 0.5),
    true, jittered, wrong, empty (null) and [0, 0, 0, 0] role boxes, wrong actions,
    duplicates, detections on ignored persons; scores from 4 values."""
    rng = np.random.default_rng(seed)
    coco = json.loads((repo / "data" / "instances_vcoco_all_2014.json").read_text())
    vsrl = json.loads((repo / "data" / "vcoco" / "vcoco_test.json").read_text())
    ids = {int(v) for v in (repo / "data" / "splits" / "vcoco_test.ids").read_text().split()}
    role_of: dict[tuple[int, str], int] = {}
    for e in vsrl:
        rid = np.asarray(e["role_object_id"]).reshape(len(e["role_name"]), -1).T
        for j, pid in enumerate(e["ann_id"]):
            for r in range(1, len(e["role_name"])):
                if e["label"][j]:
                    role_of[(pid, f"{e['action_name']} {e['role_name'][r]}")] = int(rid[j, r])
    boxes = {a["id"]: a["bbox"] for a in coco["annotations"]}

    def inclusive(b: list[float]) -> list[float]:
        return [b[0], b[1], b[0] + max(0.0, b[2] - 1), b[1] + max(0.0, b[3] - 1)]

    def jitter(b: list[float], amount: float) -> list[float]:
        x1, y1, x2, y2 = b
        s = amount * max(x2 - x1, y2 - y1)
        out = [x1 + rng.uniform(-s, s), y1 + rng.uniform(-s, s),
               x2 + rng.uniform(-s, s), y2 + rng.uniform(-s, s)]
        return [min(out[0], out[2]), min(out[1], out[3]), max(out[0], out[2]),
                max(out[1], out[3])]

    records = []
    for im in coco["images"]:
        if im["id"] not in ids:
            continue
        persons = [a for a in coco["annotations"] if a["image_id"] == im["id"]
                   and a["category_id"] == 1]
        rows: dict[str, list] = {"human_boxes": [], "object_boxes": [], "actions": [],
                                 "scores": []}
        for person in persons:
            for _ in range(int(rng.integers(1, 4))):
                human = jitter(inclusive(person["bbox"]), float(rng.choice([0.0, 0.05, 0.3])))
                for k, name in enumerate(metadata.VCOCO_ACTIONS):
                    obj = role_of.get((person["id"], name))
                    if obj is None and rng.random() > 0.12:
                        continue
                    kind = rng.choice(["true", "jitter", "none", "zeros", "random"])
                    if obj and kind in ("true", "jitter"):
                        role = jitter(inclusive(boxes[obj]), 0.0 if kind == "true" else 0.2)
                    elif kind in ("none", "true"):
                        role = None
                    elif kind == "zeros":
                        role = [0.0, 0.0, 0.0, 0.0]
                    else:
                        role = jitter([50.0, 50.0, 120.0, 150.0], 0.3)
                    rows["human_boxes"].append(human)
                    rows["object_boxes"].append(role)
                    rows["actions"].append(k)
                    rows["scores"].append(float(rng.choice(SCORES)))
        valid = [a for a in persons if a["area"] > 0 and a.get("ignore", 0) != 1]
        if rows["scores"] and valid:       # (vsrl_eval stops on detections without persons)
            records.append({"file_name": im["file_name"], **rows})
    path.write_text(json.dumps({"images": records}))
    return path


# ----------------------------------------------------------------------------- reference

def reference_role_ap(repo: Path, dets_path: Path) -> dict[str, dict[int, float]]:
    """``vsrl_eval.py``'s role AP, implemented for this test from the official rules:
    ``{"action role": {1: AP scenario 1, 2: AP scenario 2}}`` over the 25 action-roles of
    the file, in float32 where the official arrays are. Tie order: the project's
    documented one (descending score; among equal scores the later entry first); an
    action-role without candidates has AP 0 (where the official code stops)."""
    coco = json.loads((repo / "data" / "instances_vcoco_all_2014.json").read_text())
    vsrl = json.loads((repo / "data" / "vcoco" / "vcoco_test.json").read_text())
    image_ids = [int(v) for v in (repo / "data" / "splits" / "vcoco_test.ids").read_text().split()]
    dets = json.loads(dets_path.read_text())["images"]
    image_of_name = {im["file_name"]: im for im in coco["images"]}
    person_id = coco["categories"][0]["id"]
    n_act = len(vsrl)
    for e in vsrl:
        e["role_object_id"] = np.asarray(e["role_object_id"]).reshape(len(e["role_name"]), -1).T

    # official detection entries: one per DETS row, NaN everywhere but its action-role
    det_list = []
    for record in dets:
        image_id = image_of_name[record["file_name"]]["id"]
        for h, o, k, s in zip(record["human_boxes"], record["object_boxes"], record["actions"],
                              record["scores"], strict=True):
            action, role = metadata.VCOCO_ACTIONS[k].rsplit(" ", 1)
            det = {"image_id": image_id, "person_box": h}
            for e in vsrl:
                for r in e["role_name"][1:]:
                    det[f"{e['action_name']}_{r}"] = [math.nan] * 5
            det[f"{action}_{role}"] = [*(o if o is not None else [math.nan] * 4), s]
            det_list.append(det)

    def order(scores: list[float]) -> list[int]:
        return sorted(range(len(scores)), key=lambda j: (scores[j], j), reverse=True)

    def overlap(boxes: np.ndarray, ref: np.ndarray) -> np.ndarray:
        iw = np.maximum(np.minimum(boxes[:, 2], ref[2]) - np.maximum(boxes[:, 0], ref[0]) + 1., 0.)
        ih = np.maximum(np.minimum(boxes[:, 3], ref[3]) - np.maximum(boxes[:, 1], ref[1]) + 1., 0.)
        inter = iw * ih
        return inter / ((ref[2] - ref[0] + 1.) * (ref[3] - ref[1] + 1.)
                        + (boxes[:, 2] - boxes[:, 0] + 1.) * (boxes[:, 3] - boxes[:, 1] + 1.)
                        - inter)

    tp = {s: [[[] for _ in range(2)] for _ in range(n_act)] for s in (1, 2)}
    sc = [[[] for _ in range(2)] for _ in range(n_act)]
    npos = np.zeros(n_act)
    annotated = list(vsrl[0]["ann_id"])
    for image_id in image_ids:
        image = next(im for im in coco["images"] if im["id"] == image_id)
        w, h = image["width"], image["height"]
        objs, boxes = [], []
        for a in coco["annotations"]:
            if a["image_id"] != image_id or a.get("ignore", 0) == 1:
                continue
            x1, y1 = a["bbox"][0], a["bbox"][1]
            x2, y2 = x1 + max(0., a["bbox"][2] - 1.), y1 + max(0., a["bbox"][3] - 1.)
            x1, x2 = (min(w - 1., max(0., v)) for v in (x1, x2))
            y1, y2 = (min(h - 1., max(0., v)) for v in (y1, y2))
            if a["area"] > 0 and x2 > x1 and y2 > y1:
                objs.append(a)
                boxes.append([x1, y1, x2, y2])
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        ids = [a["id"] for a in objs]
        actions = -np.ones((len(objs), n_act), dtype=np.int32)
        role_idx = -np.ones((len(objs), n_act, 2), dtype=np.int32)
        for ix, a in enumerate(objs):
            if a["id"] not in annotated:
                continue
            actions[ix] = 0
            for aid, e in enumerate(vsrl):
                hit = [j for j, (pid, lab) in enumerate(zip(e["ann_id"], e["label"], strict=True))
                       if pid == a["id"] and lab == 1]
                if hit:
                    actions[ix, aid] = 1
                    for r in range(1, len(e["role_name"])):
                        rid = e["role_object_id"][hit[0], r]
                        if rid:
                            role_idx[ix, aid, r - 1] = ids.index(rid)
        is_person = np.array([a["category_id"] == person_id for a in objs], dtype=bool)
        gt_boxes, gt_actions = boxes[is_person], actions[is_person]
        gt_roles_idx = role_idx[is_person]
        ignore = (gt_actions == -1).any(1)
        npos += (gt_actions == 1).sum(0)
        mine = [d for d in det_list if d["image_id"] == image_id]
        for aid, e in enumerate(vsrl):
            for rid, role in enumerate(e["role_name"][1:]):
                key = f"{e['action_name']}_{role}"
                cand = [d for d in mine if not math.isnan(d[key][4])]
                scores = [float(np.float32(d[key][4])) for d in cand]
                covered = {1: np.zeros(len(gt_boxes), bool), 2: np.zeros(len(gt_boxes), bool)}
                for j in order(scores):
                    pbox = np.asarray(cand[j]["person_box"], dtype=np.float32)
                    rbox = np.asarray(cand[j][key][:4], dtype=np.float32)
                    ov = overlap(gt_boxes, pbox)
                    jmax = int(ov.argmax())
                    if ignore[jmax]:
                        continue
                    sc[aid][rid].append(scores[j])
                    gi = gt_roles_idx[jmax, aid, rid]
                    for scenario in (1, 2):
                        if gi < 0:
                            empty = bool(np.all(rbox == 0.0) or np.all(np.isnan(rbox)))
                            ov_role = 1.0 if scenario == 2 or empty else 0.0
                        else:
                            ov_role = overlap(boxes[gi][None], rbox)[0]
                        ok = gt_actions[jmax, aid] == 1 and ov[jmax] >= 0.5 and ov_role >= 0.5
                        tp[scenario][aid][rid].append(int(ok and not covered[scenario][jmax]))
                        if ok:
                            covered[scenario][jmax] = True

    def voc(rec: np.ndarray, prec: np.ndarray) -> float:
        mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
        for i in range(len(mpre) - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1)
                   if mrec[i + 1] != mrec[i])

    out: dict[str, dict[int, float]] = {}
    for aid, e in enumerate(vsrl):
        for rid, role in enumerate(e["role_name"][1:]):
            name = f"{e['action_name']} {role}"
            out[name] = {}
            for scenario in (1, 2):
                idx = order(sc[aid][rid])
                flags = np.asarray(tp[scenario][aid][rid], dtype=np.float64)[idx]
                ctp, cfp = np.cumsum(flags), np.cumsum(1 - flags)
                out[name][scenario] = 0.0 if not idx else voc(
                    ctp / npos[aid], ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps))
    return out


# ----------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("vcoco_official")
    repo = make_split(root)
    dets = make_detections(repo, root / "dets.json")
    return repo, dets, reference_role_ap(repo, dets)


def test_synthetic_split_has_the_hard_cases(official: tuple[Path, Path, dict]) -> None:
    repo, _, _ = official
    gt = load_vcoco_official(repo / "data/vcoco/vcoco_test.json",
                             repo / "data/instances_vcoco_all_2014.json",
                             repo / "data/splits/vcoco_test.ids")
    labels = np.concatenate(gt.agent_labels)
    roles = np.concatenate(gt.role_boxes)
    eat = [metadata.VCOCO_ACTIONS.index(n) for n in ("eat obj", "eat instr")]
    assert (labels == -1).all(1).sum() >= 5                 # ignored persons
    assert gt.other_npos["point"] >= 5                      # pointing agents
    assert ((labels == 0).all(1)).sum() >= 1                # annotated, no action of the 21
    invisible = np.isnan(roles[:, eat, 0]) & (labels[:, [6, 6]] == 1)
    assert invisible.any()                                  # invisible roles
    assert (gt.agent_npos[np.asarray([0, 5])] > 0).all()
    assert (gt.sizes > 0).all() and len(gt) == len(np.unique(gt.image_ids))


def test_eval_cli_equals_vsrl_eval_rules(official: tuple[Path, Path, dict], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The acceptance figure: per action-role, both scenarios, within 1e-6."""
    repo, dets, ref = official
    out = tmp_path / "r.json"
    assert main(["eval", "--vcoco", "--annotations", str(repo), "--detections", str(dets),
                 "--json", str(out)]) == 0
    table = capsys.readouterr()
    assert "official files" in table.out and "WARNING" not in table.out + table.err
    report = json.loads(out.read_text())
    assert report["protocol"] == "official"
    worst = 0.0
    for role in report["roles"]:
        for s in (1, 2):
            worst = max(worst, abs(role[f"ap_scenario_{s}"] / 100 - ref[role["action_role"]][s]))
    assert worst < 1e-6, worst
    # no row of id 24: point instr has AP 0 (vsrl_eval would stop)
    assert report["point_instr"] == {"ap_scenario_1": 0.0, "ap_scenario_2": 0.0,
                                     "npos": report["point_instr"]["npos"]}
    for s in (1, 2):
        ref24 = np.mean([ref[n][s] for n in metadata.VCOCO_ACTIONS])
        ref25 = np.mean([v[s] for v in ref.values()])              # vsrl_eval's nanmean
        assert len(ref) == 25
        assert report["map"][f"role_scenario_{s}"] == pytest.approx(100 * ref24, abs=1e-4)
        assert report["map"][f"role_scenario_{s}_with_point"] == pytest.approx(100 * ref25,
                                                                              abs=1e-4)
    # the scores are not trivial: scenario 2 above scenario 1, neither 0 nor 100
    m = report["map"]
    assert 5 < m["role_scenario_1"] < m["role_scenario_2"] < 95


def test_same_result_from_every_way_of_naming_the_files(official: tuple[Path, Path, dict],
                                                        tmp_path: Path) -> None:
    repo, dets, _ = official
    data = repo / "data"
    base = evaluate_vcoco_files(repo, dets)
    out = tmp_path / "r.json"
    assert main(["eval", "--vcoco", "--annotations", str(data / "vcoco/vcoco_test.json"),
                 "--coco-annotations", str(data / "instances_vcoco_all_2014.json"),
                 "--split-ids", str(data / "splits/vcoco_test.ids"), "--detections", str(dets),
                 "--json", str(out)]) == 0
    roles = json.loads(out.read_text())["roles"]
    np.testing.assert_allclose([r["ap_scenario_1"] for r in roles], 100 * base.role_ap_s1,
                               atol=1e-5)
    for kwargs in ({"annotations": data}, {"annotations": data / "vcoco/vcoco_test.json"},
                   {"annotations": data / "vcoco/vcoco_test.json",
                    "coco": data / "instances_vcoco_all_2014.json",
                    "split_ids": data / "splits/vcoco_test.ids"}):
        res = evaluate_vcoco_files(detections=dets, **kwargs)
        np.testing.assert_array_equal(res.role_ap_s1, base.role_ap_s1)
        np.testing.assert_array_equal(res.role_ap_s2, base.role_ap_s2)


def test_file_lookup_errors(official: tuple[Path, Path, dict], tmp_path: Path) -> None:
    repo, _, _ = official
    lonely = tmp_path / "vcoco_test.json"
    lonely.write_text((repo / "data/vcoco/vcoco_test.json").read_text())
    with pytest.raises(InputError, match=r"instances_vcoco_all_2014\.json not found.*"
                                         r"script_pick_annotations"):
        find_vcoco_files(lonely)
    found = find_vcoco_files(lonely, coco=repo / "data/instances_vcoco_all_2014.json")
    assert found.official and found.split_ids is None           # images from the json
    with pytest.raises(InputError, match="the COCO file"):
        find_vcoco_files(repo / "data" / "instances_vcoco_all_2014.json")
    with pytest.raises(InputError, match=r"no vcoco_val\.json"):
        find_vcoco_files(repo, split="val")
    wrong = tmp_path / "vcoco_wrong.ids"
    wrong.write_text("1\n2\n")
    with pytest.raises(InputError, match="different splits"):
        load_vcoco_official(lonely, repo / "data/instances_vcoco_all_2014.json", wrong)


def test_tie_order_is_fixed() -> None:
    """Descending score; equal float32 scores: the later input first — for every size
    (numpy's own unstable sort only promises that for small inputs on some versions)."""
    rng = np.random.default_rng(0)
    for n in (2, 17, 1000):
        s = rng.choice([0.1, 0.2, 0.3], n).astype(np.float64)
        expected = np.argsort(s.astype(np.float32), kind="stable")[::-1]
        np.testing.assert_array_equal(descending(s), expected)
    # scores equal in float32 are tied even when their float64 values differ
    np.testing.assert_array_equal(descending(np.array([0.5, 0.5 + 1e-12])), [1, 0])


def test_tie_order_decides_ap(tmp_path: Path) -> None:
    """One person, two tied detections of 'hold obj': the right and a wrong object box.
    The later row is visited first; in the AP the later score comes first too."""
    coco = {"categories": CATEGORIES,
            "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
            "annotations": [
                {"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 90],
                 "area": 1.0, "iscrowd": 0},
                {"id": 11, "image_id": 1, "category_id": 47, "bbox": [40, 40, 20, 20],
                 "area": 1.0, "iscrowd": 0}]}
    vsrl = [{"action_name": a, "role_name": r, "image_id": [1], "ann_id": [10],
             "label": [int(a == "hold")],
             "role_object_id": [10] + [11 if a == "hold" else 0] * (len(r) - 1)}
            for a, r in ACTIONS]
    (tmp_path / "vcoco_test.json").write_text(json.dumps(vsrl))
    (tmp_path / "instances_vcoco_all_2014.json").write_text(json.dumps(coco))
    hold = metadata.VCOCO_ACTIONS.index("hold obj")
    right, wrong = [40, 40, 59, 59], [0, 60, 10, 70]

    def ap(first: list[float], second: list[float]) -> float:
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"images": [{
            "file_name": "a.jpg", "human_boxes": [[0, 0, 49, 89]] * 2,
            "object_boxes": [first, second], "actions": [hold, hold], "scores": [0.5, 0.5]}]}))
        return float(evaluate_vcoco_files(tmp_path, path).role_ap_s1[hold])

    # wrong then right: right visited first (TP), wrong second (FP); AP order: FP, TP
    assert ap(wrong, right) == pytest.approx(0.5)
    assert ap(right, wrong) == pytest.approx(1.0)


def test_per_pair_file_says_it_is_not_official(shared_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ann = shared_dir / "data" / "vcoco" / "instances_vcoco_test.json"
    first = next(a for a in json.loads(ann.read_text())["annotations"] if a["actions"])
    dets = tmp_path / "d.json"
    dets.write_text(json.dumps({"images": [{
        "file_name": first["file_name"], "human_boxes": [first["boxes_h"][0]],
        "object_boxes": [first["boxes_o"][0]], "actions": [first["actions"][0]],
        "scores": [0.9]}]}))
    assert main(["eval", "--vcoco", "--annotations", str(ann), "--detections", str(dets)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(PER_PAIR_WARNING) and PER_PAIR_WARNING in captured.err
    assert "7,154 of the official 9,130" in PER_PAIR_WARNING
    assert "n/a" in captured.out                               # no mean over 25


def test_dataset_and_test_loop_on_official_files(official: tuple[Path, Path, dict],
                                                  tmp_path: Path) -> None:
    """Training pairs = visible role objects; the test set = every image of the split,
    scored against the per-person ground truth (perfect detections: 100 in both)."""
    from clip4hoi.data.vcoco import VCOCO
    from clip4hoi.engine.evaluate import evaluate_records

    repo, _, _ = official
    ann = repo / "data" / "vcoco" / "vcoco_test.json"
    gt = load_vcoco_official(ann, repo / "data" / "instances_vcoco_all_2014.json")
    (tmp_path / "val2014").mkdir()
    for name in gt.file_names:              # only the names are checked before loading
        (tmp_path / "val2014" / name).touch()
    with pytest.warns(UserWarning, match="outside the 236 V-COCO classes"):
        train = VCOCO(tmp_path, ann)        # random synthetic objects: some are not classes
    pairs = training_pairs(gt)
    assert train.ground_truth is not None and train.annotations.num_pairs < pairs.num_pairs
    assert len(train) < len(gt)
    with pytest.warns(UserWarning):
        test = VCOCO(tmp_path, ann, skip_empty=False)
    assert len(test) == len(gt) and test.annotations.file_names == gt.file_names
    records = []                            # every agent and action-role it does
    for i, name in enumerate(gt.file_names):
        rows: dict[str, list] = {"human_boxes": [], "object_boxes": [], "actions": [],
                                 "scores": []}
        for p, box in enumerate(gt.person_boxes[i]):
            for k in range(24):
                if gt.agent_labels[i][p, VCOCO_ROLE_ACTION[k]] == 1:
                    role = gt.role_boxes[i][p, k]
                    rows["human_boxes"].append([box[0], box[1], box[2] - 1, box[3] - 1])
                    rows["object_boxes"].append(None if np.isnan(role).any() else
                                                [role[0], role[1], role[2] - 1, role[3] - 1])
                    rows["actions"].append(k)
                    rows["scores"].append(1.0)
        if rows["scores"]:
            records.append({"file_name": name, **rows})
    result = evaluate_records(records, test)
    assert result.maps["role_scenario_1"] == pytest.approx(100.0)
    assert result.maps["role_scenario_2"] == pytest.approx(100.0)
    assert result.report["protocol"] == "official"


def test_vcoco_config_names_the_official_files() -> None:
    from clip4hoi.engine.config import load_experiment

    config = load_experiment(Path(__file__).parents[1] / "configs" / "vcoco.yaml")
    assert config.data.train_annotations.endswith("v-coco/data/vcoco/vcoco_trainval.json")
    assert config.data.test_annotations.endswith("v-coco/data/vcoco/vcoco_test.json")

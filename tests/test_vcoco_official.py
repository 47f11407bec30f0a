"""V-COCO on the official layout (vcoco_SPLIT.json + instances_vcoco_all_2014.json +
vcoco_SPLIT.ids): a synthetic split in that layout with ignored persons, crowds, invisible
roles, point agents, clipped and invalid boxes and heavy score ties, scored by
``clip4hoi eval --vcoco`` and by a step-by-step port of ``vsrl_eval.py`` written for the
tests (:func:`vsrl_eval`, also used by ``test_vcoco_means.py``); file look-up; tie order;
dataset and test loop on official files."""

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
    VCOCO_DETECTION_LABELS,
    VCOCO_OTHER_ACTIONS,
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


def make_detections(repo: Path, path: Path, seed: int = 1, num_ids: int = 24,
                    tied: bool = True, thin: float = 0.0) -> Path:
    """DETS.json rows around the ground truth, for the ids ``0..num_ids - 1``
    (``VCOCO_DETECTION_LABELS``: 24 action-roles, then point instr and the actions without
    a role): per person 1-3 jittered human boxes (some below IoU 0.5; a fraction ``thin``
    of them 1 px wide), each with the rows of several ids (rows sharing a human box); true,
    jittered, wrong, empty (null) and [0, 0, 0, 0] role boxes, wrong actions, duplicates,
    detections on ignored persons; scores from 4 values (``tied``) or all distinct."""
    rng = np.random.default_rng(seed)
    coco = json.loads((repo / "data" / "instances_vcoco_all_2014.json").read_text())
    vsrl = json.loads((repo / "data" / "vcoco" / "vcoco_test.json").read_text())
    ids = {int(v) for v in (repo / "data" / "splits" / "vcoco_test.ids").read_text().split()}
    role_of: dict[tuple[int, str], int] = {}
    does: dict[int, set[str]] = {}
    for e in vsrl:
        rid = np.asarray(e["role_object_id"]).reshape(len(e["role_name"]), -1).T
        for j, pid in enumerate(e["ann_id"]):
            if not e["label"][j]:
                continue
            does.setdefault(pid, set()).add(e["action_name"])
            for r in range(1, len(e["role_name"])):
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

    def score() -> float:
        return float(rng.choice(SCORES)) if tied else float(rng.uniform())

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
                if thin and rng.random() < thin:
                    human[2] = human[0]                        # a 1-px wide agent
                for k, name in enumerate(VCOCO_DETECTION_LABELS[:num_ids]):
                    action, role = _split_label(k)
                    truth = action in does.get(person["id"], set())
                    if not truth and rng.random() > 0.12:
                        continue
                    obj = role_of.get((person["id"], name)) if role else None
                    kind = rng.choice(["true", "jitter", "none", "zeros", "random"])
                    if role is None:
                        box = None                             # an agent-only action
                    elif obj and kind in ("true", "jitter"):
                        box = jitter(inclusive(boxes[obj]), 0.0 if kind == "true" else 0.2)
                    elif kind in ("none", "true"):
                        box = None
                    elif kind == "zeros":
                        box = [0.0, 0.0, 0.0, 0.0]
                    else:
                        box = jitter([50.0, 50.0, 120.0, 150.0], 0.3)
                    rows["human_boxes"].append(human)
                    rows["object_boxes"].append(box)
                    rows["actions"].append(k)
                    rows["scores"].append(score())
        valid = [a for a in persons if a["area"] > 0 and a.get("ignore", 0) != 1]
        if rows["scores"] and valid:       # (vsrl_eval stops on detections without persons)
            records.append({"file_name": im["file_name"], **rows})
    path.write_text(json.dumps({"images": records}))
    return path


# ----------------------------------------------------------------------------- reference

def _split_label(k: int) -> tuple[str, str | None]:
    """DETS.json id -> (official action, role or None)."""
    name = VCOCO_DETECTION_LABELS[k]
    return (name, None) if name in VCOCO_OTHER_ACTIONS else tuple(name.rsplit(" ", 1))


def detection_list(dets: list[dict], image_ids: dict[str, int], actions: list[dict],
                   rows: str) -> list[dict]:
    """The official detection list (``vsrl_eval``'s pickle) of DETS.json records: one entry
    per row (``per-row``) or per distinct human box of an image (``per-person``: the best
    score of its rows per action, the best row per action-role), NaN where none."""
    out = []
    for record in dets:
        groups: dict[tuple, list[int]] = {}
        n = len(record["scores"])
        for j in range(n):
            key = (j,) if rows == "per-row" else tuple(record["human_boxes"][j])
            groups.setdefault(key, []).append(j)
        for members in groups.values():
            entry: dict = {"image_id": image_ids[record["file_name"]],
                           "person_box": record["human_boxes"][members[0]]}
            for e in actions:
                entry[f"{e['action_name']}_agent"] = math.nan
                for r in e["role_name"][1:]:
                    entry[f"{e['action_name']}_{r}"] = [math.nan] * 5
            for j in members:
                action, role = _split_label(record["actions"][j])
                s = record["scores"][j]
                key = f"{action}_agent"
                if math.isnan(entry[key]) or s > entry[key]:
                    entry[key] = s
                if role is not None:
                    key = f"{action}_{role}"
                    if math.isnan(entry[key][4]) or s > entry[key][4]:
                        box = record["object_boxes"][j]
                        entry[key] = [*(box if box is not None else [math.nan] * 4), s]
            out.append(entry)
    return out


def vsrl_eval(repo: Path, dets_path: Path, rows: str) -> dict:
    """``vsrl_eval.py``'s agent AP (26 actions), role AP (25 action-roles, both scenarios)
    and printed means, for the DETS.json at ``dets_path`` read with the ``rows`` convention."""
    coco = json.loads((repo / "data" / "instances_vcoco_all_2014.json").read_text())
    vsrl = json.loads((repo / "data" / "vcoco" / "vcoco_test.json").read_text())
    image_ids = [int(v) for v in
                 (repo / "data" / "splits" / "vcoco_test.ids").read_text().split()]
    id_of = {im["file_name"]: im["id"] for im in coco["images"]}
    dets = detection_list(json.loads(dets_path.read_text())["images"], id_of, vsrl, rows)
    n_act = len(vsrl)
    for e in vsrl:
        e["role_object_id"] = np.asarray(e["role_object_id"]).reshape(len(e["role_name"]), -1).T
    annotated = set(vsrl[0]["ann_id"])

    def order(scores: list[float]) -> list[int]:   # argsort()[::-1], ties: later first
        return sorted(range(len(scores)), key=lambda j: (scores[j], j), reverse=True)

    def overlap(boxes: np.ndarray, ref: np.ndarray) -> np.ndarray:   # get_overlap
        iw = np.maximum(np.minimum(boxes[:, 2], ref[2]) - np.maximum(boxes[:, 0], ref[0]) + 1., 0.)
        ih = np.maximum(np.minimum(boxes[:, 3], ref[3]) - np.maximum(boxes[:, 1], ref[1]) + 1., 0.)
        inter = iw * ih
        return inter / ((ref[2] - ref[0] + 1.) * (ref[3] - ref[1] + 1.)
                        + (boxes[:, 2] - boxes[:, 0] + 1.) * (boxes[:, 3] - boxes[:, 1] + 1.)
                        - inter)

    def voc_ap(rec: list[float], prec: list[float]) -> float:
        mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
        for i in range(len(mpre) - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1)
                   if mrec[i + 1] != mrec[i])

    def ap(sc: list[float], tp: list[int], npos: float) -> float:
        if npos == 0:
            return math.nan
        if not sc:
            return 0.0                       # vsrl_eval stops here (np.amax of nothing)
        idx = order(sc)
        flags = np.asarray(tp, dtype=np.float64)[idx]
        ctp, cfp = np.cumsum(flags), np.cumsum(1 - flags)
        return voc_ap(list(ctp / npos), list(ctp / np.maximum(ctp + cfp,
                                                              np.finfo(np.float64).eps)))

    agent = {"tp": [[] for _ in range(n_act)], "sc": [[] for _ in range(n_act)]}
    role = {s: [[[] for _ in range(2)] for _ in range(n_act)] for s in (1, 2)}
    role_sc = [[[] for _ in range(2)] for _ in range(n_act)]
    npos = np.zeros(n_act)
    for image_id in image_ids:           # _get_vcocodb: _add_gt_annotations, _get_vsrl_data
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
        gt_actions = -np.ones((len(objs), n_act), dtype=np.int32)
        gt_role = -np.ones((len(objs), n_act, 2), dtype=np.int32)
        for ix, a in enumerate(objs):
            if a["id"] not in annotated:
                continue
            gt_actions[ix] = 0
            for aid, e in enumerate(vsrl):
                hit = [j for j, (pid, lab) in enumerate(zip(e["ann_id"], e["label"], strict=True))
                       if pid == a["id"] and lab == 1]
                if hit:
                    gt_actions[ix, aid] = 1
                    for r in range(1, len(e["role_name"])):
                        rid = e["role_object_id"][hit[0], r]
                        if rid:
                            gt_role[ix, aid, r - 1] = ids.index(rid)
        person = np.array([a["category_id"] == 1 for a in objs], dtype=bool)
        gt_boxes, actions, roles_idx = boxes[person], gt_actions[person], gt_role[person]
        ignore = (actions == -1).any(1)
        npos += (actions == 1).sum(0)
        mine = [d for d in dets if d["image_id"] == image_id]  # _collect_detections_for_image
        for aid, e in enumerate(vsrl):                        # _do_agent_eval
            cand = [d for d in mine if not math.isnan(d[f"{e['action_name']}_agent"])]
            scores = [float(np.float32(d[f"{e['action_name']}_agent"])) for d in cand]
            covered = np.zeros(len(gt_boxes), bool)
            for j in order(scores):
                ov = overlap(gt_boxes, np.asarray(cand[j]["person_box"], dtype=np.float32))
                jmax = int(ov.argmax())
                if ignore[jmax]:
                    continue
                agent["sc"][aid].append(scores[j])
                ok = actions[jmax, aid] == 1 and ov[jmax] >= 0.5
                agent["tp"][aid].append(int(ok and not covered[jmax]))
                if ok:
                    covered[jmax] = True
        for aid, e in enumerate(vsrl):                        # _do_role_eval
            for rid, r in enumerate(e["role_name"][1:]):
                key = f"{e['action_name']}_{r}"
                cand = [d for d in mine if not math.isnan(d[key][4])]
                scores = [float(np.float32(d[key][4])) for d in cand]
                covered = {1: np.zeros(len(gt_boxes), bool), 2: np.zeros(len(gt_boxes), bool)}
                for j in order(scores):
                    ov = overlap(gt_boxes, np.asarray(cand[j]["person_box"], dtype=np.float32))
                    jmax = int(ov.argmax())
                    if ignore[jmax]:
                        continue
                    role_sc[aid][rid].append(scores[j])
                    rbox = np.asarray(cand[j][key][:4], dtype=np.float32)
                    gi = roles_idx[jmax, aid, rid]
                    for s in (1, 2):
                        if gi < 0:
                            empty = bool(np.all(rbox == 0.0) or np.all(np.isnan(rbox)))
                            ov_role = 1.0 if s == 2 or empty else 0.0
                        else:
                            ov_role = overlap(boxes[gi][None], rbox)[0]
                        ok = actions[jmax, aid] == 1 and ov[jmax] >= 0.5 and ov_role >= 0.5
                        role[s][aid][rid].append(int(ok and not covered[s][jmax]))
                        if ok:
                            covered[s][jmax] = True

    agent_ap = {e["action_name"]: ap(agent["sc"][a], agent["tp"][a], npos[a])
                for a, e in enumerate(vsrl)}
    role_ap = {s: {f"{e['action_name']} {r}": ap(role_sc[a][i], role[s][a][i], npos[a])
                   for a, e in enumerate(vsrl) for i, r in enumerate(e["role_name"][1:])}
               for s in (1, 2)}
    return {"agent": agent_ap, "role": role_ap,
            "average_agent": float(np.nansum(list(agent_ap.values()))) / n_act,
            "average_role": {s: float(np.nanmean(list(role_ap[s].values()))) for s in (1, 2)}}


def reference_role_ap(repo: Path, dets_path: Path) -> dict[str, dict[int, float]]:
    """``{"action role": {1: AP scenario 1, 2: AP scenario 2}}`` of :func:`vsrl_eval` over
    the 25 action-roles of the file, one entry per row."""
    role = vsrl_eval(repo, dets_path, "per-row")["role"]
    return {name: {1: role[1][name], 2: role[2][name]} for name in role[1]}


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

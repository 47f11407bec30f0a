"""V-COCO means as the official ``vsrl_eval.py`` prints them, and the two ways DETS.json rows
become its detection list.

Synthetic splits in the official layout (``test_vcoco_official.make_split``; new seeds)
with detections that ``clip4hoi eval --vcoco`` must score like ``vsrl_eval``: rows of the
24 action-roles, of ``point instr`` (id 24) and of the actions without a role object
(25..28), several action-roles on one human box, 1-px human boxes, empty and wrong role
boxes. The reference below follows ``vsrl_eval.py`` step by step — the detection list
(``_collect_detections_for_image``), ``_do_agent_eval`` over all 26 actions and
``_do_role_eval`` over its 25 action-roles, and the two printed means ("Average Agent AP"
= nansum / 26, "Average Role AP" = nanmean) — with the project's documented tie order
(descending score, the later entry first) where numpy's unstable sort is arbitrary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_vcoco_official import make_split

from clip4hoi.cli import build_parser, main
from clip4hoi.data.vcoco_official import VCOCO_DETECTION_LABELS, VCOCO_OTHER_ACTIONS
from clip4hoi.evaluation.vcoco import evaluate_vcoco_files

NAN5 = [math.nan] * 5


def _split_label(k: int) -> tuple[str, str | None]:
    """DETS.json id -> (official action, role or None)."""
    name = VCOCO_DETECTION_LABELS[k]
    return (name, None) if name in VCOCO_OTHER_ACTIONS else tuple(name.rsplit(" ", 1))


# ----------------------------------------------------------------------------- detections

def make_detections(repo: Path, path: Path, seed: int, tied: bool) -> Path:
    """Rows around the ground truth for every id 0..28: per person 1-3 jittered human boxes
    (some 1 px wide), each with the rows of several action-roles; true, jittered, wrong,
    empty and [0, 0, 0, 0] role boxes; scores from 4 values (``tied``) or all distinct."""
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
        return float(rng.choice([0.25, 0.5, 0.75, 0.9])) if tied else float(rng.uniform())

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
                if rng.random() < 0.1:
                    human[2] = human[0]                        # a 1-px wide agent
                for k, name in enumerate(VCOCO_DETECTION_LABELS):
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
                    entry[f"{e['action_name']}_{r}"] = list(NAN5)
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


# ----------------------------------------------------------------------------- tests

@pytest.fixture(scope="module", params=[(3, True), (4, False)], ids=["seed3-tied", "seed4"])
def scenario(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Path, bool]:
    seed, tied = request.param
    root = tmp_path_factory.mktemp(f"vcoco_means_{seed}")
    repo = make_split(root, seed=seed)
    return repo, make_detections(repo, root / "dets.json", seed + 100, tied), tied


def test_the_detections_have_the_hard_cases(scenario: tuple[Path, Path, bool]) -> None:
    _, dets, _ = scenario
    records = json.loads(dets.read_text())["images"]
    labels = [k for r in records for k in r["actions"]]
    assert {24, 25, 26, 27, 28} <= set(labels)                # point, stand, walk, run, smile
    shared = sum(len(r["human_boxes"]) - len({tuple(b) for b in r["human_boxes"]})
                 for r in records)
    assert shared > 100                                       # rows sharing a human box
    assert any(b[2] == b[0] for r in records for b in r["human_boxes"])    # 1-px agents


@pytest.mark.parametrize("rows", ["per-row", "per-person"])
def test_eval_prints_what_vsrl_eval_prints(scenario: tuple[Path, Path, bool], rows: str,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    repo, dets, tied = scenario
    if tied and rows == "per-person":
        pytest.skip("a per-person entry has no input position of its own: distinct scores")
    ref = vsrl_eval(repo, dets, rows)
    out = tmp_path / "r.json"
    assert main(["eval", "--vcoco", "--annotations", str(repo), "--detections", str(dets),
                 "--vcoco-rows", rows, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["rows"] == rows
    ours_agent = {a["action"]: a["ap"] for a in report["agent"] + report["other_agents"]}
    assert set(ours_agent) == set(ref["agent"]) and len(ours_agent) == 26
    for action, value in ref["agent"].items():
        assert ours_agent[action] == pytest.approx(100 * value, abs=1e-4), action
    for s in (1, 2):
        ours_role = {r["action_role"]: r[f"ap_scenario_{s}"] for r in report["roles"]}
        ours_role["point instr"] = report["point_instr"][f"ap_scenario_{s}"]
        assert set(ours_role) == set(ref["role"][s]) and len(ours_role) == 25
        for name, value in ref["role"][s].items():
            assert ours_role[name] == pytest.approx(100 * value, abs=1e-4), (name, s)
    m = report["map"]
    # the printed means: vsrl_eval's two, and ours over 21 and 24, each labelled
    assert m["agent_vsrl_eval"] == pytest.approx(100 * ref["average_agent"], abs=1e-4)
    assert m["agent"] == pytest.approx(100 * np.mean(
        [ref["agent"][a["action"]] for a in report["agent"]]), abs=1e-4)
    for s in (1, 2):
        assert m[f"role_scenario_{s}_with_point"] == pytest.approx(
            100 * ref["average_role"][s], abs=1e-4)
        assert m[f"role_scenario_{s}"] == pytest.approx(100 * np.mean(
            [v for k, v in ref["role"][s].items() if k != "point instr"]), abs=1e-4)
    assert 0 < report["point_instr"]["ap_scenario_1"] < report["point_instr"]["ap_scenario_2"]
    assert "vsrl_eval's 'Average Agent AP'" in table and "Average Role AP" in table
    assert f"{m['agent_vsrl_eval']:.2f}" in table and f"{m['agent']:.2f}" in table


def test_without_rows_of_the_other_actions_their_ap_is_0(
        scenario: tuple[Path, Path, bool], tmp_path: Path) -> None:
    """What the model writes (ids 0..23 only): point instr and the 5 other actions get AP 0
    (vsrl_eval would stop on them), so its agent mean is the sum over 21 divided by 26."""
    repo, dets, _ = scenario
    records = json.loads(dets.read_text())["images"]
    for r in records:
        keep = [j for j, k in enumerate(r["actions"]) if k < 24]
        for f in ("human_boxes", "object_boxes", "actions", "scores"):
            r[f] = [r[f][j] for j in keep]
    model_only = tmp_path / "model.json"
    model_only.write_text(json.dumps({"images": records}))
    result = evaluate_vcoco_files(repo, model_only)
    assert (result.other_agent_ap == 0).all() and result.point_ap_s1 == 0
    maps = result.maps
    assert maps["agent_vsrl_eval"] == pytest.approx(np.nansum(result.agent_ap) / 26)
    assert maps["role_scenario_1_with_point"] == pytest.approx(
        np.nansum(result.role_ap_s1) / 25)


def test_the_row_conventions_differ_on_shared_human_boxes(
        scenario: tuple[Path, Path, bool]) -> None:
    repo, dets, _ = scenario
    per_row = evaluate_vcoco_files(repo, dets)                      # the default
    per_person = evaluate_vcoco_files(repo, dets, rows="per-person")
    assert per_row.rows == "per-row" and per_person.rows == "per-person"
    worst = np.nanmax(np.abs(per_row.agent_ap - per_person.agent_ap))
    assert worst > 1e-3
    print(f"largest agent-AP difference between per-row and per-person: {100 * worst:.2f}")


def test_the_default_is_in_the_help() -> None:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    option = next(a for a in subparsers["eval"]._actions if "--vcoco-rows" in a.option_strings)
    assert option.default == "per-row" and "default: %(default)s" in option.help
    doc = (Path(__file__).parents[1] / "docs" / "evaluation.md").read_text()
    assert "--vcoco-rows" in doc and "per-row" in doc and "per-person" in doc

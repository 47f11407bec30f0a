"""V-COCO agent AP and role AP (scenarios 1 and 2) with the semantics of the official
``vsrl_eval.py`` (s-gupta/v-coco, ``VCOCOeval._do_agent_eval`` / ``_do_role_eval``).

Ground truth: :class:`~clip4hoi.data.vcoco_official.VCOCOGroundTruth`, from the official
files (:func:`~clip4hoi.data.vcoco_official.load_vcoco_official`; the numbers papers
report) or from per-pair files (not the official protocol: fewer positives, see
:data:`~clip4hoi.data.vcoco_official.PER_PAIR_WARNING`).

Detections (:class:`~clip4hoi.evaluation.detections.HOIDetections`, from ``DETS.json`` with
``"actions"``): one row per (human box, role-object box or none, action-role id 0..23,
score), boxes 0-based inclusive pixel indices of the original image. Each row stands for
one entry of the official detection list that carries only this action's agent score and
this action-role's ``[box, score]`` — the convention of the pair-based detectors (UPT,
PViC, ...) that feed ``vsrl_eval``. A row without object box (NaN) is the empty role
prediction that scenario 1 asks for when the role object is not visible (``[0, 0, 0, 0]``
counts as empty too, as in the official code).

Semantics, per image and per action (agent) or action-role (role):

* candidates: the rows with a score for it (agent: rows of one image with the same human
  box and action are merged into one agent detection with the best score, see
  ``merge_agents``), visited by descending score (:func:`descending`);
* each is matched to the ground-truth person with the largest IoU (pixel-inclusive,
  ``+ 1``, in float32 as the official code; ground truth ``x2 - 1``, ``y2 - 1`` of the
  continuous boxes); when that person is not annotated in V-COCO (label -1) the detection
  is **ignored**; otherwise it is a true positive when the person does the action,
  IoU >= 0.5, (role) the role IoU >= 0.5 and the person is not covered yet — else a false
  positive;
* role IoU when the person's role object is not visible: scenario 1 — 1 if the prediction
  has no role box, else 0; scenario 2 — always 1;
* AP: all images' scores sorted descending (:func:`descending`), ``rec = tp / npos`` with
  ``npos`` = persons doing the action, every-point VOC AP (``voc_ap`` of ``vsrl_eval`` —
  V-COCO's official AP, unlike HICO-DET's 11-point one).

**Score ties.** ``vsrl_eval`` orders by ``argsort()[::-1]`` (numpy's default, unstable
sort), so its result on tied scores depends on the numpy version (numpy 2.x sorts float32
with SIMD code that orders ties differently from 1.x). This project fixes the order:
descending score, and among equal float32 scores the *later* input first — what
``argsort()[::-1]`` gives whenever numpy's sort keeps ties in input order (numpy 1.x for up
to 16 candidates, e.g. most per-image lists). "Input order" is the order of an image's
rows in ``DETS.json`` for the per-image visit, and for the final AP the order in which the
visits produced the scores (images in ground-truth order, rows in visiting order).

Means: ``role_scenario_{1,2}`` over the 24 action-roles (what papers report);
``role_scenario_{1,2}_with_point`` over 25 with ``point instr``, the mean ``vsrl_eval``
prints (``np.nanmean`` of its role APs): DETS.json has no ``point`` class, so its AP is 0
when the ground truth has pointing persons (the official code would crash on an action
without detections) — the mean over 25 is 24/25 of the mean over 24 then.

Differences, documented: AP arithmetic is float64 (the official code mixes float32; the
results differ below 1e-6); an image with detections but no ground-truth person makes them
false positives (the official code would crash); an action with no detection has AP 0
(official: crash). Agent AP covers the 21 actions that have roles (``stand``, ``walk``,
``run``, ``smile``, ``point`` have no action-role id); role AP the 24 action-roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clip4hoi.data import metadata
from clip4hoi.data.annotations import (
    NUM_VCOCO,
    VCOCO_AGENT_ACTIONS,
    VCOCO_ROLE_ACTION,
    HOIAnnotations,
)
from clip4hoi.data.vcoco_official import (
    PER_PAIR_WARNING,
    VCOCOGroundTruth,
    find_vcoco_files,
    read_vcoco_ground_truth,
    vcoco_ground_truth,
)
from clip4hoi.evaluation.detections import HOIDetections, read_detections

MIN_OVERLAP = 0.5


@dataclass
class VCOCOResult:
    """AP as fractions; NaN where there is no ground truth."""

    agent_ap: np.ndarray        # [21] per agent action (VCOCO_AGENT_ACTIONS)
    agent_npos: np.ndarray      # [21]
    role_ap_s1: np.ndarray      # [24] per action-role (metadata.VCOCO_ACTIONS), scenario 1
    role_ap_s2: np.ndarray      # [24] scenario 2
    role_npos: np.ndarray       # [24]
    point_npos: int | None = None   # persons pointing (official files only)
    complete: bool = True       # False: ground truth from per-pair files (see notes)
    notes: list[str] = field(default_factory=list)

    @property
    def point_ap(self) -> float:
        """AP of ``point instr``: 0 with pointing persons (no detection can have it), NaN
        without, or when the ground truth does not say (per-pair files)."""
        return 0.0 if self.point_npos else float("nan")

    @property
    def maps(self) -> dict[str, float | None]:
        """Mean AP (fractions): ``agent``, ``role_scenario_1`` / ``_2`` over the 24
        action-roles, and ``role_scenario_1_with_point`` / ``_2_with_point`` over 25 as
        ``vsrl_eval`` prints them (None for per-pair ground truth, which lacks ``point``)."""
        out: dict[str, float | None] = {"agent": float(np.nanmean(self.agent_ap))}
        for s, ap in ((1, self.role_ap_s1), (2, self.role_ap_s2)):
            out[f"role_scenario_{s}"] = float(np.nanmean(ap))
        for s, ap in ((1, self.role_ap_s1), (2, self.role_ap_s2)):
            out[f"role_scenario_{s}_with_point"] = None if self.point_npos is None \
                else float(np.nanmean(np.append(ap, self.point_ap)))
        return out


def descending(scores: np.ndarray) -> np.ndarray:
    """Indices of ``scores`` by descending float32 score; ties: the later index first.

    The project's fixed tie order (module docstring): the same for every numpy version,
    equal to ``vsrl_eval``'s ``argsort()[::-1]`` wherever numpy's sort is stable."""
    scores = np.asarray(scores, dtype=np.float32)
    return np.lexsort((np.arange(len(scores)), scores))[::-1]


def overlaps(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``get_overlap`` of ``vsrl_eval``: pixel-inclusive IoU of ``boxes`` [P, 4] with one
    box (both in the inclusive frame, float32 as the official arrays); NaN boxes give NaN."""
    iw = np.maximum(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]) + 1.0, 0.0)
    inter = iw * ih
    union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
             + (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0) - inter)
    return inter / union


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """Every-point interpolated AP (``voc_ap`` of ``vsrl_eval``)."""
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _ap(scores: list[float], tp: list[bool], npos: int) -> float:
    if npos == 0:
        return float("nan")
    if not scores:
        return 0.0
    flags = np.asarray(tp, dtype=np.float64)[descending(np.asarray(scores))]
    ctp, cfp = np.cumsum(flags), np.cumsum(1.0 - flags)
    return voc_ap(ctp / npos, ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps))


def _inclusive32(boxes: np.ndarray) -> np.ndarray:
    """Continuous ground-truth boxes in the official inclusive float32 frame."""
    out = boxes.astype(np.float64, copy=True)
    out[..., 2:] -= 1.0
    return out.astype(np.float32)


def _merge_agents(rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Of the rows with the same human box keep the best-scored one (the first on ties)."""
    best: dict[tuple[float, ...], int] = {}
    for j in rows.tolist():
        key = tuple(boxes[j].tolist())
        if key not in best or scores[j] > scores[best[key]]:
            best[key] = j
    return np.sort(np.fromiter(best.values(), dtype=np.int64))


def evaluate_vcoco(detections: HOIDetections, ground_truth: VCOCOGroundTruth | HOIAnnotations,
                   merge_agents: bool = True) -> VCOCOResult:
    """Agent AP and role AP (scenarios 1 and 2) of ``detections`` (aligned to the ground
    truth's images). ``ground_truth``: per-person :class:`VCOCOGroundTruth` (official
    layout) or per-pair V-COCO annotations (converted by :func:`vcoco_ground_truth`; not
    the official protocol).

    ``merge_agents``: for agent AP, rows of one image with the same human box and action
    (e.g. ``eat obj`` and ``eat instr`` of one pair) are one agent detection with the best
    score, as in the official per-person detection list; ``False`` counts every row (the
    UPT cache convention: the extra rows are false positives)."""
    gt = vcoco_ground_truth(ground_truth) if isinstance(ground_truth, HOIAnnotations) \
        else ground_truth
    if detections.num_images != len(gt):
        raise ValueError(f"detections are aligned to {detections.num_images} images, the "
                         f"ground truth {gt.source} has {len(gt)}")
    n_act = len(VCOCO_AGENT_ACTIONS)
    role_action = np.asarray(VCOCO_ROLE_ACTION)
    agent_sc: list[list[float]] = [[] for _ in range(n_act)]
    agent_tp: list[list[bool]] = [[] for _ in range(n_act)]
    role_sc: list[list[float]] = [[] for _ in range(NUM_VCOCO)]
    role_tp: dict[int, list[list[bool]]] = {1: [[] for _ in range(NUM_VCOCO)],
                                            2: [[] for _ in range(NUM_VCOCO)]}
    detections = detections.sorted_by_image()
    bounds = detections.image_slices()

    for i in range(len(gt)):
        persons = _inclusive32(gt.person_boxes[i])                    # [P, 4]
        labels = gt.agent_labels[i]                                   # [P, 21]
        roles = _inclusive32(gt.role_boxes[i])                        # [P, 24, 4]
        ignore = (labels == -1).any(1) if len(labels) else np.zeros(0, bool)
        rows = slice(bounds[i], bounds[i + 1])
        det_h = detections.boxes_h[rows].astype(np.float32)
        det_o = detections.boxes_o[rows].astype(np.float32)
        det_l = detections.labels[rows]
        det_s = detections.scores[rows].astype(np.float32)
        if len(det_l) == 0:
            continue
        # best person of each detection: [M] index and IoU (-1 / 0 without persons)
        if len(persons):
            ious = np.stack([overlaps(persons, b) for b in det_h])    # [M, P]
            best, best_ov = ious.argmax(1), ious.max(1)
        else:
            best, best_ov = np.full(len(det_l), -1), np.zeros(len(det_l), np.float32)

        for a in range(n_act):      # agent AP: rows of any action-role of action a
            cand = np.flatnonzero(role_action[det_l] == a)
            if merge_agents and len(cand) > 1:
                cand = _merge_agents(cand, det_h, det_s)
            covered = np.zeros(len(persons), dtype=bool)
            for j in cand[descending(det_s[cand])]:
                p = best[j]
                if p >= 0 and ignore[p]:
                    continue
                ok = p >= 0 and labels[p, a] == 1 and best_ov[j] >= MIN_OVERLAP
                agent_sc[a].append(float(det_s[j]))
                agent_tp[a].append(bool(ok and not covered[p]))
                if ok:
                    covered[p] = True

        for k in range(NUM_VCOCO):  # role AP: rows of action-role k
            cand = np.flatnonzero(det_l == k)
            a = role_action[k]
            covered_s = {1: np.zeros(len(persons), bool), 2: np.zeros(len(persons), bool)}
            for j in cand[descending(det_s[cand])]:
                p = best[j]
                if p >= 0 and ignore[p]:
                    continue
                role_sc[k].append(float(det_s[j]))
                agent_ok = p >= 0 and labels[p, a] == 1 and best_ov[j] >= MIN_OVERLAP
                for scenario in (1, 2):
                    ok = agent_ok and _role_overlap(roles[p, k], det_o[j], scenario) \
                        >= MIN_OVERLAP
                    role_tp[scenario][k].append(bool(ok and not covered_s[scenario][p]))
                    if ok:
                        covered_s[scenario][p] = True

    agent_npos = gt.agent_npos
    role_npos = agent_npos[role_action]
    return VCOCOResult(
        agent_ap=np.array([_ap(agent_sc[a], agent_tp[a], agent_npos[a]) for a in range(n_act)]),
        agent_npos=agent_npos,
        role_ap_s1=np.array([_ap(role_sc[k], role_tp[1][k], role_npos[k])
                             for k in range(NUM_VCOCO)]),
        role_ap_s2=np.array([_ap(role_sc[k], role_tp[2][k], role_npos[k])
                             for k in range(NUM_VCOCO)]),
        role_npos=role_npos, point_npos=gt.other_npos.get("point") if gt.complete else None,
        complete=gt.complete, notes=list(gt.notes))


def _role_overlap(gt_role: np.ndarray, det_role: np.ndarray, scenario: int) -> float:
    """Role IoU of ``vsrl_eval`` (boxes in the inclusive frame; NaN = none)."""
    if np.isnan(gt_role).any():                       # role object not visible
        if scenario == 2:
            return 1.0
        empty = np.isnan(det_role).all() or (det_role == 0.0).all()
        return 1.0 if empty else 0.0
    if np.isnan(det_role).any():
        return 0.0
    return float(overlaps(gt_role[None], det_role)[0])


def evaluate_vcoco_files(annotations: str | Path, detections: str | Path, split: str = "test",
                         coco: str | Path | None = None, split_ids: str | Path | None = None
                         ) -> VCOCOResult:
    """Evaluate a V-COCO ``DETS.json``. ``annotations``: the official layout (a folder or
    ``vcoco_{split}.json``, the COCO file and ids found beside it or given by ``coco`` /
    ``split_ids``) or a per-pair ``instances_vcoco_*.json``
    (:func:`~clip4hoi.data.vcoco_official.find_vcoco_files`)."""
    files = find_vcoco_files(annotations, split, coco, split_ids)
    gt = read_vcoco_ground_truth(files)
    if files.official and files.split_ids is None:
        gt.notes.append(f"no vcoco_{split}.ids found: images are those of {files.annotations}")
    return evaluate_vcoco(read_detections(detections, gt), gt)


def _pct(x: float | None) -> float | None:
    return None if x is None or np.isnan(x) else round(100.0 * float(x), 6)


def format_vcoco_table(result: VCOCOResult) -> str:
    """A readable table: the means, then every action-role; per-pair ground truth starts
    and ends with :data:`~clip4hoi.data.vcoco_official.PER_PAIR_WARNING`."""
    m = {k: _pct(v) for k, v in result.maps.items()}

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    lines = [PER_PAIR_WARNING, ""] if not result.complete else []
    lines += [f"V-COCO role AP ({'official files' if result.complete else 'PER-PAIR files'}) "
              f"scenario 1 {num(m['role_scenario_1'])}  scenario 2 "
              f"{num(m['role_scenario_2'])}  (mean of 24 action-roles, as papers report)",
              f"  vsrl_eval's printed mean of 25 (with point, AP {num(_pct(result.point_ap))}): "
              f"scenario 1 {num(m['role_scenario_1_with_point'])}  scenario 2 "
              f"{num(m['role_scenario_2_with_point'])}",
              f"  agent mAP {num(m['agent'])} (21 actions with roles)",
              f"{'action-role':<24} {'npos':>5} {'S1 AP':>7} {'S2 AP':>7}"]
    for k, name in enumerate(metadata.VCOCO_ACTIONS):
        lines.append(f"{name:<24} {result.role_npos[k]:>5d} "
                     f"{num(_pct(result.role_ap_s1[k])):>7} {num(_pct(result.role_ap_s2[k])):>7}")
    if result.point_npos is not None:
        lines.append(f"{'(point instr)':<24} {result.point_npos:>5d} "
                     f"{num(_pct(result.point_ap)):>7} {num(_pct(result.point_ap)):>7}")
    lines += [f"note: {note}" for note in result.notes]
    if not result.complete:
        lines += ["", PER_PAIR_WARNING]
    return "\n".join(lines)


def vcoco_result_to_json(result: VCOCOResult) -> dict:
    """``{"protocol", "map": {...}, "agent": [...], "roles": [...], ...}`` in percent."""
    return {
        "protocol": "official" if result.complete else "per-pair (NOT the official protocol)",
        "map": {k: _pct(v) for k, v in result.maps.items()},
        "agent": [{"action": name, "ap": _pct(result.agent_ap[a]),
                   "npos": int(result.agent_npos[a])}
                  for a, name in enumerate(VCOCO_AGENT_ACTIONS)],
        "roles": [{"action_role": name, "ap_scenario_1": _pct(result.role_ap_s1[k]),
                   "ap_scenario_2": _pct(result.role_ap_s2[k]),
                   "npos": int(result.role_npos[k])}
                  for k, name in enumerate(metadata.VCOCO_ACTIONS)],
        "point_instr": {"ap": _pct(result.point_ap), "npos": result.point_npos},
        "complete_ground_truth": result.complete,
        "warning": None if result.complete else PER_PAIR_WARNING,
        "notes": result.notes,
    }

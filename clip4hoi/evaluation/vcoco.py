"""V-COCO agent AP and role AP (scenarios 1 and 2) with the semantics of the official
``vsrl_eval.py`` (s-gupta/v-coco, ``VCOCOeval._do_agent_eval`` / ``_do_role_eval``).

Ground truth: :class:`~clip4hoi.data.vcoco_official.VCOCOGroundTruth`, from the official
files (:func:`~clip4hoi.data.vcoco_official.load_vcoco_official`; the numbers papers
report) or from per-pair files (not the official protocol: fewer positives, see
:data:`~clip4hoi.data.vcoco_official.PER_PAIR_WARNING`).

Detections (:class:`~clip4hoi.evaluation.detections.HOIDetections`, from ``DETS.json`` with
``"actions"``): one row per (human box, role-object box or none, id, score), boxes 0-based
inclusive pixel indices of the original image. The ids
(:data:`~clip4hoi.data.vcoco_official.VCOCO_DETECTION_LABELS`) are the 24 action-roles of
the class set (0..23, what the model predicts), ``point instr`` (24) and the four actions
without a role object, ``stand``, ``walk``, ``run``, ``smile`` (25..28, an agent score
only): ``vsrl_eval`` scores all of them, and a file from another exporter may carry them.
A row without object box (NaN) is the empty role prediction that scenario 1 asks for when
the role object is not visible (``[0, 0, 0, 0]`` counts as empty too, as in the official
code).

How rows become the entries of the official detection list (``rows``, ``clip4hoi eval
--vcoco-rows``), each convention scored as ``vsrl_eval`` scores its detection list:

* ``per-row`` (the default): every row is one entry that carries only its action's agent
  score and its action-role's ``[box, score]`` — what pair-based detectors (UPT, PViC, ...)
  write for ``vsrl_eval``, and what ``clip4hoi test`` writes: agent AP counts every row,
  so several rows of one person and action (``eat obj`` and ``eat instr``, or one action
  with several objects) are several agent detections, all but one false positives;
* ``per-person``: the rows of an image that share a human box are one person's entry, as
  in a per-person detection list (one entry per detected human, every action's agent score
  and every action-role's best ``[box, score]``): per action the agent score is the best of
  the person's rows, per action-role the best-scored row is its ``[box, score]``.

On the same rows the two differ in agent AP (by up to 2.5 to 3.6 AP per action on the
synthetic sets of the tests) and, with several rows of one person and action-role, in role
AP.

Semantics, per image and per action (agent) or action-role (role):

* candidates: the entries with a score for it (see ``rows`` above), visited by descending
  score (:func:`descending`);
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

Means (:attr:`VCOCOResult.maps`), each labelled where printed:

* ``role_scenario_{1,2}``: over the 24 action-roles — what papers report;
* ``role_scenario_{1,2}_with_point``: over 25 with ``point instr`` — the "Average Role AP"
  that ``vsrl_eval`` prints (``np.nanmean`` of its role APs), ``point instr`` scored from
  the rows of id 24 (AP 0 without any: the official code would stop);
* ``agent``: the mean agent AP of the 21 actions with action-roles;
* ``agent_vsrl_eval``: the "Average Agent AP" that ``vsrl_eval`` prints: the sum of the
  agent APs of all 26 actions (``np.nansum``) divided by 26 — ``point``, ``stand``, ``walk``,
  ``run`` and ``smile`` included, from the rows of ids 24..28. A model of the 24 classes
  has none of those: their APs are then 0 (the official code would stop on an action
  without detections) and this mean is at most 21/26 of a mean over 21.

The ``_with_point`` and ``agent_vsrl_eval`` means need the official files (per-pair files
do not have these actions: None, and rows of ids 24..28 are left out with a note).

Differences, documented: AP arithmetic is float64 (the official code mixes float32; the
results differ below 1e-6); an image with detections but no ground-truth person makes them
false positives (the official code would crash); an action with no detection has AP 0
(official: crash).
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
    VCOCO_DETECTION_LABELS,
    VCOCO_OTHER_ACTIONS,
    VCOCOGroundTruth,
    find_vcoco_files,
    read_vcoco_ground_truth,
    vcoco_ground_truth,
)
from clip4hoi.evaluation.detections import HOIDetections, read_detections

MIN_OVERLAP = 0.5
ROWS = ("per-row", "per-person")
NUM_ACTIONS_OFFICIAL = len(VCOCO_AGENT_ACTIONS) + len(VCOCO_OTHER_ACTIONS)   # 26
# Agent column (VCOCO_AGENT_ACTIONS, then VCOCO_OTHER_ACTIONS) and role column (the 24
# action-roles, then point instr; -1: none) of each DETS.json id.
_AGENT_OF = np.array([*VCOCO_ROLE_ACTION, *range(len(VCOCO_AGENT_ACTIONS),
                                                 NUM_ACTIONS_OFFICIAL)])
_ROLE_OF = np.array([*range(NUM_VCOCO + 1), *[-1] * (len(VCOCO_OTHER_ACTIONS) - 1)])
assert len(_AGENT_OF) == len(_ROLE_OF) == len(VCOCO_DETECTION_LABELS)


@dataclass
class VCOCOResult:
    """AP as fractions; NaN where there is no ground truth."""

    agent_ap: np.ndarray        # [21] per agent action (VCOCO_AGENT_ACTIONS)
    agent_npos: np.ndarray      # [21]
    role_ap_s1: np.ndarray      # [24] per action-role (metadata.VCOCO_ACTIONS), scenario 1
    role_ap_s2: np.ndarray      # [24] scenario 2
    role_npos: np.ndarray       # [24]
    point_npos: int | None = None   # persons pointing (official files only)
    point_ap_s1: float = float("nan")   # point instr, scenario 1 (official files only)
    point_ap_s2: float = float("nan")
    other_agent_ap: np.ndarray | None = None    # [5] VCOCO_OTHER_ACTIONS (official files)
    other_agent_npos: np.ndarray | None = None  # [5]
    rows: str = "per-row"       # how rows became the official entries (ROWS)
    complete: bool = True       # False: ground truth from per-pair files (see notes)
    notes: list[str] = field(default_factory=list)

    @property
    def maps(self) -> dict[str, float | None]:
        """Mean AP (fractions): ``agent`` (21 actions) and ``agent_vsrl_eval`` (the sum over
        26 / 26), ``role_scenario_1`` / ``_2`` over the 24 action-roles and
        ``role_scenario_1_with_point`` / ``_2_with_point`` over 25, as ``vsrl_eval`` prints
        them (None for per-pair ground truth, which lacks the other actions)."""
        out: dict[str, float | None] = {"agent": float(np.nanmean(self.agent_ap))}
        out["agent_vsrl_eval"] = None if self.other_agent_ap is None else float(
            np.nansum(np.append(self.agent_ap, self.other_agent_ap)) / NUM_ACTIONS_OFFICIAL)
        for s, ap in ((1, self.role_ap_s1), (2, self.role_ap_s2)):
            out[f"role_scenario_{s}"] = float(np.nanmean(ap))
        for s, ap, point in ((1, self.role_ap_s1, self.point_ap_s1),
                             (2, self.role_ap_s2, self.point_ap_s2)):
            out[f"role_scenario_{s}_with_point"] = None if self.point_npos is None \
                else float(np.nanmean(np.append(ap, point)))
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


def _best_per_person(rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Of the rows with the same human box keep the best-scored one (the first on ties):
    one person's entry of a per-person detection list."""
    best: dict[tuple[float, ...], int] = {}
    for j in rows.tolist():
        key = tuple(boxes[j].tolist())
        if key not in best or scores[j] > scores[best[key]]:
            best[key] = j
    return np.sort(np.fromiter(best.values(), dtype=np.int64))


def evaluate_vcoco(detections: HOIDetections, ground_truth: VCOCOGroundTruth | HOIAnnotations,
                   rows: str = "per-row") -> VCOCOResult:
    """Agent AP and role AP (scenarios 1 and 2) of ``detections`` (aligned to the ground
    truth's images). ``ground_truth``: per-person :class:`VCOCOGroundTruth` (official
    layout) or per-pair V-COCO annotations (converted by :func:`vcoco_ground_truth`; not
    the official protocol). ``rows``: ``per-row`` or ``per-person``, how the rows become
    the entries of the official detection list (module docstring)."""
    if rows not in ROWS:
        raise ValueError(f"V-COCO rows {rows!r}: choose from {', '.join(ROWS)}")
    gt = vcoco_ground_truth(ground_truth) if isinstance(ground_truth, HOIAnnotations) \
        else ground_truth
    if detections.num_images != len(gt):
        raise ValueError(f"detections are aligned to {detections.num_images} images, the "
                         f"ground truth {gt.source} has {len(gt)}")
    notes = list(gt.notes)
    full = gt.other_labels is not None and gt.point_boxes is not None   # all 26 actions
    if not full:
        detections = _without_other_actions(detections, notes)
    n_act = NUM_ACTIONS_OFFICIAL if full else len(VCOCO_AGENT_ACTIONS)
    role_action = _AGENT_OF[:NUM_VCOCO + 1 if full else NUM_VCOCO]   # [R] agent column
    # every visited entry over all images, in visiting order: its score and tp flag
    agent_sc: list[list[float]] = [[] for _ in range(n_act)]
    agent_tp: list[list[bool]] = [[] for _ in range(n_act)]
    role_sc: list[list[float]] = [[] for _ in role_action]
    role_tp = {s: [[] for _ in role_action] for s in (1, 2)}   # scenario -> R × [flags]
    npos = np.zeros(n_act, dtype=np.int64)                     # [A] persons doing each
    detections = detections.sorted_by_image()
    bounds = detections.image_slices()
    for i in range(len(gt)):
        persons, labels, roles = _image_ground_truth(gt, i, full)
        npos += (labels == 1).sum(0)
        if bounds[i] == bounds[i + 1]:
            continue
        image = _match_persons(persons, labels, roles, detections,
                               slice(bounds[i], bounds[i + 1]), rows == "per-person")
        for a in np.unique(image.agent_of).tolist():       # the actions with entries
            scores, tp = _match_agent(image, a)
            agent_sc[a] += scores
            agent_tp[a] += tp
        for k in np.unique(image.role_of[image.role_of >= 0]).tolist():   # action-roles
            scores, tp_s = _match_role(image, k, int(role_action[k]))
            role_sc[k] += scores
            for s in (1, 2):
                role_tp[s][k] += tp_s[s]
    agent_ap = np.array([_ap(agent_sc[a], agent_tp[a], npos[a]) for a in range(n_act)])
    role_ap = {s: np.array([_ap(role_sc[k], role_tp[s][k], npos[a])
                            for k, a in enumerate(role_action)]) for s in (1, 2)}
    return _vcoco_result(agent_ap, role_ap, npos, role_action, full,
                         rows=rows, complete=gt.complete, notes=notes)


def _without_other_actions(detections: HOIDetections, notes: list[str]) -> HOIDetections:
    """The rows of ids 0..23 alone, with a note when rows of ids 24..28 (actions that
    per-pair ground truth does not have) are left out."""
    extra = detections.labels >= NUM_VCOCO
    if not extra.any():
        return detections
    notes.append(f"{int(extra.sum())} detection(s) of point instr, stand, walk, run or "
                 f"smile (ids 24..28) left out: this ground truth does not have them")
    return detections.select(~extra)


def _image_ground_truth(gt: VCOCOGroundTruth, i: int, full: bool
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``i``'s persons [P, 4], labels [P, A] in {1, 0, -1} and role boxes [P, R, 4]
    in the official inclusive float32 frame; ``full``: with the other five actions
    (A = 26) and point instr (R = 25), else A = 21 and R = 24."""
    persons = _inclusive32(gt.person_boxes[i])
    labels = gt.agent_labels[i]
    roles = _inclusive32(gt.role_boxes[i])
    if full:
        labels = np.concatenate([labels, gt.other_labels[i]], axis=1)
        roles = np.concatenate([roles, _inclusive32(gt.point_boxes[i])[:, None]], axis=1)
    return persons, labels, roles


@dataclass
class _ImageMatch:
    """One image's ground truth and detections, each detection matched to the person of
    largest IoU (official inclusive float32 frame)."""

    labels: np.ndarray      # [P, A] in {1, 0, -1}
    roles: np.ndarray       # [P, R, 4] role-object boxes, NaN = none
    ignore: np.ndarray      # [P] bool: a COCO person that V-COCO did not annotate
    boxes_h: np.ndarray     # [M, 4] detected human boxes
    boxes_o: np.ndarray     # [M, 4] detected role-object boxes, NaN = none
    agent_of: np.ndarray    # [M] agent column of each detection
    role_of: np.ndarray     # [M] role column of each detection, -1 = none
    scores: np.ndarray      # [M]
    best: np.ndarray        # [M] index of the best person, -1 without persons
    best_ov: np.ndarray     # [M] its IoU (0 without persons)
    per_person: bool        # rows == "per-person": one entry per human box


def _match_persons(persons: np.ndarray, labels: np.ndarray, roles: np.ndarray,
                   detections: HOIDetections, span: slice, per_person: bool) -> _ImageMatch:
    """The detections ``span`` of one image matched to its ``persons`` [P, 4]."""
    det_h = detections.boxes_h[span].astype(np.float32)
    det_l = detections.labels[span]
    if len(persons):
        ious = np.stack([overlaps(persons, b) for b in det_h])    # [M, P]
        best, best_ov = ious.argmax(1), ious.max(1)
    else:
        best, best_ov = np.full(len(det_l), -1), np.zeros(len(det_l), np.float32)
    return _ImageMatch(
        labels=labels, roles=roles,
        ignore=(labels == -1).any(1) if len(labels) else np.zeros(0, bool),
        boxes_h=det_h, boxes_o=detections.boxes_o[span].astype(np.float32),
        agent_of=_AGENT_OF[det_l], role_of=_ROLE_OF[det_l],
        scores=detections.scores[span].astype(np.float32), best=best, best_ov=best_ov,
        per_person=per_person)


def _visiting_order(image: _ImageMatch, column_of: np.ndarray, column: int) -> np.ndarray:
    """The entries with a score for ``column`` (of ``image.agent_of`` or ``.role_of``):
    indices into the image's detections by descending score."""
    cand = np.flatnonzero(column_of == column)
    if image.per_person and len(cand) > 1:
        cand = _best_per_person(cand, image.boxes_h, image.scores)
    return cand[descending(image.scores[cand])]


def _agent_match(image: _ImageMatch, j: int, a: int) -> tuple[int, bool] | None:
    """Detection ``j``'s best person (-1: none) and whether it is that person doing action
    ``a`` with IoU >= 0.5; None when the person is ignored (not annotated)."""
    p = image.best[j]
    if p >= 0 and image.ignore[p]:
        return None
    return p, bool(p >= 0 and image.labels[p, a] == 1 and image.best_ov[j] >= MIN_OVERLAP)


def _match_agent(image: _ImageMatch, a: int) -> tuple[list[float], list[bool]]:
    """Agent AP of action ``a`` on one image: the visited entries' scores and true-positive
    flags (a person is found once)."""
    scores, tp = [], []
    covered = np.zeros(len(image.labels), dtype=bool)     # [P] persons found already
    for j in _visiting_order(image, image.agent_of, a):
        match = _agent_match(image, j, a)
        if match is None:
            continue
        p, ok = match
        scores.append(float(image.scores[j]))
        tp.append(bool(ok and not covered[p]))
        if ok:
            covered[p] = True
    return scores, tp


def _match_role(image: _ImageMatch, k: int, a: int
                ) -> tuple[list[float], dict[int, list[bool]]]:
    """Role AP of action-role ``k`` (of agent action ``a``) on one image: the visited
    entries' scores and true-positive flags per scenario (1, 2)."""
    scores: list[float] = []
    tp: dict[int, list[bool]] = {1: [], 2: []}
    covered = {s: np.zeros(len(image.labels), bool) for s in (1, 2)}   # [P] per scenario
    for j in _visiting_order(image, image.role_of, k):
        match = _agent_match(image, j, a)
        if match is None:
            continue
        p, agent_ok = match
        scores.append(float(image.scores[j]))
        for s in (1, 2):
            ok = agent_ok and _role_overlap(image.roles[p, k], image.boxes_o[j], s) \
                >= MIN_OVERLAP
            tp[s].append(bool(ok and not covered[s][p]))
            if ok:
                covered[s][p] = True
    return scores, tp


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


def _vcoco_result(agent_ap: np.ndarray, role_ap: dict[int, np.ndarray], npos: np.ndarray,
                  role_action: np.ndarray, full: bool, *, rows: str, complete: bool,
                  notes: list[str]) -> VCOCOResult:
    """The result from the APs of the actions ([A]) and action-roles (scenario -> [R]):
    the 21 and 24 of the class set, and with ``full`` the other five and point instr."""
    n21 = len(VCOCO_AGENT_ACTIONS)
    return VCOCOResult(
        agent_ap=agent_ap[:n21], agent_npos=npos[:n21],
        role_ap_s1=role_ap[1][:NUM_VCOCO], role_ap_s2=role_ap[2][:NUM_VCOCO],
        role_npos=npos[role_action[:NUM_VCOCO]],
        point_npos=int(npos[role_action[NUM_VCOCO]]) if full else None,
        point_ap_s1=float(role_ap[1][NUM_VCOCO]) if full else float("nan"),
        point_ap_s2=float(role_ap[2][NUM_VCOCO]) if full else float("nan"),
        other_agent_ap=agent_ap[n21:] if full else None,
        other_agent_npos=npos[n21:] if full else None,
        rows=rows, complete=complete, notes=notes)


def evaluate_vcoco_files(annotations: str | Path, detections: str | Path, split: str = "test",
                         coco: str | Path | None = None, split_ids: str | Path | None = None,
                         rows: str = "per-row") -> VCOCOResult:
    """Evaluate a V-COCO ``DETS.json``. ``annotations``: the official layout (a folder or
    ``vcoco_{split}.json``, the COCO file and ids found beside it or given by ``coco`` /
    ``split_ids``) or a per-pair ``instances_vcoco_*.json``
    (:func:`~clip4hoi.data.vcoco_official.find_vcoco_files`); ``rows``: see
    :func:`evaluate_vcoco`."""
    files = find_vcoco_files(annotations, split, coco, split_ids)
    gt = read_vcoco_ground_truth(files)
    if files.official and files.split_ids is None:
        gt.notes.append(f"no vcoco_{split}.ids found: images are those of {files.annotations}")
    return evaluate_vcoco(read_detections(detections, gt), gt, rows)


def _pct(x: float | None) -> float | None:
    return None if x is None or np.isnan(x) else round(100.0 * float(x), 6)


def format_vcoco_table(result: VCOCOResult) -> str:
    """A readable table: the four means, each labelled, then every action-role and the
    other actions; per-pair ground truth starts and ends with
    :data:`~clip4hoi.data.vcoco_official.PER_PAIR_WARNING`."""
    m = {k: _pct(v) for k, v in result.maps.items()}

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    lines = [PER_PAIR_WARNING, ""] if not result.complete else []
    lines += [f"V-COCO ({'official files' if result.complete else 'PER-PAIR files'}; "
              f"detections {result.rows})",
              f"  role AP, mean of the 24 action-roles (as papers report):  scenario 1 "
              f"{num(m['role_scenario_1'])}  scenario 2 {num(m['role_scenario_2'])}",
              f"  role AP, mean of 25 with point instr (vsrl_eval's 'Average Role AP'):  "
              f"scenario 1 {num(m['role_scenario_1_with_point'])}  scenario 2 "
              f"{num(m['role_scenario_2_with_point'])}",
              f"  agent AP, mean of the 21 actions with action-roles:  {num(m['agent'])}",
              f"  agent AP, sum of the 26 actions' APs / 26 (vsrl_eval's 'Average Agent "
              f"AP'):  {num(m['agent_vsrl_eval'])}",
              f"{'action-role':<24} {'npos':>5} {'S1 AP':>7} {'S2 AP':>7}"]
    for k, name in enumerate(metadata.VCOCO_ACTIONS):
        lines.append(f"{name:<24} {result.role_npos[k]:>5d} "
                     f"{num(_pct(result.role_ap_s1[k])):>7} {num(_pct(result.role_ap_s2[k])):>7}")
    if result.point_npos is not None:
        lines.append(f"{'point instr':<24} {result.point_npos:>5d} "
                     f"{num(_pct(result.point_ap_s1)):>7} {num(_pct(result.point_ap_s2)):>7}")
    if result.other_agent_ap is not None:
        lines.append("agent AP of the actions outside the 21: " + ", ".join(
            f"{name} {num(_pct(ap))} ({n})" for name, ap, n in zip(
                VCOCO_OTHER_ACTIONS, result.other_agent_ap, result.other_agent_npos,
                strict=True)))
    lines += [f"note: {note}" for note in result.notes]
    if not result.complete:
        lines += ["", PER_PAIR_WARNING]
    return "\n".join(lines)


def vcoco_result_to_json(result: VCOCOResult) -> dict:
    """``{"protocol", "rows", "map": {...}, "agent": [...], "roles": [...], ...}`` in
    percent."""
    others = [] if result.other_agent_ap is None else [
        {"action": name, "ap": _pct(ap), "npos": int(n)} for name, ap, n in zip(
            VCOCO_OTHER_ACTIONS, result.other_agent_ap, result.other_agent_npos, strict=True)]
    return {
        "protocol": "official" if result.complete else "per-pair (NOT the official protocol)",
        "rows": result.rows,
        "map": {k: _pct(v) for k, v in result.maps.items()},
        "agent": [{"action": name, "ap": _pct(result.agent_ap[a]),
                   "npos": int(result.agent_npos[a])}
                  for a, name in enumerate(VCOCO_AGENT_ACTIONS)],
        "other_agents": others,
        "roles": [{"action_role": name, "ap_scenario_1": _pct(result.role_ap_s1[k]),
                   "ap_scenario_2": _pct(result.role_ap_s2[k]),
                   "npos": int(result.role_npos[k])}
                  for k, name in enumerate(metadata.VCOCO_ACTIONS)],
        "point_instr": {"ap_scenario_1": _pct(result.point_ap_s1),
                        "ap_scenario_2": _pct(result.point_ap_s2), "npos": result.point_npos},
        "complete_ground_truth": result.complete,
        "warning": None if result.complete else PER_PAIR_WARNING,
        "notes": result.notes,
    }

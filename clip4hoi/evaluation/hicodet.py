"""HOI mAP with HICO-DET's official MATLAB semantics (ho-rcnn ``eval_one.m`` /
``VOCevaldet_bboxpair.m``; docs spec §4), as a pure numpy function, for any class set:
HICO-DET's 600 classes (rare = the official 138) or a custom dataset's
(:mod:`clip4hoi.data.custom`; rare = fewer than N training pairs, when known).

Per HOI class: pool the detections of all test images (the images without annotation
included), stable-sort by descending score (ties: images in annotation order, then the
detections' input order — MATLAB's ``sort`` is stable); for each detection take, among the
image's ground-truth pairs of the class, the one with the largest
``ov = min(IoU_h, IoU_o)`` (the first one on ties); ``ov >= 0.5`` and unused → true
positive, used → false positive (no fallback to the next-best pair), otherwise false
positive. IoU counts pixels inclusively (``width = x2 - x1 + 1``) in the annotation's
1-based frame: detections (0-based indices) get ``+ 1``, the continuous ground truth
``x1 + 1, y1 + 1, x2, y2``. AP is the VOC2007 11-point AP at MATLAB's ``0:0.1:1``
thresholds, recall ``tp / npos`` in float64; a class without detections has AP 0.

Because there is no fallback, a detection is a true positive iff ``ov >= 0.5`` and it is
the *first* detection, in sorted order, whose best pair is that pair — so the whole
evaluation vectorises: one sort, one expansion of (detection, candidate pair) rows, one
``np.unique(..., return_index=True)``.

Options (all default to the official behaviour; :data:`PRESETS` bundles them):

* ``offset``: added to detection boxes before the comparison (1 official, 0 as the
  GEN-VLKT/QPIC python evaluator, which compares model boxes with the 1-based annotation);
* ``thresholds``: ``"matlab"`` (``0:0.1:1``) or ``"numpy"`` (``np.arange(0, 1.1, 0.1)``,
  whose 0.6 and 0.7 are one ulp above the nearest doubles);
* ``iou``: ``"pixel"`` (inclusive, official) or ``"coordinate"`` (``width = x2 - x1`` on the
  continuous boxes: detections ``x2 + 1``, ground truth as stored — the pocket evaluator of
  UPT/PViC; numerically the pixel IoU up to rounding);
* ``strict``: true positive needs ``ov > 0.5`` instead of ``>=`` (pocket);
* ``skip_empty``: drop the detections of the images without annotation (pocket);
* ``top_k``: keep the ``k`` best-scored detections of each image (QPIC/GEN-VLKT use 100).

Every-point ("VOC2010") AP is deliberately not offered: nobody reports HICO-DET with it.

Class groups: Full; Rare / Non-rare when the rare classes are known (HICO-DET's list, a
custom file's ``rare`` flags, or :func:`clip4hoi.data.custom.rare_classes` of a training
file); Unseen / Seen for a zero-shot split (a HICO-DET setting, or the unseen classes of
a custom split).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from clip4hoi.data import metadata
from clip4hoi.data.annotations import HOIAnnotations
from clip4hoi.data.custom import (
    RARE_THRESHOLD,
    load_annotations,
    rare_classes,
    unseen_class_ids,
)
from clip4hoi.data.metadata import HOIClassSet
from clip4hoi.errors import OptionError, worded
from clip4hoi.evaluation.detections import HOIDetections, read_detections

MIN_OVERLAP = 0.5


def matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop`` in doubles, built as its colon operator does: the first
    half as ``start + k * step``, the second half as ``stop - (n - k) * step``, the middle
    element of an even count as ``(start + stop) / 2``. ``0:0.1:1`` gives
    ``0.30000000000000004`` (above 0.3) but the nearest doubles of 0.6 and 0.7."""
    n = int(np.floor((stop - start) / step + 1e-10))   # number of steps
    if abs(start + n * step - stop) > 1e-10 * max(1.0, abs(stop)):
        stop = start + n * step                        # stop not on the grid: last value
    values = np.empty(n + 1)
    half = n // 2
    for k in range(half + 1):
        values[k] = start + k * step
    for k in range(half + 1, n + 1):
        values[k] = stop - (n - k) * step
    if n % 2 == 0 and n > 0:
        values[half] = (start + stop) / 2
    return values


THRESHOLDS = {
    "matlab": matlab_colon(0.0, 0.1, 1.0),
    "numpy": np.arange(0.0, 1.1, 0.1),
}


@dataclass(frozen=True)
class Conventions:
    """How detections are compared with the ground truth (defaults: official MATLAB)."""

    offset: float = 1.0
    thresholds: str = "matlab"       # "matlab" | "numpy"
    iou: str = "pixel"               # "pixel" | "coordinate"
    strict: bool = False
    skip_empty: bool = False
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.thresholds not in THRESHOLDS:
            raise ValueError(f"thresholds must be one of {list(THRESHOLDS)}, "
                             f"not {self.thresholds!r}")
        if self.iou not in ("pixel", "coordinate"):
            raise ValueError(f"iou must be 'pixel' or 'coordinate', not {self.iou!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be positive, not {self.top_k}")


PRESETS: dict[str, Conventions] = {
    "official": Conventions(),
    "genvlkt": Conventions(offset=0.0, thresholds="numpy", top_k=100),
    "pocket": Conventions(iou="coordinate", strict=True, skip_empty=True),
}
"""Named bundles: the official MATLAB evaluator, the QPIC/GEN-VLKT python one, the pocket
``DetectionAPMeter`` of UPT/PViC/ADA-CM/CMMP/LAIN."""


def make_conventions(preset: str = "official", **overrides: object) -> Conventions:
    """A preset with some fields overridden (``make_conventions("pocket", strict=False)``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown convention preset {preset!r}; choose from {list(PRESETS)}")
    unknown = set(overrides) - set(asdict(PRESETS[preset]))
    if unknown:
        raise TypeError(f"unknown evaluation option(s) {sorted(unknown)}; "
                        f"valid: {sorted(asdict(PRESETS[preset]))}")
    return replace(PRESETS[preset], **overrides)


@dataclass
class HICOResult:
    """Per-class results and class groups of one evaluation (AP and recall as fractions).
    ``rare`` / ``non_rare`` are None when the rare classes are unknown (a custom test
    file evaluated without its training file)."""

    ap: np.ndarray              # [C] float64, NaN for a class without ground truth
    recall: np.ndarray          # [C] float64, recall after the last detection
    npos: np.ndarray            # [C] int64, ground-truth pairs
    num_detections: np.ndarray  # [C] int64, detections evaluated
    rare: np.ndarray | None     # class ids of the rare classes
    non_rare: np.ndarray | None
    unseen: np.ndarray | None = None   # zero-shot setting only
    seen: np.ndarray | None = None
    zero_shot: str | None = None
    known_object: bool = False
    conventions: Conventions = field(default_factory=Conventions)
    source: str = ""
    classes: HOIClassSet = field(default_factory=metadata.hicodet_classes)

    def mean_ap(self, classes: np.ndarray | None = None) -> float:
        """mAP over ``classes`` (all by default); classes without ground truth are left out."""
        ap = self.ap if classes is None else self.ap[classes]
        ap = ap[~np.isnan(ap)]
        return float(ap.mean()) if ap.size else float("nan")

    @property
    def maps(self) -> dict[str, float]:
        """``{"full"[, "rare", "non_rare"][, "unseen", "seen"]}`` mAP as fractions."""
        return {key: self.mean_ap(ids) for key, _, ids in _groups(self)}


# ----------------------------------------------------------------------------- core

def _iou(det: np.ndarray, gt: np.ndarray, plus: float) -> np.ndarray:
    """Row-wise IoU of ``det[k]`` with ``gt[k]`` ([K, 4] each), in the operation order of
    ``VOCevaldet_bboxpair.m``; 0 when the boxes do not intersect."""
    iw = np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]) + plus
    ih = np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]) + plus
    ua = ((det[:, 2] - det[:, 0] + plus) * (det[:, 3] - det[:, 1] + plus)
          + (gt[:, 2] - gt[:, 0] + plus) * (gt[:, 3] - gt[:, 1] + plus) - iw * ih)
    hit = (iw > 0) & (ih > 0)
    ov = np.zeros(len(det))
    ov[hit] = iw[hit] * ih[hit] / ua[hit]
    return ov


def _top_k(det: HOIDetections, k: int) -> np.ndarray:
    """Indices (sorted) of the ``k`` best-scored detections of each image (stable)."""
    order = np.lexsort((-det.scores, det.image))                  # [M]
    first = np.searchsorted(det.image[order], det.image[order], side="left")
    rank = np.arange(len(order)) - first
    return np.sort(order[rank < k])


def eleven_point_ap(tp: np.ndarray, npos: int, thresholds: np.ndarray) -> tuple[float, float]:
    """VOC2007 11-point AP and final recall of one class from its sorted TP flags
    (``VOCevaldet_bboxpair.m``: ``ap = ap + max(prec(rec >= t)) / 11``)."""
    if len(tp) == 0:
        return 0.0, 0.0
    ctp = np.cumsum(tp, dtype=np.float64)                          # [N]
    rec = ctp / npos
    prec = ctp / np.arange(1, len(tp) + 1, dtype=np.float64)
    best = np.maximum.accumulate(prec[::-1])[::-1]                 # max precision from n on
    first = np.searchsorted(rec, thresholds, side="left")          # rec is non-decreasing
    ap = 0.0
    for n in first.tolist():
        ap = ap + (float(best[n]) if n < len(rec) else 0.0) / 11
    return ap, float(rec[-1])


def match_detections(det: HOIDetections, annotations: HOIAnnotations,
                     conventions: Conventions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sort the detections per class and flag the true positives.

    Returns ``order`` ([M] indices into ``det``: by class, then descending score, stable)
    and ``tp`` ([M] bool, aligned with ``order``).
    """
    c = conventions or Conventions()
    if np.all(det.image[1:] >= det.image[:-1]):    # as read: two stable sorts suffice
        order = np.argsort(-det.scores, kind="stable")
        labels = det.labels[order]
        if len(labels) and labels.max() < 2**15:  # 16-bit keys: numpy's radix sort
            labels = labels.astype(np.int16)
        order = order[np.argsort(labels, kind="stable")]              # [M]
    else:
        order = np.lexsort((det.image, -det.scores, det.labels))

    # ground-truth pairs grouped by (image, class), file order within a group
    counts = np.array([len(h) for h in annotations.hoi], dtype=np.int64)
    gt_image = np.repeat(np.arange(len(counts)), counts)          # [G]
    gt_label = np.concatenate([*annotations.hoi, np.zeros(0, np.int64)])
    gt_h = np.concatenate([*annotations.boxes_h, np.zeros((0, 4))])
    gt_o = np.concatenate([*annotations.boxes_o, np.zeros((0, 4))])
    num_classes = int(max(det.labels.max(initial=-1), gt_label.max(initial=-1))) + 1
    gt_key = gt_image * num_classes + gt_label
    gt_order = np.argsort(gt_key, kind="stable")
    # pairs of each (image, class) key: gt_order[start[key]:start[key] + size[key]]
    size = np.bincount(gt_key, minlength=len(counts) * num_classes)  # [I * K]
    start = np.cumsum(size) - size

    # candidate rows: every (detection, ground-truth pair of its image and class)
    key = (det.image * num_classes + det.labels)[order]
    lo, n_cand = start[key], size[key]                             # [M]
    det_row = np.repeat(np.arange(len(key)), n_cand)               # [K]
    seg_start = np.cumsum(n_cand) - n_cand
    gt_row = gt_order[np.repeat(lo, n_cand) + np.arange(len(det_row))
                      - np.repeat(seg_start, n_cand)]              # [K]

    if c.iou == "pixel":   # 1-based inclusive frame: det + offset, continuous gt x1 + 1
        shift_det = np.full(4, c.offset)
        shift_gt, plus = np.array([1.0, 1.0, 0.0, 0.0]), 1.0
    else:                  # continuous frame: det x2 + 1, gt as stored
        shift_det = np.array([0.0, 0.0, 1.0, 1.0]) + (c.offset - 1.0)
        shift_gt, plus = np.zeros(4), 0.0
    src = order[det_row]                                           # [K] rows of det
    ov = _iou(det.boxes_h[src] + shift_det, gt_h[gt_row] + shift_gt, plus)  # [K]
    # ov = min(IoU_h, IoU_o); where IoU_h < 0.5 that minimum cannot make a true positive
    # nor outrank a candidate that does, so IoU_h stands for it there
    both = np.flatnonzero(ov >= MIN_OVERLAP)
    ov[both] = np.minimum(ov[both], _iou(det.boxes_o[src[both]] + shift_det,
                                         gt_o[gt_row[both]] + shift_gt, plus))

    # best pair of each detection: largest ov, first on ties
    has = n_cand > 0
    best_ov = np.full(len(key), -np.inf)
    best_gt = np.full(len(key), -1, dtype=np.int64)
    if len(det_row):
        best_ov[has] = np.maximum.reduceat(ov, seg_start[has])
        at_max = np.flatnonzero(ov == best_ov[det_row])
        first = at_max[np.r_[True, det_row[at_max][1:] != det_row[at_max][:-1]]]
        best_gt[det_row[first]] = gt_row[first]

    cand = np.flatnonzero(best_ov > MIN_OVERLAP if c.strict else best_ov >= MIN_OVERLAP)
    _, first_use = np.unique(best_gt[cand], return_index=True)    # first detection per pair
    tp = np.zeros(len(key), dtype=bool)
    tp[cand[first_use]] = True
    return order, tp


def evaluate_hoi(detections: HOIDetections, annotations: HOIAnnotations, *,
                 rare: np.ndarray | list[int] | None = None,
                 unseen: np.ndarray | list[int] | None = None, zero_shot: str | None = None,
                 known_object: bool = False, conventions: Conventions | None = None,
                 preset: str = "official", **options: object) -> HICOResult:
    """mAP of ``detections`` (0-based inclusive boxes, class ids of
    ``annotations.class_set``, aligned to ``annotations``) — Default setting, or
    Known-Object (per class, only detections of images whose annotation contains the
    class's object).

    Rare classes: ``rare``, else the annotations' ``rare`` list (a HICO-DET test file's,
    a custom file's flags or its dataset's training counts), else HICO-DET's own for its
    600 classes; unknown for a custom file without them (only Full is reported).
    Unseen classes: ``unseen``, else those of the HICO-DET ``zero_shot`` setting
    (``rf_uc``, ``nf_uc``, ``uo``, ``uv``, ``uc0``..``uc4``), else the annotations'
    ``unseen`` (a custom zero-shot test set); they add the Unseen / Seen groups.
    Conventions: ``conventions``, or ``preset`` with ``options`` overriding its fields
    (``offset``, ``thresholds``, ``iou``, ``strict``, ``skip_empty``, ``top_k``).
    """
    if conventions is not None and (options or preset != "official"):
        raise TypeError("give either conventions or preset/options, not both")
    c = conventions or make_conventions(preset, **options)
    if detections.num_images != len(annotations):
        raise ValueError(f"detections are aligned to {detections.num_images} images, the "
                         f"annotations {annotations.source} have {len(annotations)}")
    classes = annotations.class_set
    num_classes = len(classes)
    det = detections
    if c.top_k is not None:
        det = det.select(_top_k(det, c.top_k))
    if c.skip_empty and len(annotations.empty):
        det = det.select(~np.isin(det.image, annotations.empty))
    class_objects = np.asarray(classes.objects, dtype=np.int64)
    if known_object:   # image-level object presence from the annotation
        counts = [len(o) for o in annotations.objects]
        present = np.zeros((len(annotations), len(classes.object_vocabulary)), dtype=bool)
        present[np.repeat(np.arange(len(counts)), counts),
                np.concatenate([*annotations.objects, np.zeros(0, np.int64)])] = True
        det = det.select(present[det.image, class_objects[det.labels]])

    order, tp = match_detections(det, annotations, c)
    labels = det.labels[order]
    npos = np.bincount(np.concatenate([*annotations.hoi, np.zeros(0, np.int64)]),
                       minlength=num_classes)
    bounds = np.searchsorted(labels, np.arange(num_classes + 1), side="left")
    thresholds = THRESHOLDS[c.thresholds]
    ap = np.full(num_classes, np.nan)
    recall = np.zeros(num_classes)
    for k in range(num_classes):
        if npos[k] > 0:
            ap[k], recall[k] = eleven_point_ap(tp[bounds[k]:bounds[k + 1]], int(npos[k]),
                                               thresholds)

    if rare is None:
        rare = annotations.rare
    if rare is None and annotations.classes is None:
        rare = metadata.hicodet_rare()
    everything = np.arange(num_classes)
    result = HICOResult(ap=ap, recall=recall, npos=npos.astype(np.int64),
                        num_detections=np.diff(bounds).astype(np.int64), rare=None,
                        non_rare=None, known_object=known_object, conventions=c,
                        source=annotations.source, classes=classes)
    if rare is not None:
        result.rare = np.unique(np.asarray(rare, dtype=np.int64))
        result.non_rare = np.setdiff1d(everything, result.rare)
    if unseen is None and zero_shot is not None:
        if annotations.classes is not None:
            raise ValueError(f"zero-shot setting {zero_shot!r} is HICO-DET's; a custom "
                             f"dataset names its unseen classes itself")
        unseen = metadata.zero_shot_unseen(zero_shot)
    if unseen is None and annotations.unseen is not None:
        unseen, zero_shot = annotations.unseen, "custom split"
    if unseen is not None:
        result.unseen = np.unique(np.asarray(unseen, dtype=np.int64))
        result.seen = np.setdiff1d(everything, result.unseen)
        result.zero_shot = zero_shot or "custom split"
    return result


evaluate_hicodet = evaluate_hoi
"""HICO-DET is a configuration of :func:`evaluate_hoi`: its annotations carry no class
set, so the 600 classes, the official rare list and the named zero-shot settings apply."""


# ----------------------------------------------------------------------------- files, reports

def evaluate_files(annotations: str | Path, detections: str | Path,
                   zero_shot: str | None = None, known_object: bool = False,
                   train_annotations: str | Path | None = None,
                   rare_threshold: int = RARE_THRESHOLD, unseen: str | None = None,
                   **conventions: object) -> HICOResult:
    """Read an annotation file (HICO-DET, or custom format) and a ``DETS.json`` and
    evaluate (the CLI's entry).

    ``train_annotations``: the training file; the classes with fewer than
    ``rare_threshold`` pairs in it are Rare. ``unseen``: a custom file's unseen classes
    (``"hold drill, ..."`` or a text file). ``conventions``: ``preset`` (``official``,
    ``genvlkt``, ``pocket``) and/or the fields of :class:`Conventions` (``offset``,
    ``thresholds``, ``iou``, ``strict``, ``skip_empty``, ``top_k``).
    """
    if isinstance(rare_threshold, bool) or not isinstance(rare_threshold, int) or \
            rare_threshold < 1:
        raise OptionError("rare_threshold", rare_threshold, "must be an integer >= 1 (the "
                          "classes with fewer training pairs are Rare; HICO-DET's is 10)")
    ann = load_annotations(annotations)
    det = read_detections(detections, ann)
    rare = unseen_ids = None
    if train_annotations is not None:
        rare = rare_classes(ann.class_set, load_annotations(train_annotations), rare_threshold)
    if unseen is not None:
        unseen_ids = unseen_class_ids(ann.class_set, unseen)
    preset = str(conventions.pop("preset", "official"))
    return evaluate_hoi(det, ann, rare=rare, unseen=unseen_ids, zero_shot=zero_shot,
                        known_object=known_object,
                        conventions=make_conventions(preset, **conventions))


def _groups(result: HICOResult) -> list[tuple[str, str, np.ndarray | None]]:
    groups: list[tuple[str, str, np.ndarray | None]] = [("full", "Full", None)]
    if result.rare is not None:
        groups += [("rare", "Rare", result.rare), ("non_rare", "Non-rare", result.non_rare)]
    if result.unseen is not None:
        groups += [("unseen", "Unseen", result.unseen), ("seen", "Seen", result.seen)]
    return groups


def _title(classes: HOIClassSet) -> str:
    if classes == metadata.hicodet_classes():
        return "HICO-DET"
    return f"{classes.name} ({len(classes)} classes)"


def format_table(result: HICOResult, per_class: bool = False,
                 label: Callable[[str], str] = str) -> str:
    """A readable table of the mAPs (and, with ``per_class``, of every class); ``label``:
    how its notes call a setting (:func:`~clip4hoi.errors.worded`)."""
    c = result.conventions
    setting = "Known-Object" if result.known_object else "Default"
    if result.zero_shot:
        setting += f", zero-shot {result.zero_shot}"
    lines = [f"{_title(result.classes)} {setting}  (offset {c.offset:g}, {c.thresholds} "
             f"thresholds, {c.iou} IoU {'>' if c.strict else '>='} {MIN_OVERLAP}"
             f"{', empty images skipped' if c.skip_empty else ''}"
             f"{f', top {c.top_k} per image' if c.top_k else ''})",
             f"{'group':<10} {'classes':>7} {'mAP':>8} {'mRec':>8}"]
    for _, name, ids in _groups(result):
        ids = np.arange(len(result.ap)) if ids is None else ids
        ids = ids[~np.isnan(result.ap[ids])]
        rec = float(result.recall[ids].mean()) if ids.size else float("nan")
        lines.append(f"{name:<10} {ids.size:>7d} {100 * result.mean_ap(ids):>8.2f} "
                     f"{100 * rec:>8.2f}")
    missing = int(np.isnan(result.ap).sum())
    if missing:
        lines.append(f"({missing} classes without ground truth are left out of the means)")
    if result.rare is None:
        lines.append(worded("(no Rare / Non-rare: the training pair counts are unknown; "
                            "give the training file, {train_annotations})", label))
    if per_class:
        classes = result.classes
        lines.append(f"{'hoi':>4} {'class':<34} {'AP':>7} {'rec':>7} {'npos':>5} {'dets':>7}")
        for k in range(len(result.ap)):
            name = f"{classes.verbs[k]} {metadata.words(classes.object_names[k])}"
            lines.append(f"{k:>4} {name[:34]:<34} {100 * result.ap[k]:>7.2f} "
                         f"{100 * result.recall[k]:>7.2f} {result.npos[k]:>5d} "
                         f"{result.num_detections[k]:>7d}")
    return "\n".join(lines)


def _percent(value: float) -> float | None:
    return None if np.isnan(value) else round(100.0 * float(value), 6)


def result_to_json(result: HICOResult) -> dict:
    """``{"map": {"full"[, "rare", "non_rare"][, "unseen", "seen"]}, "per_class": [...]}``,
    AP and recall in percent (``None`` for a class without ground truth); each class
    with its id, verb, object and groups."""
    classes = result.classes
    rare = set(result.rare.tolist()) if result.rare is not None else None
    unseen = set(result.unseen.tolist()) if result.unseen is not None else None
    per_class = []
    for k in range(len(result.ap)):
        entry = {"hoi": k, "verb": classes.verbs[k], "object": classes.object_names[k],
                 "ap": _percent(result.ap[k]), "recall": _percent(result.recall[k]),
                 "npos": int(result.npos[k]), "num_detections": int(result.num_detections[k])}
        if rare is not None:
            entry["rare"] = k in rare
        if unseen is not None:
            entry["unseen"] = k in unseen
        per_class.append(entry)
    return {"map": {key: _percent(value) for key, value in result.maps.items()},
            "per_class": per_class}

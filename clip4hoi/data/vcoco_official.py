"""V-COCO ground truth per person — the structure the official ``vsrl_eval.py`` works on —
from the official files (s-gupta/v-coco) or, with losses, from per-pair files (fredzzhang).

The official layout is three files per split, as the v-coco repository has them after
``script_pick_annotations.py`` (docs/reproduce.md)::

    v-coco/data/vcoco/vcoco_test.json          # per action: image_id, ann_id, label, role_object_id
    v-coco/data/instances_vcoco_all_2014.json  # the COCO 2014 annotations of the V-COCO images
    v-coco/data/splits/vcoco_test.ids          # the split's COCO image ids, one per line

:func:`find_vcoco_files` finds them from a folder or from the ``vcoco_{split}.json`` file;
:func:`load_vcoco_official` reads them as ``VCOCOeval`` does; :func:`training_pairs` turns
the result into the per-pair :class:`~clip4hoi.data.annotations.HOIAnnotations` that the
datasets serve. :func:`vcoco_ground_truth` builds the same structure from a per-pair file,
which cannot express everything the official protocol counts
(:data:`FREDZZHANG_VCOCO_NOTES`). No torch here: ``clip4hoi eval`` imports this.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from clip4hoi.data import metadata
from clip4hoi.data.annotations import (
    NUM_VCOCO,
    VCOCO_AGENT_ACTIONS,
    VCOCO_ROLE_ACTION,
    HOIAnnotations,
    _name_key,
    _read_json,
    _require,
    load_vcoco_annotations,
)
from clip4hoi.errors import InputError

COCO_FILE = "instances_vcoco_all_2014.json"
VCOCO_OTHER_ACTIONS = ("point", "stand", "walk", "run", "smile")
"""The official actions outside the 21 with action-role classes: ``point`` (whose role
``instr`` the convention of 24 leaves out) and the four without a role object."""
VCOCO_DETECTION_LABELS: tuple[str, ...] = (*metadata.VCOCO_ACTIONS, "point instr",
                                           *VCOCO_OTHER_ACTIONS[1:])
"""The ids of a V-COCO ``DETS.json`` (``"actions"``): 0..23 the 24 action-roles of the class
set (what the model predicts), 24 ``point instr`` (the 25th action-role that ``vsrl_eval``
scores) and 25..28 ``stand``, ``walk``, ``run``, ``smile`` (an agent score only; their
object box is not read). 24..28 come from other exporters; they count in the official
means (:mod:`clip4hoi.evaluation.vcoco`)."""
SPLITS = ("train", "val", "trainval", "test")
_SPLIT_IN_NAME = re.compile(r"vcoco_(\w+)\.json$")

# What the per-pair files lose, measured on the real val split (vcoco_val.json of
# s-gupta/v-coco against fredzzhang/vcoco instances_vcoco_val.json; docs/evaluation.md).
PER_PAIR_WARNING = (
    "WARNING: per-pair (fredzzhang) V-COCO annotations: this is NOT the official V-COCO "
    "protocol and the numbers are not comparable with papers. These files drop agents whose "
    "role objects are all invisible, persons without actions and COCO persons V-COCO did "
    "not annotate: on the val split they hold 7,154 of the official 9,130 positives (-22 %; "
    "hold 1,608 of 2,163, sit 551 of 1,054), which moved the mean role AP by 2 to 5 points "
    "in scenario 1 and 4 to 8 in scenario 2 on synthetic sets. For the official numbers "
    "give the official files as the annotations: v-coco/data/vcoco/vcoco_test.json "
    "(docs/evaluation.md)."
)


@dataclass
class VCOCOGroundTruth:
    """Per-person V-COCO ground truth.

    ``agent_labels[i][p, a]`` is 1 when person ``p`` of image ``i`` does agent action ``a``
    (:data:`~clip4hoi.data.annotations.VCOCO_AGENT_ACTIONS`), 0 when not, and -1 for every
    action of a COCO person that V-COCO did not annotate (detections matched to such a
    person are ignored). ``role_boxes[i][p, k]`` is the box of the role object of
    action-role ``k`` (:data:`metadata.VCOCO_ACTIONS`) or NaN when the person does not do
    the action or the role object is not visible (scenario 1 then asks for an empty role
    box, scenario 2 accepts any); ``role_objects[i][p, k]`` its COCO-80 class or -1.
    ``other_npos``: positives of the official actions outside the 21
    (:data:`VCOCO_OTHER_ACTIONS`); ``other_labels[i][p, j]`` the labels of these actions
    like ``agent_labels``, ``point_boxes[i][p]`` the box of ``point``'s role object
    (``instr``; NaN: none) — empty or None for per-pair files, which do not have them.
    """

    dataset: ClassVar[str] = "vcoco"   # read like HOIAnnotations by the detection reader

    source: str
    file_names: list[str]            # [I]
    image_ids: np.ndarray            # [I] int64 COCO image ids
    sizes: np.ndarray                # [I, 2] int64 (width, height); 0 when unknown
    person_boxes: list[np.ndarray]   # I × [P_i, 4] float64, continuous xyxy
    agent_labels: list[np.ndarray]   # I × [P_i, 21] int8 in {1, 0, -1}
    role_boxes: list[np.ndarray]     # I × [P_i, 24, 4] float64, continuous, NaN = none
    role_objects: list[np.ndarray]   # I × [P_i, 24] int64 COCO-80 id, -1 = none
    other_labels: list[np.ndarray] | None = None   # I × [P_i, 5] int8, official files only
    point_boxes: list[np.ndarray] | None = None    # I × [P_i, 4] float64, continuous, NaN = none
    complete: bool = True            # False when built from per-pair (fredzzhang) files
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.file_names)

    def index(self) -> dict[str, int]:
        """``{file name: image index}``."""
        return {name: i for i, name in enumerate(self.file_names)}

    @property
    def agent_npos(self) -> np.ndarray:
        """``[21]`` persons doing each agent action."""
        return sum(((lab == 1).sum(0) for lab in self.agent_labels),
                   np.zeros(len(VCOCO_AGENT_ACTIONS), dtype=np.int64))

    @property
    def other_npos(self) -> dict[str, int]:
        """``{action: persons doing it}`` of the official actions outside the 21
        (:data:`VCOCO_OTHER_ACTIONS`); empty for per-pair files."""
        if self.other_labels is None:
            return {}
        counts = sum(((lab == 1).sum(0) for lab in self.other_labels),
                     np.zeros(len(VCOCO_OTHER_ACTIONS), dtype=np.int64))
        return dict(zip(VCOCO_OTHER_ACTIONS, counts.tolist(), strict=True))


# ----------------------------------------------------------------------------- files

@dataclass(frozen=True)
class VCOCOFiles:
    """The files of one split: the official layout (``coco`` set) or a per-pair file."""

    annotations: Path                # vcoco_{split}.json, or a per-pair instances_vcoco_*.json
    coco: Path | None = None         # instances_vcoco_all_2014.json (official layout only)
    split_ids: Path | None = None    # vcoco_{split}.ids (official layout; optional)

    @property
    def official(self) -> bool:
        return self.coco is not None


def _first(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _is_list_json(path: Path) -> bool:
    """True when the JSON file's top level is a list (the official ``vcoco_*.json``)."""
    with path.open("rb") as f:
        head = f.read(4096).lstrip()
    return head[:1] == b"["


def find_vcoco_files(path: str | Path, split: str = "test", coco: str | Path | None = None,
                     split_ids: str | Path | None = None) -> VCOCOFiles:
    """Resolve a V-COCO ``--annotations`` argument.

    ``path`` may be

    * a folder: the v-coco repository or its ``data/`` folder (official layout), or a
      folder holding ``vcoco_{split}.json`` (official) or ``instances_vcoco_{split}.json``
      (per-pair) directly;
    * ``vcoco_{split}.json`` (official): ``instances_vcoco_all_2014.json`` is looked up
      beside it and one folder up, ``vcoco_{split}.ids`` beside it, in ``splits/`` beside
      it and in ``../splits/`` (the repository's ``data/vcoco`` + ``data/splits``);
    * a per-pair ``instances_vcoco_*.json`` (fredzzhang; a JSON object, not a list).

    ``coco`` and ``split_ids`` override the look-up. Raises :class:`InputError` naming
    what was looked for."""
    path = Path(path)
    if split not in SPLITS:
        raise InputError(f"V-COCO split {split!r}: expected one of {', '.join(SPLITS)}")
    if path.is_dir():
        name = f"vcoco_{split}.json"
        found = _first([path / name, path / "vcoco" / name, path / "data" / "vcoco" / name])
        if found is None:
            per_pair = _first([path / f"instances_vcoco_{split}.json"])
            if per_pair is not None and coco is None:
                return VCOCOFiles(per_pair)
            raise InputError(f"{path}: no {name} in it, its vcoco/ or data/vcoco/ (the "
                             f"official layout, docs/reproduce.md)")
        path = found
    elif not path.is_file():
        raise InputError(f"{path}: no such file or folder (V-COCO annotations)")
    if not _is_list_json(path):
        if path.name == COCO_FILE:
            raise InputError(f"{path}: the COCO file of the official layout; pass the V-COCO "
                             f"labels, vcoco_{split}.json (it is found beside them)")
        if coco is not None or split_ids is not None:
            raise InputError(f"{path}: a per-pair (fredzzhang) file; {{coco}} and "
                             f"{{split_ids}} go with the official vcoco_{split}.json")
        return VCOCOFiles(path)
    match = _SPLIT_IN_NAME.search(path.name)
    here = path.parent
    if coco is None:
        coco = _first([here / COCO_FILE, here.parent / COCO_FILE])
        if coco is None:
            raise InputError(f"{path}: {COCO_FILE} not found beside it or in {here.parent} "
                             f"(build it with the v-coco repository's "
                             f"script_pick_annotations.py, docs/reproduce.md, or pass "
                             f"{{coco}})")
    coco = Path(coco)
    if not coco.is_file():
        raise InputError(f"{coco}: no such file (COCO annotations of V-COCO)")
    if split_ids is None and match:
        ids = f"vcoco_{match.group(1)}.ids"
        split_ids = _first([here / ids, here / "splits" / ids, here.parent / "splits" / ids])
    if split_ids is not None and not Path(split_ids).is_file():
        raise InputError(f"{split_ids}: no such file (V-COCO split ids)")
    return VCOCOFiles(path, coco, Path(split_ids) if split_ids is not None else None)


def read_split_ids(path: str | Path) -> np.ndarray:
    """``vcoco_{split}.ids``: one COCO image id per line."""
    try:
        values = [float(v) for v in Path(path).read_text().split()]
    except ValueError as error:
        raise InputError(f"{path}: not a list of COCO image ids ({error})") from error
    ids = np.asarray(values, dtype=np.float64)
    if (ids != np.floor(ids)).any():
        raise InputError(f"{path}: image ids must be integers")
    return ids.astype(np.int64)


# ----------------------------------------------------------------------------- official

def _clean_box(bbox: Sequence[float], width: float, height: float) -> tuple[float, ...]:
    """``vsrl_eval``'s box cleaning: ``[x, y, w, h]`` → inclusive ``x2 = x + max(0, w - 1)``,
    every coordinate clipped to ``[0, width - 1]`` / ``[0, height - 1]``."""
    x, y, w, h = (float(v) for v in bbox)
    x2, y2 = x + max(0.0, w - 1.0), y + max(0.0, h - 1.0)
    return (min(width - 1, max(0.0, x)), min(height - 1, max(0.0, y)),
            min(width - 1, max(0.0, x2)), min(height - 1, max(0.0, y2)))


def _vsrl_entries(vsrl: object, src: str) -> list[dict]:
    """The per-action entries of ``vcoco_{split}.json`` with numpy fields
    (``role_object_id`` reshaped to ``[N, roles]``, as ``_load_vcoco`` does)."""
    if not isinstance(vsrl, list) or not vsrl:
        raise InputError(f"{src}: expected a non-empty list of per-action entries "
                         f"(the official vcoco_*.json)")
    entries = []
    for entry in vsrl:
        for k in ("action_name", "role_name", "image_id", "ann_id", "label", "role_object_id"):
            _require(entry, k, src, f"action {entry.get('action_name', '?')}: "
                     if isinstance(entry, dict) else "")
        action, roles = str(entry["action_name"]), [str(r) for r in entry["role_name"]]
        try:
            ann_ids = np.asarray(entry["ann_id"], np.int64).reshape(-1)
            image_ids = np.asarray(entry["image_id"], np.int64).reshape(-1)
            label = np.asarray(entry["label"], np.int64).reshape(-1)
            role_ids = np.asarray(entry["role_object_id"], np.int64).reshape(len(roles), -1).T
        except (ValueError, TypeError) as error:
            raise InputError(f"{src}: action {action}: malformed ids ({error})") from None
        if not len(ann_ids) == len(image_ids) == len(label) == len(role_ids):
            raise InputError(f"{src}: action {action}: fields 'image_id', 'ann_id', 'label', "
                             f"'role_object_id' differ in length")
        entries.append({"action": action, "roles": roles, "ann_id": ann_ids,
                        "image_id": image_ids, "label": label, "role_ids": role_ids})
    return entries


def load_vcoco_official(vcoco_file: str | Path, coco_file: str | Path,
                        split_ids: str | Path | Sequence[int] | None = None
                        ) -> VCOCOGroundTruth:
    """Read the official layout as ``VCOCOeval`` (``vsrl_eval.py``) does.

    Images: ``split_ids`` (the ``.ids`` file or a list), which must equal the sorted image
    ids of the V-COCO file (the official script asserts it), or those ids when omitted.
    Every valid COCO object of an image counts (crowds included): its box is cleaned by
    :func:`_clean_box` and kept when ``area > 0``, ``x2 > x1`` and ``y2 > y1`` (annotations
    with ``ignore == 1`` are skipped); boxes are stored continuous (``x2 + 1``). Persons
    are the objects of the file's first category (``person``): those in the first
    action's ``ann_id`` list are annotated, the others get -1 for every action. A role
    object id 0 means "not visible". Raises :class:`InputError` naming the file."""
    src, coco_src = str(vcoco_file), str(coco_file)
    entries = _vsrl_entries(_read_json(vcoco_file), src)
    coco = _read_json(coco_file)
    for k in ("images", "annotations", "categories"):
        _require(coco, k, coco_src)
    person_cat, to_coco80 = _coco_categories(coco["categories"], coco_src)
    ids = _split_image_ids(entries, split_ids, src)
    actions = _person_actions(entries)
    images = {int(_require(im, "id", coco_src, "images: ")): im for im in coco["images"]}
    anns_of: dict[int, list[dict]] = {}              # image id -> its COCO annotations
    for ann in coco["annotations"]:
        anns_of.setdefault(int(_require(ann, "image_id", coco_src, "annotations: ")),
                           []).append(ann)
    names, sizes = [], []
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in _PERSON_FIELDS}
    for image_id in ids.tolist():
        if image_id not in images:
            raise InputError(f"{coco_src}: image {image_id} of {src} is missing from 'images'")
        name, size, valid = _image_objects(images[image_id], anns_of.get(image_id, []),
                                           image_id, coco_src)
        names.append(name)
        sizes.append(size)
        pids = [i for i, (_, c) in valid.items() if c == person_cat]   # its persons
        image_arrays = _person_arrays(pids, valid, actions, to_coco80,
                                      f"{src}: image {image_id}", coco_src)
        for k, array in zip(_PERSON_FIELDS, image_arrays, strict=True):
            arrays[k].append(array)
    return VCOCOGroundTruth(
        source=src, file_names=names, image_ids=ids.copy(),
        sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2), **arrays,
        complete=True)


def _coco_categories(categories: list[dict], coco_src: str) -> tuple[int, dict[int, int]]:
    """The person category's id (the first category must be ``person``) and the COCO-80
    index of each category id with a COCO name."""
    if not categories or _require(categories[0], "name", coco_src, "categories: ") != "person":
        raise InputError(f"{coco_src}: the first category must be 'person' (COCO order)")
    person_cat = int(_require(categories[0], "id", coco_src, "categories: "))
    to_coco80 = {int(_require(c, "id", coco_src, "categories: ")):
                 metadata.COCO_OBJECTS.index(_name_key(c.get("name")))
                 for c in categories if _name_key(c.get("name")) in metadata.COCO_OBJECTS}
    return person_cat, to_coco80


def _split_image_ids(entries: list[dict], split_ids: str | Path | Sequence[int] | None,
                     src: str) -> np.ndarray:
    """The split's image ids [I]: ``split_ids`` checked against the V-COCO file's, or the
    file's (sorted) when None."""
    file_ids = np.unique(entries[0]["image_id"])
    if split_ids is None:
        return file_ids
    ids = read_split_ids(split_ids) if isinstance(split_ids, str | Path) \
        else np.asarray(split_ids, dtype=np.int64)
    if not np.array_equal(np.sort(np.unique(ids)), file_ids):
        raise InputError(f"{src}: its images are not those of {split_ids} ({len(file_ids)} "
                         f"vs {len(ids)} ids): the files are of different splits")
    return ids


@dataclass
class _PersonActions:
    """What the vsrl entries say of each person (keyed by COCO annotation id)."""

    # the persons V-COCO annotated (the first action's ann_id list)
    annotated: set[int]
    # person -> its agent actions (VCOCO_AGENT_ACTIONS indices)
    does: dict[int, set[int]] = field(default_factory=dict)
    # (person, action-role) -> ann id of the visible role object
    role_of: dict[tuple[int, int], int] = field(default_factory=dict)
    # person -> its other actions (VCOCO_OTHER_ACTIONS indices)
    other_does: dict[int, set[int]] = field(default_factory=dict)
    # person -> ann id of the visible role object of point (instr)
    point_of: dict[int, int] = field(default_factory=dict)


def _person_actions(entries: list[dict]) -> _PersonActions:
    """Each person's actions and visible role objects from the per-action entries."""
    out = _PersonActions(annotated=set(entries[0]["ann_id"].tolist()))
    for e in entries:
        positive = np.flatnonzero(e["label"] == 1).tolist()   # the persons doing it
        if e["action"] in VCOCO_AGENT_ACTIONS:
            a = VCOCO_AGENT_ACTIONS.index(e["action"])
            for j in positive:
                pid = int(e["ann_id"][j])
                out.does.setdefault(pid, set()).add(a)
                for r in range(1, len(e["roles"])):
                    name = f"{e['action']} {e['roles'][r]}"
                    if name in metadata.VCOCO_ACTIONS and e["role_ids"][j, r] > 0:
                        out.role_of[(pid, metadata.VCOCO_ACTIONS.index(name))] = \
                            int(e["role_ids"][j, r])
        elif e["action"] in VCOCO_OTHER_ACTIONS:
            j_other = VCOCO_OTHER_ACTIONS.index(e["action"])
            instr = e["roles"].index("instr") if e["action"] == "point" and \
                "instr" in e["roles"] else None
            for j in positive:
                pid = int(e["ann_id"][j])
                out.other_does.setdefault(pid, set()).add(j_other)
                if instr is not None and e["role_ids"][j, instr] > 0:
                    out.point_of[pid] = int(e["role_ids"][j, instr])
    return out


def _image_objects(image: dict, anns: list[dict], image_id: int, coco_src: str
                   ) -> tuple[str, tuple[int, int], dict[int, tuple[np.ndarray, int]]]:
    """An image's file name, (width, height) and valid COCO objects: ann id -> (continuous
    box [4], category id)."""
    width = float(_require(image, "width", coco_src, f"image {image_id}: "))
    height = float(_require(image, "height", coco_src, f"image {image_id}: "))
    name = str(_require(image, "file_name", coco_src, f"image {image_id}: "))
    valid: dict[int, tuple[np.ndarray, int]] = {}
    for ann in anns:
        if ann.get("ignore", 0) == 1:
            continue
        for k in ("bbox", "area", "category_id", "id"):
            _require(ann, k, coco_src, f"image {image_id}: annotation: ")
        x1, y1, x2, y2 = _clean_box(ann["bbox"], width, height)
        if ann["area"] > 0 and x2 > x1 and y2 > y1:
            valid[int(ann["id"])] = (np.array([x1, y1, x2 + 1.0, y2 + 1.0]),
                                     int(ann["category_id"]))
    return name, (int(width), int(height)), valid


_PERSON_FIELDS = ("person_boxes", "agent_labels", "role_boxes", "role_objects",
                  "other_labels", "point_boxes")


def _person_arrays(pids: list[int], valid: dict[int, tuple[np.ndarray, int]],
                   actions: _PersonActions, to_coco80: dict[int, int],
                   image: str, coco_src: str) -> tuple[np.ndarray, ...]:
    """One image's :data:`_PERSON_FIELDS` for its persons ``pids`` (P of them, in the
    order of ``valid``); ``image`` names it in errors (``"vcoco file: image id"``)."""
    lab = np.zeros((len(pids), len(VCOCO_AGENT_ACTIONS)), dtype=np.int8)   # [P, 21]
    other = np.zeros((len(pids), len(VCOCO_OTHER_ACTIONS)), dtype=np.int8)  # [P, 5]
    point = np.full((len(pids), 4), np.nan)                                # [P, 4]
    boxes = np.full((len(pids), NUM_VCOCO, 4), np.nan)                     # [P, 24, 4]
    objects = np.full((len(pids), NUM_VCOCO), -1, dtype=np.int64)          # [P, 24]
    for p, pid in enumerate(pids):
        if pid not in actions.annotated:
            lab[p] = other[p] = -1
            continue
        lab[p, sorted(actions.does.get(pid, ()))] = 1
        other[p, sorted(actions.other_does.get(pid, ()))] = 1
        if pid in actions.point_of:
            point[p] = _role_object(valid, actions.point_of[pid], pid, image, coco_src)[0]
        for k in range(NUM_VCOCO):
            obj = actions.role_of.get((pid, k), 0)
            if obj == 0:
                continue
            box, category = _role_object(valid, obj, pid, image, coco_src)
            if category not in to_coco80:
                raise InputError(f"{coco_src}: category {category} of role object {obj} is "
                                 f"not a COCO category")
            boxes[p, k], objects[p, k] = box, to_coco80[category]
    persons = np.stack([valid[i][0] for i in pids]) if pids else np.zeros((0, 4))
    return persons, lab, boxes, objects, other, point


def _role_object(valid: dict[int, tuple[np.ndarray, int]], obj: int, pid: int,
                 image: str, coco_src: str) -> tuple[np.ndarray, int]:
    """The (box, category) of person ``pid``'s role object ``obj``, which must be valid."""
    if obj not in valid:
        raise InputError(f"{image}: role object {obj} of person {pid} is not a valid "
                         f"COCO annotation of {coco_src}")
    return valid[obj]


def training_pairs(gt: VCOCOGroundTruth) -> HOIAnnotations:
    """The (person, visible role object, action-role) pairs of the ground truth, per image
    in its order: what a pair-based model trains on (agents whose role objects are all
    invisible and persons without actions give no pair; the evaluation still counts
    them). Rows are ordered by person, then action-role."""
    boxes_h, boxes_o, actions, objects = [], [], [], []
    for persons, roles, role_obj in zip(gt.person_boxes, gt.role_boxes, gt.role_objects,
                                        strict=True):
        p, k = np.nonzero(role_obj >= 0)                  # row-major: by person, then role
        boxes_h.append(persons[p].reshape(-1, 4))
        boxes_o.append(roles[p, k].reshape(-1, 4))
        actions.append(k.astype(np.int64))
        objects.append(role_obj[p, k].astype(np.int64))
    counts = np.array([len(a) for a in actions], dtype=np.int64)
    return HOIAnnotations(
        source=gt.source, file_names=list(gt.file_names), sizes=gt.sizes.copy(),
        boxes_h=boxes_h, boxes_o=boxes_o, hoi=actions, objects=objects,
        verbs=[a.copy() for a in actions], empty=np.flatnonzero(counts == 0), rare=None,
        dataset="vcoco", image_ids=gt.image_ids.copy())


# ----------------------------------------------------------------------------- per-pair

FREDZZHANG_VCOCO_NOTES = [
    "built from per-pair (fredzzhang) annotations: persons are the distinct human boxes "
    "of the pairs",
    "agents whose role objects are all invisible are missing (they are positives in the "
    "official evaluation: npos is lower, and scenario 1/2 differ only for two-role actions)",
    "V-COCO persons without any of the 21 actions and COCO persons not annotated in V-COCO "
    "are missing (official: detections on the former are false positives, on the latter "
    "ignored; here both are false positives unless they overlap an annotated person)",
    "actions without a role (stand, walk, run, smile) and 'point' are not represented",
    "no image sizes: ground-truth boxes are not clipped to the image as the official code "
    "does",
]


def vcoco_ground_truth(annotations: HOIAnnotations) -> VCOCOGroundTruth:
    """Per-person V-COCO ground truth from per-pair annotations (fredzzhang files).

    Persons are the distinct human boxes of an image; a person does an action when one of
    its pairs has an action-role of that action; a role box is NaN when no pair gives it
    (for two-role actions such as ``eat obj`` / ``eat instr`` this marks the role whose
    object is not visible). What these files cannot express: see
    :data:`FREDZZHANG_VCOCO_NOTES` (also stored in ``notes``).
    """
    if annotations.dataset != "vcoco":
        raise InputError(f"{annotations.source}: not V-COCO annotations")
    persons, labels, roles, role_objects = [], [], [], []
    role_action = np.asarray(VCOCO_ROLE_ACTION, dtype=np.int64)
    for boxes_h, boxes_o, actions, objs in zip(annotations.boxes_h, annotations.boxes_o,
                                               annotations.hoi, annotations.objects,
                                               strict=True):
        # persons = distinct human boxes, in order of first appearance
        person_index: dict[tuple[float, ...], int] = {}
        person_of = np.array([person_index.setdefault(tuple(b), len(person_index))
                              for b in boxes_h.tolist()], dtype=np.int64)
        lab = np.zeros((len(person_index), len(VCOCO_AGENT_ACTIONS)), dtype=np.int8)
        rb = np.full((len(person_index), NUM_VCOCO, 4), np.nan)
        ro = np.full((len(person_index), NUM_VCOCO), -1, dtype=np.int64)
        lab[person_of, role_action[actions]] = 1
        # the first pair wins if a person has one action-role with several objects
        for row in range(len(actions) - 1, -1, -1):
            rb[person_of[row], actions[row]] = boxes_o[row]
            ro[person_of[row], actions[row]] = objs[row]
        persons.append(np.array(list(person_index), dtype=np.float64).reshape(-1, 4))
        labels.append(lab)
        roles.append(rb)
        role_objects.append(ro)
    ids = annotations.image_ids if annotations.image_ids is not None \
        else np.arange(len(annotations), dtype=np.int64)
    return VCOCOGroundTruth(source=annotations.source, file_names=list(annotations.file_names),
                            image_ids=ids, sizes=annotations.sizes.copy(),
                            person_boxes=persons, agent_labels=labels, role_boxes=roles,
                            role_objects=role_objects, complete=False,
                            notes=list(FREDZZHANG_VCOCO_NOTES))


def read_vcoco_ground_truth(files: VCOCOFiles) -> VCOCOGroundTruth:
    """The per-person ground truth of :func:`find_vcoco_files`' result."""
    if files.official:
        return load_vcoco_official(files.annotations, files.coco, files.split_ids)
    return vcoco_ground_truth(load_vcoco_annotations(files.annotations))

"""Detection files (``DETS.json``): writing, reading and validation.

Format (HICO-DET)::

    {"images": [{"file_name": "HICO_test2015_00000001.jpg",
                 "human_boxes": [[x1, y1, x2, y2], ...],
                 "object_boxes": [[x1, y1, x2, y2], ...],
                 "hoi": [0-based HICO-DET HOI ids],
                 "scores": [...]}, ...]}

V-COCO uses the same layout with ``"actions"`` instead of ``"hoi"``: the action-role ids
0..23 (:data:`clip4hoi.data.metadata.VCOCO_ACTIONS`, what the model predicts) and, from
other exporters, 24 ``point instr`` and 25..28 the actions without a role object
(:data:`clip4hoi.data.vcoco_official.VCOCO_DETECTION_LABELS`); an object box may be
``null`` (or ``[]``) when the model predicts that the role object is not visible.

Boxes are **0-based inclusive pixel indices of the original image** (docs/conventions.md):
a model's continuous box ``x1, y1, x2, y2`` is written as ``x1, y1, max(x2 - 1, x1),
max(y2 - 1, y1)`` (:func:`box_indices`): a box narrower than a pixel is a 1-px box, as the
``+ 1`` widths of the official evaluators imply. Test images absent from the file have no
detections; the order of images in the file does not matter, the order of detections
within an image does (it breaks score ties).

Validation (:class:`~clip4hoi.errors.InputError`, a ``ValueError``, naming the file, the
image, the field and the row): the top level and every record must have the fields above;
lists of one image must have equal lengths; boxes must be 4 finite numbers with
``x2 >= x1`` and ``y2 >= y1`` up to :data:`BOX_TOLERANCE` (float rounding of a 1-px box;
such a box is scored as written); ids must be integers of the dataset; scores must be
finite numbers, not booleans (any real: only their order matters); every file name must be
an image of the annotation file, at most once. **Boxes outside the image are accepted as
they are** — neither clipped nor rejected — because the official HICO-DET evaluator does
not clip either (and the V-COCO files give no image sizes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from clip4hoi.data.annotations import HOIAnnotations, has_bool
from clip4hoi.data.metadata import hicodet_classes
from clip4hoi.data.vcoco_official import VCOCO_DETECTION_LABELS
from clip4hoi.errors import InputError
from clip4hoi.fileio import gc_paused, read_json, write_atomic

BOX_TOLERANCE = 1e-3
"""Pixels by which ``x2`` may fall below ``x1`` (and ``y2`` below ``y1``) in a detection file:
float rounding of a 1-px box, e.g. float32 coordinates of a few thousand pixels."""


@dataclass
class HOIDetections:
    """Detections flattened over the images of an annotation file.

    The reader orders rows by image (annotation order), then as in the file; functions
    that need that order sort other inputs stably by image first. Boxes are 0-based
    inclusive pixel indices; a V-COCO detection without role object has a NaN object box.
    """

    image: np.ndarray     # [M] int64, image index into the annotations
    boxes_h: np.ndarray   # [M, 4] float64
    boxes_o: np.ndarray   # [M, 4] float64
    labels: np.ndarray    # [M] int64: HICO-DET HOI id / V-COCO action-role id
    scores: np.ndarray    # [M] float64
    num_images: int       # I, number of images of the annotation file

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> HOIDetections:
        """The rows ``keep`` (boolean mask or sorted indices)."""
        return HOIDetections(self.image[keep], self.boxes_h[keep], self.boxes_o[keep],
                             self.labels[keep], self.scores[keep], self.num_images)

    def sorted_by_image(self) -> HOIDetections:
        """Rows stably sorted by image (itself when they already are)."""
        if np.all(self.image[1:] >= self.image[:-1]):
            return self
        return self.select(np.argsort(self.image, kind="stable"))

    def image_slices(self) -> np.ndarray:
        """``[I + 1]`` offsets: the rows of image ``i`` are ``bounds[i]:bounds[i + 1]``
        (rows must be sorted by image, see :meth:`sorted_by_image`)."""
        return np.searchsorted(self.image, np.arange(self.num_images + 1), side="left")

    @classmethod
    def empty(cls, num_images: int) -> HOIDetections:
        """No detections at all."""
        return cls(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros((0, 4)),
                   np.zeros(0, np.int64), np.zeros(0), num_images)


def _label_key(annotations: HOIAnnotations) -> tuple[str, int]:
    if annotations.dataset == "vcoco":
        return "actions", len(VCOCO_DETECTION_LABELS)
    return "hoi", len(annotations.class_set)


def _same_ids(made_with: object, annotations: HOIAnnotations) -> bool:
    """Whether detections made with the class set ``made_with`` (``clip4hoi detect``'s
    ``classes`` field) have the class ids of ``annotations``: a custom file takes any set
    but V-COCO's, and HICO-DET's only when it lists HICO-DET's 600 classes in order (a
    converted file)."""
    if made_with == annotations.dataset or annotations.dataset != "custom":
        return made_with == annotations.dataset
    if made_with == "hicodet":
        hico, own = hicodet_classes(), annotations.class_set
        return (own.verbs, own.object_names) == (hico.verbs, hico.object_names)
    return made_with != "vcoco"


def _as_numpy(value: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


# ----------------------------------------------------------------------------- writing

def _box_list(boxes: np.ndarray) -> list:
    """``[N, 4]`` boxes as lists; a NaN row (no role object) becomes ``None``."""
    out: list = boxes.tolist()
    for row in np.flatnonzero(np.isnan(boxes).any(1)).tolist():
        out[row] = None
    return out


def box_indices(boxes: np.ndarray) -> np.ndarray:
    """Continuous xyxy boxes ``[N, 4]`` (pixels) as 0-based inclusive pixel indices
    ``x1, y1, max(x2 - 1, x1), max(y2 - 1, y1)`` (float64, a new array): a box narrower
    than one pixel — or exactly 1 px, where ``x2 - 1`` falls below ``x1`` by float
    rounding — becomes a 1-px box, never an inverted one. NaN stays NaN. The one conversion
    of the package: ``clip4hoi detect``'s records, the API's and ``clip4hoi test``'s all go
    through it."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    out[:, 2:] = np.maximum(out[:, 2:] - 1.0, out[:, :2])
    return out


def records_from_outputs(file_names: list[str], outputs: list[dict],
                         dataset: str = "hicodet") -> list[dict]:
    """``DETS.json`` records from model outputs (one dict per image, boxes *continuous* in
    pixels of the original image; docs/conventions.md "Model outputs").

    Boxes become 0-based inclusive indices (:func:`box_indices`). HICO-DET takes the
    class ids from ``hoi`` (the model must have scored the 600 HICO-DET classes); V-COCO
    takes the action-role ids from ``verbs`` (the ``vcoco`` class set's verb ids).
    """
    if len(file_names) != len(outputs):
        raise ValueError(f"{len(file_names)} file names for {len(outputs)} outputs")
    key, source = ("actions", "verbs") if dataset == "vcoco" else ("hoi", "hoi")
    records = []
    for name, out in zip(file_names, outputs, strict=True):
        boxes_h = box_indices(_as_numpy(out["human_boxes"]))
        boxes_o = box_indices(_as_numpy(out["object_boxes"]))
        records.append({
            "file_name": str(name),
            "human_boxes": boxes_h.tolist(),
            "object_boxes": _box_list(boxes_o),
            key: _as_numpy(out[source]).astype(np.int64).reshape(-1).tolist(),
            "scores": _as_numpy(out["scores"]).astype(np.float64).reshape(-1).tolist(),
        })
    return records


def detections_to_records(detections: HOIDetections, annotations: HOIAnnotations
                          ) -> list[dict]:
    """``DETS.json`` records of the images that have detections, in annotation order."""
    key, _ = _label_key(annotations)
    detections = detections.sorted_by_image()
    bounds = detections.image_slices()
    records = []
    for i in np.flatnonzero(np.diff(bounds)):
        rows = slice(bounds[i], bounds[i + 1])
        records.append({
            "file_name": annotations.file_names[i],
            "human_boxes": detections.boxes_h[rows].tolist(),
            "object_boxes": _box_list(detections.boxes_o[rows]),
            key: detections.labels[rows].tolist(),
            "scores": detections.scores[rows].tolist(),
        })
    return records


def write_detections(path: str | Path, records: list[dict] | HOIDetections,
                     annotations: HOIAnnotations | None = None) -> Path:
    """Write ``DETS.json``. ``records`` as made by :func:`records_from_outputs`, or a
    :class:`HOIDetections` (then ``annotations`` gives the file names). When ``annotations``
    is given the records are validated against it first. The file is written atomically
    (:func:`clip4hoi.fileio.write_atomic`): an existing ``path`` is replaced whole or not at
    all."""
    path = Path(path)
    if isinstance(records, HOIDetections):
        if annotations is None:
            raise ValueError("write_detections: HOIDetections need the annotations")
        records = detections_to_records(records, annotations)
    elif annotations is not None:
        parse_records({"images": records}, annotations, source=str(path))
    inputs = [annotations.source] if annotations is not None else []
    return write_atomic(path, json.dumps({"images": records}, allow_nan=False), inputs)


# ----------------------------------------------------------------------------- reading

def read_detections(path: str | Path, annotations: HOIAnnotations) -> HOIDetections:
    """Read and validate ``DETS.json`` against an annotation file (HICO-DET or V-COCO):
    parsed by :func:`~clip4hoi.fileio.read_json` (``orjson``), validated in bulk, with the
    garbage collector paused throughout (:func:`~clip4hoi.fileio.gc_paused`)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a detections file (DETS.json)")
    with gc_paused():
        return parse_records(read_json(path), annotations, source=str(path))


def _fail(source: str, name: str, field: str, message: str) -> InputError:
    return InputError(f"{source}: image {name}: field {field!r} {message}")


def _locate(row: int, counts: np.ndarray, names: list[str]) -> tuple[str, int]:
    """(image name, row within the image) of flat row ``row``."""
    ends = np.cumsum(counts)
    i = int(np.searchsorted(ends, row, side="right"))
    return names[i], row - int(ends[i] - counts[i])


def _numbers(values: list, width: int = 0) -> np.ndarray | None:
    """``values`` — numbers or, with ``width``, lists of ``width`` numbers — as float64
    ``[M]`` or ``[M, width]``, checked in bulk: None when one of them is anything else
    (a string, a boolean — numpy would take ``true`` for 1 —, None, a list of another
    length, a numpy scalar); :func:`_numbers_one_by_one` then decides."""
    try:
        if width:
            if len(values) and (np.fromiter(map(len, values), np.int64, len(values))
                                != width).any():
                return None
            values = list(chain.from_iterable(values))
        if not set(map(type, values)) <= {float, int}:
            return None
        return np.array(values, dtype=np.float64).reshape((-1, width) if width else -1)
    except (TypeError, OverflowError):
        return None


def _numbers_one_by_one(values: list, width: int, field: str, source: str,
                        counts: np.ndarray, names: list[str]) -> np.ndarray:
    """What :func:`_numbers` refused: numbers of any numeric type as float64, or an
    :class:`InputError` naming the image and row of the first value that is not one."""
    try:
        array = np.asarray(values)
        if (array.size and array.dtype.kind not in "fiu") or has_bool(values) or \
                array.shape[1:] != ((width,) if width else ()):
            raise ValueError
        return array.astype(np.float64).reshape((-1, width) if width else -1)
    except (ValueError, TypeError, OverflowError):
        pass

    def number(x: Any) -> bool:
        return isinstance(x, int | float | np.number) and not isinstance(x, bool | np.bool_)

    for row, value in enumerate(values):
        ok = (isinstance(value, list | tuple) and len(value) == width
              and all(number(x) for x in value)) if width else number(value)
        if not ok:
            name, k = _locate(row, counts, names)
            expected = "[x1, y1, x2, y2]" if width == 4 else "a number"
            raise _fail(source, name, field, f"row {k} has {value!r}, expected {expected}")
    raise InputError(f"{source}: field {field!r} has values that are not numbers")


def _column(records: list[dict], field: str, width: int, source: str, counts: np.ndarray,
            names: list[str], none_box: bool = False) -> np.ndarray:
    """One field of every record, concatenated: ``[M]`` numbers or ``[M, width]`` rows.
    ``none_box``: a ``null`` or ``[]`` box is a NaN row (V-COCO: no role object)."""
    values = list(chain.from_iterable(r[field] for r in records))
    if none_box:
        nan_box = [math.nan] * 4
        values = [nan_box if b is None or (isinstance(b, list) and not b) else b
                  for b in values]
    array = _numbers(values, width)
    if array is None:
        array = _numbers_one_by_one(values, width, field, source, counts, names)
    return array


def _check_boxes(boxes: np.ndarray, field: str, source: str, counts: np.ndarray,
                 names: list[str], allow_none: bool) -> None:
    """Finite, ``x2 >= x1`` and ``y2 >= y1`` up to :data:`BOX_TOLERANCE` (NaN rows are
    allowed with ``allow_none``); else an :class:`InputError` naming the row."""
    finite = np.isfinite(boxes).all(1)
    if allow_none:
        finite |= np.isnan(boxes).all(1)
    inverted = boxes[:, 2:] < boxes[:, :2] - BOX_TOLERANCE        # [M, 2]: x, y
    bad = ~finite | inverted.any(1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        name, k = _locate(row, counts, names)
        what = "not finite" if not finite[row] else " and ".join(
            axis for axis, flag in zip(("x2 < x1", "y2 < y1"), inverted[row], strict=True)
            if flag) + f" (beyond the {BOX_TOLERANCE} px of float rounding)"
        raise _fail(source, name, field, f"row {k} has box {boxes[row].tolist()}: {what}")


def parse_records(data: Any, annotations: HOIAnnotations, source: str = "<detections>"
                  ) -> HOIDetections:
    """Validate parsed ``DETS.json`` content and align it to ``annotations``."""
    key, num_classes = _label_key(annotations)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{source}: expected {{'images': [...]}} at the top level")
    made_with = data.get("classes", annotations.dataset)  # set by clip4hoi detect
    if not _same_ids(made_with, annotations):
        remedy = f"with {{classes}} {annotations.dataset}" if annotations.dataset != "custom" \
            else "with the dataset's classes (a checkpoint trained on it has them)"
        raise InputError(f"{source}: the detections were made with the class set "
                         f"{made_with!r}, whose ids are not {annotations.dataset} ids; run "
                         f"{{detect}} {remedy}")
    index = annotations.index()
    fields = ("human_boxes", "object_boxes", key, "scores")
    by_image: dict[int, dict] = {}
    for k, record in enumerate(data["images"]):
        if not isinstance(record, dict) or "file_name" not in record:
            raise InputError(f"{source}: image record {k}: missing field 'file_name'")
        name = record["file_name"]
        if not isinstance(name, str):
            raise InputError(f"{source}: image record {k}: field 'file_name' is {name!r}, "
                             f"expected a string")
        if name not in index:
            raise _fail(source, repr(name), "file_name", f"is not an image of "
                        f"{annotations.source}")
        i = index[name]
        if i in by_image:
            raise _fail(source, name, "file_name", "appears more than once")
        for f in fields:
            if not isinstance(record.get(f), list):
                raise _fail(source, name, f, "is missing or not a list")
        lengths = [len(record[f]) for f in fields]
        if len(set(lengths)) != 1:
            raise _fail(source, name, "/".join(fields), f"differ in length {lengths}")
        by_image[i] = record

    order = sorted(by_image)
    records = [by_image[i] for i in order]
    names = [annotations.file_names[i] for i in order]
    counts = np.array([len(r["scores"]) for r in records], dtype=np.int64)
    image = np.repeat(np.asarray(order, dtype=np.int64), counts)
    where = (source, counts, names)

    vcoco = annotations.dataset == "vcoco"
    boxes_h = _column(records, "human_boxes", 4, *where)
    boxes_o = _column(records, "object_boxes", 4, *where, none_box=vcoco)
    _check_boxes(boxes_h, "human_boxes", *where, allow_none=False)
    _check_boxes(boxes_o, "object_boxes", *where, allow_none=vcoco)
    labels = _column(records, key, 0, *where)
    scores = _column(records, "scores", 0, *where)
    for f, arr, bad, what in (
            (key, labels, (labels != np.floor(labels)) | (labels < 0) | (labels >= num_classes)
             | ~np.isfinite(labels), f"id {{}}, expected an integer in [0, {num_classes})"),
            ("scores", scores, ~np.isfinite(scores), "score {}, expected a finite number")):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            name, k = _locate(row, counts, names)
            value = arr[row].item()
            raise _fail(source, name, f, f"row {k} has " + what.format(
                int(value) if math.isfinite(value) and value == int(value) else value))
    return HOIDetections(image=image, boxes_h=boxes_h, boxes_o=boxes_o,
                         labels=labels.astype(np.int64), scores=scores,
                         num_images=len(annotations))


def detections_from_ground_truth(annotations: HOIAnnotations, score: float = 1.0
                                 ) -> HOIDetections:
    """The ground truth as detections, exported the official way (0-based inclusive,
    :func:`box_indices`). Useful for sanity checks: it must evaluate to 100 mAP."""
    counts = np.array([len(h) for h in annotations.hoi], dtype=np.int64)
    boxes_h = box_indices(np.concatenate([*annotations.boxes_h, np.zeros((0, 4))]))
    boxes_o = box_indices(np.concatenate([*annotations.boxes_o, np.zeros((0, 4))]))
    labels = np.concatenate([*annotations.hoi, np.zeros(0, np.int64)])
    return HOIDetections(image=np.repeat(np.arange(len(counts)), counts), boxes_h=boxes_h,
                         boxes_o=boxes_o, labels=labels.astype(np.int64),
                         scores=np.full(len(labels), float(score)),
                         num_images=len(annotations))

"""Ground-truth annotation files of HICO-DET and V-COCO, parsed into one in-memory form.

Contract (see docs/conventions.md): boxes are *continuous* xyxy float64 in pixels of the
original image; objects are COCO-80 ids; HICO-DET HOI ids are official 0-based ids.

Readers:

* :func:`load_hicodet_annotations` — fredzzhang/hicodet ``instances_{train,test}2015.json``
  (objects in COCO-80 order, ``objects[0] == "person"``, or in the alphabetical HICO order,
  ``objects[0] == "airplane"``, converted by name) and QPIC / GEN-VLKT ``trainval_hico.json``
  / ``test_hico.json`` (a list of images; ``category_id`` of a box is a COCO category id,
  verbs and ``hoi_category_id`` are 1-based). HICO-DET boxes are 1-based inclusive pixel
  indices in both: they become ``x1 - 1, y1 - 1, x2, y2``.
* :func:`load_vcoco_annotations` — fredzzhang/vcoco ``instances_vcoco_*.json`` (objects
  index a list with ``background`` first: COCO-80 = index - 1; boxes are COCO ``x + w``
  corners, already continuous). Per-pair form, as the training datasets want it.
  The official V-COCO layout (``vcoco_{split}.json`` + COCO) and the per-person ground
  truth the evaluator needs are in :mod:`clip4hoi.data.vcoco_official`.

Every malformed input raises :class:`~clip4hoi.errors.InputError` (a ``ValueError``) naming
the file, the image and the field; booleans are not numbers, and an image name appears
at most once.
Fields that a format does not store are filled as documented on :class:`HOIAnnotations`
(``sizes`` = 0 when unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from clip4hoi.data import metadata
from clip4hoi.errors import InputError
from clip4hoi.fileio import read_json

NUM_HOI = 600
NUM_VERBS = len(metadata.HICO_VERBS)
NUM_OBJECTS = len(metadata.COCO_OBJECTS)
NUM_VCOCO = len(metadata.VCOCO_ACTIONS)
# V-COCO agent actions (the action of each action-role class, in order of first appearance)
VCOCO_AGENT_ACTIONS: tuple[str, ...] = tuple(dict.fromkeys(
    a.rsplit(" ", 1)[0] for a in metadata.VCOCO_ACTIONS))
VCOCO_ROLE_ACTION: tuple[int, ...] = tuple(
    VCOCO_AGENT_ACTIONS.index(a.rsplit(" ", 1)[0]) for a in metadata.VCOCO_ACTIONS)
"""Agent-action index of each of the 24 action-role classes."""


@dataclass
class HOIAnnotations:
    """All images of one annotation file; per-image arrays have one row per
    (human, object, class) triplet.

    For a custom file (``dataset == "custom"``, :mod:`clip4hoi.data.custom`), ``hoi`` indexes
    ``classes``, ``objects`` its ``object_vocabulary`` and ``verbs`` its
    ``verb_vocabulary``. For V-COCO (``dataset == "vcoco"``), ``hoi`` and ``verbs`` both hold
    the action-role id (0..23, :data:`metadata.VCOCO_ACTIONS`), ``image_ids`` the COCO
    image ids and ``sizes`` is all 0 (the fredzzhang files do not store image sizes).
    ``sizes`` is 0 for any image whose size the file does not give (QPIC files).
    """

    source: str                      # the file it was read from
    file_names: list[str]            # [I]
    sizes: np.ndarray                # [I, 2] int64, (width, height) of the original image
    boxes_h: list[np.ndarray]        # I × [N_i, 4] float64, continuous xyxy
    boxes_o: list[np.ndarray]        # I × [N_i, 4] float64, continuous xyxy
    hoi: list[np.ndarray]            # I × [N_i] int64: HICO-DET HOI id / V-COCO action id
    objects: list[np.ndarray]        # I × [N_i] int64: COCO-80 object id
    verbs: list[np.ndarray]          # I × [N_i] int64: verb id
    empty: np.ndarray                # indices of images without visible annotation
    rare: np.ndarray | None = None   # rare HOI ids listed in the file (HICO-DET test files)
    dataset: str = "hicodet"         # "hicodet", "vcoco" or "custom"
    image_ids: np.ndarray | None = None  # [I] int64 COCO image ids (V-COCO)
    classes: metadata.HOIClassSet | None = None  # the classes ``hoi`` indexes (custom files)
    unseen: np.ndarray | None = None  # class ids kept out of training (a custom zero-shot test)

    def __len__(self) -> int:
        return len(self.file_names)

    @property
    def num_pairs(self) -> int:
        """Total number of (human, object, class) rows."""
        return int(sum(len(h) for h in self.hoi))

    def index(self) -> dict[str, int]:
        """``{file name: image index}``."""
        return {name: i for i, name in enumerate(self.file_names)}

    @property
    def class_set(self) -> metadata.HOIClassSet:
        """The classes ``hoi`` indexes: the file's own (custom), or HICO-DET's 600."""
        if self.classes is not None:
            return self.classes
        if self.dataset == "vcoco":
            raise ValueError(f"{self.source}: V-COCO rows hold action-role ids, not classes "
                             f"of a class set")
        return metadata.hicodet_classes()


# ----------------------------------------------------------------------------- helpers

def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an annotation file")
    return read_json(path)


def has_bool(values: list) -> bool:
    """Whether a list of numbers (or of lists of numbers) holds a boolean: numpy would take
    ``true`` for 1."""
    types = set(map(type, values))
    if any(issubclass(t, list) for t in types):
        types |= set(map(type, chain.from_iterable(v for v in values if isinstance(v, list))))
    return bool in types


def _index_list(value: Any, upper: int, name: str, source: str) -> np.ndarray:
    """A list of integer indices in ``[0, upper)``, as int64."""
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InputError(f"{source}: field {name!r} must be a list of integer indices")
    array = np.asarray(value, dtype=np.int64).reshape(-1)
    if ((array < 0) | (array >= upper)).any():
        raise InputError(f"{source}: field {name!r} has indices out of [0, {upper})")
    return array


def _check_names(names: list[Any], source: str) -> list[str]:
    """Image file names: strings, each once (a repeated name would be matched twice)."""
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise InputError(f"{source}: image {i}: file name {name!r} is not a non-empty "
                             f"string")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise InputError(f"{source}: image {i}: file name {name!r} repeats image "
                             f"{seen[name]}; each image must appear once")
        seen[name] = i
    return names


def _safety_net(load: Any) -> Any:
    """Report a structure the checks did not foresee (a number where a list belongs, ...) as
    an :class:`InputError` naming the file, not as a traceback."""
    def wrapper(path: str | Path, *args: Any, **kwargs: Any) -> Any:
        try:
            return load(path, *args, **kwargs)
        except (TypeError, AttributeError, KeyError, IndexError, OverflowError) as error:
            raise InputError(f"{path}: malformed annotation file ({type(error).__name__}: "
                             f"{error})") from error
    wrapper.__doc__, wrapper.__name__ = load.__doc__, load.__name__
    wrapper.__wrapped__ = load  # type: ignore[attr-defined]
    return wrapper


def _require(data: Any, key: str, source: str, where: str = "") -> Any:
    if not isinstance(data, dict) or key not in data:
        raise InputError(f"{source}: {where}missing field {key!r}")
    return data[key]


def _image_of_row(row: int, counts: np.ndarray) -> int:
    return int(np.searchsorted(np.cumsum(counts), row, side="right"))


def _flat_array(per_image: list[list], counts: np.ndarray, tail: tuple[int, ...],
                name: str, source: str, names: list[str]) -> np.ndarray:
    """Concatenate per-image lists into one float64 array ``[sum(counts), *tail]``; on a
    ragged or non-numeric entry, raise naming the offending image."""
    def numeric(values: list) -> np.ndarray:   # numbers only: no strings, None, booleans
        arr = np.asarray(values)
        if (arr.size and arr.dtype.kind not in "fiu") or has_bool(values):
            raise ValueError
        return arr.astype(np.float64)

    try:
        flat = numeric(list(chain.from_iterable(per_image)))
        if flat.size == 0:
            flat = flat.reshape((0, *tail))
        if flat.shape[1:] != tail:
            raise ValueError
        return flat
    except (ValueError, TypeError, OverflowError):
        for i, rows in enumerate(per_image):
            try:
                arr = numeric(rows).reshape((len(rows), -1))
                ok = arr.shape[1:] == (tail[0] if tail else 1,) or not rows
            except (ValueError, TypeError, OverflowError):
                ok = False
            if not ok:
                shape = "a list of [x1, y1, x2, y2]" if tail else "a list of numbers"
                raise InputError(f"{source}: image {i} ({names[i]}): field {name!r} must be "
                                 f"{shape}") from None
        raise InputError(f"{source}: field {name!r} has values that are not numbers"
                         ) from None


def _check_ids(values: np.ndarray, upper: int, name: str, source: str,
               counts: np.ndarray, names: list[str]) -> np.ndarray:
    bad = np.flatnonzero((values != np.floor(values)) | (values < 0) | (values >= upper))
    if bad.size:
        i = _image_of_row(int(bad[0]), counts)
        raise InputError(f"{source}: image {i} ({names[i]}): field {name!r} has id "
                         f"{values[bad[0]]!r}, expected an integer in [0, {upper})")
    return values.astype(np.int64)


def _check_boxes(boxes: np.ndarray, name: str, source: str, counts: np.ndarray,
                 names: list[str]) -> None:
    bad = ~np.isfinite(boxes).all(1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        i = _image_of_row(row, counts)
        raise InputError(f"{source}: image {i} ({names[i]}): field {name!r} has box "
                         f"{boxes[row].tolist()} (not finite or x2 < x1 / y2 < y1)")


def _split(flat: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []


def _check_classes(hoi: np.ndarray, objects: np.ndarray, verbs: np.ndarray, source: str,
                   counts: np.ndarray, names: list[str]) -> None:
    """Every row's object and verb must be those of its HOI class."""
    classes = metadata.hicodet_classes()
    for name, values, table in (("object", objects, classes.objects),
                                ("verb", verbs, classes.verb_ids)):
        expected = np.asarray(table, dtype=np.int64)[hoi]
        bad = np.flatnonzero(values != expected)
        if bad.size:
            row = int(bad[0])
            i = _image_of_row(row, counts)
            raise InputError(f"{source}: image {i} ({names[i]}): field {name!r} is "
                             f"{values[row]} but HOI {hoi[row]} has {name} {expected[row]}")


def _name_key(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_")


# ----------------------------------------------------------------------------- HICO-DET

@_safety_net
def load_hicodet_annotations(path: str | Path) -> HOIAnnotations:
    """Read a HICO-DET annotation file: fredzzhang ``instances_*2015.json`` (COCO-80 or
    alphabetical object order, detected from ``objects[0]``) or QPIC/GEN-VLKT
    ``trainval_hico.json`` / ``test_hico.json``."""
    return parse_hicodet(_read_json(path), str(path))


def parse_hicodet(data: Any, source: str) -> HOIAnnotations:
    """The annotations of parsed HICO-DET content (see :func:`load_hicodet_annotations`);
    errors name ``source``."""
    if isinstance(data, list):
        return _load_qpic(data, source)
    if isinstance(data, dict) and "annotation" in data:
        return _load_fredzzhang(data, source)
    raise InputError(f"{source}: not a HICO-DET annotation file (expected a fredzzhang dict "
                     f"with 'annotation' or a QPIC/GEN-VLKT list of images)")


def _object_map(file_objects: Any, source: str) -> np.ndarray:
    """File object index -> COCO-80 id, by name (both orders of fredzzhang/hicodet)."""
    if not isinstance(file_objects, list) or len(file_objects) != NUM_OBJECTS:
        raise InputError(f"{source}: field 'objects' must list the {NUM_OBJECTS} object names")
    keys = [_name_key(o) for o in file_objects]
    unknown = [o for o in keys if o not in metadata.COCO_OBJECTS]
    if unknown or len(set(keys)) != NUM_OBJECTS:
        raise InputError(f"{source}: field 'objects' has unknown or repeated names "
                         f"{unknown or keys}")
    return np.asarray([metadata.COCO_OBJECTS.index(k) for k in keys], dtype=np.int64)


def _load_fredzzhang(data: dict, source: str) -> HOIAnnotations:
    names = _require(data, "filenames", source)
    anns = _require(data, "annotation", source)
    sizes = _require(data, "size", source)
    if not (isinstance(names, list) and isinstance(anns, list) and isinstance(sizes, list)):
        raise InputError(f"{source}: fields 'filenames', 'annotation', 'size' must be lists")
    if not len(names) == len(anns) == len(sizes):
        raise InputError(f"{source}: fields 'filenames' ({len(names)}), 'annotation' "
                         f"({len(anns)}) and 'size' ({len(sizes)}) differ in length")
    names = _check_names(names, source)
    obj_map = _object_map(_require(data, "objects", source), source)
    if "verbs" in data and (not isinstance(data["verbs"], list) or [
            _name_key(v) for v in data["verbs"]] != list(metadata.HICO_VERBS)):
        raise InputError(f"{source}: field 'verbs' must list the 117 HICO-DET verbs")

    keys = ("boxes_h", "boxes_o", "hoi", "object", "verb")
    fields: dict[str, list[list]] = {k: [] for k in keys}
    counts = np.zeros(len(anns), dtype=np.int64)
    for i, ann in enumerate(anns):
        where = f"image {i} ({names[i]}): "
        values = [_require(ann, k, source, where) for k in keys]
        if not all(isinstance(v, list) for v in values):
            raise InputError(f"{source}: {where}fields {keys} must be lists")
        if len({len(v) for v in values}) != 1:
            raise InputError(f"{source}: {where}fields {keys} differ in length "
                             f"{[len(v) for v in values]}")
        counts[i] = len(values[0])
        for k, v in zip(keys, values, strict=True):
            fields[k].append(v)

    flat = {k: _flat_array(fields[k], counts, (4,) if k.startswith("boxes") else (),
                           k, source, names) for k in keys}
    for k in ("boxes_h", "boxes_o"):
        _check_boxes(flat[k], k, source, counts, names)
    hoi = _check_ids(flat["hoi"], NUM_HOI, "hoi", source, counts, names)
    verbs = _check_ids(flat["verb"], NUM_VERBS, "verb", source, counts, names)
    objects = obj_map[_check_ids(flat["object"], NUM_OBJECTS, "object", source, counts, names)]
    _check_classes(hoi, objects, verbs, source, counts, names)
    if "correspondence" in data:
        corr = data["correspondence"]
        try:
            corr = np.asarray(corr, dtype=np.int64).reshape(NUM_HOI, 3)
            ok = ((corr[:, 0] == np.arange(NUM_HOI)).all()
                  and (obj_map[corr[:, 1]] == metadata.hicodet_classes().objects).all()
                  and (corr[:, 2] == metadata.hicodet_classes().verb_ids).all())
        except (ValueError, TypeError, IndexError):
            ok = False
        if not ok:
            raise InputError(f"{source}: field 'correspondence' does not match the 600 "
                             f"HICO-DET classes")

    size_arr = _flat_array([[s] for s in sizes], np.ones(len(sizes), np.int64), (2,),
                           "size", source, names)
    for k in ("boxes_h", "boxes_o"):
        flat[k][:, :2] -= 1.0            # 1-based inclusive -> continuous

    empty = data.get("empty")
    if empty is None:
        empty = np.flatnonzero(counts == 0)
    else:
        empty = _index_list(empty, len(names), "empty", source)
    rare = data.get("rare")
    if rare is not None:
        rare = _index_list(rare, NUM_HOI, "rare", source)
    return HOIAnnotations(
        source=source, file_names=names, sizes=size_arr.astype(np.int64),
        boxes_h=_split(flat["boxes_h"], counts), boxes_o=_split(flat["boxes_o"], counts),
        hoi=_split(hoi, counts), objects=_split(objects, counts), verbs=_split(verbs, counts),
        empty=empty, rare=rare, dataset="hicodet")


def qpic_image(image: Any, i: int, source: str, names: list[str], sizes: np.ndarray
               ) -> tuple[str, list, list]:
    """Image ``i`` of a QPIC-layout file (QPIC, custom format): its file name appended to
    ``names`` (checked), its optional ``width`` / ``height`` written to ``sizes[i]``;
    returns the ``"image i (name): "`` prefix of messages and its ``annotations`` and
    ``hoi_annotation`` lists."""
    name = _require(image, "file_name", source, f"image {i}: ")
    names.append(name)
    _check_names(names[-1:], source)
    where = f"image {i} ({name}): "
    if "width" in image or "height" in image:
        size = (_require(image, "width", source, where),
                _require(image, "height", source, where))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise InputError(f"{source}: {where}fields 'width', 'height' are {size}, "
                             f"expected positive integers")
        sizes[i] = size
    boxes = _require(image, "annotations", source, where)
    pairs = _require(image, "hoi_annotation", source, where)
    if not isinstance(boxes, list) or not isinstance(pairs, list):
        raise InputError(f"{source}: {where}fields 'annotations' and 'hoi_annotation' "
                         f"must be lists")
    return where, boxes, pairs


def _load_qpic(data: list, source: str) -> HOIAnnotations:
    coco_to_80 = {cid: k for k, cid in enumerate(metadata.COCO_CATEGORY_IDS)}
    classes = metadata.hicodet_classes()
    hoi_of = {(v, o): k for k, (v, o) in enumerate(zip(classes.verb_ids, classes.objects,
                                                       strict=True))}
    names: list[str] = []
    sizes = np.zeros((len(data), 2), dtype=np.int64)
    rows: dict[str, list] = {k: [] for k in ("boxes_h", "boxes_o", "hoi", "object", "verb")}
    counts = np.zeros(len(data), dtype=np.int64)
    for i, image in enumerate(data):
        where, boxes, pairs = qpic_image(image, i, source, names, sizes)
        bbox, cats = [], []
        for b in boxes:
            box = _require(b, "bbox", source, where)
            try:
                box = [float(x) for x in box]
            except (TypeError, ValueError):
                box = []
            if len(box) != 4:
                raise InputError(f"{source}: {where}field 'annotations[*].bbox' must be "
                                 f"[x1, y1, x2, y2]")
            bbox.append(box)
            cats.append(_require(b, "category_id", source, where))
        for pair in pairs:
            s = _require(pair, "subject_id", source, where)
            o = _require(pair, "object_id", source, where)
            v = _require(pair, "category_id", source, where)
            for value, fname in ((s, "subject_id"), (o, "object_id")):
                if not isinstance(value, int) or not 0 <= value < len(boxes):
                    raise InputError(f"{source}: {where}field 'hoi_annotation[*].{fname}' is "
                                     f"{value!r}, expected an index into its "
                                     f"{len(boxes)} annotations")
            if not isinstance(cats[o], int) or cats[o] not in coco_to_80:
                raise InputError(f"{source}: {where}field 'annotations[{o}].category_id' is "
                                 f"{cats[o]!r}, not a COCO category id")
            if not isinstance(v, int) or not 1 <= v <= NUM_VERBS:
                raise InputError(f"{source}: {where}field 'hoi_annotation[*].category_id' is "
                                 f"{v!r}, expected a verb id in 1..{NUM_VERBS}")
            obj = coco_to_80[cats[o]]
            if "hoi_category_id" in pair:
                h = pair["hoi_category_id"]
                if not isinstance(h, int) or not 1 <= h <= NUM_HOI:
                    raise InputError(f"{source}: {where}field 'hoi_category_id' is {h!r}, "
                                     f"expected 1..{NUM_HOI}")
                h -= 1
            elif (v - 1, obj) in hoi_of:
                h = hoi_of[(v - 1, obj)]
            else:
                raise InputError(f"{source}: {where}verb {v} with object "
                                 f"{metadata.COCO_OBJECTS[obj]!r} is not a HICO-DET class")
            for key, value in (("boxes_h", bbox[s]), ("boxes_o", bbox[o]), ("hoi", h),
                               ("object", obj), ("verb", v - 1)):
                rows[key].append(value)
            counts[i] += 1

    _check_names(names, source)
    flat = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}
    for k in ("boxes_h", "boxes_o"):
        flat[k] = flat[k].reshape(-1, 4)
    for k in ("boxes_h", "boxes_o"):
        _check_boxes(flat[k], k, source, counts, names)
        flat[k][:, :2] -= 1.0            # 1-based inclusive -> continuous
    hoi = flat["hoi"].astype(np.int64)
    objects = flat["object"].astype(np.int64)
    verbs = flat["verb"].astype(np.int64)
    _check_classes(hoi, objects, verbs, source, counts, names)
    return HOIAnnotations(
        source=source, file_names=names, sizes=sizes,
        boxes_h=_split(flat["boxes_h"], counts), boxes_o=_split(flat["boxes_o"], counts),
        hoi=_split(hoi, counts), objects=_split(objects, counts), verbs=_split(verbs, counts),
        empty=np.flatnonzero(counts == 0), rare=None, dataset="hicodet")


# ----------------------------------------------------------------------------- V-COCO

@_safety_net
def load_vcoco_annotations(path: str | Path) -> HOIAnnotations:
    """Read a fredzzhang/vcoco ``instances_vcoco_*.json`` file.

    One row per (human, visible role object, action-role); ``hoi`` = ``verbs`` = action-role
    id (0..23), ``objects`` = COCO-80 id (file index - 1), boxes unchanged (COCO corners).
    """
    data = _read_json(path)
    source = str(path)
    if not isinstance(data, dict):
        raise InputError(f"{source}: not a fredzzhang V-COCO file (expected a dict)")
    anns = _require(data, "annotations", source)
    image_ids = _require(data, "images", source)
    if not isinstance(anns, list) or not isinstance(image_ids, list) \
            or len(anns) != len(image_ids):
        raise InputError(f"{source}: fields 'annotations' and 'images' must be lists of the "
                         f"same length")
    classes = _require(data, "classes", source)
    if list(classes) != list(metadata.VCOCO_ACTIONS):
        raise InputError(f"{source}: field 'classes' differs from the 24 V-COCO action-roles")
    objects = _require(data, "objects", source)
    if not isinstance(objects, list) or len(objects) != NUM_OBJECTS + 1 \
            or objects[0] != "background" \
            or [_name_key(o) for o in objects[1:]] != list(metadata.COCO_OBJECTS):
        raise InputError(f"{source}: field 'objects' must be 'background' followed by the 80 "
                         f"COCO objects in COCO order")

    keys = ("boxes_h", "boxes_o", "actions", "objects")
    fields: dict[str, list[list]] = {k: [] for k in keys}
    names: list[str] = []
    counts = np.zeros(len(anns), dtype=np.int64)
    for i, ann in enumerate(anns):
        name = _require(ann, "file_name", source, f"image {i}: ")
        names.append(name)
        _check_names(names[-1:], source)
        where = f"image {i} ({name}): "
        values = [_require(ann, k, source, where) for k in keys]
        if not all(isinstance(v, list) for v in values) or len({len(v) for v in values}) != 1:
            raise InputError(f"{source}: {where}fields {keys} must be lists of equal length")
        counts[i] = len(values[0])
        for k, v in zip(keys, values, strict=True):
            fields[k].append(v)
    flat = {k: _flat_array(fields[k], counts, (4,) if k.startswith("boxes") else (), k,
                           source, names) for k in keys}
    for k in ("boxes_h", "boxes_o"):
        _check_boxes(flat[k], k, source, counts, names)
    actions = _check_ids(flat["actions"], NUM_VCOCO, "actions", source, counts, names)
    obj = _check_ids(flat["objects"], NUM_OBJECTS + 1, "objects", source, counts, names)
    if (obj == 0).any():
        i = _image_of_row(int(np.flatnonzero(obj == 0)[0]), counts)
        raise InputError(f"{source}: image {i} ({names[i]}): field 'objects' is 0 "
                         f"(background)")
    _check_names(names, source)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in image_ids):
        raise InputError(f"{source}: field 'images' must be a list of integer COCO image ids")
    ids = np.asarray(image_ids, dtype=np.int64)
    return HOIAnnotations(
        source=source, file_names=names, sizes=np.zeros((len(names), 2), dtype=np.int64),
        boxes_h=_split(flat["boxes_h"], counts), boxes_o=_split(flat["boxes_o"], counts),
        hoi=_split(actions, counts), objects=_split(obj - 1, counts),
        verbs=_split(actions.copy(), counts), empty=np.flatnonzero(counts == 0),
        rare=None, dataset="vcoco", image_ids=ids)

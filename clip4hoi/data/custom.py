"""Your own HOI dataset: the custom annotation format (docs/datasets.md), your own zero-shot
split, rare classes from training counts and the converters from HICO-DET and V-COCO (the
dataset class is :class:`clip4hoi.data.hicodet.CustomHOI`; nothing here imports torch).

The format is the QPIC / HOI-A layout with **names instead of ids**, so the class set is
the text of the data::

    {"objects": ["person", "drill", "wrench"],          # optional
     "verbs": ["operate", "hold"],                      # optional
     "classes": [{"verb": "hold", "object": "drill"}],  # optional: order, extra classes
     "images": [
       {"file_name": "shop_001.jpg", "width": 640, "height": 480,
        "annotations": [{"bbox": [12.0, 30.5, 210.0, 470.0], "category": "person"},
                        {"bbox": [150.0, 200.0, 260.0, 300.0], "category": "drill"}],
        "hoi_annotation": [{"subject_id": 0, "object_id": 1, "verb": "operate"}]}]}

Boxes are continuous ``[x1, y1, x2, y2]`` pixels of the stored image (``x2 = x1 +
width``). A ``category`` / ``verb`` is a name, or an index into the top-level
``objects`` / ``verbs`` list; when a list is given, every name must be in it. The subject
of a pair must be a ``person``; the object may be one too. The class set is the
``classes`` list, in its order (a class there may have no pair: a class to detect
zero-shot), then every other (verb, object) pair in order of first appearance. A class
entry may carry a ``sentence`` (training-free scoring) and ``rare`` (a flag for the
evaluation when no training file is given, as a converted HICO-DET file keeps
HICO-DET's split). ``width`` / ``height`` are optional (checked against the image when
given).

Every malformed file raises :class:`~clip4hoi.errors.InputError` naming the file, the
image and the field; reading writes nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from clip4hoi.data import metadata
from clip4hoi.data.annotations import (
    HOIAnnotations,
    _check_names,
    _read_json,
    _require,
    _safety_net,
    _split,
    load_hicodet_annotations,
    parse_hicodet,
    qpic_image,
)
from clip4hoi.data.metadata import HOIClassSet, words
from clip4hoi.data.metadata import object_key as _object_key
from clip4hoi.data.metadata import verb_key as _verb_key
from clip4hoi.errors import InputError

object_key = lru_cache(maxsize=4096)(_object_key)   # names repeat on every row
verb_key = lru_cache(maxsize=4096)(_verb_key)

RARE_THRESHOLD = 10
"""A class is rare when it has fewer training pairs than this (HICO-DET's rule)."""


def is_custom_file(data: Any) -> bool:
    """Whether parsed JSON is a custom-format file: a mapping with ``images`` (and no
    top-level ``annotation`` / ``annotations``, as HICO-DET's and V-COCO's fredzzhang
    files have)."""
    return isinstance(data, dict) and "images" in data and not (
        "annotation" in data or "annotations" in data)


@_safety_net
def load_annotations(path: str | Path) -> HOIAnnotations:
    """Read a custom-format file or a HICO-DET one (fredzzhang or QPIC), recognised from
    its content."""
    data = _read_json(path)
    if is_custom_file(data):
        return parse_custom(data, str(path))
    return parse_hicodet(data, str(path))


# ----------------------------------------------------------------------------- reading

@_safety_net
def load_custom_annotations(path: str | Path) -> HOIAnnotations:
    """Read a custom-format annotation file (see the module docstring)."""
    data = _read_json(path)
    if not is_custom_file(data):
        raise InputError(f"{path}: not a custom-format annotation file (expected a JSON "
                         f"object with 'images'; docs/datasets.md)")
    return parse_custom(data, str(path))


def _name_list(data: dict, field: str, key: Any, source: str) -> list[str] | None:
    """The optional top-level ``objects`` / ``verbs`` list, as keys, without repeats."""
    if field not in data:
        return None
    names = data[field]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{source}: field {field!r} must be a list of names")
    if not names:
        raise InputError(f"{source}: field {field!r} is empty; list the names, or leave the "
                         f"field out and write names inline")
    keys = [key(n) for n in names]
    for i, k in enumerate(keys):
        if not k:
            raise InputError(f"{source}: field {field!r}: name {i} is empty")
        if keys.index(k) != i:
            raise InputError(f"{source}: field {field!r}: {names[i]!r} repeats "
                             f"{names[keys.index(k)]!r}; give each name once")
    return keys


def _resolve(value: Any, names: list[str] | None, key: Any, field: str, source: str,
             where: str) -> str:
    """A name (checked against ``names`` when the file lists them) or an index into
    ``names``, as a key."""
    if isinstance(value, int) and not isinstance(value, bool):
        if names is None:
            raise InputError(f"{source}: {where}field {field!r} is the index {value}, but the "
                             f"file has no top-level list to index; write the name")
        if not 0 <= value < len(names):
            raise InputError(f"{source}: {where}field {field!r} is {value}, not an index into "
                             f"its {len(names)} names")
        return names[value]
    if not isinstance(value, str) or not key(value):
        raise InputError(f"{source}: {where}field {field!r} is {value!r}, expected a name")
    name = key(value)
    if names is not None and name not in names:
        raise InputError(f"{source}: {where}field {field!r} is {value!r}, which is not in "
                         f"the file's list")
    return name


def _box(value: Any, source: str, where: str) -> list[float]:
    if (not isinstance(value, list) or len(value) != 4 or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value)):
        raise InputError(f"{source}: {where}field 'bbox' is {value!r}, expected "
                         f"[x1, y1, x2, y2]")
    box = [float(x) for x in value]
    if not all(map(math.isfinite, box)) or box[2] < box[0] or box[3] < box[1]:
        raise InputError(f"{source}: {where}field 'bbox' is {value!r} (not finite or "
                         f"x2 < x1 / y2 < y1)")
    return box


def _class_list(data: dict, source: str) -> tuple[list[tuple[str, str]], list, list]:
    """The optional ``classes`` list: (verb, object) pairs, sentences and rare flags."""
    entries = data.get("classes", [])
    if not isinstance(entries, list):
        raise InputError(f"{source}: field 'classes' must be a list of {{'verb': ..., "
                         f"'object': ...}}")
    pairs, sentences, rare = [], [], []
    for k, entry in enumerate(entries):
        where = f"class {k}: "
        verb, obj = (_require(entry, f, source, where) for f in ("verb", "object"))
        if not (isinstance(verb, str) and isinstance(obj, str)):
            raise InputError(f"{source}: {where}fields 'verb' and 'object' must be names")
        sentence, flag = entry.get("sentence"), entry.get("rare")
        if sentence is not None and not isinstance(sentence, str):
            raise InputError(f"{source}: {where}field 'sentence' must be a string")
        if flag is not None and not isinstance(flag, bool):
            raise InputError(f"{source}: {where}field 'rare' must be true or false")
        pair = (verb_key(verb), object_key(obj))
        if pair in pairs:
            raise InputError(f"{source}: class {k} ({pair[0]!r}, {words(pair[1])!r}) repeats "
                             f"class {pairs.index(pair)}; give each class once")
        pairs.append(pair)
        sentences.append(sentence)
        rare.append(flag)
    return pairs, sentences, rare


def parse_custom(data: Any, source: str) -> HOIAnnotations:
    """Validate parsed custom-format content and build its annotations and class set."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{source}: field 'images' must be a list of images")
    objects = _name_list(data, "objects", object_key, source)
    verbs = _name_list(data, "verbs", verb_key, source)
    pairs, sentences, rare_flags = _class_list(data, source)

    names: list[str] = []
    sizes = np.zeros((len(data["images"]), 2), dtype=np.int64)
    rows: list[list[tuple[list[float], list[float], str, str]]] = []
    for i, image in enumerate(data["images"]):
        where, boxes, hois = qpic_image(image, i, source, names, sizes)
        instances = []
        for j, box in enumerate(boxes):
            at = f"{where}annotations[{j}]: "
            instances.append((_box(_require(box, "bbox", source, at), source, at),
                              _resolve(_require(box, "category", source, at), objects,
                                       object_key, "category", source, at)))
        image_rows = []
        for j, hoi in enumerate(hois):
            at = f"{where}hoi_annotation[{j}]: "
            ends = []
            for field in ("subject_id", "object_id"):
                index = _require(hoi, field, source, at)
                if not (isinstance(index, int) and not isinstance(index, bool)
                        and 0 <= index < len(instances)):
                    raise InputError(f"{source}: {at}field {field!r} is {index!r}, not an "
                                     f"index into the image's {len(instances)} annotations")
                ends.append(instances[index])
            (box_h, subject), (box_o, obj) = ends
            if subject != "person":
                raise InputError(f"{source}: {at}the subject (annotation "
                                 f"{hoi['subject_id']}) is a {words(subject)!r}; the subject "
                                 f"of an interaction must be a person")
            verb = _resolve(_require(hoi, "verb", source, at), verbs, verb_key, "verb",
                            source, at)
            image_rows.append((box_h, box_o, verb, obj))
        rows.append(image_rows)
    _check_names(names, source)

    known = dict.fromkeys(pairs)
    for image_rows in rows:
        for _, _, verb, obj in image_rows:
            known.setdefault((verb, obj))
    if not known:
        raise InputError(f"{source}: no interaction classes: the file has no "
                         f"'hoi_annotation' pair and no 'classes' list")
    name = str(data.get("name") or Path(source).stem)
    if name in ("hicodet", "vcoco"):   # those names mean the benchmarks' own ids
        name += " (custom)"
    classes = metadata.from_pairs(list(known), name=name,
                                  sentences=sentences + [None] * (len(known) - len(pairs)),
                                  source=source, open_vocabulary=True)
    class_of = {pair: k for k, pair in enumerate(known)}
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    flat = [row for image_rows in rows for row in image_rows]
    hoi = np.array([class_of[r[2], r[3]] for r in flat], dtype=np.int64)
    boxes = {k: np.array([r[j] for r in flat], dtype=np.float64).reshape(-1, 4)
             for j, k in enumerate(("boxes_h", "boxes_o"))}
    flagged = [k for k, flag in enumerate(rare_flags) if flag is not None]
    return HOIAnnotations(
        source=source, file_names=names, sizes=sizes,
        boxes_h=_split(boxes["boxes_h"], counts), boxes_o=_split(boxes["boxes_o"], counts),
        hoi=_split(hoi, counts),
        objects=_split(np.asarray(classes.objects, dtype=np.int64)[hoi], counts),
        verbs=_split(np.asarray(classes.verb_ids, dtype=np.int64)[hoi], counts),
        empty=np.flatnonzero(counts == 0),
        rare=np.array([k for k in flagged if rare_flags[k]], dtype=np.int64)
        if flagged else None,
        dataset="custom", classes=classes)


# ----------------------------------------------------------------------------- writing

def to_custom(annotations: HOIAnnotations, classes: HOIClassSet | None = None,
              rare: Sequence[int] | None = None) -> dict:
    """The custom-format content of ``annotations`` (whose ``hoi`` indexes ``classes``,
    default :attr:`HOIAnnotations.class_set`): every class listed in order (so class ids
    are kept), with its ``rare`` flag when ``rare`` (or ``annotations.rare``) is given;
    each image's distinct (box, category) pairs once in ``annotations``."""
    classes = classes or annotations.class_set
    rare = annotations.rare if rare is None else rare
    rare_set = None if rare is None else {int(k) for k in rare}
    entries = []
    for k, (verb, obj, sentence) in enumerate(zip(classes.verbs, classes.object_names,
                                                  classes.sentences, strict=True)):
        entry = {"verb": verb, "object": words(obj), "sentence": sentence}
        if rare_set is not None:
            entry["rare"] = k in rare_set
        entries.append(entry)
    objects = np.asarray(classes.objects, dtype=np.int64)
    images = []
    for i, name in enumerate(annotations.file_names):
        boxes: dict[tuple, int] = {}

        def instance(box: np.ndarray, category: str, _boxes: dict = boxes) -> int:
            return _boxes.setdefault((*box.tolist(), category), len(_boxes))

        hois = []
        for box_h, box_o, k in zip(annotations.boxes_h[i], annotations.boxes_o[i],
                                   annotations.hoi[i].tolist(), strict=True):
            hois.append({"subject_id": instance(box_h, "person"),
                         "object_id": instance(box_o, words(
                             classes.object_vocabulary[objects[k]])),
                         "verb": classes.verbs[k]})
        record: dict[str, Any] = {"file_name": name}
        width, height = (int(v) for v in annotations.sizes[i])
        if width and height:
            record.update(width=width, height=height)
        record["annotations"] = [{"bbox": list(key[:4]), "category": key[4]} for key in boxes]
        record["hoi_annotation"] = hois
        images.append(record)
    return {"name": classes.name, "classes": entries, "images": images}


def convert(source: str | Path, split: str = "test") -> tuple[dict, str]:
    """A benchmark annotation file as custom-format content, and what it was: HICO-DET
    (fredzzhang or QPIC layout, the 600 classes in their order with the official rare
    flags) or V-COCO (fredzzhang per-pair ``instances_vcoco_*.json``, or the official
    ``vcoco_{split}.json`` / v-coco folder with the COCO file beside it; the 236 (action,
    object) classes, verbs without their role)."""
    path = Path(source)
    data = None if path.is_dir() else _read_json(path)
    if is_custom_file(data):
        raise InputError(f"{path}: is already a custom-format file")
    hicodet = (isinstance(data, dict) and "annotation" in data) or (
        isinstance(data, list) and not (data and isinstance(data[0], dict)
                                        and "action_name" in data[0]))
    if hicodet:
        annotations = load_hicodet_annotations(path)
        rare = annotations.rare if annotations.rare is not None else metadata.hicodet_rare()
        return to_custom(annotations, metadata.hicodet_classes(), rare), "HICO-DET"
    from clip4hoi.data.vcoco import read_vcoco_pairs  # its layouts; imports torch

    annotations, labels, _ = read_vcoco_pairs(path, split)
    return to_custom(replace(annotations, hoi=labels), metadata.vcoco_classes()), "V-COCO"


# ----------------------------------------------------------------------------- splits

def _class_names(classes: HOIClassSet) -> dict[str, int]:
    """``{"verb object": class id}`` with the words of the names."""
    return {f"{verb} {words(obj)}": k
            for k, (verb, obj) in enumerate(zip(classes.verbs, classes.object_names,
                                                strict=True))}


def _items(value: str | Sequence[str] | None, what: str) -> list[str]:
    """A setting given as a list, as comma / newline separated text, or as a text file."""
    if value is None:
        return []
    if isinstance(value, str):
        path = Path(value)
        if path.suffix == ".txt" or path.is_file():
            if not path.is_file():
                raise InputError(f"{what}: file {value} does not exist")
            value = path.read_text(encoding="utf-8-sig")
        value = [v for v in re.split(r"[,;\n]", value)]
    items = [" ".join(str(v).replace("|", " ").replace("_", " ").split()).lower()
             for v in value]
    return [v for v in items if v]


def unseen_class_ids(classes: HOIClassSet, unseen_classes: str | Sequence[str] | None = None,
                     unseen_verbs: str | Sequence[str] | None = None,
                     unseen_objects: str | Sequence[str] | None = None,
                     known: Sequence[HOIClassSet] = ()) -> list[int]:
    """Ids (sorted) of the classes of ``classes`` that a zero-shot split names: classes
    (``"hold drill"``, ``"hold | drill"``), every class of a verb, every class of an object.
    A name that is in neither ``classes`` nor the sets of ``known`` (the other split's
    file) is an error."""
    names = _class_names(classes)
    everything = {**names, **{n: -1 for other in known for n in _class_names(other)}}
    unseen: set[int] = set()
    for item in _items(unseen_classes, "data.unseen_classes"):
        if item not in everything:
            raise InputError(f"data.unseen_classes: {item!r} is not a class of the dataset "
                             f"(write 'VERB OBJECT' as in its files, e.g. "
                             f"{next(iter(names))!r})")
        unseen.update([names[item]] if item in names else [])
    for setting, part in (("data.unseen_verbs", 0), ("data.unseen_objects", 1)):
        given = _items(unseen_verbs if part == 0 else unseen_objects, setting)
        sets = [classes, *known]
        values = {(verb_key(c.verbs[k]) if part == 0 else words(c.object_names[k]))
                  for c in sets for k in range(len(c))}
        for item in given:
            if item not in values:
                raise InputError(f"{setting}: {item!r} is not a "
                                 f"{'verb' if part == 0 else 'object'} of the dataset")
        for k in range(len(classes)):
            value = classes.verbs[k] if part == 0 else words(classes.object_names[k])
            if value in given:
                unseen.add(k)
    return sorted(unseen)


def rare_classes(classes: HOIClassSet, training: HOIAnnotations,
                 threshold: int = RARE_THRESHOLD) -> np.ndarray:
    """Ids of the classes of ``classes`` with fewer than ``threshold`` pairs in the
    training annotations (matched by verb and object name)."""
    train_classes = training.class_set
    counts = np.bincount(np.concatenate([*training.hoi, np.zeros(0, np.int64)]),
                         minlength=len(train_classes))
    by_name = {(v, train_classes.object_vocabulary[o]): int(n) for v, o, n in
               zip(train_classes.verbs, train_classes.objects, counts, strict=True)}
    return np.array([k for k, (v, o) in enumerate(zip(classes.verbs, classes.objects,
                                                      strict=True))
                     if by_name.get((v, classes.object_vocabulary[o]), 0) < threshold],
                    dtype=np.int64)

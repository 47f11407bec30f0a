"""The V-COCO dataset on COCO 2014 images, from the official files (s-gupta/v-coco
``vcoco_{split}.json`` + ``instances_vcoco_all_2014.json`` + ``vcoco_{split}.ids``) or from
per-pair fredzzhang/vcoco ``instances_vcoco_*.json`` files.

Targets follow docs/conventions.md: ``verb`` is the V-COCO action-role id
(:data:`~clip4hoi.data.metadata.VCOCO_ACTIONS`), ``hoi`` the index of the (action-role,
object) pair in :func:`~clip4hoi.data.metadata.vcoco_classes` (236 classes). From the
official files the pairs are the (person, visible role object, action-role) triplets
(:func:`~clip4hoi.data.vcoco_official.training_pairs`) and the test set is every image of
the split; ``ground_truth`` keeps the per-person ground truth the evaluator scores against.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from clip4hoi.data.annotations import HOIAnnotations, load_vcoco_annotations
from clip4hoi.data.hicodet import (
    HOIDataset,
    Transform,
    check_paths,
    resolve_images,
    served_images,
)
from clip4hoi.data.metadata import vcoco_classes
from clip4hoi.data.vcoco_official import (
    VCOCOGroundTruth,
    find_vcoco_files,
    load_vcoco_official,
    training_pairs,
)

COCO_SPLITS = ("train2014", "val2014")
_COCO_SPLIT_IN_NAME = re.compile(r"COCO_(train2014|val2014)_")


def image_candidates(file_name: str) -> list[str]:
    """Where a COCO 2014 image may be, relative to the image directory: the folder of
    its own split (``COCO_val2014_...`` -> ``val2014/``), the other split's folder, or
    the image directory itself."""
    match = _COCO_SPLIT_IN_NAME.match(file_name)
    own = [match.group(1)] if match else []
    folders = own + [split for split in COCO_SPLITS if split not in own]
    return [f"{folder}/{file_name}" for folder in folders] + [file_name]


class VCOCO(HOIDataset):
    """V-COCO images with their annotations.

    ``image_dir`` is the COCO 2014 image folder: the images may be in its ``train2014/``
    and ``val2014/`` subfolders or directly in it. ``annotation_file``: the official
    ``vcoco_{split}.json`` (the COCO file and ids are found beside it, see
    :func:`~clip4hoi.data.vcoco_official.find_vcoco_files`) or a per-pair file.
    ``class_set`` is :func:`~clip4hoi.data.metadata.vcoco_classes` and ``class_ids`` its
    indices. ``skip_empty`` leaves out images without annotated pairs (training).
    ``ground_truth``: the official per-person ground truth (None for per-pair files).
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path,
                 transform: Transform | None = None, skip_empty: bool = True) -> None:
        image_dir, annotation_file = check_paths(image_dir, annotation_file)
        annotations, labels, self.ground_truth = read_vcoco_pairs(annotation_file)
        indices = served_images(annotations, annotations, skip_empty)
        paths = resolve_images(image_dir, annotations, indices, image_candidates)
        class_set = vcoco_classes()
        super().__init__(annotations, paths, indices, labels, class_set,
                         range(len(class_set)), transform)


def read_vcoco_pairs(annotation_file: str | Path, split: str = "test"
                     ) -> tuple[HOIAnnotations, list[np.ndarray], VCOCOGroundTruth | None]:
    """The (person, object, action-role) pairs of a V-COCO file — official
    (``vcoco_{split}.json`` or a v-coco folder, see
    :func:`~clip4hoi.data.vcoco_official.find_vcoco_files`) or per-pair — with each row's
    class in :func:`~clip4hoi.data.metadata.vcoco_classes`, and the official per-person
    ground truth (None for per-pair files)."""
    files = find_vcoco_files(annotation_file, split)
    ground_truth = None
    if files.official:
        ground_truth = load_vcoco_official(files.annotations, files.coco, files.split_ids)
        annotations = training_pairs(ground_truth)
    else:
        annotations = load_vcoco_annotations(files.annotations)
    class_set = vcoco_classes()
    to_class = {pair: k for k, pair in enumerate(zip(class_set.verb_ids, class_set.objects,
                                                     strict=True))}
    if files.official:
        annotations = _known_pairs(annotations, to_class)
    labels = []
    for actions, objects in zip(annotations.hoi, annotations.objects, strict=True):
        pairs = list(zip(actions.tolist(), objects.tolist(), strict=True))
        invalid = [pair for pair in pairs if pair not in to_class]
        if invalid:
            raise ValueError(f"{annotation_file}: (action, object) pairs {invalid[:5]} "
                             f"are not V-COCO classes")
        labels.append(np.array([to_class[pair] for pair in pairs], dtype=np.int64))
    return annotations, labels, ground_truth


def _known_pairs(annotations: HOIAnnotations, to_class: dict[tuple[int, int], int]
                 ) -> HOIAnnotations:
    """The official pairs whose (action-role, object) is one of the 236 classes the model
    scores; the others are dropped with a warning (the evaluation still counts them)."""
    keep = [np.array([(a, o) in to_class for a, o in zip(act.tolist(), obj.tolist(),
                                                          strict=True)], dtype=bool)
            for act, obj in zip(annotations.hoi, annotations.objects, strict=True)]
    dropped = sum(int((~k).sum()) for k in keep)
    if dropped == 0:
        return annotations
    warnings.warn(f"{annotations.source}: {dropped} (person, object, action-role) pairs "
                  f"have an object outside the 236 V-COCO classes and are not trained on",
                  stacklevel=3)
    kept = {name: [v[k] for v, k in zip(getattr(annotations, name), keep, strict=True)]
            for name in ("boxes_h", "boxes_o", "hoi", "objects", "verbs")}
    empty = np.flatnonzero([len(rows) == 0 for rows in kept["hoi"]])
    return replace(annotations, empty=empty, **kept)

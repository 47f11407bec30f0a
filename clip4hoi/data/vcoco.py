"""The V-COCO dataset (fredzzhang/vcoco ``instances_vcoco_*.json``) on COCO 2014 images.

Targets follow docs/conventions.md: ``verb`` is the V-COCO action-role id
(:data:`~clip4hoi.data.metadata.VCOCO_ACTIONS`), ``hoi`` the index of the (action-role,
object) pair in :func:`~clip4hoi.data.metadata.vcoco_classes` (236 classes).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from clip4hoi.data.annotations import load_vcoco_annotations
from clip4hoi.data.hicodet import (
    HOIDataset,
    Transform,
    check_paths,
    resolve_images,
    served_images,
)
from clip4hoi.data.metadata import vcoco_classes

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
    and ``val2014/`` subfolders or directly in it. ``class_set`` is
    :func:`~clip4hoi.data.metadata.vcoco_classes` and ``class_ids`` its indices.
    ``skip_empty`` leaves out images without annotated pairs (training).
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path,
                 transform: Transform | None = None, skip_empty: bool = True) -> None:
        image_dir, annotation_file = check_paths(image_dir, annotation_file)
        annotations = load_vcoco_annotations(annotation_file)
        class_set = vcoco_classes()
        to_class = {pair: k for k, pair in enumerate(zip(class_set.verb_ids,
                                                         class_set.objects, strict=True))}
        labels = []
        for actions, objects in zip(annotations.hoi, annotations.objects, strict=True):
            pairs = list(zip(actions.tolist(), objects.tolist(), strict=True))
            invalid = [pair for pair in pairs if pair not in to_class]
            if invalid:
                raise ValueError(f"{annotation_file}: (action, object) pairs {invalid[:5]} "
                                 f"are not V-COCO classes")
            labels.append(np.array([to_class[pair] for pair in pairs], dtype=np.int64))
        indices = served_images(annotations, annotations, skip_empty)
        paths = resolve_images(image_dir, annotations, indices, image_candidates)
        super().__init__(annotations, paths, indices, labels, class_set,
                         range(len(class_set)), transform)

"""The HICO-DET dataset, a custom-format dataset (:class:`CustomHOI`), and the base class
and collate function shared with V-COCO.

A dataset item is ``(image, target)``: the image a ``float32`` tensor ``[3, H, W]`` in
``[0, 1]`` after the transform, the target a dict with exactly the keys of
docs/conventions.md ("Training targets"): ``boxes_h``, ``boxes_o``, ``object``, ``verb``,
``hoi``, ``size``, ``orig_size``, ``file_name``, ``index``.

Images are read **without** applying EXIF orientation, as the reference implementations
(DETR, UPT, PViC: ``PIL.Image.open(...).convert("RGB")``) read them: the boxes are those
of the stored pixels (HICO-DET was annotated in MATLAB, which ignores EXIF). An image
whose size differs from the size in the annotation file (when the file gives one) raises
:class:`~clip4hoi.data.images.ImageError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import to_dtype

from clip4hoi.data import metadata
from clip4hoi.data.annotations import HOIAnnotations, load_hicodet_annotations
from clip4hoi.data.custom import RARE_THRESHOLD, load_custom_annotations, rare_classes
from clip4hoi.data.images import ImageError, load_image
from clip4hoi.data.metadata import HOIClassSet, hicodet_classes
from clip4hoi.data.splits import (
    apply_zero_shot,
    check_zero_shot_rule,
    remove_classes,
    seen_classes,
)
from clip4hoi.errors import InputError

Transform = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]
"""``(uint8 image [3, H, W], target) -> (float image in [0, 1], target)``, e.g.
:class:`clip4hoi.data.transforms.HOITransform`."""

_MISSING_SHOWN = 5


def collate_fn(batch: Sequence[tuple[torch.Tensor, dict]]
               ) -> tuple[list[torch.Tensor], list[dict]]:
    """``DataLoader`` collate function: images and targets as two lists (images differ in
    size; the model pads them itself)."""
    return [image for image, _ in batch], [target for _, target in batch]


def check_paths(image_dir: str | Path, annotation_file: str | Path) -> tuple[Path, Path]:
    """Fail early, naming the path, when the image directory or annotation file is
    missing."""
    image_dir, annotation_file = Path(image_dir), Path(annotation_file)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"annotation file {annotation_file} does not exist")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image directory {image_dir} does not exist")
    return image_dir, annotation_file


class HOIDataset(Dataset):
    """Images of an :class:`HOIAnnotations` with per-row class labels.

    Subclasses build the pieces; this class serves the items. Public attributes:
    ``annotations`` (what is trained on, after any zero-shot filtering), ``class_set``
    (the classes ``target["hoi"]`` indexes), ``class_ids`` (for each class of
    ``class_set``, its id in the dataset's full class list), ``image_indices`` (the
    annotation-file positions of the images served, in order) and ``image_paths``.
    """

    def __init__(self, annotations: HOIAnnotations, image_paths: dict[int, Path],
                 image_indices: list[int], labels: list[np.ndarray], class_set: HOIClassSet,
                 class_ids: Sequence[int], transform: Transform | None) -> None:
        self.annotations = annotations
        self.image_paths = image_paths
        self.image_indices = image_indices
        self.class_set = class_set
        self.class_ids = tuple(class_ids)
        self.transform = transform
        self._labels = labels

    def __len__(self) -> int:
        return len(self.image_indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        index = self.image_indices[i]
        ann = self.annotations
        path = self.image_paths[index]
        image = load_image(path, apply_exif_orientation=False)
        height, width = image.shape[-2:]
        expected = tuple(int(v) for v in ann.sizes[index])  # (0, 0) when not in the file
        if all(expected) and expected != (width, height):
            raise ImageError(f"{path}: image is {width}x{height} pixels but {ann.source} "
                             f"gives {expected[0]}x{expected[1]}")
        target = self._target(index, (height, width))
        if self.transform is None:
            return to_dtype(image, torch.float32, scale=True), target
        return self.transform(image, target)

    def target(self, i: int) -> dict:
        """Item ``i``'s target (transformed) without decoding its image: for a
        deterministic transform (the feature-cache path). The image size comes from the
        annotations, or else from the image file's header."""
        index = self.image_indices[i]
        width, height = (int(v) for v in self.annotations.sizes[index])
        if not (width and height):
            with Image.open(self.image_paths[index]) as header:   # reads no pixel
                width, height = header.size
        target = self._target(index, (height, width))
        if self.transform is None:
            return target
        return self.transform.transform_target(target, (height, width))

    def _target(self, index: int, size: tuple[int, int]) -> dict:
        ann = self.annotations
        size_ = torch.tensor(size)
        return {  # copies: changing a target in place leaves the annotations intact
            "boxes_h": torch.tensor(ann.boxes_h[index], dtype=torch.float32),
            "boxes_o": torch.tensor(ann.boxes_o[index], dtype=torch.float32),
            "object": torch.tensor(ann.objects[index], dtype=torch.long),
            "verb": torch.tensor(ann.verbs[index], dtype=torch.long),
            "hoi": torch.tensor(self._labels[index], dtype=torch.long),
            "size": size_,
            "orig_size": size_.clone(),
            "file_name": ann.file_names[index],
            "index": index,
        }


def served_images(before: HOIAnnotations, after: HOIAnnotations, skip_empty: bool
                  ) -> list[int]:
    """Indices of the images a dataset serves: those with rows in ``after``, plus —
    unless ``skip_empty`` — those without rows in ``before`` (never annotated). Images
    whose rows were all filtered out (zero-shot) are never served."""
    return [i for i, (rows_before, rows_after) in enumerate(zip(before.hoi, after.hoi,
                                                                  strict=True))
            if len(rows_after) or (not skip_empty and not len(rows_before))]


def resolve_images(image_dir: Path, annotations: HOIAnnotations, indices: list[int],
                   candidates: Callable[[str], list[str]] = lambda name: [name]
                   ) -> dict[int, Path]:
    """Find the file of every image in ``indices``: the first of ``candidates(file_name)``
    (paths relative to ``image_dir``) that exists. Each directory is listed once, so this
    stays cheap for tens of thousands of images. Raises ``FileNotFoundError`` reporting
    how many images are missing and the first few."""
    listings: dict[Path, set[str]] = {}

    def exists(relative: Path) -> bool:
        folder = image_dir / relative.parent
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        return relative.name in listings[folder]

    paths, missing = {}, []
    for index in indices:
        name = annotations.file_names[index]
        found = next((Path(c) for c in candidates(name) if exists(Path(c))), None)
        if found is None:
            missing.append(name)
        else:
            paths[index] = image_dir / found
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(indices)} images of {annotations.source} are missing "
            f"from {image_dir}, e.g. " + ", ".join(missing[:_MISSING_SHOWN]))
    return paths


class _SplitDataset(HOIDataset):
    """A dataset over one annotation file whose training set may leave classes out:
    ``annotations`` are ``original`` after that filter, ``class_set`` indexes the kept
    classes ``class_ids`` (ids of the file's ``num_classes`` classes)."""

    def __init__(self, image_dir: Path, original: HOIAnnotations,
                 annotations: HOIAnnotations, num_classes: int, class_ids: list[int],
                 class_set: HOIClassSet, transform: Transform | None, skip_empty: bool
                 ) -> None:
        to_class = np.full(num_classes, -1, dtype=np.int64)
        to_class[class_ids] = np.arange(len(class_ids))
        indices = served_images(original, annotations, skip_empty)
        super().__init__(annotations, resolve_images(image_dir, annotations, indices),
                         indices, [to_class[hoi] for hoi in annotations.hoi], class_set,
                         class_ids, transform)


class HICODet(_SplitDataset):
    """HICO-DET images with their annotations (fredzzhang ``instances_*2015.json`` or
    QPIC/GEN-VLKT ``trainval_hico.json`` / ``test_hico.json``).

    ``image_dir`` holds the images named in the annotation file (``.../train2015``).
    ``zero_shot`` (``rf_uc``, ``nf_uc``, ``uo``, ``uv``, ``uc0``..``uc4``; training only)
    removes the unseen classes by ``zero_shot_rule`` (see :mod:`clip4hoi.data.splits`);
    ``class_set`` is then the seen subset of the 600 classes, ``target["hoi"]`` indexes
    it and ``class_ids`` / ``seen_to_full`` give each seen class's HOI id. Without it,
    ``class_set`` is all 600 classes and ``target["hoi"]`` is the HOI id.

    ``skip_empty`` leaves out images without any annotation — right for training; test
    sets are evaluated over every image, so pass ``False`` there.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path,
                 transform: Transform | None = None, zero_shot: str | None = None,
                 zero_shot_rule: str = "drop_images", skip_empty: bool = True) -> None:
        check_zero_shot_rule(zero_shot_rule)
        image_dir, annotation_file = check_paths(image_dir, annotation_file)
        original = load_hicodet_annotations(annotation_file)
        full = hicodet_classes()
        if zero_shot is None:
            annotations, class_ids, class_set = original, list(range(len(full))), full
        else:
            annotations, _ = apply_zero_shot(original, zero_shot, zero_shot_rule)
            class_ids = seen_classes(zero_shot)
            class_set = full.subset(class_ids, name=f"hicodet-{zero_shot}-seen")
        super().__init__(image_dir, original, annotations, len(full), class_ids, class_set,
                         transform, skip_empty)
        self.zero_shot = zero_shot

    @property
    def seen_to_full(self) -> tuple[int, ...]:
        """HOI id of each class of ``class_set`` (the identity without zero-shot)."""
        return self.class_ids


class CustomHOI(_SplitDataset):
    """Images of a custom-format file (``data.dataset: custom``, docs/datasets.md).

    Training set (``training`` None): the classes ``unseen`` (ids of the file's class
    set) are removed by ``zero_shot_rule`` as HICO-DET's unseen classes are;
    ``class_set`` is then the seen classes and ``class_ids`` their ids in the file.
    ``annotation_file``: the file, or its annotations already read
    (:func:`~clip4hoi.data.custom.load_custom_annotations`).
    Test set (``training`` = the training file's annotations): every image and class;
    ``annotations.unseen`` holds ``unseen`` and ``annotations.rare`` the classes with
    fewer than ``rare_threshold`` pairs in the training file, for the evaluation.
    ``full_classes``: the file's class set.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path | HOIAnnotations,
                 transform: Transform | None = None, unseen: Sequence[int] = (),
                 zero_shot_rule: str = "drop_images", skip_empty: bool = True,
                 training: HOIAnnotations | None = None,
                 rare_threshold: int = RARE_THRESHOLD) -> None:
        check_zero_shot_rule(zero_shot_rule)
        if isinstance(annotation_file, HOIAnnotations):   # read already
            original = annotation_file
            image_dir, annotation_file = Path(image_dir), original.source
        else:
            image_dir, annotation_file = check_paths(image_dir, annotation_file)
            original = load_custom_annotations(annotation_file)
        full = original.class_set
        unseen = sorted(set(unseen))
        annotations, class_ids, class_set = original, list(range(len(full))), full
        if training is not None:
            annotations = replace(original, rare=rare_classes(full, training, rare_threshold),
                                  unseen=np.asarray(unseen, dtype=np.int64) if unseen else None)
        elif unseen:
            class_ids = [k for k in class_ids if k not in set(unseen)]
            if not class_ids:
                raise InputError(f"{annotation_file}: every class is unseen; nothing is left "
                                 f"to train on")
            annotations = remove_classes(original, unseen, zero_shot_rule)[0]
            class_set = full.subset(class_ids, name=f"{full.name}-seen")
        super().__init__(image_dir, original, annotations, len(full), class_ids, class_set,
                         transform, skip_empty)
        self.full_classes = full


def experiment_classes(train: CustomHOI, test: CustomHOI) -> HOIClassSet:
    """Every class of a custom experiment: the training file's, then the test file's
    others (what its checkpoints detect by default)."""
    pairs, sentences = [], []
    for classes in (train.full_classes, test.full_classes):
        for verb, obj, sentence in zip(classes.verbs, classes.object_names,
                                       classes.sentences, strict=True):
            if (verb, obj) not in pairs:
                pairs.append((verb, obj))
                sentences.append(sentence)
    return metadata.from_pairs(pairs, name=train.full_classes.name, sentences=sentences,
                               open_vocabulary=True)

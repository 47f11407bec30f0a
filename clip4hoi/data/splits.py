"""Zero-shot splits: HICO-DET's settings (spec §3), seen / unseen classes and the training
filter (also for the unseen classes a custom dataset names, ``data.unseen_classes``).

Two rules remove the unseen classes from training annotations:

* ``"drop_images"`` (default; ADA-CM / CMMP / LAIN, the two-stage CLIP line of work):
  remove every row whose HOI class is unseen; an image with no seen row left is dropped.
* ``"drop_pairs"`` (GEN-VLKT / HOICLIP): remove *every* row of a human–object pair that
  carries any unseen class, so that the pair's seen classes are not kept either; an
  image with no row left is dropped. The fredzzhang files have no instance ids, so a pair
  is identified by an identical human box, object box and object class.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from clip4hoi.data.annotations import HOIAnnotations
from clip4hoi.data.metadata import hicodet_classes, zero_shot_unseen

ZERO_SHOT_RULES: tuple[str, ...] = ("drop_images", "drop_pairs")


def unseen_classes(setting: str) -> list[int]:
    """Unseen HOI ids (sorted) of a zero-shot setting: ``rf_uc``, ``nf_uc``, ``uo``,
    ``uv``, ``uc0``..``uc4`` (``RF-UC`` style spellings work too)."""
    return list(zero_shot_unseen(setting))


def seen_classes(setting: str) -> list[int]:
    """Seen HOI ids (sorted): the HICO-DET classes not unseen in ``setting``."""
    unseen = set(zero_shot_unseen(setting))
    return [k for k in range(len(hicodet_classes())) if k not in unseen]


def check_zero_shot_rule(rule: str) -> None:
    """``ValueError`` unless ``rule`` is one of :data:`ZERO_SHOT_RULES`."""
    if rule not in ZERO_SHOT_RULES:
        raise ValueError(f"unknown zero-shot rule {rule!r}; choose from "
                         + ", ".join(ZERO_SHOT_RULES))


def apply_zero_shot(annotations: HOIAnnotations, setting: str, rule: str = "drop_images"
                    ) -> tuple[HOIAnnotations, list[int]]:
    """Remove the unseen classes of the HICO-DET ``setting`` from training annotations
    (:func:`remove_classes`)."""
    return remove_classes(annotations, unseen_classes(setting), rule)


def remove_classes(annotations: HOIAnnotations, unseen: list[int] | np.ndarray,
                   rule: str = "drop_images") -> tuple[HOIAnnotations, list[int]]:
    """Remove the classes ``unseen`` (ids of ``annotations.hoi``) from training annotations:
    a HICO-DET setting's, or those a custom dataset names (``data.unseen_classes``).

    Returns the annotations of the same images in the same order with the removed rows
    gone, and the indices of the images left to train on (those with at least one row
    left — images that had no annotation to begin with are not among them). See the
    module docstring for the two ``rule`` values.
    """
    check_zero_shot_rule(rule)
    unseen = np.asarray(unseen, dtype=np.int64)
    keep_rows = []
    for boxes_h, boxes_o, hoi, objects in zip(annotations.boxes_h, annotations.boxes_o,
                                              annotations.hoi, annotations.objects,
                                              strict=True):
        keep = ~np.isin(hoi, unseen)
        if rule == "drop_pairs":
            pairs = [(*h, *o, obj) for h, o, obj in zip(boxes_h.tolist(), boxes_o.tolist(),
                                                        objects.tolist(), strict=True)]
            tainted = {pair for pair, ok in zip(pairs, keep, strict=True) if not ok}
            keep = np.array([pair not in tainted for pair in pairs], dtype=bool)
        keep_rows.append(keep)

    def rows(arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [array[keep] for array, keep in zip(arrays, keep_rows, strict=True)]

    filtered = replace(annotations, boxes_h=rows(annotations.boxes_h),
                       boxes_o=rows(annotations.boxes_o), hoi=rows(annotations.hoi),
                       objects=rows(annotations.objects), verbs=rows(annotations.verbs))
    kept_images = [i for i, keep in enumerate(keep_rows) if keep.any()]
    return filtered, kept_images

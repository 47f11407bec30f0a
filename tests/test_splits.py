"""Zero-shot settings: class counts and structure, and both training-filter rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip4hoi.data.annotations import HOIAnnotations
from clip4hoi.data.metadata import ZERO_SHOT_SETTINGS, hicodet_classes, hicodet_rare
from clip4hoi.data.splits import apply_zero_shot, seen_classes, unseen_classes

COUNTS = {"rf_uc": 120, "nf_uc": 120, "uo": 100, "uv": 84,
          **{f"uc{k}": 120 for k in range(5)}}


@pytest.mark.parametrize(("setting", "count"), COUNTS.items())
def test_counts_and_partition(setting: str, count: int) -> None:
    unseen, seen = unseen_classes(setting), seen_classes(setting)
    assert len(unseen) == count and len(seen) == 600 - count
    assert sorted(set(unseen) | set(seen)) == list(range(600))
    assert seen == sorted(seen) and unseen == sorted(unseen)


def test_all_settings_known() -> None:
    assert set(ZERO_SHOT_SETTINGS) == set(COUNTS)
    assert unseen_classes("RF-UC") == unseen_classes("rf_uc")
    with pytest.raises(ValueError, match="unknown zero-shot setting"):
        seen_classes("rf-uo")


def test_unseen_object_and_unseen_verb_are_whole_objects_and_verbs() -> None:
    classes = hicodet_classes()
    uo = unseen_classes("uo")
    objects = {classes.objects[k] for k in uo}
    assert len(objects) == 12
    assert uo == [k for k in range(600) if classes.objects[k] in objects]
    uv = unseen_classes("uv")
    verbs = {classes.verb_ids[k] for k in uv}
    assert len(verbs) == 20
    assert uv == [k for k in range(600) if classes.verb_ids[k] in verbs]


def test_rare_first_is_rare() -> None:
    assert set(unseen_classes("rf_uc")) <= set(hicodet_rare())
    assert not set(unseen_classes("nf_uc")) & set(hicodet_rare())


def test_lists_match_shared_reference(shared_dir: Path) -> None:
    splits = json.loads((shared_dir / "data/generated/hico_zero_shot_splits.json").read_text())
    names = {"rf_uc": "rare_first", "nf_uc": "non_rare_first", "uo": "unseen_object",
             "uv": "unseen_verb", **{f"uc{k}": f"uc{k}" for k in range(5)}}
    for setting, key in names.items():
        assert unseen_classes(setting) == sorted(splits[key])


# --- the two training rules on a hand-made annotation set (setting RF-UC) ------------------
HOLD_BIKE, RIDE_BIKE, WASH_BIKE, HOLD_CUP = 11, 18, 22, 297
BIKE, CUP = 1, 41


def _annotations() -> HOIAnnotations:
    h1, h2, bike = [0.0, 0, 10, 20], [20.0, 0, 30, 20], [5.0, 10, 25, 30]
    images = [  # rows of (human, object box, object class, HOI)
        [(h1, bike, BIKE, HOLD_BIKE), (h1, bike, BIKE, WASH_BIKE),  # mixed pair
         (h2, bike, BIKE, RIDE_BIKE),                               # seen pair
         (h1, bike, CUP, HOLD_CUP)],                                # same boxes, other object
        [(h1, bike, BIKE, WASH_BIKE)],                              # only unseen
        [],                                                         # no annotation
        [(h2, bike, BIKE, HOLD_BIKE), (h2, bike, BIKE, WASH_BIKE)],  # only a mixed pair
    ]
    classes = hicodet_classes()

    def column(rows: list, k: int, dtype: type, shape: tuple) -> np.ndarray:
        return np.array([row[k] for row in rows], dtype=dtype).reshape(shape)

    return HOIAnnotations(
        source="hand-made", file_names=[f"{i}.jpg" for i in range(4)],
        sizes=np.full((4, 2), 40), empty=np.array([2]),
        boxes_h=[column(rows, 0, np.float64, (-1, 4)) for rows in images],
        boxes_o=[column(rows, 1, np.float64, (-1, 4)) for rows in images],
        objects=[column(rows, 2, np.int64, (-1,)) for rows in images],
        hoi=[column(rows, 3, np.int64, (-1,)) for rows in images],
        verbs=[np.array([classes.verb_ids[r[3]] for r in rows], np.int64) for rows in images])


def test_fixture_classes_are_seen_or_unseen_as_assumed() -> None:
    unseen = unseen_classes("rf_uc")
    assert WASH_BIKE in unseen
    assert not {HOLD_BIKE, RIDE_BIKE, HOLD_CUP} & set(unseen)


def test_drop_images_rule() -> None:
    original = _annotations()
    filtered, kept = apply_zero_shot(original, "rf_uc")
    assert kept == [0, 3]
    assert filtered.hoi[0].tolist() == [HOLD_BIKE, RIDE_BIKE, HOLD_CUP]
    assert filtered.hoi[1].tolist() == [] and filtered.boxes_h[1].shape == (0, 4)
    assert filtered.hoi[3].tolist() == [HOLD_BIKE]
    assert filtered.verbs[0].tolist() == [hicodet_classes().verb_ids[k]
                                          for k in (HOLD_BIKE, RIDE_BIKE, HOLD_CUP)]
    assert filtered.boxes_h[0].tolist() == [original.boxes_h[0][k].tolist() for k in (0, 2, 3)]
    assert filtered.file_names == original.file_names
    assert len(original.hoi[0]) == 4  # the input is not modified


def test_drop_pairs_rule() -> None:
    filtered, kept = apply_zero_shot(_annotations(), "rf_uc", rule="drop_pairs")
    assert kept == [0]
    assert filtered.hoi[0].tolist() == [RIDE_BIKE, HOLD_CUP]
    assert filtered.objects[0].tolist() == [BIKE, CUP]
    assert filtered.hoi[3].tolist() == []


def test_unknown_rule() -> None:
    with pytest.raises(ValueError, match="drop_images, drop_pairs"):
        apply_zero_shot(_annotations(), "rf_uc", rule="drop_all")

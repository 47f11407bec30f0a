"""Drawings of a video's results (clip4hoi.visualize): tracked boxes with their ids and the
interactions going on with their duration, and the Gantt chart of a timeline."""

from __future__ import annotations

import numpy as np
from PIL import Image

from clip4hoi.visualize import (
    HUMAN_COLOUR,
    OBJECT_COLOUR,
    PALETTE,
    draw_timeline,
    draw_tracked_frame,
)

HOLD = {"human_box": [20, 20, 120, 220], "object_box": [100, 120, 140, 160], "object": "cup",
        "verb": "hold", "hoi": 0, "score": 0.8, "human_track": 1, "object_track": 2}


def _pixels(image: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    return (np.asarray(image) == colour).all(axis=2)


def test_tracked_boxes_show_their_ids_and_the_interactions_going_on() -> None:
    frame = Image.new("RGB", (320, 240))
    untracked = {**HOLD, "human_box": [200, 20, 300, 220], "human_track": None}
    active = [{"human_track": 1, "object_track": 2, "hoi": 0, "verb": "hold",
               "object": "cup", "start": 2.0, "seconds": 4.5, "score": 0.8}]
    drawn = draw_tracked_frame(frame, [HOLD, untracked], active)
    human, obj = _pixels(drawn, HUMAN_COLOUR), _pixels(drawn, OBJECT_COLOUR)
    assert human[220, 20:121].all() and obj[160, 100:141].all()      # the bottom edges
    assert not human[:, 160:].any()                  # the box without a track id: not drawn
    assert human[22:35, 22:60].sum() > 100           # the "person 1" tag inside its box
    white = (np.asarray(drawn)[:16, :] > 200).all(axis=2)
    assert white.sum() > 100 and np.flatnonzero(white.any(axis=0)).max() > 100  # a line of text
    nothing_on = draw_tracked_frame(frame, [HOLD], [])
    assert not (np.asarray(nothing_on)[:16, :] > 200).all(axis=2).any()   # no legend


def test_the_timeline_is_a_bar_per_segment_on_a_time_axis() -> None:
    timeline = {"file_name": "clip.mp4", "end": 10.0, "interactions": [
        {"human_track": 1, "object_track": 2, "hoi": 0, "verb": "hold", "object": "cup",
         "segments": [{"start": 2.0, "end": 4.0}, {"start": 6.0, "end": 9.0}]},
        {"human_track": 3, "object_track": 4, "hoi": 1, "verb": "ride",
         "object": "bicycle", "segments": [{"start": 0.0, "end": 10.0}]}]}
    chart = draw_timeline(timeline, width=800)
    first, second = _pixels(chart, PALETTE[0]), _pixels(chart, PALETTE[1])
    row = np.flatnonzero(first.any(axis=1))[0]
    columns = np.flatnonzero(first[row])
    # two bars on one row, their lengths and places linear in seconds
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    assert len(runs) == 2
    scale = (runs[1][-1] - runs[1][0]) / 3.0
    assert abs((runs[0][-1] - runs[0][0]) - 2.0 * scale) <= 2
    assert abs((runs[1][0] - runs[0][0]) - 4.0 * scale) <= 2
    ride = np.flatnonzero(second.any(axis=0))
    assert np.flatnonzero(second.any(axis=1))[0] > row            # the next row down
    assert abs((ride[-1] - ride[0]) - 10.0 * scale) <= 2           # the whole video
    many = draw_timeline({**timeline, "interactions": timeline["interactions"] * 30},
                         max_rows=5)
    assert many.height < 400                                       # 5 rows and "... more"
    empty = draw_timeline({"file_name": "clip.mp4", "end": 0.0, "interactions": []})
    assert empty.width == 960

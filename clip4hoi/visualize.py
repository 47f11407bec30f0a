"""Drawing HOI detections: human and object boxes, a numbered line per pair, and a legend of
each numbered pair's best interactions; for videos, the boxes with their track ids and the
interactions going on with their duration so far (:func:`draw_tracked_frame`), and the
timeline of a whole video as a Gantt chart (:func:`draw_timeline`).

Text is drawn with the TrueType font that Pillow ships (``ImageFont.load_default(size)``,
Pillow >= 10.1; no system font is assumed), sized to the image: about 1/50 of its longer
side, at least 10 pixels, so labels stay readable on a phone photo and on a thumbnail.
"""

from __future__ import annotations

import math
from collections import defaultdict

from PIL import Image, ImageDraw, ImageFont

from clip4hoi.timeline import format_time, interaction_name
from clip4hoi.tracking import HUMAN

HUMAN_COLOUR = (52, 152, 219)
OBJECT_COLOUR = (231, 76, 60)
LINE_COLOUR = (241, 196, 15)
TEXT_BACKGROUND = (0, 0, 0)
TEXT_COLOUR = (255, 255, 255)
CHART_BACKGROUND = (255, 255, 255)
CHART_GRID = (225, 225, 225)
CHART_TEXT = (40, 40, 40)
# Bar colours of the timeline's rows, in turn (Tableau 10).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def font_size(image_size: tuple[int, int]) -> int:
    """Label font size in pixels for an image of ``(width, height)``."""
    return max(10, round(max(image_size) / 50))


def _label(det: dict) -> str:
    return f"{det['verb']} {det['object'].replace('_', ' ')} {det['score']:.2f}"


def draw_detections(image: Image.Image, detections: list[dict], max_pairs: int = 5,
                    min_score: float = 0.0, labels_per_pair: int = 1) -> Image.Image:
    """Draw the ``max_pairs`` best-scoring human–object pairs of ``detections`` (records
    as written by ``clip4hoi detect``: ``human_box``, ``object_box``, ``object``, ``verb``,
    ``score``) scoring at least ``min_score`` on an RGB copy of ``image``.

    Each pair gets its boxes, a line between their centres and its rank as a tag on the
    line; a legend in the top-left corner gives, per rank, the pair's ``labels_per_pair``
    best interactions (``1. ride bicycle 0.71``)."""
    pairs: dict[tuple, list[dict]] = defaultdict(list)
    for det in detections:
        if det["score"] >= min_score:
            pairs[(tuple(det["human_box"]), tuple(det["object_box"]))].append(det)
    ranked = sorted(pairs.items(), key=lambda item: -max(d["score"] for d in item[1]))
    ranked = ranked[:max_pairs]
    canvas, draw, font, width, pad = _canvas(image)
    legend = []
    for rank, ((human, obj), dets) in reversed(list(enumerate(ranked, 1))):  # best on top
        draw.rectangle(human, outline=HUMAN_COLOUR, width=width)
        draw.rectangle(obj, outline=OBJECT_COLOUR, width=width)
        centre_h, centre_o = _centre(human), _centre(obj)
        draw.line([centre_h, centre_o], fill=LINE_COLOUR, width=width)
        middle = ((centre_h[0] + centre_o[0]) / 2, (centre_h[1] + centre_o[1]) / 2)
        _text_box(draw, middle, str(rank), font, pad)
        best = sorted(dets, key=lambda d: -d["score"])[:labels_per_pair]
        legend.append(f"{rank}. " + ", ".join(_label(d) for d in best))
    if legend:
        _text_box(draw, (pad, pad), "\n".join(reversed(legend)), font, pad)
    return canvas


def _canvas(image: Image.Image) -> tuple[Image.Image, ImageDraw.ImageDraw, ImageFont.FreeTypeFont
                                         | ImageFont.ImageFont, int, int]:
    """An RGB copy of ``image`` to draw on, its drawing context, the label font sized to it,
    the line width and the padding of labels."""
    canvas = image.convert("RGB")
    size = font_size(canvas.size)
    return (canvas, ImageDraw.Draw(canvas), ImageFont.load_default(size=size),
            max(2, round(max(canvas.size) / 400)), max(2, size // 6))


def _text_box(draw: ImageDraw.ImageDraw, anchor: tuple[float, float], text: str,
              font: ImageFont.FreeTypeFont | ImageFont.ImageFont, pad: int,
              background: tuple[int, int, int] = TEXT_BACKGROUND) -> None:
    """White ``text`` on a ``background`` box whose top-left corner is ``anchor``."""
    x1, y1, x2, y2 = draw.multiline_textbbox(anchor, text, font=font)
    draw.rectangle((x1 - pad, y1 - pad, x2 + pad, y2 + pad), fill=background)
    draw.multiline_text(anchor, text, fill=TEXT_COLOUR, font=font)


def draw_tracked_frame(image: Image.Image, detections: list[dict], active: list[dict],
                       max_lines: int = 5) -> Image.Image:
    """Draw on an RGB copy of a video frame its tracked boxes — humans in blue, objects in
    red, each tagged with its class and track id (``person 3``, ``cup 5``) — a yellow line
    for each interaction going on, and a legend in the top-left corner with the
    ``max_lines`` longest ones and their duration so far (``person 3 hold cup 5  4.5 s``).

    ``detections`` are the frame's records with ``human_track``/``object_track`` (boxes
    without a track id are not drawn); ``active`` is what
    :meth:`clip4hoi.timeline.TimelineBuilder.add` returned for the frame."""
    boxes: dict[int, tuple[str, tuple, bool]] = {}     # track -> (label, box, is_human)
    for det in detections:
        if det.get("human_track") is not None:
            boxes.setdefault(det["human_track"], (HUMAN, tuple(det["human_box"]), True))
        if det.get("object_track") is not None:
            boxes.setdefault(det["object_track"], (det["object"], tuple(det["object_box"]),
                                                   det["object"] == HUMAN))
    canvas, draw, font, width, pad = _canvas(image)
    for _, box, human in boxes.values():
        draw.rectangle(box, outline=HUMAN_COLOUR if human else OBJECT_COLOUR, width=width)
    shown = active[:max_lines]
    for interaction in shown:
        human, obj = boxes.get(interaction["human_track"]), boxes.get(interaction["object_track"])
        if human and obj:
            draw.line([_centre(human[1]), _centre(obj[1])], fill=LINE_COLOUR, width=width)
    for track, (label, box, human) in boxes.items():
        _text_box(draw, (box[0] + pad, box[1] + pad), f"{label.replace('_', ' ')} {track}",
                  font, pad, HUMAN_COLOUR if human else OBJECT_COLOUR)
    if shown:
        legend = [f"{interaction_name(a)}  {a['seconds']:.1f} s" for a in shown]
        if len(active) > len(shown):
            legend.append(f"+{len(active) - len(shown)} more")
        _text_box(draw, (pad, pad), "\n".join(legend), font, pad)
    return canvas


def draw_timeline(timeline: dict, width: int = 960, max_rows: int = 20) -> Image.Image:
    """The timeline of a video (the ``NAME.timeline.json`` object) as a Gantt chart ``width``
    pixels wide: one row per interaction (``person 1 hold cup 2``) with a bar per segment,
    over a time axis from 0 to the last frame, at most ``max_rows`` rows (the earliest;
    a last line says how many more)."""
    interactions = timeline["interactions"]
    rows = interactions[:max_rows]
    size = 14
    font = ImageFont.load_default(size=size)
    row_height = size * 2
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = [interaction_name(i) for i in rows]
    label_width = max([measure.textlength(n, font=font) for n in names] + [80.0])
    left = round(min(label_width + 2 * size, width / 2))
    right = width - size
    top = row_height                                   # the title line
    extra = len(interactions) > len(rows)
    height = top + row_height * (max(len(rows), 1) + extra) + 2 * size
    canvas = Image.new("RGB", (width, height), CHART_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    duration = max([timeline.get("end") or 0.0]
                   + [s["end"] for i in rows for s in i["segments"]]) or 1.0
    title = f"{timeline.get('file_name') or 'video'}: {len(interactions)} interaction(s)"
    draw.text((size // 2, size // 3), title, fill=CHART_TEXT, font=font)
    axis = top + row_height * (max(len(rows), 1) + extra)

    def x(seconds: float) -> float:
        return left + (right - left) * seconds / duration

    step = _tick_step(duration)
    for k in range(int(duration / step) + 1):
        tick = x(k * step)
        draw.line([(tick, top), (tick, axis)], fill=CHART_GRID, width=1)
        text = format_time(k * step)
        text = text[:-2] if step >= 1 else text                # no tenths on whole seconds
        draw.text((tick, axis + 2), text, fill=CHART_TEXT, font=font, anchor="ma")
    if not rows:
        draw.text((left, top + row_height // 4), "no interaction found", fill=CHART_TEXT,
                  font=font)
    for row, (interaction, name) in enumerate(zip(rows, names, strict=True)):
        y = top + row * row_height
        draw.text((left - size, y + row_height / 2), name, fill=CHART_TEXT, font=font,
                  anchor="rm")
        colour = PALETTE[row % len(PALETTE)]
        for segment in interaction["segments"]:
            x1, x2 = x(segment["start"]), x(segment["end"])
            draw.rectangle((x1, y + row_height * 0.2, max(x2, x1 + 2), y + row_height * 0.8),
                           fill=colour)
    if extra:
        draw.text((left - size, top + len(rows) * row_height + row_height / 2),
                  f"... and {len(interactions) - len(rows)} more", fill=CHART_TEXT,
                  font=font, anchor="rm")
    draw.line([(left, axis), (right, axis)], fill=CHART_TEXT, width=1)
    return canvas


def _tick_step(duration: float) -> float:
    """A round step (0.5 s, 1 s, 2 s, 5 s, 10 s, 15 s, 30 s, 1 min, ...) giving at most
    10 ticks over ``duration`` seconds."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 10:
            return step
    return 3600 * math.ceil(duration / 36000)


def _centre(box: tuple) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)

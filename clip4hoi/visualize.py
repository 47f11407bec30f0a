"""Drawing HOI detections: human and object boxes, a numbered line per pair, and a legend of
each numbered pair's best interactions.

Text is drawn with the TrueType font that Pillow ships (``ImageFont.load_default(size)``,
Pillow >= 10.1; no system font is assumed), sized to the image: about 1/50 of its longer
side, at least 10 pixels, so labels stay readable on a phone photo and on a thumbnail.
"""

from __future__ import annotations

from collections import defaultdict

from PIL import Image, ImageDraw, ImageFont

HUMAN_COLOUR = (52, 152, 219)
OBJECT_COLOUR = (231, 76, 60)
LINE_COLOUR = (241, 196, 15)
TEXT_BACKGROUND = (0, 0, 0)
TEXT_COLOUR = (255, 255, 255)


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
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    size = font_size(canvas.size)
    font = ImageFont.load_default(size=size)
    width = max(2, round(max(canvas.size) / 400))
    pad = max(2, size // 6)
    legend = []
    for rank, ((human, obj), dets) in reversed(list(enumerate(ranked, 1))):  # best on top
        draw.rectangle(human, outline=HUMAN_COLOUR, width=width)
        draw.rectangle(obj, outline=OBJECT_COLOUR, width=width)
        centre_h = ((human[0] + human[2]) / 2, (human[1] + human[3]) / 2)
        centre_o = ((obj[0] + obj[2]) / 2, (obj[1] + obj[3]) / 2)
        draw.line([centre_h, centre_o], fill=LINE_COLOUR, width=width)
        middle = ((centre_h[0] + centre_o[0]) / 2, (centre_h[1] + centre_o[1]) / 2)
        _text_box(draw, middle, str(rank), font, pad)
        best = sorted(dets, key=lambda d: -d["score"])[:labels_per_pair]
        legend.append(f"{rank}. " + ", ".join(_label(d) for d in best))
    if legend:
        _text_box(draw, (pad, pad), "\n".join(reversed(legend)), font, pad)
    return canvas


def _text_box(draw: ImageDraw.ImageDraw, anchor: tuple[float, float], text: str,
              font: ImageFont.FreeTypeFont | ImageFont.ImageFont, pad: int) -> None:
    """White ``text`` on a black box whose top-left corner is ``anchor``."""
    x1, y1, x2, y2 = draw.multiline_textbbox(anchor, text, font=font)
    draw.rectangle((x1 - pad, y1 - pad, x2 + pad, y2 + pad), fill=TEXT_BACKGROUND)
    draw.multiline_text(anchor, text, fill=TEXT_COLOUR, font=font)

"""Drawing HOI detections: human and object boxes, a line per pair, interaction labels."""

from __future__ import annotations

from collections import defaultdict

from PIL import Image, ImageDraw, ImageFont

HUMAN_COLOUR = (52, 152, 219)
OBJECT_COLOUR = (231, 76, 60)
LINE_COLOUR = (241, 196, 15)


def draw_detections(image: Image.Image, detections: list[dict], max_pairs: int = 10,
                    labels_per_pair: int = 3) -> Image.Image:
    """Draw the ``max_pairs`` best-scoring human–object pairs of ``detections`` (records
    as written by ``clip4hoi detect``: ``human_box``, ``object_box``, ``object``, ``verb``,
    ``score``) on a copy of ``image``; each pair is labelled with its best interactions."""
    pairs: dict[tuple, list[dict]] = defaultdict(list)
    for det in detections:
        pairs[(tuple(det["human_box"]), tuple(det["object_box"]))].append(det)
    ranked = sorted(pairs.items(), key=lambda item: -max(d["score"] for d in item[1]))
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(2, round(max(canvas.size) / 300))
    for (human, obj), dets in reversed(ranked[:max_pairs]):  # best pair drawn last (on top)
        draw.rectangle(human, outline=HUMAN_COLOUR, width=width)
        draw.rectangle(obj, outline=OBJECT_COLOUR, width=width)
        centre_h = ((human[0] + human[2]) / 2, (human[1] + human[3]) / 2)
        centre_o = ((obj[0] + obj[2]) / 2, (obj[1] + obj[3]) / 2)
        draw.line([centre_h, centre_o], fill=LINE_COLOUR, width=width)
        best = sorted(dets, key=lambda d: -d["score"])[:labels_per_pair]
        text = "\n".join(f"{d['verb']} {d['object'].replace('_', ' ')} {d['score']:.2f}"
                         for d in best)
        anchor = ((centre_h[0] + centre_o[0]) / 2, (centre_h[1] + centre_o[1]) / 2)
        box = draw.multiline_textbbox(anchor, text, font=font)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.multiline_text(anchor, text, fill=(255, 255, 255), font=font)
    return canvas

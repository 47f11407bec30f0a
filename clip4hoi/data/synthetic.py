"""Small synthetic datasets: one in the exact HICO-DET (fredzzhang) on-disk format
(:func:`make_synthetic`), and one of any classes you name in the custom format
(:func:`make_custom_synthetic`, at the end of this module).

Each image shows one to three drawn people, each with one object whose position relative
to the person *is* the interaction, so a small model can learn the classes from layout
and appearance. Twelve real HICO-DET classes over five objects:

* bicycle under — astride the bicycle, hands on the handlebar: ride, sit_on bicycle;
* bicycle hand — bicycle standing beside, hand on the handlebar: hold bicycle;
* bicycle far — bicycle on the ground away from the person, arms down: no_interaction;
* ball foot — ball at the foot, that leg stretched towards it: kick sports_ball;
* ball hand — ball in the outstretched hand: hold sports_ball;
* ball over — ball spinning on the raised hand above the head: spin sports_ball (rare);
* cup face — cup held up at the mouth: drink_with cup;
* umbrella over — open umbrella above the head, shaft in hand: hold, stand_under umbrella;
* skateboard under — board under the feet: ride skateboard;
* skateboard over — board held above the head with both hands: carry skateboard.

Objects have a fixed look (bicycle: black wheels, red frame; ball: orange disc; cup:
blue mug; umbrella: magenta dome; skateboard: green deck, black wheels); people get
random skin, shirt and trouser colours from muted palettes; the background is a light
colour with low-contrast clutter. Layouts are dealt round-robin (reshuffled each round),
so every class occurs once a split has about ten pairs; each is mirrored at random, and
the groups of an image never overlap (a group that finds no room is left out).
Every twelfth image (index 11, 23, ...) has no annotation and is listed in ``empty``.
Some classes are unseen in each zero-shot setting but UC0, UC2 and UC3 (RF-UC: spin
sports_ball, the one rare class; UO: skateboard; UV: ride), so zero-shot runs can be
smoke-tested too.

Boxes are the exact extents of the drawn shapes, written as 1-based inclusive pixel
indices (integer-valued floats), as in the real files. Everything is deterministic given
``seed``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clip4hoi.data.metadata import (
    COCO_OBJECTS,
    HICO_VERBS,
    HUMAN_OBJECT_ID,
    HOIClassSet,
    hicodet_classes,
    hicodet_rare,
    parse_class_text,
    words,
)
from clip4hoi.errors import InputError
from clip4hoi.fileio import (
    environment_fault,
    folder_lock,
    sweep_temp_files,
    temp_prefix,
    write_atomic,
)

Point = tuple[float, float]


@dataclass(frozen=True)
class _Shape:
    """One drawing primitive: ``kind`` is disc, ring, rect, line, poly or dome (the upper
    half of an ellipse); ``points`` are two corners for disc/ring/rect/dome."""

    kind: str
    points: tuple[Point, ...]
    colour: tuple[int, int, int]
    width: float = 0.0

    def moved(self, dx: float, dy: float) -> _Shape:
        return _Shape(self.kind, tuple((x + dx, y + dy) for x, y in self.points),
                      self.colour, self.width)

    def draw(self, draw: ImageDraw.ImageDraw, fill: int | tuple[int, int, int]) -> None:
        points = [(round(x), round(y)) for x, y in self.points]
        width = max(1, round(self.width))
        if self.kind == "disc":
            draw.ellipse(points, fill=fill)
        elif self.kind == "ring":
            draw.ellipse(points, outline=fill, width=width)
        elif self.kind == "rect":
            draw.rectangle(points, fill=fill)
        elif self.kind == "line":
            draw.line(points, fill=fill, width=width)
        elif self.kind == "poly":
            draw.polygon(points, fill=fill)
        else:  # dome
            draw.pieslice(points, 180, 360, fill=fill)


# Layouts: (name, object, place, HOI classes as (verb, object) names).
LAYOUTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("bicycle under", "bicycle", "under", ("ride", "sit_on")),
    ("bicycle hand", "bicycle", "hand", ("hold",)),
    ("bicycle far", "bicycle", "far", ("no_interaction",)),
    ("ball foot", "sports_ball", "foot", ("kick",)),
    ("ball hand", "sports_ball", "hand", ("hold",)),
    ("ball over", "sports_ball", "over", ("spin",)),
    ("cup face", "cup", "face", ("drink_with",)),
    ("umbrella over", "umbrella", "over", ("hold", "stand_under")),
    ("skateboard under", "skateboard", "under", ("ride",)),
    ("skateboard over", "skateboard", "over", ("carry",)),
)
EMPTY_EVERY = 12
MAX_IMAGES = 1_000_000
"""Most images per split (a bound far above any use, so that a typo is not hours of work)."""

_SKIN = ((241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172))
_SHIRT = ((90, 110, 140), (130, 90, 60), (170, 160, 120), (105, 105, 105), (60, 60, 90))
_TROUSERS = ((40, 40, 60), (60, 50, 40), (30, 30, 30), (80, 80, 95))
_BLACK, _RED, _ORANGE = (25, 25, 25), (215, 30, 30), (255, 140, 0)
_BLUE, _MAGENTA, _GREEN = (30, 80, 220), (200, 0, 160), (30, 160, 60)


def hoi_id(verb: str, object_name: str) -> int:
    """Official 0-based HICO-DET id of the class (``"ride"``, ``"bicycle"``)."""
    classes = hicodet_classes()
    key = (HICO_VERBS.index(verb), COCO_OBJECTS.index(object_name))
    return list(zip(classes.verb_ids, classes.objects, strict=True)).index(key)


def synthetic_classes() -> list[int]:
    """The HICO-DET HOI ids the synthetic data uses, sorted."""
    return sorted({hoi_id(verb, obj) for _, obj, _, verbs in LAYOUTS for verb in verbs})


# ---------------------------------------------------------------------------- drawing
# Shapes are built around a person of height p whose head top is at (0, 0), facing
# ``side`` (+1: right, -1: left); each object builder returns its shapes and the point
# its user's hand grips (None: hands stay down).

def _bicycle(x0: float, y1: float, p: float, front: int) -> tuple[list[_Shape], Point]:
    """A bicycle standing on y = y1, its left end at x0, handlebar towards ``front``."""
    w, r, lw = 0.95 * p, 0.21 * p, 0.045 * p
    rear, fore = (x0 + r, y1 - r), (x0 + w - r, y1 - r)
    if front < 0:
        rear, fore = fore, rear
    crank = ((rear[0] + fore[0]) / 2, y1 - r)
    seat = (crank[0] - front * 0.08 * p, y1 - 2.1 * r)
    bar = (fore[0] - front * 0.06 * p, y1 - 2.5 * r)
    frame = [(rear, crank), (crank, seat), (seat, rear), (seat, bar), (bar, fore),
             (crank, bar), ((bar[0] - 0.08 * p, bar[1]), (bar[0] + 0.08 * p, bar[1]))]
    shapes = [_Shape("ring", ((cx - r, cy - r), (cx + r, cy + r)), _BLACK, 0.05 * p)
              for cx, cy in (rear, fore)]
    shapes += [_Shape("line", ends, _RED, lw) for ends in frame]
    return shapes, bar


def _ball(cx: float, cy: float, p: float) -> list[_Shape]:
    r = 0.09 * p
    return [_Shape("disc", ((cx - r, cy - r), (cx + r, cy + r)), _BLACK),
            _Shape("disc", ((cx - 0.8 * r, cy - 0.8 * r), (cx + 0.8 * r, cy + 0.8 * r)),
                   _ORANGE)]


def _cup(cx: float, cy: float, p: float, handle: int) -> list[_Shape]:
    w, h = 0.11 * p, 0.15 * p
    hx = cx + handle * w / 2
    return [_Shape("ring", ((hx - 0.05 * p, cy - 0.04 * p), (hx + 0.05 * p, cy + 0.05 * p)),
                   _BLUE, 0.025 * p),
            _Shape("poly", ((cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2),
                            (cx + 0.4 * w, cy + h / 2), (cx - 0.4 * w, cy + h / 2)), _BLUE)]


def _umbrella(cx: float, grip_y: float, p: float) -> list[_Shape]:
    r, top = 0.36 * p, grip_y - 0.75 * p
    return [_Shape("line", ((cx, top + 0.3 * p), (cx, grip_y)), _BLACK, 0.03 * p),
            _Shape("dome", ((cx - r, top), (cx + r, top + 0.6 * p)), _MAGENTA)]


def _skateboard(cx: float, y0: float, p: float) -> list[_Shape]:
    w, h, r = 0.62 * p, 0.06 * p, 0.035 * p
    wheels = [_Shape("disc", ((x - r, y0 + h - r / 2), (x + r, y0 + h + 1.5 * r)), _BLACK)
              for x in (cx - 0.2 * p, cx + 0.2 * p)]
    return [*wheels, _Shape("rect", ((cx - w / 2, y0), (cx + w / 2, y0 + h)), _GREEN)]


def _object(kind: str, place: str, p: float, side: int
            ) -> tuple[list[_Shape], list[Point | None], Point | None]:
    """Shapes of the object, the two hand targets (left, right; None = arm down) and the
    foot target of the ``side`` leg (None = standing)."""
    hands: list[Point | None] = [None, None]
    foot = None
    near = 0 if side < 0 else 1  # index of the hand on the object's side
    if kind == "bicycle":
        if place == "under":
            shapes, bar = _bicycle(-0.47 * p, 1.2 * p, p, side)
            hands[near] = bar
        else:
            gap = 0.25 * p if place == "hand" else 0.75 * p
            x0 = gap if side > 0 else -gap - 0.95 * p
            shapes, bar = _bicycle(x0, 1.0 * p, p, -side)
            if place == "hand":
                hands[near] = bar
    elif kind == "sports_ball":
        if place == "foot":
            centre = (side * 0.3 * p, 0.91 * p)
            foot = (side * 0.2 * p, 0.95 * p)
        elif place == "hand":
            centre = (side * 0.45 * p, 0.42 * p)
            hands[near] = (side * 0.36 * p, 0.42 * p)
        else:  # over: balanced on the raised hand
            centre = (side * 0.2 * p, -0.17 * p)
            hands[near] = (side * 0.2 * p, -0.07 * p)
        shapes = _ball(*centre, p)
    elif kind == "cup":  # at the mouth
        centre = (side * 0.2 * p, 0.12 * p)
        shapes = _cup(*centre, p, -side)
        hands[near] = (centre[0] + side * 0.04 * p, centre[1] + 0.05 * p)
    elif kind == "umbrella":
        grip = (side * 0.14 * p, 0.34 * p)
        shapes = _umbrella(grip[0], grip[1], p)
        hands[near] = grip
    else:  # skateboard
        if place == "under":
            shapes = _skateboard(0.0, 1.0 * p, p)
        else:
            shapes = _skateboard(0.0, -0.2 * p, p)
            hands = [(-0.22 * p, -0.12 * p), (0.22 * p, -0.12 * p)]
    return shapes, hands, foot


def _person(p: float, side: int, hands: list[Point | None], foot: Point | None,
            colours: tuple[tuple[int, int, int], ...]) -> list[_Shape]:
    skin, shirt, trousers = colours
    limb = 0.065 * p
    shapes = []
    for k, sign in enumerate((-1, 1)):
        hip = (sign * 0.06 * p, 0.58 * p)
        end = foot if (foot is not None and sign == side) else (sign * 0.08 * p, 1.0 * p)
        shapes.append(_Shape("line", (hip, end), trousers, 0.09 * p))
        shoulder = (sign * 0.12 * p, 0.25 * p)
        hand = hands[k] or (sign * 0.2 * p, 0.55 * p)
        shapes.append(_Shape("line", (shoulder, hand), shirt, limb))
        shapes.append(_Shape("disc", ((hand[0] - limb / 2, hand[1] - limb / 2),
                                      (hand[0] + limb / 2, hand[1] + limb / 2)), skin))
    shapes.append(_Shape("rect", ((-0.13 * p, 0.2 * p), (0.13 * p, 0.6 * p)), shirt))
    shapes.append(_Shape("disc", ((-0.1 * p, 0.0), (0.1 * p, 0.2 * p)), skin))
    return shapes


def _extent(shapes: list[_Shape]) -> np.ndarray:
    """A box that surely contains the drawn shapes."""
    points = np.array([pt for s in shapes for pt in s.points])
    pad = max(s.width for s in shapes) / 2 + 2
    return np.concatenate([points.min(0) - pad, points.max(0) + pad])


def _drawn_box(shapes: list[_Shape], size: tuple[int, int]) -> list[float]:
    """Exact extent of the drawn shapes as 1-based inclusive pixel indices."""
    mask = Image.new("L", size)
    draw = ImageDraw.Draw(mask)
    for shape in shapes:
        shape.draw(draw, 255)
    left, top, right, bottom = mask.getbbox()
    return [float(left + 1), float(top + 1), float(right), float(bottom)]


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    base = rng.integers(170, 236, 3)
    image = Image.new("RGB", size, tuple(int(c) for c in base))
    draw = ImageDraw.Draw(image)
    width, height = size
    horizon = int(height * rng.uniform(0.5, 0.8))
    draw.rectangle([0, horizon, width, height], fill=tuple(int(c) for c in base - 25))
    for _ in range(int(rng.integers(3, 7))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(8, width / 3), rng.uniform(8, height / 3)
        colour = tuple(int(c) for c in np.clip(base + rng.integers(-30, 31), 0, 255))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x, y, x + w, y + h],
                                                                 fill=colour)
    return image


Builder = Callable[[float, int], tuple[list[_Shape], list[Point | None], Point | None]]
"""``(person height p, side) -> (object shapes, hand targets, foot target)`` (:func:`_object`)."""


def _draw_groups(rng: np.random.Generator, size: tuple[int, int],
                 groups: list[tuple[Builder, bool]]) -> tuple[Image.Image, list[tuple]]:
    """An image with one person and object per group ``(builder, object behind the
    person)`` that fits; returns it and ``(group index, human box, object box)`` of each
    group drawn (exact extents, 1-based inclusive pixel indices)."""
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    placed: list[np.ndarray] = []
    drawn = []
    width, height = size
    for g, (builder, behind) in enumerate(groups):
        for _ in range(30):
            p = rng.uniform(0.3, 0.42) * min(size)
            side = int(rng.choice([-1, 1]))
            shapes, hands, foot = builder(p, side)
            colours = (_SKIN[rng.integers(len(_SKIN))], _SHIRT[rng.integers(len(_SHIRT))],
                       _TROUSERS[rng.integers(len(_TROUSERS))])
            person = _person(p, side, hands, foot, colours)
            x0, y0, x1, y1 = _extent(shapes + person)
            if x1 - x0 >= width or y1 - y0 >= height:
                continue
            dx, dy = rng.uniform(-x0, width - x1), rng.uniform(-y0, height - y1)
            box = np.array([x0 + dx, y0 + dy, x1 + dx, y1 + dy])
            if all(box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1]
                   for b in placed):
                break
        else:
            continue  # no room left for this group
        placed.append(box)
        obj = [s.moved(dx, dy) for s in shapes]
        human = [s.moved(dx, dy) for s in person]
        for shape in (obj + human if behind else human + obj):
            shape.draw(draw, shape.colour)
        drawn.append((g, _drawn_box(human, size), _drawn_box(obj, size)))
    return image, drawn


def _draw_image(rng: np.random.Generator, size: tuple[int, int], layouts: list[int]
                ) -> tuple[Image.Image, dict]:
    """An image with one group (person + object) per layout that fits, and its rows."""
    groups = [(partial(_object, LAYOUTS[k][1], LAYOUTS[k][2]), LAYOUTS[k][2] == "under")
              for k in layouts]
    image, drawn = _draw_groups(rng, size, groups)
    rows: dict[str, list] = {k: [] for k in ("boxes_h", "boxes_o", "hoi", "object", "verb")}
    for g, box_h, box_o in drawn:
        _, kind, _, verbs = LAYOUTS[layouts[g]]
        for verb in verbs:
            rows["boxes_h"].append(box_h)
            rows["boxes_o"].append(box_o)
            rows["hoi"].append(hoi_id(verb, kind))
            rows["object"].append(COCO_OBJECTS.index(kind))
            rows["verb"].append(HICO_VERBS.index(verb))
    return image, rows


def _deal(rng: np.random.Generator, i: int, image_size: int, deck: list[int], count: int
          ) -> tuple[tuple[int, int], list[int]]:
    """The size ``(w, h)`` of image ``i`` and the one to three layouts (of ``count``) dealt
    to it from ``deck`` (refilled with a shuffled round when empty; none for every
    ``EMPTY_EVERY``-th image)."""
    short = int(rng.integers(round(0.75 * image_size), image_size + 1))
    size = (image_size, short) if rng.random() < 0.5 else (short, image_size)
    dealt = []
    if i % EMPTY_EVERY != EMPTY_EVERY - 1:
        for _ in range(int(rng.integers(1, 4))):
            if not deck:
                deck += [int(k) for k in rng.permutation(count)]
            dealt.append(deck.pop())
    return size, dealt


def _write_split(out_dir: Path, split: str, count: int, seed: int, image_size: int) -> Path:
    rng = np.random.default_rng([seed, 0 if split == "train2015" else 1])
    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    deck: list[int] = []
    names, sizes, annotation, empty = [], [], [], []
    for i in range(count):
        size, layouts = _deal(rng, i, image_size, deck, len(LAYOUTS))
        image, rows = _draw_image(rng, size, layouts)
        name = f"HICO_{split}_{i + 1:08d}.jpg"
        _save_jpeg(image, image_dir / name)
        names.append(name)
        sizes.append(list(size))
        annotation.append(rows)
        if not rows["hoi"]:
            empty.append(i)
    classes = hicodet_classes()
    data = {
        "annotation": annotation, "filenames": names, "size": sizes, "empty": empty,
        "objects": list(COCO_OBJECTS), "verbs": list(HICO_VERBS),
        "correspondence": [[k, o, v] for k, (o, v) in
                           enumerate(zip(classes.objects, classes.verb_ids, strict=True))],
    }
    if split == "test2015":
        rare = set(hicodet_rare())
        data["rare"] = sorted(rare)
        data["non_rare"] = [k for k in range(len(classes)) if k not in rare]
    return write_atomic(out_dir / f"instances_{split}.json", json.dumps(data))


def _save_jpeg(image: Image.Image, path: Path) -> None:
    try:
        image.save(path, quality=90)
    except OSError as error:   # a full disk: name the file
        raise environment_fault(error, path) from error


def _check_output(out_dir: str | Path, n_train: int, n_test: int, image_size: int,
                  seed: int, overwrite: bool, written: tuple[str, ...]) -> Path:
    """The dataset folder, after checking the sizes and that it may be written."""
    if not (1 <= n_train <= MAX_IMAGES and 1 <= n_test <= MAX_IMAGES):
        raise InputError(f"{{n_train}} and {{n_test}} must be 1 to {MAX_IMAGES} images, got "
                         f"n_train={n_train}, n_test={n_test}")
    if not 64 <= image_size <= 4096:
        raise InputError(f"image_size must be 64 to 4096 pixels, got {image_size}")
    if seed < 0:
        raise InputError(f"{{seed}} must be >= 0, got {seed}")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is a file; give a folder to write the dataset to")
    existing = [name for name in written if (root / name).exists()]
    if existing and not overwrite:
        raise InputError(f"{root} already holds a dataset ({', '.join(existing)}); pass "
                         f"{{overwrite}} to replace it, or choose another folder")
    return root


def make_synthetic(out_dir: str | Path, n_train: int = 96, n_test: int = 32, seed: int = 0,
                   image_size: int = 256, overwrite: bool = True) -> dict:
    """Write a synthetic HICO-DET dataset to ``out_dir`` and describe it.

    Layout (that of fredzzhang/hicodet, objects in COCO-80 order)::

        OUT_DIR/images/train2015/HICO_train2015_00000001.jpg ...
        OUT_DIR/images/test2015/HICO_test2015_00000001.jpg ...
        OUT_DIR/instances_train2015.json
        OUT_DIR/instances_test2015.json   (with rare / non_rare)

    ``n_train`` / ``n_test`` images per split; the long side of each image is
    ``image_size`` pixels and the short side between 3/4 of that and ``image_size``.
    Deterministic given ``seed``. Returns ``{"root", "train_images", "test_images",
    "train_annotations", "test_annotations"}`` (paths) plus ``"classes"``, the HOI ids
    used (see :func:`synthetic_classes`), and the image counts ``"n_train"`` /
    ``"n_test"``. With ``overwrite`` False, a folder that already holds a dataset is
    refused; a path that is a file always is (:class:`~clip4hoi.errors.InputError`).

    The dataset is written to a temporary folder in ``out_dir`` and moved in when
    complete (replacing the image folders and annotations there): a full disk or a kill
    leaves no images without annotations. A second call writing the same folder is
    refused while the first runs.
    """
    root = _check_output(out_dir, n_train, n_test, image_size, seed, overwrite,
                         ("instances_train2015.json", "instances_test2015.json", "images"))

    def write(folder: Path) -> None:
        for split, count in (("train2015", n_train), ("test2015", n_test)):
            _write_split(folder, split, count, seed, image_size)

    _write_staged(root, write, files=("instances_train2015.json", "instances_test2015.json"),
                  folders=("images/train2015", "images/test2015"))
    return {
        "root": root,
        "train_images": root / "images" / "train2015",
        "test_images": root / "images" / "test2015",
        "train_annotations": root / "instances_train2015.json",
        "test_annotations": root / "instances_test2015.json",
        "classes": synthetic_classes(),
        "n_train": n_train,
        "n_test": n_test,
    }


def _write_staged(root: Path, write: Callable[[Path], None], files: tuple[str, ...],
                  folders: tuple[str, ...]) -> None:
    """Run ``write(folder)`` on a temporary folder in ``root``, then move its ``folders``
    and annotation ``files`` into ``root`` by renames (no disk space needed), replacing
    those there: the old annotations go first, the folders next, the new annotations last,
    so that no moment pairs annotations with other images. A full disk or a kill leaves no
    images without annotations (the next run removes what a kill left); a second writer
    of the same folder is refused while the first runs."""
    with folder_lock(root, "{out_dir}"):
        sweep_temp_files(root)
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix("dataset"), suffix=".tmp",
                                        dir=root))
        try:
            write(staging)
            for name in files:
                (root / name).unlink(missing_ok=True)
            for i, name in enumerate(folders):
                target = root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():   # goes with the staging folder
                    target.rename(staging / f"replaced_{i}")
                (staging / name).rename(target)
            for name in files:
                os.replace(staging / name, root / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------ your own vocabulary
# ``make_custom_synthetic``: any "verb object" classes in the custom format
# (clip4hoi.data.custom). Each object gets a look (a shape and a colour, by its rank among
# the objects), each verb a place relative to the person (by its rank among the verbs;
# two verbs of one object never share a place), so every class is a distinct picture.

PLACES = ("hand", "over", "foot", "face", "far", "both")
_KINDS = ("disc", "rect", "poly", "ring", "dome")
_COLOURS = (_ORANGE, _BLUE, _GREEN, _MAGENTA, _RED, (0, 170, 190), (120, 60, 200),
            (200, 170, 0))


def _thing(kind: str, colour: tuple[int, int, int], place: str, p: float, side: int
           ) -> tuple[list[_Shape], list[Point | None], Point | None]:
    """A generic object of ``kind`` at ``place`` (see :data:`PLACES`), the hand targets
    and the foot target of the person using it (as :func:`_object`)."""
    hands: list[Point | None] = [None, None]
    foot = None
    near = 0 if side < 0 else 1
    r = 0.1 * p
    if place == "hand":      # held out at chest height
        cx, cy = side * 0.47 * p, 0.42 * p
        hands[near] = (side * 0.36 * p, 0.42 * p)
    elif place == "over":    # on the raised hand
        cx, cy = side * 0.2 * p, -0.19 * p
        hands[near] = (side * 0.2 * p, -0.07 * p)
    elif place == "foot":    # at the stretched foot
        cx, cy = side * 0.33 * p, 0.9 * p
        foot = (side * 0.2 * p, 0.95 * p)
    elif place == "face":    # held up at the face
        cx, cy = side * 0.23 * p, 0.1 * p
        hands[near] = (side * 0.22 * p, 0.17 * p)
    elif place == "far":     # on the ground away from the person, arms down
        cx, cy = side * 0.85 * p, 0.9 * p
    else:                    # both: held above the head with both hands
        cx, cy = 0.0, -0.24 * p
        hands = [(-0.16 * p, -0.14 * p), (0.16 * p, -0.14 * p)]
    corners = ((cx - r, cy - r), (cx + r, cy + r))
    if kind == "rect":
        corners = ((cx - r, cy - 0.6 * r), (cx + r, cy + 0.6 * r))
    if kind == "poly":
        shape = _Shape("poly", ((cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)), colour)
    else:
        shape = _Shape(kind, corners, colour, 0.35 * r)
    return [shape], hands, foot


def vocabulary_layouts(classes: HOIClassSet) -> list[tuple[str, str]]:
    """``(place, object kind + colour index)`` of each class (see :func:`_thing`)."""
    objects = list(classes.used_objects)
    layouts, taken = [], {}
    for verb, obj in zip(classes.verb_ids, classes.objects, strict=True):
        used = taken.setdefault(obj, set())
        free = [k for k in range(len(PLACES)) if k not in used]
        if not free:
            raise InputError(f"{{vocabulary}}: more than {len(PLACES)} verbs with the object "
                             f"{classes.object_vocabulary[obj]!r}; the synthetic pictures "
                             f"can tell only {len(PLACES)} apart")
        place = verb % len(PLACES) if verb % len(PLACES) in free else free[0]
        used.add(place)
        layouts.append((PLACES[place], objects.index(obj)))
    return layouts


def _write_custom_split(out_dir: Path, split: str, count: int, seed: int, image_size: int,
                        classes: HOIClassSet) -> Path:
    rng = np.random.default_rng([seed, 2 if split == "train" else 3])
    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    layouts = vocabulary_layouts(classes)
    deck: list[int] = []
    images = []
    for i in range(count):
        size, chosen = _deal(rng, i, image_size, deck, len(classes))
        groups = []
        for k in chosen:
            place, look = layouts[k]
            builder = partial(_thing, _KINDS[look % len(_KINDS)],
                              _COLOURS[look // len(_KINDS) % len(_COLOURS)], place)
            groups.append((builder, False))
        image, drawn = _draw_groups(rng, size, groups)
        name = f"{split}_{i + 1:05d}.jpg"
        _save_jpeg(image, image_dir / name)
        boxes, pairs = [], []
        for g, box_h, box_o in drawn:
            k = chosen[g]
            for box, category in ((box_h, "person"),
                                  (box_o, words(classes.object_names[k]))):
                # 1-based inclusive indices -> continuous pixels
                boxes.append({"bbox": [box[0] - 1, box[1] - 1, box[2], box[3]],
                              "category": category})
            pairs.append({"subject_id": len(boxes) - 2, "object_id": len(boxes) - 1,
                          "verb": classes.verbs[k]})
        images.append({"file_name": name, "width": size[0], "height": size[1],
                       "annotations": boxes, "hoi_annotation": pairs})
    data = {"name": "synthetic",
            "classes": [{"verb": v, "object": words(o)} for v, o in
                        zip(classes.verbs, classes.object_names, strict=True)],
            "images": images}
    return write_atomic(out_dir / f"{split}.json", json.dumps(data, indent=1))


def make_custom_synthetic(out_dir: str | Path, vocabulary: str, n_train: int = 64,
                          n_test: int = 32, seed: int = 0, image_size: int = 256,
                          overwrite: bool = True) -> dict:
    """Write a synthetic dataset of your own classes in the custom format
    (docs/datasets.md): ``vocabulary`` is ``"operate drill, hold wrench, ..."`` (the last
    word of each item is the object, or ``"VERB | OBJECT"``; any noun). Layout::

        OUT_DIR/images/train/train_00001.jpg ...   OUT_DIR/train.json
        OUT_DIR/images/test/test_00001.jpg ...     OUT_DIR/test.json

    Each image shows one to three people, each with one object drawn where its verb puts
    it; every twelfth image has no interaction. Returns the paths (``root``,
    ``train_images``, ``test_images``, ``train_annotations``, ``test_annotations``),
    ``classes`` (``"verb object"`` names), the image counts, and ``tokenizer``: a tiny
    WordPiece tokenizer of the object names (``OUT_DIR/tokenizer``) for the tiny random
    Grounding DINO of ``configs/custom_smoke.yaml``, so nothing is downloaded. ``overwrite``
    as for :func:`make_synthetic`."""
    classes = parse_class_text(vocabulary, open_vocabulary=True, source="{vocabulary}")
    if HUMAN_OBJECT_ID in classes.objects:
        raise InputError("{vocabulary}: the synthetic pictures draw objects, not people; "
                         "give classes with other objects")
    root = _check_output(out_dir, n_train, n_test, image_size, seed, overwrite,
                         ("train.json", "test.json", "images", "tokenizer"))
    from clip4hoi.models.grounding_dino import write_word_tokenizer  # torch-free callers

    names = ["person", *(words(o) for o in classes.object_names)]
    tokens = [t for name in names for t in re.findall(r"\w+|[^\w\s]", name.lower())]

    def write(folder: Path) -> None:
        for split, count in (("train", n_train), ("test", n_test)):
            _write_custom_split(folder, split, count, seed, image_size, classes)
        write_word_tokenizer(folder / "tokenizer", tokens)

    _write_staged(root, write, files=("train.json", "test.json"),
                  folders=("images/train", "images/test", "tokenizer"))
    return {
        "root": root,
        "train_images": root / "images" / "train",
        "test_images": root / "images" / "test",
        "train_annotations": root / "train.json",
        "test_annotations": root / "test.json",
        "classes": [f"{v} {words(o)}" for v, o in zip(classes.verbs, classes.object_names,
                                                      strict=True)],
        "n_train": n_train,
        "n_test": n_test,
        "tokenizer": root / "tokenizer",
    }

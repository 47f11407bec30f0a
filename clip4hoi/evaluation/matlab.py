"""Export detections for the official HICO-DET MATLAB evaluator.

The official evaluation (ywchao/ho-rcnn ``evaluation/eval_one.m``, "obj" format, used by
``eval_default.m`` / ``eval_ko.m`` and by the caches of UPT and others) loads, for the
object ``obj_id`` of the HOI class being scored (COCO order, 1-based), the file
``detections_%02d.mat`` and reads ``all_boxes(act_id, :)``:

* ``all_boxes`` — a cell array ``[number of HOI classes of that object × number of test
  images]``; row ``act_id`` is the class's rank among the object's HOI classes (these are a
  contiguous range of official HOI ids), column ``j`` the ``j``-th image of ``anno_bbox.mat``
  (the order of the fredzzhang ``filenames``);
* each cell — an ``N × 9`` double matrix ``[human x1 y1 x2 y2, object x1 y1 x2 y2, score]``
  with **0-based** pixel indices (the evaluator adds 1); empty cells are ``0 × 0``.

:func:`export_matlab` writes these 80 files with ``scipy.io.savemat`` (MATLAB v5 format).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clip4hoi.data import metadata
from clip4hoi.data.annotations import HOIAnnotations
from clip4hoi.evaluation.detections import HOIDetections


def object_hoi_ranges() -> list[np.ndarray]:
    """HOI ids of each COCO-80 object (ascending; checked to be contiguous)."""
    objects = np.asarray(metadata.hicodet_classes().objects)
    ranges = []
    for o in range(len(metadata.COCO_OBJECTS)):
        ids = np.flatnonzero(objects == o)
        if ids.size == 0 or ids[-1] - ids[0] + 1 != ids.size:
            raise AssertionError(f"HOI classes of {metadata.COCO_OBJECTS[o]} are not a range")
        ranges.append(ids)
    return ranges


def export_matlab(detections: HOIDetections, annotations: HOIAnnotations,
                  out_dir: str | Path, compress: bool = False) -> list[Path]:
    """Write ``detections_01.mat`` .. ``detections_80.mat`` (COCO-80 order) into
    ``out_dir``; returns their paths. ``detections`` must be aligned to the HICO-DET test
    annotations (9,658 images for the official evaluator)."""
    if detections.num_images != len(annotations):
        raise ValueError(f"detections are aligned to {detections.num_images} images, the "
                         f"annotations {annotations.source} have {len(annotations)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_images = len(annotations)
    # group rows by (class, image), keeping the input order inside a group
    order = np.lexsort((detections.image, detections.labels))
    labels, images = detections.labels[order], detections.image[order]
    table = np.concatenate([detections.boxes_h[order], detections.boxes_o[order],
                            detections.scores[order, None]], axis=1)      # [M, 9]
    starts = np.flatnonzero(np.r_[True, (labels[1:] != labels[:-1])
                                  | (images[1:] != images[:-1])])
    ends = np.r_[starts[1:], len(labels)]

    group_labels = labels[starts]                                          # sorted

    import scipy.io  # here: scipy costs every import of clip4hoi.evaluation 0.2-0.4 s

    empty = np.zeros((0, 0))
    paths = []
    for o, hoi_ids in enumerate(object_hoi_ranges()):
        cells = np.empty((len(hoi_ids), num_images), dtype=object)         # cell array
        cells.fill(empty)
        first = np.searchsorted(group_labels, hoi_ids[0], side="left")
        last = np.searchsorted(group_labels, hoi_ids[-1], side="right")
        for s, e in zip(starts[first:last].tolist(), ends[first:last].tolist(), strict=True):
            cells[labels[s] - hoi_ids[0], images[s]] = table[s:e]
        path = out_dir / f"detections_{o + 1:02d}.mat"
        scipy.io.savemat(path, {"all_boxes": cells}, do_compression=compress)
        paths.append(path)
    return paths


def load_matlab_export(out_dir: str | Path, num_images: int) -> HOIDetections:
    """Read back an :func:`export_matlab` folder (for checks): rows ordered by image, then
    by class, then as stored."""
    import scipy.io

    parts: list[tuple[int, int, np.ndarray]] = []
    for o, hoi_ids in enumerate(object_hoi_ranges()):
        cells = scipy.io.loadmat(Path(out_dir) / f"detections_{o + 1:02d}.mat")["all_boxes"]
        if cells.shape != (len(hoi_ids), num_images):
            raise ValueError(f"detections_{o + 1:02d}.mat: all_boxes has shape {cells.shape}, "
                             f"expected {(len(hoi_ids), num_images)}")
        for r, j in zip(*np.nonzero([[c.size > 0 for c in row] for row in cells]), strict=True):
            parts.append((int(j), int(hoi_ids[r]), np.asarray(cells[r, j], dtype=np.float64)))
    parts.sort(key=lambda p: (p[0], p[1]))
    if not parts:
        return HOIDetections.empty(num_images)
    table = np.concatenate([p[2] for p in parts])
    counts = [len(p[2]) for p in parts]
    return HOIDetections(image=np.repeat([p[0] for p in parts], counts).astype(np.int64),
                         boxes_h=table[:, :4], boxes_o=table[:, 4:8],
                         labels=np.repeat([p[1] for p in parts], counts).astype(np.int64),
                         scores=table[:, 8], num_images=num_images)

"""Benchmark of the HICO-DET evaluator on the full test set with synthetic detections.

Generates about ``--per-image`` detections per test image (seeded): jittered ground-truth
pairs, duplicates, wrong classes on the right boxes, and false positives (random boxes and
classes, also on the images without annotation); scores are rounded to 3 decimals so that
ties occur. Then times

* the vectorised evaluator (:func:`clip4hoi.evaluation.evaluate_hicodet`), Default and
  Known-Object settings;
* a straightforward per-detection Python loop written after ``VOCevaldet_bboxpair.m``
  (:func:`baseline_evaluate`, the reference, defined here) — and checks that both give the
  same per-class AP;
* writing ``DETS.json`` and evaluating it end to end: ``clip4hoi eval`` (its
  :func:`clip4hoi.cli.main` in this process: annotations, parsing, validation, evaluation,
  table), against a plain ``json.load`` of the same file — the target is
  ``eval / json.load <= 1.0`` — and ``orjson.loads`` and :func:`read_detections` alone.
  The three are interleaved, best of ``--repeat`` each.

Usage::

    python benchmarks/bench_eval.py [--annotations FILE] [--per-image 100] [--seed 0]
        [--out-dir DIR] [--repeat 3] [--no-baseline] [--json RESULTS.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from clip4hoi.cli import main as cli_main
from clip4hoi.data import metadata
from clip4hoi.data.annotations import NUM_HOI, HOIAnnotations, load_hicodet_annotations
from clip4hoi.evaluation import (
    HOIDetections,
    evaluate_hicodet,
    read_detections,
    write_detections,
)
from clip4hoi.evaluation.hicodet import THRESHOLDS

DEFAULT_ANNOTATIONS = (Path(os.environ.get("CLIP4HOI_SHARED",
                                           Path(__file__).resolve().parents[2] / "shared"))
                       / "data" / "hicodet" / "instances_test2015.json")


# ----------------------------------------------------------------------------- synthetic data

def synthetic_detections(ann: HOIAnnotations, per_image: int = 100, seed: int = 0
                         ) -> HOIDetections:
    """About ``per_image`` detections per image (0-based inclusive boxes, float32 values as
    a model would give them)."""
    rng = np.random.default_rng(seed)
    classes_of_object: dict[int, np.ndarray] = {}
    objects = np.asarray(metadata.hicodet_classes().objects)
    for o in range(len(metadata.COCO_OBJECTS)):
        classes_of_object[o] = np.flatnonzero(objects == o)

    def jitter(boxes: np.ndarray, scale: float) -> np.ndarray:
        wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
        return boxes + rng.normal(0.0, scale, boxes.shape) * np.tile(wh, 2)

    images, hs, os_, labels, scores = [], [], [], [], []
    for i in range(len(ann)):
        gh, go, gl = ann.boxes_h[i], ann.boxes_o[i], ann.hoi[i]
        w, h = (ann.sizes[i] if ann.sizes[i].all() else (640, 480))
        parts_h, parts_o, parts_l, parts_s = [], [], [], []
        if len(gl):
            # jittered true pairs; some missed
            keep = rng.random(len(gl)) < 0.9
            parts_h.append(jitter(gh[keep], 0.06))
            parts_o.append(jitter(go[keep], 0.06))
            parts_l.append(gl[keep])
            parts_s.append(rng.uniform(0.2, 1.0, keep.sum()))
            # duplicates with lower scores
            dup = rng.random(len(gl)) < 0.4
            parts_h.append(jitter(gh[dup], 0.04))
            parts_o.append(jitter(go[dup], 0.04))
            parts_l.append(gl[dup])
            parts_s.append(rng.uniform(0.0, 0.8, dup.sum()))
            # right boxes, wrong class of the same object
            wrong = rng.integers(0, len(gl), 2 * len(gl))
            objs = ann.objects[i][wrong]
            parts_h.append(jitter(gh[wrong], 0.03))
            parts_o.append(jitter(go[wrong], 0.03))
            parts_l.append(np.array([rng.choice(classes_of_object[o]) for o in objs]))
            parts_s.append(rng.uniform(0.0, 0.7, len(wrong)))
        n_fp = max(per_image - sum(len(x) for x in parts_l), 0)
        # false positives: random boxes, classes of the image's objects or random ones
        xy = rng.uniform(0, 1, (n_fp, 2, 2)) * np.array([w, h])
        fp = np.concatenate([xy.min(1), xy.max(1)], axis=1)
        xy = rng.uniform(0, 1, (n_fp, 2, 2)) * np.array([w, h])
        fo = np.concatenate([xy.min(1), xy.max(1)], axis=1)
        if len(gl):
            fl = np.where(rng.random(n_fp) < 0.5, rng.choice(gl, n_fp),
                          rng.integers(0, NUM_HOI, n_fp))
        else:
            fl = rng.integers(0, NUM_HOI, n_fp)
        parts_h.append(fp)
        parts_o.append(fo)
        parts_l.append(fl)
        parts_s.append(rng.uniform(0.0, 0.6, n_fp))
        bh, bo = np.concatenate(parts_h), np.concatenate(parts_o)
        perm = rng.permutation(len(bh))
        images.append(np.full(len(bh), i))
        hs.append(bh[perm])
        os_.append(bo[perm])
        labels.append(np.concatenate(parts_l)[perm])
        scores.append(np.concatenate(parts_s)[perm])

    def to_indices(boxes: np.ndarray) -> np.ndarray:   # continuous -> 0-based inclusive
        boxes = boxes.copy()
        boxes[:, 2:] = np.maximum(boxes[:, 2:] - 1.0, boxes[:, :2])
        return boxes.astype(np.float32).astype(np.float64)

    return HOIDetections(
        image=np.concatenate(images).astype(np.int64),
        boxes_h=to_indices(np.concatenate(hs)), boxes_o=to_indices(np.concatenate(os_)),
        labels=np.concatenate(labels).astype(np.int64),
        scores=np.round(np.concatenate(scores), 3), num_images=len(ann))


# ----------------------------------------------------------------------------- baseline

def baseline_evaluate(det: HOIDetections, ann: HOIAnnotations) -> np.ndarray:
    """Reference: the official per-class, per-detection loop (``VOCevaldet_bboxpair.m``)
    in plain Python. Returns the per-class AP ([600], NaN without ground truth)."""
    gt: dict[tuple[int, int], list[tuple[list[float], list[float]]]] = {}
    npos = [0] * NUM_HOI
    for i in range(len(ann)):
        for bh, bo, k in zip(ann.boxes_h[i].tolist(), ann.boxes_o[i].tolist(),
                             ann.hoi[i].tolist(), strict=True):
            one_based = ([bh[0] + 1, bh[1] + 1, bh[2], bh[3]],
                         [bo[0] + 1, bo[1] + 1, bo[2], bo[3]])
            gt.setdefault((i, k), []).append(one_based)
            npos[k] += 1
    per_class: list[list[int]] = [[] for _ in range(NUM_HOI)]
    for row in np.argsort(det.image, kind="stable").tolist():
        per_class[int(det.labels[row])].append(row)

    def iou(a: list[float], b: list[float]) -> float:
        iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
        ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
        if iw > 0 and ih > 0:
            ua = ((a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
                  - iw * ih)
            return iw * ih / ua
        return 0.0

    scores, images = det.scores.tolist(), det.image.tolist()
    boxes_h, boxes_o = (det.boxes_h + 1).tolist(), (det.boxes_o + 1).tolist()
    thresholds = THRESHOLDS["matlab"].tolist()
    ap = [float("nan")] * NUM_HOI
    for k in range(NUM_HOI):
        if npos[k] == 0:
            continue
        rows = sorted(per_class[k], key=lambda r: -scores[r])   # stable
        used: dict[tuple[int, int], set[int]] = {}
        tp, fp, rec, prec = 0, 0, [], []
        for r in rows:
            pairs = gt.get((images[r], k), [])
            ov_max, j_max = -float("inf"), -1
            for j, (gh, go) in enumerate(pairs):
                ov = min(iou(boxes_h[r], gh), iou(boxes_o[r], go))
                if ov > ov_max:
                    ov_max, j_max = ov, j
            if ov_max >= 0.5 and j_max not in used.setdefault((images[r], k), set()):
                used[(images[r], k)].add(j_max)
                tp += 1
            else:
                fp += 1
            rec.append(tp / npos[k])
            prec.append(tp / (fp + tp))
        total = 0.0
        for t in thresholds:
            p = max((p for p, r in zip(prec, rec, strict=True) if r >= t), default=0.0)
            total = total + p / 11
        ap[k] = total
    return np.asarray(ap)


# ----------------------------------------------------------------------------- main

def _best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, default=DEFAULT_ANNOTATIONS)
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where DETS.json is written (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    ann = load_hicodet_annotations(args.annotations)
    t_ann = time.perf_counter() - t0
    det = synthetic_detections(ann, args.per_image, args.seed)
    rows: list[tuple[str, str]] = []
    res: dict = {"annotations": str(args.annotations), "images": len(ann),
                 "detections": len(det), "annotation_parse_s": t_ann}

    t_def, r_def = _best_of(args.repeat, lambda: evaluate_hicodet(det, ann))
    t_ko, r_ko = _best_of(args.repeat, lambda: evaluate_hicodet(det, ann, known_object=True))
    res.update(default_s=t_def, known_object_s=t_ko, map_default=r_def.maps["full"],
               map_known_object=r_ko.maps["full"])
    rows += [("annotation parsing", f"{t_ann:.3f} s"),
             ("evaluate, Default", f"{t_def:.3f} s  (mAP {100 * r_def.maps['full']:.4f})"),
             ("evaluate, Known-Object",
              f"{t_ko:.3f} s  (mAP {100 * r_ko.maps['full']:.4f})")]
    if not args.no_baseline:
        t_base, ap_base = _best_of(1, lambda: baseline_evaluate(det, ann))
        same = bool(np.array_equal(ap_base, r_def.ap, equal_nan=True))
        max_diff = float(np.nanmax(np.abs(ap_base - r_def.ap)))
        res.update(baseline_s=t_base, speedup=t_base / t_def,
                   map_baseline=float(np.nanmean(ap_base)), identical_ap=same,
                   max_ap_difference=max_diff)
        rows += [("baseline Python loop", f"{t_base:.3f} s  (mAP "
                  f"{100 * np.nanmean(ap_base):.4f})"),
                 ("speed-up", f"{t_base / t_def:.1f}x"),
                 ("per-class AP identical", f"{same} (max |diff| {max_diff:.2e})")]

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out_dir or Path(tmp)
        path, report = out_dir / "DETS.json", out_dir / "report.json"
        t0 = time.perf_counter()
        write_detections(path, det, ann)
        t_write = time.perf_counter() - t0
        size = path.stat().st_size

        def json_load() -> Any:
            with open(path) as f:
                return json.load(f)

        def orjson_load() -> Any:
            return orjson.loads(path.read_bytes())

        def run_eval() -> int:
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                return cli_main(["eval", "--annotations", str(args.annotations),
                                 "--detections", str(path), "--json", str(report)])

        timings = {name: float("inf") for name in ("json", "orjson", "read", "eval")}
        for _ in range(args.repeat):         # interleaved: the same machine load for all
            for name, fn in (("json", json_load), ("orjson", orjson_load),
                             ("read", lambda: read_detections(path, ann)),
                             ("eval", run_eval)):
                t0 = time.perf_counter()
                out = fn()
                timings[name] = min(timings[name], time.perf_counter() - t0)
                if name == "eval" and out != 0:
                    raise SystemExit(f"clip4hoi eval failed with exit code {out}")
                del out
        file_map = json.loads(report.read_text())["map"]["full"]
        same_file = abs(file_map - 100 * r_def.maps["full"]) <= 5e-7   # report: 6 decimals
    ratio = timings["eval"] / timings["json"]
    res.update(write_s=t_write, file_mb=size / 2**20, json_load_s=timings["json"],
               orjson_load_s=timings["orjson"], read_detections_s=timings["read"],
               eval_s=timings["eval"], eval_over_json_load=ratio,
               file_result_identical=same_file)
    rows += [("write DETS.json", f"{t_write:.3f} s  ({size / 2**20:.1f} MiB)"),
             ("json.load of DETS.json", f"{timings['json']:.3f} s"),
             ("orjson.loads of DETS.json", f"{timings['orjson']:.3f} s"),
             ("read_detections (parse + validate)", f"{timings['read']:.3f} s"),
             ("clip4hoi eval (in process)", f"{timings['eval']:.3f} s  (same mAP: {same_file})"),
             ("eval / json.load", f"{ratio:.2f}  (target <= 1.0)")]

    width = max(len(r[0]) for r in rows)
    print(f"HICO-DET evaluation benchmark: {len(ann)} images, {len(det)} detections "
          f"({len(det) / len(ann):.1f}/image), best of {args.repeat}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

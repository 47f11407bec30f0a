"""The test loop: run a model over a test set, gather the detections of all ranks, write
``DETS.json`` and evaluate with the project's evaluator (HICO-DET mAP or V-COCO role AP).

Any module called like :class:`CLIP4HOI` in eval mode — ``model(images, targets=None,
classes=None)`` → per-image detection dicts (``docs/conventions.md``) — can be tested: a
trained model, or the training-free scorer (:mod:`clip4hoi.models.training_free`). A
:class:`CLIP4HOI` with a feature cache runs its head on the cached frozen features.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from clip4hoi.data.hicodet import HOIDataset
from clip4hoi.data.metadata import HOIClassSet
from clip4hoi.data.transforms import rescale_boxes
from clip4hoi.engine.backend import resolve_mode
from clip4hoi.engine.checkpoint import load_checkpoint
from clip4hoi.engine.config import ExperimentConfig
from clip4hoi.engine.data import (
    build_dataset,
    choose_detector,
    inputs_to_device,
    test_loader,
    to_device,
)
from clip4hoi.engine.distributed import DistInfo, gather_to_main, init_distributed
from clip4hoi.engine.feature_cache import CachedFeatures, FeatureCache, build_cache, fill_cache
from clip4hoi.engine.text_cache import text_in_fp32
from clip4hoi.errors import OptionError
from clip4hoi.evaluation import (
    evaluate_hicodet,
    evaluate_vcoco,
    format_table,
    format_vcoco_table,
    parse_records,
    records_from_outputs,
    result_to_json,
    vcoco_result_to_json,
    write_detections,
)
from clip4hoi.fileio import folder_lock, sweep_temp_files, write_atomic
from clip4hoi.models.model import CLIP4HOI, FrozenFeatures
from clip4hoi.models.precision import autocast, describe_precision, resolve_precision
from clip4hoi.models.training_free import build_training_free


@dataclass
class Evaluation:
    """Mean APs in percent (``full``, ``rare``, ``non_rare``[, ``unseen``, ``seen``] on
    HICO-DET; ``agent``, ``role_scenario_1``, ``role_scenario_2`` on V-COCO), the printed
    table and the evaluator's JSON report."""

    maps: dict[str, float | None]
    table: str
    report: dict


def forward_batch(model: nn.Module, inputs: list[Tensor] | FrozenFeatures,
                  sized: list[dict], targets: list[dict] | None, classes: HOIClassSet
                  ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
    """``model(images, targets, classes)``, or — for cached frozen features — the head of a
    :class:`CLIP4HOI` on them, with the image sizes taken from ``sized`` (targets'
    ``size``)."""
    if isinstance(inputs, FrozenFeatures):
        sizes = [(int(t["size"][0]), int(t["size"][1])) for t in sized]
        return model.forward_features(inputs, sizes, targets, classes)
    return model(inputs, targets, classes)


@torch.no_grad()
def predict(model: nn.Module, dataset: HOIDataset, info: DistInfo, classes: HOIClassSet, *,
            batch_size: int = 4, num_workers: int = 0, cache: FeatureCache | None = None,
            amp: torch.dtype | None = None) -> list[dict]:
    """``DETS.json`` records of this rank's share of ``dataset`` (boxes in original
    pixels). The model gets the targets only when it uses the annotated boxes
    (``detector.use_gt_boxes``)."""
    names, outputs = predict_outputs(model, dataset, info, classes, batch_size=batch_size,
                                     num_workers=num_workers, cache=cache, amp=amp)
    return records_from_outputs(names, outputs, dataset.annotations.dataset)


@torch.no_grad()
def predict_outputs(model: nn.Module, dataset: HOIDataset, info: DistInfo,
                    classes: HOIClassSet, *, batch_size: int = 4, num_workers: int = 0,
                    cache: FeatureCache | None = None, amp: torch.dtype | None = None
                    ) -> tuple[list[str], list[dict[str, np.ndarray]]]:
    """File names and detections (numpy arrays, boxes in original pixels) of this rank's
    share of ``dataset`` (see :func:`predict`)."""
    use_targets = isinstance(model, CLIP4HOI) and model.config.detector.use_gt_boxes
    source = dataset
    if cache is not None and isinstance(model, CLIP4HOI):
        fill_cache(model, dataset, cache, info, num_workers, desc="cache test features",
                   amp=amp)
        source = CachedFeatures(dataset, cache)
    loader = test_loader(source, info, batch_size, num_workers)
    model.eval()
    text_in_fp32(model, classes)   # before any autocast
    names: list[str] = []
    outputs: list[dict[str, np.ndarray]] = []
    for inputs, targets in tqdm(loader, desc="test", unit="batch", disable=not info.is_main,
                                leave=False):
        device_targets = to_device(targets, info.device) if use_targets else None
        with autocast(info.device, amp):
            batch = forward_batch(model, inputs_to_device(inputs, info.device), targets,
                                  device_targets, classes)
        for out, target in zip(batch, targets, strict=True):
            out = rescale_boxes({k: (v.float() if v.is_floating_point() else v).cpu()
                                 for k, v in out.items()},
                                target["size"].tolist(), target["orig_size"].tolist())
            outputs.append({k: v.numpy() for k, v in out.items()})
            names.append(target["file_name"])
    return names, outputs


def evaluate_records(records: list[dict], dataset: HOIDataset, zero_shot: str | None = None
                     ) -> Evaluation:
    """Evaluate ``DETS.json`` records against the dataset's annotations."""
    annotations = dataset.annotations
    detections = parse_records({"images": records}, annotations, source="test detections")
    if annotations.dataset == "vcoco":   # official per-person ground truth when read
        result = evaluate_vcoco(detections, getattr(dataset, "ground_truth", None)
                                or annotations)
        report = vcoco_result_to_json(result)
        return Evaluation(report["map"], format_vcoco_table(result), report)
    result = evaluate_hicodet(detections, annotations, zero_shot=zero_shot)
    report = result_to_json(result)
    return Evaluation(report["map"], format_table(result), report)


def evaluate_model(model: nn.Module, dataset: HOIDataset, info: DistInfo, *,
                   classes: HOIClassSet | None = None, zero_shot: str | None = None,
                   batch_size: int = 4, num_workers: int = 0,
                   cache: FeatureCache | None = None, amp: torch.dtype | None = None,
                   detections_path: str | Path | None = None) -> Evaluation | None:
    """Run, gather and evaluate on every rank's share of ``dataset``: rank 0 writes
    ``detections_path`` (when given) and returns the evaluation, the other ranks None.
    ``classes`` default to the dataset's (all 600 HICO-DET classes for a test set)."""
    names, outputs = predict_outputs(model, dataset, info, classes or dataset.class_set,
                                     batch_size=batch_size, num_workers=num_workers,
                                     cache=cache, amp=amp)
    # To rank 0 only, as numpy arrays (a few bytes per detection, not Python floats).
    gathered = gather_to_main((names, outputs))
    if not info.is_main:
        return None
    records = records_from_outputs([n for rank_names, _ in gathered for n in rank_names],
                                   [o for _, rank_outputs in gathered for o in rank_outputs],
                                   dataset.annotations.dataset)
    position = dataset.annotations.index()
    merged = sorted(records, key=lambda r: position[r["file_name"]])
    if detections_path is not None:
        write_detections(detections_path, merged)
    return evaluate_records(merged, dataset, zero_shot)


def run_test(config: ExperimentConfig, checkpoint: str | Path | None = None,
             mode: str = "auto", output: str | Path | None = None,
             overrides: list[str] | None = None, precision: str = "auto",
             info: DistInfo | None = None, label: Callable[[str], str] = str
             ) -> Evaluation | None:
    """``clip4hoi test``: evaluate a trained checkpoint (mode ``trained``; its stored
    model config with the ``model.*`` items of ``overrides``) or the training-free scorer
    (``crop`` / ``dense``, built from ``config.training_free``) on the config's test set;
    ``auto`` chooses as ``detect`` does (:func:`~clip4hoi.engine.backend.resolve_mode`),
    and so does ``precision`` (``auto``, ``fp32``, ``bf16``:
    :func:`~clip4hoi.models.precision.resolve_precision`; bf16 is autocast around the
    model, class embeddings are encoded before it in fp32, boxes and scores stay fp32).
    Rank 0 writes ``output`` (``DETS.json``; default ``OUTPUT_DIR/detections.json``) and
    ``<output>.results.json``, and returns the evaluation. A second test writing the same
    ``output`` is refused while this one runs (a lock beside it); a test may run beside
    the training of the same folder, whose files it does not write. ``label``: how its
    first line calls a setting (:func:`~clip4hoi.errors.worded`)."""
    info = info or init_distributed(config.train.device)
    overrides = list(overrides or [])
    mode, _ = resolve_mode(mode, checkpoint, str(info.device), overrides)
    dtype, reason = resolve_precision(precision, info.device)
    if info.is_main:
        print(f"clip4hoi test: mode {mode}, {describe_precision(reason, precision, label)}")
    output = Path(output or config.output_dir / "detections.json")
    # Two tests writing one output would pair one's DETS.json with the other's results.
    lock = folder_lock(output.parent, "{output}", target=output,
                       name=f".{output.name.encode()[:200].decode(errors='ignore')}.lock"
                       ) if info.is_main else contextlib.nullcontext()
    with lock:
        if info.is_main:
            sweep_temp_files(output.parent)
        return _test(config, checkpoint, mode, output, overrides, dtype, info)


def _test(config: ExperimentConfig, checkpoint: str | Path | None, mode: str, output: Path,
          overrides: list[str], dtype: torch.dtype, info: DistInfo) -> Evaluation | None:
    dataset = build_dataset(config.data, train=False)   # missing files fail before the model
    amp = None if dtype == torch.float32 else dtype
    cache = None
    if mode == "trained":
        if checkpoint is None:
            raise OptionError("mode", "trained", "needs a {checkpoint} (or mode crop or dense "
                              "for the training-free scorer)")
        model: nn.Module = load_checkpoint(checkpoint, [
            item.removeprefix("model.") for item in overrides if item.startswith("model.")])
        cache = build_cache(config.feature_cache, model, config.data.transform, amp)
    else:
        if config.data.dataset == "custom":   # DETR cannot find objects outside COCO
            line = choose_detector(config.training_free.detector, dataset.class_set,
                                   "training_free.detector")
            print(f"clip4hoi test: {line}")
        model = build_training_free(replace(config.training_free, mode=mode))
    model.to(info.device)
    result = evaluate_model(model, dataset, info, zero_shot=config.data.zero_shot,
                            batch_size=config.train.test_batch_size,
                            num_workers=config.data.num_workers, cache=cache,
                            amp=amp,
                            detections_path=output)
    if result is not None:
        write_atomic(output.with_name(output.name.removesuffix(".json") + ".results.json"),
                     json.dumps(result.report, indent=1))
    return result

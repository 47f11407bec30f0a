"""Datasets, samplers and loaders of the experiments.

Reproducibility is designed in here. The order of an epoch is a permutation drawn from
``(seed, epoch)``; each rank takes every ``world_size``-th position of it; and each item's
random augmentation is drawn from a generator seeded by ``(seed, epoch, position)``.
None of it depends on DataLoader workers or the global RNG, so a run resumed in the
middle of an epoch (the sampler skips what was consumed) sees exactly the images, in the
same order and with the same augmentation, as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from clip4hoi.config import DetectorConfig
from clip4hoi.data.custom import load_custom_annotations, unseen_class_ids
from clip4hoi.data.hicodet import (
    CustomHOI,
    HICODet,
    HOIDataset,
    check_paths,
    experiment_classes,
)
from clip4hoi.data.metadata import COCO_OBJECTS, HOIClassSet, words
from clip4hoi.data.transforms import HOITransform
from clip4hoi.data.vcoco import VCOCO
from clip4hoi.engine.config import DataConfig, ExperimentConfig
from clip4hoi.engine.distributed import DistInfo
from clip4hoi.errors import InputError
from clip4hoi.models.model import FrozenFeatures

Batch = tuple[list[Tensor] | FrozenFeatures, list[dict]]
"""``(images or cached features, targets)``."""


def build_dataset(cfg: DataConfig, train: bool) -> HOIDataset:
    """The training set (zero-shot filtered, empty images skipped, training transform)
    or the test set (every image and class, test transform). Missing files raise
    ``FileNotFoundError`` naming them."""
    transform = HOITransform(train, replace(cfg.transform, scales=tuple(cfg.transform.scales)),
                             uint8=True)   # converted to float on the device
    images = cfg.path(cfg.train_images if train else cfg.test_images)
    annotations = cfg.path(cfg.train_annotations if train else cfg.test_annotations)
    if cfg.dataset == "vcoco":
        return VCOCO(images, annotations, transform, skip_empty=train)
    if cfg.dataset == "custom":
        check_paths(images, annotations)
        other = load_custom_annotations(check_paths(
            cfg.path(cfg.test_images if train else cfg.train_images),
            cfg.path(cfg.test_annotations if train else cfg.train_annotations))[1])
        own = load_custom_annotations(annotations)
        unseen = unseen_class_ids(own.class_set, cfg.unseen_classes, cfg.unseen_verbs,
                                  cfg.unseen_objects, known=[other.class_set])
        return CustomHOI(images, own, transform, unseen, cfg.zero_shot_rule,
                         skip_empty=train, training=None if train else other,
                         rare_threshold=cfg.rare_threshold)
    return HICODet(images, annotations, transform, zero_shot=cfg.zero_shot if train else None,
                   zero_shot_rule=cfg.zero_shot_rule, skip_empty=train)


def choose_detector(detector: DetectorConfig, classes: HOIClassSet,
                    setting: str = "model.detector") -> str:
    """Resolve ``detector.type`` for the objects of ``classes`` — ``auto``: DETR when every
    object is one of COCO's 80, Grounding DINO otherwise — and refuse DETR for other
    objects, naming them (and ``setting``, where the type is set). Returns the start-up
    line that says which detector runs."""
    others = [words(classes.object_vocabulary[o]) for o in classes.used_objects
              if o >= len(COCO_OBJECTS)]
    if detector.type == "auto":
        detector.type = "grounding_dino" if others else "detr"
    if detector.type == "detr" and others:
        raise InputError(f"the objects {', '.join(others)} are not COCO objects, which DETR "
                         f"cannot detect: set {setting}.type: grounding_dino (or auto)")
    if detector.type == "grounding_dino":
        why = f"objects outside COCO: {', '.join(others)}" if others else \
            f"{setting}.type grounding_dino"
        return f"detector: Grounding DINO ({why})"
    return "detector: DETR (every object is one of COCO's 80)"


def configure_model(config: ExperimentConfig, train_set: HOIDataset, test_set: HOIDataset
                    ) -> str | None:
    """What the data decides about the model: for a custom dataset, ``model.classes``
    becomes every class of the experiment (so its checkpoints detect them by default) and
    the detector is chosen from their objects (:func:`choose_detector`). Returns the
    start-up line naming the detector (None for the benchmarks, whose ``auto`` detector
    is DETR)."""
    if not isinstance(train_set, CustomHOI) or not isinstance(test_set, CustomHOI):
        if config.model.detector.type == "auto":
            choose_detector(config.model.detector, train_set.class_set)
        return None
    classes = experiment_classes(train_set, test_set)
    line = choose_detector(config.model.detector, classes)
    config.model.classes = json.dumps(classes.to_json())
    return f"custom dataset: {len(classes)} classes of {len(classes.used_objects)} objects; " \
           f"{line}"


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for one item of one epoch."""
    state = np.random.SeedSequence([seed, epoch, position]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededDataset(Dataset):
    """Items addressed by ``(index, seed)``: the wrapped dataset's item drawn with the
    CPU generator seeded by ``seed`` — and restored afterwards, so that loading in the
    main process leaves the training RNG (dropout) untouched. Only the CPU generator is
    touched (the transforms draw from it): ``torch.manual_seed`` would also reseed every
    CUDA generator, per item."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]


class ResumableSampler(Sampler[tuple[int, int]]):
    """Shuffled, rank-sharded ``(index, seed)`` keys of one epoch, optionally starting
    after the first ``start`` keys of this rank (to resume). Like
    ``DistributedSampler(drop_last=False)`` the permutation is padded by repetition to a
    multiple of ``world_size``; unlike it, the order and seeds are a function of
    ``(seed, epoch)`` only."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.shuffle = shuffle
        self.epoch = self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Serve epoch ``epoch`` from this rank's ``start``-th key on."""
        self.epoch, self.start = epoch, start

    def positions(self) -> list[int]:
        """Positions in the epoch's permutation served by this rank (before ``start``)."""
        total = math.ceil(self.size / self.world_size) * self.world_size
        return list(range(self.rank, total, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        for position in self.positions()[self.start:]:
            yield order[position % self.size], sample_seed(self.seed, self.epoch, position)

    def __len__(self) -> int:
        return max(0, len(self.positions()) - self.start)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: a disjoint split for inference (no
    padding, so no image is evaluated twice)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate(batch: Sequence[tuple[Tensor | FrozenFeatures, dict]]) -> Batch:
    """Images as a list (sizes differ; the model pads them), cached features as one
    batched :class:`FrozenFeatures`; targets as a list."""
    inputs = [item for item, _ in batch]
    targets = [target for _, target in batch]
    if inputs and isinstance(inputs[0], FrozenFeatures):
        return FrozenFeatures.cat(inputs), targets  # type: ignore[arg-type]
    return inputs, targets  # type: ignore[return-value]


def inputs_to_device(inputs: list[Tensor] | FrozenFeatures, device: torch.device
                     ) -> list[Tensor] | FrozenFeatures:
    """A batch's images, or its cached frozen features, on ``device`` (asynchronously from
    pinned memory). ``uint8`` images travel as such and become float ``[0, 1]`` there."""
    if isinstance(inputs, FrozenFeatures):
        return inputs.to(device, non_blocking=True)
    images = [image.to(device, non_blocking=True) for image in inputs]
    return [image.float().div_(255) if image.dtype == torch.uint8 else image
            for image in images]


def to_device(targets: list[dict], device: torch.device) -> list[dict]:
    """Targets with their tensors on ``device``."""
    return [{k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
             for k, v in t.items()} for t in targets]


def pin_memory() -> bool:
    """Whether loaders pin their batches (for asynchronous copies to a GPU)."""
    return torch.cuda.is_available()


def train_loader(dataset: Dataset, sampler: ResumableSampler, batch_size: int,
                 num_workers: int) -> DataLoader:
    """Loader of :class:`SeededDataset` keys from a :class:`ResumableSampler`. Its own
    generator (fixed seed) keeps it from drawing on the global RNG. Workers persist across
    epochs (the sampler runs in the main process, so resuming is unaffected); batches are
    pinned on GPU machines."""
    return DataLoader(SeededDataset(dataset), batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory(),
                      persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(sampler.seed))


def test_loader(dataset: Dataset, info: DistInfo, batch_size: int, num_workers: int
                ) -> DataLoader:
    """Loader of this rank's share of ``dataset``, in order."""
    sampler = ShardSampler(len(dataset), info.rank, info.world_size)  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory())

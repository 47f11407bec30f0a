"""Experiment configuration: the model plus data, feature-cache and training sections.

One YAML file per experiment (``configs/``). A file may start from another with a
``base:`` key — a path relative to the including file — whose content it overrides
section by section (mappings are merged recursively, any other value is replaced)::

    base: hicodet.yaml
    data:
      zero_shot: rf_uc

``--set a.b=value`` overrides (YAML values) apply last, e.g. ``--set train.lr=2e-4
model.head.alpha=0.3``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clip4hoi.config import (
    COUNT_RANGE,
    SEED_RANGE,
    TRAINING_FREE_RANGES,
    ModelConfig,
    TrainingFreeConfig,
    apply_overrides,
    check_model_config,
    check_ranges,
    from_dict,
    parse_yaml,
    to_dict,
    yaml_problem,
)
from clip4hoi.data.transforms import TransformConfig
from clip4hoi.errors import InputError

DATASETS = ("hicodet", "vcoco", "custom")
SCHEDULES = ("step", "cosine", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
CACHE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class DataConfig:
    """Where the images and annotations are and how images are transformed.

    Relative paths resolve against ``root``. The training set loses the unseen classes of
    ``zero_shot`` (by ``zero_shot_rule``); the test set always keeps all classes and all
    images, the empty ones included."""

    dataset: str = "hicodet"
    """``hicodet``, ``vcoco`` or ``custom`` (your own classes; docs/datasets.md)."""
    root: str = "data/hicodet"
    train_images: str = "hico_20160224_det/images/train2015"
    train_annotations: str = "instances_train2015.json"
    test_images: str = "hico_20160224_det/images/test2015"
    test_annotations: str = "instances_test2015.json"
    zero_shot: str | None = None
    """``rf_uc``, ``nf_uc``, ``uo``, ``uv``, ``uc0``..``uc4`` (HICO-DET) or null."""
    zero_shot_rule: str = "drop_images"
    """``drop_images`` (two-stage CLIP line of work) or ``drop_pairs`` (GEN-VLKT line)."""
    unseen_classes: str | list[str] | None = None
    """``custom``: classes left out of training (zero-shot), reported as Unseen at test:
    a list of ``"VERB OBJECT"``, the same as comma-separated text, or a text file with one
    a line."""
    unseen_verbs: list[str] | None = None
    """``custom``: every class of these verbs is unseen."""
    unseen_objects: list[str] | None = None
    """``custom``: every class of these objects is unseen."""
    rare_threshold: int = 10
    """``custom``: a test class with fewer training pairs than this is Rare."""
    transform: TransformConfig = field(default_factory=TransformConfig)
    num_workers: int = 4
    """DataLoader worker processes per rank (0: load in the main process)."""

    def path(self, name: str) -> Path:
        """``root / name`` for a relative path."""
        path = Path(name)
        return path if path.is_absolute() else Path(self.root) / path


@dataclass
class FeatureCacheConfig:
    """On-disk cache of the frozen DETR and CLIP outputs of un-augmented images."""

    enabled: bool = False
    """Cache the test set, and the training set when ``data.transform.augment`` is off."""
    dir: str = "outputs/feature_cache"
    """Root folder; entries live in a sub-folder named by the frozen models' fingerprint."""
    dtype: str = "float32"
    """Storage type (``float16`` halves the disk use; features are read back as float32)."""


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging, evaluation and checkpoints."""

    output_dir: str | None = None
    """Default: ``outputs/<experiment name>``."""
    epochs: int = 20
    max_steps: int = 0
    """Stop after this many optimiser steps (0: run all epochs)."""
    batch_size: int = 16
    """Images per optimiser step over all processes and accumulation steps."""
    accumulation_steps: int = 1
    test_batch_size: int = 4
    """Images per inference batch and process."""
    lr: float = 1e-4
    weight_decay: float = 1e-4
    lr_schedule: str = "step"
    """``step`` (× ``lr_gamma`` at each of ``lr_drop_epochs``), ``cosine`` or ``constant``."""
    lr_drop_epochs: list[int] = field(default_factory=lambda: [10])
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    """Linear warm-up from 0 over this many optimiser steps."""
    clip_grad_norm: float = 0.1
    """Gradient-norm clipping (0: off)."""
    amp: str = "auto"
    """``auto`` (bf16 autocast on GPUs of compute capability >= 8, fp16 with a GradScaler
    below, off on the CPU), ``bf16``, ``fp16`` or ``off``. TF32 is on for fp32 matmuls."""
    seed: int = 42
    log_every: int = 10
    """Optimiser steps between lines of ``metrics.jsonl``."""
    checkpoint_every: int = 0
    """Optimiser steps between checkpoints (0: at epoch ends only)."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept (the best one is kept apart)."""
    eval_every: int = 0
    """Epochs between evaluations on the test set during training (0: none during)."""
    eval_at_end: bool = True
    """Evaluate once the last epoch (or ``max_steps``) is done."""
    best_metric: str = "auto"
    """Metric of the best checkpoint: ``auto`` (``unseen`` in zero-shot, ``role_scenario_2``
    on V-COCO, else ``full``) or any key of the evaluation (``full``, ``rare``, ...)."""
    tensorboard: bool = False
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    cpu_threads: int = 0
    """Threads of torch's CPU ops, set by the command line (0: torch's default). On a
    shared or small CPU, 1 avoids oversubscription."""
    max_steps_without_positives: int = 200
    """Stop when no proposal pair matched an annotated pair for this many optimiser steps
    in a row (a wrong detector or label map; 0: never stop)."""
    find_unused_parameters: bool = False
    """DDP option; only needed if some trainable parameters can miss a step's graph."""


@dataclass
class ExperimentConfig:
    """One experiment: everything ``clip4hoi train`` and ``clip4hoi test`` need."""

    name: str = ""
    """Default: the config file's name without ``.yaml``."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    feature_cache: FeatureCacheConfig = field(default_factory=FeatureCacheConfig)
    training_free: TrainingFreeConfig = field(default_factory=TrainingFreeConfig)
    """Used by ``clip4hoi test --mode crop|dense`` (``mode`` set from the command line)."""

    @property
    def output_dir(self) -> Path:
        """Where checkpoints, logs and results go."""
        return Path(self.train.output_dir or Path("outputs") / (self.name or "clip4hoi"))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: mappings merged recursively, other values replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_with_base(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a YAML file with its ``base:`` chain resolved."""
    path = Path(path)
    if path.resolve() in _chain:
        raise ValueError(f"config file {path}: 'base' includes form a cycle")
    try:
        data = parse_yaml(path.read_text()) or {}
    except OSError as error:
        raise FileNotFoundError(f"config file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise InputError(f"config file {path}: not valid YAML ({yaml_problem(error)})"
                         ) from error
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    parent = read_yaml_with_base(path.parent / base, (*_chain, path.resolve()))
    return _merge(parent, data)


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML (resolving ``base:``), apply ``key=value`` overrides and
    check the values that the dataclasses cannot."""
    data = read_yaml_with_base(path)
    data.setdefault("name", Path(path).stem)
    config = apply_overrides(from_dict(ExperimentConfig, data, where=str(path)),
                             overrides or [])
    validate(config)
    return config


def validate(config: ExperimentConfig) -> None:
    """Raise ``ValueError`` naming the first invalid setting."""
    data, train = config.data, config.train
    checks = [
        (data.dataset in DATASETS, f"data.dataset={data.dataset!r} must be one of {DATASETS}"),
        (data.dataset == "hicodet" or data.zero_shot is None,
         "data.zero_shot is a HICO-DET setting (data.unseen_classes for a custom dataset)"),
        (data.dataset == "custom" or not (data.unseen_classes or data.unseen_verbs
                                          or data.unseen_objects),
         "data.unseen_classes / unseen_verbs / unseen_objects need data.dataset: custom"),
        (data.rare_threshold >= 1, "data.rare_threshold must be >= 1"),
        (train.lr_schedule in SCHEDULES,
         f"train.lr_schedule={train.lr_schedule!r} must be one of {SCHEDULES}"),
        (train.amp in AMP_MODES, f"train.amp={train.amp!r} must be one of {AMP_MODES}"),
        (config.feature_cache.dtype in CACHE_DTYPES,
         f"feature_cache.dtype={config.feature_cache.dtype!r} must be one of {CACHE_DTYPES}"),
        (train.epochs >= 1 and train.batch_size >= 1 and train.accumulation_steps >= 1
         and train.test_batch_size >= 1, "train: epochs and batch sizes must be >= 1"),
        (train.log_every >= 1, "train.log_every must be >= 1"),
        (math.isfinite(train.lr) and train.lr > 0,
         f"train.lr must be a positive number, not {train.lr}"),
        (math.isfinite(train.weight_decay) and train.weight_decay >= 0,
         f"train.weight_decay must be >= 0, not {train.weight_decay}"),
        (math.isfinite(train.clip_grad_norm) and train.clip_grad_norm >= 0,
         f"train.clip_grad_norm must be >= 0 (0: off), not {train.clip_grad_norm}"),
        (math.isfinite(train.lr_gamma) and train.lr_gamma > 0,
         f"train.lr_gamma must be positive, not {train.lr_gamma}"),
        (train.max_steps >= 0 and train.warmup_steps >= 0 and train.checkpoint_every >= 0
         and train.eval_every >= 0,
         "train.max_steps, warmup_steps, checkpoint_every and eval_every must be >= 0"),
        (train.max_steps_without_positives >= 0, "train.max_steps_without_positives must "
         "be >= 0"),
        (train.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
        (data.num_workers >= 0, "data.num_workers must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(f"{message} (experiment {config.name!r})")
    check_ranges(config, EXPERIMENT_RANGES, "")
    check_model_config(config.model)
    check_ranges(config.training_free, TRAINING_FREE_RANGES, "training_free")


EXPERIMENT_RANGES: dict[str, str] = {
    "train.seed": SEED_RANGE, "data.num_workers": "[0, 256]",
    **{f"train.{key}": COUNT_RANGE for key in (
        "epochs", "batch_size", "accumulation_steps", "test_batch_size", "log_every",
        "keep_checkpoints", "lr_drop_epochs")},
    **{f"train.{key}": "[0, 2147483648)" for key in (
        "max_steps", "warmup_steps", "checkpoint_every", "eval_every", "cpu_threads",
        "max_steps_without_positives")},
}
"""Ranges of the experiment's own numeric settings (the model's: :data:`MODEL_RANGES`; the
float ones are checked in :func:`validate`)."""


def dump_experiment(config: ExperimentConfig) -> str:
    """The resolved config as YAML (written to the output folder of every run)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)

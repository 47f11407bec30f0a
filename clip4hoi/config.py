"""Typed configuration of the model, with YAML/JSON round trips and ``key=value`` overrides.

Every default of ``docs/spec.md`` §2 where the paper is silent is a field here. Training,
data and evaluation settings live in :mod:`clip4hoi.engine.config` and nest this one.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import IO, Any, TypeVar

import yaml

from clip4hoi.errors import InputError

T = TypeVar("T")


@dataclass
class DetectorConfig:
    """The frozen detector (DETR, or Grounding DINO for any object) and how its detections
    become proposals."""

    type: str = "detr"
    """``detr`` (the 80 COCO objects) or ``grounding_dino`` (open vocabulary: any object
    name; needs ``pip install 'clip4hoi[openvocab]'``, see ``docs/open_vocabulary.md``);
    ``auto`` in a training config: DETR when every object of the dataset is a COCO one,
    else Grounding DINO (resolved by ``clip4hoi train``, docs/datasets.md)."""
    weights: str = "detr-r50-hicodet"
    """A registered name (``clip4hoi download --list``), a checkpoint path (a model folder
    for Grounding DINO), or ``random``. With ``type: grounding_dino`` a DETR name (the
    default) stands for ``grounding-dino-tiny``."""
    architecture: dict[str, Any] | None = None
    """With ``weights: random``: ``clip4hoi.models.detr.DETR`` keyword arguments, or
    ``transformers.GroundingDinoConfig`` ones (default: the Swin-T model's)."""
    tokenizer: str | None = None
    """Grounding DINO with ``weights: random``: a local tokenizer folder (default: the
    tokenizer of ``grounding-dino-tiny``)."""
    num_heads: int = 8
    dilation: bool = False
    score_threshold: float = 0.2
    nms_threshold: float = 0.5
    min_humans: int = 3
    max_humans: int = 15
    min_objects: int = 3
    max_objects: int = 15
    random_seed: int = 0
    """Seed of the random initialisation with ``weights: random`` (so that a checkpoint
    trained on random frozen weights rebuilds the same ones)."""
    use_gt_boxes: bool = False
    """Oracle setting: the annotated boxes replace the detections (training and test), to
    study the interaction head apart from detection errors."""


@dataclass
class CLIPConfig:
    """The frozen CLIP model (open_clip name and pretrained tag or file)."""

    name: str = "ViT-B-16"
    pretrained: str | None = "openai"
    """An open_clip pretrained tag, a local weights file, or null for random weights."""
    model_cfg: dict[str, Any] | None = None
    """A custom open_clip architecture (random weights), e.g. a tiny one for tests."""
    random_seed: int = 0
    """Seed of the random initialisation when ``pretrained`` is null."""
    image_size: int | None = None
    """CLIP input resolution; null = the pretraining one (224 for ViT-B/16)."""
    layers: list[int] = field(default_factory=lambda: [-1])
    """ViT blocks whose patch tokens the HOI decoder attends to (negative = from the end)."""


@dataclass
class HeadConfig:
    """The trainable part: HO interactor, HOI decoder and HOI classifier."""

    # HO interactor
    interactor_layers: int = 2
    interactor_heads: int = 8
    interactor_ffn: int = 1024
    spatial_dim: int = 128
    # HOI decoder
    decoder_dim: int = 512
    decoder_layers: int = 2
    decoder_heads: int = 8
    decoder_ffn: int = 2048
    union_mask: bool = False
    """Restrict each pair's cross-attention to the CLIP patches inside its union box."""
    dropout: float = 0.1
    # HOI classifier: prompt "[PREFIX]*n verb [CONJUN]*m object"
    prefix_length: int = 8
    conjunction_length: int = 2
    prefix_init: str | None = None
    """Words whose embeddings initialise the last prefix slots (the rest: N(0, 0.02))."""
    conjunction_init: str | None = None
    learn_prompts: bool = True
    logits: str = "fixed"
    """How cosine similarities become the logits of S_pair and S_glob. ``fixed`` (the
    paper's): ``cos / temperature``, one fixed τ shared by both scores, no bias.
    ``learned`` (a SigLIP-style variant): ``s · cos + b`` with a learned scale and bias per
    score, initialised to ``logit_scale_init`` and ``logit_bias_init``. A checkpoint whose
    stored config lacks this field was trained with ``learned`` (:data:`LEGACY_DEFAULTS`)."""
    temperature: float = 0.04
    """τ of ``logits: fixed``: chosen by a sweep on the synthetic smoke benchmark
    (docs/spec.md §2); the paper tunes τ and names its sensitivity to it."""
    logit_scale_init: float = 10.0
    """``logits: learned``: initial scale s."""
    logit_bias_init: float = -10.0
    """``logits: learned``: initial bias b."""
    # Score fusion: s = S_pair^(1-alpha) * S_glob^alpha * (s_h * s_o)^lambda
    alpha: float = 0.5
    lambda_train: float = 1.0
    lambda_test: float = 2.8


@dataclass
class LossConfig:
    """Binary focal loss on fused pair scores, plus a loss on global scores."""

    focal_alpha: float = 0.5
    focal_gamma: float = 0.2
    global_weight: float = 1.0
    match_iou: float = 0.5
    add_gt_boxes: bool = False
    """Add the ground-truth boxes to the proposals in training (with detector score 1)."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild a CLIP4HOI model (stored in every checkpoint)."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    classes: str = "hicodet"
    """Default class set at inference (``hicodet``, ``vcoco``, a file or free text)."""


LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"head": {"logits": "learned"}}
"""Fields added to :class:`ModelConfig` after checkpoints were first written, with the value
that a stored config lacking them was trained with (not today's default)."""


def stored_model_config(data: dict[str, Any], where: str = "config") -> ModelConfig:
    """The :class:`ModelConfig` of a config stored with a model (a checkpoint): sections
    missing a field of :data:`LEGACY_DEFAULTS` take its legacy value, so that an old
    checkpoint rebuilds the model it was trained as."""
    data = dict(data)
    for section, legacy in LEGACY_DEFAULTS.items():
        if isinstance(data.get(section), dict):
            data[section] = {**legacy, **data[section]}
    return from_dict(ModelConfig, data, where)


# --------------------------------------------------------------------------------------
# Generic (de)serialisation of nested dataclasses


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Coerce a YAML/JSON value into ``annotation`` (dataclasses, lists, optionals)."""
    origin = typing.get_origin(annotation)
    if is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError(f"{where}: {value!r} does not fit {annotation}: {'; '.join(errors)}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if annotation is int and float(value) != int(value):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return annotation(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {annotation}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys are an error naming them."""
    types_ = _field_types(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {k: _convert(v, types_[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain-dict form of a config dataclass (YAML/JSON serialisable)."""
    return asdict(config)


def apply_overrides(config: T, overrides: list[str]) -> T:
    """Return a copy of ``config`` with ``a.b.c=value`` overrides applied (values in YAML
    syntax: ``head.alpha=0.3``, ``clip.layers=[-1,-4]``, ``clip.pretrained=null``)."""
    data = to_dict(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"{{overrides}} {item!r}: expected KEY=VALUE")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise InputError(f"{{overrides}} {item!r}: {part!r} is not a config section"
                                 f"{_did_you_mean(data, key.strip())}")
            node = node[part]
        if leaf not in node:
            raise InputError(f"{{overrides}} {item!r}: unknown key {leaf!r}; valid: "
                             f"{sorted(node)}{_did_you_mean(data, key.strip())}")
        try:
            node[leaf] = parse_yaml(raw)
        except yaml.YAMLError as error:
            raise InputError(f"{{overrides}} {item!r}: the value is not valid YAML "
                             f"({yaml_problem(error)})") from None
    return from_dict(type(config), data)


class _YAMLLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only ``true``/``false`` are booleans, so
    ``amp: off`` or ``--set train.amp=off`` is the string ``"off"`` (YAML 1.1 reads
    ``on``/``off``/``yes``/``no`` as booleans); and a key given twice in one mapping (two
    ``train:`` sections) is an error naming both lines, not the last one silently kept."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":   # "<<: *anchor" may repeat
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    seen = first.get(key)
                except TypeError:   # unhashable: SafeLoader reports it
                    continue
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        problem=f"key {key!r} is given twice, at line {seen.line + 1} and at "
                                f"line {key_node.start_mark.line + 1}; keep one")
                first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_BOOL = "tag:yaml.org,2002:bool"
_YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_YAMLLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(text: str | IO[str]) -> Any:
    """YAML text (or an open file) as Python values; booleans are ``true``/``false`` only."""
    return yaml.load(text, Loader=_YAMLLoader)  # a SafeLoader subclass: no arbitrary objects


def yaml_problem(error: Exception) -> str:
    """A YAML parse error in one line: what is wrong and where."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _did_you_mean(data: dict[str, Any], key: str) -> str:
    """``"; did you mean model.detector.weights?"`` when ``key`` is the tail of full keys."""
    def paths(node: dict[str, Any], prefix: str) -> list[str]:
        out = []
        for name, value in node.items():
            out.append(prefix + name)
            if isinstance(value, dict):
                out += paths(value, f"{prefix}{name}.")
        return out

    matches = [p for p in paths(data, "") if p.endswith("." + key)]
    return f"; did you mean {' or '.join(matches)}?" if matches else ""


# --------------------------------------------------------------------------------------
# Training-free detection (clip4hoi.models.training_free)


@dataclass
class TrainingFreeConfig:
    """HOI detection from the frozen DETR and CLIP alone, without a trained head
    (``clip4hoi detect --mode crop|dense``); see ``docs/training_free.md``."""

    mode: str = "crop"
    """``crop``: CLIP encodes each pair's union-box crop; ``dense``: the pair's patches of
    one dense (MaskCLIP) CLIP pass over the whole image are pooled."""
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig(weights="detr-r50"))
    """Default: the public COCO DETR-R50 (facebookresearch/detr)."""
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    classes: str = "hicodet"
    """Default class set (``hicodet``, ``vcoco``, a file or free text)."""
    templates: list[str] = field(default_factory=lambda: [
        "{sentence}.",
        "a person {action}.",
        "a close-up photo of a person {action}.",
        "an image of someone {action}.",
    ])
    """Prompt templates; each class's text embedding is the normalised mean over them.
    Fields: ``{sentence}`` (the class set's sentence, "a photo of a person riding a
    bicycle"), ``{action}`` ("riding a bicycle"), ``{verb}`` ("ride"), ``{object}``
    ("bicycle")."""
    margin: float = 0.1
    """Each side of the pair's union box grows by this fraction of the box's size."""
    temperature: float = 0.01
    """Softmax temperature on cosine similarities (CLIP's own logit scale is 100)."""
    detector_power: float = 2.8
    """λ in score = softmax · (s_h · s_o)^λ (the trained model's test-time value)."""
    crop_batch_size: int = 32
    """Crops per CLIP image-encoder batch (``crop`` mode)."""
    dense_pooling: str = "mean"
    """``dense`` mode: ``mean`` over the patches whose centres lie in the box (at least
    the centre patch), or ``roi_align`` (bilinear samples of the patch grid averaged)."""


# --------------------------------------------------------------------------------------
# Value ranges, checked before anything is built


SEED_RANGE = "[0, 4294967296)"
COUNT_RANGE = "[1, 2147483648)"

CLIP_SIZE_RANGE = "[32, 2048]"
"""CLIP's input side in pixels: one patch of the coarsest ViT (32) to 2048, where ViT-B/16's
attention over 128² = 16384 tokens takes 13 GB per layer (twice the side: 16 times that)."""

LOGIT_FORMS = ("fixed", "learned")
"""The forms of ``head.logits``."""

MODEL_RANGES: dict[str, str] = {
    "detector.num_heads": COUNT_RANGE,
    "detector.score_threshold": "[0, 1]", "detector.nms_threshold": "[0, 1]",
    "detector.min_humans": "[0, 2147483648)", "detector.max_humans": COUNT_RANGE,
    "detector.min_objects": "[0, 2147483648)", "detector.max_objects": COUNT_RANGE,
    "detector.random_seed": SEED_RANGE, "clip.random_seed": SEED_RANGE,
    "clip.image_size": CLIP_SIZE_RANGE,
    "head.interactor_layers": COUNT_RANGE, "head.interactor_heads": COUNT_RANGE,
    "head.interactor_ffn": COUNT_RANGE, "head.spatial_dim": COUNT_RANGE,
    "head.decoder_dim": COUNT_RANGE, "head.decoder_layers": "[0, 2147483648)",
    "head.decoder_heads": COUNT_RANGE, "head.decoder_ffn": COUNT_RANGE,
    "head.dropout": "[0, 1)", "head.prefix_length": "[0, 1024)",
    "head.conjunction_length": "[0, 1024)",
    "head.temperature": "(0, inf)",
    "head.logit_scale_init": "(0, inf)", "head.logit_bias_init": "(-inf, inf)",
    "head.alpha": "[0, 1]", "head.lambda_train": "[0, inf)", "head.lambda_test": "[0, inf)",
    "loss.focal_alpha": "[0, 1]", "loss.focal_gamma": "[0, inf)",
    "loss.global_weight": "[0, inf)", "loss.match_iou": "(0, 1]",
}
"""The range of every numeric setting of :class:`ModelConfig` (interval notation)."""

TRAINING_FREE_MODES = ("crop", "dense")
POOLINGS = ("mean", "roi_align")
"""The ``dense_pooling`` choices of :class:`TrainingFreeConfig`."""
TEMPLATE_FIELDS = ("sentence", "action", "verb", "object")
"""The fields a prompt template of :class:`TrainingFreeConfig` may use."""

TRAINING_FREE_RANGES: dict[str, str] = {
    **{key: value for key, value in MODEL_RANGES.items()
       if key.startswith(("detector.", "clip."))},
    "margin": "[0, inf)", "temperature": "(0, inf)", "detector_power": "[0, inf)",
    "crop_batch_size": COUNT_RANGE,
}
"""The range of every numeric setting of :class:`TrainingFreeConfig`."""


def check_ranges(config: Any, ranges: dict[str, str], where: str) -> None:
    """Raise :class:`InputError` naming the first setting of ``config`` (``where.key``, or
    ``key`` when ``where`` is empty) outside its range in ``ranges`` (``"key": "[lo, hi)"``,
    ``inf`` allowed); NaN is in no range, infinity only in one that says so. ``None`` (an
    optional setting left unset) is not checked; every item of a list is."""
    data = to_dict(config)
    for key, interval in ranges.items():
        value: Any = data
        for part in key.split("."):
            value = value[part]
        name = f"{where}.{key}" if where else key
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None and not _within(item, interval):
                shown = f"{value!r} holds {item!r}, which" if item is not value else \
                    f"{item!r}"
                raise InputError(f"{name}={shown} is out of range: it must be in {interval}")


def _within(value: float, interval: str) -> bool:
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below


def check_training_free_config(config: TrainingFreeConfig, where: str = "") -> None:
    """Check every setting of a training-free config (:data:`TRAINING_FREE_RANGES`, the
    mode, the pooling, the templates), naming the first bad one."""
    check_ranges(config, TRAINING_FREE_RANGES, where)
    prefix = f"{where}." if where else ""
    if config.mode not in TRAINING_FREE_MODES:
        raise InputError(f"{prefix}mode={config.mode!r}: choose from "
                         f"{', '.join(TRAINING_FREE_MODES)}")
    if config.dense_pooling not in POOLINGS:
        raise InputError(f"{prefix}dense_pooling={config.dense_pooling!r}: choose from "
                         f"{', '.join(POOLINGS)}")
    if not config.templates:
        raise InputError(f"{prefix}templates: at least one prompt template is needed")
    for template in config.templates:
        try:
            template.format(**dict.fromkeys(TEMPLATE_FIELDS, ""))
        except (KeyError, IndexError, ValueError) as error:
            raise InputError(f"{prefix}templates: {template!r}: {error!r}; the fields are "
                             f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}") from None
    if config.detector.use_gt_boxes:
        raise InputError(f"{prefix}detector.use_gt_boxes: the training-free model scores the "
                         f"detector's proposals (it never sees the annotations)")
    check_detector_counts(config.detector, f"{prefix}detector")


def check_detector_counts(detector: DetectorConfig, where: str) -> None:
    """The detector keeps at least ``min_*`` and at most ``max_*`` humans and objects."""
    for kind in ("humans", "objects"):
        low, high = getattr(detector, f"min_{kind}"), getattr(detector, f"max_{kind}")
        if low > high:
            raise InputError(f"{where}.min_{kind}={low} must be at most "
                             f"{where}.max_{kind}={high}")


def check_model_config(config: ModelConfig, where: str = "model") -> None:
    """Check every numeric setting of a model config (:data:`MODEL_RANGES`) and the ones
    that depend on each other, naming the first bad one (``model.head.dropout``)."""
    check_ranges(config, MODEL_RANGES, where)
    head = config.head
    if head.logits not in LOGIT_FORMS:
        raise InputError(f"{where}.head.logits={head.logits!r}: choose from "
                         f"{', '.join(LOGIT_FORMS)}")
    if head.decoder_dim % head.decoder_heads:
        raise InputError(f"{where}.head.decoder_heads={head.decoder_heads} must divide "
                         f"{where}.head.decoder_dim={head.decoder_dim}")
    check_detector_counts(config.detector, f"{where}.detector")

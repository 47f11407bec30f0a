"""The options of detection, and the one rule that checks each of them.

:class:`DetectOptions` is what ``clip4hoi detect`` is asked to do; the Python API and the
demo take the same options as keyword arguments. Every value is checked by
:func:`check_option` against its rule in :data:`RULES` — the only place where the range
of an option is written — before anything is loaded. A value out of range raises
:class:`~clip4hoi.errors.OptionError` naming the option (``top_k``; the command line says
``--top-k``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clip4hoi.errors import OptionError

if TYPE_CHECKING:
    from clip4hoi.timeline import TimelineSettings
    from clip4hoi.tracking import TrackerSettings

MODES = ("auto", "trained", "crop", "dense")
"""``auto``: ``trained`` with a checkpoint, else ``dense`` on a CPU and ``crop`` on a GPU
(:func:`clip4hoi.engine.backend.resolve_mode`)."""


PRECISIONS = ("auto", "fp32", "bf16")
"""``auto``: bf16 where the hardware runs it natively (a GPU of compute capability 8 or
more, a CPU with AMX, AVX512-BF16 or Arm BF16), else fp32
(:func:`clip4hoi.models.precision.resolve_precision`)."""


def _integer(low: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) \
        and value >= low


def _number(low: float = -math.inf, high: float = math.inf) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and low <= value <= high


def _at_most(test: Callable[[Any], bool], high: int) -> Callable[[Any], bool]:
    return lambda value: test(value) and value <= high


def _cores() -> int:
    """The CPU cores of this machine."""
    return os.cpu_count() or 1


MAX_EVERY = 10**9
"""The largest ``every`` (a frame count: one frame in 10⁹ is one every 1.1 years at 30
frames/s)."""
MAX_FPS = 1000.0
"""The largest ``fps`` (a higher rate than a video's own takes every frame anyway)."""
MIN_SIDE, MAX_SIDE = 32, 4096
"""The range of ``test_scale`` and ``max_size`` (pixels): below 32 pixels the detector's
stride-32 feature map has not one whole cell; above 4096 its encoder's attention over
(4096 / 32)² = 16384 tokens already takes 8.6 GB per layer, and twice the side takes 16
times that (137 GB, more than any one GPU holds)."""
_SIDES = f"must be an integer from {MIN_SIDE} to {MAX_SIDE} (pixels)"
MAX_BATCH = 1024
"""The largest ``batch_size`` (1024 pictures of 800×1333 pixels are 13 GB of input)."""
MAX_WORKERS = 256
"""The most decoding ``workers`` (as ``data.num_workers`` of a training config)."""
MAX_PORT = 65535


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "top_k": (_integer(0), "must be an integer >= 0 (0 keeps every detection)"),
    "min_score": (_number(), "must be a finite number"),
    "draw": (_integer(0), "must be an integer >= 0 (0 draws no pair)"),
    "draw_score": (_number(), "must be a finite number"),
    "batch_size": (_at_most(_integer(0), MAX_BATCH), f"must be an integer from 1 to "
                   f"{MAX_BATCH} (0: 4 on a GPU, 1 on a CPU)"),
    "workers": (_at_most(_integer(-1), MAX_WORKERS), f"must be an integer from 0 to "
                f"{MAX_WORKERS} (-1: 1 on a CPU, up to 4 on a GPU)"),
    "every": (lambda value: _integer(1)(value) and value <= MAX_EVERY,
              f"must be an integer from 1 to {MAX_EVERY}"),
    "fps": (_number(0.0, MAX_FPS), f"must be a number from 0 to {MAX_FPS:g} (frames per "
            f"second; 0: use {{every}})"),
    "test_scale": (_at_most(_integer(MIN_SIDE), MAX_SIDE), _SIDES),
    "max_size": (_at_most(_integer(MIN_SIDE), MAX_SIDE), _SIDES),
    "mode": (lambda value: value in MODES, f"choose from {', '.join(MODES)}"),
    "precision": (lambda value: value in PRECISIONS, f"choose from {', '.join(PRECISIONS)} "
                  f"(auto: bf16 where the hardware runs it natively, else fp32)"),
    "threads": (lambda value: _integer(0)(value) and value <= _cores(),
                "must be an integer from 0 to the cores of this machine (CORES here; 0: the "
                "idle cores of this process)"),
    # videos: the timeline (clip4hoi.timeline) and the tracker (clip4hoi.tracking)
    "on_score": (_number(0.0, 1.0), "must be a number from 0 to 1"),
    "off_score": (_number(0.0, 1.0), "must be a number from 0 to 1 (at most {on_score})"),
    "max_gap": (_number(0.0), "must be a number of seconds >= 0"),
    "min_length": (_number(0.0), "must be a number of seconds >= 0"),
    "lost_seconds": (_number(0.0, 3600.0), "must be a number of seconds from 0 to 3600"),
    "track_buffer": (_number(0.0, 10.0), "must be a fraction of the box size from 0 to 10"),
    # the demo's server
    "port": (lambda value: _integer(1)(value) and value <= MAX_PORT,
             f"must be a port number from 1 to {MAX_PORT}"),
}
"""Per option: the test its value must pass and what to say when it does not."""


def check_option(name: str, value: Any) -> Any:
    """``value`` if it passes the rule of option ``name``, else :class:`OptionError`."""
    test, problem = RULES[name]
    if not test(value):
        raise OptionError(name, repr(value) if isinstance(value, str) else value,
                          problem.replace("CORES", str(_cores())))
    return value


def check_checkpoint(checkpoint: str | None) -> None:
    """:class:`OptionError` when ``checkpoint`` names a local file that does not exist (an
    ``hf://`` one is fetched when the model is loaded): before anything is loaded."""
    if checkpoint and not checkpoint.startswith("hf://") and not Path(checkpoint).is_file():
        raise OptionError("checkpoint", checkpoint, "no such file")


MODE_KEYS = ("mode", "training_free.mode")
"""Override keys that set the training-free mode (``--set mode=dense``)."""


def check_overrides(mode: str, checkpoint: object, overrides: Sequence[str]) -> None:
    """Apply the ``KEY=VALUE`` ``overrides`` of a detector of ``mode`` to the config they
    change and check it — its ranges (:data:`clip4hoi.config.TRAINING_FREE_RANGES`,
    ``MODEL_RANGES``), choices and types — before anything is loaded, naming the setting
    (:class:`~clip4hoi.errors.InputError`): the training-free scorer's
    :class:`~clip4hoi.config.TrainingFreeConfig`, or, in the ``trained`` mode without a
    checkpoint, the all-random :class:`~clip4hoi.config.ModelConfig`. A checkpoint's
    overrides are checked with its stored config when it is read, before the model is
    built."""
    from clip4hoi.config import (
        ModelConfig,
        TrainingFreeConfig,
        apply_overrides,
        check_model_config,
        check_training_free_config,
    )

    chosen = any(item.partition("=")[0].strip() in MODE_KEYS for item in overrides)
    if mode == "trained" or (mode == "auto" and checkpoint and not chosen):
        if not checkpoint:
            check_model_config(apply_overrides(
                ModelConfig(), [item.removeprefix("model.") for item in overrides]))
        return
    config = TrainingFreeConfig(mode="dense" if mode == "auto" else mode)
    check_training_free_config(apply_overrides(
        config, [item.removeprefix("training_free.") for item in overrides]))


@dataclass
class DetectOptions:
    """What ``clip4hoi detect`` is asked to do (the command line's flags, by field name)."""

    inputs: list[str]
    out: str = "detections"
    checkpoint: str | None = None
    mode: str = "auto"
    classes: str | None = None
    boxes: str | None = None
    random_weights: bool = False
    device: str = "auto"
    precision: str = "auto"
    onnx: str | None = None
    batch_size: int = 0
    workers: int = -1
    threads: int = 0
    overwrite: bool = False
    top_k: int = 100
    min_score: float = 0.0
    draw: int = 5
    draw_score: float = 0.0
    no_draw: bool = False
    every: int = 1
    fps: float = 0.0
    test_scale: int = 800
    max_size: int = 1333
    on_score: float = 0.3
    off_score: float = 0.15
    max_gap: float = 1.0
    min_length: float = 0.5
    lost_seconds: float = 2.0
    track_buffer: float = 0.3
    overrides: list[str] = field(default_factory=list)

    def check(self) -> DetectOptions:
        """Every option against its rule, before anything is loaded; returns itself."""
        for option in fields(self):
            if option.name in RULES:
                check_option(option.name, getattr(self, option.name))
        if self.onnx is not None:
            for name in ("checkpoint", "random_weights"):
                if getattr(self, name):
                    raise OptionError(name, None, "the ONNX export given by {onnx} holds its "
                                      "own networks and head: drop this option")
            if self.precision == "bf16":
                raise OptionError("precision", "bf16", "the ONNX graphs of {onnx} run in fp32 "
                                  "(ONNX Runtime); use the PyTorch path for bf16")
        else:
            check_overrides(self.mode, self.checkpoint, self.overrides)
        if self.max_size <= self.test_scale:
            raise OptionError("test_scale", self.test_scale,
                              f"must be below {{max_size}} {self.max_size}")
        self.timeline_settings().check()
        return self

    def timeline_settings(self) -> TimelineSettings:
        """The :class:`~clip4hoi.timeline.TimelineSettings` of these options."""
        from clip4hoi.timeline import TimelineSettings

        return TimelineSettings(self.on_score, self.off_score, self.max_gap, self.min_length)

    def tracker_settings(self) -> TrackerSettings:
        """The :class:`~clip4hoi.tracking.TrackerSettings` of these options."""
        from clip4hoi.tracking import TrackerSettings

        return TrackerSettings(self.lost_seconds, self.track_buffer)

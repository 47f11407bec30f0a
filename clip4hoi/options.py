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
from collections.abc import Callable
from dataclasses import dataclass, field, fields
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


MAX_EVERY = 10**9
"""The largest ``every`` (a frame count: one frame in 10⁹ is one every 1.1 years at 30
frames/s)."""
MAX_FPS = 1000.0
"""The largest ``fps`` (a higher rate than a video's own takes every frame anyway)."""


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "top_k": (_integer(0), "must be an integer >= 0 (0 keeps every detection)"),
    "min_score": (_number(), "must be a finite number"),
    "draw": (_integer(0), "must be an integer >= 0 (0 draws no pair)"),
    "draw_score": (_number(), "must be a finite number"),
    "batch_size": (_integer(0), "must be an integer >= 1 (0: 4 on a GPU, 1 on a CPU)"),
    "workers": (_integer(-1), "must be an integer >= 0 (-1: 1 on a CPU, up to 4 on a GPU)"),
    "every": (lambda value: _integer(1)(value) and value <= MAX_EVERY,
              f"must be an integer from 1 to {MAX_EVERY}"),
    "fps": (_number(0.0, MAX_FPS), f"must be a number from 0 to {MAX_FPS:g} (frames per "
            f"second; 0: use {{every}})"),
    "test_scale": (_integer(1), "must be an integer >= 1"),
    "max_size": (_integer(1), "must be an integer >= 1"),
    "mode": (lambda value: value in MODES, f"choose from {', '.join(MODES)}"),
    "precision": (lambda value: value in PRECISIONS, f"choose from {', '.join(PRECISIONS)} "
                  f"(auto: bf16 where the hardware runs it natively, else fp32)"),
    "threads": (_integer(0), "must be an integer >= 0 (0: the idle cores of this process)"),
    # videos: the timeline (clip4hoi.timeline) and the tracker (clip4hoi.tracking)
    "on_score": (_number(0.0, 1.0), "must be a number from 0 to 1"),
    "off_score": (_number(0.0, 1.0), "must be a number from 0 to 1 (at most {on_score})"),
    "max_gap": (_number(0.0), "must be a number of seconds >= 0"),
    "min_length": (_number(0.0), "must be a number of seconds >= 0"),
    "lost_seconds": (_number(0.0, 3600.0), "must be a number of seconds from 0 to 3600"),
    "track_buffer": (_number(0.0, 10.0), "must be a fraction of the box size from 0 to 10"),
}
"""Per option: the test its value must pass and what to say when it does not."""


def check_option(name: str, value: Any) -> Any:
    """``value`` if it passes the rule of option ``name``, else :class:`OptionError`."""
    test, problem = RULES[name]
    if not test(value):
        raise OptionError(name, repr(value) if isinstance(value, str) else value, problem)
    return value


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

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
from typing import Any

from clip4hoi.errors import OptionError

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


def _number(low: float = -math.inf) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and value >= low


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "top_k": (_integer(0), "must be an integer >= 0 (0 keeps every detection)"),
    "min_score": (_number(), "must be a finite number"),
    "draw": (_integer(0), "must be an integer >= 0 (0 draws no pair)"),
    "draw_score": (_number(), "must be a finite number"),
    "batch_size": (_integer(0), "must be an integer >= 1 (0: 4 on a GPU, 1 on a CPU)"),
    "workers": (_integer(-1), "must be an integer >= 0 (-1: 1 on a CPU, up to 4 on a GPU)"),
    "every": (_integer(1), "must be an integer >= 1"),
    "fps": (_number(0.0), "must be a number >= 0 (0: use {every})"),
    "test_scale": (_integer(1), "must be an integer >= 1"),
    "max_size": (_integer(1), "must be an integer >= 1"),
    "mode": (lambda value: value in MODES, f"choose from {', '.join(MODES)}"),
    "precision": (lambda value: value in PRECISIONS, f"choose from {', '.join(PRECISIONS)} "
                  f"(auto: bf16 where the hardware runs it natively, else fp32)"),
    "threads": (_integer(0), "must be an integer >= 0 (0: the idle cores of this process)"),
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
        return self

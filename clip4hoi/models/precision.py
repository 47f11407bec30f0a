"""Numerical precision of the box path under mixed precision.

Box coordinates need fp32: bf16 keeps 8 significant bits, so a coordinate of 1066 pixels
becomes 1064 and a 20-pixel box loses a tenth of its width. DETR's class and box heads, the
proposal selection, the box encodings and every box computation therefore run inside
:func:`full_precision`, which turns autocast off for the tensors' device and leaves the
rest of the network (backbones, transformers) to autocast. :func:`amp_dtype` picks the
autocast type of a ``train.amp`` setting for a device; :func:`resolve_precision` the type
of inference's ``--precision auto|fp32|bf16`` (bf16 where the hardware runs it natively).
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from clip4hoi.errors import worded
from clip4hoi.options import check_option  # the option's rule (torch-free, checked early)

# CPU features with native bf16 arithmetic: x86 AMX and AVX512-BF16 (/proc/cpuinfo
# names), Arm's BF16 extension (Neoverse V1/V2, Graviton 3/4).
_CPU_BF16_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16", "bf16": "Arm BF16"}

_AUTOCAST_DEVICES = ("cuda", "cpu", "xpu", "mps")


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """A context in which autocast is off on ``device`` (a no-op where it is not on)."""
    kind = torch.device(device).type
    if kind in _AUTOCAST_DEVICES and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of ``train.amp`` on ``device`` (None: no autocast). ``auto`` is
    bf16 on GPUs of compute capability 8 or more (A100, H100, RTX 30xx+), fp16 (with a
    ``GradScaler`` in training) on older ones (V100, T4: no bf16 units), off on the CPU."""
    if mode == "off":
        return None
    if mode in ("bf16", "fp16"):
        return torch.bfloat16 if mode == "bf16" else torch.float16
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device`` (disabled when ``dtype`` is None)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def cpu_bf16_feature(cpuinfo: str | None = None) -> str | None:
    """The CPU feature that runs bf16 natively here (``"AMX"``, ``"AVX512-BF16"``,
    ``"Arm BF16"``), or None. torch's own probes (``torch.cpu._is_amx_tile_supported``,
    ``_is_avx512_bf16_supported``) first — ``torch.backends.cpu.get_cpu_capability()``
    names only the vector width (``AVX512``), not bf16 — then the flags of
    ``/proc/cpuinfo`` (``cpuinfo``: its text, for tests)."""
    if cpuinfo is None:
        probes = (("_is_amx_tile_supported", "AMX"),
                  ("_is_avx512_bf16_supported", "AVX512-BF16"))
        for probe, name in probes:
            check = getattr(torch.cpu, probe, None)
            if check is not None and check():
                return name
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86, Arm
            flags.update(value.split())
    return next((name for flag, name in _CPU_BF16_FLAGS.items() if flag in flags), None)


def resolve_precision(mode: str, device: torch.device | str) -> tuple[torch.dtype, str]:
    """The compute type of inference's ``--precision`` on ``device`` and why, for the run's
    first line: ``(torch.bfloat16, "bf16: CPU has AVX512-BF16")``, ``(torch.float32,
    "fp32: CUDA capability 7.5 < 8")``, ``(torch.float32, "fp32: {precision} fp32")`` (the
    option named as ``{precision}``: :func:`~clip4hoi.errors.worded`). ``auto`` is bf16
    where the hardware runs it natively — a GPU of compute capability 8 or more, a CPU
    with AMX, AVX512-BF16 or Arm BF16 — and fp32 elsewhere; ``bf16`` is bf16 anyway
    (emulated, slower, on other CPUs).

    bf16 means autocast around the frozen networks and the head (:func:`autocast`); the box
    heads, proposals, box encodings and score fusion stay fp32 (:func:`full_precision`).
    Raises :class:`~clip4hoi.errors.OptionError` (option ``precision``) for another
    ``mode``."""
    check_option("precision", mode)
    device = torch.device(device)
    if mode == "fp32":
        return torch.float32, "fp32: {precision} fp32"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        native = major >= 8
        found = f"CUDA capability {major}.{minor} {'>=' if native else '<'} 8"
    elif device.type == "cpu":
        feature = cpu_bf16_feature()
        native = feature is not None
        found = (f"CPU has {feature}" if native else
                 f"CPU ({platform.machine()}) has no AMX, AVX512-BF16 or Arm BF16")
    else:
        native, found = False, f"no bf16 autocast on {device.type}"
    if mode == "bf16":
        return torch.bfloat16, "bf16: {precision} bf16" + (
            "" if native else f" ({found}: emulated, likely slower than fp32)")
    return (torch.bfloat16, f"bf16: {found}") if native else (torch.float32, f"fp32: {found}")


def describe_precision(reason: str, asked: str, label: Callable[[str], str] = str) -> str:
    """A :func:`resolve_precision` reason for a run's first line: ``precision fp32 (auto:
    CPU (x86_64) has no AMX, AVX512-BF16 or Arm BF16)``; ``asked``: the option's value;
    ``label``: how the line calls the option (:func:`~clip4hoi.errors.worded`)."""
    dtype, _, why = worded(reason, label).partition(": ")
    return f"precision {dtype} ({'auto: ' if asked == 'auto' else ''}{why})"

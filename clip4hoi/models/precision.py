"""Numerical precision of the box path under mixed precision.

Box coordinates need fp32: bf16 keeps 8 significant bits, so a coordinate of 1066 pixels
becomes 1064 and a 20-pixel box loses a tenth of its width. DETR's class and box heads, the
proposal selection, the box encodings and every box computation therefore run inside
:func:`full_precision`, which turns autocast off for the tensors' device and leaves the
rest of the network (backbones, transformers) to autocast. :func:`amp_dtype` picks the
autocast type of a ``train.amp`` setting for a device.
"""

from __future__ import annotations

import contextlib

import torch

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

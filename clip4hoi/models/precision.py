"""Numerical precision of the box path under mixed precision.

Box coordinates need fp32: bf16 keeps 8 significant bits, so a coordinate of 1066 pixels
becomes 1064 and a 20-pixel box loses a tenth of its width. DETR's class and box heads, the
proposal selection, the box encodings and every box computation therefore run inside
:func:`full_precision`, which turns autocast off for the tensors' device and leaves the
rest of the network (backbones, transformers) to autocast.
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

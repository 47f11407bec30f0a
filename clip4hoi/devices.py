"""Checking a device setting (``--device``, ``train.device``) before any model is built."""

from __future__ import annotations

import torch

from clip4hoi.errors import EnvironmentFault, InputError


def parse_device(spec: str, what: str = "{device}", local_rank: int = 0) -> torch.device:
    """The torch device of ``spec``: ``auto`` (this process's GPU when there is one, else the
    CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises :class:`InputError` for a name torch does not know and :class:`EnvironmentFault`
    (exit 4) for a device this machine does not have; both name ``what``: the option
    ``{device}`` (:func:`~clip4hoi.errors.worded`) or a config key (``train.device``).
    """
    name = str(spec).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"{what}={spec!r}: not a device; use cpu, cuda, cuda:N or auto"
                         ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise EnvironmentFault(f"{what}={spec}: no CUDA GPU is available on this "
                                   f"machine; use {what.rstrip('=')}=cpu")
        index = local_rank if device.index is None else device.index
        if index >= count:
            raise EnvironmentFault(f"{what}={spec}: this machine has {count} CUDA GPU(s) "
                                   f"(cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise EnvironmentFault(f"{what}={spec}: Apple MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"{what}={spec!r}: unsupported device; use cpu, cuda, cuda:N or auto")
    return device

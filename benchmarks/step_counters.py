"""Counting what a training step asks of a GPU, on any device: host syncs and
kernel-launching ops (a ``TorchDispatchMode``), and FLOPs by part (``FlopCounterMode``).

A *host sync* is an op that makes the host wait for the device: reading a value
(``item``, ``int``, ``bool``, ``tolist``) or an op whose output shape depends on the data
(``nonzero``, boolean-mask indexing, ``unique``, NMS, ``repeat_interleave`` without
``output_size``, ...). On a CPU they cost nothing, so they are counted by name: the same
ops sync on a GPU. A *kernel-launching op* is any op that is not a view or an allocation.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_DATA_DEPENDENT = {
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
    aten.argwhere.default, aten.equal.default, aten.is_nonzero.default,
    aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
    aten.unique_dim_consecutive.default,
}
_NO_KERNEL = {aten.empty.memory_format, aten.empty_like.default, aten.empty_strided.default,
              aten.detach.default, aten.lift_fresh.default, aten.alias.default}


def _is_sync(func: Any, args: tuple, kwargs: dict) -> bool:
    if func in _DATA_DEPENDENT:
        return True
    name = str(func)
    if name.startswith("torchvision.nms"):
        return True
    if func is aten.repeat_interleave.Tensor or func is aten.repeat_interleave.self_Tensor:
        return kwargs.get("output_size") is None and (len(args) < 4 or args[-1] is None)
    if func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default,
                aten._index_put_impl_.default):
        indices = args[1] if len(args) > 1 else []
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
    return False


class StepCounter(TorchDispatchMode):
    """Counts host syncs (by op) and kernel-launching ops of everything run inside it,
    autograd's backward included. ``Tensor.tolist`` does not dispatch: it is counted
    by wrapping it while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: Counter[str] = Counter()
        self.launches = 0
        self._host: set[int] = set()

    def mark_host(self, tensors: Any) -> None:
        """Tensors that live on the host in a GPU run (the loader's targets): reading them
        is no sync. (On a CPU, moving them "to the device" returns them unchanged.)"""
        if isinstance(tensors, torch.Tensor):
            self._host.add(tensors.untyped_storage().data_ptr())
        elif isinstance(tensors, dict):
            for value in tensors.values():
                self.mark_host(value)
        elif isinstance(tensors, list | tuple):
            for value in tensors:
                self.mark_host(value)

    def _on_host(self, args: tuple) -> bool:
        first = args[0] if args else None
        return isinstance(first, torch.Tensor) and \
            first.untyped_storage().data_ptr() in self._host

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if _is_sync(func, args, kwargs) and not self._on_host(args):
            self.syncs[str(func).split(".")[1] if "." in str(func) else str(func)] += 1
        if not func.is_view and func not in _NO_KERNEL:
            self.launches += 1
        return func(*args, **kwargs)

    def __enter__(self) -> StepCounter:
        self._tolist = torch.Tensor.tolist
        counter = self

        def tolist(tensor: torch.Tensor) -> Any:
            if not counter._on_host((tensor,)):
                counter.syncs["tolist"] += 1
            return counter._tolist(tensor)

        torch.Tensor.tolist = tolist  # type: ignore[method-assign]
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        torch.Tensor.tolist = self._tolist  # type: ignore[method-assign]
        super().__exit__(*exc)

    @property
    def total_syncs(self) -> int:
        return sum(self.syncs.values())

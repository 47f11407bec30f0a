"""CLIP4HOI: zero-shot human–object interaction detection with a frozen DETR and CLIP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["HOIDetector", "__version__"]

if TYPE_CHECKING:
    from clip4hoi.api import HOIDetector


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `clip4hoi --help` does not load torch models.
    if name == "HOIDetector":
        from clip4hoi.api import HOIDetector

        return HOIDetector
    raise AttributeError(f"module 'clip4hoi' has no attribute {name!r}")

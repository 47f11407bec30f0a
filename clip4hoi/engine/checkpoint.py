"""Checkpoint files: the head's weights and config, and the training state to resume.

A head checkpoint (:func:`save_checkpoint`, :func:`read_checkpoint`,
:func:`load_checkpoint`) is one safetensors file: the trainable head's weights, with the
model config as JSON in its metadata (format :data:`HEAD_FORMAT`); the frozen DETR and
CLIP are named by the config, not stored. It is what ``detect``, ``test``, the API and the
Hub read.

A training checkpoint at optimiser step ``s`` is two files in ``OUTPUT_DIR/checkpoints/``:

* ``step_<s>.safetensors`` — the head checkpoint, so it works as is with ``clip4hoi
  detect --checkpoint`` and ``clip4hoi test --checkpoint``;
* ``step_<s>.state.pt`` — the training state: optimiser, schedule, progress (epoch,
  batches of the epoch done, step), best metric so far and the RNG states of every rank,
  as plain tensors and lists readable with ``torch.load(..., weights_only=True)``.

Both are written atomically (:func:`clip4hoi.fileio.write_atomic`), the state last: a
checkpoint counts only once its state file exists. The last ``keep`` checkpoints are
kept, and ``best.safetensors`` — the model with the best evaluation so far — apart.
"""

from __future__ import annotations

import io
import json
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors
from torch import Tensor

from clip4hoi.config import ModelConfig, apply_overrides, stored_model_config, to_dict
from clip4hoi.errors import InputError, MissingFileError
from clip4hoi.fileio import write_atomic
from clip4hoi.models.model import CLIP4HOI, build_model, head_state_dict

HEAD_FORMAT = "clip4hoi-head/1"

STATE_SUFFIX = ".state.pt"
WEIGHTS_SUFFIX = ".safetensors"
BEST = "best.safetensors"
_STEP_FILE = re.compile(r"step_(\d+)\.state\.pt$")


# ------------------------------------------------------------------ head checkpoints


def save_checkpoint(model: CLIP4HOI, path: str | Path, extra: dict[str, str] | None = None
                    ) -> None:
    """Write the head's weights and the model config (JSON, in the safetensors metadata)
    atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": HEAD_FORMAT, "config": json.dumps(to_dict(model.config)),
                **(extra or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in head_state_dict(model).items()}
    write_atomic(path, save_safetensors(tensors, metadata=metadata))


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, Tensor], dict[str, str]]:
    """Config, head weights and metadata of a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types
        raise InputError(f"checkpoint {path} is not a safetensors file ({error}); CLIP4HOI "
                         f"checkpoints are written by clip4hoi train") from error
    if metadata.get("format") != HEAD_FORMAT:
        raise InputError(f"checkpoint {path} is not a CLIP4HOI head checkpoint (format "
                         f"{metadata.get('format')!r}, expected {HEAD_FORMAT!r})")
    try:
        stored = json.loads(metadata["config"])
    except KeyError:
        raise InputError(f"checkpoint {path}: its metadata has no model 'config'; it was not "
                         f"written by clip4hoi train") from None
    except (TypeError, ValueError) as error:
        raise InputError(f"checkpoint {path}: its model 'config' metadata is not valid JSON "
                         f"({error})") from None
    if not isinstance(stored, dict):
        raise InputError(f"checkpoint {path}: its model 'config' metadata is "
                         f"{type(stored).__name__}, expected a mapping")
    config = stored_model_config(stored, where=f"{path} config")
    check_finite(tensors, f"checkpoint {path}")   # before minutes of building the model
    return config, tensors, metadata


def load_checkpoint(path: str | Path, overrides: list[str] | None = None,
                    download: bool = True) -> CLIP4HOI:
    """Rebuild a model from a checkpoint (``overrides`` like ``detector.weights=FILE``)."""
    config, tensors, _ = read_checkpoint(path)
    model = build_model(apply_overrides(config, overrides or []), download)
    load_head(model, tensors, source=str(path))
    return model


def load_head(model: CLIP4HOI, tensors: dict[str, Tensor], source: str) -> None:
    """Load head weights strictly (the frozen parts are not in ``tensors``); weights that
    are not finite are refused (:class:`~clip4hoi.errors.InputError`)."""
    expected = head_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(tensors)
                        if expected[k].shape != tensors[k].shape)
    if missing or unexpected or mismatched:
        raise InputError(f"{source} does not fit this model: missing {missing}, unexpected "
                         f"{unexpected}, shape mismatch {mismatched}")
    check_finite(tensors, source)
    model.load_state_dict(tensors, strict=False)


def check_finite(tensors: dict[str, Tensor], source: str) -> None:
    """Refuse weights that are NaN or infinite (a diverged run) with an
    :class:`~clip4hoi.errors.InputError` naming ``source``."""
    broken = sorted(k for k, v in tensors.items()
                    if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if broken:
        raise InputError(f"{source} has non-finite weights (NaN or inf) in {broken[:3]}"
                         f"{' ...' if len(broken) > 3 else ''}: the run that wrote it "
                         f"diverged; use an earlier checkpoint")


# ------------------------------------------------------------- training checkpoints


def seed_everything(seed: int) -> None:
    """Seed the python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch (CPU and CUDA) RNG states as tensors and lists."""
    version, python, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(python), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def state_path(weights: Path) -> Path:
    """The state file of a checkpoint's weights file."""
    return weights.with_name(weights.name.removesuffix(WEIGHTS_SUFFIX) + STATE_SUFFIX)


def weights_path(state: Path) -> Path:
    """The weights file of a checkpoint's state file."""
    return state.with_name(state.name.removesuffix(STATE_SUFFIX) + WEIGHTS_SUFFIX)


class CheckpointManager:
    """Writes, prunes and finds the checkpoints of one run."""

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.dir = Path(directory)
        self.keep = keep

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (their state files), oldest first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir()
                 if (m := _STEP_FILE.match(p.name)) and weights_path(p).is_file()]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """State file of the most recent complete checkpoint."""
        found = self.checkpoints()
        return found[-1] if found else None

    def save(self, model: CLIP4HOI, state: dict[str, Any], step: int) -> Path:
        """Write checkpoint ``step`` and drop the oldest beyond ``keep``. Returns the
        weights file."""
        weights = self.dir / f"step_{step:08d}{WEIGHTS_SUFFIX}"
        save_checkpoint(model, weights, extra={"step": str(step), "epoch": str(state["epoch"])})
        _atomic_torch_save(state, state_path(weights))
        for old in self.checkpoints()[:-self.keep]:
            old.unlink()
            weights_path(old).unlink(missing_ok=True)
        return weights

    def save_best(self, model: CLIP4HOI, metric: str, value: float, step: int) -> Path:
        """Write ``best.safetensors`` (its metadata names the metric, value and step)."""
        path = self.dir / BEST
        save_checkpoint(model, path, extra={"metric": metric, "value": repr(value),
                                            "step": str(step)})
        return path


def resolve_resume(resume: str | Path, output_dir: Path) -> tuple[Path, Path]:
    """``(weights, state)`` files to resume from: ``resume`` is a checkpoint's weights or
    state file, a run folder, or a checkpoints folder (then the latest one there)."""
    path = Path(resume)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        latest = CheckpointManager(folder).latest()
        if latest is None:
            raise MissingFileError(f"{{resume}}: no complete checkpoint in {folder} "
                                   f"(run {output_dir})")
        return weights_path(latest), latest
    if path.name.endswith(STATE_SUFFIX):
        weights, state = weights_path(path), path
    else:
        weights, state = path, state_path(path)
    for needed in (weights, state):
        if not needed.is_file():
            raise MissingFileError(f"{{resume}}: {needed} does not exist (a checkpoint is a "
                                   f"step_N{WEIGHTS_SUFFIX} and a step_N{STATE_SUFFIX})")
    return weights, state


STATE_KEYS = ("epoch", "batches_done", "step", "optimizer", "scheduler", "best_value", "rng",
              "world_size", "micro_batch", "seed")


def load_state(path: str | Path) -> dict[str, Any]:
    """A training state file (plain tensors and containers only: ``weights_only``, so a
    pickle that would run code is refused). Raises :class:`InputError` naming the file when
    it is corrupt or foreign (:func:`check_state` checks that it is complete)."""
    try:
        with warnings.catch_warnings():   # torch warns about the pickle protocol of foreign
            warnings.simplefilter("ignore", UserWarning)   # files: the error below says more
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as error:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else \
            type(error).__name__
        raise InputError(f"{{resume}}: training state {path} cannot be read ({reason}); it is "
                         f"corrupt or not written by clip4hoi train: resume from an earlier "
                         f"checkpoint") from error
    if not isinstance(state, dict):
        raise InputError(f"{{resume}}: training state {path} holds a {type(state).__name__}, "
                         f"not a clip4hoi train state")
    return state


def check_state(state: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`InputError` when a state lacks what resuming needs."""
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise InputError(f"{{resume}}: training state {path} lacks {missing}; it is not "
                         f"written by clip4hoi train")

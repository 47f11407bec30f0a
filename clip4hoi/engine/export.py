"""ONNX export of the frozen networks, and ONNX Runtime runners that stand in for them.

:func:`export_onnx` writes, for a :class:`~clip4hoi.models.model.CLIP4HOI` or a
:class:`~clip4hoi.models.training_free.TrainingFreeHOI` built on DETR, into one folder:

``detector.onnx``
    DETR: ``images [B, 3, H, W]`` (ImageNet-normalised, zero-padded at the bottom/right),
    ``mask [B, H, W]`` (bool, True on padding) → ``logits [B, Q, C+1]``, ``boxes [B, Q, 4]``
    (cxcywh normalised by each image's unpadded size), ``hidden [B, Q, D]``. ``B``, ``H`` and
    ``W`` are dynamic.
``clip_image.onnx``
    the CLIP image tower: ``pixels [B, 3, S, S]`` (:meth:`CLIPEncoder.preprocess`: every
    image is resized to ``S × S``, so only ``B`` is dynamic) → ``global [B, E]``,
    ``patches_<i> [B, N, W]`` after each exported block, and ``dense [B, N, E]`` (the
    training-free dense mode).
``text_embeddings.safetensors``
    ``text [K, E]``: the normalised class embeddings of the exported class set (learned
    prompts of a trained head, or the template ensemble of the training-free modes).
``head.safetensors``
    a trained model's head (its checkpoint: config and weights), run in PyTorch.
``clip4hoi_onnx.json``
    what the graphs need: the model's config (thresholds included), the class set, the
    DETR architecture, CLIP's resolution and pixel normalisation, the exported blocks, and
    whether the weights were random (a smoke test).

(Weights too large for one protobuf go to ``*.onnx.data`` beside each graph.)

The trained head (HO interactor, HOI decoder, classifier) is not exported as a graph: its
pair count depends on the detections, it is 0.4 % of the time of an image, and it runs in
PyTorch on the runners' outputs. Grounding DINO is not exported either (DETR only).

:func:`load_onnx` reads such a folder into :class:`OnnxExport`, whose :class:`OnnxDETR` and
:class:`OnnxCLIPImage` take the same inputs and give the same outputs as :class:`DETR` and
:class:`CLIPEncoder`'s image side, so a model runs on ONNX Runtime once they are swapped in
(:meth:`OnnxExport.attach`); :meth:`OnnxExport.model` builds the exported model on them
without building (or needing the weights of) any frozen PyTorch network: the
training-free scorer, or the trained head read from ``head.safetensors``
(``clip4hoi detect --onnx DIR``: :class:`~clip4hoi.engine.backend.OnnxBackend`). ONNX
Runtime, ``onnx`` and ``onnxscript`` (the exporter) are the optional ``[onnx]`` extra; CUDA
with ``onnxruntime-gpu``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from clip4hoi.data.metadata import HOIClassSet
from clip4hoi.errors import InputError, OptionError, UserError
from clip4hoi.fileio import temp_prefix, write_atomic
from clip4hoi.models.clip import ImageFeatures, resize_normalize
from clip4hoi.models.detr import pad_images, postprocess

if TYPE_CHECKING:
    from clip4hoi.models.model import CLIP4HOI
    from clip4hoi.models.training_free import TrainingFreeHOI

__all__ = ["ONNX_FORMAT", "OnnxCLIPImage", "OnnxDETR", "OnnxExport", "export_clip_image",
           "export_detector", "export_onnx", "load_onnx"]

ONNX_FORMAT = "clip4hoi-onnx/1"
MANIFEST = "clip4hoi_onnx.json"
DETECTOR_FILE = "detector.onnx"
CLIP_FILE = "clip_image.onnx"
TEXT_FILE = "text_embeddings.safetensors"
HEAD_FILE = "head.safetensors"
EXTRA = "pip install 'clip4hoi[onnx]'"


def onnxruntime() -> Any:
    """The ``onnxruntime`` module, or one line naming the extra that installs it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"ONNX Runtime is not installed: {EXTRA}") from None
    return ort


def require_exporter() -> None:
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise UserError(f"ONNX export needs {name} (torch.onnx's exporter): {EXTRA}"
                            ) from None


# ----------------------------------------------------------------------------- export


class _DETRGraph(nn.Module):
    """DETR on a padded batch, outputs as a tuple (what the exporter traces)."""

    def __init__(self, detr: nn.Module) -> None:
        super().__init__()
        self.detr = detr

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.detr((images, mask))
        return out["pred_logits"], out["pred_boxes"], out["hidden_states"]


class _CLIPImageGraph(nn.Module):
    """CLIP's image pass: global embedding, patch tokens of ``layers``, dense embeddings."""

    def __init__(self, clip: nn.Module, layers: tuple[int, ...], dense: bool) -> None:
        super().__init__()
        self.clip, self.layers, self.dense = clip, layers, dense

    def forward(self, pixels: Tensor) -> tuple[Tensor, ...]:
        out = self.clip.encode_image(pixels, layers=self.layers, dense=self.dense)
        extra = (out.dense_embeddings,) if self.dense else ()
        return (out.global_embedding, *out.patch_tokens, *extra)


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, input_names: list[str],
            output_names: list[str], dynamic_shapes: dict[str, dict[int, Any]],
            opset: int | None) -> None:
    """torch.onnx's exporter (``torch.export`` based) into ``path``, written atomically."""
    quiet = logging.getLogger("onnxscript")  # "Skipping constant folding ..." per node
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # axis renaming and deprecation chatter
            program = torch.onnx.export(module, args, dynamo=True, input_names=input_names,
                                        output_names=output_names,
                                        dynamic_shapes=dynamic_shapes, opset_version=opset,
                                        verbose=False)
    finally:
        quiet.setLevel(level)
    if _size(module) > 1.8e9:  # beyond a protobuf's 2 GB: the weights go to <name>.data
        program.save(str(path), external_data=True)
        return
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name),
                                   suffix=".tmp")   # unique: two exports never share one
    os.close(handle)
    try:
        program.save(tmp, external_data=False)
        os.replace(tmp, path)
    except BaseException:   # a full disk, Ctrl-C: no temporary file left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _size(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def export_detector(detr: nn.Module, path: Path, opset: int | None = None) -> None:
    """A :class:`DETR` as ``path`` (inputs ``images``, ``mask``; outputs ``logits``,
    ``boxes``, ``hidden``; batch and image size dynamic)."""
    device = detr.query_embed.weight.device
    # Example batch of 2 and odd sizes: a size of 1, or two equal sizes, would be fixed.
    images, mask = pad_images([torch.rand(3, 320, 416, device=device),
                               torch.rand(3, 288, 384, device=device)])
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height", min=32, max=8192)
    width = torch.export.Dim("width", min=32, max=8192)
    _export(_DETRGraph(detr), (images, mask), path, ["images", "mask"],
            ["logits", "boxes", "hidden"],
            {"images": {0: batch, 2: height, 3: width}, "mask": {0: batch, 1: height, 2: width}},
            opset)


def export_clip_image(clip: nn.Module, path: Path, layers: tuple[int, ...], dense: bool,
                      opset: int | None = None) -> None:
    """A :class:`CLIPEncoder`'s image pass as ``path``: input ``pixels [B, 3, S, S]``
    (batch dynamic), outputs ``global``, ``patches_<i>`` for the (non-negative) block
    indices ``layers`` and, with ``dense``, ``dense``."""
    device = clip.model.visual.conv1.weight.device
    pixels = torch.randn(2, 3, clip.image_size, clip.image_size, device=device)
    _export(_CLIPImageGraph(clip, layers, dense), (pixels,), path, ["pixels"],
            ["global", *(f"patches_{i}" for i in layers), *(["dense"] if dense else [])],
            {"pixels": {0: torch.export.Dim("batch", min=1, max=1024)}}, opset)


MIN_OPSET = 18
"""The oldest opset written: torch.onnx's exporter builds opset 18 graphs (its torchlib);
older ones would go through ONNX's version converter, which fails on these models."""


def check_opset(opset: int | None) -> int | None:
    """``opset`` if torch.onnx can write it (None: the exporter's default), else
    :class:`~clip4hoi.errors.OptionError` naming it — before any model is built."""
    from torch.onnx._constants import ONNX_MAX_OPSET

    if opset is not None and not MIN_OPSET <= opset <= ONNX_MAX_OPSET:
        raise OptionError("opset", opset, f"must be from {MIN_OPSET} to {ONNX_MAX_OPSET} (the "
                          f"opsets torch {torch.__version__.split('+')[0]} writes)")
    return opset


@torch.no_grad()
def export_onnx(model: nn.Module, out: str | Path, classes: HOIClassSet | None = None,
                opset: int | None = None, log: Any = None) -> Path:
    """Write ``model``'s frozen DETR and CLIP image tower as ONNX graphs, the class
    embeddings of ``classes`` (default the model's) and the manifest into the folder
    ``out`` (see the module doc). ``model``: a :class:`CLIP4HOI` (its checkpoint's head
    stays in PyTorch) or a :class:`TrainingFreeHOI` (crop or dense), with a DETR detector.
    ``log``: a stream for progress lines. Returns the manifest's path.
    """
    from clip4hoi.config import to_dict
    from clip4hoi.models.detr import DETR
    from clip4hoi.models.model import CLIP4HOI

    require_exporter()
    check_opset(opset)
    if not isinstance(model.detector, DETR):
        raise InputError("ONNX export supports the DETR detector, not "
                         f"{type(model.detector).__name__}")
    trained = isinstance(model, CLIP4HOI)
    mode = "trained" if trained else model.config.mode
    classes = classes or model.classes
    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clip = model.clip
    if trained:
        text = model.classifier.text_embeddings(clip, classes)
        layers, dense = tuple(model.config.clip.layers), False
    else:
        text = model.text_embeddings(classes)
        layers, dense = (-1,), mode == "dense"
    blocks = len(clip.model.visual.transformer.resblocks)
    layers = tuple(i + blocks if i < 0 else i for i in layers)

    start = time.perf_counter()
    detr = model.detector
    export_detector(detr, out / DETECTOR_FILE, opset)
    if log:
        print(f"clip4hoi export: {out / DETECTOR_FILE} ({time.perf_counter() - start:.0f} s)",
              file=log)
    start = time.perf_counter()
    export_clip_image(clip, out / CLIP_FILE, layers, dense, opset)
    if log:
        print(f"clip4hoi export: {out / CLIP_FILE} ({time.perf_counter() - start:.0f} s)",
              file=log)

    write_atomic(out / TEXT_FILE, save({"text": text.float().contiguous().cpu()}))
    if trained:
        from clip4hoi.engine.checkpoint import save_checkpoint

        save_checkpoint(model, out / HEAD_FILE)
    config = model.config
    manifest = {
        "format": ONNX_FORMAT, "mode": mode, "torch": torch.__version__,
        "config": to_dict(config), "classes": classes.to_json(),
        "text": TEXT_FILE, "head": HEAD_FILE if trained else None,
        "random_weights": config.detector.weights == "random" or not config.clip.pretrained,
        "detector": {"file": DETECTOR_FILE, "architecture": dict(detr.config),
                     "inputs": ["images", "mask"], "outputs": ["logits", "boxes", "hidden"]},
        "clip": {"file": CLIP_FILE, "image_size": clip.image_size,
                 "patch_size": clip.patch_size, "width": clip.width,
                 "embed_dim": clip.embed_dim, "mean": list(clip.mean), "std": list(clip.std),
                 "blocks": blocks, "layers": list(layers), "dense": dense},
    }
    path = out / MANIFEST
    write_atomic(path, json.dumps(manifest, indent=1).encode())
    return path


# ---------------------------------------------------------------------------- runners


def _session(path: Path, device: torch.device) -> Any:
    """An ONNX Runtime session on ``device`` (CUDA through ``onnxruntime-gpu``) using
    torch's intra-op thread count, so that one setting rules both runtimes."""
    ort = onnxruntime()
    if not path.is_file():
        raise InputError(f"{path}: no such file; write it with {{export_onnx}} {path.parent}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError("ONNX Runtime has no CUDA here: pip install onnxruntime-gpu "
                            "(instead of onnxruntime), or use {device} cpu")
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    return ort.InferenceSession(str(path), options, providers=providers)


class _Runner(nn.Module):
    """An ONNX Runtime session as a module without parameters: ``.to(device)`` picks the
    device whose tensors it returns (and CUDA's execution provider for a GPU)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.register_buffer("_device", torch.zeros(0), persistent=False)
        self._sessions: dict[torch.device, Any] = {}

    def train(self, mode: bool = True) -> _Runner:
        return super().train(False)

    def session(self) -> Any:
        """The ONNX Runtime session on this module's device, opened (the graph loaded and
        optimised: seconds for DETR-R50) on first use."""
        device = self._device.device
        if device not in self._sessions:
            self._sessions[device] = _session(self.path, device)
        return self._sessions[device]

    def run(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        arrays = {k: v.detach().cpu().numpy() for k, v in inputs.items()}
        device = self._device.device
        return [torch.from_numpy(a).to(device) for a in self.session().run(None, arrays)]


class OnnxDETR(_Runner):
    """``detector.onnx`` with :class:`~clip4hoi.models.detr.DETR`'s interface: called on a
    list of ImageNet-normalised ``[3, H, W]`` images (or a padded ``(tensor, mask)`` pair)
    it returns ``pred_logits``, ``pred_boxes``, ``hidden_states``; ``config`` is the DETR's
    architecture."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        super().__init__(path)
        self.config = dict(config)
        self.num_classes = config["num_classes"]
        self.hidden_dim = config["hidden_dim"]
        self.num_queries = config["num_queries"]

    @torch.no_grad()
    def forward(self, images: list[Tensor] | tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        if isinstance(images, tuple) and len(images) == 2 and images[0].dim() == 4:
            tensor, mask = images
        else:
            tensor, mask = pad_images(list(images))
        logits, boxes, hidden = self.run({"images": tensor.float(), "mask": mask.bool()})
        return {"pred_logits": logits, "pred_boxes": boxes, "hidden_states": hidden}

    postprocess = staticmethod(postprocess)


class OnnxCLIPImage(_Runner):
    """``clip_image.onnx`` with the image side of
    :class:`~clip4hoi.models.clip.CLIPEncoder`: ``preprocess``, ``encode_image`` (the
    exported blocks' patch tokens; dense embeddings if exported), ``project_tokens`` is not
    available; attributes ``image_size``, ``patch_size``, ``width``, ``embed_dim``, ``mean``,
    ``std``. It has no text side: class embeddings come from the export."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        super().__init__(path)
        self.image_size: int = info["image_size"]
        self.patch_size: int = info["patch_size"]
        self.width: int = info["width"]
        self.embed_dim: int = info["embed_dim"]
        self.mean: tuple[float, ...] = tuple(info["mean"])
        self.std: tuple[float, ...] = tuple(info["std"])
        self.blocks: int = info["blocks"]
        self.layers: tuple[int, ...] = tuple(info["layers"])
        self.dense: bool = info["dense"]
        self.register_buffer("_pixel_mean", torch.tensor(self.mean).view(3, 1, 1),
                             persistent=False)
        self.register_buffer("_pixel_std", torch.tensor(self.std).view(3, 1, 1),
                             persistent=False)

    def preprocess(self, images: list[Tensor]) -> Tensor:
        """As :meth:`CLIPEncoder.preprocess`: ``[B, 3, S, S]``."""
        return resize_normalize(images, self.image_size, self._pixel_mean, self._pixel_std)

    @torch.no_grad()
    def encode_image(self, pixels: Tensor, layers: tuple[int, ...] = (-1,), dense: bool = False
                     ) -> ImageFeatures:
        """As :meth:`CLIPEncoder.encode_image`, for the exported blocks (and dense
        embeddings if exported); ``pixels [B, 3, S, S]``."""
        keep = [i + self.blocks if i < 0 else i for i in layers]
        missing = [i for i in keep if i not in self.layers]
        if missing or (dense and not self.dense):
            raise InputError(f"{self.path}: exported with blocks {list(self.layers)} and "
                             f"dense={self.dense}; blocks {missing} / dense={dense} were asked "
                             f"for: export the model of this mode again")
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            raise InputError(f"{self.path} takes {self.image_size}×{self.image_size} pixels "
                             f"(CLIPEncoder.preprocess), got {tuple(pixels.shape[-2:])}")
        outputs = self.run({"pixels": pixels.float()})
        patches = dict(zip(self.layers, outputs[1:1 + len(self.layers)], strict=True))
        grid = (self.image_size // self.patch_size,) * 2
        return ImageFeatures(global_embedding=outputs[0],
                             patch_tokens=[patches[i] for i in keep], grid=grid,
                             dense_embeddings=outputs[-1] if dense else None)


# ------------------------------------------------------------------------------ loading


@dataclass
class OnnxExport:
    """A folder written by :func:`export_onnx`, read back (:func:`load_onnx`)."""

    directory: Path
    manifest: dict[str, Any]
    detector: OnnxDETR
    clip: OnnxCLIPImage
    classes: HOIClassSet   # the exported class set
    text: Tensor           # [K, E] its class embeddings

    @property
    def mode(self) -> str:
        """``trained``, ``crop`` or ``dense``."""
        return self.manifest["mode"]

    def text_for(self, classes: HOIClassSet) -> Tensor:
        """The exported embeddings ``[k, E]`` of ``classes``, each of which must be one of
        the exported classes (same verb and object)."""
        rows = {(v, o): k for k, (v, o) in enumerate(zip(self.classes.verbs,
                                                         self.classes.object_names,
                                                         strict=True))}
        pairs = list(zip(classes.verbs, classes.object_names, strict=True))
        missing = [f"{v} {o}" for v, o in pairs if (v, o) not in rows]
        if missing:
            raise InputError(f"{{classes}}: {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''} not among the "
                             f"{len(self.classes)} classes exported to {self.directory} "
                             f"({self.classes.name}); export again with those {{classes}}")
        return self.text[torch.tensor([rows[p] for p in pairs], dtype=torch.long)]

    def attach(self, model: nn.Module, classes: HOIClassSet | None = None) -> nn.Module:
        """Swap ``model``'s frozen DETR and CLIP image tower for the ONNX runners and give
        it the exported embeddings of ``classes`` (default: the exported set; call again
        for another subset). ``model``: the :class:`CLIP4HOI` of the exported checkpoint or
        a :class:`TrainingFreeHOI`. Returns ``model``."""
        model.detector = self.detector
        model.clip = self.clip
        return self.prime(model, classes or self.classes)

    def prime(self, model: nn.Module, classes: HOIClassSet) -> nn.Module:
        """Store the exported embeddings of ``classes`` in ``model``'s text cache."""
        from clip4hoi.engine.text_cache import remember_text

        text = self.text_for(classes)
        with torch.no_grad():
            remember_text(model, classes, text)
        return model

    @property
    def random_weights(self) -> bool:
        """Whether the exported networks had random weights (a smoke test)."""
        return bool(self.manifest.get("random_weights"))

    def model(self, overrides: list[str] | tuple[str, ...] = ()) -> nn.Module:
        """The exported model on the runners, with the exported class embeddings: the
        training-free scorer (:meth:`training_free_model`) or the trained head
        (:meth:`trained_model`). ``overrides``: ``KEY=VALUE`` items of its config that the
        graphs do not fix (thresholds, ``margin``, ``detector.use_gt_boxes``...)."""
        if self.mode == "trained":
            return self.trained_model(overrides)
        return self.training_free_model(overrides)

    def _config(self, config: Any, overrides: list[str] | tuple[str, ...]) -> Any:
        from clip4hoi.config import apply_overrides

        fixed = [item for item in overrides if item.partition("=")[0].strip().startswith(
            _FIXED_BY_GRAPHS)]
        if fixed:
            raise InputError(f"{', '.join(fixed)}: the ONNX graphs of {self.directory} fix "
                             f"the detector and CLIP; export again to change them")
        return apply_overrides(config, list(overrides))

    def training_free_model(self, overrides: list[str] | tuple[str, ...] = ()
                            ) -> TrainingFreeHOI:
        """The training-free model of a ``crop``/``dense`` export on the runners alone (no
        PyTorch network is built), with the exported class embeddings; ``overrides`` as
        for :meth:`model`."""
        from clip4hoi.config import TrainingFreeConfig, from_dict
        from clip4hoi.models.training_free import TrainingFreeHOI

        if self.mode == "trained":
            raise InputError(f"{self.directory} holds a trained model: use model() or "
                             f"trained_model()")
        config = from_dict(TrainingFreeConfig, self.manifest["config"],
                           where=f"{self.directory / MANIFEST} config")
        config = self._config(config, [o.removeprefix("training_free.") for o in overrides])
        model = TrainingFreeHOI(config, self.detector, self.clip, self.classes)
        return self.prime(model, self.classes)

    def trained_model(self, overrides: list[str] | tuple[str, ...] = ()) -> CLIP4HOI:
        """The trained model of the export: its head (``head.safetensors``) in PyTorch on
        the runners. The frozen networks are only laid out on the meta device for the
        head's shapes, never built nor loaded."""
        from clip4hoi.engine.checkpoint import load_head, read_checkpoint
        from clip4hoi.models.model import build_model, label_map

        if self.mode != "trained" or not self.manifest.get("head"):
            raise InputError(f"{self.directory} holds the training-free {self.mode} mode: "
                             f"use model() or training_free_model()")
        path = self.directory / self.manifest["head"]
        config, tensors, _ = read_checkpoint(path)
        config = self._config(config, [o.removeprefix("model.") for o in overrides])
        config.detector.weights, config.detector.architecture = "random", self.detector.config
        config.clip.pretrained = None
        with torch.device("meta"):
            model = build_model(config, download=False)
        model.detector = model.clip = None   # the layouts go; the runners take their place
        model.to_empty(device="cpu")          # the head's tensors, filled by the checkpoint
        model.detector, model.clip = self.detector, self.clip
        model.label_to_object = label_map(self.detector)
        load_head(model, tensors, source=str(path))
        return self.prime(model.eval(), self.classes)


_FIXED_BY_GRAPHS = ("clip.", "detector.weights", "detector.architecture", "detector.type",
                    "detector.dilation", "detector.num_heads", "mode")


def load_onnx(directory: str | Path) -> OnnxExport:
    """Read a folder written by :func:`export_onnx` (sessions open on first use, on the
    device the runners are moved to with ``.to``)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise OptionError("onnx", directory, f"no {MANIFEST} there; write the folder with "
                          f"{{export_onnx}} {directory}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ONNX_FORMAT:
        raise InputError(f"{path}: not a {ONNX_FORMAT} manifest")
    onnxruntime()  # the missing extra is reported now, not at the first image
    classes = HOIClassSet.from_json(manifest["classes"], source=str(path))
    text = load_file(str(directory / manifest["text"]))["text"]
    return OnnxExport(directory, manifest,
                      OnnxDETR(directory / manifest["detector"]["file"],
                               manifest["detector"]["architecture"]),
                      OnnxCLIPImage(directory / manifest["clip"]["file"], manifest["clip"]),
                      classes, text)

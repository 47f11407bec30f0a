"""On-disk cache of the frozen DETR and CLIP outputs (:class:`FrozenFeatures`).

DETR and CLIP never change during training, so for an image that is not augmented —
the test transform, or training with ``data.transform.augment: false`` — their outputs
are computed once and the head is trained on them (``CLIP4HOI.forward_features``).

Layout: ``DIR/<fingerprint>/<folder hash>/<image file name>.safetensors``, one file per
image. The fingerprint hashes everything the stored values depend on — the frozen weights
themselves, the settings of the frozen models that are not weights, the resize settings
and the storage type — so a cache made by other weights or another resolution is never
read. The folder hash names the image's folder (so two data roots with the same file names
do not share entries); each entry records the image file's path, size and modification
time — an image replaced or edited since is computed again — and the pixel size it was
computed on, checked on every read. Entries are computed one image at a time (no
padding), written atomically, and several processes may fill one cache at once — on
several nodes, only if the cache folder is on a filesystem they share (checked after
filling).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from clip4hoi.data.hicodet import HOIDataset
from clip4hoi.data.transforms import TransformConfig
from clip4hoi.engine.config import FeatureCacheConfig
from clip4hoi.engine.data import collate, inputs_to_device
from clip4hoi.engine.distributed import DistInfo, barrier, broadcast_object
from clip4hoi.errors import EnvironmentFault, InputError
from clip4hoi.fileio import sweep_temp_files, write_atomic
from clip4hoi.models.model import CLIP4HOI, FrozenFeatures
from clip4hoi.models.precision import autocast

CACHE_FORMAT = "clip4hoi-features/1"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def frozen_fingerprint(model: CLIP4HOI, transform: TransformConfig, dtype: str,
                       amp: torch.dtype | None = None) -> str:
    """Hex digest of the frozen models' weights and the settings their cached outputs
    depend on (``amp``: the autocast type they are computed under, as in training)."""
    digest = hashlib.blake2b(digest_size=16)
    settings = {"format": CACHE_FORMAT, "dtype": dtype, "images": "uint8",
                "autocast": str(amp) if amp is not None else None,
                "test_scale": transform.test_scale, "max_size": transform.max_size,
                "detector_num_heads": model.config.detector.num_heads,
                "detector_dilation": model.config.detector.dilation,
                "clip_name": model.config.clip.name, "clip_layers": model.config.clip.layers,
                "clip_image_size": model.config.clip.image_size}
    if model.open_vocabulary:  # Grounding DINO's outputs depend on the prompted objects
        settings["detector_objects"] = [model.classes.object_vocabulary[o]
                                        for o in model.classes.used_objects]
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for prefix, module in (("detector", model.detector), ("clip", model.clip)):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{prefix}.{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8)
                          .numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """The entries of one fingerprint under ``root``, one per image file.

    An entry is keyed by the image's folder and name, and records the file's size and
    modification time: an image that was replaced or edited (even with the same name and
    pixel size), or one of the same name in another data root, never reads another
    image's features.
    """

    def __init__(self, root: str | Path, fingerprint: str, dtype: str = "float32") -> None:
        if dtype not in DTYPES:
            raise InputError(f"feature cache dtype {dtype!r}: choose from {list(DTYPES)}")
        self.dir = Path(root) / fingerprint
        self.dtype = DTYPES[dtype]

    def path(self, image: str | Path) -> Path:
        """The entry file of the image file ``image``."""
        image = Path(image).absolute()
        folder = hashlib.blake2b(str(image.parent).encode(), digest_size=8).hexdigest()
        return self.dir / folder / f"{image.name}.safetensors"

    @staticmethod
    def stamp(image: str | Path) -> dict[str, str]:
        """What identifies the content of an image file: its path, size and mtime."""
        stat = Path(image).stat()
        return {"image": str(Path(image).absolute()), "bytes": str(stat.st_size),
                "mtime_ns": str(stat.st_mtime_ns)}

    def _stored_stamp(self, path: Path) -> dict[str, str] | None:
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception:  # a missing, torn or foreign file: no usable entry
            return None
        return {k: metadata.get(k, "") for k in ("image", "bytes", "mtime_ns")}

    def __contains__(self, image: str | Path) -> bool:
        """Whether ``image`` has an entry computed on its current content."""
        return self._stored_stamp(self.path(image)) == self.stamp(image)

    def store(self, image: str | Path, features: FrozenFeatures, size: tuple[int, int]
              ) -> None:
        """Write the features (batch of one) of the image file ``image``, computed on the
        transformed image of ``size`` ``(h, w)``."""
        tensors = {k: (v.to(self.dtype) if v.is_floating_point() else v).contiguous().cpu()
                   for k, v in features.tensors().items()}
        tensors["image_size"] = torch.tensor(size)
        write_atomic(self.path(image), save(tensors, metadata={"format": CACHE_FORMAT,
                                                               **self.stamp(image)}))

    def load(self, image: str | Path, size: tuple[int, int] | Tensor) -> FrozenFeatures:
        """The features of the image file ``image`` as float32; ``size`` ``(h, w)`` must be
        that of the transformed image they were computed on."""
        path = self.path(image)
        if not path.is_file():
            raise FileNotFoundError(f"feature cache {self.dir}: no entry for {image} "
                                    f"(the cache must be filled first)")
        stored_stamp = self._stored_stamp(path)   # None: unreadable, reported below
        if stored_stamp is not None and stored_stamp != self.stamp(image):
            raise InputError(f"feature cache entry {path} was computed on another version "
                             f"of {image} (the file changed since); rerun to refresh it")
        try:
            tensors = load_file(str(path))
        except Exception as error:  # safetensors' own error types: a torn file
            tensors = {}
            problem = f"unreadable: {str(error).strip() or type(error).__name__}"
        else:
            problem = entry_problem(tensors)
        if problem is not None:   # never trusted: removed, so that the next run computes it
            path.unlink(missing_ok=True)
            raise InputError(f"feature cache entry {path} of {image} is corrupt ({problem}); "
                             f"it was removed: run the training again with {{resume}} to "
                             f"compute it anew")
        stored = tuple(int(v) for v in tensors.pop("image_size"))
        if stored != tuple(int(v) for v in size):
            raise InputError(f"feature cache entry {path} was computed on a {stored} image, "
                             f"the transform now gives {tuple(int(v) for v in size)}")
        return FrozenFeatures.from_tensors(
            {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})


def entry_problem(tensors: dict[str, Tensor]) -> str | None:
    """Why a feature cache entry cannot be used, or None when it can: the tensors of
    :meth:`FrozenFeatures.tensors` for one image and its ``image_size``, of consistent
    shapes, with finite values (the detector's logits may hold -inf)."""
    needed = ("logits", "boxes", "hidden", "clip_global", "clip_patches.0", "grid",
              "image_size")
    missing = [name for name in needed if name not in tensors]
    if missing:
        return f"no {', '.join(missing)}"
    if tensors["grid"].numel() != 2 or tensors["image_size"].numel() != 2:
        return "grid and image_size must hold two values"
    patches = int(tensors["grid"].prod())
    for name, tensor in tensors.items():
        if name in ("grid", "image_size"):
            continue
        if tensor.ndim < 2 or tensor.shape[0] != 1:
            return f"{name} has shape {tuple(tensor.shape)}, expected one image"
        if name.startswith("clip_patches.") and (tensor.ndim != 3 or tensor.shape[1] != patches):
            return f"{name} has shape {tuple(tensor.shape)}, expected {patches} patches"
        if not tensor.is_floating_point():
            continue
        if name == "logits":   # -inf is a class the detector rules out (Grounding DINO)
            if bool(torch.isnan(tensor).any() or torch.isposinf(tensor).any()):
                return "NaN or +infinity in logits"
        elif not _finite(tensor):
            return f"non-finite values (NaN or infinity) in {name}"
    return None


def _finite(tensor: Tensor) -> bool:
    """Whether every value is finite. A finite float32 sum proves it (NaN and infinity
    propagate) at a tenth of the cost of ``isfinite`` on every value, which only a sum that
    overflows still needs."""
    return bool(torch.isfinite(tensor.sum(dtype=torch.float32))) or \
        bool(torch.isfinite(tensor).all())


def build_cache(config: FeatureCacheConfig, model: CLIP4HOI, transform: TransformConfig,
                amp: torch.dtype | None = None) -> FeatureCache | None:
    """The cache of ``model``'s frozen outputs under ``transform`` (computed under ``amp``
    autocast), or None when disabled."""
    if not config.enabled:
        return None
    return FeatureCache(config.dir, frozen_fingerprint(model, transform, config.dtype, amp),
                        config.dtype)


def image_path(dataset: HOIDataset, i: int) -> Path:
    """Image file of item ``i`` without loading it."""
    return dataset.image_paths[dataset.image_indices[i]]


@torch.no_grad()
def fill_cache(model: CLIP4HOI, dataset: HOIDataset, cache: FeatureCache, info: DistInfo,
               num_workers: int = 0, desc: str = "cache", amp: torch.dtype | None = None
               ) -> int:
    """Compute and store the entries of ``dataset`` that are missing (each rank a share,
    under ``amp`` autocast like training; all ranks wait for the others). Returns how many
    this rank computed. The cache folder must be on a filesystem that every rank sees
    (shared across nodes): a rank that cannot see the others' entries raises
    :class:`EnvironmentFault`."""
    # Rank 0's list: the others could see entries that rank 0 is already writing.
    missing = broadcast_object([i for i in range(len(dataset))
                                if image_path(dataset, i) not in cache])
    if info.is_main:   # the temporary files of runs killed while writing these entries
        for folder in {cache.path(image_path(dataset, i)).parent for i in missing}:
            sweep_temp_files(folder)
    share = missing[info.rank::info.world_size]
    loader = DataLoader(Subset(dataset, share), batch_size=1, num_workers=num_workers,
                        collate_fn=collate)
    for images, targets in tqdm(loader, desc=desc, unit="img", disable=not info.is_main,
                                leave=False):
        with autocast(info.device, amp):
            features = model.extract_features(inputs_to_device(images, info.device))
        cache.store(dataset.image_paths[targets[0]["index"]], features,
                    tuple(images[0].shape[-2:]))
    barrier()
    unseen = [image_path(dataset, i) for i in missing if image_path(dataset, i) not in cache]
    if unseen:
        raise EnvironmentFault(
            f"rank {info.rank}: {len(unseen)} feature cache entries written by other ranks "
            f"are not in {cache.dir} (e.g. {unseen[0]}): feature_cache.dir must be on a "
            f"filesystem shared by all nodes (or disable feature_cache)")
    return len(share)


class CachedFeatures(Dataset):
    """``dataset``'s items with the image replaced by its cached :class:`FrozenFeatures`
    and the target built from the annotations alone (:meth:`HOIDataset.target`: no image
    is decoded)."""

    def __init__(self, dataset: HOIDataset, cache: FeatureCache) -> None:
        self.dataset = dataset
        self.cache = cache

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[FrozenFeatures, dict]:
        target = self.dataset.target(i)  # type: ignore[attr-defined]
        features = self.cache.load(self.dataset.image_paths[target["index"]], target["size"])
        return features, target

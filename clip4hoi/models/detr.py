"""A compact, frozen DETR that loads the original facebookresearch/detr checkpoints unchanged.

This is the detector of CLIP4HOI (spec §2): a ResNet backbone from torchvision, a sine
positional encoding, a post-norm transformer encoder/decoder with a final decoder LayerNorm,
a class head (``C + 1`` logits, the last one is "no object") and a 3-layer box MLP. Module
names mirror the original code, so state dict keys are the same
(``backbone.0.body.layer1.0.conv1.weight``, ``transformer.encoder.layers.0.self_attn.*``,
``class_embed.*``, ``bbox_embed.layers.2.*``, ...), and the checkpoints of facebookresearch/detr
(91 classes) and of UPT's HICO-DET fine-tuning (80 classes) load with ``strict=True``.

The model is inference-only: every parameter is frozen, it stays in eval mode when a parent
module calls ``.train()``, and ``forward`` runs under ``torch.no_grad()``. Dropout layers of
the original are therefore left out (they hold no parameters).

Shapes: ``B`` images, ``Q`` queries, ``D`` hidden size, ``C`` classes, ``h x w`` the feature
map (stride 32, or 16 with ``dilation=True``), ``S = h * w``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import box_convert
from torchvision.ops.misc import FrozenBatchNorm2d

from clip4hoi.models.precision import full_precision

__all__ = [
    "DETR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CheckpointError",
    "fold_frozen_batchnorm",
    "normalize",
    "pad_images",
    "postprocess",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# (blocks per stage, bottleneck blocks) -> torchvision constructor name
_RESNETS: dict[tuple[tuple[int, int, int, int], bool], str] = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}
_BODY = "backbone.0.body."
_REQUIRED_KEYS = (
    _BODY + "conv1.weight",
    "input_proj.weight",
    "query_embed.weight",
    "class_embed.weight",
)


class CheckpointError(ValueError):
    """A checkpoint is not a DETR checkpoint, or does not match the model built for it."""


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def normalize(images: Tensor | Sequence[Tensor]) -> Tensor | list[Tensor]:
    """ImageNet-normalise float images in ``[0, 1]``.

    Takes one tensor ``[..., 3, H, W]`` or a list of ``[3, H, W]`` tensors (any sizes) and
    returns the same kind: ``(x - IMAGENET_MEAN) / IMAGENET_STD`` per channel.
    """
    if not isinstance(images, Tensor):
        return [normalize(image) for image in images]  # type: ignore[misc]
    if not images.is_floating_point():
        raise TypeError(f"normalize expects float images in [0, 1], got {images.dtype}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)
    return (images - mean[:, None, None]) / std[:, None, None]


def pad_images(images: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Pad ``[3, H, W]`` tensors of any sizes into one batch, as the original
    ``nested_tensor_from_tensor_list``: zeros at the bottom/right.

    Returns ``(tensor [B, 3, Hmax, Wmax], mask [B, Hmax, Wmax])`` with mask ``True`` on
    padding.
    """
    if len(images) == 0:
        raise ValueError("pad_images needs at least one image")
    for image in images:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected images of shape [3, H, W], got {tuple(image.shape)}")
    h_max = max(int(image.shape[1]) for image in images)
    w_max = max(int(image.shape[2]) for image in images)
    first = images[0]
    batch = first.new_zeros((len(images), 3, h_max, w_max))  # [B, 3, Hmax, Wmax]
    mask = torch.ones((len(images), h_max, w_max), dtype=torch.bool, device=first.device)
    for i, image in enumerate(images):
        _, h, w = image.shape
        batch[i, :, :h, :w].copy_(image)
        mask[i, :h, :w] = False
    return batch, mask


# --------------------------------------------------------------------------------------
# Building blocks (names as in facebookresearch/detr)
# --------------------------------------------------------------------------------------


class Backbone(nn.Module):
    """A torchvision ResNet with frozen batch norm, cut after ``layer4`` (key prefix
    ``body.``), that also downsamples the padding mask to the feature map."""

    def __init__(self, name: str, dilation: bool = False) -> None:
        super().__init__()
        if name not in _RESNETS.values():
            raise ValueError(
                f"unsupported backbone {name!r}; use one of {sorted(_RESNETS.values())}"
            )
        if dilation and name in ("resnet18", "resnet34"):
            raise ValueError(f"dilation (DC5) needs a Bottleneck ResNet (50/101/152), not {name}")
        resnet = getattr(torchvision.models, name)(
            weights=None,
            replace_stride_with_dilation=[False, False, dilation],
            norm_layer=FrozenBatchNorm2d,
        )
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        self.num_channels = 512 if name in ("resnet18", "resnet34") else 2048
        self.channels_last = False  # see DETR.prepare_for_inference

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # images [B, 3, H, W], mask [B, H, W] (True = padding)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.body(images)["0"]  # [B, C_backbone, h, w]
        rows = nearest_index(mask.shape[1], features.shape[2], mask.device)  # [h]
        cols = nearest_index(mask.shape[2], features.shape[3], mask.device)  # [w]
        return features, mask[:, rows][:, :, cols]  # [B, C_backbone, h, w], [B, h, w]


def nearest_index(size_in: int, size_out: int, device: torch.device) -> Tensor:
    """Source indices ``[size_out]`` of nearest-neighbour resizing, as the original's
    ``F.interpolate(mask, size)`` picks them: ``floor(i · (size_in / size_out))`` in fp32.
    Written out so that an exported graph picks the same ones (ONNX's ``Resize`` divides by
    ``size_out / size_in`` instead, which falls one pixel short where the product is a
    whole number: a padded row or column would be missed)."""
    scale = torch.full((), size_in, dtype=torch.float32, device=device) / size_out
    index = (torch.arange(size_out, dtype=torch.float32, device=device) * scale).floor()
    return index.long().clamp(max=size_in - 1)


class PositionEmbeddingSine(nn.Module):
    """The original sine positional encoding with ``normalize=True``, scale ``2π`` and
    temperature 10000; half of the channels encode y, the other half x."""

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi

    def forward(self, mask: Tensor) -> Tensor:
        # mask [B, h, w] (True = padding) -> pos [B, 2 * num_pos_feats, h, w]
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)  # [B, h, w]
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (
            2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats
        )
        pos_x = x_embed[:, :, :, None] / dim_t  # [B, h, w, F]
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack(
            (pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4
        ).flatten(3)
        pos_y = torch.stack(
            (pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4
        ).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class TransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer; the positional encoding is added to queries and keys."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: Tensor, key_padding_mask: Tensor, pos: Tensor) -> Tensor:
        # src, pos [S, B, D]; key_padding_mask [B, S]
        q = k = src + pos
        src = self.norm1(
            src + self.self_attn(q, k, value=src, key_padding_mask=key_padding_mask)[0]
        )
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class TransformerDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention, cross-attention to the memory, FFN."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_key_padding_mask: Tensor,
        pos: Tensor,
        query_pos: Tensor,
    ) -> Tensor:
        # tgt, query_pos [Q, B, D]; memory, pos [S, B, D]; memory_key_padding_mask [B, S]
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, k, value=tgt)[0])
        attended = self.multihead_attn(
            query=tgt + query_pos,
            key=memory + pos,
            value=memory,
            key_padding_mask=memory_key_padding_mask,
        )[0]
        tgt = self.norm2(tgt + attended)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class TransformerEncoder(nn.Module):
    """A stack of post-norm encoder layers (no final norm, as in the original)."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward) for _ in range(num_layers)
        )

    def forward(self, src: Tensor, key_padding_mask: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            src = layer(src, key_padding_mask, pos)
        return src  # [S, B, D]


class TransformerDecoder(nn.Module):
    """A stack of post-norm decoder layers followed by a final LayerNorm (``norm``)."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, nhead, dim_feedforward) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_key_padding_mask: Tensor,
        pos: Tensor,
        query_pos: Tensor,
    ) -> Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_key_padding_mask, pos, query_pos)
        return self.norm(tgt)  # [Q, B, D]


class Transformer(nn.Module):
    """Encoder over the flattened feature map, decoder over the object queries."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_encoder_layers: int,
        num_decoder_layers: int,
        dim_feedforward: int,
    ) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(num_encoder_layers, d_model, nhead, dim_feedforward)
        self.decoder = TransformerDecoder(num_decoder_layers, d_model, nhead, dim_feedforward)

    def forward(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos_embed: Tensor) -> Tensor:
        # src, pos_embed [B, D, h, w]; mask [B, h, w]; query_embed [Q, D]
        bs = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)  # [S, B, D]
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)  # [S, B, D]
        query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)  # [Q, B, D]
        mask = mask.flatten(1)  # [B, S]
        tgt = torch.zeros_like(query_embed)
        memory = self.encoder(src, mask, pos_embed)
        hs = self.decoder(tgt, memory, mask, pos_embed, query_embed)  # [Q, B, D]
        return hs.transpose(0, 1)  # [B, Q, D]


class MLP(nn.Module):
    """Feed-forward network with ReLU between layers (the box head, keys ``layers.N``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip([input_dim, *dims], [*dims, output_dim], strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


# --------------------------------------------------------------------------------------
# DETR
# --------------------------------------------------------------------------------------


class DETR(nn.Module):
    """Frozen DETR in the facebookresearch/detr module layout.

    Args:
        num_classes: number of object classes ``C``; the class head has ``C + 1`` outputs,
            the last one is "no object" (COCO checkpoints: 91, HICO-DET/UPT: 80).
        hidden_dim: transformer width ``D``.
        num_heads: attention heads.
        num_encoder_layers / num_decoder_layers: transformer depth.
        dim_feedforward: FFN width.
        num_queries: object queries ``Q``.
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` (or
            ``"resnet152"``).
        dilation: dilate the last ResNet stage (DC5 models).
    """

    def __init__(
        self,
        num_classes: int = 80,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        num_queries: int = 100,
        backbone: str = "resnet50",
        dilation: bool = False,
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads != 0:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        if hidden_dim % 2 != 0:
            raise ValueError(f"hidden_dim must be even for the sine encoding, got {hidden_dim}")
        self.config: dict[str, Any] = {
            "num_classes": num_classes,
            "hidden_dim": hidden_dim,
            "num_heads": num_heads,
            "num_encoder_layers": num_encoder_layers,
            "num_decoder_layers": num_decoder_layers,
            "dim_feedforward": dim_feedforward,
            "num_queries": num_queries,
            "backbone": backbone,
            "dilation": dilation,
        }
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.num_queries = num_queries
        # "backbone.0" = ResNet, "backbone.1" = positional encoding (no parameters): the
        # original Joiner is an nn.Sequential of the two.
        self.backbone = nn.Sequential(
            Backbone(backbone, dilation), PositionEmbeddingSine(hidden_dim // 2)
        )
        self.input_proj = nn.Conv2d(self.backbone[0].num_channels, hidden_dim, kernel_size=1)
        self.transformer = Transformer(
            hidden_dim, num_heads, num_encoder_layers, num_decoder_layers, dim_feedforward
        )
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DETR:
        """The detector is frozen: it stays in eval mode whatever ``mode`` is."""
        return super().train(False)

    @property
    def folded(self) -> bool:
        """Whether the backbone's batch norms are folded into its convolutions."""
        return not any(isinstance(m, FrozenBatchNorm2d) for m in self.backbone.modules())

    def prepare_for_inference(self, channels_last: bool = True) -> DETR:
        """Make the frozen network faster without changing what it computes: every
        ``FrozenBatchNorm2d`` of the ResNet is folded into the convolution before it
        (:func:`fold_frozen_batchnorm`; outputs equal within fp32 rounding), and with
        ``channels_last`` the backbone runs in the channels-last memory layout (oneDNN's
        fast path for the 1×1 convolutions on CPUs, tensor-core layout on GPUs). Folding
        also lets bf16 autocast keep the activations in bf16: an unfolded batch norm's fp32
        scale promotes every conv output back to fp32. Returns ``self``.

        The state dict then has a conv ``bias`` instead of each ``bn*`` entry: load the
        original checkpoints (:meth:`from_checkpoint`) before calling this."""
        fold_frozen_batchnorm(self.backbone[0].body)
        self.backbone[0].channels_last = channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.backbone[0].body.to(memory_format=memory_format)
        self.input_proj.to(memory_format=memory_format)
        return self

    @torch.no_grad()
    def forward(self, images: Sequence[Tensor] | tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """Detect objects.

        Args:
            images: a list of ImageNet-normalised ``[3, H, W]`` float tensors of any sizes,
                or a pre-padded pair ``(tensor [B, 3, H, W], mask [B, H, W])`` with mask
                ``True`` on padding (see :func:`pad_images`).

        Returns:
            ``pred_logits [B, Q, C + 1]``, ``pred_boxes [B, Q, 4]`` (normalised ``cxcywh``,
            relative to each image's own unpadded size) and ``hidden_states [B, Q, D]``
            (last decoder layer, after the decoder's final norm).
        """
        tensor, mask = self._as_batch(images)  # [B, 3, H, W], [B, H, W]
        features, mask = self.backbone[0](tensor, mask)  # [B, C_backbone, h, w], [B, h, w]
        pos = self.backbone[1](mask).to(features.dtype)  # [B, D, h, w]
        hs = self.transformer(
            self.input_proj(features), mask, self.query_embed.weight, pos
        )  # [B, Q, D]
        logits, boxes = self.predict(hs)
        return {"pred_logits": logits, "pred_boxes": boxes, "hidden_states": hs}

    def predict(self, hs: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits ``[B, Q, C + 1]`` and normalised cxcywh boxes ``[B, Q, 4]`` of decoder
        states ``hs [B, Q, D]``, in fp32 whatever the autocast state (a bf16 box head moves
        a 1066-pixel coordinate by 2 pixels)."""
        with full_precision(hs.device):
            hs = hs.float()
            return self.class_embed(hs), self.bbox_embed(hs).sigmoid()

    def _as_batch(self, images: Sequence[Tensor] | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        device = self.query_embed.weight.device
        dtype = self.query_embed.weight.dtype
        if (
            isinstance(images, tuple)
            and len(images) == 2
            and isinstance(images[0], Tensor)
            and images[0].dim() == 4
        ):
            tensor, mask = images
            expected = (tensor.shape[0], *tensor.shape[2:])
            if tuple(mask.shape) != expected:
                raise ValueError(f"mask must be [B, H, W] = {expected}, got {tuple(mask.shape)}")
            if tensor.shape[1] != 3:
                raise ValueError(f"expected images [B, 3, H, W], got {tuple(tensor.shape)}")
        elif isinstance(images, Tensor):
            raise TypeError(
                "pass a list of [3, H, W] tensors or a (tensor [B, 3, H, W], mask [B, H, W]) pair"
            )
        else:
            tensor, mask = pad_images(list(images))
        return tensor.to(device=device, dtype=dtype), mask.to(device=device, dtype=torch.bool)

    @staticmethod
    def postprocess(
        outputs: Mapping[str, Tensor], image_sizes: Tensor | Sequence[Sequence[int]]
    ) -> list[dict[str, Tensor]]:
        """See :func:`postprocess`."""
        return postprocess(outputs, image_sizes)

    @classmethod
    def from_checkpoint(
        cls,
        path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
        num_heads: int = 8,
        dilation: bool = False,
    ) -> DETR:
        """Build a DETR from a checkpoint in the facebookresearch/detr layout.

        Args:
            path_or_state_dict: a ``.pth`` file (as saved by detr's ``main.py``: ``{"model":
                ..., "args": Namespace, ...}``, loaded with ``weights_only=True``), a
                ``.safetensors`` file, a ``{"model": state_dict}`` dict or a bare state dict.
            num_heads: attention heads (not recorded in the weights; 8 in all released
                models).
            dilation: whether the checkpoint is a DC5 model (not recorded in the weights).
            When the checkpoint holds detr's ``args``, their ``nheads`` and ``dilation`` must
            agree with these two.

        The backbone depth, hidden size, encoder/decoder depth, FFN width, number of queries
        and of classes are read from the checkpoint's shapes. Floating-point values are cast
        to fp32. Loading is strict.

        Raises:
            FileNotFoundError: the path does not exist.
            CheckpointError: the file is not a DETR checkpoint, or its keys/shapes do not
                match the model inferred from it (missing, unexpected, mismatched keys).
        """
        state_dict, name, args = _read_state_dict(path_or_state_dict)
        arch = _infer_architecture(state_dict, name)
        # detr's main.py records what the weights cannot tell: refuse a contradiction
        for field, given in (("nheads", num_heads), ("dilation", dilation)):
            saved = getattr(args, field, None)
            if saved is not None and saved != given:
                raise CheckpointError(
                    f"{name}: its args say {field}={saved!r}, but {given!r} was requested; "
                    f"pass {'num_heads' if field == 'nheads' else 'dilation'}={saved!r}"
                )
        try:
            with torch.device("meta"):  # no random initialisation: every value is loaded
                model = cls(**arch, num_heads=num_heads, dilation=dilation)
        except ValueError as e:
            raise CheckpointError(f"{name}: cannot build DETR {arch}: {e}") from e
        _check_keys(model.state_dict(), state_dict, name, arch)
        if not isinstance(path_or_state_dict, (str, os.PathLike)):  # the caller's tensors
            state_dict = {k: v.clone() for k, v in state_dict.items()}
        model.load_state_dict(state_dict, strict=True, assign=True)
        return model


@torch.no_grad()
def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Fold each ``FrozenBatchNorm2d`` of a torchvision ResNet (``module``: the network or a
    part of it) into the convolution it follows — ``convN``/``bnN`` of the stem and the
    blocks, ``downsample.0``/``downsample.1`` — and replace it by ``nn.Identity``.

    ``bn(conv(x)) = conv'(x)`` with ``w' = w · γ / √(σ² + ε)`` per output channel and
    ``b' = (b − μ) · γ / √(σ² + ε) + β``, computed in float64 and rounded once to the
    weights' type: the outputs equal the unfolded network's within fp32 rounding. Returns
    the number of batch norms folded (0 when already folded)."""
    folded = 0
    for parent, conv, bn_name, bn in list(_conv_bn_pairs(module)):
        dtype = conv.weight.dtype
        bias = conv.bias.double() if conv.bias is not None else None
        weight, bias = fuse_conv_bn_weights(
            conv.weight.double(), bias, bn.running_mean.double(), bn.running_var.double(),
            bn.eps, bn.weight.double(), bn.bias.double())
        conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
        setattr(parent, bn_name, nn.Identity())
        folded += 1
    return folded


def _conv_bn_pairs(module: nn.Module) -> Iterator[tuple[nn.Module, nn.Conv2d, str, nn.Module]]:
    """``(parent, conv, batch norm's name in parent, batch norm)`` of each frozen batch norm
    applied right after a convolution in a torchvision ResNet."""
    for parent in module.modules():
        if isinstance(parent, nn.Sequential):  # downsample = Sequential(conv, bn)
            children = list(parent.named_children())
            pairs = list(itertools.pairwise(children))
        else:  # stem and blocks: convN then bnN
            pairs = [((f"conv{i}", getattr(parent, f"conv{i}", None)),
                      (f"bn{i}", getattr(parent, f"bn{i}", None))) for i in (1, 2, 3)]
        for (_, conv), (bn_name, bn) in pairs:
            if isinstance(conv, nn.Conv2d) and isinstance(bn, FrozenBatchNorm2d):
                yield parent, conv, bn_name, bn


def postprocess(
    outputs: Mapping[str, Tensor], image_sizes: Tensor | Sequence[Sequence[int]]
) -> list[dict[str, Tensor]]:
    """Turn raw DETR outputs into detections, like the original ``PostProcess``.

    Softmax over the classes, drop "no object", take the best class per query; boxes go
    from normalised ``cxcywh`` to absolute ``xyxy`` pixels of ``image_sizes``.

    Args:
        outputs: ``pred_logits [B, Q, C + 1]`` and ``pred_boxes [B, Q, 4]``.
        image_sizes: ``[B, 2]`` as ``(h, w)`` per image (tensor or nested sequence).

    Returns:
        One dict per image: ``scores [Q]``, ``labels [Q]`` (0..C-1), ``boxes [Q, 4]``.
    """
    logits = outputs["pred_logits"]  # [B, Q, C + 1]
    boxes = outputs["pred_boxes"]  # [B, Q, 4]
    sizes = torch.as_tensor(image_sizes, device=boxes.device).to(boxes.dtype)  # [B, 2]
    if sizes.shape != (logits.shape[0], 2):
        raise ValueError(
            f"image_sizes must be [B, 2] = [{logits.shape[0]}, 2], got {tuple(sizes.shape)}"
        )
    prob = logits.softmax(-1)
    scores, labels = prob[..., :-1].max(-1)  # [B, Q]
    boxes = box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")
    img_h, img_w = sizes.unbind(1)
    scale = torch.stack([img_w, img_h, img_w, img_h], dim=1)  # [B, 4]
    boxes = boxes * scale[:, None, :]
    return [
        {"scores": s, "labels": lab, "boxes": b}
        for s, lab, b in zip(scores, labels, boxes, strict=True)
    ]


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def _read_state_dict(
    source: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[dict[str, Tensor], str, argparse.Namespace | None]:
    """Load a checkpoint: ``(fp32 state dict, name for messages, detr's args or None)``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"DETR checkpoint not found: {path}")
        if path.suffix == ".safetensors":
            try:
                obj: Any = load_safetensors(str(path), device="cpu")
            except Exception as e:
                raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
        else:
            try:
                with torch.serialization.safe_globals([argparse.Namespace]):
                    obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                reason = _load_error_reason(e)
                if "Unsupported global" in reason:
                    reason += " (only tensors, plain containers and argparse.Namespace are allowed)"
                raise CheckpointError(
                    f"{path} is not a DETR checkpoint: torch.load(weights_only=True) failed "
                    f"({type(e).__name__}: {reason})"
                ) from e
    else:
        obj = source
        name = "<state dict>"

    args = None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        if isinstance(obj.get("args"), argparse.Namespace):
            args = obj["args"]
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(k in obj for k in _REQUIRED_KEYS):
        if isinstance(obj, Mapping):
            keys = list(obj)
            found = f"top-level keys {keys[:8]}{' ...' if len(keys) > 8 else ''}"
        else:
            found = f"a {type(obj).__name__}"
        raise CheckpointError(
            f"{name} is not a DETR checkpoint in the facebookresearch/detr layout: expected a "
            f"state dict (or {{'model': state_dict}}) with {list(_REQUIRED_KEYS)}, found {found}"
        )
    if all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}

    state_dict: dict[str, Tensor] = {}
    for key, value in obj.items():
        if key.endswith("num_batches_tracked"):  # dropped by FrozenBatchNorm2d, as in detr
            continue
        if not isinstance(value, Tensor):
            raise CheckpointError(
                f"{name}: value of {key!r} is a {type(value).__name__}, not a tensor"
            )
        state_dict[key] = value.float() if value.is_floating_point() else value
    return state_dict, name, args


def _load_error_reason(error: Exception) -> str:
    """The informative part of a (long, multi-paragraph) ``torch.load`` error."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    reason = found.group(1) if found else (text.strip().splitlines() or [""])[0]
    reason = reason.split(". ")[0].strip()
    return reason if len(reason) <= 200 else reason[:200] + "..."


def _count(state_dict: Mapping[str, Tensor], fmt: str) -> int:
    n = 0
    while fmt.format(n) in state_dict:
        n += 1
    return n


def _infer_architecture(state_dict: Mapping[str, Tensor], name: str) -> dict[str, Any]:
    """Read the architecture of a DETR from the shapes of its state dict."""
    blocks = tuple(_count(state_dict, _BODY + f"layer{s}.{{}}.conv1.weight") for s in (1, 2, 3, 4))
    bottleneck = _BODY + "layer1.0.conv3.weight" in state_dict
    backbone = _RESNETS.get((blocks, bottleneck))  # type: ignore[arg-type]
    if backbone is None:
        kind = "Bottleneck" if bottleneck else "BasicBlock"
        raise CheckpointError(
            f"{name}: backbone with {list(blocks)} {kind} blocks per stage is not a "
            f"torchvision ResNet-18/34/50/101/152"
        )
    num_queries, hidden_dim = state_dict["query_embed.weight"].shape
    enc = _count(state_dict, "transformer.encoder.layers.{}.linear1.weight")
    dec = _count(state_dict, "transformer.decoder.layers.{}.linear1.weight")
    if dec == 0:
        raise CheckpointError(f"{name}: no transformer decoder layers found")
    ffn_key = "transformer.decoder.layers.0.linear1.weight"
    return {
        "backbone": backbone,
        "hidden_dim": int(hidden_dim),
        "num_encoder_layers": enc,
        "num_decoder_layers": dec,
        "dim_feedforward": int(state_dict[ffn_key].shape[0]),
        "num_queries": int(num_queries),
        "num_classes": int(state_dict["class_embed.weight"].shape[0]) - 1,
    }


def _check_keys(
    expected: Mapping[str, Tensor], given: Mapping[str, Tensor], name: str, arch: Mapping[str, Any]
) -> None:
    """Raise a :class:`CheckpointError` listing every missing, unexpected and mis-shaped key."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return

    def listing(title: str, items: list[str], limit: int = 50) -> str:
        more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}):" + "".join(f"\n    {i}" for i in items[:limit]) + more

    message = f"{name} does not match the DETR inferred from it ({dict(arch)}):"
    if missing:
        message += listing("missing keys", missing)
    if unexpected:
        message += listing("unexpected keys", unexpected)
    if mismatched:
        message += listing("shape mismatches", mismatched)
    raise CheckpointError(message)

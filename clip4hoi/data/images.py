"""Reading image files into ``uint8`` RGB tensors.

Decoding goes through Pillow for every format. ``torchvision.io.decode_image`` was the
first choice, but its image decoders are deprecated since torchvision 0.29 (a
``DeprecationWarning`` on every call, removal announced) and cannot read TIFF or BMP
anyway; Pillow reads all of these, is what the reference implementations (DETR, UPT,
PViC) decode with, and one decoder gives the same pixels everywhere.

Colour handling:

* greyscale, bilevel and palette images are expanded to RGB; CMYK and YCbCr are
  converted to RGB by Pillow;
* **alpha is dropped** (RGBA, LA, PA and palette transparency): the colour channels are
  kept as stored, as ``ImageReadMode.RGB`` and ``PIL.Image.convert("RGB")`` do;
* 16-bit samples keep their high byte (``v >> 8``): Pillow does this itself for 16-bit
  RGB PNGs, and :func:`load_image` does the same for 16-bit greyscale (``I;16`` PNG or
  TIFF, and ``I`` — what older Pillow versions return for 16-bit PNGs — clipped to 0..65535).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from clip4hoi.errors import InputError

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

MAX_PIXELS = 2 * 89_478_485
"""Largest image read (width × height): about 179 megapixels, e.g. 13 000 × 13 000, where
Pillow's own decompression-bomb guard stops. A bigger image is refused before it is
decoded (it would need gigabytes of memory); downscale it first."""


class ImageError(InputError):
    """An image file that cannot be read: missing, empty, truncated, corrupt or in an
    unsupported format. The message names the file and says why."""


def load_image(path: str | Path, apply_exif_orientation: bool = True) -> torch.Tensor:
    """Read an image file as a ``uint8`` tensor ``[3, H, W]`` in RGB order.

    With ``apply_exif_orientation`` (the default) the EXIF orientation tag is applied, so
    the tensor is upright as a viewer shows it. Dataset annotations (HICO-DET, COCO) were
    drawn on the stored pixels, so the datasets read with ``False``.

    Raises :class:`ImageError` when the file is missing, empty, truncated, corrupt, larger
    than :data:`MAX_PIXELS` or not an image format Pillow can read. (Truncated files load
    silently if some other code sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True``.)
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image file does not exist")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: image file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 megapixels: below MAX_PIXELS the image is read as asked.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{path}: image is {width}x{height} pixels "
                                 f"({width * height / 1e6:.0f} megapixels), above the limit "
                                 f"of {MAX_PIXELS / 1e6:.0f} megapixels that guards against "
                                 f"decompression bombs; downscale it first")
            image.load()  # decode now, so that truncated data fails here
            if apply_exif_orientation:
                ImageOps.exif_transpose(image, in_place=True)  # no copy of the pixels
            array = _rgb_array(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:   # Pillow's check, as Image.open runs it
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        size = f" ({int(pixels.group(1)) / 1e6:.0f} megapixels)" if pixels else ""
        raise ImageError(f"{path}: image is too large{size}, above the limit of "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels that guards against "
                         f"decompression bombs; downscale it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image, or an image format Pillow cannot read"
                         ) from None
    except Exception as error:  # Pillow raises OSError, ValueError, SyntaxError, ...
        raise ImageError(f"{path}: cannot decode image ({error})") from error
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _rgb_array(image: Image.Image) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB pixels of a decoded Pillow image of any mode."""
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode != "RGB":   # converting an RGB image would copy it for nothing
        image = image.convert("RGB")
    return np.array(image)  # a writable copy, for torch.from_numpy

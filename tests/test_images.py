"""load_image: every pixel format HICO-DET / COCO / user images come in, and clear errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip4hoi.data.images import ImageError, load_image

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_rgb_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"image.{fmt.lower()}"
    Image.fromarray(PIXELS).save(path, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    image = load_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 20)
    assert torch.equal(image, _chw(PIXELS))


def test_jpeg(tmp_path: Path) -> None:
    x = np.linspace(0, 255, 20)
    smooth = np.stack(np.broadcast_arrays(x[None, :], x[:12, None], 128.0), axis=2)
    smooth = smooth.astype(np.uint8)
    path = tmp_path / "image.jpg"
    Image.fromarray(smooth).save(path, quality=95)
    image = load_image(path)
    assert image.shape == (3, 12, 20)
    assert (image.float() - _chw(smooth).float()).abs().mean() < 3


def test_greyscale_and_palette(tmp_path: Path) -> None:
    grey = PIXELS[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert torch.equal(load_image(tmp_path / "grey.png"), torch.from_numpy(grey).expand(3, -1, -1))

    palette = Image.fromarray(PIXELS).quantize(16)
    palette.save(tmp_path / "palette.png")
    expected = np.array(palette.convert("RGB"))
    assert torch.equal(load_image(tmp_path / "palette.png"), _chw(expected))


def test_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = np.concatenate([PIXELS, np.zeros((12, 20, 1), np.uint8)], axis=2)  # transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(load_image(tmp_path / "rgba.png"), _chw(PIXELS))

    la = np.stack([PIXELS[:, :, 1], np.full((12, 20), 7, np.uint8)], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert torch.equal(load_image(tmp_path / "la.png"),
                       torch.from_numpy(PIXELS[:, :, 1]).expand(3, -1, -1))


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 8), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg")  # pure cyan
    image = load_image(tmp_path / "cmyk.jpg")
    assert image.shape == (3, 8, 16)
    assert torch.allclose(image.float().mean(dim=(1, 2)), torch.tensor([0.0, 255, 255]), atol=8)


def test_sixteen_bit_greyscale(tmp_path: Path) -> None:
    values = np.array([[0, 255, 256, 32768, 65280, 65535]], dtype=np.uint16)
    expected = torch.tensor([0, 0, 1, 128, 255, 255], dtype=torch.uint8).expand(3, 1, -1)
    for name in ("grey16.png", "grey16.tif"):
        Image.fromarray(values).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode == "I;16"
        assert torch.equal(load_image(tmp_path / name), expected)
    Image.fromarray(values.astype(np.int32) - 1).save(tmp_path / "int32.tif")  # mode "I"
    assert torch.equal(load_image(tmp_path / "int32.tif")[0, 0],
                       torch.tensor([0, 0, 0, 127, 254, 255], dtype=torch.uint8))


def _png_rgb16(array: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one)."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_sixteen_bit_rgb_png(tmp_path: Path) -> None:
    values = np.array([[[0, 32768, 65535], [25700, 1000, 65280]]], dtype=np.uint16)
    (tmp_path / "rgb16.png").write_bytes(_png_rgb16(values))
    assert torch.equal(load_image(tmp_path / "rgb16.png"), _chw((values >> 8).astype(np.uint8)))


def test_exif_orientation(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)   # left half red
    stored[:, 20:] = (0, 0, 255)   # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6               # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)

    upright = load_image(path)
    assert upright.shape == (3, 40, 20)
    assert upright[0, :15].float().mean() > 200 and upright[2, :15].float().mean() < 50
    assert upright[2, 25:].float().mean() > 200 and upright[0, 25:].float().mean() < 50
    assert load_image(path, apply_exif_orientation=False).shape == (3, 20, 40)


def test_truncated_jpeg(tmp_path: Path) -> None:
    full = tmp_path / "full.jpg"
    Image.fromarray(np.tile(PIXELS, (8, 8, 1))).save(full)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"truncated\.jpg.*truncated"):
        load_image(path)


@pytest.mark.parametrize(("content", "reason"), [
    (None, "does not exist"),
    (b"", "empty"),
    (b"this is not an image", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image"),  # PNG signature, garbage after it
])
def test_unreadable_files(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as error:
        load_image(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)

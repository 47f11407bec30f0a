"""HOITransform: boxes follow flips and resizes exactly; sizes, dtypes and settings."""

from __future__ import annotations

import pytest
import torch

from clip4hoi.data.transforms import HOITransform, TransformConfig

H, W = 60, 80
BOX_H = torch.tensor([[10.0, 5.0, 30.0, 55.0]])
BOX_O = torch.tensor([[40.0, 20.0, 72.0, 44.0], [0.0, 0.0, 80.0, 60.0]])


def _sample() -> tuple[torch.Tensor, dict]:
    image = torch.zeros(3, H, W, dtype=torch.uint8)
    x1, y1, x2, y2 = BOX_H[0].long().tolist()
    image[:, y1:y2, x1:x2] = 255  # the human box painted white: tracks flips
    target = {"boxes_h": BOX_H.clone(), "boxes_o": BOX_O.clone(),
              "hoi": torch.tensor([3]), "size": torch.tensor([H, W]), "file_name": "a.jpg"}
    return image, target


def _expected(boxes: torch.Tensor, size: tuple[int, int], flipped: bool) -> torch.Tensor:
    if flipped:
        boxes = torch.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], 1)
    sy, sx = size[0] / H, size[1] / W
    return boxes * torch.tensor([sx, sy, sx, sy])


def test_test_transform_resizes_to_800_and_scales_boxes() -> None:
    image, target = _sample()
    out, new = HOITransform(train=False)(image, target)
    assert out.dtype == torch.float32 and out.shape == (3, 800, 1066)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert new["size"].tolist() == [800, 1066]
    torch.testing.assert_close(new["boxes_h"], _expected(BOX_H, (800, 1066), False))
    torch.testing.assert_close(new["boxes_o"], _expected(BOX_O, (800, 1066), False))
    assert new["file_name"] == "a.jpg" and torch.equal(new["hoi"], target["hoi"])
    assert torch.equal(target["boxes_h"], BOX_H) and target["size"].tolist() == [H, W]


def test_long_side_is_capped() -> None:
    image = torch.zeros(3, 100, 1000, dtype=torch.uint8)
    target = {"boxes_h": torch.tensor([[0.0, 0.0, 1000.0, 100.0]]),
              "boxes_o": torch.zeros(0, 4)}
    out, new = HOITransform(train=False)(image, target)
    assert out.shape == (3, 133, 1333)
    torch.testing.assert_close(new["boxes_h"], torch.tensor([[0.0, 0.0, 1333.0, 133.0]]))
    assert new["boxes_o"].shape == (0, 4)


def test_training_boxes_follow_flip_and_multiscale_resize() -> None:
    transform = HOITransform(train=True, config=TransformConfig(color_jitter=0))
    flips, short_sides = set(), set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, new = transform(*_sample())
        size = tuple(out.shape[-2:])
        assert new["size"].tolist() == list(size)
        assert size[0] in TransformConfig().scales
        # The painted human tells whether the image was flipped.
        flipped = bool(out[0, :, : size[1] // 2].sum() < out[0, :, size[1] // 2:].sum())
        torch.testing.assert_close(new["boxes_h"], _expected(BOX_H, size, flipped))
        torch.testing.assert_close(new["boxes_o"], _expected(BOX_O, size, flipped))
        # ... and the painted pixels sit inside the transformed human box.
        ys, xs = torch.nonzero(out[0] > 0.5, as_tuple=True)
        x1, y1, x2, y2 = new["boxes_h"][0].tolist()
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1
        flips.add(flipped)
        short_sides.add(size[0])
    assert flips == {True, False} and len(short_sides) > 3


def test_colour_jitter_changes_pixels_not_boxes() -> None:
    image = torch.randint(0, 256, (3, H, W), dtype=torch.uint8)
    target = _sample()[1]
    config = TransformConfig(scales=(H,), flip=False)
    torch.manual_seed(0)
    jittered, new = HOITransform(train=True, config=config)(image, target)
    plain, _ = HOITransform(train=True, config=TransformConfig(scales=(H,), flip=False,
                                                                color_jitter=0))(image, target)
    assert jittered.shape == plain.shape == (3, H, W)
    assert not torch.allclose(jittered, plain)
    assert jittered.min() >= 0.0 and jittered.max() <= 1.0
    torch.testing.assert_close(new["boxes_h"], BOX_H)


def test_no_augmentation_is_the_test_transform() -> None:
    image, target = _sample()
    config = TransformConfig(augment=False, scales=(90,), test_scale=120, max_size=400)
    outputs = [HOITransform(train=True, config=config)(image, target) for _ in range(3)]
    reference, ref_target = HOITransform(train=False, config=config)(image, target)
    for out, new in outputs:
        assert torch.equal(out, reference)
        assert torch.equal(new["boxes_o"], ref_target["boxes_o"])
    assert reference.shape == (3, 120, 160)


@pytest.mark.parametrize("kwargs", [dict(scales=()), dict(scales=(1333,)),
                                    dict(test_scale=0), dict(color_jitter=-1)])
def test_invalid_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TransformConfig(**kwargs)

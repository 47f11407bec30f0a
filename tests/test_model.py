"""The assembled CLIP4HOI model on tiny random architectures."""

from __future__ import annotations

import pytest
import torch
from conftest import BICYCLE, CUP, PERSON, SCENE, SIZE, crafted_features, tiny_model_config

from clip4hoi.data.metadata import hicodet_classes, parse_class_text
from clip4hoi.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from clip4hoi.models.model import CLIP4HOI, build_model, detector_label_map


def exact_config():
    """Tiny config that keeps exactly the crafted detections (no top-up to min counts)."""
    config = tiny_model_config()
    config.detector.min_humans = config.detector.min_objects = 0
    return config


@pytest.fixture(scope="module")
def model() -> CLIP4HOI:
    torch.manual_seed(0)
    return build_model(exact_config()).eval()


def test_detections_are_restricted_to_the_detected_object(model: CLIP4HOI) -> None:
    classes = hicodet_classes()
    out = model.forward_features(crafted_features(model, [SCENE]), [SIZE])
    (det,) = out
    assert set(det) == {"human_boxes", "object_boxes", "objects", "hoi", "verbs", "scores"}
    m = len(det["scores"])
    # 2 humans x 3 other instances = 6 pairs; each yields the classes of its object.
    per_object = {o: sum(1 for x in classes.objects if x == o) for o in (PERSON, BICYCLE, CUP)}
    assert m == 2 * per_object[BICYCLE] + 2 * per_object[CUP] + 2 * per_object[PERSON]
    class_objects = torch.tensor(classes.objects)
    assert torch.equal(class_objects[det["hoi"]], det["objects"])
    assert torch.equal(torch.tensor(classes.verb_ids)[det["hoi"]], det["verbs"])
    assert ((det["scores"] > 0) & (det["scores"] <= 1)).all()
    assert det["human_boxes"].shape == det["object_boxes"].shape == (m, 4)


def test_images_without_humans_or_objects_give_empty_results(model: CLIP4HOI) -> None:
    no_human = [(BICYCLE, 0.9, [20, 60, 90, 118]), (CUP, 0.7, [55, 40, 70, 55])]
    lonely_human = [(PERSON, 0.9, [10, 10, 60, 110])]
    nothing: list = []
    outputs = model.forward_features(
        crafted_features(model, [no_human, lonely_human, nothing, SCENE]), [SIZE] * 4)
    assert [len(o["scores"]) for o in outputs[:3]] == [0, 0, 0]
    assert len(outputs[3]["scores"]) > 0


def test_free_text_classes(model: CLIP4HOI) -> None:
    classes = parse_class_text("ride bicycle, hold cup, hug person")
    (det,) = model.forward_features(crafted_features(model, [SCENE]), [SIZE], classes=classes)
    # 2 humans x (bicycle, cup, other human), one class each.
    assert len(det["scores"]) == 6
    assert sorted(det["hoi"].tolist()) == [0, 0, 1, 1, 2, 2]


def test_proposal_bounds_keep_low_scoring_detections() -> None:
    torch.manual_seed(0)
    model = build_model(exact_config()).eval()
    weak = [(PERSON, 0.05, [10, 10, 60, 110]), (BICYCLE, 0.06, [20, 60, 90, 118])]
    (det,) = model.forward_features(crafted_features(model, [weak]), [SIZE])
    assert len(det["scores"]) == 0  # both below the 0.2 score threshold
    model.config.detector.min_humans = model.config.detector.min_objects = 1
    (det,) = model.forward_features(crafted_features(model, [weak]), [SIZE])
    assert len(det["scores"]) == sum(1 for o in hicodet_classes().objects if o == BICYCLE)
    model.config.detector.max_humans = 0
    (det,) = model.forward_features(crafted_features(model, [weak]), [SIZE])
    assert len(det["scores"]) == 0


def hoi_id(verb: str, obj: int) -> int:
    classes = hicodet_classes()
    return next(k for k in range(len(classes))
                if classes.verbs[k] == verb and classes.objects[k] == obj)


def _targets() -> list[dict]:
    return [{
        "boxes_h": torch.tensor([[10.0, 10, 60, 110], [80, 5, 130, 100]]),
        "boxes_o": torch.tensor([[20.0, 60, 90, 118], [55, 40, 70, 55]]),
        "object": torch.tensor([BICYCLE, CUP]),
        "verb": torch.tensor([87, 36]),
        "hoi": torch.tensor([hoi_id("ride", BICYCLE), hoi_id("hold", CUP)]),
    }]


@pytest.mark.parametrize("add_gt", [False, True])
def test_training_losses_reach_the_head_only(add_gt: bool) -> None:
    torch.manual_seed(0)
    config = exact_config()
    config.loss.add_gt_boxes = add_gt
    model = build_model(config).train()
    assert not model.detector.training and not model.clip.training
    features = crafted_features(model, [SCENE])
    losses = model.forward_features(features, [SIZE], _targets())
    assert set(losses) == {"loss_pair", "loss_global"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert model.classifier.prefix.grad is not None
    assert model.interactor.fuse[0].weight.grad is not None
    assert all(p.grad is None for p in model.detector.parameters())
    assert all(p.grad is None for p in model.clip.parameters())


def test_a_batch_without_pairs_still_reaches_every_head_parameter() -> None:
    model = build_model(exact_config()).train()
    losses = model.forward_features(crafted_features(model, [[]]), [SIZE], [{
        "boxes_h": torch.zeros(0, 4), "boxes_o": torch.zeros(0, 4),
        "object": torch.zeros(0, dtype=torch.long), "verb": torch.zeros(0, dtype=torch.long),
        "hoi": torch.zeros(0, dtype=torch.long)}])
    sum(losses.values()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


def test_training_needs_targets(model: CLIP4HOI) -> None:
    model.train()
    try:
        with pytest.raises(ValueError, match="needs targets"):
            model.forward_features(crafted_features(model, [SCENE]), [SIZE])
    finally:
        model.eval()


def test_union_mask_and_several_clip_layers() -> None:
    torch.manual_seed(0)
    config = tiny_model_config(union_mask=True)
    config.clip.layers = [-1, 0]
    model = build_model(config).eval()
    images = [torch.rand(3, *SIZE), torch.rand(3, 90, 100)]
    # Make every query a confident person or bicycle so that pairs exist.
    with torch.no_grad():
        model.detector.class_embed.bias[:] = -20
        model.detector.class_embed.bias[[PERSON, BICYCLE]] = 10
    outputs = model(images)
    assert len(outputs) == 2
    for out, image in zip(outputs, images, strict=True):
        h, w = image.shape[-2:]
        boxes = torch.cat([out["human_boxes"], out["object_boxes"]])
        assert (boxes[:, 2] <= w + 1e-3).all() and (boxes[:, 3] <= h + 1e-3).all()


def test_text_embeddings_are_cached_until_prompts_change(model: CLIP4HOI) -> None:
    classes = parse_class_text("ride bicycle, hold cup")
    with torch.no_grad():
        first = model.classifier.text_embeddings(model.clip, classes)
        assert model.classifier.text_embeddings(model.clip, classes) is first
        model.classifier.prefix.add_(torch.randn_like(model.classifier.prefix))
        changed = model.classifier.text_embeddings(model.clip, classes)
    assert changed is not first and not torch.allclose(changed, first)


def test_checkpoint_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    config = exact_config()
    config.head.alpha = 0.3
    model = build_model(config).eval()
    with torch.no_grad():
        model.classifier.pair_proj.bias.add_(1.0)  # differ from a fresh initialisation
    path = tmp_path / "head.safetensors"
    save_checkpoint(model, path)
    config, tensors, _ = read_checkpoint(path)
    assert config == model.config
    assert not any(k.startswith(("detector.", "clip.")) for k in tensors)

    torch.manual_seed(123)  # the random frozen parts come from their own seeds
    restored = load_checkpoint(path).eval()
    assert torch.equal(restored.detector.class_embed.weight, model.detector.class_embed.weight)
    torch.manual_seed(1)
    features = crafted_features(model, [SCENE])
    expected = model.forward_features(features, [SIZE])[0]
    actual = restored.forward_features(features, [SIZE])[0]
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key])


def test_bad_checkpoints_are_named(tmp_path) -> None:
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bogus\.safetensors"):
        read_checkpoint(bogus)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_detector_label_maps() -> None:
    coco = detector_label_map(91)
    assert coco[1] == 0 and coco[2] == 1 and coco[90] == 79 and coco[12] == -1
    assert torch.equal(detector_label_map(80), torch.arange(80))
    with pytest.raises(ValueError, match="80"):
        detector_label_map(20)


def test_ground_truth_boxes_replace_detections_in_the_oracle_setting() -> None:
    torch.manual_seed(0)
    config = exact_config()
    config.detector.use_gt_boxes = True
    model = build_model(config).eval()
    features = crafted_features(model, [[]])  # the detector finds nothing
    with pytest.raises(ValueError, match="use_gt_boxes"):
        model.forward_features(features, [SIZE])
    (det,) = model.forward_features(features, [SIZE], _targets())
    per_object = {o: sum(1 for x in hicodet_classes().objects if x == o)
                  for o in (PERSON, BICYCLE, CUP)}
    assert len(det["scores"]) == 2 * sum(per_object.values())
    humans = {tuple(b) for b in det["human_boxes"].tolist()}
    assert humans == {(10.0, 10.0, 60.0, 110.0), (80.0, 5.0, 130.0, 100.0)}


def test_batched_proposals_equal_the_per_image_ones() -> None:
    """All images' proposals at once (two host syncs) select what image_proposals does."""
    from clip4hoi.config import DetectorConfig
    from clip4hoi.models.interactor import batch_proposals, image_proposals

    torch.manual_seed(3)
    batch, queries, classes = 4, 60, 91
    logits = torch.randn(batch, queries, classes + 1) * 3
    logits[..., 1] += 2.0                               # plenty of persons
    boxes = torch.rand(batch, queries, 4) * 0.5 + 0.25  # overlapping, for NMS to act
    hidden = torch.randn(batch, queries, 8)
    table = detector_label_map(classes)
    sizes = [(120, 160), (200, 100), (64, 64), (480, 640)]
    for cfg in (DetectorConfig(), DetectorConfig(score_threshold=0.05, max_humans=4,
                                                 min_objects=5, nms_threshold=0.7)):
        batched = batch_proposals(logits, boxes, hidden, table, sizes, cfg)
        for i, size in enumerate(sizes):
            single = image_proposals(logits[i], boxes[i], hidden[i], table, size, cfg)
            assert torch.equal(batched[i].objects, single.objects)
            assert torch.allclose(batched[i].boxes, single.boxes)
            assert torch.equal(batched[i].hidden, single.hidden)
            assert batched[i].n_humans == int((single.objects == 0).sum())

"""Training targets and losses as the engine uses them (``clip4hoi.models.losses`` and
``CLIP4HOI._losses``): association, class subsets of zero-shot training, added
ground-truth boxes, and the numerical range of the focal losses."""

from __future__ import annotations

import pytest
import torch
from conftest import BICYCLE, PERSON, SIZE, crafted_features, tiny_model_config

from clip4hoi.data.metadata import hicodet_classes
from clip4hoi.models.losses import pair_labels
from clip4hoi.models.model import CLIP4HOI, FrozenFeatures, build_model


def hoi(verb: str, obj: int) -> int:
    classes = hicodet_classes()
    return next(k for k in range(len(classes))
                if classes.verbs[k] == verb and classes.objects[k] == obj)


def test_pairs_take_every_label_of_the_ground_truth_they_overlap() -> None:
    target = {"boxes_h": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]]),
              "boxes_o": torch.tensor([[20.0, 0, 30, 10], [20, 0, 30, 10]]),
              "hoi": torch.tensor([3, 7])}               # one pair, two interactions
    boxes_h = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    boxes_o = torch.tensor([[21.0, 0, 30, 10],           # IoU 0.9: matched
                            [25.0, 0, 30, 10],           # IoU 0.5: matched (>=)
                            [26.0, 0, 30, 10]])          # IoU 0.4: not matched
    labels = pair_labels(boxes_h, boxes_o, [target], torch.zeros(3, dtype=torch.long),
                         num_classes=10, match_iou=0.5)
    assert labels.shape == (3, 10)
    assert labels[0].nonzero().flatten().tolist() == [3, 7]
    assert labels[1].nonzero().flatten().tolist() == [3, 7]
    assert labels[2].sum() == 0


def crafted(model: CLIP4HOI, detections: list[tuple[int, float, list[float]]]
            ) -> FrozenFeatures:
    """One image's features whose DETR part holds ``detections``."""
    return crafted_features(model, [detections])


def target(hoi_index: int) -> dict:
    return {"boxes_h": torch.tensor([[10.0, 10, 60, 110]]),
            "boxes_o": torch.tensor([[20.0, 60, 90, 118]]),
            "object": torch.tensor([BICYCLE]), "verb": torch.tensor([0]),
            "hoi": torch.tensor([hoi_index])}


def test_zero_shot_training_scores_only_the_given_class_subset() -> None:
    torch.manual_seed(0)
    config = tiny_model_config()
    config.detector.min_humans = config.detector.min_objects = 0
    model = build_model(config).train()
    seen = [hoi("ride", BICYCLE), hoi("hold", BICYCLE), hoi("ride", 3)]
    subset = hicodet_classes().subset(seen)
    scene = [(PERSON, 0.9, [10, 10, 60, 110]), (BICYCLE, 0.9, [20, 60, 90, 118])]
    # target["hoi"] indexes the subset (as HICODet.class_set in zero-shot training)
    losses = model.forward_features(crafted(model, scene), [SIZE], [target(1)], subset)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    with pytest.raises((IndexError, RuntimeError)):   # outside the subset: a caller's error
        model.forward_features(crafted(model, scene), [SIZE], [target(3)], subset)


def test_added_ground_truth_boxes_become_proposals() -> None:
    torch.manual_seed(0)
    config = tiny_model_config()
    config.detector.min_humans = config.detector.min_objects = 0
    model = build_model(config).train()
    features = crafted(model, [(PERSON, 0.9, [80, 5, 130, 100])])  # no object detected
    assert len(model._instances(features, [SIZE], [target(0)])[0].boxes) == 1
    model.config.loss.add_gt_boxes = True
    inst = model._instances(features, [SIZE], [target(0)])[0]
    assert len(inst.boxes) == 3 and inst.objects.tolist() == [PERSON, PERSON, BICYCLE]
    assert inst.scores[1:].tolist() == [1.0, 1.0]
    model.eval()                              # only in training
    assert len(model._instances(features, [SIZE], [target(0)])[0].boxes) == 1


@pytest.mark.parametrize("head", [{"logits": "fixed", "temperature": 1e-3},
                                  {"logits": "learned"}])
def test_confident_scores_give_finite_gradients(head: dict) -> None:
    torch.manual_seed(0)
    config = tiny_model_config(**head)
    config.detector.min_humans = config.detector.min_objects = 0
    model = build_model(config).train()
    if head["logits"] == "learned":
        with torch.no_grad():
            model.classifier.bias.fill_(-40.0)     # pair and global logits near -40
    # (fixed: cos / 0.001, logits up to ±1000)
    scene = [(PERSON, 0.9, [10, 10, 60, 110]), (BICYCLE, 0.9, [20, 60, 90, 118])]
    losses = model.forward_features(crafted(model, scene), [SIZE], [target(hoi("ride",
                                                                             BICYCLE))])
    sum(losses.values()).backward()
    bad = [name for name, p in model.named_parameters()
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad}"

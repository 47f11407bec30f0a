"""HICODet and VCOCO datasets: targets, zero-shot class sets, start-up checks, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from clip4hoi.data.annotations import load_hicodet_annotations
from clip4hoi.data.hicodet import HICODet, collate_fn
from clip4hoi.data.images import ImageError
from clip4hoi.data.metadata import COCO_OBJECTS, VCOCO_ACTIONS, vcoco_classes
from clip4hoi.data.splits import seen_classes, unseen_classes
from clip4hoi.data.synthetic import make_synthetic
from clip4hoi.data.transforms import HOITransform, TransformConfig
from clip4hoi.data.vcoco import VCOCO

TARGET_KEYS = {"boxes_h", "boxes_o", "object", "verb", "hoi", "size", "orig_size",
               "file_name", "index"}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_synthetic(tmp_path_factory.mktemp("synthetic"), n_train=24, n_test=6,
                          image_size=96)


@pytest.fixture
def small(tmp_path: Path) -> dict:
    """A throw-away dataset that tests may damage."""
    return make_synthetic(tmp_path / "small", n_train=12, n_test=1, image_size=80)


def test_items_follow_the_conventions(synthetic: dict) -> None:
    dataset = HICODet(synthetic["train_images"], synthetic["train_annotations"])
    annotations = load_hicodet_annotations(synthetic["train_annotations"])
    assert dataset.annotations.file_names == annotations.file_names
    assert len(dataset.class_set) == 600 and dataset.class_ids == tuple(range(600))
    assert len(dataset) == 24 - len(annotations.empty)
    for i in (0, len(dataset) - 1):
        image, target = dataset[i]
        index = dataset.image_indices[i]
        assert set(target) == TARGET_KEYS and target["index"] == index
        assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
        width, height = annotations.sizes[index]
        assert image.shape == (3, height, width)
        assert target["size"].tolist() == target["orig_size"].tolist() == [height, width]
        assert target["file_name"] == annotations.file_names[index]
        assert target["boxes_h"].dtype == torch.float32
        np.testing.assert_array_equal(target["boxes_o"].numpy(), annotations.boxes_o[index])
        for key, field in (("hoi", "hoi"), ("object", "objects"), ("verb", "verbs")):
            assert target[key].dtype == torch.long
            assert target[key].tolist() == getattr(annotations, field)[index].tolist()
    # the boxes are continuous: the file's 1-based x1 minus one, x2 unchanged
    raw = json.loads(synthetic["train_annotations"].read_text())["annotation"][index]
    assert target["boxes_h"][0].tolist() == [raw["boxes_h"][0][0] - 1, raw["boxes_h"][0][1] - 1,
                                             *raw["boxes_h"][0][2:]]


def test_transform_and_dataloader(synthetic: dict) -> None:
    transform = HOITransform(train=True, config=TransformConfig(scales=(64, 96), test_scale=96,
                                                                max_size=160))
    dataset = HICODet(synthetic["train_images"], synthetic["train_annotations"], transform)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, collate_fn=collate_fn)
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 4
    for image, target in zip(images, targets, strict=True):
        assert min(image.shape[-2:]) in (64, 96)
        assert target["size"].tolist() == list(image.shape[-2:])
        width, height = dataset.annotations.sizes[target["index"]]
        assert target["orig_size"].tolist() == [height, width]
        assert (target["boxes_h"][:, 2:] <= target["size"].flip(0)).all()


def test_skip_empty(synthetic: dict) -> None:
    dataset = HICODet(synthetic["train_images"], synthetic["train_annotations"],
                      skip_empty=False)
    assert len(dataset) == 24 and dataset.image_indices == list(range(24))
    _, target = dataset[11]  # every twelfth image is empty
    assert target["boxes_h"].shape == (0, 4) and target["hoi"].shape == (0,)


@pytest.mark.parametrize("rule", ["drop_images", "drop_pairs"])
def test_zero_shot(synthetic: dict, rule: str) -> None:
    full = HICODet(synthetic["train_images"], synthetic["train_annotations"])
    dataset = HICODet(synthetic["train_images"], synthetic["train_annotations"],
                      zero_shot="nf_uc", zero_shot_rule=rule, skip_empty=False)
    assert len(dataset.class_set) == 480
    assert list(dataset.class_ids) == seen_classes("nf_uc") == list(dataset.seen_to_full)
    unseen = set(unseen_classes("nf_uc"))
    served = set(dataset.image_indices)
    assert 11 in served  # never-annotated images stay with skip_empty=False
    for i in range(len(dataset)):
        _, target = dataset[i]
        full_ids = [dataset.class_ids[k] for k in target["hoi"].tolist()]
        assert not set(full_ids) & unseen
        assert [dataset.class_set.objects[k] for k in target["hoi"].tolist()] == \
            target["object"].tolist()
        if target["index"] % 12 != 11:
            assert len(full_ids) > 0
    # images whose labels were all unseen are gone
    dropped = set(full.image_indices) - served
    assert dropped
    for index in dropped:
        assert set(full.annotations.hoi[index].tolist()) & unseen


def test_zero_shot_rules_differ(synthetic: dict) -> None:
    # UV: "ride bicycle" is unseen, "sit on bicycle" (same pairs) is seen
    images = [HICODet(synthetic["train_images"], synthetic["train_annotations"],
                      zero_shot="uv", zero_shot_rule=rule) for rule in
              ("drop_images", "drop_pairs")]
    rows = [sum(len(h) for h in d.annotations.hoi) for d in images]
    assert rows[1] < rows[0] and len(images[1]) <= len(images[0])
    with pytest.raises(ValueError, match="zero-shot rule"):
        HICODet(synthetic["train_images"], synthetic["train_annotations"],
                zero_shot="nf_uc", zero_shot_rule="drop")


def test_missing_paths(small: dict, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        HICODet(small["train_images"], tmp_path / "nothing.json")
    with pytest.raises(FileNotFoundError, match="no_images"):
        HICODet(tmp_path / "no_images", small["train_annotations"])
    names = json.loads(small["train_annotations"].read_text())["filenames"]
    for name in names[:2]:
        (small["train_images"] / name).unlink()
    with pytest.raises(FileNotFoundError,
                       match=rf"2 of 11 images .* missing .*{names[0]}, {names[1]}"):
        HICODet(small["train_images"], small["train_annotations"])


def test_unreadable_or_mismatched_image(small: dict) -> None:
    dataset = HICODet(small["train_images"], small["train_annotations"])
    path = dataset.image_paths[dataset.image_indices[0]]
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageError, match=path.name):
        dataset[0]
    other = dataset.image_paths[dataset.image_indices[1]]
    Image.new("RGB", (7, 5)).save(other)
    with pytest.raises(ImageError, match=rf"{other.name}: image is 7x5 pixels"):
        dataset[1]


def test_exif_orientation_is_not_applied(small: dict) -> None:
    dataset = HICODet(small["train_images"], small["train_annotations"])
    path = dataset.image_paths[dataset.image_indices[0]]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(path).save(path, exif=exif.tobytes())
    image, target = dataset[0]
    assert target["size"].tolist() == list(image.shape[-2:])
    width, height = dataset.annotations.sizes[dataset.image_indices[0]]
    assert image.shape[-2:] == (height, width)


# --- V-COCO -------------------------------------------------------------------------------

def _write_vcoco(root: Path) -> Path:
    """A fredzzhang-format V-COCO file over three images in the three places COCO images
    may be, plus one image without pairs."""
    names = ["COCO_train2014_000000000001.jpg", "COCO_val2014_000000000002.jpg",
             "COCO_val2014_000000000003.jpg", "COCO_val2014_000000000004.jpg"]
    folders = ["train2014", ".", "val2014", "val2014"]
    for name, folder in zip(names, folders, strict=True):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (90, 90, 90)).save(root / folder / name)
    hold, ride = VCOCO_ACTIONS.index("hold obj"), VCOCO_ACTIONS.index("ride instr")
    cup, horse = COCO_OBJECTS.index("cup") + 1, COCO_OBJECTS.index("horse") + 1
    pair = {"boxes_h": [[1.5, 2.0, 30.0, 40.0]], "boxes_o": [[20.0, 10.0, 40.5, 30.0]]}
    annotations = [
        {**pair, "actions": [hold], "objects": [cup], "file_name": names[0]},
        {"boxes_h": pair["boxes_h"] * 2, "boxes_o": pair["boxes_o"] * 2,
         "actions": [hold, ride], "objects": [horse, horse], "file_name": names[1]},
        {**pair, "actions": [ride], "objects": [horse], "file_name": names[2]},
        {"boxes_h": [], "boxes_o": [], "actions": [], "objects": [], "file_name": names[3]},
    ]
    data = {"images": [1, 2, 3, 4], "annotations": annotations,
            "classes": list(VCOCO_ACTIONS), "objects": ["background", *COCO_OBJECTS],
            "action_to_object": [[] for _ in VCOCO_ACTIONS]}
    path = root / "instances_vcoco_test.json"
    path.write_text(json.dumps(data))
    return path


def test_vcoco(tmp_path: Path) -> None:
    annotation_file = _write_vcoco(tmp_path)
    dataset = VCOCO(tmp_path, annotation_file)
    assert len(dataset) == 3 and dataset.class_set == vcoco_classes()
    assert [p.relative_to(tmp_path).parts[0] for p in dataset.image_paths.values()] == [
        "train2014", "COCO_val2014_000000000002.jpg", "val2014"]
    classes = vcoco_classes()
    for i in range(3):
        image, target = dataset[i]
        assert set(target) == TARGET_KEYS and image.shape == (3, 48, 64)
        assert target["verb"].tolist() == dataset.annotations.hoi[i].tolist()
        assert [classes.verb_ids[k] for k in target["hoi"].tolist()] == target["verb"].tolist()
        assert [classes.objects[k] for k in target["hoi"].tolist()] == target["object"].tolist()
    assert dataset[0][1]["boxes_o"].tolist() == [[20.0, 10.0, 40.5, 30.0]]  # unchanged
    assert len(VCOCO(tmp_path, annotation_file, skip_empty=False)) == 4

    (tmp_path / "val2014" / "COCO_val2014_000000000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images.*000000000003"):
        VCOCO(tmp_path, annotation_file)


def test_vcoco_invalid_pair(tmp_path: Path) -> None:
    annotation_file = _write_vcoco(tmp_path)
    data = json.loads(annotation_file.read_text())
    data["annotations"][0]["objects"] = [COCO_OBJECTS.index("toothbrush") + 1]
    data["annotations"][0]["actions"] = [VCOCO_ACTIONS.index("ride instr")]
    annotation_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not V-COCO classes"):
        VCOCO(tmp_path, annotation_file)


# --- the real annotation files: start-up checks report the missing images -----------------

def test_real_files_report_missing_images(shared_dir: Path, tmp_path: Path) -> None:
    data = shared_dir / "data"
    with pytest.raises(FileNotFoundError, match=r"9658 of 9658 images .*HICO_test2015_00000001"):
        HICODet(tmp_path, data / "hicodet/instances_test2015.json", skip_empty=False)
    with pytest.raises(FileNotFoundError, match=r"4532 of 4532 images .*COCO_val2014_"):
        VCOCO(tmp_path, data / "vcoco/instances_vcoco_test.json")

"""Your own interactions: the custom annotation format, its zero-shot split and rare classes,
the evaluator on any class set, the converters (on the real HICO-DET and V-COCO files) and
a smoke training run on synthetic data whose objects are not COCO's."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_annotations import fredzzhang, qpic
from test_annotations import write as write_json
from test_eval_hicodet import synthetic_detections  # benchmarks/bench_eval.py's

from clip4hoi.cli import main
from clip4hoi.config import DetectorConfig
from clip4hoi.data.annotations import load_hicodet_annotations, load_vcoco_annotations
from clip4hoi.data.custom import (
    convert,
    load_annotations,
    load_custom_annotations,
    rare_classes,
    unseen_class_ids,
)
from clip4hoi.data.metadata import hicodet_classes, parse_class_text
from clip4hoi.engine.data import choose_detector
from clip4hoi.errors import InputError
from clip4hoi.evaluation import (
    detections_from_ground_truth,
    evaluate_files,
    evaluate_hicodet,
    write_detections,
)

PERSON, DRILL, WRENCH = [0, 0, 100, 200], [80, 50, 140, 90], [10, 10, 40, 30]


def valid() -> dict:
    """Two images: operate drill (by name), hold wrench and a person-person hug (by index
    into the lists), and an image without interaction; an extra class without pairs."""
    return {
        "objects": ["person", "drill", "wrench"],
        "verbs": ["operate", "hold", "hug"],
        "classes": [{"verb": "inspect", "object": "drill", "sentence": "a technician "
                     "inspecting a drill"}],
        "images": [
            {"file_name": "a.jpg", "width": 640, "height": 480,
             "annotations": [{"bbox": PERSON, "category": "person"},
                             {"bbox": DRILL, "category": "drill"},
                             {"bbox": WRENCH, "category": 2},
                             {"bbox": [300, 0, 400, 200], "category": "Person"}],
             "hoi_annotation": [{"subject_id": 0, "object_id": 1, "verb": "operate"},
                                {"subject_id": 0, "object_id": 2, "verb": 1},
                                {"subject_id": 3, "object_id": 0, "verb": "hug"}]},
            {"file_name": "b.jpg", "annotations": [], "hoi_annotation": []},
        ],
    }


def test_the_class_set_is_the_text_of_the_data(tmp_path: Path) -> None:
    ann = load_custom_annotations(write_json(tmp_path, "a.json", valid()))
    classes = ann.class_set
    assert [f"{v} {o}" for v, o in zip(classes.verbs, classes.object_names, strict=True)] == \
        ["inspect drill", "operate drill", "hold wrench", "hug person"]
    assert classes.sentences[0] == "a technician inspecting a drill"
    assert classes.object_vocabulary[80:] == ("drill", "wrench")    # after COCO's 80
    assert ann.dataset == "custom" and ann.rare is None and len(ann) == 2
    assert ann.hoi[0].tolist() == [1, 2, 3] and ann.objects[0].tolist() == [80, 81, 0]
    np.testing.assert_array_equal(ann.boxes_o[0][2], PERSON)        # person as the object
    assert ann.sizes.tolist() == [[640, 480], [0, 0]] and ann.empty.tolist() == [1]
    # CRLF line ends and a byte-order mark read the same
    text = json.dumps(valid(), indent=1).replace("\n", "\r\n")
    (tmp_path / "crlf.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    again = load_custom_annotations(tmp_path / "crlf.json")
    assert again.class_set.to_json()["classes"] == classes.to_json()["classes"]
    assert again.hoi[0].tolist() == ann.hoi[0].tolist()
    # benchmark files still read through the same entry point
    assert load_annotations(write_json(tmp_path, "f.json", fredzzhang())).dataset == "hicodet"


def _image(data: dict) -> dict:
    return data["images"][0]


BROKEN = [
    (lambda d: _image(d).pop("file_name"), "image 0: missing field 'file_name'"),
    (lambda d: _image(d).pop("hoi_annotation"), r"a\.jpg\): missing field 'hoi_annotation'"),
    (lambda d: _image(d)["annotations"][1].pop("bbox"), r"annotations\[1\]: missing field 'bbox'"),
    (lambda d: _image(d)["annotations"][1].pop("category"), "missing field 'category'"),
    (lambda d: _image(d)["hoi_annotation"][0].pop("verb"), r"hoi_annotation\[0\]: missing "
     "field 'verb'"),
    (lambda d: _image(d)["hoi_annotation"][0].update(subject_id=7), "field 'subject_id' is 7, "
     "not an index into the image's 4 annotations"),
    (lambda d: _image(d)["hoi_annotation"][0].update(subject_id=1), "the subject .* is a "
     "'drill'; the subject of an interaction must be a person"),
    (lambda d: d.update(objects=[]), "field 'objects' is empty"),
    (lambda d: d.update(verbs=[]), "field 'verbs' is empty"),
    (lambda d: d.update(classes=[], images=[{"file_name": "x.jpg", "annotations": [],
                                             "hoi_annotation": []}]),
     "no interaction classes"),
    (lambda d: d.update(objects=["person", "drill", "Drill"]), "'Drill' repeats 'drill'"),
    (lambda d: d.update(classes=[{"verb": "hold", "object": "drill"}] * 2),
     r"class 1 \('hold', 'drill'\) repeats class 0"),
    (lambda d: d["images"].append(_image(d)), "file name 'a.jpg' repeats image 0"),
    (lambda d: d.pop("objects"), r"'category' is the index 2, but the file has no top-level "
     "list"),
    (lambda d: _image(d)["annotations"][1].update(category="saw"), "'category' is 'saw', "
     "which is not in the file's list"),
    (lambda d: _image(d)["annotations"][1].update(bbox=[5, 5, 1, 1]), "x2 < x1"),
    (lambda d: _image(d).update(width=0), "'width', 'height' are"),
    (lambda d: d.update(images={}), "field 'images' must be a list"),
]


@pytest.mark.parametrize(("change", "message"), BROKEN)
def test_broken_files_are_named_and_nothing_is_written(tmp_path: Path, change: object,
                                                       message: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    data = valid()
    change(data)  # type: ignore[operator]
    path = write_json(tmp_path, "broken.json", data)
    with pytest.raises(InputError, match=message) as error:
        load_custom_annotations(path)
    assert str(error.value).startswith(str(path))
    # the commands say it in one line and write nothing
    dets = write_json(tmp_path, "dets.json", {"images": []})
    out = tmp_path / "results.json"
    assert main(["eval", "--annotations", str(path), "--detections", str(dets),
                 "--json", str(out)]) == 2
    assert "broken.json" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------- splits, rare


def test_zero_shot_names_and_rare_counts(tmp_path: Path) -> None:
    classes = load_custom_annotations(write_json(tmp_path, "a.json", valid())).class_set
    assert unseen_class_ids(classes, "operate drill, hug | person") == [1, 3]
    assert unseen_class_ids(classes, ["Hold  Wrench"]) == [2]
    assert unseen_class_ids(classes, unseen_verbs=["operate", "inspect"]) == [0, 1]
    assert unseen_class_ids(classes, unseen_objects=["drill"]) == [0, 1]
    (tmp_path / "unseen.txt").write_text("hold wrench\ninspect drill\n")
    assert unseen_class_ids(classes, str(tmp_path / "unseen.txt")) == [0, 2]
    with pytest.raises(InputError, match="'ride camel' is not a class"):
        unseen_class_ids(classes, "ride camel")
    with pytest.raises(InputError, match="'saw' is not a object"):
        unseen_class_ids(classes, unseen_objects=["saw"])
    other = parse_class_text("ride camel", open_vocabulary=True)
    assert unseen_class_ids(classes, "ride camel", known=[other]) == []   # the other file's
    training = load_custom_annotations(tmp_path / "a.json")
    assert rare_classes(classes, training, threshold=1).tolist() == [0]   # no pair
    assert rare_classes(classes, training).tolist() == [0, 1, 2, 3]


def test_the_detector_follows_the_objects() -> None:
    coco = parse_class_text("ride bicycle, hold cup")
    tools = parse_class_text("operate drill, ride bicycle", open_vocabulary=True)
    auto = DetectorConfig(type="auto")
    assert "DETR" in choose_detector(auto, coco) and auto.type == "detr"
    auto = DetectorConfig(type="auto")
    assert "objects outside COCO: drill" in choose_detector(auto, tools)
    assert auto.type == "grounding_dino"
    with pytest.raises(InputError, match=r"drill are not COCO objects.*grounding_dino"):
        choose_detector(DetectorConfig(type="detr"), tools)
    assert "Grounding DINO" in choose_detector(DetectorConfig(type="grounding_dino"), coco)


# ----------------------------------------------------------------------- converters


def test_converted_hicodet_evaluates_as_hicodet(shared_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """Acceptance: HICO-DET's test file through `clip4hoi convert` and the generic evaluator
    equals the HICO-DET evaluator, on every class and group, for a DETS.json written for
    HICO-DET (as `clip4hoi detect --classes hicodet` writes it)."""
    source = shared_dir / "data" / "hicodet" / "instances_test2015.json"
    converted = tmp_path / "hicodet_test.json"
    assert main(["convert", str(source), str(converted)]) == 0
    assert "HICO-DET" in capsys.readouterr().err
    hico = load_hicodet_annotations(source)
    first = replace(hico, **{k: getattr(hico, k)[:2000] for k in (
        "file_names", "sizes", "boxes_h", "boxes_o", "hoi", "objects", "verbs")})
    det = synthetic_detections(first, per_image=20, seed=1)   # the other images: none
    write_detections(tmp_path / "dets.json", det, first)
    payload = json.loads((tmp_path / "dets.json").read_text())
    (tmp_path / "dets.json").write_text(json.dumps({"classes": "hicodet", **payload}))
    for kwargs in ({}, {"known_object": True}):
        expected = evaluate_files(source, tmp_path / "dets.json", **kwargs)
        got = evaluate_files(converted, tmp_path / "dets.json", **kwargs)
        difference = np.nanmax(np.abs(expected.ap - got.ap))
        print(f"max per-class AP difference {kwargs}: {difference:.3g}")
        assert difference <= 1e-6 and np.array_equal(np.isnan(expected.ap), np.isnan(got.ap))
        for key, value in expected.maps.items():
            assert abs(got.maps[key] - value) <= 1e-6, key
        assert set(got.maps) == {"full", "rare", "non_rare"}
    ann = load_annotations(converted)
    assert (ann.class_set.verbs, ann.class_set.object_names) == \
        (hicodet_classes().verbs, hicodet_classes().object_names)
    assert ann.num_pairs == hico.num_pairs == 33405
    # the QPIC layout converts to the same content
    qpic_file = write_json(tmp_path, "test_hico.json", qpic())
    fred_file = write_json(tmp_path, "fred.json", fredzzhang())
    from_qpic, from_fred = convert(qpic_file)[0], convert(fred_file)[0]
    for image in from_fred["images"]:    # QPIC files give no image sizes
        image.pop("width"), image.pop("height")
    assert from_qpic["images"] == from_fred["images"]


def test_converted_vcoco_keeps_every_pair(shared_dir: Path, tmp_path: Path) -> None:
    source = shared_dir / "data" / "vcoco" / "instances_vcoco_test.json"
    data, kind = convert(source)
    assert kind == "V-COCO" and len(data["classes"]) == 236
    path = tmp_path / "vcoco.json"
    path.write_text(json.dumps(data))
    ann, original = load_annotations(path), load_vcoco_annotations(source)
    assert ann.num_pairs == original.num_pairs and len(ann) == len(original)
    assert ann.class_set.verbs[0] == "hold"
    assert ann.class_set.name == "vcoco (custom)"   # not V-COCO's action-role ids
    result = evaluate_hicodet(detections_from_ground_truth(ann), ann)
    assert round(100 * result.maps["full"], 6) == 100.0


# ----------------------------------------------------------------------- training


def test_smoke_training_on_objects_outside_coco(tmp_path: Path) -> None:
    """Acceptance: configs/custom_smoke.yaml (tiny random Grounding DINO) on a synthetic
    dataset of tools, with one class left out (zero-shot): a clearly non-random mAP on its
    training images, reported as Full / Rare / Non-rare / Unseen / Seen."""
    from test_engine import single_thread

    from clip4hoi.data.synthetic import make_custom_synthetic
    from clip4hoi.engine.config import load_experiment
    from clip4hoi.engine.evaluate import evaluate_model
    from clip4hoi.engine.trainer import Trainer

    vocabulary = ("operate drill, hold drill, carry drill, hold wrench, carry wrench, "
                  "turn wrench, wear helmet, carry helmet")
    data = make_custom_synthetic(tmp_path / "data", vocabulary, n_train=40, n_test=4,
                                 image_size=128)
    settings = [
        f"data.root={tmp_path / 'data'}", f"model.detector.tokenizer={data['tokenizer']}",
        f"train.output_dir={tmp_path / 'run'}", f"feature_cache.dir={tmp_path / 'cache'}",
        "data.transform.scales=[128]", "data.transform.test_scale=128",
        "data.transform.max_size=256", "train.epochs=50", "train.lr_drop_epochs=[40]",
        "train.eval_at_end=false", "data.test_images=images/train",
        "data.test_annotations=train.json", "data.unseen_classes=[hold wrench]"]
    config = load_experiment(REPO / "configs" / "custom_smoke.yaml", settings)
    started = time.perf_counter()
    with single_thread():
        trainer = Trainer(config)
        assert trainer.model.config.detector.type == "grounding_dino"
        assert len(trainer.train_set.class_set) == 7 and len(trainer.test_set.class_set) == 8
        before = evaluate_model(trainer.model, trainer.test_set, trainer.info, batch_size=8,
                                cache=trainer.cache)
        trainer.fit()
        after = evaluate_model(trainer.model, trainer.test_set, trainer.info, batch_size=8,
                               cache=trainer.cache)
    seconds = time.perf_counter() - started
    print(f"custom smoke run ({seconds:.0f} s): before {before.maps}, after {after.maps}")
    assert set(after.maps) == {"full", "rare", "non_rare", "unseen", "seen"}
    unseen = [c for c in after.report["per_class"] if c["unseen"]]
    assert [(c["verb"], c["object"]) for c in unseen] == [("hold", "wrench")]
    assert before.maps["seen"] < 50 and after.maps["seen"] >= 90
    assert after.maps["full"] > before.maps["full"] + 20
    # the checkpoint detects every class of the experiment, by name
    stored = json.loads(trainer.model.config.classes)["classes"]
    assert [(c["verb"], c["object"]) for c in stored][3] == ("hold", "wrench")
    # a fresh process resumes it: the classes and detector it chose are chosen again
    resumed = Trainer(load_experiment(REPO / "configs" / "custom_smoke.yaml", settings),
                      resume=True)
    assert resumed.step == trainer.step and resumed.model.config == trainer.model.config

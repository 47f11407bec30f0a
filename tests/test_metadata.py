"""Class tables, free-text class sets and the generated assets."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO

from clip4hoi.data import metadata
from clip4hoi.data.metadata import HOIClassSet, describe, load_classes, parse_class_text


def test_assets_equal_what_the_builder_derives(shared_dir) -> None:
    spec = importlib.util.spec_from_file_location("build_metadata",
                                                  REPO / "tools" / "build_metadata.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    for name, content in builder.build(shared_dir / "data").items():
        assert (REPO / "clip4hoi" / "data" / "assets" / name).read_text() == builder.dump(content)


def test_tables() -> None:
    classes = metadata.hicodet_classes()
    assert len(classes) == 600 and len(metadata.hicodet_rare()) == 138
    assert metadata.COCO_OBJECTS[0] == "person" and len(metadata.COCO_OBJECTS) == 80
    assert metadata.HICO_VERBS[metadata.NO_INTERACTION_VERB_ID] == "no_interaction"
    assert (classes.verbs[0], classes.object_names[0]) == ("board", "airplane")
    assert len(metadata.vcoco_classes()) == 236 and len(metadata.VCOCO_ACTIONS) == 24
    assert all(s.startswith("a photo of a person ") for s in metadata.vcoco_classes().sentences)


def test_generated_sentences_match_the_hand_written_ones() -> None:
    classes = metadata.hicodet_classes()
    differ = [(s, describe(v, o)) for v, o, s in
              zip(classes.verbs, classes.object_names, classes.sentences, strict=True)
              if s != describe(v, o)]
    # The only differences: the published sentences say "a umbrella".
    assert differ and all("a umbrella" in s and "an umbrella" in d for s, d in differ)
    assert describe("sit on", "dining_table") == "a photo of a person sitting on a dining table"
    assert metadata.gerund("exit") == "exiting" and metadata.gerund("cut") == "cutting"


def test_free_text_classes() -> None:
    classes = parse_class_text("ride bicycle; hold  cup\nsit on dining table, Hold Sports Ball")
    assert classes.verbs == ("ride", "hold", "sit on", "hold")
    assert classes.object_names == ("bicycle", "cup", "dining_table", "sports_ball")
    assert classes.verb_ids == (0, 1, 2, 1)
    with pytest.raises(ValueError, match="unicycle"):
        parse_class_text("ride unicycle")
    with pytest.raises(ValueError, match="no classes"):
        parse_class_text(" , ")


def test_load_classes_from_files(tmp_path) -> None:
    text = tmp_path / "classes.txt"
    text.write_text("ride horse\nfeed horse\n")
    assert load_classes(str(text)).verbs == ("ride", "feed")
    as_json = tmp_path / "classes.json"
    as_json.write_text(json.dumps(parse_class_text("hug person").to_json()))
    assert HOIClassSet.from_json(json.loads(as_json.read_text())).verbs == ("hug",)
    assert load_classes(str(as_json)).objects == (0,)
    bad = tmp_path / "bad.json"
    bad.write_text('{"classes": [{"verb": "ride"}]}')
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_classes(str(bad))
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        load_classes(str(tmp_path / "missing.txt"))


def test_zero_shot_lists() -> None:
    assert len(metadata.zero_shot_unseen("RF-UC")) == 120
    with pytest.raises(ValueError, match="rf_uc"):
        metadata.zero_shot_unseen("bogus")

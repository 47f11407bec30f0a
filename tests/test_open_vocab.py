"""The open-vocabulary detector (Grounding DINO through transformers): tiny random models
and a tokenizer written by the test (nothing is downloaded), objects that are not COCO's."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    SCENE,
    SIZE,
    TINY_CLIP,
    crafted_detr_outputs,
    edit_stored_config,
    set_flags,
    tiny_model_config,
)

transformers = pytest.importorskip("transformers")

from clip4hoi.api import HOIDetector, to_records  # noqa: E402
from clip4hoi.cli import main  # noqa: E402
from clip4hoi.config import TrainingFreeConfig, from_dict, to_dict  # noqa: E402
from clip4hoi.data.metadata import (  # noqa: E402
    COCO_OBJECTS,
    hicodet_classes,
    load_classes,
    parse_class_text,
)
from clip4hoi.engine.checkpoint import (  # noqa: E402
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from clip4hoi.models.detr import normalize  # noqa: E402
from clip4hoi.models.grounding_dino import (  # noqa: E402
    GroundingDINO,
    build_grounding_dino,
    build_prompts,
    postprocess,
    write_word_tokenizer,
)
from clip4hoi.models.model import CLIP4HOI, build_detector, build_model  # noqa: E402
from clip4hoi.models.training_free import build_training_free  # noqa: E402
from clip4hoi.weights import WeightsUnavailableError, resolve_open_vocab  # noqa: E402

CLASSES = "play guitar, ride camel, walk llama, ride bicycle"
# A BERT WordPiece vocabulary with the ids Grounding DINO treats as special: [CLS] 101,
# [SEP] 102, "." 1012, "?" 1029 (those of bert-base-uncased).
WORDS = ["person", "guitar", "camel", "bicycle", "cup", "play", "ride", "walk", "lla", "##ma"]


def write_tokenizer(folder: Path) -> Path:
    """A tiny BERT tokenizer folder (vocab.txt + tokenizer_config.json)."""
    return write_word_tokenizer(folder, WORDS)


TINY_GDINO = {
    "backbone_config": {"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1],
                        "num_heads": [1, 1, 1, 1], "window_size": 7, "image_size": 224,
                        "out_indices": [2, 3, 4]},
    "text_config": {"model_type": "bert", "vocab_size": 1029 + 1 + len(WORDS),
                    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "intermediate_size": 64, "max_position_embeddings": 64},
    "d_model": 32, "encoder_layers": 1, "decoder_layers": 2, "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
    "num_queries": 30, "max_text_len": 64,
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def detector_overrides(tokenizer: Path, prefix: str = "") -> list[str]:
    return [f"{prefix}detector.type=grounding_dino", f"{prefix}detector.weights=random",
            f"{prefix}detector.architecture={json.dumps(TINY_GDINO)}",
            f"{prefix}detector.tokenizer={tokenizer}"]


def tiny_open_config(tokenizer: Path):
    config = tiny_model_config()
    config.detector.type = "grounding_dino"
    config.detector.architecture = dict(TINY_GDINO)
    config.detector.tokenizer = str(tokenizer)
    config.classes = CLASSES
    return config


@pytest.fixture(scope="module")
def gdino(tokenizer_dir: Path) -> GroundingDINO:
    torch.manual_seed(0)
    return build_grounding_dino(None, TINY_GDINO, tokenizer_dir)


@pytest.fixture(scope="module")
def model(tokenizer_dir: Path) -> CLIP4HOI:
    torch.manual_seed(0)
    return build_model(tiny_open_config(tokenizer_dir)).eval()


# ----------------------------------------------------------------------- vocabularies


def test_class_sets_take_any_object_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grounding_dino"):
        parse_class_text("play guitar")
    classes = parse_class_text(CLASSES + ", hold cup, play | electric guitar",
                               open_vocabulary=True)
    assert classes.object_names == ("guitar", "camel", "llama", "bicycle", "cup",
                                    "electric_guitar")
    assert classes.object_vocabulary[:80] == COCO_OBJECTS   # COCO ids are kept
    assert classes.objects == (80, 81, 82, 1, 41, 83)
    assert classes.used_objects == (1, 41, 80, 81, 82, 83)
    assert classes.sentences[1] == "a photo of a person riding a camel"
    (tmp_path / "classes.json").write_text(json.dumps(classes.to_json()))
    assert load_classes(str(tmp_path / "classes.json"), open_vocabulary=True) == classes
    with pytest.raises(ValueError, match="guitar"):
        load_classes(str(tmp_path / "classes.json"))
    assert classes.subset([1]).object_names == ("camel",)
    # COCO-only sets are the same with and without the open vocabulary.
    assert parse_class_text("ride bicycle, hold cup", open_vocabulary=True) == \
        parse_class_text("ride bicycle, hold cup")
    assert hicodet_classes().object_vocabulary == COCO_OBJECTS


def test_prompts_are_chunked_to_the_text_length(gdino: GroundingDINO) -> None:
    names = ["person", "guitar", "camel", "llama", *COCO_OBJECTS[1:]]
    prompts = build_prompts(gdino.tokenizer, names, list(range(len(names))), max_length=24)
    assert len(prompts) > 1
    covered = []
    for prompt in prompts:
        assert len(prompt.input_ids) <= 24 and int(prompt.objects[0]) == 0   # person first
        ids = prompt.input_ids.tolist()
        assert ids[0] == 101 and ids[-1] == 102
        for (_, end), obj in zip(prompt.spans, prompt.objects.tolist(), strict=True):
            assert ids[end] == 1012                                      # "." after each name
            covered.append(obj)
    assert sorted(set(covered)) == list(range(len(names)))
    first = prompts[0].input_ids.tolist()
    assert [gdino.tokenizer.decode(first[s:e]) for s, e in prompts[0].spans[:3]] == \
        ["person", "guitar", "camel"]
    assert build_prompts(gdino.tokenizer, ["person", "llama"], [0, 82], 64)[0].spans == \
        ((1, 2), (3, 5))                                                 # lla ##ma


@torch.no_grad()
def test_long_vocabularies_run_in_chunks(gdino: GroundingDINO) -> None:
    """More names than the text length holds: one pass per prompt, queries concatenated,
    each query labelled with a name of its own prompt."""
    vocabulary = list(COCO_OBJECTS)
    prompts = gdino.prompts(vocabulary)
    assert len(prompts) == 3                                   # 80 names, 64 tokens a prompt
    out = gdino([torch.rand(3, 64, 80)], vocabulary)
    queries = gdino.config["num_queries"]
    assert out["pred_logits"].shape == (1, queries * len(prompts), 81)
    assert out["hidden_states"].shape == (1, queries * len(prompts), 32)
    labels = out["pred_logits"][0].softmax(-1)[:, :-1].argmax(-1)
    for i, prompt in enumerate(prompts):
        assert set(labels[i * queries:(i + 1) * queries].tolist()) <= set(prompt.objects.tolist())


@torch.no_grad()
def test_runs_in_fp32_under_autocast(gdino: GroundingDINO) -> None:
    """Under bf16 autocast the detector's boxes, logits and states equal the fp32 ones."""
    image, vocabulary = torch.rand(3, 64, 80), ["person", "guitar", "camel"]
    reference = gdino([image], vocabulary)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = gdino([image], vocabulary)
    for key, value in reference.items():
        assert mixed[key].dtype == torch.float32
        torch.testing.assert_close(mixed[key], value)


# --------------------------------------------------------------------------- parity


@torch.no_grad()
def test_postprocess_matches_transformers(gdino: GroundingDINO) -> None:
    """Boxes, scores and labels equal transformers' post_process_grounded_object_detection
    (on the name tokens, which our scores read) for the same random model and image."""
    from transformers.models.grounding_dino.processing_grounding_dino import (
        get_phrases_from_posmap,
    )

    vocabulary = ["person", "guitar", "camel", "bicycle"]
    image = torch.rand(3, 96, 128)
    ours = gdino([image], vocabulary)
    (prompt,) = gdino.prompts(vocabulary)
    ids = prompt.input_ids[None]
    raw = gdino.model(pixel_values=image[None], pixel_mask=torch.ones(1, 96, 128).long(),
                      input_ids=ids, attention_mask=torch.ones_like(ids),
                      token_type_ids=torch.zeros_like(ids))
    names = torch.zeros(raw.logits.shape[-1], dtype=torch.bool)
    for start, end in prompt.spans:
        names[start:end] = True
    raw.logits = raw.logits.masked_fill(~names, float("-inf"))   # separators, [CLS], [SEP]
    processor = transformers.GroundingDinoProcessor(
        image_processor=transformers.GroundingDinoImageProcessor(), tokenizer=gdino.tokenizer)
    threshold = float(raw.logits.sigmoid().amax(-1).median())
    (reference,) = processor.post_process_grounded_object_detection(
        raw, input_ids=ids, threshold=threshold, text_threshold=0.0, target_sizes=[(96, 128)])
    (mine,) = postprocess(ours, [(96, 128)], threshold)
    assert 0 < len(mine["scores"]) == len(reference["scores"]) < 30
    assert torch.allclose(mine["boxes"], reference["boxes"], atol=1e-4)
    assert torch.allclose(mine["scores"], reference["scores"], atol=1e-5)
    probs = raw.logits[0].sigmoid()[raw.logits[0].sigmoid().amax(-1) > threshold]
    best = get_phrases_from_posmap(probs == probs.amax(-1, keepdim=True), ids[0])
    assert processor.batch_decode(best) == [vocabulary[i] for i in mine["labels"]]


# ---------------------------------------------------------------------- the pipeline


def test_trained_mode_finds_objects_outside_coco(model: CLIP4HOI) -> None:
    classes = model.classes
    assert model.config.detector.type == "grounding_dino" and model.open_vocabulary
    images = [torch.rand(3, *SIZE), torch.rand(3, 96, 128)]
    features = model.extract_features(images)
    assert features.logits.shape == (2, 30, len(classes.object_vocabulary) + 1)
    assert features.hidden.shape == (2, 30, 32)
    with torch.no_grad():
        outputs = model(images)
    assert all(len(out["scores"]) for out in outputs)
    for out in outputs:
        assert torch.equal(torch.tensor(classes.objects)[out["hoi"]], out["objects"])
    records = to_records(outputs[0], classes)
    assert {r["object"] for r in records} <= {"guitar", "camel", "llama", "bicycle"}
    # A training step reaches the head only.
    model.train()
    try:
        target = {"boxes_h": torch.tensor([[10.0, 10, 60, 110]]),
                  "boxes_o": torch.tensor([[20.0, 60, 90, 118]]),
                  "object": torch.tensor([81]), "hoi": torch.tensor([1]),
                  "verb": torch.tensor([1])}
        losses = model([images[0]], [target])
        sum(losses.values()).backward()
        assert all(p.grad is None for p in model.detector.parameters())
        assert any(p.grad is not None for p in model.interactor.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


@pytest.mark.parametrize("mode", ["crop", "dense"])
def test_training_free_modes_with_new_objects(mode: str, tokenizer_dir: Path) -> None:
    config = TrainingFreeConfig(mode=mode, classes=CLASSES)
    config.detector = from_dict(type(config.detector), {
        **to_dict(config.detector), "type": "grounding_dino", "weights": "random",
        "architecture": TINY_GDINO, "tokenizer": str(tokenizer_dir)})
    config.clip.pretrained, config.clip.model_cfg = None, dict(TINY_CLIP)
    torch.manual_seed(0)
    free = build_training_free(config)
    (out,) = free([torch.rand(3, *SIZE)])
    assert len(out["scores"]) > 0
    names = {free.classes.object_vocabulary[o] for o in out["objects"].tolist()}
    assert names <= {"guitar", "camel", "llama", "bicycle"}
    assert (out["scores"] > 0).all()


def test_cli_detect_with_new_objects(tmp_path: Path, tokenizer_dir: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    Image.new("RGB", (96, 72), (120, 80, 40)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "photo.png"), "--classes", "play guitar, ride camel",
                 "--random-weights", "--mode", "dense", "--no-draw", "--out", str(out),
                 *set_flags([*detector_overrides(tokenizer_dir),
                             f"clip.model_cfg={json.dumps(TINY_CLIP)}"])]) == 0
    payload = json.loads((out / "photo.png.json").read_text())
    assert payload["detections"]
    assert {d["object"] for d in payload["detections"]} <= {"guitar", "camel"}
    assert {d["verb"] for d in payload["detections"]} <= {"play", "ride"}


def test_train_with_the_feature_cache_then_ask_about_new_objects(
        tmp_path: Path, tokenizer_dir: Path) -> None:
    """``clip4hoi train`` on HICO-DET-format data with Grounding DINO (features cached),
    then the trained head finds a guitar."""
    from test_engine import make_small_data, single_thread

    data = make_small_data(tmp_path / "data")
    settings = [f"data.root={data}", f"feature_cache.dir={tmp_path / 'cache'}",
                "data.transform.scales=[112,128]", "data.transform.test_scale=128",
                "data.transform.max_size=256", "train.epochs=1", "train.batch_size=4",
                "train.eval_every=0", "train.tensorboard=false",
                *detector_overrides(tokenizer_dir, "model.")]
    with single_thread():
        assert main(["train", str(Path(__file__).parents[1] / "configs" / "smoke.yaml"),
                     "--output-dir", str(tmp_path / "run"), *set_flags(settings)]) == 0
    cached = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(cached) >= 8
    checkpoint = tmp_path / "run" / "checkpoints" / "last.safetensors"
    if not checkpoint.is_file():
        checkpoint = next((tmp_path / "run" / "checkpoints").glob("*.safetensors"))
    config, _, _ = read_checkpoint(checkpoint)
    assert config.detector.type == "grounding_dino"
    detector = HOIDetector.from_checkpoint(checkpoint, overrides=["detector.use_gt_boxes=false"])
    classes = detector.resolve_classes("play guitar, ride camel")
    (result,) = detector(torch.rand(3, 64, 80), classes)
    records = result.records()
    assert records and {r["object"] for r in records} <= {"guitar", "camel"}


# ------------------------------------------------------------------ weights, checkpoints


def test_detr_checkpoints_written_before_detector_type_load_unchanged(tmp_path: Path) -> None:
    """A checkpoint whose config has no ``type``/``tokenizer`` (as written before the
    open-vocabulary detector) loads as DETR and gives identical detections."""
    torch.manual_seed(0)
    config = tiny_model_config()
    config.detector.min_humans = config.detector.min_objects = 1
    model = build_model(config).eval()
    path = tmp_path / "head.safetensors"
    save_checkpoint(model, path)

    def older(stored: dict) -> None:
        del stored["detector"]["type"], stored["detector"]["tokenizer"]

    edit_stored_config(path, path, older)
    loaded = load_checkpoint(path).eval()
    assert loaded.config.detector.type == "detr" and not loaded.open_vocabulary
    images = [torch.rand(3, *SIZE)]
    with torch.no_grad():
        raw = [m.detector(normalize(images)) for m in (model, loaded)]
        assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])      # same frozen DETR
        crafted = crafted_detr_outputs(model.detector.config, [SCENE])     # (random finds none)
        for m in (model, loaded):
            m.detector.forward = lambda images: crafted
        (a,), (b,) = model(images), loaded(images)
    assert len(a["scores"]) > 0 and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_local_folder_and_offline_message(tmp_path: Path, gdino: GroundingDINO,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my-gdino"
    gdino.model.save_pretrained(folder)
    gdino.tokenizer.save_pretrained(folder)
    assert resolve_open_vocab(str(folder)) == folder
    config = tiny_model_config().detector
    config.type, config.weights = "grounding_dino", str(folder)
    loaded = build_detector(config)
    image = torch.rand(3, 64, 80)
    assert torch.equal(loaded([image], ["person", "guitar"])["pred_boxes"],
                       gdino([image], ["person", "guitar"])["pred_boxes"])

    monkeypatch.setenv("CLIP4HOI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    config.weights = "grounding-dino-tiny"
    with pytest.raises(WeightsUnavailableError) as error:
        build_detector(config)
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "IDEA-Research/grounding-dino-tiny" in message
    assert str(tmp_path / "home" / "huggingface") in message
    assert error.value.exit_code == 3
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        resolve_open_vocab(str(tmp_path / "nowhere"))
    assert os.environ["HF_HUB_OFFLINE"] == "1"


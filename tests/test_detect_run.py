"""``clip4hoi detect`` as people use it: the CLI answers at once, folders with odd content,
resume, outputs that feed ``eval``, video, cached class embeddings, readable drawings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_CLIP, TINY_DETR, set_flags, write_test_video
from PIL import Image

from clip4hoi.cli import build_parser, main
from clip4hoi.engine import backend

TINY = set_flags([f"detector.architecture={json.dumps(TINY_DETR)}",
                  f"detector.num_heads={TINY_DETR['num_heads']}",
                  f"clip.model_cfg={json.dumps(TINY_CLIP)}"])
CLASSES = ["--classes", "ride bicycle, hold cup, hug person"]


def _detect(*argv: str) -> int:
    return main(["detect", *argv, "--random-weights", "--device", "cpu", "--workers", "0",
                 "--test-scale", "96", "--max-size", "160", *CLASSES, *TINY])


def _photo(path: Path, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _checksums(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ------------------------------------------------------------------------ the parser


def test_help_argument_errors_and_a_wrong_path_do_not_import_torch() -> None:
    code = ("import sys\nfrom clip4hoi.cli import main\n"
            "for argv in (['--help'], ['detect', '--help'], ['detect'], ['--version'],"
            " ['detect', 'x.jpg', '--top-k', 'many'], ['detect', '/no/such/photo.jpg']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "clip4hoi 0.1.0" in done.stdout


def test_every_option_has_help_text() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help, f"clip4hoi {name} {action.option_strings or action.dest}"


def test_set_is_repeatable_and_never_swallows_inputs() -> None:
    args = build_parser().parse_args(["detect", "--set", "margin=0.2", "photo.jpg",
                                      "--set", "temperature=0.02"])
    assert args.inputs == ["photo.jpg"]
    assert args.set == ["margin=0.2", "temperature=0.02"]
    assert args.device == "auto" and args.mode == "auto"


def test_a_key_of_another_command_names_the_right_one() -> None:
    from clip4hoi.config import apply_overrides
    from clip4hoi.engine.config import ExperimentConfig

    with pytest.raises(ValueError, match=r"did you mean model\.detector\.weights"):
        apply_overrides(ExperimentConfig(), ["detector.weights=detr-r50"])
    config = apply_overrides(ExperimentConfig(), ["model.clip.layers=[-1,-4]"])
    assert config.model.clip.layers == [-1, -4]


def test_mode_auto_is_dense_on_a_cpu_and_detect_accepts_train_key_names(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = _photo(tmp_path / "a.png")
    assert _detect(str(image), "--out", str(tmp_path / "out"), "--no-draw",
                   "--set", "training_free.margin=0.2") == 0
    assert "mode dense (auto: CPU" in capsys.readouterr().err
    assert backend.resolve_mode("auto", None, "cuda:0")[0] == "crop"
    assert backend.resolve_mode("auto", "head.safetensors", "cpu")[0] == "trained"


def test_exit_codes_of_a_bad_device_and_missing_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from clip4hoi.weights import WeightsUnavailableError

    image = str(_photo(tmp_path / "a.png"))
    assert main(["detect", image, "--out", str(tmp_path / "o"), "--device", "banana"]) == 2
    assert "banana" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["detect", image, "--out", str(tmp_path / "o"), "--device", "cuda"]) == 4
        assert "no CUDA GPU" in capsys.readouterr().err

    def offline(*_: object, **__: object) -> None:
        raise WeightsUnavailableError("detr-r50-e632da11.pth: download it from URL to DIR")

    monkeypatch.setattr(backend, "build_backend", offline)
    assert main(["detect", image, "--out", str(tmp_path / "o"), "--device", "cpu"]) == 3
    from clip4hoi import weights

    monkeypatch.setattr(weights, "download_detr", offline)
    monkeypatch.setattr(weights, "download_clip", offline)
    assert main(["download", "detr-r50"]) == 3       # the same code in every command
    assert "detr-r50-e632da11.pth" in capsys.readouterr().err


# ------------------------------------------------------------ folders and their faults


def test_out_equal_to_the_input_folder_is_refused(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    _photo(tmp_path / "photos" / "a.jpg")
    before = _checksums(tmp_path / "photos")
    assert main(["detect", str(tmp_path / "photos"), "--out", str(tmp_path / "photos")]) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert _checksums(tmp_path / "photos") == before


def test_out_that_is_a_file_is_refused_before_the_model_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    _photo(tmp_path / "a.jpg")
    (tmp_path / "out").write_text("not a folder")
    monkeypatch.setattr(backend, "build_backend", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["detect", str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out")]) == 2
    assert "--out" in capsys.readouterr().err


def test_odd_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Same stems, unknown types, a symlink loop, an output folder inside the input, a
    5000x1 image, a broken one and a torn result: each handled, and the run resumes."""
    photos = tmp_path / "photos"
    _photo(photos / "a.jpg")
    _photo(photos / "a.png", seed=1)
    _photo(photos / "thin.png", size=(5000, 1))
    (photos / "phone.heic").write_bytes(b"\0" * 16)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _photo(tmp_path / "elsewhere" / "linked.jpg")
    (photos / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "loop").symlink_to(photos, target_is_directory=True)
    out = photos / "results"
    inputs = _checksums(photos)

    assert _detect(str(photos), "--out", str(out)) == 1     # broken.jpg failed, others done
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Traceback" not in err
    assert "1 file(s) of other types left out (.heic 1)" in err
    assert "4 done, 0 skipped" in err and "1 failed" in err
    names = {"a.jpg", "a.png", "link/linked.jpg", "thin.png"}
    for name in names:
        assert json.loads((out / f"{name}.json").read_text())["file_name"] == name
        assert (out / f"{name}.drawn.jpg").is_file()
    combined = json.loads((out / "detections.json").read_text())
    assert {r["file_name"] for r in combined["images"]} == names
    assert not list(out.rglob("*.tmp"))
    assert {k: v for k, v in _checksums(photos).items() if not k.startswith("results")} \
        == inputs

    (out / "a.png.json").write_text('{"file_name": "a.png", "detec')  # torn by a crash
    assert _detect(str(photos), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "1 done, 3 skipped" in err                        # outputs are not re-detected
    assert json.loads((out / "a.png.json").read_text())["file_name"] == "a.png"


def test_temporary_files_of_killed_detect_runs_are_swept(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """The next ``detect`` into a folder removes the temporary files that killed runs left
    (``write_atomic``'s ``.NAME.HOST-PID.RANDOM.tmp`` of a process that no longer runs, in
    the folder and below it) and keeps those of a process that runs."""
    from clip4hoi.fileio import temp_prefix

    _photo(tmp_path / "in" / "a.jpg")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    own, dead = f"-{os.getpid()}.", f"-{finished.pid}."
    stale = [out / (temp_prefix("a.jpg.json").replace(own, dead) + "k1ll3d.tmp"),
             out / "sub" / (temp_prefix("b.jpg.drawn.jpg").replace(own, dead) + "k1ll3d.tmp"),
             out / (temp_prefix("detections.json").replace(own, dead) + "k1ll3d.tmp")]
    running = out / (temp_prefix("c.jpg.json") + "l1ve.tmp")
    for path in [*stale, running]:
        path.write_text("{")
    assert _detect(str(tmp_path / "in"), "--out", str(out)) == 0
    assert "1 done" in capsys.readouterr().err
    assert not any(path.exists() for path in stale) and running.exists()


def test_eval_refuses_a_combined_file_of_another_class_set(
        tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture) -> None:
    annotations = shared_dir / "data" / "hicodet" / "instances_test2015.json"
    if not annotations.is_file():
        pytest.skip(f"{annotations} not found")
    dets = tmp_path / "detections.json"
    dets.write_text(json.dumps({"classes": "custom", "images": []}))
    assert main(["eval", "--annotations", str(annotations), "--detections", str(dets)]) == 2
    assert "--classes hicodet" in capsys.readouterr().err


def test_api_batches_give_the_same_results() -> None:
    from clip4hoi.api import build_training_free_detector

    detector = build_training_free_detector(
        "dense", "cpu", True, [item for item in TINY if item != "--set"]
        + ["detector.min_humans=1", "detector.min_objects=1"], min_size=96, max_size=160)
    images = [torch.rand(3, 48, 64), torch.rand(3, 48, 64), torch.rand(3, 40, 64)]
    one = detector(images, "ride bicycle, hold cup", batch_size=1)
    batched = detector(images, "ride bicycle, hold cup", batch_size=3)
    for a, b in zip(one, batched, strict=True):
        a, b = a.to_dict(), b.to_dict()
        assert a.keys() == b.keys()
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=0)


# ----------------------------------------------------------------- the text cache


def test_class_embeddings_are_cached_on_disk(tmp_path: Path) -> None:
    from test_training_free import tiny_config

    from clip4hoi.data.metadata import load_classes
    from clip4hoi.engine.text_cache import cached_text_embeddings
    from clip4hoi.models.training_free import build_training_free

    model = build_training_free(tiny_config("dense"))
    classes = load_classes("ride bicycle, hold cup")
    first, hit = cached_text_embeddings(model, classes, tmp_path)
    assert not hit and len(list(tmp_path.glob("*.safetensors"))) == 1
    fresh = build_training_free(tiny_config("dense"))
    second, hit = cached_text_embeddings(fresh, classes, tmp_path)
    assert hit
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(fresh.text_embeddings(classes), second)
    # other templates, other class set or other CLIP weights: another entry
    other = build_training_free(tiny_config("dense", templates=["{sentence}."]))
    assert not cached_text_embeddings(other, classes, tmp_path)[1]
    assert not cached_text_embeddings(model, load_classes("hold cup"), tmp_path)[1]
    with torch.no_grad():
        fresh.clip.model.ln_final.weight.add_(1.0)
    assert not cached_text_embeddings(fresh, classes, tmp_path)[1]
    # a torn file is encoded again and replaced
    for path in tmp_path.glob("*.safetensors"):
        path.write_bytes(b"torn")
    again, hit = cached_text_embeddings(model, classes, tmp_path)
    assert not hit
    torch.testing.assert_close(again, first)
    assert cached_text_embeddings(model, classes, tmp_path)[1]


def test_a_trained_heads_class_embeddings_are_cached_too(tmp_path: Path) -> None:
    from conftest import tiny_model_config

    from clip4hoi.data.metadata import load_classes
    from clip4hoi.engine.text_cache import cached_text_embeddings
    from clip4hoi.models.model import build_model

    model = build_model(tiny_model_config()).eval()
    classes = load_classes("ride bicycle, hold cup")
    with torch.no_grad():
        expected = model.classifier.text_embeddings(model.clip, classes)
    assert not cached_text_embeddings(model, classes, tmp_path)[1]
    fresh = build_model(tiny_model_config()).eval()
    fresh.load_state_dict(model.state_dict())  # the same head, as from one checkpoint
    text, hit = cached_text_embeddings(fresh, classes, tmp_path)
    assert hit
    torch.testing.assert_close(text, expected)
    with torch.no_grad():
        fresh.classifier.prefix.add_(0.1)  # other learned prompts: another entry
    assert not cached_text_embeddings(fresh, classes, tmp_path)[1]


# --------------------------------------------------------------------------- video




def test_video_gives_json_lines_and_an_annotated_movie(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import av

    clip = write_test_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert _detect(str(clip), "--out", str(out), "--every", "2") == 0
    lines = [json.loads(line) for line in (out / "clip.mp4.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 2, 4, 6]
    assert [line["time"] for line in lines] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert all(line["file_name"] == "clip.mp4" and isinstance(line["detections"], list)
               for line in lines)
    with av.open(str(out / "clip.mp4.drawn.mp4")) as movie:
        assert sum(1 for _ in movie.decode(video=0)) == 4
    assert "1 done" in capsys.readouterr().err
    assert _detect(str(clip), "--out", str(out), "--fps", "1") == 0   # done: skipped
    assert "0 done, 1 skipped" in capsys.readouterr().err
    assert _detect(str(clip), "--out", str(out), "--fps", "1", "--overwrite",
                   "--no-draw") == 0
    lines = [json.loads(line) for line in (out / "clip.mp4.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 4]


# ------------------------------------------------------------------------ drawings


def test_drawings_are_readable_at_any_size() -> None:
    from clip4hoi.visualize import draw_detections, font_size

    assert font_size((640, 480)) < font_size((3000, 2000)) == 60
    det = {"human_box": [100, 100, 900, 1500], "object_box": [700, 900, 1800, 1700],
           "object": "bicycle", "verb": "ride", "score": 0.7}
    weak = {**det, "verb": "hold", "score": 0.05}
    big = Image.new("RGB", (3000, 2000))
    drawn = np.asarray(draw_detections(big, [det, weak], min_score=0.1))
    # the legend in the top-left corner is 60-pixel text: white pixels far below 20
    rows = np.flatnonzero((drawn[:200, :800] == 255).all(axis=2).any(axis=1))
    assert rows.max() - rows.min() > 40
    blank = np.asarray(draw_detections(big, [weak], min_score=0.1))
    assert not blank.any()  # nothing scores 0.1: nothing drawn

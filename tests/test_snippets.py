"""The commands and Python snippets of the README and docs stay true.

Every ``clip4hoi`` command in a ``bash`` block of README.md and docs/ must parse, and its
``--set`` keys must exist in its config. The README's usage (shell and Python) and offline
blocks are run as written, in a folder holding the files they name (``photo.jpg``, ``photos/``,
``my_classes.txt``, ``clip.mp4``), with tiny random networks standing in for the
pretrained DETR and CLIP weights that cannot be downloaded here. For time, the offline
block's ``make-synthetic`` gets ``--train 8 --test 4`` and its ``train`` one epoch.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_CLIP, TINY_DETR, write_test_video
from PIL import Image

from clip4hoi.cli import build_parser, main

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(path: Path, language: str, section: str | None = None) -> list[str]:
    """The ``language`` code blocks of a Markdown file (under the heading ``section``)."""
    text = path.read_text()
    if section is not None:
        start = text.index(f"\n{section}\n")
        end = re.search(r"\n#{1,3} ", text[start + len(section) + 2:])
        text = text[start:start + len(section) + 2 + end.start()] if end else text[start:]
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def commands(block: str) -> list[list[str]]:
    """The ``clip4hoi`` command lines of a bash block as argv lists (continuation lines
    joined, comments dropped; ``torchrun ... -m clip4hoi`` counts too)."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word.endswith("clip4hoi") and (i == 0 or words[i - 1] == "-m"
                                              or "/" in word):
                found.append(words[i + 1:])
                break
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    return [(path.name, argv) for path in DOCUMENTS for block in blocks(path, "bash")
            for argv in commands(block)
            if not any(word.startswith("[") for word in argv)]  # synopses, not commands


def test_every_documented_command_parses_and_its_keys_exist() -> None:
    from clip4hoi.engine.config import load_experiment

    found = documented_commands()
    assert len(found) > 20
    for source, argv in found:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{source}: clip4hoi {shlex.join(argv)} does not parse")
        if args.command in ("train", "test"):
            load_experiment(str(REPO / args.config), args.set)  # unknown keys raise


def test_documented_python_compiles() -> None:
    for path in DOCUMENTS:
        for block in blocks(path, "python"):
            compile(block, str(path), "exec")


@pytest.fixture
def tiny_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny random DETR and CLIP instead of the pretrained ones (the same for a config
    that already names a random architecture, e.g. configs/smoke.yaml)."""
    from clip4hoi.models import model, training_free

    build = model.build_frozen

    def tiny(detector, clip, download=True):
        if detector.architecture is None:
            detector = replace(detector, weights="random", architecture=dict(TINY_DETR),
                               num_heads=TINY_DETR["num_heads"])
        if clip.model_cfg is None:
            clip = replace(clip, pretrained=None, model_cfg=dict(TINY_CLIP))
        return build(detector, clip, download)

    monkeypatch.setattr(model, "build_frozen", tiny)
    monkeypatch.setattr(training_free, "build_frozen", tiny)




def _run(block: str, faster: dict[str, list[str]] | None = None) -> None:
    for argv in commands(block):
        argv = [*argv, *(faster or {}).get(argv[0], [])]
        assert main(argv) == 0, f"clip4hoi {shlex.join(argv)}"


def test_readme_runs_as_written(tmp_path: Path, tiny_weights: None,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    Path("photos").mkdir()
    for name in ("photo.jpg", "photos/a.jpg", "photos/b.png"):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(name)
    Path("my_classes.txt").write_text("ride bicycle\nhold cup\n")
    write_test_video(Path("clip.mp4"), frames=10, rate=10, size=(64, 96))
    shutil.copytree(REPO / "configs", "configs")
    readme = REPO / "README.md"
    (usage,) = blocks(readme, "bash", "## Usage")
    (offline,) = blocks(readme, "bash", "### Offline, end to end")
    _run(usage)
    assert Path("detections/photo.jpg.json").is_file()
    assert Path("detections/clip.mp4.jsonl").is_file()
    assert Path("detections/a.jpg.json").is_file()
    (python,) = blocks(readme, "python", "## Usage")
    exec(compile(python, str(readme), "exec"), {})
    assert capsys.readouterr().out.startswith("[")  # the records (random nets: maybe none)

    _run(offline, {"make-synthetic": ["--train", "8", "--test", "4"],
                   "train": ["--set", "train.epochs=1", "--set", "train.eval_every=1"]})
    out = capsys.readouterr().out
    maps = re.findall(r"^Full\s+\d+\s+([\d.]+)", out, re.M)[-2:]   # test's, then eval's
    assert len(maps) == 2 and maps[0] == maps[1] and float(maps[0]) > 0
    assert_same_detections(Path("outputs/smoke/detections.json"),
                           Path("outputs/smoke_detect/detections.json"))
    assert list(Path("outputs/smoke_detect").glob("*.drawn.jpg"))


def assert_same_detections(test_file: Path, detect_file: Path) -> None:
    """``clip4hoi test``'s and ``clip4hoi detect``'s detections of the same images agree
    (classes and scores, in any order)."""
    test = {r["file_name"]: r for r in json.loads(test_file.read_text())["images"]}
    detect = {r["file_name"]: r for r in json.loads(detect_file.read_text())["images"]}
    assert test.keys() == detect.keys()
    for name, record in test.items():
        order = np.lexsort((record["scores"], record["hoi"]))
        other = np.lexsort((detect[name]["scores"], detect[name]["hoi"]))
        np.testing.assert_array_equal(np.array(record["hoi"])[order],
                                      np.array(detect[name]["hoi"])[other])
        np.testing.assert_allclose(np.array(record["scores"])[order],
                                   np.array(detect[name]["scores"])[other], atol=1e-5)


def test_custom_dataset_walkthrough_runs_as_written(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    """docs/datasets.md's worked example: your own classes (objects outside COCO) from
    make-synthetic through train, test, detect and eval, with the tiny random Grounding
    DINO of configs/custom_smoke.yaml (fewer images and epochs, for time)."""
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "configs", "configs")
    (example,) = blocks(REPO / "docs" / "datasets.md", "bash", "## A worked example on a CPU")
    _run(example, {"make-synthetic": ["--train", "12", "--test", "4"],
                   "train": ["--set", "train.epochs=2"]})
    out = capsys.readouterr().out
    assert "detector: Grounding DINO (objects outside COCO: drill, wrench, helmet)" in out
    for group in ("Full", "Rare", "Non-rare", "Unseen", "Seen"):
        assert re.search(rf"^{group}\s+\d+\s+([\d.]+|nan)\s", out, re.M), group
    maps = re.findall(r"^Full\s+\d+\s+([\d.]+)", out, re.M)[-2:]   # test's, then eval's
    assert len(maps) == 2 and maps[0] == maps[1]
    assert_same_detections(Path("outputs/custom_smoke/detections.json"),
                           Path("outputs/custom_detect/detections.json"))

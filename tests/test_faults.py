"""The fault battery: bad input, broken files and a hostile environment, command by command.

Every case checks what a user sees and what is left on disk: the exit code
(:mod:`clip4hoi.errors`), one error line naming the file or argument, no traceback, and
that no input or earlier result changed (checksums before and after). Most cases call
``main([...])`` in-process on a tiny synthetic dataset and a tiny trained head shared by the
module; the few that need a real process (a file-size limit, a traceback that would escape
``main``) run ``python -m clip4hoi``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import resource
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_engine import CONFIGS, single_thread

from clip4hoi.cli import main
from clip4hoi.data.synthetic import make_synthetic
from clip4hoi.errors import EnvironmentFault, InputError

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(CONFIGS / "smoke.yaml")


# ----------------------------------------------------------------------------- helpers

def digest(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files or folders)."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    """Temporary files a write left behind."""
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


def run_main(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str]:
    """``main(argv)`` in-process: (exit code, stderr)."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_clear(result: tuple[int, str], code: int, *names: object) -> str:
    """The exit code, a last line ``clip4hoi CMD: ...`` naming every ``names``, no
    traceback. Returns that line."""
    exit_code, err = result
    assert exit_code == code, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("clip4hoi "), err
    for name in names:
        assert str(name) in line, (name, line)
    return line


def subprocess_cli(*argv: object, fsize: int | None = None, timeout: float = 120
                   ) -> subprocess.CompletedProcess:
    """``python -m clip4hoi argv`` in a fresh process (optionally with a file-size limit,
    which makes every larger write fail like a full disk)."""
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "clip4hoi", *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit, check=False)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training and 2 test images of 128 pixels."""
    root = tmp_path_factory.mktemp("faults") / "data"
    make_synthetic(root, n_train=4, n_test=2, seed=0, image_size=128)
    return root


def settings(data: Path, out: Path, *extra: str) -> list[str]:
    items = [f"data.root={data}", f"train.output_dir={out}",
             f"feature_cache.dir={out.parent / 'cache'}", "data.transform.scales=[112,128]",
             "data.transform.test_scale=128", "data.transform.max_size=256",
             "train.epochs=1", "train.batch_size=2", "train.eval_every=0", *extra]
    return [part for item in items for part in ("--set", item)]  # one override per --set


@pytest.fixture(scope="module")
def run(data: Path) -> Path:
    """A finished one-epoch training run (two steps)."""
    out = data.parent / "run"
    with single_thread():
        assert main(["train", SMOKE, *settings(data, out)]) == 0
    return out


@pytest.fixture()
def run_copy(run: Path, tmp_path: Path) -> Path:
    """A copy of the run that a case may damage."""
    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.fixture(scope="module")
def head(run: Path) -> Path:
    return next((run / "checkpoints").glob("step_*.safetensors"))


@pytest.fixture(scope="module")
def dets(data: Path) -> Path:
    """A valid DETS.json: the test set's ground truth."""
    from clip4hoi.data.annotations import load_hicodet_annotations
    from clip4hoi.evaluation import detections_from_ground_truth, write_detections

    annotations = load_hicodet_annotations(data / "instances_test2015.json")
    return write_detections(data.parent / "dets.json",
                            detections_from_ground_truth(annotations), annotations)


@pytest.fixture()
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


# ----------------------------------------------------------------------------- eval

def test_eval_json_over_its_detections_is_refused(capsys, data: Path, dets: Path) -> None:
    before = digest(dets)
    annotations = data / "instances_test2015.json"
    for target in (dets, annotations):
        line = assert_clear(run_main(capsys, "eval", "--annotations", annotations,
                                     "--detections", dets, "--json", target), 2, "--json")
        assert "input" in line
    assert digest(dets) == before


def test_eval_json_folder_or_under_a_file(capsys, data: Path, dets: Path,
                                          tmp_path: Path) -> None:
    annotations = data / "instances_test2015.json"
    assert_clear(run_main(capsys, "eval", "--annotations", annotations, "--detections", dets,
                          "--json", tmp_path), 2, "--json", tmp_path)
    (tmp_path / "file").write_text("x")
    assert_clear(run_main(capsys, "eval", "--annotations", annotations, "--detections", dets,
                          "--json", tmp_path / "file" / "r.json"), 2, tmp_path / "file")


def test_eval_writes_json_atomically(capsys, data: Path, dets: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text("old")
    code, _ = run_main(capsys, "eval", "--annotations", data / "instances_test2015.json",
                       "--detections", dets, "--json", out)
    assert code == 0 and json.loads(out.read_text())["map"]["full"] == pytest.approx(100)
    assert not leftovers(tmp_path)


def test_eval_bad_arguments(capsys, data: Path, dets: Path, tmp_path: Path) -> None:
    annotations = data / "instances_test2015.json"
    assert_clear(run_main(capsys, "eval", "--annotations", annotations, "--detections", dets,
                          "--top-k", "-5"), 2, "--top-k")
    assert_clear(run_main(capsys, "eval", "--annotations", tmp_path / "none.json",
                          "--detections", dets), 2, "none.json")
    assert_clear(run_main(capsys, "eval", "--annotations", annotations, "--detections",
                          tmp_path), 2, "--detections")
    assert_clear(run_main(capsys, "eval", "--annotations", annotations, "--detections", dets,
                          "--zero-shot", "rf_xx"), 2, "rf_xx")
    for threshold in ("-1", "0"):   # no class would be Rare: a Rare mAP of nothing
        assert_clear(run_main(capsys, "eval", "--annotations", annotations, "--detections",
                              dets, "--train-annotations", annotations, "--rare-threshold",
                              threshold), 2, f"--rare-threshold {threshold}: must be")


DETS_FAULTS = {
    "list as file_name": lambda d: d["images"][0].update(file_name=["a"]),
    "unknown image": lambda d: d["images"][0].update(file_name="nope.jpg"),
    "image twice": lambda d: d["images"].append(dict(d["images"][0])),
    "true as a score": lambda d: d["images"][0].update(
        scores=[True] * len(d["images"][0]["scores"])),
    "true among scores": lambda d: d["images"][0]["scores"].__setitem__(0, True),
    "NaN score": lambda d: d["images"][0]["scores"].__setitem__(0, float("nan")),
    "string score": lambda d: d["images"][0]["scores"].__setitem__(0, "0.5"),
    "hoi not a list": lambda d: d["images"][0].update(hoi=5),
    "hoi out of range": lambda d: d["images"][0]["hoi"].__setitem__(0, 600),
    "hoi fractional": lambda d: d["images"][0]["hoi"].__setitem__(0, 1.5),
    "box of 3": lambda d: d["images"][0]["human_boxes"].__setitem__(0, [1, 2, 3]),
    "null box": lambda d: d["images"][0]["object_boxes"].__setitem__(0, None),
    "inverted box": lambda d: d["images"][0]["human_boxes"].__setitem__(0, [9, 9, 1, 1]),
    "lengths differ": lambda d: d["images"][0]["scores"].pop(),
    "record not a dict": lambda d: d["images"].__setitem__(0, [1, 2]),
    "no images key": lambda d: d.pop("images"),
}


@pytest.mark.parametrize("fault", sorted(DETS_FAULTS))
def test_eval_malformed_detections(capsys, fault: str, data: Path, dets: Path,
                                   tmp_path: Path) -> None:
    content = json.loads(dets.read_text())
    DETS_FAULTS[fault](content)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    before = digest(bad, data / "instances_test2015.json")
    assert_clear(run_main(capsys, "eval", "--annotations", data / "instances_test2015.json",
                          "--detections", bad), 2, bad)
    assert digest(bad, data / "instances_test2015.json") == before


@pytest.mark.parametrize("text", ["", '{"images": [', "\x00\x01binary", '["a list"]'])
def test_eval_detections_not_a_detections_file(capsys, text: str, data: Path,
                                               tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert_clear(run_main(capsys, "eval", "--annotations", data / "instances_test2015.json",
                          "--detections", bad), 2, bad)


def test_eval_detections_with_a_byte_order_mark(capsys, data: Path, dets: Path,
                                                tmp_path: Path) -> None:
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + dets.read_bytes())
    code, _ = run_main(capsys, "eval", "--annotations", data / "instances_test2015.json",
                       "--detections", bom)
    assert code == 0


def _qpic(data: dict) -> list:
    """The fredzzhang test file as a QPIC list (1-based verbs, COCO category ids)."""
    from clip4hoi.data.metadata import COCO_CATEGORY_IDS

    images = []
    for name, (w, h), ann in zip(data["filenames"], data["size"], data["annotation"],
                                 strict=True):
        boxes = [*ann["boxes_h"], *ann["boxes_o"]]
        n = len(ann["boxes_h"])
        cats = [1] * n + [COCO_CATEGORY_IDS[o] for o in ann["object"]]
        images.append({"file_name": name, "width": w, "height": h,
                       "annotations": [{"bbox": b, "category_id": c}
                                       for b, c in zip(boxes, cats, strict=True)],
                       "hoi_annotation": [{"subject_id": k, "object_id": n + k,
                                           "category_id": v + 1}
                                          for k, v in enumerate(ann["verb"])]})
    return images


def _first_nonempty(images: list) -> dict:
    return next(im for im in images if im["hoi_annotation"])


ANNOTATION_FAULTS = {
    "verbs is a number": lambda d: d.update(verbs=5),
    "empty holds a string": lambda d: d.update(empty=["a"]),
    "rare is a string": lambda d: d.update(rare="x"),
    "file name twice": lambda d: d["filenames"].__setitem__(1, d["filenames"][0]),
    "list as file name": lambda d: d["filenames"].__setitem__(0, ["a"]),
    "size of 3": lambda d: d["size"].__setitem__(0, [1, 2, 3]),
    "annotation not a list": lambda d: d.update(annotation=7),
    "hoi holds true": lambda d: next(a for a in d["annotation"] if a["hoi"])["hoi"]
    .__setitem__(0, True),
    "box of strings": lambda d: next(a for a in d["annotation"] if a["hoi"])["boxes_h"]
    .__setitem__(0, ["a", "b", "c", "d"]),
    "qpic null width": lambda d: _first_nonempty(d).update(width=None),
    "qpic list as file name": lambda d: _first_nonempty(d).update(file_name=[1]),
    "qpic list as category": lambda d: _first_nonempty(d)["annotations"][-1].update(
        category_id=[1]),
    "qpic file name twice": lambda d: d.append(dict(d[0])),
    "qpic pairs not a list": lambda d: _first_nonempty(d).update(hoi_annotation=3),
}


@pytest.mark.parametrize("fault", sorted(ANNOTATION_FAULTS))
def test_eval_malformed_annotations(capsys, fault: str, data: Path, dets: Path,
                                    tmp_path: Path) -> None:
    content = json.loads((data / "instances_test2015.json").read_text())
    if fault.startswith("qpic"):
        content = _qpic(content)
    ANNOTATION_FAULTS[fault](content)
    bad = tmp_path / "bad_annotations.json"
    bad.write_text(json.dumps(content))
    before = digest(bad, dets)
    assert_clear(run_main(capsys, "eval", "--annotations", bad, "--detections", dets), 2, bad)
    assert digest(bad, dets) == before


def test_eval_in_a_read_only_folder(capsys, data: Path, dets: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert_clear(run_main(capsys, "eval", "--annotations", data / "instances_test2015.json",
                              "--detections", dets, "--json", folder / "r.json"), 4, "r.json")
    finally:
        folder.chmod(0o700)


def test_ctrl_c_anywhere_exits_130(capsys, monkeypatch, data: Path, dets: Path) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("clip4hoi.evaluation.evaluate_files", interrupted)
    line = assert_clear(run_main(capsys, "eval", "--annotations",
                                 data / "instances_test2015.json", "--detections", dets), 130)
    assert "interrupted" in line


def test_debug_shows_the_traceback_and_bugs_keep_theirs(capsys, monkeypatch, data: Path,
                                                        dets: Path) -> None:
    args = ["eval", "--annotations", str(data / "instances_test2015.json"),
            "--detections", str(dets), "--top-k", "-1"]
    with pytest.raises(InputError, match="--top-k"):
        main([*args, "--debug"])

    def bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("clip4hoi.evaluation.evaluate_files", bug)
    with pytest.raises(ZeroDivisionError):
        main(args[:5])


def test_a_real_process_prints_one_line(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"file_name": ["x"]}]}')
    done = subprocess_cli("eval", "--annotations", data / "instances_test2015.json",
                          "--detections", bad)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert str(bad) in done.stderr


# ----------------------------------------------------------------------------- files

def test_write_atomic_refuses_inputs_and_survives_a_full_disk(monkeypatch,
                                                              tmp_path: Path) -> None:
    from clip4hoi.fileio import write_atomic

    source = tmp_path / "in.json"
    source.write_text("input")
    with pytest.raises(InputError, match="input file"):
        write_atomic(tmp_path / "." / "in.json", "x", inputs=[source])
    target = tmp_path / "out.json"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(EnvironmentFault, match=r"out\.json.*No space"):
        write_atomic(target, "new")
    assert target.read_text() == "old" and source.read_text() == "input"
    assert not leftovers(tmp_path)


def test_two_writers_never_tear_a_file(tmp_path: Path) -> None:
    from clip4hoi.fileio import write_atomic

    target = tmp_path / "shared.json"
    write_atomic(target, json.dumps({"writer": -1}))
    errors: list[BaseException] = []
    torn: list[str] = []

    def writer(k: int) -> None:
        try:
            for i in range(100):
                write_atomic(target, json.dumps({"writer": k, "i": i, "pad": "x" * 4000}))
        except BaseException as error:
            errors.append(error)

    def reader() -> None:
        for _ in range(200):
            text = target.read_text()
            try:
                json.loads(text)
            except ValueError:
                torn.append(text[:40])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not torn and not leftovers(tmp_path)


# ----------------------------------------------------------------------------- train

def test_resume_with_a_changed_setting_is_refused(capsys, data: Path, run_copy: Path) -> None:
    before = digest(run_copy)
    line = assert_clear(run_main(capsys, "train", SMOKE, "--resume",
                                 *settings(data, run_copy, "train.lr=0.5")), 2, "train.lr")
    assert "0.5" in line
    assert digest(run_copy) == before


def test_resume_applies_a_longer_schedule_and_drops_a_torn_log_line(
        capsys, data: Path, run_copy: Path, one_thread: None) -> None:
    metrics = run_copy / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 1, "st')
    code, err = run_main(capsys, "train", SMOKE, "--resume",
                         *settings(data, run_copy, "train.epochs=2"))
    out = capsys.readouterr().out
    assert code == 0, err
    assert "Traceback" not in err
    for line in metrics.read_text().splitlines():
        json.loads(line)
    assert len(list((run_copy / "checkpoints").glob("step_*.state.pt"))) == 2
    del out


def _malicious() -> bytes:
    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, ("touch /tmp/clip4hoi_pwned",))

    return pickle.dumps(Payload())


STATE_FAULTS: dict[str, Callable[[Path], None]] = {
    "garbage": lambda p: p.write_bytes(b"not a torch file"),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "malicious pickle": lambda p: p.write_bytes(_malicious()),
    "malicious torch.save": lambda p: _torch_save_malicious(p),
    "missing keys": lambda p: torch.save({"epoch": 1}, p),
    "a list": lambda p: torch.save([1, 2], p),
}


def _torch_save_malicious(path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"epoch": 0}, buffer)
    # A torch zip whose data.pkl runs code when unpickled without weights_only.
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename.endswith("data.pkl"):
                content = _malicious()
            target.writestr(item, content)


@pytest.mark.parametrize("fault", sorted(STATE_FAULTS))
def test_resume_from_a_bad_state_file(capsys, fault: str, data: Path, run_copy: Path) -> None:
    state = next((run_copy / "checkpoints").glob("step_*.state.pt"))
    STATE_FAULTS[fault](state)
    before = digest(run_copy)
    assert_clear(run_main(capsys, "train", SMOKE, "--resume", state,
                          *settings(data, run_copy)), 2, state.name)
    assert digest(run_copy) == before
    assert not Path("/tmp/clip4hoi_pwned").exists()


def test_resume_from_bad_weights(capsys, data: Path, run_copy: Path) -> None:
    weights = next((run_copy / "checkpoints").glob("step_*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:64])
    assert_clear(run_main(capsys, "train", SMOKE, "--resume", weights,
                          *settings(data, run_copy)), 2, weights.name)
    assert_clear(run_main(capsys, "train", SMOKE, "--resume", run_copy / "nothing.safetensors",
                          *settings(data, run_copy)), 2, "nothing")


@pytest.mark.parametrize("lr", ["1e39", "1e30"])
def test_an_exploding_step_keeps_no_checkpoint(capsys, lr: str, data: Path, tmp_path: Path,
                                               one_thread: None) -> None:
    out = tmp_path / "run"
    code, err = run_main(capsys, "train", SMOKE, *settings(data, out, f"train.lr={lr}"))
    assert code == 1 and "Traceback" not in err, err
    assert "non-finite" in err or "too large" in err
    for weights in (out / "checkpoints").glob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(weights).values()), weights


@pytest.mark.parametrize("setting,code,named", [
    ("train.lr=-1", 2, "train.lr"), ("train.lr=.nan", 2, "train.lr"),
    ("train.clip_grad_norm=-1", 2, "clip_grad_norm"), ("train.device=banana", 2, "banana"),
    ("train.batch_size=0", 2, "batch"), ("train.unknown=1", 2, "unknown"),
    ("data.root=/nonexistent", 2, "/nonexistent"), ("train.lr=fast", 2, "fast"),
    ("feature_cache.dtype=int8", 2, "int8"),
])
def test_train_bad_settings(capsys, setting: str, code: int, named: str, data: Path,
                            tmp_path: Path) -> None:
    assert_clear(run_main(capsys, "train", SMOKE, *settings(data, tmp_path / "r", setting)),
                 code, named)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_train_on_a_gpu_that_is_not_there(capsys, data: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_clear(run_main(capsys, "train", SMOKE, *settings(data, tmp_path / "r",
                                                            "train.device=cuda")),
                 4, "train.device")


def test_train_bad_config_files(capsys, data: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- 1\n")
    for config in (tmp_path / "missing.yaml", tmp_path / "bad.yaml", tmp_path / "list.yaml",
                   tmp_path):
        assert_clear(run_main(capsys, "train", config, *settings(data, tmp_path / "r")), 2,
                     config.name)


def test_train_over_a_finished_run_is_refused(capsys, data: Path, run_copy: Path) -> None:
    before = digest(run_copy)
    assert_clear(run_main(capsys, "train", SMOKE, *settings(data, run_copy)), 2, run_copy)
    assert digest(run_copy) == before


def test_train_on_duplicated_image_names(capsys, data: Path, tmp_path: Path) -> None:
    content = json.loads((data / "instances_train2015.json").read_text())
    content["filenames"][1] = content["filenames"][0]
    root = Path(shutil.copytree(data, tmp_path / "data"))
    (root / "instances_train2015.json").write_text(json.dumps(content))
    assert_clear(run_main(capsys, "train", SMOKE, *settings(root, tmp_path / "r")), 2,
                 "instances_train2015.json", content["filenames"][0])


def test_ctrl_c_in_train(capsys, monkeypatch, data: Path, tmp_path: Path,
                         one_thread: None) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("clip4hoi.engine.trainer.Trainer.train_step", interrupted)
    line = assert_clear(run_main(capsys, "train", SMOKE, *settings(data, tmp_path / "r")),
                        130, "--resume")
    assert "interrupted" in line
    assert not leftovers(tmp_path)


def test_full_disk_in_train(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess_cli("train", SMOKE, *settings(data, out, "train.cpu_threads=1",
                                                    "feature_cache.enabled=false"),
                          fsize=20_000)
    assert done.returncode == 4, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "step_00000002.safetensors" in done.stderr.strip().splitlines()[-1]
    assert not leftovers(out)
    assert not list((out / "checkpoints").glob("*.state.pt"))


# ----------------------------------------------------------------------------- test

def test_test_output_over_an_input_is_refused(capsys, data: Path, head: Path,
                                              tmp_path: Path) -> None:
    annotations = data / "instances_test2015.json"
    before = digest(annotations, head)
    for output in (annotations, head):
        assert_clear(run_main(capsys, "test", SMOKE, "--checkpoint", head, "--output", output,
                              *settings(data, tmp_path / "r")), 2, "--output")
    assert_clear(run_main(capsys, "test", SMOKE, "--checkpoint", head, "--output", tmp_path,
                          *settings(data, tmp_path / "r")), 2, "--output")
    assert digest(annotations, head) == before


def _rewrite_head(head: Path, target: Path, tensors: Callable[[dict], dict] | None = None,
                  metadata: Callable[[dict], dict] | None = None) -> Path:
    from safetensors import safe_open

    with safe_open(str(head), framework="pt") as handle:
        meta = dict(handle.metadata())
    values = load_file(head)
    save_file(tensors(values) if tensors else values, str(target),
              metadata=metadata(meta) if metadata else meta)
    return target


def _nan_first(tensors: dict) -> dict:
    name = sorted(k for k, v in tensors.items() if v.is_floating_point())[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    return tensors


HEAD_FAULTS: dict[str, Callable[[Path, Path], Path]] = {
    "non-finite weights": lambda h, t: _rewrite_head(h, t, tensors=_nan_first),
    "no config": lambda h, t: _rewrite_head(
        h, t, metadata=lambda m: {k: v for k, v in m.items() if k != "config"}),
    "null config": lambda h, t: _rewrite_head(h, t, metadata=lambda m: {**m, "config": "null"}),
    "config not JSON": lambda h, t: _rewrite_head(h, t, metadata=lambda m: {**m,
                                                                           "config": "{x"}),
    "config a list": lambda h, t: _rewrite_head(h, t, metadata=lambda m: {**m, "config": "[]"}),
    "config bad key": lambda h, t: _rewrite_head(h, t, metadata=lambda m: {
        **m, "config": json.dumps({"nope": 1})}),
    "no format": lambda h, t: _rewrite_head(h, t, metadata=lambda m: {"config": m["config"]}),
    "a text file": lambda h, t: (t.write_text("hello"), t)[1],
    "missing tensor": lambda h, t: _rewrite_head(
        h, t, tensors=lambda v: dict(list(v.items())[1:])),
}


@pytest.mark.parametrize("fault", sorted(HEAD_FAULTS))
def test_test_with_a_bad_head_checkpoint(capsys, fault: str, data: Path, head: Path,
                                         tmp_path: Path) -> None:
    bad = HEAD_FAULTS[fault](head, tmp_path / "bad.safetensors")
    before = digest(bad)
    assert_clear(run_main(capsys, "test", SMOKE, "--checkpoint", bad,
                          *settings(data, tmp_path / "r")), 2, bad.name)
    assert digest(bad) == before and not (tmp_path / "r").exists()


def test_corrupt_clip_weights(capsys, data: Path, head: Path, tmp_path: Path) -> None:
    bad = tmp_path / "clip.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    assert_clear(run_main(capsys, "test", SMOKE, "--checkpoint", head,
                          *settings(data, tmp_path / "r", f"model.clip.pretrained={bad}")),
                 2, bad.name)


def test_full_disk_in_test_keeps_the_old_detections(capsys, monkeypatch, data: Path,
                                                    head: Path, tmp_path: Path,
                                                    one_thread: None) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the files apart")
    fsync = os.fsync

    def full_for_dets(fd: int) -> None:   # the disk fills up as DETS.json is written
        if "DETS.json" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    output = tmp_path / "DETS.json"
    output.write_text(json.dumps({"images": []}))
    before = digest(output)
    monkeypatch.setattr(os, "fsync", full_for_dets)
    assert_clear(run_main(capsys, "test", SMOKE, "--checkpoint", head, "--output", output,
                          *settings(data, tmp_path / "r")), 4, "DETS.json", "disk full")
    assert digest(output) == before and not leftovers(tmp_path)


# ----------------------------------------------------------------------------- detect

def detect(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str]:
    """``clip4hoi detect`` with the tiny head, on DETR's boxes (its config uses the
    annotated ones)."""
    return run_main(capsys, "detect", *argv, "--set", "detector.use_gt_boxes=false")


def test_detect_bad_device(capsys, data: Path, head: Path, tmp_path: Path) -> None:
    image = next((data / "images" / "test2015").iterdir())
    assert_clear(detect(capsys, image, "--checkpoint", head, "--device", "banana",
                          "--out", tmp_path / "o"), 2, "banana")
    if not torch.cuda.is_available():
        assert_clear(detect(capsys, image, "--checkpoint", head, "--device",
                              "cuda", "--out", tmp_path / "o"), 4, "--device")


def test_detect_class_lists(capsys, data: Path, head: Path, tmp_path: Path) -> None:
    from clip4hoi.data.metadata import load_classes

    image = next((data / "images" / "test2015").iterdir())
    assert_clear(detect(capsys, image, "--checkpoint", head, "--classes",
                          "ride bicycle, ride bicycle", "--out", tmp_path / "o"), 2,
                 "ride bicycle")
    listed = tmp_path / "classes.txt"
    listed.write_bytes("\ufeffride bicycle\nhold cup\n".encode())
    code, err = detect(capsys, image, "--checkpoint", head, "--classes", listed,
                         "--out", tmp_path / "o", "--no-draw", "--top-k", "0")
    assert code == 0, err
    result = json.loads(next((tmp_path / "o").glob("*.jpg.json")).read_text())
    assert {d["verb"] for d in result["detections"]} <= {"ride", "hold"}
    assert load_classes(str(listed)).verbs == ("ride", "hold")
    duplicated = tmp_path / "dup.txt"
    duplicated.write_text("ride bicycle\nride  Bicycle\n")
    assert_clear(detect(capsys, image, "--checkpoint", head, "--classes",
                          duplicated, "--out", tmp_path / "o2"), 2, "dup.txt")


def test_detect_bad_arguments_before_the_model(capsys, monkeypatch, data: Path, head: Path,
                                              tmp_path: Path) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before the arguments were checked")

    monkeypatch.setattr("clip4hoi.models.model.CLIP4HOI.__init__", no_model)
    image = next((data / "images" / "test2015").iterdir())
    assert_clear(detect(capsys, image, "--checkpoint", head, "--top-k", "-5",
                        "--out", tmp_path / "o"), 2, "--top-k")
    (tmp_path / "file").write_text("keep")
    assert_clear(detect(capsys, image, "--checkpoint", head, "--out", tmp_path / "file"), 2,
                 "--out")
    assert_clear(detect(capsys, image, "--checkpoint", head, "--classes", "unicorn",
                        "--out", tmp_path / "o"), 2, "unicorn")
    assert (tmp_path / "file").read_text() == "keep"


def _huge_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (the pixels are never read)."""
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    raw = bytearray(buffer.getvalue())
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    return path


def test_detect_odd_image_sizes(capsys, head: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (5000, 1), (90, 40, 20)).save(folder / "thin.png")
    Image.new("RGB", (1, 3000), (20, 40, 90)).save(folder / "tall.png")
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    before = digest(folder)
    code, err = detect(capsys, folder, "--checkpoint", head,
                         "--out", tmp_path / "o", "--no-draw")
    assert code == 0 and "Traceback" not in err, err
    assert len(list((tmp_path / "o").glob("*.png.json"))) == 3
    assert digest(folder) == before


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    from clip4hoi.data.images import ImageError, load_image

    bomb = _huge_png(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageError, match=r"bomb\.png: image is too large \(400 megapixels\)"):
        load_image(bomb)


# ----------------------------------------------------------------------------- others

def test_make_synthetic_refuses_files_and_datasets(capsys, data: Path, tmp_path: Path) -> None:
    target = tmp_path / "a_file"
    target.write_text("keep me")
    assert_clear(run_main(capsys, "make-synthetic", target), 2, target)
    assert target.read_text() == "keep me"
    before = digest(data)
    assert_clear(run_main(capsys, "make-synthetic", data), 2, "--overwrite")
    assert_clear(run_main(capsys, "make-synthetic", tmp_path / "new", "--train", "0"), 2,
                 "n_train")
    assert digest(data) == before


def test_download_unknown_weights(capsys) -> None:
    assert_clear(run_main(capsys, "download", "detr-r9000"), 2, "detr-r9000")


def test_feature_cache_follows_the_image_content(data: Path, tmp_path: Path,
                                                 one_thread: None) -> None:
    from conftest import tiny_model_config

    from clip4hoi.engine.config import load_experiment
    from clip4hoi.engine.data import build_dataset
    from clip4hoi.engine.distributed import DistInfo
    from clip4hoi.engine.feature_cache import CachedFeatures, FeatureCache, fill_cache
    from clip4hoi.models.model import build_model

    root = Path(shutil.copytree(data, tmp_path / "data"))
    config = load_experiment(SMOKE, settings(root, tmp_path / "r")[1::2])
    dataset = build_dataset(config.data, train=False)
    model = build_model(tiny_model_config()).eval()
    cache, info = FeatureCache(tmp_path / "cache", "key"), DistInfo()
    assert fill_cache(model, dataset, cache, info) == len(dataset)
    assert fill_cache(model, dataset, cache, info) == 0
    # Same name, same pixel size, other pixels: computed again.
    image = dataset.image_paths[dataset.image_indices[0]]
    from PIL import Image

    with Image.open(image) as picture:
        picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image, quality=90)
    with pytest.raises(InputError, match="changed"):
        CachedFeatures(dataset, cache)[0]
    assert fill_cache(model, dataset, cache, info) == 1
    fresh, _ = CachedFeatures(dataset, cache)[0]
    direct = model.extract_features([dataset[0][0]])
    for name, tensor in direct.tensors().items():
        assert torch.equal(tensor, fresh.tensors()[name]), name
    # Another data root with the same file names shares nothing.
    other = Path(shutil.copytree(root, tmp_path / "other"))
    config.data.root = str(other)
    assert fill_cache(model, build_dataset(config.data, train=False), cache, info) == \
        len(dataset)


def test_library_checks() -> None:
    from clip4hoi.api import to_records
    from clip4hoi.data.metadata import from_pairs, load_classes
    from clip4hoi.data.transforms import test_size

    with pytest.raises(InputError, match="repeats class 0"):
        from_pairs([("ride", "bicycle"), ("Ride", "bicycle")])
    with pytest.raises(InputError, match="top_k"):   # the library names it, not its flag
        to_records({"scores": torch.zeros(3)}, load_classes("ride bicycle"), top_k=-5)
    assert test_size(1, 5000, 800, 1333) == [1, 1333]
    assert test_size(5000, 1, 800, 1333) == [1333, 1]
    assert test_size(480, 640, 800, 1333) == [800, 1066]


# ------------------------------------------------------- text or path: class lists, names

LONG_CLASSES = ", ".join([
    "ride bicycle", "hold cup", "sit on dining table", "carry skateboard", "kick sports ball",
    "drink with cup", "hold umbrella", "ride horse", "feed horse", "walk dog", "hold knife",
    "cut cake", "eat pizza", "throw frisbee", "catch frisbee", "fly kite", "hold surfboard",
    "ride motorcycle", "wash car", "drive car", "board airplane", "hold book", "read book",
    "type on keyboard", "hold remote", "pet cat", "hug teddy bear", "hold toothbrush"])


def test_a_long_class_list_is_text(capsys, data: Path, head: Path, tmp_path: Path,
                                   one_thread: None) -> None:
    from clip4hoi.api import HOIDetector
    from clip4hoi.data.metadata import load_classes

    assert len(LONG_CLASSES.encode()) > 255      # longer than any file name may be
    assert len(load_classes(LONG_CLASSES)) == 28
    image = next((data / "images" / "test2015").iterdir())
    code, err = detect(capsys, image, "--checkpoint", head, "--classes", LONG_CLASSES,
                       "--out", tmp_path / "o", "--no-draw", "--top-k", "0")
    assert code == 0 and "Traceback" not in err, err
    result = json.loads(next((tmp_path / "o").glob("*.jpg.json")).read_text())
    assert {d["verb"] for d in result["detections"]} <= set(load_classes(LONG_CLASSES).verbs)
    detector = HOIDetector.from_checkpoint(head, overrides=["detector.use_gt_boxes=false"],
                                           min_size=64, max_size=128)
    [found] = detector(torch.zeros(3, 40, 60, dtype=torch.uint8), classes=LONG_CLASSES)
    assert all(int(k) < 28 for k in found.to_dict()["hoi"])


def test_class_text_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clip4hoi.data.metadata import load_classes

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ride bicycle").mkdir()          # a folder named like the text: still text
    assert load_classes("ride bicycle").verbs == ("ride",)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "mine").write_text("hold cup\n")
    assert load_classes("lists/mine").verbs == ("hold",)            # a file without suffix
    with pytest.raises(InputError, match="lists: is a folder"):
        load_classes(str(tmp_path / "lists"))
    for missing in ("lists/none", "none.txt", "lists/none.json"):
        with pytest.raises(FileNotFoundError, match="no such file"):
            load_classes(missing)
    with pytest.raises(InputError, match="expected 'VERB OBJECT'"):
        load_classes("x" * 300 + ".txt")          # no file can have that name: text


@pytest.mark.parametrize("argv", [
    ["train", SMOKE, "--output-dir", "LONG"],
    ["train", SMOKE, "--resume", "LONG"],
    ["eval", "--annotations", "LONG", "--detections", "LONG"],
    ["make-synthetic", "LONG"],
])
def test_a_name_too_long_for_the_file_system(capsys, argv: list[str], data: Path,
                                             tmp_path: Path) -> None:
    long = str(tmp_path / ("a" * 300))
    argv = [long if item == "LONG" else item for item in argv]
    if argv[0] == "train":
        argv += settings(data, tmp_path / "r")[:2]
    assert_clear(run_main(capsys, *argv), 2, "a" * 300)


# ----------------------------------------------------------------------- configs, ranges

def test_a_yaml_key_given_twice_is_refused(capsys, data: Path, tmp_path: Path) -> None:
    config = tmp_path / "dup.yaml"
    config.write_text(f"base: {SMOKE}\ntrain:\n  epochs: 1\nmodel:\n  classes: hicodet\n"
                      f"train:\n  epochs: 2\n")
    line = assert_clear(run_main(capsys, "train", config, *settings(data, tmp_path / "r")),
                        2, config, "'train'", "line 2", "line 6")
    assert "twice" in line
    inner = tmp_path / "inner.yaml"
    inner.write_text("train:\n  lr: 1.0e-4\n  lr: 1.0e-3\n")
    outer = tmp_path / "outer.yaml"
    outer.write_text("base: inner.yaml\n")
    assert_clear(run_main(capsys, "train", outer, *settings(data, tmp_path / "r")), 2,
                 inner, "'lr'", "line 2", "line 3")
    assert_clear(run_main(capsys, "train", SMOKE, *settings(data, tmp_path / "r",
                                                            "train.lr=[")), 2, "train.lr=[")
    assert not (tmp_path / "r").exists()


def test_yaml_merge_keys_still_override() -> None:
    from clip4hoi.config import parse_yaml

    assert parse_yaml("a: &x {b: 1}\nc:\n  <<: *x\n  b: 2\n") == {"a": {"b": 1},
                                                                "c": {"b": 2}}


@pytest.mark.parametrize("setting,named", [
    ("train.seed=-1", "train.seed"), ("train.seed=1e30", "train.seed"),
    ("train.batch_size=1e30", "train.batch_size"),
    ("train.lr_drop_epochs=[3,-1]", "train.lr_drop_epochs"),
    ("model.detector.score_threshold=2", "model.detector.score_threshold"),
    ("model.head.dropout=1.5", "model.head.dropout"),
    ("model.head.decoder_heads=3", "model.head.decoder_heads"),
    ("model.head.interactor_heads=3", "model.head.interactor_heads"),
    ("model.head.prefix_length=-1", "model.head.prefix_length"),
    ("model.head.alpha=.nan", "model.head.alpha"),
    ("model.loss.match_iou=2", "model.loss.match_iou"),
    ("model.clip.layers=[99]", "model.clip.layers"),
    ("model.clip.image_size=0", "model.clip.image_size"),
    ("training_free.temperature=0", "training_free.temperature"),
])
def test_numbers_out_of_range_are_refused_at_the_door(capsys, setting: str, named: str,
                                                      data: Path, tmp_path: Path) -> None:
    assert_clear(run_main(capsys, "train", SMOKE, *settings(data, tmp_path / "r", setting)),
                 2, named)
    assert not (tmp_path / "r").exists()


def test_too_many_workers_are_refused(data: Path, tmp_path: Path) -> None:
    from clip4hoi.engine.config import load_experiment

    # Checked on the config alone: without the check a run would fork 100000 processes.
    with pytest.raises(InputError, match=r"data\.num_workers=100000 .*\[0, 256\]"):
        load_experiment(SMOKE, settings(data, tmp_path / "r", "data.num_workers=100000")[1::2])


def test_every_range_names_a_setting() -> None:
    from clip4hoi.config import (
        MODEL_RANGES,
        TRAINING_FREE_RANGES,
        ModelConfig,
        TrainingFreeConfig,
        check_model_config,
        check_ranges,
    )
    from clip4hoi.engine.config import EXPERIMENT_RANGES, ExperimentConfig

    # Every key exists (a renamed setting fails here) and the defaults are in range.
    check_model_config(ModelConfig())
    check_ranges(TrainingFreeConfig(), TRAINING_FREE_RANGES, "training_free")
    check_ranges(ExperimentConfig(), EXPERIMENT_RANGES, "")
    assert MODEL_RANGES and EXPERIMENT_RANGES


# ------------------------------------------------------------------------------ the Hub

def test_push_to_an_unreachable_hub(capsys, monkeypatch: pytest.MonkeyPatch,
                                    head: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")   # nothing listens
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    line = assert_clear(run_main(capsys, "push", head, "org/x"), 3, head, "org/x",
                        "127.0.0.1:9")
    assert "cannot reach the Hugging Face Hub" in line
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_clear(run_main(capsys, "push", head, "org/x"), 3, "HF_HUB_OFFLINE")


def test_push_run_dir_must_be_a_run(capsys, head: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for run_dir, reason in (("file", "is a file"), ("missing", "no such folder"),
                            ("empty", "neither config.yaml nor metrics.jsonl")):
        line = assert_clear(run_main(capsys, "push", head, "org/x", "--run-dir",
                                     tmp_path / run_dir), 2, "--run-dir", tmp_path / run_dir)
        assert reason in line


# ------------------------------------------------------------- one output folder, one run

def test_two_trainings_into_one_folder(capsys, data: Path, tmp_path: Path,
                                       one_thread: None) -> None:
    from clip4hoi.fileio import LOCK_NAME, folder_lock

    out = tmp_path / "r"
    with folder_lock(out, "--output-dir"):          # the first run holds the folder
        for resume in ([], ["--resume"]):
            line = assert_clear(run_main(capsys, "train", SMOKE, *resume,
                                         *settings(data, out)), 2, out, f"pid {os.getpid()}")
            assert "in use by another clip4hoi run" in line
        assert not (out / "checkpoints").exists() and not (out / "config.yaml").exists()
    # A first run killed with -9 holds nothing: its lock died with it.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from clip4hoi.fileio import folder_lock\n"
         "with folder_lock(sys.argv[1], '--output-dir'):\n"
         "    print('locked', flush=True); time.sleep(600)", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = assert_clear(run_main(capsys, "train", SMOKE, *settings(data, out)), 2,
                            f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_NAME).exists()               # left by the kill, but unlocked
    code, err = run_main(capsys, "train", SMOKE, *settings(data, out))
    assert code == 0, err
    assert not (out / LOCK_NAME).exists()           # a run that ends removes it


def test_train_output_dir_is_a_file(capsys, data: Path, head: Path) -> None:
    before = digest(head)
    assert_clear(run_main(capsys, "train", SMOKE, *settings(data, head)), 2, "--output-dir",
                 head, "is a file")
    assert digest(head) == before


def test_test_beside_a_training_but_not_beside_a_test(capsys, data: Path, head: Path,
                                                      tmp_path: Path, one_thread: None) -> None:
    from clip4hoi.fileio import folder_lock

    out = tmp_path / "r"
    with folder_lock(out, "--output-dir"):          # a training of that folder runs
        code, err = run_main(capsys, "test", SMOKE, "--checkpoint", head,
                             *settings(data, out))
        assert code == 0, err
        assert (out / "detections.json").is_file()
        with folder_lock(out, "--output", name=".detections.json.lock"):   # a test, too
            assert_clear(run_main(capsys, "test", SMOKE, "--checkpoint", head,
                                  *settings(data, out)), 2, out / "detections.json",
                         "--output")
    assert sorted(p.name for p in out.iterdir()) == ["detections.json",
                                                     "detections.results.json"]


# ------------------------------------------------------------------------ temporary files

def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_write_atomic_names_its_temporary_file_by_process(monkeypatch,
                                                         tmp_path: Path) -> None:
    from clip4hoi.fileio import temp_prefix, write_atomic

    seen: list[str] = []
    fsync = os.fsync

    def look(fd: int) -> None:
        seen.extend(os.listdir(tmp_path))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", look)
    write_atomic(tmp_path / ("n" * 250), "x")       # a long name leaves room for the rest
    [temp] = [name for name in seen if name.endswith(".tmp")]
    assert temp.startswith(temp_prefix("n" * 250)) and f"-{os.getpid()}." in temp
    assert len(temp.encode()) <= 255


def test_temporary_files_of_dead_processes_are_swept(capsys, data: Path, run_copy: Path,
                                                     one_thread: None) -> None:
    from clip4hoi.fileio import sweep_temp_files, temp_prefix

    checkpoints = run_copy / "checkpoints"
    own = f"-{os.getpid()}."
    dead = f"-{_dead_pid()}."
    stale = [checkpoints / (temp_prefix("step_00000002.state.pt").replace(own, dead)
                            + "k1ll3d.tmp"),
             run_copy / (temp_prefix("metrics.jsonl").replace(own, dead) + "k1ll3d.tmp"),
             checkpoints / ".step_00000002.safetensors.0ld5tyle.tmp"]   # no pid: older name
    kept = [checkpoints / (temp_prefix("best.safetensors") + "l1ve.tmp"),    # running
            checkpoints / f".best.safetensors.00000000{dead}0th3r.tmp"]       # other host
    for path in stale + kept:
        path.write_bytes(b"partial")
    stale.append(run_copy / (temp_prefix("dataset").replace(own, dead) + "d1r.tmp"))
    stale[-1].mkdir()                                   # a temporary folder, too
    code, err = run_main(capsys, "train", SMOKE, "--resume",
                         *settings(data, run_copy, "train.epochs=2"))
    assert code == 0, err
    assert not any(path.exists() for path in stale) and all(p.exists() for p in kept)
    assert sorted(leftovers(run_copy)) == sorted(p.name for p in kept)
    assert sweep_temp_files(run_copy / "missing") == []


def test_sigterm_in_train_cleans_up_and_names_the_checkpoints(
        capsys, monkeypatch, data: Path, run_copy: Path, one_thread: None) -> None:
    import signal

    from clip4hoi.engine.trainer import Trainer

    def unhandled(signum: int, frame: object) -> None:   # instead of killing pytest
        raise AssertionError("main() did not handle SIGTERM")

    def terminated(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        before = digest(run_copy / "checkpoints")
        monkeypatch.setattr(Trainer, "train_step", terminated)
        assert_clear(run_main(capsys, "train", SMOKE, "--resume",
                              *settings(data, run_copy, "train.epochs=2")), 143,
                     "terminated (SIGTERM)", "--resume")
        assert digest(run_copy / "checkpoints") == before and not leftovers(run_copy)
        monkeypatch.undo()
        fsync = os.fsync

        def terminated_in_a_write(fd: int) -> None:   # SIGTERM in the middle of a write
            os.kill(os.getpid(), signal.SIGTERM)
            fsync(fd)

        monkeypatch.setattr(os, "fsync", terminated_in_a_write)
        assert_clear(run_main(capsys, "train", SMOKE, "--resume",
                              *settings(data, run_copy, "train.epochs=2")), 143, "--resume")
        assert not leftovers(run_copy)
        assert signal.getsignal(signal.SIGTERM) is unhandled   # main() restored it
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_make_synthetic_on_a_full_disk_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "d"
    done = subprocess_cli("make-synthetic", out, "--train", "3", "--test", "2",
                          fsize=2000)
    assert done.returncode == 4, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert str(out) in line and "File too large" in line
    assert not out.exists() or not any(out.rglob("*"))


def test_make_synthetic_replaces_a_dataset_whole(capsys, tmp_path: Path) -> None:
    out = tmp_path / "d"
    make_synthetic(out, n_train=3, n_test=2, image_size=64)
    assert run_main(capsys, "make-synthetic", out, "--train", "2", "--test", "1",
                    "--overwrite")[0] == 0
    assert len(list((out / "images" / "train2015").iterdir())) == 2   # no stale images
    assert len(json.loads((out / "instances_train2015.json").read_text())["filenames"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["images", "instances_test2015.json",
                                                     "instances_train2015.json"]
    assert_clear(run_main(capsys, "make-synthetic", tmp_path / "e", "--seed", "-1"), 2,
                 "seed")


# --------------------------------------------------------------------------------- caches

def test_a_corrupt_text_cache_entry_is_encoded_again(capsys, tmp_path: Path,
                                                     one_thread: None) -> None:
    from test_training_free import tiny_config

    from clip4hoi.data.metadata import load_classes
    from clip4hoi.engine.text_cache import cached_text_embeddings
    from clip4hoi.models.training_free import build_training_free

    model = build_training_free(tiny_config("dense"))
    classes = load_classes("ride bicycle, hold cup")
    good, _ = cached_text_embeddings(model, classes, tmp_path)
    [entry] = tmp_path.glob("*.safetensors")
    faults = {"non-finite": torch.full_like(good, float("nan")),
              "shape": good[:1], "all-zero row": torch.zeros_like(good),
              "floating point": good.to(torch.int64)}
    for reason, bad in faults.items():
        save_file({"text": bad.contiguous()}, str(entry))
        text, hit = cached_text_embeddings(build_training_free(tiny_config("dense")),
                                           classes, tmp_path)
        assert not hit and torch.equal(text, good), reason
        err = capsys.readouterr().err
        assert "warning" in err and entry.name in err and reason in err, err
    assert cached_text_embeddings(model, classes, tmp_path)[1]   # replaced by a good one


def test_a_corrupt_feature_cache_entry_is_never_trusted(data: Path, tmp_path: Path,
                                                        one_thread: None) -> None:
    from conftest import tiny_model_config

    from clip4hoi.engine.config import load_experiment
    from clip4hoi.engine.data import build_dataset
    from clip4hoi.engine.distributed import DistInfo
    from clip4hoi.engine.feature_cache import CachedFeatures, FeatureCache, fill_cache
    from clip4hoi.models.model import build_model

    config = load_experiment(SMOKE, settings(data, tmp_path / "r")[1::2])
    dataset = build_dataset(config.data, train=False)
    model = build_model(tiny_model_config()).eval()
    cache, info = FeatureCache(tmp_path / "cache", "key"), DistInfo()
    fill_cache(model, dataset, cache, info)
    entry = cache.path(dataset.image_paths[dataset.image_indices[0]])
    original = entry.read_bytes()
    from safetensors import safe_open

    with safe_open(str(entry), framework="pt") as handle:
        metadata = handle.metadata()
    corruptions = {
        "non-finite": lambda t: {**t, "hidden": torch.full_like(t["hidden"], float("nan"))},
        "NaN or \\+infinity in logits": lambda t: {**t, "logits": torch.full_like(
            t["logits"], float("nan"))},
        "no clip_global": lambda t: {k: v for k, v in t.items() if k != "clip_global"},
        "patches": lambda t: {**t, "clip_patches.0": t["clip_patches.0"][:, :1]},
    }
    for reason, corrupt in corruptions.items():
        entry.write_bytes(original)
        save_file(corrupt(load_file(str(entry))), str(entry), metadata=metadata)
        with pytest.raises(InputError, match=rf"{entry.name}.*corrupt.*{reason}"):
            CachedFeatures(dataset, cache)[0]
        assert not entry.exists()                       # removed: the next fill computes it
        assert fill_cache(model, dataset, cache, info) == 1
    entry.write_bytes(original[:100])                    # torn after the stamp was read
    with pytest.raises(InputError, match="unreadable"):
        cache.load(dataset.image_paths[dataset.image_indices[0]], (0, 0))
    assert not entry.exists()


def test_push_model_card_from_a_damaged_run(head: Path, tmp_path: Path) -> None:
    from clip4hoi.hub import model_card

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: 5\ntrain: [1]\n")      # what can be read is used
    (run / "metrics.jsonl").write_text('{"step": 1, "map_full": 20.0}\n')
    assert "| full | 20.00 |" in model_card(head, "org/x", run)
    for text in ("5\n", '{"step": "x", "map_full": 1}\n', '{"step": 1, "map_full": "high"}\n'):
        (run / "metrics.jsonl").write_text(text)
        with pytest.raises(InputError, match=r"metrics\.jsonl, line 1"):
            model_card(head, "org/x", run)
    (run / "metrics.jsonl").write_text("")
    for text, reason in (("- 1\n", "mapping"), ("data: {a: 1}\ndata: {b: 2}\n", "twice")):
        (run / "config.yaml").write_text(text)
        with pytest.raises(InputError, match=rf"config\.yaml.*{reason}"):
            model_card(head, "org/x", run)


def test_a_full_disk_while_logging_names_the_log(capsys, monkeypatch, data: Path,
                                                 tmp_path: Path, one_thread: None) -> None:
    opened = Path.open

    def full_for_the_log(self: Path, mode: str = "r", *args: object, **kwargs: object):
        if self.name == "metrics.jsonl" and mode == "a":
            raise OSError(errno.ENOSPC, "No space left on device")
        return opened(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_for_the_log)
    out = tmp_path / "r"
    assert_clear(run_main(capsys, "train", SMOKE, *settings(data, out, "train.log_every=1")),
                 4, out / "metrics.jsonl", "disk full")
    assert not leftovers(tmp_path)


# ------------------------------------------- every option at the door: detect, demo, API

TINY_SIZES = ["--random-weights", "--test-scale", "64", "--max-size", "96"]


@pytest.mark.parametrize("argv,named", [
    (["--test-scale", "1", "--max-size", "2"], "--test-scale 1"),    # torch failed deep inside
    (["--test-scale", "31"], "--test-scale 31"),
    (["--test-scale", str(10**8), "--max-size", str(10**9)], "--test-scale"),  # 40 PB asked
    (["--max-size", str(10**9)], "--max-size 1000000000"),           # a thin image: no limit
    (["--batch-size", str(10**12)], "--batch-size"),
    (["--workers", "100000"], "--workers 100000"),                  # would fork 100000
    (["--threads", "100000"], "--threads 100000"),
    (["--set", "margin=nan"], "margin=nan"),                        # was silently used
    (["--set", "training_free.temperature=.inf"], "temperature=inf"),
    (["--set", "margin=-1"], "margin=-1"),
    (["--set", "crop_batch_size=abc"], "crop_batch_size"),
    (["--set", "crop_batch_size=1e12"], "crop_batch_size"),
    (["--set", "detector.nms_threshold=.nan"], "detector.nms_threshold"),
    (["--set", "detector.min_humans=20"], "detector.min_humans=20"),  # silently capped at 15
    (["--set", "mode=banana"], "banana"),
    (["--set", "dense_pooling=banana"], "dense_pooling"),
    (["--set", "templates=[]"], "templates"),
    (["--set", "templates=['{foo}']"], "{foo}"),
    (["--set", "clip.image_size=100000"], "clip.image_size"),
    (["--mode", "trained", "--set", "head.alpha=2"], "head.alpha"),
])
def test_detect_options_are_checked_before_the_model(capsys, monkeypatch, argv: list[str],
                                                     named: str, tmp_path: Path) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr("clip4hoi.engine.detect.DetectJob.start", no_model)
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (40, 30)).save(image)
    assert_clear(run_main(capsys, "detect", image, "--out", tmp_path / "o",
                          *TINY_SIZES, *argv), 2, named)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("overrides,named", [
    (["margin=nan"], "margin"), (["dense_pooling=x"], "dense_pooling"),
    (["detector.min_objects=40"], "min_objects"),
])
def test_the_api_checks_overrides_before_loading(monkeypatch, overrides: list[str],
                                                 named: str) -> None:
    from clip4hoi.api import load_detector

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before its overrides were checked")

    monkeypatch.setattr("clip4hoi.engine.backend.build_training_free", no_model)
    monkeypatch.setattr("clip4hoi.engine.backend.build_model", no_model)
    with pytest.raises(InputError, match=named):
        load_detector("dense", random_weights=True, overrides=overrides)
    with pytest.raises(InputError, match=r"head\.dropout"):
        load_detector("trained", random_weights=True, overrides=["head.dropout=2"])


def _busy_port() -> socket.socket:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    return held


@pytest.mark.parametrize("argv,named", [
    (["--port", "70000"], "--port 70000"),      # OverflowError after the model loaded
    (["--port", "-1"], "--port -1"),
    (["--port", "BUSY"], "in use"),             # OSError: Cannot find empty port
    (["--host", "999.1.1.1"], "--host '999.1.1.1'"),
    (["--host", "no-such-host.invalid"], "--host"),
    (["--host", "192.0.2.1"], "--host '192.0.2.1'"),   # not an address of this machine
])
def test_demo_address_is_checked_before_the_model(capsys, monkeypatch, argv: list[str],
                                                  named: str) -> None:
    pytest.importorskip("gradio")

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the address was checked")

    monkeypatch.setattr("clip4hoi.api.load_detector", no_model)
    held = _busy_port()
    try:
        argv = [str(held.getsockname()[1]) if item == "BUSY" else item for item in argv]
        line = assert_clear(run_main(capsys, "demo", "--random-weights", *argv), 2, named)
    finally:
        held.close()
    assert ("--port" if "--port" in argv else "--host") in line


def test_demo_removes_the_results_of_uploads_when_it_stops(monkeypatch) -> None:
    pytest.importorskip("gradio")
    import gradio

    from clip4hoi.demo import DemoBackend, launch

    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: None)  # Ctrl-C'd
    backend = DemoBackend(lambda mode: None, ["dense"], "dense")
    (backend.output_dir / "upload").mkdir()
    launch(backend, "127.0.0.1", None)
    assert not backend.output_dir.exists()


@pytest.mark.parametrize("argv,named", [
    (["--opset", "0"], "--opset 0"),            # torch wrote opset 18 instead, silently
    (["--opset", "99999"], "--opset 99999"),
    (["--set", "margin=.nan"], "margin=nan"),    # was exported
    (["--set", "detector.score_threshold=2"], "detector.score_threshold"),
])
def test_export_options_are_checked_before_the_model(capsys, monkeypatch, argv: list[str],
                                                     named: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built before the options were checked")

    monkeypatch.setattr("clip4hoi.engine.backend.build_training_free", no_model)
    assert_clear(run_main(capsys, "export", "--out", tmp_path / "x", "--random-weights",
                          *argv), 2, named)
    assert not (tmp_path / "x").exists()


def test_demo_refusing_its_overrides_leaves_nothing(capsys, monkeypatch,
                                                    tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))   # where the demo's folder goes
    assert_clear(run_main(capsys, "demo", "--random-weights", "--set", "margin=.nan"), 2,
                 "margin=nan")
    assert not list(tmp_path.iterdir())


def test_a_decoding_worker_is_quiet_when_ctrl_c_stops_the_run(monkeypatch) -> None:
    # Ctrl-C while the main process took a frame from a worker: the worker's resource
    # sharer thread found its connection reset and printed a traceback under the
    # "interrupted (Ctrl-C)" line (3 runs in 24 of a 60-image folder).
    from clip4hoi.engine.predictor import _quiet_when_left

    reported: list[type] = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, error, trace: reported.append(kind))
    _quiet_when_left(0)
    sharer = compile("def serve(error):\n    raise error\n",
                     "/usr/lib/python3/multiprocessing/resource_sharer.py", "exec")
    scope: dict = {}
    exec(sharer, scope)
    for error in (ConnectionResetError(104, "Connection reset by peer"), ValueError("bug")):
        try:
            scope["serve"](error)
        except Exception:
            sys.excepthook(*sys.exc_info())
    assert reported == [ValueError]       # a real error is still reported

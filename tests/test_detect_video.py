"""``clip4hoi detect`` on videos through the one pipeline: tracked lines, the timeline and the
drawn video; a run killed half-way resumes to the files of an uninterrupted one; Ctrl-C and
SIGTERM leave complete files; live streams over a local HTTP server; the video cases of the
fault battery (extreme sampling, rotated phone videos, no decodable frame, temporary files).

Most runs use the moving-boxes video (tests/moving_boxes.py) with :func:`oracle_backend`
standing in for the model: each frame gets the oracle boxes of its movers with the planted
interaction scores, so identities and segments can be checked against the truth.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REPO,
    people_and_bicycles,
    set_flags,
    tiny_training_free_flags,
    write_keyless_video,
)
from moving_boxes import (
    ORACLE_CLASSES,
    PLANTED,
    SCENE,
    oracle_backend,
    oracle_frame,
    write_moving_boxes,
)

from clip4hoi.cli import main
from clip4hoi.engine.backend import TorchBackend

av = pytest.importorskip("av")
pytest.importorskip("trackers")
TESTS = Path(__file__).resolve().parent
EVERY = 5            # the 10 frames/s video sampled at 2 frames/s
PERIOD = 0.5
SAMPLED = 16         # frames of the 8 s video at 2 frames/s
TINY = set_flags(tiny_training_free_flags())


def _argv(*inputs: str | Path, out: Path, every: int = EVERY, extra: tuple = ()) -> list[str]:
    return ["detect", *map(str, inputs), "--out", str(out), "--every", str(every),
            "--random-weights", "--device", "cpu", "--test-scale", "120", "--max-size",
            "160", "--classes", ORACLE_CLASSES, *extra, *TINY]


def _detect(*inputs: str | Path, out: Path, calls: list | None = None, every: int = EVERY,
            extra: tuple = ()) -> int:
    """``clip4hoi detect`` in this process with the oracle standing in for the model."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TorchBackend, "__call__", oracle_backend(calls=calls))
        return main(_argv(*inputs, out=out, every=every, extra=extra))


def _spawn(*inputs: str | Path, out: Path, delay: float, extra: tuple = ()
           ) -> subprocess.Popen:
    """The same in a new process (and process group) whose oracle takes ``delay`` seconds
    per frame, to be stopped half-way."""
    code = ("import sys\nfrom moving_boxes import oracle_backend\n"
            "from clip4hoi.engine.backend import TorchBackend\nfrom clip4hoi.cli import main\n"
            f"TorchBackend.__call__ = oracle_backend({delay})\n"
            f"sys.exit(main({_argv(*inputs, out=out, extra=extra)!r}))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen,
                    timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_bytes().count(b"\n") >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended first: {process.communicate()[1][-3000:]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"{path} did not reach {count} lines")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _movie(path: Path) -> tuple[list[float], np.ndarray]:
    """The drawn video's frame times and pixels."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        return [float(f.time) for f in frames], np.stack([f.to_ndarray(format="rgb24")
                                                          for f in frames])


def _hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*"))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "boxes.mp4"
    write_moving_boxes(path)
    return path


@pytest.fixture(scope="module")
def reference(video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of one uninterrupted run on the video."""
    out = tmp_path_factory.mktemp("reference")
    assert _detect(video, out=out) == 0
    return out


# ----------------------------------------------------------------------- one run


def test_a_video_gives_tracked_lines_a_timeline_and_a_drawn_video(
        video: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = _lines(reference / "boxes.mp4.jsonl")
    assert [line["frame"] for line in lines] == list(range(0, 80, EVERY))
    # Identities: each mover keeps one track id from its second frame on, never another's.
    ids: dict[int, list] = {}
    for line in lines:
        truth = {tuple(b["box"]): b["id"] for b in oracle_frame(line["frame"])["boxes"]}
        seen = {}
        for det in line["detections"]:
            seen[truth[tuple(det["human_box"])]] = det["human_track"]
            seen[truth[tuple(det["object_box"])]] = det["object_track"]
        for mover, track in seen.items():
            ids.setdefault(mover, []).append(track)
    assert sorted(ids) == [m.id for m in SCENE]
    tracks = {}
    for mover, history in ids.items():
        assert history[0] is None and len(set(history[1:])) == 1, (mover, history)
        tracks[history[1]] = mover
    assert len(tracks) == len(SCENE)
    # Segments: the planted spans, within one sampled frame.
    timeline = json.loads((reference / "boxes.mp4.timeline.json").read_text())
    assert timeline["complete"] is True and timeline["frames"] == SAMPLED
    found = {(tracks[i["human_track"]], tracks[i["object_track"]], i["hoi"]):
             [(s["start"], s["end"]) for s in i["segments"]] for i in timeline["interactions"]}
    planted = [p for p in PLANTED if p.end - p.start >= timeline["settings"]["min_length"]]
    assert sorted(found) == sorted((p.human, p.obj, p.hoi) for p in planted)
    for p in planted:
        ((start, end),) = found[(p.human, p.obj, p.hoi)]
        assert abs(start - p.start) <= PERIOD and abs(end - p.end) <= PERIOD
    times, _ = _movie(reference / "boxes.mp4.drawn.mp4")
    assert times == pytest.approx([line["time"] for line in lines])
    assert _hidden(reference) == []     # no temporary file, no record of the run left
    # The summary is printed; a rerun finds the video done.
    assert _detect(video, out=reference) == 0
    err = capsys.readouterr().err
    assert "0 done, 1 skipped" in err
    out = tmp_path / "again"
    assert _detect(video, out=out) == 0
    err = capsys.readouterr().err
    assert "boxes.mp4: 16 frame(s) detected" in err and "4 track(s), 2 interaction" in err
    assert " hold cup " in err and "00:02.0–00:05.0" in err
    assert (out / "boxes.mp4.jsonl").read_bytes() == (reference / "boxes.mp4.jsonl").read_bytes()


def test_the_real_tiny_model_gives_track_ids(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny random DETR labelling every query person or bicycle, no oracle."""
    from clip4hoi.models.detr import DETR

    monkeypatch.setattr(DETR, "forward", people_and_bicycles(DETR.forward))
    path = tmp_path / "boxes.mp4"
    write_moving_boxes(path, seconds=3.0)
    argv = _argv(path, out=tmp_path / "out", extra=("--top-k", "10", "--batch-size", "2"))
    argv[argv.index("--classes") + 1] = "ride bicycle, hold bicycle"
    assert main(argv) == 0
    lines = _lines(tmp_path / "out" / "boxes.mp4.jsonl")
    assert len(lines) == 6 and all(0 < len(line["detections"]) <= 10 for line in lines)
    tracked = [d for line in lines[1:] for d in line["detections"]]
    assert all("human_track" in d and "object_track" in d for d in tracked)
    assert any(d["human_track"] is not None for d in tracked)


# ----------------------------------------------------------------------- stopped runs


def test_a_run_killed_half_way_resumes_to_the_files_of_an_uninterrupted_one(
        video: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    process = _spawn(video, out=out, delay=0.2)
    _wait_for_lines(out / "boxes.mp4.jsonl", 6, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    done = len(_lines(out / "boxes.mp4.jsonl"))
    assert 6 <= done < SAMPLED and not (out / "boxes.mp4.timeline.json").exists()
    with open(out / "boxes.mp4.jsonl", "a") as lines:     # as if a last line were torn
        lines.write('{"file_name": "boxes.mp4", "frame": 9')
    calls: list[int] = []
    decoded: list[int] = []
    from clip4hoi.engine.detect import Progress

    write = Progress.write
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Progress, "write", lambda self, r: (decoded.append(r.frame),
                                                          write(self, r)))
        assert _detect(video, out=out, calls=calls) == 0
    err = capsys.readouterr().err
    # The second run decoded every sampled frame (to draw them again), detected the rest.
    assert decoded == list(range(0, 80, EVERY))
    assert calls == list(range(done * EVERY, 80, EVERY))
    assert f"resuming after frame {(done - 1) * EVERY} ({done} frame(s) done)" in err
    assert f"{SAMPLED - done} frame(s) detected" in err and f"{done} done before" in err
    for name in ("boxes.mp4.jsonl", "boxes.mp4.timeline.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    # The drawn video: every frame drawn again, the same pictures — within H.264's noise
    # (libx264's choices vary with the timing of its input, even on one thread).
    times, pixels = _movie(out / "boxes.mp4.drawn.mp4")
    reference_times, reference_pixels = _movie(reference / "boxes.mp4.drawn.mp4")
    difference = np.abs(pixels.astype(int) - reference_pixels)
    assert times == reference_times and difference.mean() < 0.5 and difference.max() < 64
    assert _hidden(out) == []           # the killed run's temporary drawn video swept


def test_sigterm_leaves_complete_files_and_the_next_run_goes_on(
        video: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = _spawn(video, out=out, delay=0.2)
    _wait_for_lines(out / "boxes.mp4.jsonl", 5, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode in (130, 143), err[-3000:]   # 143 with a SIGTERM exit code
    assert "Traceback" not in err and "interrupted; run again to continue" in err
    lines = _lines(out / "boxes.mp4.jsonl")
    timeline = json.loads((out / "boxes.mp4.timeline.json").read_text())
    assert timeline["complete"] is False and timeline["frames"] == len(lines) < SAMPLED
    times, _ = _movie(out / "boxes.mp4.drawn.mp4")
    assert times == pytest.approx([line["time"] for line in lines])
    assert _hidden(out) == [".boxes.mp4.run.json"]         # the run's options, for resuming
    assert _detect(video, out=out) == 0
    for name in ("boxes.mp4.jsonl", "boxes.mp4.timeline.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert _hidden(out) == []


def test_ctrl_c_in_this_process_and_resuming_with_other_options(
        video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C keeps what is done; a rerun with options that change the lines is refused
    at the door (naming the flag, before the model loads), as is a changed video."""
    out = tmp_path / "out"
    oracle = oracle_backend()
    calls = []

    def interrupted(self, inputs, targets, classes):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return oracle(self, inputs, targets, classes)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TorchBackend, "__call__", interrupted)
        assert main(_argv(video, out=out)) == 130
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err
    assert len(_lines(out / "boxes.mp4.jsonl")) == 3

    import clip4hoi.engine.backend as backend

    monkeypatch.setattr(backend, "build_backend", lambda *a, **k: pytest.fail("loaded"))
    assert main(_argv(video, out=out, every=2)) == 2
    err = capsys.readouterr().err
    assert "error: --every 2: differs from the run that began boxes.mp4 and was cut short " \
           "(every 5): give the same to go on with it, or --overwrite to begin it again" in err
    assert main(_argv(video, out=out, extra=("--top-k", "3"))) == 2
    assert "--top-k 3: differs" in capsys.readouterr().err
    os.utime(video, ns=(time.time_ns(), time.time_ns()))
    assert main(_argv(video, out=out)) == 2
    assert f"INPUT {video}: changed since a run began it" in capsys.readouterr().err
    (out / ".boxes.mp4.run.json").unlink()
    assert main(_argv(video, out=out)) == 2
    assert "holds the lines of boxes.mp4 but not the record" in capsys.readouterr().err
    monkeypatch.undo()
    assert _detect(video, out=out, extra=("--overwrite",)) == 0
    assert len(_lines(out / "boxes.mp4.jsonl")) == SAMPLED


def test_a_video_being_written_by_another_run_is_left_to_it(
        video: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    theirs = out / ".boxes.mp4.drawn.mp4.abcd1234.tmp.mp4"     # the other run's
    stale = out / ".other.mp4.drawn.mp4.ef567890.tmp.mp4"      # a killed run's
    theirs.write_bytes(b"x")
    stale.write_bytes(b"x")
    with open(out / "boxes.mp4.jsonl", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert _detect(video, out=out) == 0
    err = capsys.readouterr().err
    assert "boxes.mp4: being detected by another run; left to it" in err
    assert "0 done, 1 skipped" in err
    assert theirs.exists() and not stale.exists()


# ----------------------------------------------------------------------- live streams


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files of the served folder; ``/live.ts`` trickles ``live.ts`` out (a stream)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != "/live.ts":
            return super().do_GET()
        data = (Path(self.directory) / "live.ts").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        try:
            for start in range(0, len(data), 8192):    # bounded: the file's length
                self.wfile.write(data[start:start + 8192])
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the video (``boxes.mp4``, its index first) and a
    60 s MPEG-TS stream (``live.ts``)."""
    folder = tmp_path_factory.mktemp("served")
    write_moving_boxes(folder / "boxes.mp4", options={"movflags": "faststart"})
    write_moving_boxes(folder / "live.ts", seconds=60.0, format="mpegts")
    httpd = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_stream_over_http_gives_the_files_of_the_video(
        server: str, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    url = f"{server}/boxes.mp4"
    assert _detect(url, out=out) == 0
    assert _detect(url, out=out) == 0          # a second recording: files of its own
    err = capsys.readouterr().err
    assert "2 done" not in err and err.count("1 done, 0 skipped") == 2
    names = sorted(p.name for p in out.glob("*.jsonl"))
    port = server.rsplit(":", 1)[1]
    assert len(names) == 2 and all(n.startswith(f"127.0.0.1-{port}_boxes.mp4.")
                                   for n in names)
    expected = _lines(reference / "boxes.mp4.jsonl")
    for name in names:
        lines = _lines(out / name)
        assert [(x["frame"], x["time"], x["detections"]) for x in lines] == \
            [(x["frame"], x["time"], x["detections"]) for x in expected]
        stem = name.removesuffix(".jsonl")
        timeline = json.loads((out / f"{stem}.timeline.json").read_text())
        assert timeline["complete"] is True and timeline["file_name"] == stem
        assert (out / f"{stem}.drawn.mp4").is_file()
    assert _hidden(out) == []


def test_ctrl_c_ends_a_live_stream_with_complete_files(server: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = _spawn(f"{server}/live.ts", out=out, delay=0.05)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (lines_file,) = out.glob("*.jsonl")
    _wait_for_lines(lines_file, 6, process)
    os.killpg(process.pid, signal.SIGINT)       # Ctrl-C in a terminal: the whole group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "interrupted;" in err and "run again" not in err
    lines = _lines(lines_file)
    stem = lines_file.name.removesuffix(".jsonl")
    timeline = json.loads((out / f"{stem}.timeline.json").read_text())
    assert timeline["complete"] is False and timeline["frames"] == len(lines) >= 6
    assert [line["frame"] for line in lines] == list(range(0, EVERY * len(lines), EVERY))
    times, _ = _movie(out / f"{stem}.drawn.mp4")
    assert len(times) == len(lines)
    assert _hidden(out) == [f".{stem}.run.json"]


def test_live_sources_are_recognised_named_and_opened(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    from clip4hoi.data.sources import is_stream, scan_inputs, stream_name
    from clip4hoi.errors import InputError

    assert all(map(is_stream, ["rtsp://cam/live", "https://x/a.mp4", "/dev/video0",
                               "avfoundation:0", "dshow:video=Integrated Camera"]))
    assert not any(map(is_stream, ["clip.mp4", "C:/videos/clip.mp4", "photos/"]))
    assert stream_name("rtsp://user:secret@cam.local:554/live/ch1", 0).startswith(
        "cam.local-554_live_ch1.")
    opened = []

    def fake_open(target: str, **kwargs: object):
        opened.append((target, kwargs.get("format")))
        raise av.error.FileNotFoundError(2, "No such file or directory", target)

    monkeypatch.setattr(av, "open", fake_open)
    scan = scan_inputs(["/dev/video0", "rtsp://user:secret@cam.local/live"])
    assert [v.live for v in scan.videos] == [True, True]
    for source in scan.videos:
        with pytest.raises(InputError, match="cannot read the video") as error:
            next(source.frames())
        assert "secret" not in str(error.value)
    assert opened == [("/dev/video0", "v4l2"), ("rtsp://user:secret@cam.local/live", None)]


# ----------------------------------------------------------------------- issue 20's video cases


@pytest.mark.parametrize("flag, value", [
    ("--every", "99999999999999999999999"), ("--every", "0"), ("--fps", "1e12"),
    ("--fps", "inf"), ("--fps", "nan"), ("--fps", "-1"), ("--on-score", "2"),
    ("--max-gap", "nan"), ("--lost-seconds", "1e9"), ("--track-buffer", "-0.1")])
def test_extreme_options_are_refused_at_the_door_by_name(
        flag: str, value: str, video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    import clip4hoi.engine.backend as backend

    monkeypatch.setattr(backend, "build_backend", lambda *a, **k: pytest.fail("loaded"))
    argv = _argv(video, out=tmp_path, extra=(flag, value))
    if flag == "--every":
        argv[argv.index("--every") + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"clip4hoi detect: error: {flag} " in err and "Traceback" not in err
    assert str(video) not in err                       # the input is not blamed
    assert main(_argv(video, out=tmp_path, extra=("--on-score", "0.3", "--off-score",
                                                  "0.5"))) == 2
    assert "--off-score 0.5: must be at most --on-score 0.3" in capsys.readouterr().err


def test_one_frame_in_a_billion_is_one_drawn_frame(video: Path, tmp_path: Path) -> None:
    assert _detect(video, out=tmp_path, every=1_000_000_000) == 0
    assert [line["frame"] for line in _lines(tmp_path / "boxes.mp4.jsonl")] == [0]
    assert len(_movie(tmp_path / "boxes.mp4.drawn.mp4")[0]) == 1


ORIENTATIONS = [(0, False, False), (90, False, False), (-90, False, False),
                (180, False, False), (0, True, False), (0, False, True),
                (90, True, False), (-90, True, False)]


@pytest.mark.parametrize("degrees, hflip, vflip", ORIENTATIONS)
def test_the_display_matrix_is_applied_as_players_apply_it(
        degrees: int, hflip: bool, vflip: bool, tmp_path: Path) -> None:
    """The eight orientations a display matrix gives (as EXIF's): PyAV's documented
    meaning — rotate ``degrees`` counter-clockwise, then mirror — on the stored frame."""
    from clip4hoi.data.sources import VideoFile

    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[:16, :32] = (250, 0, 0)
    stored[:16, 32:] = (0, 250, 0)
    stored[16:, :32] = (0, 0, 250)
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    expected = np.rot90(stored, degrees // 90)
    expected = expected[:, ::-1] if hflip else expected
    expected = expected[::-1] if vflip else expected
    (frame,) = VideoFile(path, "phone.mp4").frames()
    shown = frame.pixels.permute(1, 2, 0).numpy()
    assert shown.shape == expected.shape
    wrong = np.abs(shown.astype(int) - expected).max(axis=2) > 100   # (a wrong turn: half)
    assert wrong.mean() < 0.02                                       # (chroma edges)


def test_a_phone_video_is_detected_and_drawn_upright(tmp_path: Path) -> None:
    path = tmp_path / "phone.mp4"
    write_moving_boxes(path, seconds=1.0, rotation=90)
    out = tmp_path / "out"
    assert main(["detect", str(path), "--out", str(out), "--every", "5", "--random-weights",
                 "--device", "cpu", "--test-scale", "96", "--max-size", "160",
                 "--classes", "ride bicycle", *TINY]) == 0
    lines = _lines(out / "phone.mp4.jsonl")
    assert {(line["width"], line["height"]) for line in lines} == {(120, 160)}
    with av.open(str(out / "phone.mp4.drawn.mp4")) as movie:
        frame = next(movie.decode(video=0))
        assert (frame.width, frame.height, frame.rotation) == (120, 160, 0)


def test_a_video_with_no_decodable_frame_is_a_failed_input(
        video: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Its packets are there but no key frame: the decoder gives nothing and no error."""
    broken = write_keyless_video(video, tmp_path / "nokey.mp4")
    out = tmp_path / "out"
    for _ in range(2):                         # failed, so tried again: not marked done
        assert _detect(broken, out=out) == 1
        err = capsys.readouterr().err
        assert f"error: {broken}: no frame could be decoded" in err and "0 done" in err
        assert list(out.iterdir()) == []
    garbage = tmp_path / "garbage.mp4"          # and a file that is no video at all
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated, not a movie")
    assert _detect(garbage, out=out) == 1
    assert f"error: {garbage}: cannot read the video" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_a_full_disk_while_writing_a_video_names_the_file_and_leaves_no_temporary_file(
        video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    import errno

    import clip4hoi.engine.videos as videos

    out = tmp_path / "out"
    written = []
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if data.startswith(b'{"file_name"'):
            written.append(1)
            if len(written) > 5:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(videos.os, "write", full)
    assert _detect(video, out=out) == 4
    err = capsys.readouterr().err
    assert f"error: {out / 'boxes.mp4.jsonl'}: No space left on device" in err
    assert len(_lines(out / "boxes.mp4.jsonl")) == 5
    assert _hidden(out) == [".boxes.mp4.run.json"]
    monkeypatch.undo()
    assert _detect(video, out=out) == 0        # and the video goes on when there is room
    assert len(_lines(out / "boxes.mp4.jsonl")) == SAMPLED and _hidden(out) == []

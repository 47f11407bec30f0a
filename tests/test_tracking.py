"""Track ids across a video's sampled frames (clip4hoi.tracking): stable on the synthetic
moving-boxes video, one id per person whatever its role, replayable for resume, and a
clear message when the tracker cannot be imported."""

from __future__ import annotations

import builtins
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from moving_boxes import SCENE, decoded_times, oracle_records, write_moving_boxes

from clip4hoi.errors import EnvironmentFault, InputError, OptionError
from clip4hoi.tracking import TrackerSettings, VideoTracker

pytest.importorskip("trackers")
EVERY = 5  # 10 frames/s sampled at 2 frames/s


@pytest.fixture(scope="module")
def tracked_video(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The moving-boxes video decoded at 2 frames/s, its oracle boxes (with 1 px of
    jitter) as detections, tracked: per sampled frame ``{"frame", "time", "detections"}``."""
    path = tmp_path_factory.mktemp("video") / "boxes.mp4"
    oracle = write_moving_boxes(path)
    rng = np.random.default_rng(0)
    tracker = VideoTracker(rate=2.0)
    frames = []
    for index, time in decoded_times(path, EVERY):
        assert abs(time - oracle[index]["time"]) < 1e-6
        records = oracle_records(oracle[index], jitter=1.0, rng=rng)
        frames.append({"frame": index, "time": time,
                       "detections": tracker.track_records(time, records)})
    return frames


def _ids_by_truth(frames: list[dict]) -> dict[int, list[int | None]]:
    """Per mover id, the track ids it got in the frames it was in (in order)."""
    ids: dict[int, list[int | None]] = {}
    for frame in frames:
        seen = {}
        for det in frame["detections"]:
            human, obj = det["_truth"]
            seen[human], seen[obj] = det["human_track"], det["object_track"]
        for truth, track in seen.items():
            ids.setdefault(truth, []).append(track)
    return ids


def test_no_identity_switch_on_paths_that_do_not_cross(tracked_video: list[dict]) -> None:
    ids = _ids_by_truth(tracked_video)
    assert sorted(ids) == [m.id for m in SCENE]
    tracks = {}
    for truth, history in ids.items():
        assert history[0] is None, "a track is confirmed on its second frame"
        assert None not in history[1:] and len(set(history[1:])) == 1, (truth, history)
        tracks[truth] = history[1]
    assert len(set(tracks.values())) == len(tracks)   # distinct movers, distinct tracks
    # The ball moves 8 px per sampled frame, its own width (give or take the jitter): the
    # buffered IoU follows it, where plain IoU would start a new track at every frame.
    assert len(ids[4]) == 16


def test_a_person_is_one_track_as_human_and_as_object(tracked_video: list[dict]) -> None:
    for frame in tracked_video[1:]:
        hug = next(d for d in frame["detections"] if d["verb"] == "hug")      # 1 hugs 2
        kick = next(d for d in frame["detections"] if d["verb"] == "kick")    # 2 kicks 4
        assert hug["object_track"] == kick["human_track"]


def test_replay_rebuilds_the_state_from_the_written_lines(tracked_video: list[dict]) -> None:
    """Resume: a new tracker fed the lines already written (through JSON) goes on with
    the same ids as the tracker that wrote them."""
    lines = [json.loads(json.dumps(frame)) for frame in tracked_video]
    half = len(lines) // 2
    tracker = VideoTracker(rate=2.0)
    tracker.replay(lines[:half])
    for frame in lines[half:]:
        records = [{k: v for k, v in d.items() if not k.endswith("_track")}
                   for d in frame["detections"]]
        again = tracker.track_records(frame["time"], records)
        assert again == frame["detections"]
    with pytest.raises(ValueError, match="recorded track ids"):
        lines[3]["detections"][0]["human_track"] = 99
        VideoTracker(rate=2.0).replay(lines)


def test_a_lost_track_keeps_its_id_for_lost_seconds() -> None:
    def run(absent: float) -> list[list[int | None]]:
        tracker = VideoTracker(rate=2.0, settings=TrackerSettings(lost_seconds=2.0))
        out = []
        for step in range(12):
            time = step * 0.5
            hidden = 2.0 <= time < 2.0 + absent
            boxes = [] if hidden else [[10.0 + 2 * step, 10, 40 + 2 * step, 60]]
            out.append(tracker.update(time, boxes, ["person"] * len(boxes)))
        return out

    short = [ids[0] for ids in run(absent=1.5) if ids]
    assert short[0] is None and set(short[1:]) == {1}
    long = [ids[0] for ids in run(absent=3.0) if ids]
    assert long[:4] == [None, 1, 1, 1] and long[4] is None and set(long[5:]) == {2}


def test_classes_are_tracked_apart_and_odd_times_are_accepted() -> None:
    tracker = VideoTracker(rate=2.0)
    box = [10.0, 10, 50, 50]
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no warning from the tracker either
        first = tracker.update(0.0, [box, box], ["person", "bicycle"])
        second = tracker.update(0.5, [box, box], ["person", "bicycle"])
        repeated = tracker.update(0.5, [box, box], ["person", "bicycle"])  # same time
        missing = tracker.update(float("nan"), [box, box], ["person", "bicycle"])
    assert first == [None, None]
    assert second == repeated == missing == [1, 2]
    assert tracker.update(1.0, [], []) == []


def test_settings_are_checked_by_name() -> None:
    with pytest.raises(OptionError, match="lost_seconds"):
        VideoTracker(2.0, TrackerSettings(lost_seconds=-1))
    with pytest.raises(OptionError, match="track_buffer"):
        VideoTracker(2.0, TrackerSettings(buffer=float("nan")))
    with pytest.raises(InputError, match="rate"):
        VideoTracker(0.0)


def test_a_missing_tracker_or_opencv_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def failing(message: str, name: str):
        def fake(module: str, *args: object, **kwargs: object):
            if module == "trackers":
                raise ImportError(message, name=name)
            return real_import(module, *args, **kwargs)
        return fake

    monkeypatch.setattr(builtins, "__import__", failing("No module named 'trackers'",
                                                        "trackers"))
    with pytest.raises(EnvironmentFault, match=r"pip install 'clip4hoi\[video\]'"):
        VideoTracker(2.0)
    monkeypatch.setattr(builtins, "__import__", failing(
        "libGL.so.1: cannot open shared object file: No such file or directory", None))
    with pytest.raises(EnvironmentFault, match=r"libgl1.*opencv-python-headless"):
        VideoTracker(2.0)


def test_the_video_extra_and_dev_install_the_tracker() -> None:
    tomllib = pytest.importorskip("tomllib")                  # Python >= 3.11
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    for extra in ("video", "dev"):
        assert any(req.startswith("trackers") for req in extras[extra]), extra


def test_the_model_on_oracle_proposals_gives_stable_tracks(tmp_path: Path) -> None:
    """The decoded frames through a tiny random CLIP4HOI whose proposals are the oracle
    boxes (``detector.use_gt_boxes``, as ``--boxes`` gives them): the records' boxes map
    back to the oracle's, and the tracker keeps one id per mover."""
    import av
    import torch
    from conftest import tiny_model_config
    from moving_boxes import oracle_target

    from clip4hoi.api import HOIDetector, to_records

    config = tiny_model_config()
    config.detector.use_gt_boxes = True
    detector = HOIDetector.from_config(config, min_size=96, max_size=160)
    classes = detector.resolve_classes("hold cup, kick sports ball, hug person")
    oracle = write_moving_boxes(tmp_path / "boxes.mp4")
    tracker = VideoTracker(rate=2.0)
    seen: dict[tuple[str, tuple], set] = {}        # oracle (label, box) -> track ids
    with av.open(str(tmp_path / "boxes.mp4")) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % EVERY:
                continue
            pixels = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            image, target = detector.preprocess(pixels, oracle_target(oracle[index]))
            (result,) = detector.backend([image], [target], classes)
            records = tracker.track_records(float(frame.time),
                                            to_records(result, classes, top_k=0))
            truth = {(b["label"], tuple(b["box"])): b["id"] for b in oracle[index]["boxes"]}
            for det in records:
                for label, box, track in ((("person"), det["human_box"], det["human_track"]),
                                          (det["object"], det["object_box"],
                                           det["object_track"])):
                    mover = truth[(label, tuple(round(v) for v in box))]
                    seen.setdefault(mover, set()).add(track)
    assert sorted(seen) == [m.id for m in SCENE]
    tracks = [ids - {None} for ids in seen.values()]
    assert all(len(ids) == 1 for ids in tracks) and len(set.union(*tracks)) == len(SCENE)

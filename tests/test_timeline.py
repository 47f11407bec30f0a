"""Interaction timelines (clip4hoi.timeline): hysteresis, gaps and minimum length on planted
score sequences, the live "on now" state agreeing with the final segments, the summary,
rebuilding from a cut-short JSONL, and the planted spans of the synthetic video found
within one sampled frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from moving_boxes import PLANTED, decoded_times, oracle_records, write_moving_boxes

from clip4hoi.errors import OptionError
from clip4hoi.timeline import (
    TimelineBuilder,
    TimelineSettings,
    build_timeline,
    format_time,
    read_frames,
    summary,
)

PERIOD = 0.5  # 2 sampled frames per second


def frames_of(*series: list[float], tracks: tuple[int | None, int | None] = (1, 2)
              ) -> list[dict]:
    """Frame records at 2 frames/s: per frame one ``hold cup`` detection of the pair
    ``tracks`` per series (class ``hoi`` = its position), scoring the series' value."""
    frames = []
    for i, scores in enumerate(zip(*series, strict=True)):
        detections = [{"human_box": [0, 0, 9, 9], "object_box": [5, 5, 9, 9],
                       "object": "cup", "verb": f"verb{k}", "hoi": k, "score": score,
                       "human_track": tracks[0], "object_track": tracks[1]}
                      for k, score in enumerate(scores) if score > 0]
        frames.append({"file_name": "clip.mp4", "frame": 12 * i, "time": i * PERIOD,
                       "width": 10, "height": 10, "detections": detections})
    return frames


def spans(timeline: dict, hoi: int = 0) -> list[tuple[float, float]]:
    return [(s["start"], s["end"]) for i in timeline["interactions"] if i["hoi"] == hoi
            for s in i["segments"]]


def test_a_step_is_one_segment_with_its_scores() -> None:
    timeline = build_timeline(frames_of([0, 0, 0.8, 0.6, 0.7, 0.9, 0, 0]))
    (interaction,) = timeline["interactions"]
    assert interaction == {"human_track": 1, "object_track": 2, "hoi": 0, "verb": "verb0",
                           "object": "cup", "segments": [{
                               "start": 1.0, "end": 2.5, "peak_score": 0.9,
                               "mean_score": 0.75, "frames": 4}]}
    assert timeline["frames"] == 8 and (timeline["start"], timeline["end"]) == (0.0, 3.5)
    assert timeline["tracks"] == [
        {"track": 1, "label": "person", "first": 1.0, "last": 2.5, "frames": 4},
        {"track": 2, "label": "cup", "first": 1.0, "last": 2.5, "frames": 4}]


def test_hysteresis_starts_on_the_high_threshold_and_goes_on_above_the_low_one() -> None:
    settings = TimelineSettings(on_score=0.3, off_score=0.15, max_gap=0.0, min_length=0)
    # 0.2 alone never starts a segment; once on, 0.2 keeps it on; 0.1 ends it.
    timeline = build_timeline(frames_of([0.2, 0.2, 0.35, 0.2, 0.2, 0.1, 0.2, 0.2]), settings)
    assert spans(timeline) == [(1.0, 2.0)]


def test_gaps_up_to_max_gap_are_bridged_and_count_in_the_mean() -> None:
    settings = TimelineSettings(max_gap=1.0, min_length=0)
    two_missed = build_timeline(frames_of([0.8, 0.8, 0.1, 0, 0.8, 0.8]), settings)
    assert spans(two_missed) == [(0.0, 2.5)]
    assert two_missed["interactions"][0]["segments"][0]["mean_score"] == \
        pytest.approx((0.8 * 4 + 0.1) / 6)
    three_missed = build_timeline(frames_of([0.8, 0.8, 0, 0, 0, 0.8, 0.8]), settings)
    assert spans(three_missed) == [(0.0, 0.5), (2.5, 3.0)]


def test_segments_shorter_than_min_length_are_dropped() -> None:
    settings = TimelineSettings(min_length=0.5, max_gap=0.0)
    timeline = build_timeline(frames_of([0.9, 0, 0, 0.9, 0.9, 0, 0, 0.9]), settings)
    assert spans(timeline) == [(1.5, 2.0)]                      # the lone frames dropped
    assert build_timeline(frames_of([0, 0, 0]), settings)["interactions"] == []


def test_on_now_agrees_with_the_final_segments() -> None:
    """What the drawn video shows at a frame (``add``'s answer) lies in a segment of the
    final timeline, with the duration so far; the incremental and the pure function agree."""
    rng = np.random.default_rng(1)
    series = [np.clip(np.repeat(rng.uniform(0, 0.6, 20), 3) + rng.normal(0, 0.1, 60), 0, 1)
              .round(3).tolist() for _ in range(3)]
    frames = frames_of(*series)
    builder = TimelineBuilder(TimelineSettings(), "clip.mp4")
    shown = [(frame["time"], active) for frame in frames for active in builder.add(frame)]
    timeline = builder.finish()
    assert timeline == build_timeline(frames, TimelineSettings(), "clip.mp4")
    assert shown and len(timeline["interactions"]) >= 2
    for time, active in shown:
        segment = next(s for start, end in spans(timeline, active["hoi"])
                       for s in [(start, end)] if start <= time <= end)
        assert active["start"] == segment[0]
        assert active["seconds"] == pytest.approx(time - segment[0])
        assert active["seconds"] >= TimelineSettings().min_length


def test_a_time_that_goes_back_or_is_missing_counts_as_no_time_passed() -> None:
    frames = frames_of([0.9, 0.9, 0.9, 0.9])
    frames[2]["time"], frames[3]["time"] = 0.2, float("nan")
    assert spans(build_timeline(frames, TimelineSettings(min_length=0))) == [(0.0, 0.5)]


def test_untracked_boxes_do_not_make_interactions() -> None:
    timeline = build_timeline(frames_of([0.9] * 6, tracks=(1, None)))
    assert timeline["interactions"] == []
    assert [t["track"] for t in timeline["tracks"]] == [1]


def test_settings_are_checked_by_name() -> None:
    """By the rules of clip4hoi.options (``detect``'s --on-score ... name the flags)."""
    for settings, name in ((TimelineSettings(on_score=1.5), "on_score"),
                           (TimelineSettings(off_score=0.5, on_score=0.3), "off_score"),
                           (TimelineSettings(max_gap=float("nan")), "max_gap"),
                           (TimelineSettings(min_length=-1), "min_length")):
        with pytest.raises(OptionError, match=f"^{name} ") as error:
            TimelineBuilder(settings)
        assert error.value.option == name


def test_summary_lines() -> None:
    assert format_time(3.2) == "00:03.2"
    assert format_time(67.99) == "01:07.9"
    assert format_time(3725.06) == "1:02:05.0"
    timeline = build_timeline(frames_of([0, 0.8, 0.8, 0, 0, 0, 0.8, 0.8],
                                        [0.9, 0.9, 0, 0, 0, 0, 0, 0]),
                              TimelineSettings(max_gap=0))
    assert summary(timeline) == ["person 1 verb1 cup 2  00:00.0–00:00.5",
                                 "person 1 verb0 cup 2  00:00.5–00:01.0",
                                 "person 1 verb0 cup 2  00:03.0–00:03.5"]
    assert summary(timeline, limit=1)[1] == "... and 2 more (see the .timeline.json)"


def test_the_timeline_is_rebuilt_from_a_cut_short_jsonl(tmp_path: Path) -> None:
    frames = frames_of([0, 0.8, 0.8, 0.8, 0, 0.9, 0.9, 0.9])
    text = "".join(json.dumps(frame) + "\n" for frame in frames)
    path = tmp_path / "clip.mp4.jsonl"
    path.write_text(text + '{"file_name": "clip.mp4", "frame": 96, "ti')   # killed here
    read, complete = read_frames(path)
    assert read == frames and complete == len(text.encode())
    assert build_timeline(read) == build_timeline(frames)
    path.write_text(text[:-1])                      # the last line lost its newline
    assert read_frames(path)[0] == frames[:-1]
    path.write_text("not json\n" + text)
    assert read_frames(path) == ([], 0)
    path.write_text("")
    assert read_frames(path) == ([], 0)


def test_planted_spans_of_the_synthetic_video_within_one_sampled_frame(tmp_path: Path
                                                                        ) -> None:
    """The moving-boxes video at 2 frames/s, oracle boxes tracked, planted scores: the
    timeline has the planted spans (to one sampled frame), the one-frame dip bridged and
    the one-frame spike dropped."""
    from clip4hoi.tracking import VideoTracker

    pytest.importorskip("trackers")
    oracle = write_moving_boxes(tmp_path / "boxes.mp4")
    tracker = VideoTracker(rate=2.0)
    builder = TimelineBuilder(file_name="boxes.mp4")
    truth = {}
    for index, time in decoded_times(tmp_path / "boxes.mp4", every=5):
        records = tracker.track_records(time, oracle_records(oracle[index]))
        for det in records:
            truth.setdefault(det["human_track"], det["_truth"][0])
            truth.setdefault(det["object_track"], det["_truth"][1])
        builder.add({"frame": index, "time": time, "detections": records})
    timeline = builder.finish()
    found = {(truth[i["human_track"]], truth[i["object_track"]], i["hoi"]):
             [(s["start"], s["end"]) for s in i["segments"]] for i in timeline["interactions"]}
    planted = [p for p in PLANTED if p.end - p.start >= TimelineSettings().min_length]
    assert sorted(found) == sorted((p.human, p.obj, p.hoi) for p in planted)
    for p in planted:
        ((start, end),) = found[(p.human, p.obj, p.hoi)]      # one segment: dip bridged
        assert abs(start - p.start) <= PERIOD and abs(end - p.end) <= PERIOD
    assert summary(timeline)[0].startswith("person ") and " hold cup " in summary(timeline)[0]


def test_the_documented_snippet_runs_on_a_detect_jsonl(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """docs/outputs.md's Python block (other settings from the lines), on the lines that
    ``clip4hoi detect`` writes for the moving-boxes video at 2 frames/s."""
    import re

    from clip4hoi.tracking import VideoTracker

    pytest.importorskip("trackers")
    text = (Path(__file__).parents[1] / "docs" / "outputs.md").read_text()
    section = text[text.index("## Interactions over time"):]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, re.S)
    oracle = write_moving_boxes(tmp_path / "clip.mp4")
    (tmp_path / "out").mkdir()
    tracker = VideoTracker(rate=2.0)
    with open(tmp_path / "out" / "clip.mp4.jsonl", "w") as lines:
        for index, time in decoded_times(tmp_path / "clip.mp4", every=5):
            records = [{k: v for k, v in r.items() if k != "_truth"}
                       for r in oracle_records(oracle[index])]
            lines.write(json.dumps({"file_name": "clip.mp4", "frame": index, "time": time,
                                    "width": 160, "height": 120,
                                    "detections": tracker.track_records(time, records)})
                        + "\n")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "docs/outputs.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [re.sub(r"\d+ ", "N ", line) for line in printed] == [
        "person N hold cup N  00:02.0–00:05.0", "person N kick sports ball N  00:04.5–00:07.5"]
    assert (tmp_path / "clip.timeline.png").stat().st_size > 1000

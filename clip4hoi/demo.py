"""``clip4hoi demo``: a web page to try a detector in the browser (Gradio).

Upload images, type the classes (``ride bicycle, hold cup``) or pick a preset, choose the
mode and thresholds, and get the drawn images, a sortable table of the interactions and a
JSON download: the same results as ``clip4hoi detect`` on the same files, made by the same
pipeline (:class:`~clip4hoi.engine.predictor.Predictor` and its
:class:`~clip4hoi.engine.results.Results`). A short video goes through ``detect``'s own
video sink (:class:`~clip4hoi.engine.videos.VideoFiles`, every N-th frame): the drawn MP4
with track ids, one table row per detection (image ``name@frame``), the ``.jsonl``
download, and the timeline — a table of the interactions' segments and a Gantt chart
(:func:`~clip4hoi.visualize.draw_timeline`). A file that cannot be read, a class list that
cannot be parsed or missing weights give a message in the page; the server goes on.

The app is built by :func:`build_demo` from a :class:`DemoBackend`, which holds one
detector per mode, each built on first use (the startup mode at once). Gradio is an
optional dependency (``pip install -e ".[demo]"``); its usage analytics are off.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clip4hoi.api import RANDOM_WEIGHTS_WARNING, HOIDetector
from clip4hoi.data.metadata import HOIClassSet, load_classes, parse_class_text
from clip4hoi.data.sources import VIDEO_SUFFIXES, ImageFile, VideoFile
from clip4hoi.engine.predictor import Predictor
from clip4hoi.engine.sinks import write_results
from clip4hoi.engine.videos import VideoFiles, drawn_path, lines_path, timeline_path
from clip4hoi.errors import InputError, OptionError, UserError
from clip4hoi.options import check_option
from clip4hoi.timeline import TimelineSettings, format_time, summary

PRESETS = {"HICO-DET (600 classes)": "hicodet", "V-COCO": "vcoco"}
CUSTOM = "custom (the text below)"
TABLE_HEADERS = ["image", "score", "verb", "object", "human box", "object box", "hoi"]
TIMELINE_HEADERS = ["person", "verb", "object", "start", "end", "seconds", "peak score",
                    "mean score"]


class DemoBackend:
    """Runs detection for the page: ``modes`` are offered in the page and each detector
    is made by ``loader(mode)`` on first use (one at a time; requests run one at a
    time)."""

    def __init__(self, loader: Callable[[str], HOIDetector], modes: Sequence[str],
                 default_mode: str, random_weights: bool = False) -> None:
        if default_mode not in modes:
            raise ValueError(f"mode {default_mode!r} is not one of {list(modes)}")
        self.loader = loader
        self.modes = list(modes)
        self.default_mode = default_mode
        self.random_weights = random_weights
        self.detectors: dict[str, HOIDetector] = {}
        self.lock = threading.Lock()
        self.output_dir = Path(tempfile.mkdtemp(prefix="clip4hoi-demo-"))

    def detector(self, mode: str) -> HOIDetector:
        """The detector of ``mode``, built on first use."""
        if mode not in self.modes:
            raise UserError(f"mode {mode!r}: choose from {', '.join(self.modes)}")
        with self.lock:
            if mode not in self.detectors:
                self.detectors[mode] = self.loader(mode)
            return self.detectors[mode]

    def classes(self, detector: HOIDetector, preset: str, text: str) -> HOIClassSet:
        """The class set chosen in the page: a preset or the free text (never a file on
        the server), or the detector's own classes when both are empty."""
        if preset in PRESETS:
            return load_classes(PRESETS[preset])
        if text.strip():
            return parse_class_text(text, getattr(detector.model, "open_vocabulary", False))
        return detector.classes

    def detect(self, files: Sequence[str], mode: str, preset: str, text: str,
               min_score: float, top_k: int, draw: int
               ) -> tuple[list[tuple[Any, str]], list[list], list[dict], list[str]]:
        """Detect in the uploaded ``files``: drawn images with captions, table rows, the
        ``clip4hoi detect`` payload of each image that could be read, and one error message
        per file that could not."""
        top_k, min_score, draw = (check_option(name, value) for name, value in (
            ("top_k", int(top_k)), ("min_score", float(min_score)), ("draw", int(draw))))
        detector = self.detector(mode)
        # batch_size 1: what ``clip4hoi detect`` uses on a CPU
        predictor = Predictor(detector.backend, self.classes(detector, preset, text))
        pictures, rows, payloads, errors = [], [], [], []
        for result in predictor([ImageFile(Path(file), Path(file).name) for file in files]):
            if result.error is not None:
                path = result.source.path
                errors.append(f"{path.name}: {result.error.removeprefix(f'{path}: ')}")
                continue
            payload = result.to_json(top_k, min_score)
            payloads.append(payload)
            records = payload["detections"]
            pictures.append((result.plot(draw, records=records),
                             f"{result.name}: {len(records)} detections"))
            rows += _rows(result.name, records)
        return pictures, rows, payloads, errors

    def detect_video(self, file: str, mode: str, preset: str, text: str, min_score: float,
                     top_k: int, draw: int, every: int, on_score: float = 0.3,
                     off_score: float = 0.15) -> tuple[Path, Path, list[list], list[dict], dict]:
        """Detect on every ``every``-th frame of the uploaded video ``file`` through
        ``detect``'s video sink (into a new folder of ``output_dir``), interactions on from
        ``on_score`` to ``off_score``: the drawn MP4, the ``.jsonl``, table rows (image
        ``name@frame``), the frames' records (one per sampled frame) and the timeline."""
        path = Path(file)
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputError(f"{path.name}: not a video (expected one of "
                             f"{', '.join(sorted(VIDEO_SUFFIXES))})")
        kept = {"top_k": check_option("top_k", int(top_k)),
                "min_score": check_option("min_score", float(min_score)),
                "draw": check_option("draw", int(draw))}
        timeline = TimelineSettings(on_score=float(on_score), off_score=float(off_score))
        timeline.check()
        detector = self.detector(mode)
        predictor = Predictor(detector.backend, self.classes(detector, preset, text))
        out = Path(tempfile.mkdtemp(dir=self.output_dir))
        source = VideoFile(path, path.name, check_option("every", int(every)))
        failures = write_results(predictor([source]), [VideoFiles(out, **kept,
                                                                  timeline=timeline)])
        if failures:
            raise InputError(failures[0])
        jsonl = lines_path(out, path.name)
        frames = [json.loads(line) for line in jsonl.read_text().splitlines()]
        rows = [row for f in frames for row in _rows(f"{path.name}@{f['frame']}",
                                                     f["detections"])]
        segments = json.loads(timeline_path(out, path.name).read_text())
        return drawn_path(out, path.name), jsonl, rows, frames, segments

    def close(self) -> None:
        """Remove the results of the uploads (``output_dir``)."""
        shutil.rmtree(self.output_dir, ignore_errors=True)

    def write_json(self, payloads: list[dict]) -> Path:
        """The payloads as one downloadable JSON file (a list, one entry per image)."""
        folder = Path(tempfile.mkdtemp(dir=self.output_dir))
        path = folder / "detections.json"
        path.write_text(json.dumps(payloads, indent=1))
        return path


def _rows(image: str, records: list[dict]) -> list[list]:
    """The table rows of one image's (or frame's) records."""
    return [[image, d["score"], d["verb"], d["object"].replace("_", " "),
             _box_text(d["human_box"]), _box_text(d["object_box"]), d["hoi"]]
            for d in records]


def _box_text(box: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in box)


def timeline_rows(timeline: dict) -> list[list]:
    """The table rows of a video's timeline: one per segment, in order of start."""
    rows = [[f"person {i['human_track']}", i["verb"],
             f"{i['object'].replace('_', ' ')} {i['object_track']}", format_time(s["start"]),
             format_time(s["end"]), round(s["end"] - s["start"], 2), s["peak_score"],
             s["mean_score"]] for i in timeline["interactions"] for s in i["segments"]]
    return sorted(rows, key=lambda row: (row[3], row[0], row[1], row[2]))


def _status(backend: DemoBackend, text: str) -> str:
    """The page's status line (with the warning of random weights)."""
    return f"⚠️ random weights: {RANDOM_WEIGHTS_WARNING}\n\n{text}" if backend.random_weights \
        else text


def _image_handler(backend: DemoBackend, gr: Any) -> Callable[..., tuple]:
    """The page's **Detect** (``/detect``): images in, gallery, table, JSON and status out."""
    def run(files: list[str] | None, mode: str, preset: str, text: str, min_score: float,
            top_k: float, draw: float) -> tuple:
        if not files:
            raise gr.Error("Upload at least one image first.")
        try:
            pictures, rows, payloads, errors = backend.detect(
                files, mode, preset, text or "", min_score, int(top_k or 0), int(draw or 0))
        except (UserError, ValueError, FileNotFoundError) as error:
            raise gr.Error(str(error), print_exception=False) from None
        if not payloads:
            raise gr.Error("No image could be read:\n" + "\n".join(errors),
                           print_exception=False)
        for message in errors:
            gr.Warning(f"skipped {message}")
        total = sum(len(p["detections"]) for p in payloads)
        seconds = sum(p["seconds"] for p in payloads)
        status = (f"**{len(payloads)} image(s), {total} detections, mode {mode}, "
                  f"{seconds:.2f} s**" + (f"; skipped: {'; '.join(errors)}" if errors else ""))
        return pictures, rows, str(backend.write_json(payloads)), _status(backend, status)

    return run


def _video_handler(backend: DemoBackend, gr: Any) -> Callable[..., tuple]:
    """The page's **Detect in the video** (``/detect_video``)."""
    from clip4hoi.visualize import draw_timeline

    def run_video(file: str | None, mode: str, preset: str, text: str, min_score: float,
                  top_k: float, draw: float, every: float, on_score: float,
                  off_score: float) -> tuple:
        if not file:
            raise gr.Error("Upload a video first.")
        try:
            start = time.perf_counter()
            movie, jsonl, rows, frames, timeline = backend.detect_video(
                file, mode, preset, text or "", min_score, int(top_k or 0), int(draw or 0),
                int(every or 1), on_score, off_score)
        except (UserError, ValueError, FileNotFoundError) as error:
            raise gr.Error(str(error), print_exception=False) from None
        segments = timeline_rows(timeline)
        status = (f"**{Path(file).name}: {len(frames)} frame(s), {len(rows)} detections, "
                  f"{len(timeline['tracks'])} track(s), {len(segments)} interaction "
                  f"segment(s), mode {mode}, {time.perf_counter() - start:.2f} s**")
        lines = summary(timeline, limit=10)
        if lines:
            status += "\n\n" + "\n".join(f"* {line}" for line in lines)
        return (str(movie), rows, str(jsonl), _status(backend, status), segments,
                draw_timeline(timeline))

    return run_video


def build_demo(backend: DemoBackend) -> Any:
    """The Gradio app (``gr.Blocks``) of ``backend``; its API endpoints are ``/detect``
    (images) and ``/detect_video`` (one video)."""
    import gradio as gr

    run, run_video = _image_handler(backend, gr), _video_handler(backend, gr)
    with gr.Blocks(title="CLIP4HOI demo", analytics_enabled=False) as demo:
        gr.Markdown("# CLIP4HOI: human–object interactions from text\nUpload images, "
                    "name the interactions (`VERB OBJECT`; with DETR, the object one of the 80 "
                    "COCO categories) and press **Detect**.")
        if backend.random_weights:
            gr.Markdown(f"⚠️ **random weights: {RANDOM_WEIGHTS_WARNING}**")
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                elem_id="images")
                preset = gr.Dropdown([CUSTOM, *PRESETS], value=CUSTOM, label="Classes")
                text = gr.Textbox(label="Custom classes (comma separated; empty: the "
                                  "detector's own)", placeholder="ride bicycle, hold cup",
                                  elem_id="classes")
                mode = gr.Radio(backend.modes, value=backend.default_mode, label="Mode")
                min_score = gr.Slider(0, 1, value=0, step=0.01, label="Minimum score")
                top_k = gr.Number(100, precision=0, minimum=0,
                                  label="Detections kept per image (0: all)")
                draw = gr.Slider(0, 50, value=10, step=1, label="Pairs drawn per image")
                button = gr.Button("Detect", variant="primary", elem_id="detect")
                with gr.Accordion("Video", open=False, elem_id="video_panel"):
                    video = gr.File(label="A short video", file_types=sorted(VIDEO_SUFFIXES),
                                    elem_id="video")
                    every = gr.Number(5, precision=0, minimum=1, elem_id="every",
                                      label="Detect on every N-th frame")
                    on_score = gr.Slider(0, 1, value=0.3, step=0.01, elem_id="on_score",
                                         label="An interaction starts at a frame scoring")
                    off_score = gr.Slider(0, 1, value=0.15, step=0.01, elem_id="off_score",
                                          label="... and goes on while its frames score")
                    video_button = gr.Button("Detect in the video", elem_id="detect_video")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(label="Drawn detections", columns=1, format="jpeg",
                                     height=420, object_fit="contain", elem_id="drawn")
                table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False,
                                     datatype=["str", "number", "str", "str", "str", "str",
                                               "number"],
                                     label="Interactions (sort or filter from a column's ⋮ menu)",
                                     elem_id="table")
                download = gr.File(label="JSON, JSON lines for a video (the clip4hoi detect "
                                   "schema)", elem_id="json")
                drawn_video = gr.Video(label="Drawn video (from Video, on the left)", height=420,
                                       elem_id="drawn_video")
                timeline_plot = gr.Image(label="Timeline of the video's interactions",
                                         type="pil", format="png", elem_id="timeline_plot")
                timeline_table = gr.Dataframe(headers=TIMELINE_HEADERS, interactive=False,
                                              datatype=["str", "str", "str", "str", "str",
                                                        "number", "number", "number"],
                                              label="Interactions over time (one row per "
                                              "segment)", elem_id="timeline")
        button.click(run, [files, mode, preset, text, min_score, top_k, draw],
                     [gallery, table, download, status], api_name="detect",
                     concurrency_limit=1)
        video_button.click(run_video, [video, mode, preset, text, min_score, top_k, draw,
                                       every, on_score, off_score],
                           [drawn_video, table, download, status, timeline_table,
                            timeline_plot], api_name="detect_video", concurrency_limit=1)
    return demo


def check_address(host: str, port: int | None) -> None:
    """Refuse, before any model is loaded, an address the demo cannot serve on: ``port``
    out of range or taken by another program, ``host`` not a name or address of this
    machine (:class:`~clip4hoi.errors.OptionError` naming ``port`` or ``host``). ``port``
    None: Gradio takes the first free one from 7860."""
    if port is not None:
        check_option("port", port)
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port or 0, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise OptionError("host", repr(host), f"is not a name or address this machine can "
                          f"serve on ({getattr(error, 'strerror', None) or error})") from None
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as Gradio binds
        try:
            probe.bind(address)
        except OSError as error:
            raise _address_error(host, port, error) from None


def _address_error(host: str, port: int | None, error: OSError) -> OptionError:
    if error.errno == errno.EADDRINUSE:
        return OptionError("port", port, "is in use by another program: give a free port, "
                           "or leave {port} out to take the first free one from 7860")
    if error.errno == errno.EACCES:
        return OptionError("port", port, "needs administrator rights (a port below 1024): "
                           "give a port from 1024")
    return OptionError("host", repr(host), f"cannot be served on ({error.strerror}): give an "
                       f"address of this machine (127.0.0.1, or 0.0.0.0 for every interface)")


def launch(backend: DemoBackend, host: str = "127.0.0.1", port: int | None = None,
           block: bool = True, max_file_size: str = "50mb") -> Any:
    """Serve the demo on ``host:port`` (``port`` None: the first free from 7860;
    :func:`check_address` first). With ``block`` False the server runs in a thread and the
    app is returned (``app.close()`` stops it); with ``block`` the uploads' results
    (``backend.output_dir``) are removed when the server stops."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    check_address(host, port)
    demo = build_demo(backend)
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block,
                    share=False, inbrowser=False, show_error=True, max_file_size=max_file_size,
                    ssr_mode=False, quiet=not block, footer_links=["api"])
    except OSError as error:   # taken since check_address: Gradio's "Cannot find empty port"
        if port is None:
            raise OptionError("port", None, f"no free port from 7860 ({error}); give one "
                              f"with {{port}}") from None
        raise _address_error(host, port, OSError(errno.EADDRINUSE, str(error))) from None
    finally:
        if block:
            backend.close()
    return demo

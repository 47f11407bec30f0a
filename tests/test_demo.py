"""``clip4hoi demo``: the real Gradio server on localhost, driven through its HTTP API
(``gradio_client``) and in a headless Chromium (selenium); one server for the module."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    SCENE,
    crafted_detr_outputs,
    set_flags,
    tiny_model_config,
    tiny_training_free_flags,
    write_keyless_video,
    write_test_video,
)
from PIL import Image, ImageDraw

from clip4hoi.api import RANDOM_WEIGHTS_WARNING, load_detector
from clip4hoi.cli import main
from clip4hoi.engine.checkpoint import save_checkpoint
from clip4hoi.models.detr import DETR
from clip4hoi.models.model import build_model

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("gradio")

from clip4hoi.demo import (  # noqa: E402
    CUSTOM,
    TABLE_HEADERS,
    TIMELINE_HEADERS,
    DemoBackend,
    launch,
    timeline_rows,
)
from clip4hoi.timeline import summary  # noqa: E402

# gradio's queue on pandas 3 (not ours)
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
CLASSES = "ride bicycle, hug person, hold cup"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT = os.environ.get("CLIP4HOI_DEMO_SCREENSHOT")  # also save it there (docs/)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny head, a photo-like image (a bike rider and a cup) and a corrupt file."""
    folder = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_model_config()), folder / "head.safetensors")
    # Drawn where SCENE's boxes are (SCENE is in 160x120 pixels; this image is twice that).
    y = np.mgrid[0:240, 0:320][0]
    sky = np.stack([120 + y // 3, 170 + y // 4, 230 + 0 * y], axis=-1).clip(0, 255)
    image = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 200, 319, 239], fill=(96, 150, 72))                     # grass
    for x0 in (44, 124):                                                       # bicycle
        draw.ellipse([x0, 160, x0 + 52, 212], outline=(40, 40, 40), width=5)
    draw.line([(70, 186), (100, 150), (150, 186), (70, 186)], fill=(200, 30, 30), width=5)
    for x0, top, shirt in ((40, 24, (40, 90, 200)), (190, 14, (230, 150, 40))):  # people
        draw.ellipse([x0 + 22, top, x0 + 58, top + 36], fill=(236, 196, 164))
        draw.rectangle([x0 + 20, top + 38, x0 + 60, top + 120], fill=shirt)
        draw.line([(x0 + 30, top + 120), (x0 + 24, top + 180)], fill=(50, 50, 90), width=9)
        draw.line([(x0 + 50, top + 120), (x0 + 60, top + 180)], fill=(50, 50, 90), width=9)
    draw.rectangle([112, 84, 136, 108], fill=(250, 250, 250), outline=(90, 90, 90))  # cup
    image.save(folder / "rider.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return {"checkpoint": folder / "head.safetensors", "image": folder / "rider.png",
            "broken": folder / "broken.jpg"}


@pytest.fixture(scope="module", autouse=True)
def scene_detector() -> Iterator[None]:
    """The random DETR finds nothing useful: make it see SCENE in every image (in the
    server's threads too)."""
    def forward(self: DETR, images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):  # the same random DETR features every call
            torch.manual_seed(0)
            return crafted_detr_outputs(self.config, [SCENE] * len(images))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DETR, "forward", forward)
        yield


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(files: dict[str, Path]) -> Iterator[str]:
    """The demo of the tiny head, served on 127.0.0.1 until the module ends."""
    loader = partial(load_detector, checkpoint=str(files["checkpoint"]), device="cpu")
    backend = DemoBackend(loader, ["trained"], "trained", random_weights=True)
    backend.detector("trained")
    port = _free_port()
    app = launch(backend, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()
    backend.close()   # its uploads' results (a served demo removes them when it stops)


@pytest.fixture(scope="module")
def client(server: str) -> gradio_client.Client:
    return gradio_client.Client(server, verbose=False, download_files=False)


def _detect(client: gradio_client.Client, *paths: Path) -> tuple:
    return client.predict([gradio_client.handle_file(str(p)) for p in paths], "trained",
                          CUSTOM, CLASSES, 0.0, 5, 10, api_name="/detect")


def _json(output: object) -> list[dict]:
    path = output["path"] if isinstance(output, dict) else output
    return json.loads(Path(path).read_text())


def test_demo_gives_the_detections_of_detect(client: gradio_client.Client,
                                             files: dict[str, Path], tmp_path: Path) -> None:
    gallery, table, download, status = _detect(client, files["image"])
    [payload] = _json(download)
    assert main(["detect", str(files["image"]), "--checkpoint", str(files["checkpoint"]),
                 "--out", str(tmp_path), "--device", "cpu", "--classes", CLASSES,
                 "--top-k", "5"]) == 0
    expected = json.loads((tmp_path / "rider.png.json").read_text())
    assert payload["detections"] == expected["detections"] != []
    assert {k: payload[k] for k in ("file_name", "width", "height", "mode")} == {
        k: expected[k] for k in ("file_name", "width", "height", "mode")}
    assert table["headers"] == TABLE_HEADERS
    assert [row[1] for row in table["data"]] == [d["score"] for d in expected["detections"]]
    assert len(gallery) == 1 and "rider.png: 5 detections" in gallery[0]["caption"]
    assert "1 image(s), 5 detections" in status and RANDOM_WEIGHTS_WARNING in status


def test_bad_uploads_get_a_clear_message_and_the_server_goes_on(
        client: gradio_client.Client, files: dict[str, Path]) -> None:
    with pytest.raises(gradio_client.exceptions.AppError,
                       match=r"No image could be read:\s+broken.jpg: cannot decode"):
        _detect(client, files["broken"])
    with pytest.raises(gradio_client.exceptions.AppError, match="Upload at least one image"):
        client.predict([], "trained", CUSTOM, CLASSES, 0.0, 5, 10, api_name="/detect")
    with pytest.raises(gradio_client.exceptions.AppError, match="expected 'VERB OBJECT'"):
        client.predict([gradio_client.handle_file(str(files["image"]))], "trained", CUSTOM,
                       "ride unicorn", 0.0, 5, 10, api_name="/detect")
    gallery, _, download, status = _detect(client, files["broken"], files["image"])
    assert [p["file_name"] for p in _json(download)] == ["rider.png"]
    assert len(gallery) == 1 and "skipped: broken.jpg: cannot decode" in status


def _detect_video(client: gradio_client.Client, path: Path, every: int,
                  on_score: float = 0.3, off_score: float = 0.15) -> tuple:
    return client.predict(gradio_client.handle_file(str(path)), "trained", CUSTOM, CLASSES,
                          0.0, 5, 10, every, on_score, off_score, api_name="/detect_video")


def test_demo_video_gives_the_frames_of_detect(client: gradio_client.Client,
                                              files: dict[str, Path], tmp_path: Path) -> None:
    video = write_test_video(tmp_path / "clip.mp4", frames=6, rate=4)
    drawn, table, download, status, segments, plot = _detect_video(client, video, every=2,
                                                                   on_score=0.0,
                                                                   off_score=0.0)
    path = download["path"] if isinstance(download, dict) else download
    assert Path(path).name == "clip.mp4.jsonl"
    assert main(["detect", str(video), "--checkpoint", str(files["checkpoint"]), "--out",
                 str(tmp_path / "out"), "--device", "cpu", "--classes", CLASSES,
                 "--top-k", "5", "--every", "2", "--on-score", "0", "--off-score", "0"]) == 0
    expected = [json.loads(line) for line in
                (tmp_path / "out" / "clip.mp4.jsonl").read_text().splitlines()]
    frames = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert frames == expected and [f["frame"] for f in frames] == [0, 2, 4]
    assert all(f["detections"] for f in frames)
    assert [row[0] for row in table["data"]] == [
        f"clip.mp4@{f['frame']}" for f in expected for _ in f["detections"]]
    assert [row[1] for row in table["data"]] == [d["score"] for f in expected
                                                 for d in f["detections"]]
    av = pytest.importorskip("av")
    with av.open(drawn["path"]) as movie:  # the server's copy (same machine)
        assert Path(drawn["path"]).name == "clip.mp4.drawn.mp4"
        assert sum(1 for _ in movie.decode(video=0)) == 3
    assert "clip.mp4: 3 frame(s), 15 detections" in status and RANDOM_WEIGHTS_WARNING in status
    # The timeline: the table of detect's timeline.json, its summary, the Gantt chart.
    timeline = json.loads((tmp_path / "out" / "clip.mp4.timeline.json").read_text())
    assert segments["headers"] == TIMELINE_HEADERS
    assert segments["data"] == timeline_rows(timeline) != []
    assert all(row[0].startswith("person ") and row[3] == "00:00.5" for row in segments["data"])
    assert f"{len(segments['data'])} interaction segment(s)" in status
    assert summary(timeline)[0] in status
    chart = Image.open(plot["path"] if isinstance(plot, dict) else plot)
    assert chart.width == 960 and chart.height > 100


def test_bad_video_gets_a_clear_message_and_the_server_goes_on(
        client: gradio_client.Client, files: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated, not a movie")
    with pytest.raises(gradio_client.exceptions.AppError,
                       match=r"broken.mp4: cannot (read|decode) the video"):
        _detect_video(client, broken, every=5)
    with pytest.raises(gradio_client.exceptions.AppError, match="Upload a video first"):
        client.predict(None, "trained", CUSTOM, CLASSES, 0.0, 5, 10, 5, 0.3, 0.15,
                       api_name="/detect_video")
    with pytest.raises(gradio_client.exceptions.AppError,
                       match=r"off_score 0\.5: must be at most on_score 0\.3"):
        _detect_video(client, write_test_video(tmp_path / "ok.mp4", frames=2), every=5,
                      off_score=0.5)
    # Packets but no key frame: nothing decodes, and that is a failure, not an empty video.
    nokey = write_keyless_video(write_test_video(tmp_path / "ok.mp4", frames=4),
                                tmp_path / "nokey.mp4")
    with pytest.raises(gradio_client.exceptions.AppError,
                       match=r"nokey\.mp4: no frame could be decoded"):
        _detect_video(client, nokey, every=1)
    _, _, _, status, segments, _ = _detect_video(client, write_test_video(
        tmp_path / "ok.mp4", frames=2), every=5)
    assert "ok.mp4: 1 frame(s), 5 detections" in status and segments["data"] == []
    _, _, download, _ = _detect(client, files["image"])
    assert [p["file_name"] for p in _json(download)] == ["rider.png"]


def test_demo_cli_loads_the_detector_before_serving(monkeypatch: pytest.MonkeyPatch,
                                                    files: dict[str, Path],
                                                    capsys: pytest.CaptureFixture) -> None:
    served = []
    monkeypatch.setattr("clip4hoi.demo.launch", lambda backend, host, port: served.append(
        (backend, host, port)))
    assert main(["demo", "--checkpoint", str(files["checkpoint"]), "--device", "cpu",
                 "--port", "7999"]) == 0
    [(backend, host, port)] = served
    assert (host, port, backend.modes, backend.default_mode) == (
        "127.0.0.1", 7999, ["trained", "crop", "dense"], "trained")
    assert "trained" in backend.detectors  # built before the server starts
    assert "serving http://127.0.0.1:7999" in capsys.readouterr().err
    assert main(["demo", "--mode", "trained", "--device", "cpu"]) == 2  # no checkpoint


def test_demo_on_a_cpu_starts_in_the_mode_detect_picks(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """``auto`` is the one rule of every command: dense on a CPU without a checkpoint."""
    served = []
    monkeypatch.setattr("clip4hoi.demo.launch", lambda backend, host, port: served.append(
        backend))
    assert main(["demo", "--random-weights", "--device", "cpu", "--precision", "fp32",
                 *set_flags(tiny_training_free_flags())]) == 0
    [backend] = served
    assert (backend.default_mode, list(backend.detectors)) == ("dense", ["dense"])
    assert backend.detectors["dense"].precision == "fp32: precision fp32"   # the API's words
    assert "clip4hoi demo: mode dense on cpu, precision fp32 (--precision fp32)" in \
        capsys.readouterr().err


@pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.exists()),
                    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, "
                    f"{CHROMEDRIVER}; apt-get install chromium chromium-driver)")
def test_page_in_a_headless_browser(server: str, files: dict[str, Path], tmp_path: Path
                                    ) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,1000",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(60)
        driver.get(server)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, "#images input[type=file]")))
        upload.send_keys(str(files["image"]))
        wait.until(ec.presence_of_element_located(  # uploaded: the server's copy is linked
            (By.CSS_SELECTOR, "#images a[href*='rider.png']")))
        driver.find_element(By.CSS_SELECTOR, "#classes textarea, #classes input").send_keys(
            CLASSES)
        driver.find_element(By.CSS_SELECTOR, "#detect").click()
        drawn = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#drawn img")))
        assert drawn.get_attribute("src") and "rider.png" in drawn.get_attribute("alt")
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#status"),
                                                    "1 image(s)"))
        assert "ride" in driver.find_element(By.CSS_SELECTOR, "#table").text

        driver.execute_script("window.scrollTo(0, 0)")
        screenshot = tmp_path / "demo.png"
        driver.save_screenshot(str(screenshot))
        assert Image.open(screenshot).size[0] > 0
        if SCREENSHOT:
            shutil.copy(screenshot, SCREENSHOT)

        def scores() -> list[float]:  # the score column top to bottom (rows are placed)
            cells = driver.find_elements(By.CSS_SELECTOR, "#table [role=gridcell][data-col='1']")
            return [float(c.text) for c in sorted(cells, key=lambda c: c.location["y"])]

        assert scores() == sorted(scores(), reverse=True) and len(set(scores())) > 1
        menu = driver.find_elements(By.CSS_SELECTOR, "#table th button")[1]  # score's ⋮
        driver.execute_script("arguments[0].click()", menu)
        wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//*[@role='menu']//button[contains(., 'Sort ascending')]"))).click()
        wait.until(lambda _: scores() == sorted(scores()))

        # The video panel: a video in, its timeline out (the table and the Gantt chart).
        panel = driver.find_element(By.CSS_SELECTOR, "#video_panel button")
        driver.execute_script("arguments[0].click()", panel)
        upload = wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, "#video input[type=file]")))
        upload.send_keys(str(write_test_video(tmp_path / "clip.mp4", frames=6, rate=4)))
        wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, "#video a[href*='clip.mp4']")))
        # Every 2nd frame, every interaction on: segments from the second frame on.
        for field, value in (("#every", "2"), ("#off_score", "0"), ("#on_score", "0")):
            number = driver.find_element(By.CSS_SELECTOR, f"{field} input[type=number]")
            number.send_keys(Keys.CONTROL, "a")
            number.send_keys(value, Keys.TAB)
        driver.find_element(By.CSS_SELECTOR, "#detect_video").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#status"),
                                                    "clip.mp4: 3 frame(s)"))
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#timeline"),
                                                    "person "))
        assert "00:00.5" in driver.find_element(By.CSS_SELECTOR, "#timeline").text
        plot = wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, "#timeline_plot img")))
        assert plot.get_attribute("src")
        wait.until(lambda _: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", plot) == 960)
    finally:
        driver.quit()

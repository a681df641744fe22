"""`python -m vision` as a real process on 127.0.0.1, fed a video file written by the test.

The video (bus pan, zidane zoom, drawn frames; see vision.samples) stands in for the camera. Every
bad upload must get a 4xx with an OpenAI-style error body, and the service must keep serving.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.helpers import free_port, run_service
from vision.samples import sample_image, write_demo_video

MAX_UPLOAD = 3 * 2**20
MAX_PIXELS = 30_000_000


@pytest.fixture(scope="module")
def vision_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("vision")
    try:
        video = write_demo_video(tmp / "camera.avi", frames_per_part=20, fps=10)
    except FileNotFoundError as e:
        pytest.fail(str(e))
    port = free_port()
    env = {"WATUS_VISION_PORT": str(port), "WATUS_VISION_SOURCE": str(video), "WATUS_VISION_SOURCE_FPS": "8",
           "WATUS_VISION_THREADS": "2", "WATUS_VISION_FACE_EVERY_N": "3",
           "WATUS_VISION_MAX_UPLOAD_BYTES": str(MAX_UPLOAD), "WATUS_VISION_MAX_IMAGE_PIXELS": str(MAX_PIXELS)}
    with run_service("vision", env, port, tmp / "vision.log") as url:
        # Healthy means the models are warm; the first scene follows with the first frame.
        deadline = time.monotonic() + 30
        while httpx.get(url + "/v1/scene").status_code != 200:
            assert time.monotonic() < deadline, "no scene 30 s after the service became healthy"
            time.sleep(0.05)
        yield url


@pytest.fixture
def client(vision_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vision_url, timeout=30) as c:
        yield c
        # Whatever the test sent, the service still serves fresh scenes.
        assert c.get("/v1/scene", params={"max_age_ms": 5000}).status_code == 200


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return dict(body["error"])


def test_health_reports_models_and_source(client: httpx.Client) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["detector"]["engine"] == "onnxruntime" and health["faces"] is True
    assert health["source"]["kind"] == "file" and health["source"]["state"] == "ok"


def test_scene_follows_the_video(client: httpx.Client) -> None:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len({s["frame_id"] for s in seen}) < 12:
        r = client.get("/v1/scene")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        seen.append(r.json())
        time.sleep(0.05)
    ids = [s["frame_id"] for s in seen]
    assert ids == sorted(ids) and len(set(ids)) >= 12, ids  # newer and newer frames, never older
    last = seen[-1]
    assert last["width"] == 640 and last["height"] == 480 and last["fps"] > 1
    assert last["captured_ns"] <= last["result_ns"]
    assert set(last["timings"]) >= {"capture_wait_ms", "preprocess_ms", "inference_ms", "postprocess_ms",
                                    "faces_ms", "total_ms"}
    labels = {o["label"] for s in seen for o in s["objects"]}
    assert {"person", "bus"} <= labels
    for s in seen:
        for o in s["objects"]:
            b = o["box"]
            assert 0 <= b["x1"] < b["x2"] <= 1 and 0 <= b["y1"] < b["y2"] <= 1 and o["track_id"] is not None


def test_people_keep_their_track_and_get_attributes(client: httpx.Client) -> None:
    """Over the zidane part of the video a person keeps one id and gets smoothed face attributes."""
    deadline = time.monotonic() + 40
    best: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        for p in client.get("/v1/scene").json()["people"]:
            if p["faces_seen"] >= 2:
                best = p
        if best is not None:
            break
        time.sleep(0.1)
    assert best is not None, "no person with two face observations in 40 s of video"
    assert best["age"]["years"] > 10 and best["gender"]["label"] in ("female", "male")
    assert best["emotion"]["label"] in best["emotion_scores"]


def test_stale_scene_is_refused(client: httpx.Client) -> None:
    r = client.get("/v1/scene", params={"max_age_ms": 60_000})
    assert r.status_code == 200 and float(r.headers["x-scene-age-ms"]) < 60_000
    err = _error(client.get("/v1/scene", params={"max_age_ms": 0}), 503)
    assert err["code"] == "stale_scene" and err["param"] == "max_age_ms"
    assert _error(client.get("/v1/scene", params={"max_age_ms": -1}), 400)["param"] == "max_age_ms"


def test_sse_stream(vision_url: str) -> None:
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", vision_url + "/v1/scene/stream", params={"max_fps": 20}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == 4:
                    break
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4


def test_frame_jpeg_plain_and_annotated(client: httpx.Client) -> None:
    plain = client.get("/v1/frame.jpg")
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(plain.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
    annotated = client.get("/v1/frame.jpg", params={"annotated": 1})
    drawn = cv2.imdecode(np.frombuffer(annotated.content, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == (480, 640, 3)
    if annotated.headers["x-frame-id"] == plain.headers["x-frame-id"]:
        assert np.abs(drawn.astype(int) - image.astype(int)).mean() > 0.5  # boxes and labels were drawn


def test_detect_raw_and_multipart(client: httpx.Client) -> None:
    bus = sample_image("bus.jpg").read_bytes()
    scene = client.post("/v1/detect", content=bus, headers={"content-type": "image/jpeg"}).json()
    assert scene["source"] == "upload" and (scene["width"], scene["height"]) == (810, 1080)
    assert {"bus", "person"} <= {o["label"] for o in scene["objects"]}
    zidane = sample_image("zidane.jpg").read_bytes()
    r = client.post("/v1/detect", files={"file": ("zidane.jpg", zidane, "image/jpeg")})
    assert r.status_code == 200, r.text
    people = r.json()["people"]
    assert len(people) == 2 and any(p["age"] and p["gender"] and p["emotion"] for p in people)


def _png_bomb(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _bad_uploads() -> list[tuple[str, bytes, int, str]]:
    jpeg = sample_image("bus.jpg").read_bytes()
    _, big = cv2.imencode(".jpg", np.zeros((4000, 8000, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert len(big) < MAX_UPLOAD
    return [
        ("text", b"this is not an image at all", 415, "unsupported_image_type"),
        ("truncated jpeg", jpeg[: len(jpeg) * 2 // 3], 400, "truncated_image"),
        ("empty body", b"", 400, "empty_image"),
        ("zero-size png", _png_bomb(0, 480), 400, "empty_image"),
        ("decompression bomb", _png_bomb(60_000, 60_000), 413, "image_too_large"),
        ("too many pixels", big.tobytes(), 413, "image_too_large"),
        ("too many bytes", jpeg * (MAX_UPLOAD // len(jpeg) + 1), 413, "image_too_large"),
        ("corrupt png", _corrupt_png(), 400, "invalid_image"),
    ]


def _corrupt_png() -> bytes:
    """A PNG with valid header and end whose pixel data is garbled (libpng refuses it)."""
    _, png = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (200, 200, 3), np.uint8))
    data = bytearray(png.tobytes())
    for i in range(100, len(data) - 40, 7):
        data[i] ^= 0x5A
    return bytes(data)


@pytest.mark.parametrize("case", range(8))
def test_bad_uploads_get_4xx(client: httpx.Client, case: int) -> None:
    name, data, status, code = _bad_uploads()[case]
    err = _error(client.post("/v1/detect", content=data, headers={"content-type": "application/octet-stream"}),
                 status)
    assert err["code"] == code, (name, err)


def test_multipart_without_file(client: httpx.Client) -> None:
    err = _error(client.post("/v1/detect", files={"note": (None, b"no file here")}), 400)
    assert err["code"] == "missing_file"


def test_metrics(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    for series in ("vision_fps", 'vision_stage_seconds_bucket{le="0.05",stage="inference"}',
                   "vision_frames_processed_total", "vision_frames_dropped_total", "vision_source_reconnects_total",
                   'vision_detect_requests_total{outcome="rejected"}'):
        assert series in text, series


def test_unknown_route_is_openai_shaped(client: httpx.Client) -> None:
    assert _error(client.get("/v1/nothing"), 404)["code"] == "not_found"


def test_missing_model_is_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT

    env = {"WATUS_VISION_DETECTOR_MODEL": str(tmp_path / "nope.onnx"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "vision", "--port", str(free_port())], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "WATUS_VISION_DETECTOR_MODEL" in lines[0] and "watus models setup" in lines[0]

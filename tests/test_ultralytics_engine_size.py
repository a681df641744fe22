"""A static TensorRT YOLO engine and `WATUS_VISION_IMAGE_SIZE`: refused at load, naming both sizes.

Always run: reading the input size from the metadata header Ultralytics' TensorRT export writes in front
of the engine (a 4-byte little-endian length, then JSON with `imgsz` and `args`), on files laid out so,
and the size check itself. Neither needs Ultralytics nor TensorRT, and nothing of theirs is stood in for.
With ultralytics and tensorrt installed (the robot) and WATUS_TEST_YOLO_ENGINE naming a static engine:
the real detector refuses another size at load and detects at its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from vision.detector.base import DetectorConfig
from vision.detector.ultralytics_engine import EngineInput, UltralyticsDetector, check_image_size, engine_input
from vision.errors import ModelLoadError


def _engine_file(path: Path, metadata: object, engine: bytes = b"\x00ftrt" * 16) -> Path:
    """An engine file as Ultralytics' exporter writes it: header length, JSON metadata, engine bytes."""
    meta = json.dumps(metadata).encode()
    path.write_bytes(len(meta).to_bytes(4, byteorder="little", signed=True) + meta + engine)
    return path


def test_reads_the_export_size_from_the_header(tmp_path: Path) -> None:
    meta = {"task": "detect", "batch": 1, "imgsz": [640, 640], "names": {"0": "person"},
            "args": {"batch": 1, "dynamic": False, "half": True}}
    found = engine_input(None, _engine_file(tmp_path / "yolo11n.engine", meta))
    assert found == EngineInput(640, 640, False, "the engine's export metadata")
    meta.update(imgsz="[480, 640]", args={"dynamic": True})  # older exports write imgsz as text
    assert engine_input(None, _engine_file(tmp_path / "d.engine", meta)) == \
        EngineInput(480, 640, True, "the engine's export metadata")
    assert engine_input(None, _engine_file(tmp_path / "old.engine", {"imgsz": 320})) == \
        EngineInput(320, 320, False, "the engine's export metadata")  # no args: a static export


def test_an_engine_without_the_header_has_no_known_size(tmp_path: Path) -> None:
    raw = tmp_path / "trtexec.engine"
    raw.write_bytes(b"ftrt\x00\x00\x00\x00" + bytes(range(256)) * 4)  # a bare serialized engine
    assert engine_input(None, raw) is None
    assert engine_input(None, _engine_file(tmp_path / "nosize.engine", {"task": "detect"})) is None
    assert engine_input(None, tmp_path / "missing.engine") is None


def test_a_different_image_size_is_refused_naming_both() -> None:
    static = EngineInput(640, 640, False, "the engine's export metadata")
    check_image_size(static, 640, Path("yolo11n.engine"))
    with pytest.raises(ModelLoadError) as e:
        check_image_size(static, 320, Path("yolo11n.engine"))
    message = str(e.value)
    assert "WATUS_VISION_IMAGE_SIZE=320" in message and "640x640" in message and "yolo11n.engine" in message
    assert "set WATUS_VISION_IMAGE_SIZE=640" in message and "--imgsz 320" in message
    dynamic = EngineInput(640, 640, True, "the engine's input binding")
    check_image_size(dynamic, 320, Path("d.engine"))  # a dynamic engine takes any size up to its profile's
    with pytest.raises(ModelLoadError, match=r"WATUS_VISION_IMAGE_SIZE=960 is larger .* at most 640"):
        check_image_size(dynamic, 960, Path("d.engine"))
    with pytest.raises(ModelLoadError, match="export a square engine"):
        check_image_size(EngineInput(480, 640, False, "x"), 640, Path("wide.engine"))


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None or importlib.util.find_spec("tensorrt") is None,
                    reason="needs ultralytics and TensorRT (the robot); here the header reader is tested alone")
def test_the_real_engine_is_refused_at_load_and_runs_at_its_size() -> None:
    path = os.environ.get("WATUS_TEST_YOLO_ENGINE")
    if not path:
        pytest.skip("set WATUS_TEST_YOLO_ENGINE to a static engine built by models/export_yolo.py")
    found = engine_input(None, Path(path))
    assert found is not None and not found.dynamic and found.height == found.width
    other = 320 if found.height != 320 else 640
    with pytest.raises(ModelLoadError, match=f"WATUS_VISION_IMAGE_SIZE={other}"):
        UltralyticsDetector(Path(path), DetectorConfig(image_size=other)).load()
    detector = UltralyticsDetector(Path(path), DetectorConfig(image_size=found.height))
    detector.load()
    detections, _ = detector.detect(np.zeros((480, 640, 3), np.uint8))
    assert len(detections.scores) == 0  # a black frame, but no assertion at the first frame
    detector.close()

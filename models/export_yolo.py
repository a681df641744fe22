#!/usr/bin/env python3
"""Export a YOLO checkpoint for the vision service: a TensorRT `.engine` on the robot, ONNX elsewhere.

On the Jetson (JetPack 6, NVIDIA's torch wheel, `tensorrt` from JetPack, `pip install ultralytics`):

    python models/export_yolo.py yolo11n.pt /var/lib/watus/models/vision/yolo11n.engine --workspace 4

builds an FP16 engine at 640 px (the format Ultralytics publishes its Orin figures for), which the
service loads through Ultralytics when `WATUS_VISION_DETECTOR_MODEL` points at it. An engine is tied
to the GPU, TensorRT version and JetPack it was built with: build it on the robot itself. Anywhere
without CUDA + TensorRT the same command (or `--format onnx`) writes an ONNX file for ONNX Runtime.
`watus models export-yolo` runs this same recipe with the tool venv of `watus models setup`.

The recipe itself lives in `vision/export.py` (which `watus models setup` also runs); this wrapper
only makes it runnable from a checkout without installing Watus.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vision.export import main  # after the sys.path fix-up above

if __name__ == "__main__":
    # `export_yolo.py SRC OUT ...` is `export.py yolo SRC OUT ...` (and --help shows that command's help).
    sys.exit(main(sys.argv[1:] if sys.argv[1:2] in (["yolo"], ["locate"]) else ["yolo", *sys.argv[1:]]))

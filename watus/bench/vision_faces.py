"""The face stage of `watus bench vision`: faces found and face-stage ms, Haar (before) vs CenterFace (now).

Both face detectors run over the same sample images (bus.jpg and zidane.jpg as they are and turned
±30°) with the same YOLO person boxes, in this process, one after the other; the work is in
`vision.facebench`. The table goes into the vision section of docs/benchmarks.md.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from watus.bench.report import row


def face_figures(threads: int | None, repeats: int = 5) -> list[dict[str, Any]]:
    """One row per (detector, image): people, faces found, face-stage and find-only ms (medians)."""
    from vision.facebench import compare_face_detectors, sample_face_images
    from vision.settings import VisionSettings

    settings = VisionSettings() if threads is None else VisionSettings(threads=threads)
    return [r.as_dict() for r in compare_face_detectors(settings, sample_face_images(), repeats=repeats)]


def render_faces(rows: list[dict[str, Any]], repeats: int = 5) -> str:
    by_image: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_image[r["image"]][r["detector"]] = r
    detectors = sorted({r["detector"] for r in rows}, key=lambda d: d != "haar")  # before, then after
    head = ["image", "people"] + [f"{d} faces / stage ms / find ms" for d in detectors]
    lines = ["### Faces: Haar (before) vs CenterFace (default)", "", row(*head), row(*(["---"] * len(head)))]
    totals = {d: 0 for d in detectors}
    for image, per in by_image.items():
        cells = [image, str(next(iter(per.values()))["people"])]
        for d in detectors:
            got = per.get(d)
            cells.append("–" if got is None else f"{got['faces']} / {got['faces_ms']:.0f} / {got['find_ms']:.0f}")
            totals[d] += 0 if got is None else int(got["faces"])
        lines.append(row(*cells))
    found = ", ".join(f"{d} {n}" for d, n in totals.items())
    lines += ["", f"Faces found in all: {found}. Stage ms = find + classify every person (age, gender, emotion); "
              f"medians of {repeats} runs, this process, same person boxes."]
    return "\n".join(lines) + "\n"

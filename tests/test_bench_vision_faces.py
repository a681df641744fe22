"""The face-detector comparison of `watus bench vision`: real models on the sample images, and its table."""

from __future__ import annotations

import pytest

from watus.bench.vision_faces import face_figures, render_faces


def test_centerface_finds_the_faces_haar_misses_and_the_table_says_so() -> None:
    try:
        rows = face_figures(threads=2, repeats=1)
    except FileNotFoundError as e:  # pragma: no cover - CI runs `watus models setup` first
        pytest.skip(f"models not prepared: {e}")
    found = {(r["detector"], r["image"]): r["faces"] for r in rows}
    assert found[("centerface", "zidane.jpg")] == 2
    assert found[("centerface", "zidane.jpg +30°")] >= 2 and found[("centerface", "bus.jpg -30°")] >= 2
    if ("haar", "zidane.jpg") in found:  # OpenCV 4 still has the cascade
        assert sum(v for (d, _), v in found.items() if d == "haar") < sum(
            v for (d, _), v in found.items() if d == "centerface")
    table = render_faces(rows, repeats=1)
    assert "| zidane.jpg | 2 |" in table and "centerface faces / stage ms / find ms" in table
    assert "medians of 1 runs" in table

"""What the robot sees, for the model: fetching the scene from the vision service and summarising it.

The summary is short on purpose: a small model reads every token of it before it can answer (prefill is
the first thing the user waits for), so it says how many people there are with their age, gender and
emotion where the classifiers are confident, counts objects by label, and says how fresh it is. When
vision is down or the scene is older than `scene_max_age_ms`, the summary says so plainly, and the
prompt tells the model to admit it cannot see instead of inventing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from watus.timing import TURN_HEADER

log = logging.getLogger(__name__)

#: Below this the gender/emotion label is left out rather than stated as fact.
MIN_ATTRIBUTE_CONFIDENCE = 0.6


@dataclass
class SceneView:
    """One look at the scene: the scene itself or why there is none."""

    scene: dict[str, Any] | None
    error: str | None
    fetched_ns: int
    age_ms: float | None = None
    stale: bool = False

    @property
    def usable(self) -> bool:
        return self.scene is not None and not self.stale


class VisionClient:
    """Reads `GET /v1/scene` from the vision service; never raises (a missing camera is a fact to report)."""

    def __init__(self, base_url: str, timeout_s: float, max_age_ms: int) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self.max_age_ms = max_age_ms

    async def look(self, turn_id: str | None = None) -> SceneView:
        headers = {TURN_HEADER: turn_id} if turn_id else {}
        try:
            r = await self._http.get("/v1/scene", headers=headers)
        except httpx.HTTPError as e:
            return SceneView(None, f"vision service not reachable ({type(e).__name__})", time.monotonic_ns())
        now = time.monotonic_ns()
        if r.status_code != 200:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:200]
            return SceneView(None, f"vision service answered {r.status_code}: {message}", now)
        scene = r.json()
        return view_of(scene, now, self.max_age_ms)

    async def aclose(self) -> None:
        await self._http.aclose()


def view_of(scene: dict[str, Any], now_ns: int, max_age_ms: int) -> SceneView:
    captured = scene.get("captured_ns")
    age = (now_ns - int(captured)) / 1e6 if isinstance(captured, int) else None
    stale = age is not None and age > max_age_ms
    return SceneView(scene, None, now_ns, age, stale)


def _person_phrase(p: dict[str, Any], language: str) -> str:
    bits: list[str] = []
    age = p.get("age") or {}
    if isinstance(age.get("years"), (int, float)):
        bits.append(f"~{round(age['years'])} y" if language == "en" else f"~{round(age['years'])} lat")
    for key in ("gender", "emotion"):
        attr = p.get(key) or {}
        if attr.get("label") and float(attr.get("confidence", 0.0)) >= MIN_ATTRIBUTE_CONFIDENCE:
            bits.append(str(attr["label"]).lower())
    tid = p.get("track_id")
    name = f"person {tid}" if tid is not None else "person"
    if language == "pl":
        name = f"osoba {tid}" if tid is not None else "osoba"
    return f"{name} ({', '.join(bits)})" if bits else name


def summarize(view: SceneView, language: str = "en") -> str:
    """One or two lines for the model's context."""
    pl = language == "pl"
    if view.scene is None:
        return (f"[Kamera: niedostępna — {view.error}. Nie wiesz, co jest przed tobą.]" if pl
                else f"[Camera: unavailable — {view.error}. You do not know what is in front of you.]")
    if view.stale:
        return (f"[Kamera: ostatni obraz ma {(view.age_ms or 0) / 1000:.1f} s, jest nieaktualny. Nie opisuj go.]" if pl
                else f"[Camera: the last picture is {(view.age_ms or 0) / 1000:.1f} s old, too old to trust. "
                     "Do not describe it.]")
    scene = view.scene
    people = scene.get("people") or []
    objects = [o for o in scene.get("objects") or [] if o.get("label") != "person"]
    counts = Counter(str(o.get("label")) for o in objects)
    things = ", ".join(f"{n} {label}" if n > 1 else label for label, n in counts.most_common(8))
    who = "; ".join(_person_phrase(p, language) for p in people[:6])
    if pl:
        head = f"[Kamera (widok sprzed {(view.age_ms or 0) / 1000:.1f} s): "
        ppl = f"{len(people)} osób" + (f": {who}" if who else "") if people else "nikogo nie widać"
        obj = f". Przedmioty: {things}" if things else ""
    else:
        head = f"[Camera ({(view.age_ms or 0) / 1000:.1f} s ago): "
        ppl = (f"{len(people)} {'person' if len(people) == 1 else 'people'}" + (f": {who}" if who else "")
               if people else "no people")
        obj = f". Objects: {things}" if things else ""
    return f"{head}{ppl}{obj}.]"


def count_label(view: SceneView, label: str) -> int | None:
    """How many objects of a kind (people included) the scene shows; None without a usable scene."""
    if not view.usable or view.scene is None:
        return None
    want = label.strip().lower().rstrip("s")
    if want in ("person", "people", "human", "osob", "ludzi"):
        return len(view.scene.get("people") or [])
    return sum(1 for o in view.scene.get("objects") or [] if str(o.get("label", "")).lower().rstrip("s") == want)


def describe_person(view: SceneView, index: int, language: str = "en") -> str | None:
    """A person of the scene by number (1 = largest/first listed), or None."""
    if not view.usable or view.scene is None:
        return None
    people = view.scene.get("people") or []
    if not 1 <= index <= len(people):
        return None
    return _person_phrase(people[index - 1], language)

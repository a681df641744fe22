"""What the robot sees, for the model: fetching the scene from the vision service and summarising it.

The summary is short on purpose: a small model reads every token of it before it can answer (prefill is
the first thing the user waits for), so it says how many people there are with their age, gender and
emotion where the classifiers are confident, counts objects by label, and says how fresh it is. When
vision is down or the scene is older than `scene_max_age_ms`, the summary says so plainly, and the
prompt tells the model to admit it cannot see instead of inventing. The scene is validated against the
contract (`watus.core.wire.scene.Scene`): a scene that does not validate is logged and counted, and the
robot says it cannot see rather than reading a half-understood scene.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from watus.core.config import auth_headers
from watus.core.timing import TURN_HEADER
from watus.core.wire import WireError
from watus.core.wire.scene import Person, Scene

log = logging.getLogger(__name__)

#: Below this the gender/emotion label is left out rather than stated as fact.
MIN_ATTRIBUTE_CONFIDENCE = 0.6


@dataclass
class SceneView:
    """One look at the scene: the scene itself or why there is none."""

    scene: Scene | None
    error: str | None
    fetched_ns: int
    age_ms: float | None = None
    stale: bool = False

    @property
    def usable(self) -> bool:
        return self.scene is not None and not self.stale


class VisionClient:
    """Reads `GET /v1/scene` from the vision service; never raises (a missing camera is a fact to report)."""

    def __init__(self, base_url: str, timeout_s: float, max_age_ms: int,
                 on_invalid: Callable[[WireError], None] | None = None, api_key: str | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                       headers=auth_headers(api_key))
        self.max_age_ms = max_age_ms
        self._on_invalid = on_invalid

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
        try:
            scene = parse_scene(r.content)
        except WireError as e:
            log.error("vision scene skipped: %s", e)
            if self._on_invalid is not None:
                self._on_invalid(e)
            return SceneView(None, "the vision service sent a scene this agent cannot read", now)
        return view_of(scene, now, self.max_age_ms)

    async def aclose(self) -> None:
        await self._http.aclose()


def parse_scene(data: bytes | str | dict[str, Any]) -> Scene:
    """A scene from the vision service, validated; raises `WireError`."""
    try:
        if isinstance(data, dict):
            return Scene.model_validate(data)
        return Scene.model_validate_json(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise WireError("scene", f"{'.'.join(str(x) for x in first.get('loc', ()))}: {first.get('msg')}") from None


def view_of(scene: Scene, now_ns: int, max_age_ms: int) -> SceneView:
    age = (now_ns - scene.captured_ns) / 1e6
    return SceneView(scene, None, now_ns, age, age > max_age_ms)


#: The classifiers' labels (vision's gender, and the emotion model's class names), as the Polish line says them;
#: a label not listed is kept as it is.
POLISH_LABELS = {
    "female": "kobieta", "male": "mężczyzna", "anger": "złość", "angry": "złość", "contempt": "pogarda",
    "disgust": "wstręt", "fear": "strach", "happy": "radość", "happiness": "radość", "neutral": "spokój",
    "sad": "smutek", "sadness": "smutek", "surprise": "zaskoczenie",
}


def _person_phrase(p: Person, language: str) -> str:
    bits: list[str] = []
    if p.age is not None:
        bits.append(f"~{round(p.age.years)} y" if language == "en" else f"~{round(p.age.years)} lat")
    for attr in (p.gender, p.emotion):
        if attr is not None and attr.label and attr.confidence >= MIN_ATTRIBUTE_CONFIDENCE:
            label = attr.label.lower()
            bits.append(POLISH_LABELS.get(label, label) if language == "pl" else label)
    tid = p.track_id
    name = f"person {tid}" if tid is not None else "person"
    if language == "pl":
        name = f"osoba {tid}" if tid is not None else "osoba"
    return f"{name} ({', '.join(bits)})" if bits else name


def osoby(n: int) -> str:
    """Polish for "people" after the number `n`: 1 osoba, 2-4 osoby (but 12-14 osób), 5 and up osób."""
    if n == 1:
        return "osoba"
    return "osoby" if n % 10 in (2, 3, 4) and n % 100 not in (12, 13, 14) else "osób"


def summarize(view: SceneView, language: str = "en") -> str:
    """One or two lines for the model's context.

    A fresh scene's line does not say its age: the same scene then gives the same line from one look to
    the next, so the prompt prefilled while the person spoke (`brain.warm_prefix`) is still the prompt
    when the turn looks again; a picture too old to trust says so.
    """
    pl = language == "pl"
    if view.scene is None:
        return (f"[Kamera: niedostępna — {view.error}. Nie wiesz, co jest przed tobą.]" if pl
                else f"[Camera: unavailable — {view.error}. You do not know what is in front of you.]")
    if view.stale:
        return (f"[Kamera: ostatni obraz ma {(view.age_ms or 0) / 1000:.1f} s, jest nieaktualny. Nie opisuj go.]" if pl
                else f"[Camera: the last picture is {(view.age_ms or 0) / 1000:.1f} s old, too old to trust. "
                     "Do not describe it.]")
    scene = view.scene
    people = scene.people
    counts = Counter(o.label for o in scene.objects if o.label != "person")
    things = ", ".join(f"{n} {label}" if n > 1 else label for label, n in counts.most_common(8))
    who = "; ".join(_person_phrase(p, language) for p in people[:6])
    if pl:
        head = "[Kamera: "
        ppl = f"{len(people)} {osoby(len(people))}" + (f": {who}" if who else "") if people else "nikogo nie widać"
        obj = f". Przedmioty: {things}" if things else ""
    else:
        head = "[Camera: "
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
        return len(view.scene.people)
    return sum(1 for o in view.scene.objects if o.label.lower().rstrip("s") == want)


def describe_person(view: SceneView, number: int, language: str = "en") -> str | None:
    """The person the camera line calls `person <number>`, or None.

    People with a track id are named by it in the line (`summarize`), and stay so from frame to frame,
    so the number is that id; only a scene without ids (a single image) numbers people by position
    (1 = the first listed)."""
    if not view.usable or view.scene is None:
        return None
    people = view.scene.people
    by_id = [p for p in people if p.track_id == number]
    if by_id:
        return _person_phrase(by_id[0], language)
    if any(p.track_id is not None for p in people) or not 1 <= number <= len(people):
        return None
    return _person_phrase(people[number - 1], language)

"""What the dashboard shows besides the conversation: the services' health, the LLM's speed, the scene
and the machine, sampled while at least one dashboard page is open (nothing is polled otherwise).

Each snapshot is one hub event: `services` (every service's /health, with the audio service's microphone
level and VAD/speaking state), `llm` (TTFT and decode tok/s of the requests since the last sample, from
the LLM server's own Prometheus histograms), `machine` (CPU, RAM, swap; on a Jetson GPU load, power and
temperatures from tegrastats) and `scene` (people with their attributes, objects, FPS). A service that
does not answer is reported as down; the page keeps working with whatever answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from watus.agent.hub import Hub
from watus.agent.scene import SceneView, VisionClient
from watus.core.telemetry import TelemetrySampler

log = logging.getLogger(__name__)


async def probe(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """A service's /health: `ok`, its `status`, and its body (or why it did not answer)."""
    try:
        r = await http.get(url.rstrip("/") + "/health", timeout=1.5)
        body = r.json()
        return {"ok": r.status_code == 200, "status": body.get("status", r.status_code), "health": body}
    except (httpx.HTTPError, ValueError) as e:
        return {"ok": False, "status": f"down ({type(e).__name__})", "health": None}


def histogram_totals(metrics_text: str, names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """(sum, count) of each named histogram, added over its label sets."""
    out: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name not in names:
            continue
        total, count = 0.0, 0.0
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
        out[family.name] = (total, count)
    return out


def scene_snapshot(view: SceneView) -> dict[str, Any]:
    if view.scene is None:
        return {"ok": False, "error": view.error}
    s = view.scene
    people = [{"track_id": p.track_id, "age": None if p.age is None else round(p.age.years),
               "gender": None if p.gender is None else [p.gender.label, round(p.gender.confidence, 2)],
               "emotion": None if p.emotion is None else [p.emotion.label, round(p.emotion.confidence, 2)]}
              for p in s.people]
    objects = Counter(o.label for o in s.objects if o.label != "person")
    return {"ok": True, "stale": view.stale, "age_ms": None if view.age_ms is None else round(view.age_ms),
            "fps": round(s.fps, 1), "frame_id": s.frame_id, "people": people, "objects": dict(objects),
            "stage_ms": round(s.timings.total_ms, 1)}


class Monitor:
    LLM_HISTOGRAMS = ("watus_llm_ttft_seconds", "watus_llm_decode_tokens_per_second")

    def __init__(self, hub: Hub, vision: VisionClient, urls: dict[str, str], interval_s: float = 2.0) -> None:
        self._hub = hub
        self._vision = vision
        self._urls = urls
        self._interval = interval_s
        self._sampler = TelemetrySampler(interval_s, max_samples=4)
        self._llm_last: dict[str, tuple[float, float]] = {}
        self._llm_figures: dict[str, float | None] = {"ttft_ms": None, "decode_tps": None}

    async def run(self) -> None:
        """Forever (until cancelled): sample while a page is open."""
        self._sampler.start()
        try:
            async with httpx.AsyncClient() as http:
                tick = 0
                while True:
                    if self._hub.clients:
                        await self._scene()
                        if tick % 2 == 0:
                            await self._services(http)
                        tick += 1
                    await asyncio.sleep(self._interval / 2)
        finally:
            self._sampler.stop()

    async def _scene(self) -> None:
        self._hub.publish("scene", scene_snapshot(await self._vision.look()))

    async def _services(self, http: httpx.AsyncClient) -> None:
        names = list(self._urls)
        results = await asyncio.gather(*(probe(http, self._urls[n]) for n in names))
        self._hub.publish("services", dict(zip(names, results, strict=True)))
        if results[names.index("llm")]["ok"]:
            await self._llm(http)
        self._hub.publish("llm", dict(self._llm_figures))
        sample = self._sampler.latest()
        if sample is not None:
            self._hub.publish("machine", {
                "source": sample.source, "cpu_percent": sample.cpu_total_percent,
                "ram_used_mb": sample.ram_used_mb, "ram_total_mb": sample.ram_total_mb,
                "swap_used_mb": sample.swap_used_mb, "swap_total_mb": sample.swap_total_mb,
                "gpu_percent": sample.gpu_percent, "power_mw": sample.total_power_mw,
                "temps_c": sample.temps_c})

    async def _llm(self, http: httpx.AsyncClient) -> None:
        try:
            r = await http.get(self._urls["llm"].rstrip("/") + "/metrics", timeout=1.5)
            totals = histogram_totals(r.text, self.LLM_HISTOGRAMS)
        except (httpx.HTTPError, ValueError) as e:
            log.debug("LLM metrics unavailable: %s", e)
            return
        for name, key, scale in (("watus_llm_ttft_seconds", "ttft_ms", 1000.0),
                                 ("watus_llm_decode_tokens_per_second", "decode_tps", 1.0)):
            total, count = totals.get(name, (0.0, 0.0))
            last_total, last_count = self._llm_last.get(name, (0.0, 0.0))
            if count < last_count:  # the LLM server restarted: its counters began again
                last_total, last_count = 0.0, 0.0
            if count > last_count:  # requests since the last sample: their mean
                self._llm_figures[key] = round((total - last_total) / (count - last_count) * scale, 1)
            self._llm_last[name] = (total, count)

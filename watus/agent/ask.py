"""`watus ask`: one spoken turn offline, from a WAV file to a WAV file, with its latency breakdown.

The same turn as the voice loop, in one process (except the LLM server, which it starts if none runs):
faster-whisper transcribes the file, the scene comes from `--image` (through a running vision service's
`/v1/detect`, or the vision models in-process) or from the running vision service, and the reply goes
through the voice loop's own code (`watus.agent.turns.speak_reply`): each sentence is synthesised by
piper as soon as the cutter releases it. The stages are stamped on a `TurnRecord` on the same monotonic
clock and with the same names as the turn log; end of speech is the end of the recording (there is no
VAD tail offline: transcription starts at once), and the first synthesised audio is `playback_start`,
the moment a speaker would have started — so `e2e_ms` means what it means in the turn log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from watus.agent.brain import Session, TurnDeps, build_agent, scene_json
from watus.agent.scene import SceneView, VisionClient, parse_scene, summarize, view_of
from watus.agent.settings import AgentSettings
from watus.agent.turnlog import STAGES, TurnRecord
from watus.agent.turns import speak_reply
from watus.core.config import auth_headers, reveal
from watus.core.timing import new_turn_id

log = logging.getLogger(__name__)


@dataclass
class AskResult:
    transcript: str
    reply: str
    scene: str
    sample_rate: int
    audio: np.ndarray
    record: TurnRecord


async def _scene_from_image(image: Path, vision_url: str, max_age_ms: int, api_key: str | None) -> SceneView:
    data = await asyncio.to_thread(image.read_bytes)
    try:
        async with httpx.AsyncClient(timeout=30, headers=auth_headers(api_key)) as http:
            r = await http.post(vision_url.rstrip("/") + "/v1/detect", content=data,
                                headers={"content-type": "application/octet-stream"})
        if r.status_code == 200:
            scene = parse_scene(r.content).model_copy(update={"captured_ns": time.monotonic_ns()})
            return view_of(scene, time.monotonic_ns(), max_age_ms)
        log.info("vision service refused the image (%s); analysing it here", r.status_code)
    except httpx.HTTPError:
        log.info("no vision service at %s; analysing the image here", vision_url)
    return await asyncio.to_thread(_analyze_locally, data, max_age_ms)


def _analyze_locally(data: bytes, max_age_ms: int) -> SceneView:
    from vision.app import load_models
    from vision.images import decode_image
    from vision.pipeline import analyze_image
    from vision.settings import VisionSettings

    settings = VisionSettings()
    detector, faces = load_models(settings)
    scene = analyze_image(decode_image(data, settings.max_image_pixels), detector, faces)
    return view_of(scene.model_copy(update={"captured_ns": time.monotonic_ns()}), time.monotonic_ns(), max_age_ms)


async def ask(wav: Path | None, text: str | None, image: Path | None, settings: AgentSettings) -> AskResult:
    """One turn; `text` (instead of `wav`) is spoken by piper first, for a demo without a recording."""
    from audio.pcm import ASR_RATE, decode_upload, resample, to_float32
    from audio.runtime import asr_options, load_models
    from audio.settings import AudioSettings

    audio_settings = AudioSettings(mic_backend="none", speaker_backend="null")
    models = await load_models(audio_settings)
    try:
        voice = models.voices.default
        if text is not None:
            chunks = [c.pcm async for c in models.tts.stream([text], voice, 1.0) if len(c.pcm)]
            question = resample(to_float32(np.concatenate(chunks)), voice.engine.sample_rate, ASR_RATE)
        else:
            assert wav is not None
            raw = await asyncio.to_thread(wav.read_bytes)
            question = (await asyncio.to_thread(decode_upload, raw)).samples
        session = Session(new_turn_id(), settings.memory_turns)
        rec = TurnRecord(turn_id=new_turn_id(), session_id=session.id, transcript="", mode="ask")
        rec.speech_end_captured_ns = time.monotonic_ns()
        rec.mark("speech_end", rec.speech_end_captured_ns)
        transcript = await models.asr.transcribe(question, asr_options(audio_settings), source="ask")
        rec.mark("asr_done", time.monotonic_ns())
        rec.transcript, rec.language = transcript.text.strip(), transcript.language
        if image is not None:
            view = await _scene_from_image(image, settings.vision_url, settings.scene_max_age_ms,
                                           reveal(settings.vision_api_key))
        else:
            client = VisionClient(settings.vision_url, settings.service_timeout_s, settings.scene_max_age_ms,
                                  api_key=reveal(settings.vision_api_key))
            view = await client.look(rec.turn_id)
            await client.aclose()
        rec.mark("scene_fetched", time.monotonic_ns())
        rec.scene = scene_json(view)
        deps = TurnDeps(vision=None, view=view, language=settings.language.value, turn_id=rec.turn_id)
        audio: list[np.ndarray] = []
        sentences: asyncio.Queue[str | None] = asyncio.Queue()

        async def speaker() -> None:
            # Its own task, as in the audio service: the LLM keeps streaming while a sentence is synthesised.
            while (sentence := await sentences.get()) is not None:
                async for chunk in models.tts.stream([sentence], voice, 1.0):
                    if len(chunk.pcm):
                        now = time.monotonic_ns()
                        rec.mark("tts_first_audio", now)
                        rec.mark("playback_start", now)  # where a speaker would start playing
                        audio.append(chunk.pcm)
            rec.mark("playback_end", time.monotonic_ns())

        async def speak(sentence: str, final: bool) -> None:
            if sentence:
                sentences.put_nowait(sentence)

        speaking = asyncio.create_task(speaker())
        try:
            await speak_reply(build_agent(settings), session, rec, deps, language=settings.language.value,
                              sentence_max_chars=settings.sentence_max_chars,
                              max_reply_chars=settings.max_reply_chars, speak=speak)
        finally:
            sentences.put_nowait(None)
            await speaking
        if rec.error:
            log.warning("ask: %s", rec.error)
        pcm = np.concatenate(audio) if audio else np.zeros(0, np.int16)
        return AskResult(rec.transcript, rec.reply, summarize(view, settings.language.value),
                         voice.engine.sample_rate, pcm, rec)
    finally:
        models.close()


def breakdown(result: AskResult) -> list[tuple[str, float | None, float | None]]:
    """The rows `watus ask` prints: each stage of the turn log, ms after end of speech and from the one before."""
    ms = result.record.stage_ms()
    rows: list[tuple[str, float | None, float | None]] = [
        (stage, ms.get(f"{stage}_ms"), ms.get(f"{stage}_step_ms")) for stage in STAGES[1:] if f"{stage}_ms" in ms]
    rows.append(("e2e", result.record.e2e_ms, None))
    return rows


def as_json(result: AskResult) -> dict[str, Any]:
    """The turn as the turn log would hold it."""
    return result.record.as_json()

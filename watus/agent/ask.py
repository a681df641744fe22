"""`watus ask`: one spoken turn offline, from a WAV file to a WAV file, with its latency breakdown.

The same stages as a live turn, in one process (except the LLM server, which it starts if none runs):
faster-whisper transcribes the file, the scene comes from `--image` (through a running vision service's
`/v1/detect`, or the vision models in-process) or from the running vision service, the agent streams
its reply, and each sentence is synthesised by piper as soon as the cutter releases it, so the first
audio exists long before the reply is complete — that moment is what a user would hear first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from watus.agent.brain import Session, TurnDeps, build_agent, stream_reply
from watus.agent.scene import SceneView, VisionClient, summarize, view_of
from watus.agent.sentences import SentenceCutter
from watus.agent.settings import AgentSettings
from watus.timing import new_turn_id

log = logging.getLogger(__name__)


@dataclass
class AskResult:
    transcript: str
    reply: str
    scene: str
    sample_rate: int
    audio: np.ndarray
    ms: dict[str, float] = field(default_factory=dict)


async def _scene_from_image(image: Path, vision_url: str, max_age_ms: int) -> SceneView:
    data = await asyncio.to_thread(image.read_bytes)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(vision_url.rstrip("/") + "/v1/detect", content=data,
                                headers={"content-type": "application/octet-stream"})
        if r.status_code == 200:
            return view_of({**r.json(), "captured_ns": time.monotonic_ns()}, time.monotonic_ns(), max_age_ms)
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
    return view_of({**scene.model_dump(), "captured_ns": time.monotonic_ns()}, time.monotonic_ns(), max_age_ms)


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
        ms: dict[str, float] = {}
        t0 = time.perf_counter()

        def mark(name: str) -> None:
            ms.setdefault(name, round((time.perf_counter() - t0) * 1000, 1))

        transcript = await models.asr.transcribe(question, asr_options(audio_settings), source="ask")
        mark("asr_done")
        if image is not None:
            view = await _scene_from_image(image, settings.vision_url, settings.scene_max_age_ms)
        else:
            client = VisionClient(settings.vision_url, settings.service_timeout_s, settings.scene_max_age_ms)
            view = await client.look()
            await client.aclose()
        mark("scene_fetched")
        agent = build_agent(settings)
        session = Session(new_turn_id(), settings.memory_turns)
        deps = TurnDeps(vision=None, view=view, language=settings.language.value)
        cutter = SentenceCutter(settings.sentence_max_chars)
        audio: list[np.ndarray] = []
        reply: list[str] = []

        sentences: asyncio.Queue[str | None] = asyncio.Queue()

        async def speaker() -> None:
            # Its own task, as in the audio service: the LLM keeps streaming while a sentence is synthesised.
            while (sentence := await sentences.get()) is not None:
                async for chunk in models.tts.stream([sentence], voice, 1.0):
                    if len(chunk.pcm):
                        mark("tts_first_audio")
                        audio.append(chunk.pcm)

        speaking = asyncio.create_task(speaker())
        async for delta in stream_reply(agent, session, transcript.text, deps, settings.max_reply_chars):
            if delta:
                mark("llm_first_token")
                reply.append(delta)
                for sentence in cutter.feed(delta):
                    mark("first_sentence")
                    sentences.put_nowait(sentence)
        for sentence in cutter.flush():
            mark("first_sentence")
            sentences.put_nowait(sentence)
        sentences.put_nowait(None)
        await speaking
        mark("done")
        pcm = np.concatenate(audio) if audio else np.zeros(0, np.int16)
        return AskResult(transcript.text, "".join(reply).strip(), summarize(view, settings.language.value),
                         voice.engine.sample_rate, pcm, ms)
    finally:
        models.close()


def breakdown(result: AskResult) -> list[tuple[str, Any]]:
    """The rows `watus ask` prints: each stage's ms from the start of transcription."""
    names = {"asr_done": "ASR done", "scene_fetched": "scene fetched", "llm_first_token": "LLM first token",
             "first_sentence": "first sentence complete", "tts_first_audio": "TTS first audio",
             "done": "reply spoken (all audio synthesised)"}
    return [(names[k], v) for k, v in result.ms.items() if k in names]

"""Composition of the audio process: models, speaker, listener and microphone, started and stopped together.

`load_models` loads and warms the engines in their worker threads (they can be shared, e.g. by the
tests of one module); `AudioRuntime` wires them to a bus, a speaker and an optional microphone. The
FastAPI lifespan holds one runtime; nothing here is global.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Any

from audio.aec import EchoCanceller, EchoStats, make_echo
from audio.asr import select_asr
from audio.asr.base import TranscribeOptions
from audio.asr.runner import AsrRunner
from audio.devices import SourceFactory, select_sink, select_source
from audio.devices.base import AudioSink
from audio.devices.room import RoomMic
from audio.devices.supervisor import MicSupervisor
from audio.events import EventBus
from audio.farend import FarEnd, TappedSink
from audio.listen import Listener
from audio.metrics import AudioMetrics
from audio.pcm import F32
from audio.settings import AudioSettings, EchoMode, MicBackend, TurnEndKind
from audio.speak import SpeakQueue
from audio.tts import Voices, select_tts
from audio.tts.runner import TtsRunner
from audio.turn_model import TurnModel, decide, model_path, trails_off
from audio.vad import select_vad
from watus.core.wire.audio import MicEvent

log = logging.getLogger(__name__)


@dataclass
class Models:
    asr: AsrRunner
    tts: TtsRunner
    voices: Voices
    load_ms: dict[str, float] = field(default_factory=dict)
    turn: TurnModel | None = None  # the end-of-turn model (`WATUS_AUDIO_TURN_END=model`)

    def close(self) -> None:
        self.asr.close()
        self.tts.close()


class ModelEndOfTurn:
    """The end-of-turn decision the listener asks for at the first pause: the model and two thresholds."""

    def __init__(self, model: TurnModel, complete_at: float, incomplete_below: float,
                 trailing_words: bool = True) -> None:
        self._model = model
        self._complete_at = complete_at
        self._incomplete_below = incomplete_below
        self._trailing_words = trailing_words

    def trails_off(self, text: str) -> bool:
        """The speculative words stop where a sentence cannot (`turn_model.trails_off`), if that rule is on."""
        return self._trailing_words and trails_off(text)

    def decide(self, audio: F32) -> tuple[str, float, float]:
        t = time.perf_counter()
        prob = self._model.predict(audio)
        ms = (time.perf_counter() - t) * 1000
        return decide(prob, self._complete_at, self._incomplete_below), prob, ms


def load_turn_model(settings: AudioSettings) -> TurnModel:
    """The Smart Turn model named by the settings (or the cache's), loaded; raises TurnModelError."""
    path = settings.turn_model_path or model_path(settings.model_cache_dir)
    model = TurnModel(path, threads=settings.turn_model_threads)
    model.load()
    return model


def asr_options(settings: AudioSettings) -> TranscribeOptions:
    return TranscribeOptions(language=settings.asr_language, hotwords=settings.asr_hotwords,
                             beam_size=settings.asr_beam_size)


async def load_models(settings: AudioSettings, metrics: AudioMetrics | None = None) -> Models:
    """Load ASR and TTS (in parallel, each in its own worker) and warm them up. Raises on a missing model."""
    # Resolving may join the multilingual model's halves (145 MB) the first time: not on the event loop.
    asr_engine = await asyncio.to_thread(select_asr, settings)
    tts_engines = await asyncio.to_thread(select_tts, settings)
    asr = AsrRunner(asr_engine, metrics)
    tts = TtsRunner(metrics)
    times: dict[str, float] = {}

    async def timed(name: str, fut: Awaitable[Any]) -> None:
        t = time.perf_counter()
        await fut
        times[name] = round((time.perf_counter() - t) * 1000, 1)

    def load_tts() -> None:
        for engine in tts_engines:
            engine.load()

    await asyncio.gather(timed("asr_load", asyncio.wrap_future(asr.load())),
                         timed("tts_load", asyncio.wrap_future(tts.run(load_tts))))
    voices = Voices(tts_engines)
    turn: TurnModel | None = None
    if settings.turn_end is TurnEndKind.model:
        t = time.perf_counter()
        turn = await asyncio.to_thread(load_turn_model, settings)
        times["turn_model_load"] = round((time.perf_counter() - t) * 1000, 1)
    if settings.warmup:
        default = voices.default

        def warm_tts() -> None:
            for _ in default.engine.synthesize("Hello, I am ready.", default.voice, 1.0):
                pass

        async def warm_asr() -> None:  # both windows: each shape allocates on its first call
            await asyncio.wrap_future(asr.warm_up(asr_options(settings)))
            if settings.asr_fit_window:
                await asyncio.wrap_future(asr.warm_up(replace(asr_options(settings), fit_window=True)))

        await asyncio.gather(timed("asr_warmup", warm_asr()),
                             timed("tts_warmup", asyncio.wrap_future(tts.run(warm_tts))))
    log.info("models ready: ASR %s, default voice %s (%s)", asr_engine.model_id, voices.default.name, times)
    return Models(asr, tts, voices, times, turn)


class AudioRuntime:
    def __init__(self, settings: AudioSettings, models: Models, bus: EventBus, metrics: AudioMetrics, *,
                 source_factory: SourceFactory | None = None, sink: AudioSink | None = None,
                 use_settings_mic: bool = True) -> None:
        self.settings = settings
        self.models = models
        self.bus = bus
        self.metrics = metrics
        self._source_factory = source_factory
        self._use_settings_mic = use_settings_mic
        self._sink = sink
        self.speaker: SpeakQueue | None = None
        self.listener: Listener | None = None
        self.mic: MicSupervisor | None = None
        self._mic_task: asyncio.Task[None] | None = None
        #: What the speaker played: the echo canceller's reference and the virtual room's echo source.
        self.far = FarEnd()
        self.echo: EchoCanceller | None = None
        self.echo_stats: EchoStats | None = None
        self._ready_ns: int | None = None
        self.room: RoomMic | None = None
        self.wake_error: str | None = None

    def _room_factory(self) -> SourceFactory:
        s = self.settings

        def make() -> RoomMic:
            room = RoomMic(self.far, s.room_speech, s.room_speech_at_s, echo_delay_ms=s.room_echo_delay_ms,
                           echo_gain_db=s.room_echo_gain_db, echo_decay_ms=s.room_echo_decay_ms,
                           echo_rir=s.room_echo_rir, noise_db=s.room_noise_db, speech_gain_db=s.room_speech_gain_db,
                           block_ms=s.mic_block_ms)
            if self._ready_ns is not None:
                room.start_clock(self._ready_ns)  # a reopened room keeps its timeline
            self.room = room
            return room

        return make

    def service_ready(self) -> None:
        """`/health` answered 200 for the first time: the room's talkers count from now."""
        if self._ready_ns is None:
            self._ready_ns = time.monotonic_ns()
        if self.room is not None:
            self.room.start_clock(self._ready_ns)

    async def start(self) -> None:
        s = self.settings
        # Selection may probe PortAudio for devices (`auto`), which blocks: done in a thread.
        sink = self._sink
        if sink is None:
            sink = await asyncio.to_thread(select_sink, s, self.models.voices.default.engine.sample_rate)
        self.speaker = SpeakQueue(self.models.tts, TappedSink(sink, self.far), self.bus, self.metrics,
                                  block_ms=s.speaker_block_ms, max_pieces=s.speak_queue_size,
                                  first_clause=s.tts_first_clause)
        await self.speaker.start()
        factory = self._source_factory
        if factory is None and self._use_settings_mic:
            if s.mic_backend is MicBackend.room:
                factory = self._room_factory()
            else:
                factory = await asyncio.to_thread(
                    select_source, s, lambda: self.metrics.dropped_frames.labels("device").inc())
        if factory is None:
            log.info("no microphone: listening is off (WATUS_AUDIO_MIC_BACKEND)")
            return
        vad = await asyncio.to_thread(select_vad, s)
        end_of_turn = (ModelEndOfTurn(self.models.turn, s.turn_complete_at, s.turn_incomplete_below,
                                      s.turn_trailing_words)
                       if self.models.turn is not None else None)
        self.echo, self.echo_stats = make_echo(s.echo_mode, self.far, delay_ms=s.aec_delay_ms,
                                               noise_suppression=s.aec_noise_suppression, high_pass=s.aec_high_pass,
                                               metrics=self.metrics)
        wake = None
        if s.wake_word:
            from audio.wake import WakeWordDetector, WakeWordError

            try:
                wake = await asyncio.to_thread(WakeWordDetector, s.wake_word, s.wake_word_cutoff)
            except WakeWordError as e:
                self.wake_error = str(e)
                log.error("wake word off: %s", e)
        self.listener = Listener(s, vad, self.models.asr, self.bus, self.metrics, self.speaker, asr_options(s),
                                 end_of_turn, echo=self.echo, echo_mode=EchoMode(self.echo_stats.mode),
                                 wake=wake, far=self.far)
        self.listener.start()
        listener = self.listener
        self.mic = MicSupervisor(factory, listener.feed, listener.end_of_input, s.mic_retry_initial_s,
                                 s.mic_retry_max_s, s.mic_stall_timeout_s, on_failure=self._mic_failed,
                                 on_start=lambda src: setattr(listener, "realtime", src.realtime))
        self._mic_task = asyncio.create_task(self.mic.run(), name="mic-supervisor")

    def _mic_failed(self) -> None:
        self.metrics.mic_restarts.inc()
        if self.mic is not None:
            self.bus.publish(MicEvent(t_ns=time.monotonic_ns(), **self.mic.state.as_dict()))

    async def close(self) -> None:
        if self.mic is not None:
            self.mic.stop()
        if self._mic_task is not None:
            await asyncio.gather(self._mic_task, return_exceptions=True)
        if self.listener is not None:
            await asyncio.to_thread(self.listener.stop)
        if self.speaker is not None:
            await self.speaker.close()

    def health(self) -> dict[str, object]:
        mic: dict[str, object] = {"state": "none"}
        if self.mic is not None:
            mic = self.mic.state.as_dict()
        if self.listener is not None:
            mic["dropped_blocks"] = self.listener.dropped_blocks
            mic["in_speech"] = self.listener.in_speech
            mic["level_dbfs"] = self.listener.level_dbfs
        speaker: dict[str, object] = {}
        if self.speaker is not None:
            speaker = {"device": self.speaker.sink_name, "talking": self.speaker.talking(),
                       "paused": self.speaker.paused, "turn_id": self.speaker.active_turn,
                       "queue_depth": self.speaker.queue_depth}
        out: dict[str, object] = {"mic": mic, "speaker": speaker}
        if self.echo_stats is not None:
            out["echo"] = self.echo_stats.as_dict()
        if self.settings.wake_word:
            out["wake_word"] = {"model": self.settings.wake_word, "loaded": self.listener is not None and
                                self.wake_error is None, "error": self.wake_error}
        if self.room is not None:
            out["room"] = self.room.schedule()
        return out

    @property
    def degraded(self) -> bool:
        return self.mic is not None and self.mic.state.state in ("retrying", "starting") and \
            self.mic.state.attempts > 0

"""The listening and speaking pipelines with the real models, a WAV file as the microphone and a WAV sink.

The microphone input is built here from piper's own speech (no binary files in the repository). Real
time matters in these tests: files are played at the pace of a device, so timings are those a robot sees.
Only the microphone hardware edge is faked, for the disappearing-device test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest_asyncio
import soundfile as sf

from audio.devices.base import BlockCallback, DeviceError, EndCallback
from audio.devices.wavfile import WavSink
from audio.events import EventBus
from audio.metrics import AudioMetrics
from audio.pcm import ASR_RATE, F32, resample, to_float32
from audio.runtime import AudioRuntime, Models, load_models
from audio.settings import AudioSettings
from watus.core import metrics as m
from watus.core.wire.audio import AudioEvent as Event
from watus.core.wire.audio import SpeechStarted, Transcript

LONG_REPLY = ("Let me tell you a long story about the robot that lived in the kitchen. It watched the people, "
              "it listened to them, and it answered every question they had. Every morning it said hello.")


def _settings(**kw: object) -> AudioSettings:
    base: dict[str, object] = {"asr_threads": 2, "tts_threads": 2, "speaker_backend": "null", "mic_backend": "none"}
    base.update(kw)
    return AudioSettings(**base)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module")
async def models() -> AsyncIterator[Models]:
    loaded = await load_models(_settings())
    yield loaded
    loaded.close()


def speak(models: Models, text: str) -> F32:
    """Piper's voice for `text` at 16 kHz."""
    ref = models.voices.default
    pcm = np.concatenate(list(ref.engine.synthesize(text, ref.voice, 1.0)))
    return resample(to_float32(pcm), ref.engine.sample_rate, ASR_RATE)


def silence(seconds: float) -> F32:
    return np.zeros(int(seconds * ASR_RATE), np.float32)


def write_wav(path: Path, *parts: F32) -> Path:
    sf.write(path, np.concatenate(parts), ASR_RATE, subtype="PCM_16")
    return path


class Run:
    """A runtime on the test's loop with its events collected."""

    def __init__(self, runtime: AudioRuntime, events: list[Event]) -> None:
        self.runtime = runtime
        self.events = events
        self.collector: asyncio.Task[None] | None = None

    def of(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]

    async def wait(self, pred: Callable[[Event], bool], timeout: float) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if pred(e):
                    return e
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching event in {timeout} s: {[e.type for e in self.events]}")


async def start_run(models: Models, settings: AudioSettings, **kw: object) -> Run:
    metrics = AudioMetrics(m.new_registry())
    bus = EventBus(asyncio.get_running_loop())
    events: list[Event] = []
    sub = bus.subscribe()  # what an SSE client of /v1/events receives

    async def collect() -> None:
        while not sub.ended:
            ev = await sub.next(1.0)
            if ev is not None:
                events.append(ev)

    run = Run(AudioRuntime(settings, models, bus, metrics, **kw), events)  # type: ignore[arg-type]
    run.collector = asyncio.create_task(collect())
    await run.runtime.start()
    return run


async def test_two_utterances_give_two_transcripts(models: Models, tmp_path: Path) -> None:
    first, second = speak(models, "Hello Watus, what time is it?"), speak(models, "Please open the kitchen door.")
    lead, gap = 1.0, 1.5
    wav = write_wav(tmp_path / "two.wav", silence(lead), first, silence(gap), second, silence(0.3))
    run = await start_run(models, _settings(mic_backend="file", mic_file=wav, mic_gap_s=1.0))
    try:
        await run.wait(lambda e: e.type == "transcript" and "door" in str(getattr(e, "text", "")), 15)
        await asyncio.sleep(0.5)  # anything spurious would come now
    finally:
        await run.runtime.close()
    transcripts = run.of("transcript")
    assert len(transcripts) == 2, [getattr(t, "text", "") for t in transcripts]
    assert len(run.of("speech_started")) == 2 and len(run.of("speech_ended")) == 2
    a, b = (t.model_dump() for t in transcripts)
    assert "time" in a["text"].lower() and "watus" in a["text"].lower()
    assert "kitchen" in b["text"].lower()
    truth = [(lead, lead + len(first) / ASR_RATE),
             (lead + (len(first) + len(silence(gap))) / ASR_RATE, lead + (len(first) + len(silence(gap)) + len(second))
              / ASR_RATE)]
    for t, (start, end) in zip((a, b), truth, strict=True):
        # Piper pads its speech with a little silence: the VAD's boundaries lie inside the clip.
        assert start - 0.1 <= t["audio_start_s"] <= start + 0.4, (t["audio_start_s"], start)
        assert end - 0.4 <= t["audio_end_s"] <= end + 0.1, (t["audio_end_s"], end)
        stages = t["stages_ms"]
        assert 450 <= stages["end_silence"] <= 600  # vad_end_silence_ms = 500, in 32 ms frames
        assert 0 <= stages["eos_to_transcript"] < 1500 and stages["asr"] > 0
        assert t["t_ns"] >= t["t0_ns"] > t["speech_started_ns"]
        assert t["turn_id"] and t["language"] == "en"
    ended = {e.turn_id: e for e in run.of("speech_ended")}
    assert set(ended) == {a["turn_id"], b["turn_id"]}
    assert b["speech_started_ns"] - a["t0_ns"] > 0.5e9  # the second started well after the first ended


async def test_folder_mic_as_fast_as_possible(models: Models, tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    write_wav(folder / "01.wav", silence(0.3), speak(models, "Watus, turn left."))
    write_wav(folder / "02.wav", speak(models, "Now stop right there."))
    run = await start_run(models, _settings(mic_backend="file", mic_file=folder, mic_realtime=False, mic_gap_s=1.0))
    try:
        await run.wait(lambda e: e.type == "mic" or len(run.of("transcript")) == 2, 10)
        await asyncio.sleep(0.3)
    finally:
        await run.runtime.close()
    texts = [str(getattr(t, "text", "")).lower() for t in run.of("transcript")]
    assert len(texts) == 2 and "left" in texts[0] and "stop" in texts[1], texts
    assert run.runtime.mic is not None and run.runtime.mic.state.state in ("finished", "stopped")


async def test_barge_in_stops_playback_within_one_block(models: Models, tmp_path: Path) -> None:
    mic = write_wav(tmp_path / "barge.wav", silence(2.0), speak(models, "Stop talking please, I have a question."),
                    silence(1.0))
    sink_path = tmp_path / "speaker.wav"
    settings = _settings(mic_backend="file", mic_file=mic, speaker_block_ms=20)
    run = await start_run(models, settings, sink=WavSink(sink_path, 22050))
    try:
        assert run.runtime.speaker is not None
        await run.runtime.speaker.say(LONG_REPLY, models.voices.default, turn_id="reply-1")
        started = await run.wait(lambda e: e.type == "playback_started", 5)
        interrupted = await run.wait(lambda e: e.type == "interrupted", 8)
        transcript = await run.wait(lambda e: e.type == "transcript", 8)
    finally:
        await run.runtime.close()
    speech = run.of("speech_started")[0].model_dump()
    assert speech["barge_in"] is True and speech["t_ns"] > started.t_ns
    ev = interrupted.model_dump()
    assert ev["reason"] == "barge_in" and ev["turn_id"] == "reply-1"
    assert ev["stop_ms"] <= 20 + 15, ev  # one 20 ms block, plus scheduling slack
    assert "question" in str(getattr(transcript, "text", "")).lower()
    assert transcript.model_dump()["barge_in"] is True
    timeline = [json.loads(line) for line in sink_path.with_suffix(".jsonl").read_text().splitlines()]
    requested = ev["requested_ns"]
    after = [b for b in timeline if "start_ns" in b and b["start_ns"] > requested]
    assert len(after) <= 1, after  # at most the block that was already being handed over
    assert any("abort_ns" in b and b["abort_ns"] - requested <= 35e6 for b in timeline)
    assert not run.of("playback_finished")


async def test_speech_is_only_reported_when_the_say_request_leaves_barge_in_to_the_caller(
        models: Models, tmp_path: Path) -> None:
    """The agent's say requests carry barge_in=false: the speaker reports the speech and keeps playing."""
    mic = write_wav(tmp_path / "talk.wav", silence(2.0), speak(models, "Stop talking please, I have a question."),
                    silence(1.0))
    run = await start_run(models, _settings(mic_backend="file", mic_file=mic, speaker_block_ms=20),
                          sink=WavSink(tmp_path / "speaker.wav", 22050))
    try:
        assert run.runtime.speaker is not None
        await run.runtime.speaker.say(LONG_REPLY, models.voices.default, turn_id="reply-2", barge_in=False)
        await run.wait(lambda e: e.type == "playback_started", 5)
        speech = await run.wait(lambda e: e.type == "speech_started", 8)
        await run.wait(lambda e: e.type == "transcript", 8)
        talking = run.runtime.speaker.talking()
    finally:
        await run.runtime.close()
    assert isinstance(speech, SpeechStarted) and speech.during_playback is True and speech.barge_in is False
    assert talking  # still playing: stopping is the agent's decision
    assert not [e for e in run.of("interrupted") if getattr(e, "reason", "") == "barge_in"]


async def _echo_run(models: Models, tmp_path: Path, half_duplex: bool) -> Run:
    """The robot talks while the microphone hears a quiet copy of a voice (its echo, -42 dBFS)."""
    echo = speak(models, "I can see two people and a chair in the room today.")
    echo *= 10 ** (-42 / 20) / float(np.sqrt(np.mean(echo**2)))
    mic = write_wav(tmp_path / f"echo-{half_duplex}.wav", silence(1.5), echo, silence(1.0))
    run = await start_run(models, _settings(mic_backend="file", mic_file=mic,
                                            echo_mode="half" if half_duplex else "off", mic_gap_s=0.0))
    assert run.runtime.speaker is not None
    await run.runtime.speaker.say(LONG_REPLY, models.voices.default, turn_id="talk")
    await run.wait(lambda e: e.type == "playback_started", 5)
    await asyncio.sleep(1.5 + len(echo) / ASR_RATE + 0.8 - 0.4)
    return run


async def test_half_duplex_ignores_the_robots_own_voice(models: Models, tmp_path: Path) -> None:
    run = await _echo_run(models, tmp_path, half_duplex=True)
    try:
        assert run.runtime.speaker is not None and run.runtime.speaker.talking()
    finally:
        await run.runtime.close()
    assert not run.of("speech_started") and not run.of("transcript")
    assert not [e for e in run.of("interrupted") if e.model_dump()["reason"] == "barge_in"]
    # Without the gate the same input is taken for a person barging in: the gate is what prevented it.
    run = await _echo_run(models, tmp_path, half_duplex=False)
    await run.runtime.close()
    assert run.of("speech_started") and run.of("speech_started")[0].model_dump()["barge_in"] is True
    assert [e for e in run.of("interrupted") if e.model_dump()["reason"] == "barge_in"]


class FlakyMic:
    """Fakes only the hardware: fails to open, runs, vanishes, hangs, as the script says (one per attempt)."""

    realtime = True
    sample_rate = 48_000

    def __init__(self, script: list[str], attempts: list[float]) -> None:
        self.name = "flaky"
        self._script = script
        self._attempts = attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_block: BlockCallback, on_end: EndCallback) -> None:
        self._attempts.append(time.monotonic())
        action = self._script[len(self._attempts) - 1] if len(self._attempts) <= len(self._script) else "run"
        if action == "fail":
            raise DeviceError("no such device")
        self._thread = threading.Thread(target=self._run, args=(action, on_block, on_end), daemon=True)
        self._thread.start()

    def _run(self, action: str, on_block: BlockCallback, on_end: EndCallback) -> None:
        t0 = time.monotonic()
        block = np.zeros(self.sample_rate // 50, np.float32)
        while not self._stop.wait(0.02):
            if action in ("unplug", "hang") and time.monotonic() - t0 > 0.3:
                if action == "unplug":
                    on_end(DeviceError("device unplugged"))
                return  # "hang": silence without an error, like a stuck driver
            on_block(block, time.monotonic_ns())

    def stop(self) -> None:
        self._stop.set()


async def test_disappearing_microphone_is_retried_with_backoff(models: Models) -> None:
    attempts: list[float] = []
    script = ["fail", "fail", "unplug", "fail", "hang"]
    settings = _settings(mic_retry_initial_s=0.1, mic_retry_max_s=0.4, mic_stall_timeout_s=0.5)
    states: list[str] = []
    run = await start_run(models, settings, source_factory=lambda: FlakyMic(script, attempts))
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (len(attempts) >= 6 and states and states[-1] == "running"):
            health = run.runtime.health()
            mic = health["mic"]
            assert isinstance(mic, dict)
            if not states or states[-1] != mic["state"]:
                states.append(str(mic["state"]))
            await asyncio.sleep(0.02)
        assert run.runtime.mic is not None
        state = run.runtime.mic.state.as_dict()  # a snapshot: closing marks it stopped
    finally:
        await run.runtime.close()
    assert len(attempts) >= 6 and state["state"] == "running" and state["restarts"] == 5, (attempts, state)
    assert "retrying" in states and "running" in states
    gaps = [b - a for a, b in itertools.pairwise(attempts[:3])]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19, gaps  # 0.1 s, then doubled
    assert len(run.of("mic")) == 5 and run.of("mic")[-1].model_dump()["error"].startswith("no audio")


async def test_webrtc_vad_segments_too(models: Models, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "webrtc.wav", silence(0.5), speak(models, "Watus, come here."), silence(1.0),
                    speak(models, "Look at the window."), silence(0.2))
    run = await start_run(models, _settings(mic_backend="file", mic_file=wav, mic_realtime=False, vad_engine="webrtc"))
    try:
        await run.wait(lambda e: len(run.of("transcript")) == 2, 10)
        await asyncio.sleep(0.3)
    finally:
        await run.runtime.close()
    texts = [str(getattr(t, "text", "")).lower() for t in run.of("transcript")]
    assert len(texts) == 2 and "come" in texts[0] and "window" in texts[1], texts


async def test_full_capture_queue_drops_and_counts(models: Models) -> None:
    """The capture side never waits: with the listener not draining, blocks beyond the queue are dropped."""
    from audio.listen import Listener
    from audio.runtime import asr_options
    from audio.vad import select_vad

    settings = _settings(mic_queue_blocks=4)
    metrics = AudioMetrics(m.new_registry())
    listener = Listener(settings, select_vad(settings), models.asr, EventBus(asyncio.get_running_loop()), metrics,
                        None, asr_options(settings))
    block = np.zeros(512, np.float32)
    started = time.perf_counter()
    for _ in range(10):
        listener.feed(block, ASR_RATE, time.monotonic_ns())
    assert time.perf_counter() - started < 0.05
    assert listener.dropped_blocks == 6
    assert metrics.dropped_frames.labels("queue_full")._value.get() == 6 * 512


async def test_multilingual_base_model_hears_polish(tmp_path: Path) -> None:
    """The joined multilingual base model (from the two package halves) detects and transcribes Polish."""
    from audio.asr import select_asr
    from audio.asr.base import TranscribeOptions
    from audio.asr.runner import AsrRunner
    from audio.tts.espeak import EspeakEngine

    espeak = EspeakEngine("pl")
    espeak.load()
    pcm = np.concatenate(list(espeak.synthesize("Dzień dobry, jak się masz? Jestem robotem.", "pl", 0.9)))
    runner = AsrRunner(select_asr(_settings(asr_model="base", asr_language=None, model_cache_dir=tmp_path)))
    try:
        await asyncio.wrap_future(runner.load())
        t = await runner.transcribe(resample(to_float32(pcm), espeak.sample_rate, ASR_RATE),
                                    TranscribeOptions(language=None))
    finally:
        runner.close()
    assert t.language == "pl" and t.language_probability > 0.5
    assert "dobry" in t.text.lower() and "robot" in t.text.lower(), t.text


async def test_a_pause_gives_a_speculative_transcript_then_the_final_one_of_the_same_utterance(
        models: Models, tmp_path: Path) -> None:
    """Speech, a 350 ms pause (a speculative pass at 200 ms), more speech: resumed, then one final transcript."""
    first, second = speak(models, "Tell me please"), speak(models, "what time it is now.")
    mic = write_wav(tmp_path / "pause.wav", silence(1.0), first, silence(0.35), second, silence(1.2))
    run = await start_run(models, _settings(mic_backend="file", mic_file=mic))
    try:
        final = await run.wait(lambda e: e.type == "transcript", 20)
        turn_end = await run.wait(lambda e: e.type == "turn_end", 5)
    finally:
        await run.runtime.close()
    (started,) = run.of("speech_started")
    assert started.turn_id == final.turn_id == turn_end.turn_id  # one id from the first word to the transcript
    resumed = run.of("speech_resumed")
    assert resumed and all(r.turn_id == final.turn_id for r in resumed)
    assert isinstance(final, Transcript) and "time" in final.text.lower()
    assert turn_end.decision == "silence" and turn_end.probability is None  # WATUS_AUDIO_TURN_END=silence
    specs = run.of("speculative_transcript")
    for spec in specs:  # a pass at the mid-sentence pause is published only if it finished before speech resumed
        assert spec.turn_id == final.turn_id and spec.pause_ns < final.t0_ns
    # The pass at the last pause is the final transcript itself, published as soon as it was ready.
    assert any(spec.text == final.text and spec.t_ns <= final.t_ns for spec in specs), specs


async def test_held_speech_waits_for_release_and_does_not_count_as_talking(models: Models, tmp_path: Path) -> None:
    run = await start_run(models, _settings(), sink=WavSink(tmp_path / "speaker.wav", 22050))
    try:
        speaker = run.runtime.speaker
        assert speaker is not None
        await speaker.say("Here is my answer.", models.voices.default, turn_id="held-1", hold=True)
        await speaker.say("It has two sentences.", models.voices.default, turn_id="held-1", final=True)
        await asyncio.sleep(2.0)  # long enough to synthesise both
        assert not run.of("playback_started") and run.of("tts_audio")  # synthesised, not played
        assert not speaker.talking()  # the person may still be speaking: the half-duplex gate stays open
        assert speaker.release("held-1")[0] is True
        started = await run.wait(lambda e: e.type == "playback_started", 5)
        finished = await run.wait(lambda e: e.type == "playback_finished" and getattr(e, "final", False), 15)
        assert speaker.release("held-1") == (False, 0)  # nothing held any more
        # Held and then stopped: nothing of it is ever played.
        await speaker.say("Never heard.", models.voices.default, turn_id="held-2", hold=True, final=True)
        await asyncio.sleep(1.0)
        await speaker.stop()
        assert speaker.release("held-2") == (False, 0)
        await asyncio.sleep(0.5)
    finally:
        await run.runtime.close()
    assert started.turn_id == "held-1" and 1000 < finished.played_ms < 6000
    assert not [e for e in run.of("playback_started") if e.turn_id == "held-2"]

"""The duplex pieces on their own: words and names, the far-end ring, the echo canceller, the room's echo,
the segmenter reaching back to a first word, and the speaker's pause and resume (no models needed)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from audio.aec import EchoCanceller, make_echo
from audio.devices.room import RoomMic, onset_s, synthetic_rir
from audio.farend import FarEnd
from audio.pcm import ASR_RATE
from audio.segmenter import Segmenter, SegmenterConfig, SpeechEnd, SpeechStart
from audio.settings import AudioSettings, EchoMode
from watus.core.words import names, real_words, without

# --- words --------------------------------------------------------------------------------------------


def test_fillers_are_not_words_and_names_have_one_letter_of_slack() -> None:
    assert real_words("Mhm.") == [] and real_words("Uh-huh, hmm...") == []
    assert real_words("Um, stop please!") == ["stop", "please"]
    assert names("Watus, what time is it?", "Watus")
    assert names("wattus what time", "Watus") and names("Vatus?", "Watus")  # ASR spellings
    assert not names("What time is it?", "Watus") and not names("What is it?", "Watus")
    assert names("hey what us, come here", "Watus", ("What us",))
    assert without("Alexa.", "alexa") == [] and without("Alexa, what time is it?", "alexa") == [
        "what", "time", "is", "it"]


def test_settings_split_the_room_lists_and_check_them() -> None:
    s = AudioSettings(mic_backend="room", room_speech="a.wav, b.wav", room_speech_at_s="1,6.5")
    assert [p.name for p in s.room_speech] == ["a.wav", "b.wav"] and s.room_speech_at_s == [1.0, 6.5]
    with pytest.raises(ValueError, match="one per file"):
        AudioSettings(room_speech="a.wav,b.wav", room_speech_at_s="1")


# --- the far end ------------------------------------------------------------------------------------------


def test_far_end_reads_what_was_played_at_its_time_and_forgets_an_abort() -> None:
    far = FarEnd(keep_s=2.0)
    t0 = 1_000_000_000
    block = np.linspace(0.1, 0.2, 320, dtype=np.float32)
    far.play(block, ASR_RATE, t0)
    far.play(block, ASR_RATE, t0 + 20_000_000 + 50_000)  # 50 µs of jitter: joined, no gap
    both = far.read(t0, 640)
    assert np.allclose(both[:320], block) and np.allclose(both[320:], block)
    assert not far.read(t0 - 100_000_000, 100).any()  # before anything played: zeros
    assert np.allclose(far.read(t0 + 10_000_000, 160), block[160:])  # mid-block
    far.abort(t0 + 30_000_000)  # the device dropped what it had not played yet
    after = far.read(t0 + 30_000_000, 160)
    assert not after.any() and far.read(t0 + 20_000_000, 160).any()


def test_the_canceller_removes_a_linear_echo_and_measures_itself() -> None:
    rng = np.random.default_rng(3)
    far = FarEnd()
    n = ASR_RATE * 4
    # Speech-like far end: noise with a syllable-rate envelope.
    env = 0.5 + 0.5 * np.sin(np.arange(n) * 2 * np.pi * 4 / ASR_RATE)
    played = (rng.standard_normal(n) * 0.1 * env).astype(np.float32)
    t0 = time.monotonic_ns()
    far.play(played, ASR_RATE, t0)
    echo = np.convolve(played, synthetic_rir(40, -6, 120))[:n].astype(np.float32)
    aec = EchoCanceller(far)
    out = []
    block = 512
    for i in range(0, n - block + 1, block):
        end_ns = t0 + int((i + block - 1) * 1e9 / ASR_RATE)
        out.append(aec.process(echo[i:i + block], end_ns))
    cleaned = np.concatenate(out)
    assert len(cleaned) + aec.carry == n - n % block
    st = aec.stats
    assert st.erle_db is not None and st.erle_db > 20, st
    assert st.far_active_s > 3 and st.cpu_fraction is not None and st.cpu_fraction < 0.2


def test_echo_mode_half_and_off_need_no_library() -> None:
    for mode in (EchoMode.half, EchoMode.off):
        aec, stats = make_echo(mode, FarEnd(), delay_ms=0, noise_suppression=False, high_pass=True)
        assert aec is None and stats.mode == mode.value


# --- the room ----------------------------------------------------------------------------------------------


def test_the_room_hears_the_speaker_through_its_echo_path_and_the_talkers_at_their_offsets(tmp_path) -> None:
    import soundfile as sf

    talk = np.zeros(ASR_RATE, np.float32)
    talk[8000:8800] = 0.3  # audible from 0.5 s into the clip
    sf.write(tmp_path / "p.wav", talk, ASR_RATE)
    assert onset_s(talk) == pytest.approx(0.5, abs=0.011)
    far = FarEnd()
    room = RoomMic(far, [tmp_path / "p.wav"], [0.2], echo_gain_db=-6.0, block_ms=32)
    got: list[tuple[np.ndarray, int]] = []
    room.start(lambda b, t: got.append((b, t)), lambda e: None)
    t_clock = time.monotonic_ns()
    room.start_clock(t_clock)
    noise = np.random.default_rng(1).standard_normal(ASR_RATE // 2).astype(np.float32) * 0.2
    far.play(noise, ASR_RATE, t_clock)  # the robot "talks" for 0.5 s (RMS 0.2)
    time.sleep(1.1)
    room.stop()
    sched = room.schedule()
    (talker,) = sched["talkers"]  # type: ignore[misc]
    assert talker["onset_ns"] == t_clock + int(0.2e9) + int(0.5e9)

    def level_at(t_ns: int) -> float:
        for b, end in got:
            start = end - int((len(b) - 1) * 1e9 / ASR_RATE)
            if start <= t_ns <= end:
                return float(np.sqrt(np.mean(b ** 2)))
        return -1.0

    # Echo at −6 dB of RMS 0.2: about 0.1 (the tail adds a little); silence after the echo has died out.
    assert 0.05 < level_at(t_clock + int(0.25e9)) < 0.2
    assert level_at(t_clock + int(0.65e9)) < 0.02  # the echo has died out (0.5 + 0.04 + 0.12 s)
    assert level_at(t_clock + int(0.72e9)) > 0.2  # the talker, 0.2 + 0.5 s in


# --- the segmenter ------------------------------------------------------------------------------------------


def test_a_short_first_word_before_a_comma_joins_the_utterance() -> None:
    cfg = SegmenterConfig(sample_rate=ASR_RATE, frame_samples=512, min_speech_ms=200, pre_speech_ms=300,
                          end_silence_ms=500, min_utterance_ms=100)
    seg = Segmenter(cfg)
    frame = np.zeros(512, np.float32)
    probs = [0.0] * 20 + [0.9] * 4 + [0.1] * 12 + [0.9] * 20 + [0.0] * 20  # "Stop," (128 ms) ... "please stop"
    events = [ev for p in probs for ev in seg.push(frame, p)]
    start = next(e for e in events if isinstance(e, SpeechStart))
    end = next(e for e in events if isinstance(e, SpeechEnd))
    burst_at = 20 * 512
    assert start.start == 36 * 512  # the utterance proper starts at the second run ...
    # ... but its audio reaches back to the first word (and 100 ms before it).
    assert len(end.audio) >= (end.end - burst_at)


# --- the speaker: pause and resume ------------------------------------------------------------------------------


async def test_pause_silences_the_speaker_and_resume_plays_on_from_the_cut_block() -> None:
    from audio.devices.wavfile import WavSink
    from audio.events import EventBus
    from audio.metrics import AudioMetrics
    from audio.speak import SpeakQueue
    from audio.tts.runner import Chunk
    from watus.core import metrics as m

    class ToneTts:
        """Fakes only the voice: one second of tone per piece."""

        def submit(self, pieces, voice, speed, emit, cancelled):  # type: ignore[no-untyped-def]
            import concurrent.futures

            for _ in pieces:
                emit(Chunk(pcm=(np.ones(16000) * 3000).astype(np.int16), sample_rate=16000, piece=0, last=False))
            emit(Chunk(pcm=np.zeros(0, np.int16), sample_rate=16000, piece=0, last=True))
            f: concurrent.futures.Future[None] = concurrent.futures.Future()
            f.set_result(None)
            return f

    bus = EventBus(asyncio.get_running_loop())
    sub = bus.subscribe()
    far = FarEnd()
    from audio.farend import TappedSink

    sink = TappedSink(WavSink(None, 16000), far)
    q = SpeakQueue(ToneTts(), sink, bus, AudioMetrics(m.new_registry()), block_ms=20, max_pieces=8)  # type: ignore[arg-type]
    await q.start()
    try:
        await q.say("One piece.", None, turn_id="t1", barge_in=False)  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        onset = time.monotonic_ns()
        assert q.pause(onset) and q.paused and not q.audible() and q.talking()
        assert not q.pause(onset)  # already paused
        await asyncio.sleep(0.4)
        assert not far.read(time.monotonic_ns() - 200_000_000, 3200).any()  # nothing played while paused
        assert q.resume("no_words")
        events = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ev = await sub.next(0.2)
            if ev is not None:
                events.append(ev)
                if ev.type == "playback_finished":
                    break
    finally:
        await q.close()
    kinds = [e.type for e in events]
    assert kinds.index("playback_paused") < kinds.index("playback_resumed") < kinds.index("playback_finished")
    finished = next(e for e in events if e.type == "playback_finished")
    assert finished.played_ms >= 1000  # the whole second played, the cut block again
    paused = next(e for e in events if e.type == "playback_paused")
    assert paused.stop_ms < 50

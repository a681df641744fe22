"""The pause rules on their own: the sound rule on echo-cancelled audio (level over the residual's floor,
trusted only with a working canceller, confirmed by the VAD or resumed), and hotwords given to whisper
as a sentence of context (no models needed)."""

from __future__ import annotations

import numpy as np

from audio.asr.base import TranscribeOptions
from audio.asr.faster_whisper import prompt_of
from audio.bargein import AEC_FRAME, PauseWatch, ResidualFloor
from audio.segmenter import Gate
from audio.settings import AudioSettings


class Speaker:
    """The speaker as PauseWatch sees it: playing or not, and what it was asked."""

    def __init__(self, audible: bool = True) -> None:
        self.playing = audible
        self.paused_at: list[int] = []
        self.resumed: list[str] = []
        self._paused = False

    def audible(self, tail_ms: float = 0.0) -> bool:
        return self.playing

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, onset_ns: int) -> bool:
        if self._paused or not self.playing:
            return False
        self._paused = True
        self.paused_at.append(onset_ns)
        return True

    def resume(self, reason: str, text: str | None = None) -> bool:
        if not self._paused:
            return False
        self._paused = False
        self.resumed.append(reason)
        return True


def tone(level_dbfs: float, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(frames * AEC_FRAME).astype(np.float32)
    return (x / np.sqrt(np.mean(x ** 2)) * 10 ** (level_dbfs / 20)).astype(np.float32)


def at(pos: int) -> int:
    """Capture time of a stream position: 1 ms per 16 samples from zero."""
    return pos * 1_000_000 // 16


PLAYING = tone(-20, 400, seed=9)  # the speaker's output, long since playing


def watch(speaker: Speaker, **kw: object) -> PauseWatch:
    w = PauseWatch(AudioSettings(mic_backend="none", speaker_backend="null", **kw), speaker, 512)
    w.sound(tone(-90, 10), PLAYING[:10 * AEC_FRAME], 0, None, at)  # the speaker has been playing a while
    return w


def hear(w: PauseWatch, cancelled: np.ndarray, pos: int, erle: float | None,
         far: np.ndarray | None = None) -> None:
    w.sound(cancelled, PLAYING[:len(cancelled)] if far is None else far, pos, erle, at)


def test_two_loud_frames_over_the_residual_pause_at_the_first_ones_capture_time() -> None:
    sp = Speaker()
    w = watch(sp)
    hear(w, tone(-70, 30), 0, 60.0)  # the canceller's leftover echo: nothing
    assert sp.paused_at == []
    hear(w, np.concatenate([tone(-70, 1), tone(-30, 1)]), 30 * AEC_FRAME, 60.0)  # one loud frame: not yet
    assert sp.paused_at == []
    hear(w, tone(-30, 1, seed=1), 32 * AEC_FRAME, 60.0)
    assert sp.paused_at == [at(31 * AEC_FRAME)]  # the first loud frame's capture


def test_the_rule_needs_a_working_canceller_and_a_playing_speaker() -> None:
    for erle in (None, 5.0):
        sp = Speaker()
        hear(watch(sp), tone(-20, 10), 0, erle)
        assert sp.paused_at == [], erle
    quiet = Speaker(audible=False)
    hear(watch(quiet), tone(-20, 10), 0, 60.0)
    assert quiet.paused_at == []
    off = Speaker()
    hear(watch(off, barge_in_aec_frames=0), tone(-20, 10), 0, 60.0)
    assert off.paused_at == []


def test_steady_noise_lifts_the_threshold_a_talker_above_it_still_pauses() -> None:
    sp = Speaker(audible=False)
    w = watch(sp)
    hear(w, tone(-40, 200), 0, 60.0)  # a fan at -40 dBFS before the robot talks (longer than the window)
    sp.playing = True
    hear(w, tone(-40, 100, seed=1), 200 * AEC_FRAME, 60.0)  # above -45, but it is the floor
    assert sp.paused_at == []
    hear(w, tone(-32, 5, seed=2), 300 * AEC_FRAME, 60.0)  # 8 dB over the floor: less than the margin
    assert sp.paused_at == []
    hear(w, tone(-15, 5, seed=3), 305 * AEC_FRAME, 60.0)
    assert len(sp.paused_at) == 1


def test_a_pause_by_sound_the_vad_does_not_confirm_resumes_and_one_it_confirms_waits() -> None:
    sp = Speaker()
    w = watch(sp, barge_in_confirm_ms=50)  # 800 samples of stream
    hear(w, tone(-20, 3), 0, 60.0)
    assert len(sp.paused_at) == 1
    w.frame(0.05, 0.0, Gate.open, None, 0, False, at)  # a knock: the VAD heard no speech ...
    assert sp.resumed == []
    w.frame(0.05, 0.0, Gate.open, None, 1024, False, at)  # ... by 50 ms of stream later
    assert sp.resumed == ["not_speech"]

    sp2 = Speaker()
    w2 = watch(sp2, barge_in_confirm_ms=50)
    hear(w2, tone(-20, 3), 0, 60.0)
    w2.frame(0.95, 0.0, Gate.open, None, 0, False, at)  # speech: the transcript decides now
    w2.frame(0.05, 0.0, Gate.open, None, 1024, True, at)
    w2.frame(0.05, 0.0, Gate.open, None, 2048, False, at)
    assert sp2.resumed == []


def test_the_first_frames_after_the_speaker_was_silent_do_not_count() -> None:
    sp = Speaker()
    w = watch(sp)
    hear(w, tone(-90, 5), 0, 60.0, far=np.zeros(5 * AEC_FRAME, np.float32))  # between two sentences
    hear(w, tone(-40, 6), 5 * AEC_FRAME, 60.0)  # AEC3's leak of the next sentence's first 60 ms
    assert sp.paused_at == []
    hear(w, tone(-40, 2, seed=4), 11 * AEC_FRAME, 60.0)
    assert sp.paused_at == [at(11 * AEC_FRAME)]


def test_the_floor_is_the_quietest_recent_frame() -> None:
    f = ResidualFloor()
    assert f.level == float("-inf")
    for level in [-60.0] * 10 + [-20.0] * 5:
        f.add(level)
    assert f.level == -60.0
    for _ in range(200):  # 2 s of a louder residual: the old minimum has left the window
        f.add(-40.0)
    assert f.level == -40.0


def test_hotwords_alone_become_a_sentence_of_context_a_prompt_keeps_them_as_hotwords() -> None:
    assert prompt_of(TranscribeOptions(hotwords="Watus")) == ("Watus.", None)
    assert prompt_of(TranscribeOptions(hotwords=" Watus, ")) == ("Watus.", None)
    assert prompt_of(TranscribeOptions()) == (None, None)
    assert prompt_of(TranscribeOptions(prompt="Kitchen talk.", hotwords="Watus")) == ("Kitchen talk.", "Watus")

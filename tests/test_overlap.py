"""The barge-in overlap repair (`audio.overlap`): the linear echo fit and what it puts back (no models)."""

from __future__ import annotations

import numpy as np
import pytest

from audio.devices.room import synthetic_rir
from audio.overlap import OverlapRepair, fit_echo_path, levinson
from audio.pcm import ASR_RATE

RNG = np.random.default_rng(7)


def _toeplitz(r: np.ndarray) -> np.ndarray:
    n = len(r)
    return np.array([[r[abs(i - j)] for j in range(n)] for i in range(n)])


def _speechy(n: int) -> np.ndarray:
    """Coloured, bursty noise: like speech, not white and not always on."""
    x = np.convolve(RNG.standard_normal(n), np.hanning(9), "same")
    envelope = np.repeat(RNG.uniform(0.2, 1.0, n // 800 + 1), 800)[:n]
    return (0.05 * x * envelope).astype(np.float32)


def _db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-12))


def test_levinson_solves_a_toeplitz_system() -> None:
    r = np.exp(-np.arange(64) / 9.0) + 0.01 * RNG.standard_normal(64)
    r[0] = 2.0  # diagonally dominant: positive definite
    b = RNG.standard_normal(64)
    np.testing.assert_allclose(levinson(r, b), np.linalg.solve(_toeplitz(r), b), rtol=1e-8, atol=1e-10)


def test_the_fit_finds_a_room_impulse_response() -> None:
    rir = synthetic_rir(40, -6, 120)[:2048].astype(np.float64)
    far = _speechy(3 * ASR_RATE).astype(np.float64)
    near = np.convolve(far, rir)[:len(far)]
    h = fit_echo_path(far, near, 2048)
    resid = near - np.convolve(far, h)[:len(far)]
    assert _db(near[4096:]) - _db(resid[4096:]) > 30


def _voiced(n: int) -> np.ndarray:
    """Noise through two formant-like resonances (500 and 1500 Hz), bursty: as coloured as a voice, where the
    autocorrelation method's edge error shows."""
    x = RNG.standard_normal(n)
    for freq, radius in ((500, 0.98), (1500, 0.95)):
        a1, a2 = -2 * radius * np.cos(2 * np.pi * freq / ASR_RATE), radius * radius
        y = np.zeros(n)
        for i in range(2, n):
            y[i] = x[i] - a1 * y[i - 1] - a2 * y[i - 2]
        x = y
    envelope = np.repeat(RNG.uniform(0.1, 1.0, n // 1600 + 1), 1600)[:n]
    return np.asarray(0.05 * x / np.std(x) * envelope)


def test_refinement_fits_a_second_of_a_voice_to_the_exact_least_squares_path() -> None:
    """One second of the robot before the onset, in the middle of its speech: Levinson alone (the
    autocorrelation method) cancels ~16 dB of the echo that follows; two refinements with the far end's
    history reach the exact fit (~36 dB), which is what keeps a quiet person's first word."""
    rir = synthetic_rir(40, -6, 120)[:2048].astype(np.float64)
    far = _voiced(2 * ASR_RATE)
    near = np.convolve(far, rir)[:len(far)]
    a, b = ASR_RATE // 2, 3 * ASR_RATE // 2

    def held_out(h: np.ndarray) -> float:  # the 300 ms after the fit window
        following = near[b:b + 4800]
        return _db(following) - _db(following - np.convolve(far[b - 2047:b + 4800], h, mode="valid"))

    plain = held_out(fit_echo_path(far[a:b], near[a:b], 2048))
    refined = held_out(fit_echo_path(far[a:b], near[a:b], 2048, history=far[a - 2047:a], refinements=2))
    assert plain < 25 and refined > 30 and refined > plain + 10, (plain, refined)
    # No history given: the robot was silent before the window, and the fit is as good.
    quiet_before = far.copy()
    quiet_before[:a] = 0
    near_q = np.convolve(quiet_before, rir)[:len(far)]
    h = fit_echo_path(quiet_before[a:b], near_q[a:b], 2048, refinements=2)
    resid = near_q[b:b + 4800] - np.convolve(quiet_before[b - 2047:b + 4800], h, mode="valid")
    assert _db(near_q[b:b + 4800]) - _db(resid) > 30


def _room(onset_s: float = 3.0, pause_after_ms: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The robot talks (far), a person starts at `onset_s`, the robot goes quiet `pause_after_ms` later."""
    n = int((onset_s + 1.5) * ASR_RATE)
    far = _speechy(n)
    onset = int(onset_s * ASR_RATE)
    far[onset + pause_after_ms * ASR_RATE // 1000:] = 0
    echo = np.convolve(far, synthetic_rir(40, -6, 120))[:n].astype(np.float32)
    t = np.arange(n - onset) / ASR_RATE
    person = np.zeros(n, np.float32)
    person[onset:] = 0.02 * np.sin(2 * np.pi * 440 * t)
    return far, echo + person, person, onset


def _feed(repair: OverlapRepair, near: np.ndarray, far: np.ndarray, block: int = 160) -> None:
    for i in range(0, len(near), block):
        repair.add(i, near[i:i + block], far[i:i + block])


def test_the_overlap_is_put_back_and_the_rest_is_untouched() -> None:
    far, mic, person, onset = _room()
    repair = OverlapRepair()
    _feed(repair, mic, far)
    # What AEC3 does to the overlap: mutes it. Elsewhere the "cancelled" audio is just the person.
    cancelled = person.copy()
    cancelled[onset:onset + 1600] = 0.0
    start = onset - 8000
    out, done = repair.repair(cancelled[start:], start, onset)
    assert done is not None and done.fit_erle_db > 20
    assert done.start == onset - 200 * ASR_RATE // 1000  # the lead before the onset
    assert done.end > onset + 80 * ASR_RATE // 1000  # past the robot's pause: the echo's tail
    a, b = done.start - start, done.end - start
    o = onset - start
    err = out[o:b] - person[onset:done.end]
    assert _db(person[onset:done.end]) - _db(err) > 20  # the person is back, the echo 20 dB under it
    assert _db(out[o:o + 1600]) > _db(person[onset:onset + 1600]) - 1  # not muted
    np.testing.assert_array_equal(out[:a - 100], cancelled[start:done.start - 100])
    np.testing.assert_array_equal(out[b + 100:], cancelled[done.end + 100:])


def test_nothing_is_repaired_without_an_overlap_or_without_a_good_fit() -> None:
    far, mic, person, onset = _room()
    repair = OverlapRepair()
    _feed(repair, mic, far)
    late = onset + ASR_RATE  # the robot had been quiet for most of a second: nothing overlapped
    audio = person[late:]
    out, done = repair.repair(audio, late, late)
    assert done is None and out is audio
    # A microphone that has nothing to do with the far end (a fit that does not cancel): kept as it was.
    unrelated = OverlapRepair()
    _feed(unrelated, _speechy(len(far)), far)
    out, done = unrelated.repair(person[onset - 8000:], onset - 8000, onset)
    assert done is None


def test_too_little_robot_speech_before_the_onset_is_not_a_fit() -> None:
    far, mic, person, onset = _room(onset_s=0.3)
    repair = OverlapRepair()
    _feed(repair, mic, far)
    assert repair.repair(person, 0, onset)[1] is None


def test_a_restarted_stream_forgets_what_it_kept() -> None:
    far, mic, person, onset = _room()
    repair = OverlapRepair()
    _feed(repair, mic, far)
    repair.add(10 ** 7, mic[:1600], far[:1600])  # positions jump: a new stream
    assert repair.repair(person[onset - 8000:], 10 ** 7 - 6400, 10 ** 7)[1] is None


@pytest.mark.parametrize("block", [160, 512, 4096])
def test_any_block_size_keeps_the_ring_in_order(block: int) -> None:
    far, mic, _, _ = _room()
    repair = OverlapRepair(keep_s=1.0)
    _feed(repair, mic, far, block)
    near_kept, far_kept = repair._slice(len(mic) - 16000, len(mic))
    np.testing.assert_array_equal(near_kept, mic[-16000:])
    np.testing.assert_array_equal(far_kept, far[-16000:])

"""Transcribing a long utterance while the person speaks (`audio.incremental`): the settled pieces, the cut in a
gap between words, the transcript at the pause from the settled text and the last piece; and the real
listener on a long sentence played in real time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from audio.asr.base import AsrSegment, TranscribeOptions
from audio.asr.runner import Transcript
from audio.incremental import SettledPrefix, after_settled, join_texts
from audio.pcm import ASR_RATE, F32
from audio.runtime import Models, load_models
from audio.segmenter import Segmenter, SegmenterConfig
from tests.test_audio_listen import _settings, silence, speak, start_run, write_wav
from watus.bench.speech_workload import word_error_rate as wer

N = 512  # Silero's frame
OPTIONS = TranscribeOptions(fit_window=True)


def _transcript(text: str, seconds: float = 1.0, segments: list[AsrSegment] | None = None) -> Transcript:
    return Transcript(text=text, language="en", language_probability=1.0, duration_s=seconds,
                      segments=segments or [], submitted_ns=0, started_ns=0, finished_ns=1_000_000)


def _finished(text: str) -> Future[Transcript]:
    f: Future[Transcript] = Future()
    f.set_running_or_notify_cancel()
    f.set_result(_transcript(text))
    return f


class _Asr:
    """Records what is submitted; the test finishes each job by hand."""

    def __init__(self) -> None:
        self.jobs: list[tuple[F32, Future[Transcript]]] = []

    def __call__(self, audio: F32, options: TranscribeOptions) -> Future[Transcript]:
        f: Future[Transcript] = Future()
        self.jobs.append((audio, f))
        return f


def _feed(prefix: SettledPrefix, probs: list[float], audio: Callable[[int, int], F32], start: int = 0) -> int:
    pos = start
    for p in probs:
        pos += N
        prefix.frame(p, pos, audio, OPTIONS)
    return pos


def _ramp(a: int, b: int) -> F32:
    """'Audio' whose samples are their own stream positions: a slice shows exactly where it was cut."""
    return np.arange(a, b, dtype=np.float32)


def _one_piece(asr: _Asr, prefix: SettledPrefix, utterance: str) -> tuple[F32, Future[Transcript]]:
    """Start `utterance` and speak 1.28 s, a 128 ms gap between words, and a word: one piece submitted."""
    prefix.start(utterance, 0)
    _feed(prefix, [0.9] * 40 + [0.1] * 4 + [0.9], _ramp)
    return asr.jobs[-1]


def test_a_piece_is_cut_in_the_middle_of_a_gap_and_settles() -> None:
    asr = _Asr()
    prefix = SettledPrefix(asr, N, neg_threshold=0.35, gap_frames=3, min_piece_s=1.0)
    prefix.start("u1", 0)
    speech, gap = [0.9] * 40, [0.1] * 4  # 40 frames = 1.28 s, then a 128 ms gap between words
    pos = _feed(prefix, speech + gap, _ramp)
    assert asr.jobs == []  # nothing until speech comes back: the gap might be the end
    pos = _feed(prefix, [0.9], _ramp, pos)
    (piece, job), = asr.jobs
    cut = 44 * N - 2 * N  # the middle of the gap: 40 speech frames, then 2 of its 4 silent ones
    assert len(piece) == cut and piece[0] == 0 and piece[-1] == cut - 1
    job.set_running_or_notify_cancel()  # the ASR thread has started it
    assert prefix.split("u1", 0) is None and not job.cancelled()  # under way: the whole utterance goes as usual
    job.set_result(_transcript("Please go to the kitchen,"))
    assert prefix.split("u1", 0) == ("Please go to the kitchen,", cut)
    assert prefix.split("u2", 0) is None and prefix.split("u1", 160) is None  # another utterance


def test_short_pieces_short_gaps_and_barge_ins_give_nothing() -> None:
    asr = _Asr()
    prefix = SettledPrefix(asr, N, neg_threshold=0.35, gap_frames=3, min_piece_s=2.0)
    prefix.start("u1", 0)
    _feed(prefix, [0.9] * 40 + [0.1] * 4 + [0.9], _ramp)  # 1.3 s before the gap: under min_piece_s
    _feed(prefix, [0.9] * 40 + [0.1] * 2 + [0.9] * 20, _ramp, 45 * N)  # a 64 ms dip is inside a word
    assert asr.jobs == [] and prefix.split("u1", 0) is None
    prefix.start("u2", 0, live=False)  # a barge-in
    _feed(prefix, [0.9] * 80 + [0.1] * 4 + [0.9], _ramp)
    assert asr.jobs == []


def test_pieces_follow_one_another_and_a_new_utterance_forgets() -> None:
    asr = _Asr()
    prefix = SettledPrefix(asr, N, neg_threshold=0.35, gap_frames=3, min_piece_s=1.0)
    prefix.start("u1", 1000)
    pos = _feed(prefix, [0.9] * 40 + [0.1] * 4 + [0.9], lambda a, b: _ramp(a, b), 1000)
    first_audio, first = asr.jobs[0]
    first.set_running_or_notify_cancel()
    first.set_result(_transcript("Hello Watus,"))
    pos = _feed(prefix, [0.9] * 40 + [0.1] * 6 + [0.9], _ramp, pos)
    second_audio, second = asr.jobs[1]
    assert second_audio[0] == first_audio[-1] + 1  # the second piece starts where the first was cut
    second.set_running_or_notify_cancel()
    second.set_result(_transcript("I wanted to ask you"))
    text, cut = prefix.split("u1", 1000) or ("", 0)
    assert text == "Hello Watus, I wanted to ask you" and cut == second_audio[-1] + 1
    prefix.start("u2", pos)
    assert prefix.split("u1", 1000) is None and prefix.split("u2", pos) is None


def test_a_piece_not_started_at_the_pause_is_cancelled() -> None:
    asr = _Asr()
    prefix = SettledPrefix(asr, N, neg_threshold=0.35, gap_frames=3, min_piece_s=1.0)
    _, job = _one_piece(asr, prefix, "u1")
    assert len(asr.jobs) == 1

    def rest(text: str, cut: int) -> Future[Transcript]:
        raise AssertionError("nothing is settled")

    # Nothing settled, and the piece is not held up: the caller transcribes the whole utterance.
    assert prefix.at_pause("u1", 0, rest, lambda: Future()) is None and job.cancelled()


def _rest_and_whole() -> tuple[list[tuple[str, int]], list[int], Callable[..., Future[Transcript]],
                               Callable[[], Future[Transcript]]]:
    rests: list[tuple[str, int]] = []
    wholes: list[int] = []

    def rest(text: str, cut: int) -> Future[Transcript]:
        rests.append((text, cut))
        return _finished(f"{text} and the rest.")

    def whole() -> Future[Transcript]:
        wholes.append(1)
        return _finished("the whole utterance")

    return rests, wholes, rest, whole


def test_a_piece_under_way_at_the_pause_is_waited_for_then_only_the_rest_is_transcribed() -> None:
    asr = _Asr()
    prefix = SettledPrefix(asr, N, neg_threshold=0.35, gap_frames=3, min_piece_s=1.0)
    piece, job = _one_piece(asr, prefix, "u1")
    assert len(asr.jobs) == 1
    job.set_running_or_notify_cancel()  # the ASR thread is on it when the pause comes
    rests, wholes, rest, whole = _rest_and_whole()
    out = prefix.at_pause("u1", 0, rest, whole)
    assert out is not None and not out.done() and rests == []
    job.set_result(_transcript("Please go to the kitchen,"))
    assert out.result(timeout=1).text == "Please go to the kitchen, and the rest."
    assert rests == [("Please go to the kitchen,", len(piece))] and wholes == []
    # Settled before the pause: the rest at once.
    out2 = prefix.at_pause("u1", 0, rest, whole)
    assert out2 is not None and out2.result(timeout=1).text == "Please go to the kitchen, and the rest."


def test_a_piece_that_fails_under_way_leaves_the_whole_utterance_and_a_cancel_leaves_nothing() -> None:
    asr = _Asr()
    prefix = SettledPrefix(asr, N, neg_threshold=0.35, gap_frames=3, min_piece_s=1.0)
    rests, wholes, rest, whole = _rest_and_whole()
    _, job = _one_piece(asr, prefix, "u1")
    job.set_running_or_notify_cancel()
    out = prefix.at_pause("u1", 0, rest, whole)
    assert out is not None
    job.set_exception(RuntimeError("asr"))
    assert out.result(timeout=1).text == "the whole utterance" and rests == [] and wholes == [1]
    # The person went on before the piece was done: the transcript at that pause is not wanted.
    _, job = _one_piece(asr, prefix, "u2")
    job.set_running_or_notify_cancel()
    out = prefix.at_pause("u2", 0, rest, whole)
    assert out is not None and out.cancel()
    job.set_result(_transcript("Hello,"))
    assert rests == [] and wholes == [1]
    assert prefix.split("u2", 0) == ("Hello,", 44 * N - 2 * N)  # still settled, for the next pause


def test_the_transcript_at_the_pause_joins_the_settled_text_and_the_last_piece() -> None:
    tail: Future[Transcript] = Future()
    out = after_settled("Please go to the kitchen,", 2.5, tail)
    tail.set_running_or_notify_cancel()
    tail.set_result(_transcript(" and bring me  the cup.", 1.5, [AsrSegment(0, 0.1, 1.4, " and bring me the cup.")]))
    t = out.result(timeout=1)
    assert t.text == "Please go to the kitchen, and bring me the cup."
    assert t.duration_s == 4.0 and t.settled_s == 2.5
    assert (t.segments[0].start, t.segments[0].end) == (2.6, 3.9)  # in the utterance's time
    # Cancelling the transcript (speech resumed) cancels the last piece's job too.
    tail2: Future[Transcript] = Future()
    after_settled("x", 1.0, tail2).cancel()
    assert tail2.cancelled()
    failed: Future[Transcript] = Future()
    out3 = after_settled("x", 1.0, failed)
    failed.set_running_or_notify_cancel()
    failed.set_exception(RuntimeError("asr"))
    with pytest.raises(RuntimeError):
        out3.result(timeout=1)
    assert join_texts("a ", "", "  b  c") == "a b c"


def test_the_segmenter_gives_the_utterance_s_samples_by_stream_position() -> None:
    seg = Segmenter(SegmenterConfig(sample_rate=ASR_RATE, frame_samples=N, min_speech_ms=64, pre_speech_ms=64))
    pos = 0
    for i in range(20):
        frame = np.arange(pos, pos + N, dtype=np.float32)
        seg.push(frame, 0.1 if i < 5 else 0.9)
        pos += N
    assert seg.in_speech
    start = seg.audio_start
    part = seg.audio_between(start + 100, start + 1500)
    assert part[0] == start + 100 and part[-1] == start + 1499 and len(part) == 1400
    assert len(seg.audio_between(0, start)) == 0 and seg.audio_between(pos - 10, pos + 500)[-1] == pos - 1


# --- the real listener ---------------------------------------------------------------------------------------

LONG = ("Please go to the kitchen, find the red cup on the table next to the window, "
        "and bring it back to me here in the living room.")


@pytest_asyncio.fixture(scope="module")
async def models() -> AsyncIterator[Models]:
    loaded = await load_models(_settings())
    yield loaded
    loaded.close()


@pytest.mark.slow
@pytest.mark.parametrize("incremental", [True, False])
async def test_a_long_sentence_is_settled_while_it_is_spoken(models: Models, tmp_path: Path,
                                                             incremental: bool) -> None:
    """A 6 s sentence in real time: with the setting, its transcript says how much was transcribed while it
    was spoken, and it is as right as one pass over the whole (which is what it is without the setting)."""
    mic = write_wav(tmp_path / "long.wav", silence(1.0), speak(models, LONG), silence(1.5))
    run = await start_run(models, _settings(mic_backend="file", mic_file=mic, asr_incremental=incremental))
    try:
        final = await run.wait(lambda e: e.type == "transcript", 30)
    finally:
        await run.runtime.close()
    data = final.model_dump()
    assert wer(LONG, data["text"]) <= 0.1, data["text"]
    settled = data["stages_ms"].get("asr_settled")
    if incremental:
        assert data["speculative"] and settled is not None and 2000 <= settled <= 6000, data["stages_ms"]
    else:
        assert settled is None

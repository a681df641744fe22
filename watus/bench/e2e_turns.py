"""Which spoken question each turn answers, and which turns were cut off (pure logic).

The microphone plays the questions end to end, each followed by `gap_s` of silence, so every question owns
a slot of the stream: from the first sample of its file to the first of the next. An utterance belongs to
the question in whose slot it starts (`audio_start_s` of its transcript, a position in that same stream),
and a turn to the question of its utterance (the record's `turn_id` is the utterance's id).

A turn is **cut off** when the audio service ended it while the person was still speaking the question:
1. the question's slot holds more than one utterance with a transcript: every turn but the last ended at
   a pause inside the question, and the rest of the question became another turn (`ended at a pause`); or
2. the question's only transcript says clearly less than the question: fewer than `CUT_OFF_WORD_SHARE` of
   its words, or a strict prefix of them (`shorter than the question`; only where the question's words
   are known: piper's text, or a WAV's `.txt`).
The last turn of a question heard in several pieces is not itself cut off (it ended where the question
did), but the question is. Cut-off turns are left out of the latency figures: a turn that ended early
looks fast for the wrong reason.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watus.bench.e2e_events import Utterance
from watus.bench.e2e_questions import Question

#: A lone transcript with fewer than this share of the question's words counts as cut off.
CUT_OFF_WORD_SHARE = 0.7
#: After the last question's audio, how long a second piece of it may take to be heard and transcribed
#: (the model's longer wait for an incomplete turn, 1 s by default, plus ASR) before a pass counts as done.
SETTLE_AFTER_SPEECH_S = 3.0
ENDED_AT_PAUSE = "ended at a pause: the question went on in another turn"
SHORTER = "shorter than the question"


@dataclass(frozen=True)
class Slot:
    """One question's place in the microphone stream (s from its first sample)."""

    index: int
    start_s: float  # the file's first sample
    speech_start_s: float  # after the lead-in silence (the first file only)
    speech_end_s: float  # the file's last sample
    end_s: float  # the next file's first sample (after the gap)


def mic_slots(durations_s: Sequence[float], lead_in_s: float, gap_s: float) -> list[Slot]:
    """The slots of questions of these lengths, played as the file microphone plays its folder."""
    slots: list[Slot] = []
    at = 0.0
    for i, d in enumerate(durations_s):
        lead = lead_in_s if i == 0 else 0.0
        slots.append(Slot(i, at, at + lead, at + lead + d, at + lead + d + gap_s))
        at += lead + d + gap_s
    return slots


def slot_of(slots: Sequence[Slot], position_s: float) -> int | None:
    """The index of the slot holding this stream position, or None outside every slot."""
    i = bisect.bisect_right([s.start_s for s in slots], position_s) - 1
    return i if 0 <= i < len(slots) and position_s < slots[i].end_s else None


def words(text: str) -> list[str]:
    """Lower-case words without punctuation (as the word error rate counts them)."""
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def shorter_than_question(transcript: str, question: str | None) -> bool:
    """Whether a transcript says clearly less than the question (see the module docstring)."""
    if not question:
        return False
    t, q = words(transcript), words(question)
    if not q:
        return False
    return len(t) < CUT_OFF_WORD_SHARE * len(q) or (0 < len(t) < len(q) and t == q[:len(t)])


def _heard(utterances: dict[str, Utterance]) -> dict[str, Utterance]:
    return {k: u for k, u in utterances.items() if (u.transcript or "").strip() and u.start_s is not None}


def pass_progress(records: Sequence[dict[str, Any]], utterances: dict[str, Utterance], slots: Sequence[Slot],
                  stream_s: float | None) -> tuple[int, bool]:
    """(questions with a turn so far, whether the pass is over) while its microphone plays.

    Over: every utterance with a transcript has its turn record, and either every question was heard and
    `SETTLE_AFTER_SPEECH_S` have passed since the last one's audio (a second piece of it would have shown
    by then), or the whole stream has played. `stream_s` is the stream's position now (None: unknown).
    Without any transcript event (the benchmark's event stream failed), one record per question."""
    heard = _heard(utterances)
    if not heard:
        return min(len(records), len(slots)), len(records) >= len(slots)
    recorded = {r.get("turn_id") for r in records}
    covered = {slot_of(slots, u.start_s) for k, u in heard.items() if k in recorded and u.start_s is not None}
    covered.discard(None)
    if not slots or not all(k in recorded for k in heard):
        return len(covered), False
    if stream_s is None:
        return len(covered), len(covered) == len(slots)
    settled = stream_s >= slots[-1].speech_end_s + SETTLE_AFTER_SPEECH_S
    return len(covered), (len(covered) == len(slots) and settled) or stream_s >= slots[-1].end_s


def questions_spoken_over(utterances: dict[str, Utterance], slots: Sequence[Slot]) -> int:
    """Questions whose first utterance began while a reply was still playing (a barge-in, not a quiet turn);
    a later piece of a cut-off question that does is part of the cut-off, not counted here."""
    first: dict[int, Utterance] = {}
    for u in utterances.values():
        index = slot_of(slots, u.start_s) if u.start_s is not None else None
        if index is not None and (index not in first or (u.start_s or 0.0) < (first[index].start_s or 0.0)):
            first[index] = u
    return sum(u.during_playback for u in first.values())


def _speculative_ns(u: Utterance | None, transcript: str) -> int | None:
    """When the speculative transcript a preemptive reply started from was ready (same words), if any."""
    if u is None:
        return None
    same = [t for t, text in u.speculative if words(text) == words(transcript)]
    return same[-1] if same else None


def label_pass(records: Sequence[dict[str, Any]], utterances: dict[str, Utterance], slots: Sequence[Slot],
               questions: Sequence[Question], warmup: int) -> list[dict[str, Any]]:
    """One pass's turn records, each with the question it answers (`index`, `question`, `question_wer`,
    `paused`, `warmup`), `cut_off` (the reason, or None), and what the audio events said of its utterance.

    Records whose utterance the events do not place are matched to the questions in order when no record
    is placed (no events at all), else left without a question (`index` None, never cut off)."""
    from watus.bench.speech_workload import word_error_rate

    placed = {r.get("turn_id"): slot_of(slots, u.start_s) for r in records
              if (u := utterances.get(str(r.get("turn_id")))) is not None and u.start_s is not None}
    by_order = not any(v is not None for v in placed.values())
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        u = utterances.get(str(rec.get("turn_id")))
        index = (i if i < len(questions) else None) if by_order else placed.get(rec.get("turn_id"))
        q = questions[index] if index is not None and index < len(questions) else None
        transcript = str(rec.get("transcript") or "")
        turn = {**rec, "index": index, "question": q.label if q else None,
                "question_wer": round(word_error_rate(q.text, transcript), 3) if q and q.text else None,
                "paused": bool(q and q.paused), "warmup": index is not None and index < warmup, "cut_off": None,
                "speculative_ns": _speculative_ns(u, transcript)}
        if u is not None:
            turn["utterance"] = {"start_s": u.start_s, "end_s": u.audio_end_s, "turn_end": u.turn_end,
                                 "resumed": u.resumed, "speculative": len(u.speculative),
                                 "during_playback": u.during_playback}
        out.append(turn)
    groups: dict[int, list[dict[str, Any]]] = {}
    for turn in out:
        if turn["index"] is not None:
            groups.setdefault(turn["index"], []).append(turn)
    for index, group in groups.items():
        group.sort(key=lambda t: ((t.get("utterance") or {}).get("start_s") or 0.0,
                                  (t.get("t_ns") or {}).get("speech_end") or 0))
        for turn in group[:-1]:
            turn["cut_off"] = ENDED_AT_PAUSE
        if len(group) == 1 and shorter_than_question(str(group[0].get("transcript") or ""),
                                                     questions[index].text if index < len(questions) else None):
            group[0]["cut_off"] = SHORTER
    return out


def cut_off_questions(turns: Sequence[dict[str, Any]]) -> set[tuple[Any, Any]]:
    """(run, question index) of every question with a cut-off turn."""
    return {(t.get("run"), t.get("index")) for t in turns if t.get("cut_off") and t.get("index") is not None}


def preemption(turns: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(hits, misses) of preemptive replies in these records: confirmed ones, and those thrown away."""
    hits = sum(t.get("preemptive") == "hit" for t in turns)
    misses = sum(int(t.get("preemptive_misses") or 0) for t in turns)
    return hits, misses


def hit_rate(hits: int, misses: int) -> float | None:
    """hits / (hits + misses); None when no preemptive reply was started."""
    return hits / (hits + misses) if hits + misses else None

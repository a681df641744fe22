"""The turn log: one JSON line per spoken turn, the record of Watus' end-to-end latency.

Every line is written whole with one `write` on a file opened in append mode, flushed and fsynced, so
a crash of this or any other process loses at most the turn in progress and never leaves half a line
for the next writer. Rotation renames `turns.jsonl` to `turns.jsonl.1` (and so on) once it passes a
size, as logrotate would, so the log never fills the robot's disk.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The stages of a turn in the order they happen; each is a `time.monotonic_ns()` instant.
STAGES = ("speech_end", "asr_done", "scene_fetched", "llm_first_token", "first_sentence", "tts_first_audio",
          "playback_start", "playback_end")


@dataclass
class TurnRecord:
    """What one turn did and when (ns on the machine-wide monotonic clock)."""

    turn_id: str
    session_id: str
    transcript: str
    reply: str = ""
    language: str | None = None
    interrupted: bool = False
    #: Why the turn was cut short (barge-in, a new utterance, a stop from elsewhere).
    interrupt_reason: str | None = None
    error: str | None = None
    mode: str = "streaming"
    #: `voice` (heard), `text` (typed on the dashboard, handled as if spoken).
    source: str = "voice"
    #: `hit`: the reply was started from the speculative transcript at the first pause and confirmed by the
    #: final one (its stages before `speech_end` ran while the person was finishing); None: not preemptive.
    preemptive: str | None = None
    #: Preemptive replies started and thrown away for this utterance (the person went on, or the text changed).
    preemptive_misses: int = 0
    #: The utterance started while the robot was talking (it interrupted the reply before).
    barge_in: bool = False
    #: How the speech was for the robot: always, name, window (a follow-up), wake; or text.
    addressed: str | None = None
    #: Times speech paused this turn's playback: onset, stop_ms (onset → silent), outcome (barge_in, or the
    #: resume reason: no_words, not_speech, timeout, request), paused_ms.
    pauses: list[dict[str, Any]] = field(default_factory=list)
    #: Pauses that resumed: speech that was no words, or not for the robot.
    false_interruptions: int = 0
    scene: dict[str, Any] | None = None
    t_ns: dict[str, int] = field(default_factory=dict)
    #: Times the audio service measured itself (ASR ms, VAD tail ms), as it reported them.
    audio_ms: dict[str, float] = field(default_factory=dict)
    #: Capture time of the last speech frame (the true end of speech, before the VAD's silence tail).
    speech_end_captured_ns: int | None = None

    def mark(self, stage: str, at_ns: int) -> None:
        self.t_ns.setdefault(stage, at_ns)

    def stage_ms(self) -> dict[str, float]:
        """Milliseconds of each stage after end of speech (t0), and each step from the one before."""
        t0 = self.t_ns.get("speech_end")
        out: dict[str, float] = {}
        if t0 is None:
            return out
        previous = t0
        for stage in STAGES[1:]:
            at = self.t_ns.get(stage)
            if at is None:
                continue
            out[f"{stage}_ms"] = round((at - t0) / 1e6, 2)
            out[f"{stage}_step_ms"] = round((at - previous) / 1e6, 2)
            previous = at
        return out

    @property
    def e2e_ms(self) -> float | None:
        t0, t1 = self.t_ns.get("speech_end"), self.t_ns.get("playback_start")
        return None if t0 is None or t1 is None else round((t1 - t0) / 1e6, 2)

    @property
    def perceived_ms(self) -> float | None:
        """What a person waits: first audio played − the true end of speech (includes the VAD tail)."""
        t0, t1 = self.speech_end_captured_ns, self.t_ns.get("playback_start")
        return None if t0 is None or t1 is None else round((t1 - t0) / 1e6, 2)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["e2e_ms"] = self.e2e_ms
        d["perceived_ms"] = self.perceived_ms
        d["stages_ms"] = self.stage_ms()
        return d


class TurnLog:
    """Appends turn records to a JSONL file with size-based rotation; safe from several threads."""

    def __init__(self, path: Path, max_bytes: int = 10_000_000, backups: int = 5) -> None:
        self.path = path
        self._max = max_bytes
        self._backups = backups
        self._lock = threading.Lock()

    def write(self, record: TurnRecord | dict[str, Any]) -> None:
        data = record.as_json() if isinstance(record, TurnRecord) else record
        line = (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rotate_if_needed(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self._max:
            return
        if self._backups == 0:
            self.path.unlink()
            return
        for i in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        log.info("rotated turn log %s", self.path)

    def read(self) -> list[dict[str, Any]]:
        """All records of the current file (for `watus status` and tests); skips a torn last line."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

"""The turn log: one JSON line per spoken turn, the record of Watus' end-to-end latency.

Every line is written whole with one `write` on a file opened with O_APPEND, then fsynced, so a crash
of this or any other process loses at most the turn in progress. Half a line can still be left by a
write the kernel cut short (a full disk; a kill during a write of several pages; power loss): before
each write, under an advisory lock shared by every writer, a last line without its newline is moved to
`turns.jsonl.torn` (quarantined, with a warning) so that the next record is never glued to it, and a
short write of our own is truncated away at once. Rotation renames `turns.jsonl` to `turns.jsonl.1`
(and so on) once it passes a size, as logrotate would, so the log never fills the robot's disk.

A turn log that cannot be written (a full disk, a read-only or missing folder) never stops the voice
loop: `append` reports it once in the log when it starts failing and once when it recovers, and
`health()` says so for the agent's `/health`. Readers (`read_records`) skip a line that does not parse,
with a warning, instead of failing on it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
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
    #: The prompt prefix was prefilled while the person spoke: the warm-up's time to its first token (ms).
    warm_prefix_ms: float | None = None
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


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a turn log file; a line that does not parse is skipped with a warning.

    The last line may be in the middle of being written (or torn by a crash): skipped at DEBUG.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            unfinished = i == len(lines) - 1  # no newline after it: still being written, or torn
            log.log(logging.DEBUG if unfinished else logging.WARNING, "turn log %s: line %d skipped (%s): %.80r",
                    path, i + 1, e, line)
            continue
        if isinstance(record, dict):
            out.append(record)
        else:
            log.warning("turn log %s: line %d skipped (not a JSON object)", path, i + 1)
    return out


class TurnLog:
    """Appends turn records to a JSONL file with size-based rotation; safe from several threads."""

    def __init__(self, path: Path, max_bytes: int = 10_000_000, backups: int = 5) -> None:
        self.path = path
        self._max = max_bytes
        self._backups = backups
        self._lock = threading.Lock()
        self._error: str | None = None
        self._lost = 0  # records not written since the log last worked
        self._torn = 0  # torn lines quarantined by this process

    @property
    def quarantine(self) -> Path:
        """Where torn lines go (not a rotation name: those are `.1` … `.N`)."""
        return self.path.with_name(self.path.name + ".torn")

    def health(self) -> dict[str, Any]:
        """For `/health`: whether the last write (or the check at start) worked, and if not, why."""
        return {"ok": self._error is None, "path": str(self.path), "error": self._error, "lost": self._lost,
                "torn_lines": self._torn}

    def append(self, record: TurnRecord | dict[str, Any]) -> bool:
        """`write`, reporting a failure (once, until it works again) instead of raising; whether it worked."""
        try:
            self.write(record)
        except OSError as e:
            self._failed(e)
            return False
        if self._error is not None:
            log.info("turn log %s is writable again; %d record(s) were lost", self.path, self._lost)
            self._error, self._lost = None, 0
        return True

    def check(self) -> bool:
        """At start: can the file be opened for appending (folder present and writable)? Reported like a write.

        It cannot tell a full disk (only a write can); the first record then reports it.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            self._failed(e, lost=0)
            return False
        try:
            with self._lock:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._repair_tail(fd)
        except OSError as e:
            self._failed(e, lost=0)
            return False
        finally:
            os.close(fd)
        return True

    def _failed(self, e: OSError, lost: int = 1) -> None:
        self._lost += lost
        why = f"{type(e).__name__}: {e.strerror or e}" + (f" ({errno.errorcode.get(e.errno, e.errno)})"
                                                         if e.errno else "")
        if why != self._error:
            log.error("cannot write the turn log %s: %s; turns go on unrecorded until it works again "
                      "(see the agent's /health)", self.path, why)
        else:
            log.debug("turn log %s still failing: %s", self.path, why)
        self._error = why

    def write(self, record: TurnRecord | dict[str, Any]) -> None:
        """Append one record as one line; raises OSError if it could not be written whole."""
        data = record.as_json() if isinstance(record, TurnRecord) else record
        line = (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._open_locked()
            try:
                self._repair_tail(fd)
                if self._needs_rotation(fd, len(line)):
                    self._rotate()  # still holding the old file's lock: a writer waiting on it appends to `.1`
                    os.close(fd)
                    fd = self._open_locked()
                self._append(fd, line)
            finally:
                os.close(fd)

    def _open_locked(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # Between writers of the same file (the agent, `watus listen`): the repair must not race an append.
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _append(fd: int, line: bytes) -> None:
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode)
        done = 0
        try:
            while done < len(line):
                n = os.write(fd, line[done:])
                if n <= 0:
                    raise OSError(errno.EIO, f"short write ({done} of {len(line)} bytes)")
                done += n
            os.fsync(fd)
        except OSError:
            if done and regular:
                os.ftruncate(fd, st.st_size)  # no half line of ours is left for the next record
            raise

    def _repair_tail(self, fd: int) -> None:
        """Quarantine a last line without its newline (a torn write of an earlier crash)."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or os.pread(fd, 1, st.st_size - 1) == b"\n":
            return
        end = st.st_size
        start = end
        while start > 0:  # back to the newline before the torn line
            step = min(65536, start)
            chunk = os.pread(fd, step, start - step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                start = start - step + newline + 1
                break
            start -= step
        torn = os.pread(fd, end - start, start)
        with open(self.quarantine, "ab") as q:
            q.write(torn + b"\n")
            q.flush()
            os.fsync(q.fileno())
        os.ftruncate(fd, start)
        self._torn += 1
        log.warning("turn log %s: a torn last line (%d bytes, left by a crash or a full disk) was moved to %s",
                    self.path, len(torn), self.quarantine)

    def _needs_rotation(self, fd: int, incoming: int) -> bool:
        st = os.fstat(fd)
        return stat.S_ISREG(st.st_mode) and st.st_size > 0 and st.st_size + incoming > self._max

    def _rotate(self) -> None:
        if self._backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        log.info("rotated turn log %s", self.path)

    def read(self) -> list[dict[str, Any]]:
        """All records of the current file (for benches and tests); see `read_records`."""
        return read_records(self.path)

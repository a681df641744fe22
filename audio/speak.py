"""The speaking pipeline: a queue of text → TTS sentence by sentence → the speaker, with barge-in.

Three stages, each where it belongs: `say` validates and queues on the event loop; one synthesis task
feeds the TTS worker one `say` at a time, and every chunk (a sentence) goes to the playback queue the
moment it exists, so the first sentence plays while the next is synthesised; the playback thread
writes blocks of `speaker_block_ms` to the device, checking between blocks whether it was interrupted,
so a barge-in silences the speaker within one block. A generation counter makes everything queued
before an interruption stale at once, wherever it is (waiting, synthesising, or in the playback queue).

Events: `playback_started` (first block of a turn handed to the device), `playback_finished` (the
speaker went idle after that turn's audio played), `interrupted` (played ms, and how long stopping took).
A `say` with `hold` is synthesised at once but parked: nothing of its turn plays until `release(turn)`
(a preemptive reply, started before the person had surely finished), and a held turn does not count as
talking (the person may still be speaking: the half-duplex gate must stay open).
`pause` (the listener heard speech while the robot talked) silences the device at once and parks the
playback thread; `resume` plays on from the block that was cut (`playback_paused` / `playback_resumed`);
`stop` or a new interrupting say ends a pause for good. A paused turn still counts as talking, but not
as audible (the half-duplex gate opens while the device is silent).
The speaker obeys; it does not decide what a turn is. It stops by itself on speech only when the `say`
request playing asked it to (`barge_in`); the agent asks it not to, and sends `stop` when it decides.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from audio.devices.base import AudioSink
from audio.errors import QueueFullError
from audio.events import EventBus
from audio.metrics import AudioMetrics
from audio.pcm import F32, resample, to_float32
from audio.protocol import SayResponse, StopResponse
from audio.tts import VoiceRef
from audio.tts.runner import Chunk, TtsRunner
from watus.core.sentences import speakable_pieces
from watus.core.timing import new_turn_id
from watus.core.wire.audio import (
    Interrupted,
    PlaybackFinished,
    PlaybackPaused,
    PlaybackResumed,
    PlaybackStarted,
    TtsAudio,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    gen: int
    turn_id: str
    pieces: list[str]
    voice: VoiceRef
    speed: float
    received_ns: int
    final: bool = False
    sequential: bool = False
    barge_in: bool = True


@dataclass(frozen=True)
class _Audio:
    gen: int
    turn_id: str
    pcm: F32  # at the sink's rate; empty for the end-of-job marker
    end_of_job: bool
    received_ns: int
    first_of_job: bool
    final: bool = False  # on the end-of-job marker of a turn's last text


_WAKE = object()


class SpeakQueue:
    def __init__(self, tts: TtsRunner, sink: AudioSink, bus: EventBus, metrics: AudioMetrics, *,
                 block_ms: int, max_pieces: int, first_clause: bool = True) -> None:
        self._tts = tts
        self._sink = sink
        self._bus = bus
        self._metrics = metrics
        self._block = max(1, sink.sample_rate * block_ms // 1000)
        self._max_pieces = max_pieces
        self._first_clause = first_clause
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._play: queue.Queue[_Audio | object] = queue.Queue()
        self._lock = threading.Lock()
        self._gen = 0
        self._outstanding = 0  # jobs queued or synthesising or playing
        self._pieces = 0  # pieces not yet played, for the queue depth
        self._active_turn: str | None = None
        self._final_turns: set[str] = set()  # turns whose last text (`final`) has played
        self._played_samples = 0
        self._interrupt_req: tuple[str, int] | None = None
        self._barge_in = True  # of the latest say request: stop by itself when speech starts
        self._held: dict[str, int] = {}  # held turn -> its jobs not yet played
        self._parked: dict[str, list[_Audio]] = {}  # held turn -> its audio, in order
        self._last_audio_end = 0.0
        self._paused = False
        self._pauses = 0  # pauses so far: the playback thread replays the block a pause cut
        self._pause_ns = 0
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._thread: threading.Thread | None = None
        self._synth_task: asyncio.Task[None] | None = None
        self._closing = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._sink.open)
        self._thread = threading.Thread(target=self._playback, name="playback", daemon=True)
        self._thread.start()
        self._synth_task = asyncio.create_task(self._synthesis(), name="tts-synthesis")

    async def close(self) -> None:
        self.interrupt("shutdown")
        self._closing.set()
        self._play.put(_WAKE)
        if self._synth_task is not None:
            self._synth_task.cancel()
            await asyncio.gather(self._synth_task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        await asyncio.to_thread(self._sink.close)

    # --- state -------------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._pieces

    @property
    def sink_name(self) -> str:
        return self._sink.name

    @property
    def active_turn(self) -> str | None:
        return self._active_turn

    def talking(self, tail_ms: float = 0.0) -> bool:
        """Whether the robot is talking (or stopped less than `tail_ms` ago, for the echo tail)."""
        if self._active_turn is not None or self._outstanding > sum(self._held.values()):
            return True
        return tail_ms > 0 and (time.monotonic() - self._last_audio_end) * 1000 < tail_ms

    def audible(self, tail_ms: float = 0.0) -> bool:
        """Whether sound is coming out (talking and not paused), or stopped less than `tail_ms` ago."""
        if not self._paused and (self._active_turn is not None or self._outstanding > sum(self._held.values())):
            return True
        return tail_ms > 0 and (time.monotonic() - self._last_audio_end) * 1000 < tail_ms

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, onset_ns: int) -> bool:
        """Silence playback now, keeping its place (speech began at `onset_ns`); False if nothing is playing."""
        with self._lock:
            if self._active_turn is None or self._paused:
                return False
            self._paused = True
            self._pauses += 1
            self._unpaused.clear()
            turn = self._active_turn
        self._sink.abort()
        now = time.monotonic_ns()
        self._pause_ns = now
        self._last_audio_end = time.monotonic()
        self._metrics.pauses.labels("speech").inc()
        self._bus.publish_threadsafe(PlaybackPaused(t_ns=now, turn_id=turn, onset_captured_ns=onset_ns,
                                                    stop_ms=round((now - onset_ns) / 1e6, 1)))
        log.info("playback of turn %s paused: speech heard", turn)
        return True

    def resume(self, reason: str, text: str | None = None) -> bool:
        """Play on from where the pause cut (a false interruption); False if not paused."""
        with self._lock:
            if not self._paused:
                return False
            self._paused = False
            turn = self._active_turn
        now = time.monotonic_ns()
        self._unpaused.set()
        self._metrics.resumes.labels(reason).inc()
        self._bus.publish_threadsafe(PlaybackResumed(t_ns=now, turn_id=turn, reason=reason, text=text,
                                                     paused_ms=round((now - self._pause_ns) / 1e6, 1)))
        log.info("playback of turn %s resumed (%s)", turn, reason)
        return True

    def _set_pieces(self, delta: int) -> None:
        with self._lock:
            self._pieces = max(0, self._pieces + delta)
            self._metrics.queue_depth.set(self._pieces)

    # --- commands (event loop) -------------------------------------------------------------------------

    async def say(self, text: str, voice: VoiceRef, speed: float = 1.0, turn_id: str | None = None,
                  interrupt: bool = False, final: bool = False, sequential: bool = False,
                  barge_in: bool = True, hold: bool = False) -> SayResponse:
        received = time.monotonic_ns()
        if interrupt:
            self.interrupt("replaced")
        # Splitting the first sentence only pays when nothing plays before it; otherwise keep the prosody.
        pieces = speakable_pieces(text, self._first_clause and not self.talking() and not sequential)
        if self._pieces + len(pieces) > self._max_pieces:
            raise QueueFullError(f"The speaking queue is full ({self._pieces} sentences waiting, limit "
                                 f"{self._max_pieces}); try again later or POST /v1/stop.",
                                 headers={"Retry-After": "1"})
        turn = turn_id or new_turn_id()
        with self._lock:
            job = _Job(self._gen, turn, pieces, voice, speed, received, final, sequential, barge_in)
            self._outstanding += 1
            self._barge_in = barge_in
            if hold or turn in self._held:
                self._held[turn] = self._held.get(turn, 0) + 1
        self._set_pieces(len(pieces))
        self._jobs.put_nowait(job)
        return SayResponse(turn_id=turn, sentences=len(pieces), queue_depth=self._pieces)

    async def stop(self) -> StopResponse:
        cleared = self._pieces
        stopped = self.interrupt("stop")
        return StopResponse(stopped=stopped, cleared=cleared)

    def release(self, turn_id: str) -> tuple[bool, int]:
        """Play what is held for `turn_id` (and all of it that follows); (was held, chunks waiting)."""
        with self._lock:
            if turn_id not in self._held:
                return False, 0
            del self._held[turn_id]
            parked = self._parked.pop(turn_id, [])
            for item in parked:  # under the lock: nothing of the turn can overtake them
                self._play.put(item)
        log.info("turn %s released (%d chunks ready)", turn_id, len(parked))
        return True, len(parked)

    def _enqueue(self, item: _Audio) -> None:
        """To the playback thread, or parked while its turn is held (any thread)."""
        with self._lock:
            if item.turn_id in self._held and item.gen == self._gen:
                self._parked.setdefault(item.turn_id, []).append(item)
            else:
                self._play.put(item)

    def interrupt_on_speech(self) -> bool:
        """Speech started (listener thread): stop if talking and the say request allowed it. True if stopped."""
        return self._barge_in and self.talking() and self.interrupt("barge_in")

    def interrupt(self, reason: str) -> bool:
        """Stop playback within one block and drop everything queued; thread-safe. False if idle."""
        now = time.monotonic_ns()
        with self._lock:
            if self._active_turn is None and self._outstanding == 0:
                return False
            self._gen += 1
            self._outstanding = 0
            self._paused = False
            self._unpaused.set()
            self._held.clear()
            self._parked.clear()
            self._final_turns.clear()
            playing = self._active_turn is not None
            if playing:
                self._interrupt_req = (reason, now)
        self._set_pieces(-self._pieces)
        self._metrics.interruptions.labels(reason).inc()
        self._play.put(_WAKE)
        if not playing:  # only synthesis was under way: nothing to silence
            self._bus.publish_threadsafe(Interrupted(t_ns=now, reason=reason))
        return True

    # --- synthesis task (event loop → TTS worker) ----------------------------------------------------------

    async def _synthesis(self) -> None:
        while True:
            job = await self._jobs.get()
            if job.gen != self._gen:
                continue
            try:
                await asyncio.wrap_future(self._tts.submit(job.pieces, job.voice, job.speed, self._emitter(job),
                                                           self._canceller(job)))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failed synthesis drops that text; the queue goes on
                log.exception("synthesis for turn %s failed: %s", job.turn_id, e)
                self._enqueue(_Audio(job.gen, job.turn_id, np.zeros(0, np.float32), True, job.received_ns, False))

    def _canceller(self, job: _Job) -> Callable[[], bool]:
        return lambda: job.gen != self._gen

    def _emitter(self, job: _Job) -> Callable[[Chunk], None]:
        """Called in the TTS worker per chunk: resample to the device rate and queue for playback."""
        rate = self._sink.sample_rate
        first = True
        held: list[_Audio] = []  # a sequential job plays only once all of it is synthesised

        def emit(chunk: Chunk) -> None:
            nonlocal first
            if chunk.last:
                for item in held:
                    self._enqueue(item)
                self._enqueue(_Audio(job.gen, job.turn_id, np.zeros(0, np.float32), True, job.received_ns, False,
                                     job.final))
                return
            if first:
                now = time.monotonic_ns()
                self._metrics.tts_first_audio.labels("speaker").observe((now - job.received_ns) / 1e9)
                # The agent's turn trace records when the first audio of a turn exists (before playback).
                self._bus.publish_threadsafe(TtsAudio(t_ns=now, turn_id=job.turn_id,
                                                      first_audio_ms=round((now - job.received_ns) / 1e6, 1)))
            pcm = resample(to_float32(chunk.pcm), chunk.sample_rate, rate)
            item = _Audio(job.gen, job.turn_id, pcm, False, job.received_ns, first)
            if job.sequential:
                held.append(item)
            else:
                self._enqueue(item)
            first = False

        return emit

    # --- playback thread -----------------------------------------------------------------------------------

    def _playback(self) -> None:
        while not self._closing.is_set():
            try:
                item = self._play.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._play_item(item)
            except Exception:
                log.exception("playback failed; dropping the current turn")
                self.interrupt("device_error")

    def _play_item(self, item: _Audio | object) -> None:
        self._check_interrupt()
        if not isinstance(item, _Audio) or item.gen != self._gen:  # stale items are dropped here
            self._maybe_finished()
            return
        if self._active_turn is not None and self._active_turn != item.turn_id and len(item.pcm):
            self._finish_turn()
        pcm = item.pcm
        i, pauses = 0, self._pauses
        while i < len(pcm):
            if item.gen != self._gen:
                self._check_interrupt()
                return
            if self._pauses != pauses:  # a pause cut the block that was playing: play it again
                i, pauses = max(0, i - self._block), self._pauses
            if self._paused:
                self._wait_unpaused()
                continue
            start_ns = self._sink.write(pcm[i:i + self._block], item.turn_id)
            if self._pauses != pauses:  # the pause came while the device took this block: not heard
                pauses = self._pauses
                continue
            if self._active_turn is None:
                self._active_turn, self._played_samples = item.turn_id, 0
                self._bus.publish_threadsafe(PlaybackStarted(
                    t_ns=start_ns, turn_id=item.turn_id, first_audio_ms=round((start_ns - item.received_ns) / 1e6, 1)))
            if i == 0 and item.first_of_job:
                self._metrics.playback_first_audio.observe((start_ns - item.received_ns) / 1e9)
            self._played_samples += min(self._block, len(pcm) - i)
            i += self._block
        if item.end_of_job:
            with self._lock:
                if item.gen == self._gen:
                    self._outstanding = max(0, self._outstanding - 1)
                    if item.final:
                        self._final_turns.add(item.turn_id)
            if item.final and self._active_turn != item.turn_id and item.gen == self._gen:
                # The end-of-turn marker of a turn whose audio already played out (the speaker went idle
                # before the caller knew it had sent the last sentence): the turn is over now.
                self._final_turns.discard(item.turn_id)
                self._bus.publish_threadsafe(PlaybackFinished(t_ns=time.monotonic_ns(), turn_id=item.turn_id,
                                                              played_ms=0.0, final=True))
        elif len(pcm):
            self._set_pieces(-1)
        self._maybe_finished()

    def _wait_unpaused(self) -> None:
        while not self._unpaused.wait(0.05):
            if self._closing.is_set() or self._interrupt_req is not None:
                return

    def _check_interrupt(self) -> bool:
        """If an interruption is pending: silence the device, report it, and say so."""
        with self._lock:
            req, self._interrupt_req = self._interrupt_req, None
        if req is None:
            return False
        reason, requested = req
        self._sink.abort()
        now = time.monotonic_ns()
        turn, played = self._active_turn, self._played_samples * 1000 / self._sink.sample_rate
        self._active_turn = None
        self._last_audio_end = time.monotonic()
        self._bus.publish_threadsafe(Interrupted(t_ns=now, turn_id=turn, reason=reason, played_ms=round(played, 1),
                                                 stop_ms=round((now - requested) / 1e6, 1), requested_ns=requested))
        log.info("playback of turn %s interrupted (%s) after %.0f ms", turn, reason, played)
        return True

    def _maybe_finished(self) -> None:
        if self._active_turn is None or not self._play.empty() or self._outstanding > 0:
            return
        # Let what the device buffered play out; an interruption meanwhile wins.
        deadline = time.monotonic() + self._sink.pending_s()
        while time.monotonic() < deadline or self._paused:
            if self._interrupt_req is not None:
                self._check_interrupt()
                return
            if self._paused:  # the last block was cut: the turn ends when the pause does
                self._wait_unpaused()
                continue
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        if self._play.empty() and self._outstanding == 0:
            self._finish_turn()

    def _finish_turn(self) -> None:
        turn, played = self._active_turn, self._played_samples * 1000 / self._sink.sample_rate
        self._active_turn = None
        self._last_audio_end = time.monotonic()
        final = turn in self._final_turns
        self._final_turns.discard(turn or "")
        self._bus.publish_threadsafe(PlaybackFinished(t_ns=time.monotonic_ns(), turn_id=turn,
                                                      played_ms=round(played, 1), final=final))

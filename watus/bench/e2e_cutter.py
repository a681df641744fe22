"""The e2e benchmark's playback cutter: it follows the audio service's typed events and stops each reply's
playback a few seconds in, so a question need not wait out the 40 s a long reply can take.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import httpx

from watus.bench.e2e_events import UtteranceLog
from watus.core.wire import WireError
from watus.core.wire.audio import AudioEvent, Interrupted, PlaybackFinished, PlaybackStarted, SpeechStarted, parse_event

log = logging.getLogger(__name__)


class PlaybackCutter:
    """Stops the speaker `after_s` after a reply started playing (0: never), from the audio event stream.

    A reply of the CPU default can play for 40 s; the microphone file's gap would have to be longer than
    the longest reply, or the next question barges in. Playback costs no CPU, and e2e (t1 − t0) is measured
    before the cut, so the cut changes no figure of the turn, only how long the run takes. The agent sees
    the cut as an interruption and writes the record at once; the benchmark marks it `cut_by_bench`.

    The cut waits until the LLM server generates nothing (its `watus_llm_requests_running` gauge): a turn
    cut while its reply is still streaming loses the reply and stays out of the conversation memory, and
    the next question would then meet a shorter prompt in one mode than in the other.

    A question that starts while a reply still plays (`speech_started` with `during_playback`, or with
    `barge_in` where the audio service stopped the playback itself) ends that reply without the cutter:
    the agent barges in. Those are counted in `spoken_over`, since the run then measured barge-ins rather
    than the quiet turns it was set up for (the gap was too short for the cut). Events that do not match
    the contract are logged and counted by type in `invalid`, never guessed at. Every valid event also goes
    to `utterances` (`UtteranceLog`), so the benchmark holds one event stream per audio service.
    """

    def __init__(self, audio_url: str, after_s: float, llm_url: str | None = None) -> None:
        self._url = audio_url
        self._after = after_s
        self._llm_metrics = f"{llm_url}/metrics" if llm_url else None
        self._lock = threading.Lock()
        self._started: set[str] = set()
        self._over: set[str] = set()  # turns whose reply finished playing or was interrupted
        self._timers: list[threading.Timer] = []
        self._closed = threading.Event()
        self.cut: set[str] = set()
        self.spoken_over = 0
        self.invalid: Counter[str] = Counter()
        self.utterances = UtteranceLog()
        self._thread = threading.Thread(target=self._listen, name="e2e-playback-cutter", daemon=True)

    def __enter__(self) -> PlaybackCutter:
        self._thread.start()  # also without a cut (0 s): the questions spoken over a reply are still counted
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        with self._lock:
            for timer in self._timers:
                timer.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)  # exits once the audio service (stopped first) ends the stream

    def _listen(self) -> None:
        # Started before the audio service is up: connect until it answers, and again if the stream drops.
        while not self._closed.is_set():
            try:
                with httpx.Client(trust_env=False, timeout=httpx.Timeout(5.0, read=None)) as http, \
                        http.stream("GET", self._url + "/v1/events") as r:
                    for line in r.iter_lines():
                        if self._closed.is_set():
                            return
                        if line.startswith("data:") and line[5:].strip() != "[DONE]":
                            self.feed(line[5:].strip())
            except httpx.HTTPError as e:
                log.debug("playback cutter: audio events unavailable (%s)", e)
            self._closed.wait(0.2)

    def feed(self, data: str) -> None:
        """One SSE `data:` payload of the audio service: validated, then followed (or counted as invalid)."""
        try:
            event = parse_event(data)
        except WireError as e:
            log.error("playback cutter: audio event skipped: %s (%.120s)", e, data)
            with self._lock:
                self.invalid[e.kind] += 1
            return
        self.on_event(event)

    def on_event(self, event: AudioEvent) -> None:
        """Follow one audio event: start a reply's timer, or note that its playback is over."""
        self.utterances.on_event(event)
        with self._lock:
            if isinstance(event, PlaybackStarted):
                if self._after > 0 and event.turn_id not in self._started:
                    self._started.add(event.turn_id)
                    timer = threading.Timer(self._after, self._cut, (event.turn_id,))
                    timer.daemon = True
                    self._timers.append(timer)
                    timer.start()
            elif isinstance(event, SpeechStarted) and (event.during_playback or event.barge_in):
                # The agent stops what plays (or the audio service already has): no reply left to cut.
                self.spoken_over += 1
                self._over.update(self._started)
            elif isinstance(event, (Interrupted, PlaybackFinished)) and event.turn_id is not None and (
                    isinstance(event, Interrupted) or event.final):
                self._over.add(event.turn_id)  # any reason: stop, replaced, barge_in, device_error, shutdown

    def _llm_busy(self) -> bool:
        """Whether the LLM server reports a request generating (or does not answer); False where it has no
        such gauge."""
        if self._llm_metrics is None:
            return False
        try:
            text = httpx.get(self._llm_metrics, timeout=5.0, trust_env=False).text
        except httpx.HTTPError:
            return True  # a server too busy to answer is busy
        for line in text.splitlines():
            if line.startswith("watus_llm_requests_running"):
                return float(line.split()[-1]) > 0
        self._llm_metrics = None  # another server (vLLM, Ollama, ...): cut on time alone
        return False

    def _cut(self, turn: str) -> None:
        idle_checks = 0
        while idle_checks < 2:  # idle twice, 0.3 s apart: the agent has sent the reply's last sentence
            with self._lock:
                if self._closed.is_set() or turn in self._over:
                    return
            idle_checks = 0 if self._llm_busy() else idle_checks + 1
            self._closed.wait(0.3)
        try:
            r = httpx.post(self._url + "/v1/stop", timeout=5.0, trust_env=False)
            r.raise_for_status()
            stopped = bool(r.json().get("stopped"))
        except (httpx.HTTPError, ValueError) as e:
            log.warning("playback cutter: could not stop turn %s: %s", turn, e)
            return
        if stopped:  # False: something else (a barge-in) had ended the turn's playback already
            with self._lock:
                self.cut.add(turn)

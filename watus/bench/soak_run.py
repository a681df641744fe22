"""Driving `watus bench soak`: all four real processes, spoken questions back to back for N minutes.

The processes are those of the robot, each started as systemd would (`python -m trt_server`, `vision`,
`watus`, `audio`) on free loopback ports: vision watches a video file (looped), the audio service's
microphone is a folder of spoken questions played in real time and in a loop (so the folder stays small
however long the soak runs, and the audio service holds the same few seconds of audio all along), and the
speaker is the null sink paced in real time. The e2e benchmark's playback cutter stops each reply a few
seconds in (once the LLM is idle), so questions follow each other every `gap_s` without a barge-in.

While the questions play, `ProcSampler` reads each process tree's RSS, fds and threads; at the end the
questions asked are counted from the microphone stream's position and matched to the agent's turn records
through the audio events (`soak_verdict`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from watus.agent.turnlog import TurnLog
from watus.bench.e2e_cutter import PlaybackCutter
from watus.bench.e2e_questions import Question, parse_question
from watus.bench.e2e_turns import Slot, mic_slots
from watus.bench.e2e_workload import make_mic_folder
from watus.bench.procs import free_port, service, wait_agent_connected
from watus.bench.soak_sampler import MachineSample, ProcSampler
from watus.bench.soak_verdict import (
    FAIL,
    PASS,
    ProcSample,
    ProcVerdict,
    Thresholds,
    TurnVerdict,
    judge_process,
    judge_turns,
    period_s,
    questions_asked,
)

log = logging.getLogger(__name__)

#: (label, done, total) for the command's progress bar.
ProgressFn = Callable[[str, int, int], None]
#: The processes of a soak, in the order they start.
PROCESSES = ("llm", "vision", "agent", "audio")
#: Plain questions (no mid-sentence pause: a soak counts turns, it does not hunt cut-offs).
DEFAULT_QUESTIONS = ("What do you see?", "How many people are here?", "Hello Watus, how are you?",
                     "What is your name?", "Is there a bus in front of you?", "What colour is the sky today?")


class SoakError(RuntimeError):
    """A process of the soak could not be started, or the run could not be set up."""


@dataclass
class SoakConfig:
    """What `watus bench soak` runs (the defaults are the command's)."""

    minutes: float = 30.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    interval_s: float = 5.0  # between samples
    #: Question specs (text spoken by piper, or WAV paths), played in this order, in a loop.
    questions: tuple[str, ...] = DEFAULT_QUESTIONS
    video: Path | None = None  # None: the synthetic demo video, written into the output folder
    vision_fps: float = 2.0
    lead_in_s: float = 6.0  # silence before the first question of each loop: the agent subscribes
    gap_s: float = 14.0  # silence after each question: the reply is thought, started and cut in it
    playback_s: float = 3.0  # seconds of each reply played before the cutter stops it
    max_tokens: int | None = 48  # the agent's reply limit; None: its own setting
    startup_timeout_s: float = 240.0
    #: After the end, how long the last questions' records may take (an LLM turn on a starved CPU).
    settle_timeout_s: float = 120.0

    def spoken(self) -> list[Question]:
        return [parse_question(q) for q in self.questions]


@dataclass
class SoakResult:
    config: SoakConfig
    machine: dict[str, str]
    started: str
    stamp: str = ""  # in the names of the run's files
    duration_s: float = 0.0  # of sampling
    samples: dict[str, list[ProcSample]] = field(default_factory=dict)
    machine_samples: list[MachineSample] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    procs: list[ProcVerdict] = field(default_factory=list)
    turns: TurnVerdict | None = None
    records: list[dict[str, Any]] = field(default_factory=list)  # the agent's turn records, as written
    slots: list[Slot] = field(default_factory=list)  # one loop of the microphone folder
    errors: list[str] = field(default_factory=list)
    llm_model: str | None = None
    csv_path: Path | None = None
    json_path: Path | None = None
    chart_path: Path | None = None

    @property
    def verdict(self) -> str:
        ok = (self.turns is not None and self.turns.verdict == PASS and len(self.procs) == len(PROCESSES)
              and all(p.verdict == PASS for p in self.procs) and not self.errors)
        return PASS if ok else FAIL


def _model_name(llm_url: str) -> str | None:
    try:
        return str(httpx.get(llm_url + "/v1/models", timeout=5.0, trust_env=False).json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return None


def _envs(cfg: SoakConfig, urls: dict[str, str], mic: Path, video: Path, turn_log: Path) -> dict[str, dict[str, str]]:
    port = {name: url.rsplit(":", 1)[1] for name, url in urls.items()}
    agent = {"WATUS_AGENT_HOST": "127.0.0.1", "WATUS_AGENT_PORT": port["agent"], "WATUS_AGENT_LLM_URL": urls["llm"],
             "WATUS_AGENT_VISION_URL": urls["vision"], "WATUS_AGENT_AUDIO_URL": urls["audio"],
             "WATUS_AGENT_TURN_LOG": str(turn_log), "WATUS_AGENT_TEMPERATURE": "0"}
    if cfg.max_tokens is not None:
        agent["WATUS_AGENT_MAX_TOKENS"] = str(cfg.max_tokens)
    return {
        "llm": {"WATUS_LLM_HOST": "127.0.0.1", "WATUS_LLM_PORT": port["llm"], "WATUS_LLM_API_KEY": ""},
        "vision": {"WATUS_VISION_HOST": "127.0.0.1", "WATUS_VISION_PORT": port["vision"],
                   "WATUS_VISION_SOURCE": str(video), "WATUS_VISION_LOOP": "true",
                   "WATUS_VISION_SOURCE_FPS": str(cfg.vision_fps)},
        "agent": agent,
        "audio": {"WATUS_AUDIO_HOST": "127.0.0.1", "WATUS_AUDIO_PORT": port["audio"],
                  "WATUS_AUDIO_MIC_BACKEND": "file", "WATUS_AUDIO_MIC_FILE": str(mic),
                  "WATUS_AUDIO_MIC_GAP_S": str(cfg.gap_s), "WATUS_AUDIO_MIC_LOOP": "true",
                  "WATUS_AUDIO_SPEAKER_BACKEND": "null"},
    }


def _settle(turn_log: Path, cutter: PlaybackCutter, slots: list[Slot], asked: int, deadline: float
            ) -> list[dict[str, Any]]:
    """The turn records, once every asked question has one (or at `deadline`)."""
    reader = TurnLog(turn_log)
    while True:
        records = reader.read()
        starts = {k: u.start_s for k, u in cutter.utterances.snapshot().items() if u.start_s is not None}
        verdict = judge_turns(records, starts, slots, asked)
        if verdict.lost == 0 or time.monotonic() >= deadline:
            return records
        time.sleep(0.5)


def _soak(cfg: SoakConfig, result: SoakResult, stack: ExitStack, out_dir: Path, stamp: str,
          say: ProgressFn) -> None:
    """Start the processes, play the questions for `cfg.minutes`, sample, and judge (into `result`)."""
    from vision.samples import write_demo_video

    say("speaking the questions (piper)", 0, 1)
    folder = out_dir / f"soak-{stamp}-wavs"
    durations = make_mic_folder(folder, cfg.spoken(), cfg.lead_in_s)
    slots = mic_slots(durations, cfg.lead_in_s, cfg.gap_s)
    result.slots = slots
    video = cfg.video or write_demo_video(out_dir / f"soak-{stamp}-camera.avi", frames_per_part=30)
    say("speaking the questions (piper)", 1, 1)
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in PROCESSES}
    turn_log = out_dir / f"soak-{stamp}-turns.jsonl"
    envs = _envs(cfg, urls, folder / "mic", video, turn_log)
    modules = {"llm": "trt_server", "vision": "vision", "agent": "watus", "audio": "audio"}
    procs = {}
    cutter = PlaybackCutter(urls["audio"], cfg.playback_s, urls["llm"])
    for name in PROCESSES:
        say(f"starting {name}", 0, 1)
        if name == "audio":
            # Entered before the audio service, so it leaves after it: the event stream has ended by then.
            stack.enter_context(cutter)
        procs[name] = stack.enter_context(service(modules[name], envs[name], urls[name],
                                                  out_dir / f"soak-{stamp}-{name}.log", cfg.startup_timeout_s,
                                                  SoakError))
        say(f"starting {name}", 1, 1)
    audio_up_ns = time.monotonic_ns()
    result.pids = {name: p.pid for name, p in procs.items()}
    result.llm_model = _model_name(urls["llm"])
    if not wait_agent_connected(urls["agent"], time.monotonic() + cfg.lead_in_s * 0.75):
        # Not an error by itself: if the first question is lost for it, the turn verdict says so.
        log.warning("soak: the agent was not subscribed to the audio events in time; the first question may be lost")
    total_s = cfg.minutes * 60.0
    sampler = stack.enter_context(ProcSampler(result.pids, cfg.interval_s))
    while (elapsed := sampler.elapsed_s()) < total_s:
        say("soak (s)", int(elapsed), int(total_s))
        dead = [n for n, p in procs.items() if p.poll() is not None]
        if dead:
            result.errors.append(f"{', '.join(dead)} exited after {elapsed:.0f} s")
            break
        time.sleep(min(1.0, total_s - elapsed))
    sampler.sample_once()  # the last reading at the very end, so the last window ends where the soak did
    sampler.stop()
    end_ns = time.monotonic_ns()
    say("soak (s)", int(total_s), int(total_s))
    result.duration_s = sampler.elapsed_s()
    result.samples, result.machine_samples = sampler.snapshot(), list(sampler.machine)
    stream_start = cutter.utterances.stream_start_ns or audio_up_ns
    asked = questions_asked(slots, (end_ns - stream_start) / 1e9)
    say("last turns", 0, 1)
    result.records = _settle(turn_log, cutter, slots, asked, time.monotonic() + cfg.settle_timeout_s)
    say("last turns", 1, 1)
    starts = {k: u.start_s for k, u in cutter.utterances.snapshot().items() if u.start_s is not None}
    result.turns = judge_turns(result.records, starts, slots, asked, frozenset(cutter.cut))
    gone = set(sampler.exited()) | {n for n, p in procs.items() if p.poll() is not None}
    result.procs = [judge_process(name, result.samples.get(name, []), cfg.thresholds, result.duration_s,
                                  exited=name in gone) for name in PROCESSES]
    if cutter.spoken_over:
        log.warning("soak: %d question(s) began while a reply still played (barge-ins)", cutter.spoken_over)
    if cutter.invalid:
        result.errors.append("audio events that do not match the contract: "
                             + ", ".join(f"{kind} ×{n}" for kind, n in sorted(cutter.invalid.items())))
    log.info("soak: %d questions asked in %.0f s (%.0f s per loop of %d)", asked, result.duration_s,
             period_s(slots), len(slots))


def run_soak(cfg: SoakConfig, out_dir: Path, progress: ProgressFn | None = None) -> SoakResult:
    """Run the soak and judge it; the writers (`soak_report`) turn the result into files. Raises `SoakError`
    when a process does not start."""
    from watus.bench import machine_info

    if cfg.minutes * 60.0 <= cfg.thresholds.warmup_s:
        raise SoakError(f"a soak of {cfg.minutes:g} min ends inside its warm-up of {cfg.thresholds.warmup_s:g} s")
    say: ProgressFn = progress or (lambda _label, _done, _total: None)
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = SoakResult(cfg, machine_info(("xllamacpp", "faster-whisper", "piper-tts", "onnxruntime")),
                        started.isoformat(timespec="seconds"), stamp)
    with ExitStack() as stack:
        _soak(cfg, result, stack, out_dir, stamp, say)
    return result

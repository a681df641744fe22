"""Driving the e2e benchmark: the processes, one pass of one pipeline mode, and the whole run.

Each pass of each mode gets a fresh agent (its pipeline from `MODE_ENV`, its own turn log, an empty
conversation) and a fresh audio service playing the same microphone folder; the LLM server and vision run
once for all, so the modes differ in the pipeline only, and passes alternate the modes' order so a load
that drifts weighs on all alike. The agent starts first, because it must be subscribed to the audio events
before the first question plays (the first WAV begins with `lead_in_s` of silence for that). The agent's
turn log is the measurement: every stage of every turn on the machine-wide monotonic clock; the audio
events (followed by the playback cutter) place each turn's utterance in the microphone stream, so a
question heard as two turns shows as a cut-off (`e2e_turns`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil

from audio.turn_model import RECOMMENDED_PREEMPTIVE_UNSURE_SILENCE_MS
from watus.agent.turnlog import TurnLog
from watus.bench.e2e_chart import waterfall_chart
from watus.bench.e2e_cutter import PlaybackCutter
from watus.bench.e2e_events import UtteranceLog
from watus.bench.e2e_questions import Question, parse_question
from watus.bench.e2e_report import KNOWN_MODES, E2EConfig, E2EResult, ModeTelemetry
from watus.bench.e2e_turns import Slot, label_pass, mic_slots, pass_progress, questions_spoken_over
from watus.bench.e2e_workload import WARMUP_QUESTION, make_mic_folder, vision_folder
from watus.bench.e2e_writers import chart_link, render_markdown, write_json_summary, write_jsonl
from watus.bench.procs import free_port as _free_port
from watus.bench.procs import own_cpu_seconds, service, wait_agent_connected
from watus.core.telemetry import TelemetrySampler

log = logging.getLogger(__name__)

#: Above this share of the machine's CPU used by other processes during a mode, its figures are flagged.
NOISY_OTHER_CPU_PERCENT = 10.0
#: (label, done, total): a phase or a count of turns, for the command's progress bars.
ProgressFn = Callable[[str, int, int], None]
#: What each mode sets in the agent's and the audio service's environment (everything else is shared).
MODE_ENV: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "sequential": ({"WATUS_AGENT_PIPELINE": "sequential", "WATUS_AGENT_PREEMPTIVE": "false"},
                   {"WATUS_AUDIO_TURN_END": "silence"}),
    "streaming": ({"WATUS_AGENT_PIPELINE": "streaming", "WATUS_AGENT_PREEMPTIVE": "false"},
                  {"WATUS_AUDIO_TURN_END": "silence"}),
    "preemptive": ({"WATUS_AGENT_PIPELINE": "streaming", "WATUS_AGENT_PREEMPTIVE": "true"},
                   {"WATUS_AUDIO_TURN_END": "model",
                    "WATUS_AUDIO_TURN_UNSURE_SILENCE_MS": str(RECOMMENDED_PREEMPTIVE_UNSURE_SILENCE_MS)}),
    "preemptive-tail": ({"WATUS_AGENT_PIPELINE": "streaming", "WATUS_AGENT_PREEMPTIVE": "true"},
                        {"WATUS_AUDIO_TURN_END": "silence"}),
}
#: Set in every mode's audio service: the figures in docs/benchmarks.md were measured with the fitted window.
COMMON_AUDIO_ENV = {"WATUS_AUDIO_ASR_FIT_WINDOW": "true"}


def audio_settings(cfg: E2EConfig, mode: str) -> dict[str, str]:
    """What the audio service of `mode` is set to beyond its place in the benchmark (mic, speaker, port)."""
    env = {**COMMON_AUDIO_ENV, **MODE_ENV[mode][1]}
    if cfg.asr_incremental is not None:
        env["WATUS_AUDIO_ASR_INCREMENTAL"] = str(cfg.asr_incremental).lower()
    return env


class E2EBenchError(RuntimeError):
    """A process of the benchmark could not be started or the run could not be set up."""


# --- one mode ---------------------------------------------------------------------------------------------------


def _collect(turn_log: Path, utterances: UtteranceLog, slots: list[Slot], deadline: float, label: str,
             progress: ProgressFn) -> list[dict[str, Any]]:
    """The pass's turn records, once every question has its turns (`e2e_turns.pass_progress`) or at `deadline`."""
    reader = TurnLog(turn_log)
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = reader.read()
        start = utterances.stream_start_ns
        stream_s = None if start is None else (time.monotonic_ns() - start) / 1e9
        done, over = pass_progress(records, utterances.snapshot(), slots, stream_s)
        progress(label, done, len(slots))
        if over:
            break
        time.sleep(0.25)
    return records


@dataclass
class _Session:
    """What every mode of one benchmark run shares: where things go, the microphone, the shared services."""

    cfg: E2EConfig
    out_dir: Path
    stamp: str
    mic: Path
    timeline_s: float  # seconds the microphone folder plays
    sequence: list[Question]  # what the microphone says in a pass, warm-up first
    slots: list[Slot]  # where each question lies in the microphone stream
    llm_url: str
    vision_url: str
    result: E2EResult
    progress: ProgressFn


def run_mode(mode: str, run: int, ses: _Session) -> None:
    """One pass of one pipeline mode: a fresh agent, then a fresh audio service playing the microphone
    folder, until every question has a turn record."""
    cfg, result = ses.cfg, ses.result
    agent_port, audio_port = _free_port(), _free_port()
    agent_url, audio_url = f"http://127.0.0.1:{agent_port}", f"http://127.0.0.1:{audio_port}"
    name = f"e2e-{ses.stamp}-{mode}-run{run}"
    turn_log = ses.out_dir / f"{name}-turns.jsonl"
    agent_env = {"WATUS_AGENT_HOST": "127.0.0.1", "WATUS_AGENT_PORT": str(agent_port),
                 "WATUS_AGENT_LLM_URL": ses.llm_url, "WATUS_AGENT_VISION_URL": ses.vision_url,
                 "WATUS_AGENT_AUDIO_URL": audio_url, "WATUS_AGENT_TURN_LOG": str(turn_log),
                 "WATUS_AGENT_TEMPERATURE": "0", "WATUS_AGENT_API_KEY": "",  # loopback, and the cutter sends none
                 **MODE_ENV[mode][0]}
    if cfg.max_tokens is not None:
        agent_env["WATUS_AGENT_MAX_TOKENS"] = str(cfg.max_tokens)
    audio_env = {"WATUS_AUDIO_HOST": "127.0.0.1", "WATUS_AUDIO_PORT": str(audio_port),
                 "WATUS_AUDIO_MIC_BACKEND": "file", "WATUS_AUDIO_MIC_FILE": str(ses.mic),
                 "WATUS_AUDIO_MIC_GAP_S": str(cfg.gap_s), "WATUS_AUDIO_MIC_LOOP": "false",
                 "WATUS_AUDIO_SPEAKER_BACKEND": "null", **audio_settings(cfg, mode)}
    label = f"{mode}, run {run}/{cfg.runs}"
    with ExitStack() as stack:
        ses.progress(f"{label}: starting agent + audio", 0, 1)
        stack.enter_context(service("watus", agent_env, agent_url, ses.out_dir / f"{name}-agent.log",
                                    cfg.startup_timeout_s, E2EBenchError))
        # Entered before the audio service, so it leaves after it: the event stream has ended by then.
        cutter = stack.enter_context(PlaybackCutter(audio_url, cfg.playback_s, ses.llm_url))
        stack.enter_context(service("audio", audio_env, audio_url, ses.out_dir / f"{name}-audio.log",
                                    cfg.startup_timeout_s, E2EBenchError))
        started = time.monotonic()
        ses.progress(f"{label}: starting agent + audio", 1, 1)
        if not wait_agent_connected(agent_url, started + cfg.lead_in_s * 0.75):
            result.errors.append(f"{label}: the agent was not subscribed to the audio events within "
                                 f"{cfg.lead_in_s * 0.75:.0f} s; the first question may be lost")
        sampler = stack.enter_context(TelemetrySampler(0.5))
        own_cpu = own_cpu_seconds()
        records = _collect(turn_log, cutter.utterances, ses.slots, started + ses.timeline_s + cfg.settle_timeout_s,
                           f"{label}: questions", ses.progress)
        own_cpu = own_cpu_seconds() - own_cpu
        sampler.stop()
    tel = sampler.summary()
    other = None
    if tel.cpu_percent is not None and tel.duration_s > 0:
        mine = own_cpu / tel.duration_s / (psutil.cpu_count() or 1) * 100.0
        other = round(max(0.0, tel.cpu_percent.mean - mine), 1)
        if other > NOISY_OTHER_CPU_PERCENT:
            log.warning("%s: other processes used %.0f%% of the CPU meanwhile; its figures are noisy", label, other)
    result.telemetry.append(ModeTelemetry(mode, run, tel, other))
    utterances = cutter.utterances.snapshot()
    turns = label_pass(records, utterances, ses.slots, ses.sequence, cfg.warmup)
    answered = {t["index"] for t in turns if t["index"] is not None}
    if len(answered) < len(ses.slots):
        result.errors.append(f"{label}: {len(answered)} of {len(ses.slots)} questions got a turn "
                             f"({len(records)} turns recorded, see {turn_log})")
    spoken_over = questions_spoken_over(utterances, ses.slots) if utterances else cutter.spoken_over
    if spoken_over:
        result.errors.append(f"{label}: {spoken_over} question(s) began while a reply was still playing "
                             "(barge-ins, not quiet turns); give a longer --gap, or a shorter --playback-s")
    if cutter.invalid:
        result.errors.append(f"{label}: audio events that do not match the contract, skipped: "
                             + ", ".join(f"{kind} ×{n}" for kind, n in sorted(cutter.invalid.items())))
    for turn in turns:
        result.turns.append({**turn, "mode": mode, "run": run, "cut_by_bench": turn.get("turn_id") in cutter.cut})


# --- the whole run ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _llm(cfg: E2EConfig, out_dir: Path, stamp: str, progress: ProgressFn) -> Iterator[str]:
    if cfg.llm_url:
        yield cfg.llm_url.rstrip("/")
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    progress("LLM server starting", 0, 1)
    env = {"WATUS_LLM_HOST": "127.0.0.1", "WATUS_LLM_PORT": str(port), "WATUS_LLM_API_KEY": ""}
    with service("trt_server", env, url, out_dir / f"e2e-{stamp}-llm.log", cfg.startup_timeout_s, E2EBenchError):
        progress("LLM server starting", 1, 1)
        yield url


@contextlib.contextmanager
def _vision(cfg: E2EConfig, out_dir: Path, stamp: str, progress: ProgressFn) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    if cfg.vision_source is None:
        yield url  # nothing listens there: the agent finds vision down and says it cannot see
        return
    progress("vision starting", 0, 1)
    env = {"WATUS_VISION_HOST": "127.0.0.1", "WATUS_VISION_PORT": str(port),
           "WATUS_VISION_SOURCE": str(vision_folder(cfg.vision_source, out_dir)), "WATUS_VISION_LOOP": "true",
           "WATUS_VISION_SOURCE_FPS": str(cfg.vision_fps)}
    with service("vision", env, url, out_dir / f"e2e-{stamp}-vision.log", cfg.startup_timeout_s, E2EBenchError):
        progress("vision starting", 1, 1)
        yield url


def _model_name(llm_url: str) -> str | None:
    try:
        return str(httpx.get(llm_url + "/v1/models", timeout=5.0, trust_env=False).json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return None


def run_e2e_bench(cfg: E2EConfig, out_dir: Path, report: Path | None = None, chart: Path | None = None,
                  progress: ProgressFn | None = None, json_path: Path | None = None) -> E2EResult:
    """Run `cfg.runs` passes of every mode; write the JSONL (in `out_dir`), the chart, the report section and
    the JSON summary (where given). A mode whose processes do not start is reported in `errors`; the others
    still run."""
    from watus.bench import machine_info, update_markdown_section

    say: ProgressFn = progress or (lambda _label, _done, _total: None)
    for mode in cfg.modes:
        if mode not in KNOWN_MODES:
            raise E2EBenchError(f"unknown mode {mode!r}; known: {', '.join(KNOWN_MODES)}")
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    result = E2EResult(cfg, machine_info(("xllamacpp", "faster-whisper", "piper-tts", "onnxruntime",
                                          "pydantic-ai-slim")), started.isoformat(timespec="seconds"))
    out_dir.mkdir(parents=True, exist_ok=True)
    sequence = [parse_question(WARMUP_QUESTION)] * cfg.warmup + cfg.spoken()
    say("speaking the questions (piper)", 0, 1)
    speech_s = make_mic_folder(out_dir / f"e2e-{stamp}-wavs", sequence, cfg.lead_in_s,
                               variation=cfg.voice_variation)
    say("speaking the questions (piper)", 1, 1)
    slots = mic_slots(speech_s, cfg.lead_in_s, cfg.gap_s)
    timeline_s = slots[-1].end_s if slots else cfg.lead_in_s
    log.info("%d questions per pass, %.0f s of microphone each", len(sequence), timeline_s)
    with _llm(cfg, out_dir, stamp, say) as llm_url, _vision(cfg, out_dir, stamp, say) as vision_url:
        result.llm_model = _model_name(llm_url)
        ses = _Session(cfg, out_dir, stamp, out_dir / f"e2e-{stamp}-wavs" / "mic", timeline_s, sequence, slots,
                       llm_url, vision_url, result, say)
        for run in range(1, cfg.runs + 1):
            # Passes alternate the order of the modes (ABC CBA ...), so a load that drifts during the run, or
            # whatever the first mode leaves behind, weighs on all alike.
            for mode in cfg.modes if run % 2 else tuple(reversed(cfg.modes)):
                try:
                    run_mode(mode, run, ses)
                except E2EBenchError as e:
                    log.error("%s, run %d failed: %s", mode, run, e)
                    result.errors.append(f"{mode}, run {run}: {e}")
    if chart is not None and result.turns:
        result.chart_path = waterfall_chart(result, chart)
    result.jsonl_path = out_dir / f"e2e-{stamp}.jsonl"
    result.json_path = json_path
    write_jsonl(result.jsonl_path, result)
    if json_path is not None:
        write_json_summary(json_path, result)
    if report is not None:
        link = chart_link(result.chart_path, report) if result.chart_path is not None else None
        update_markdown_section(report, "e2e", render_markdown(result, link))
    return result



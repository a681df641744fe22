"""`watus bench e2e`: spoken questions through every real process, streaming against the sequential baseline.

The figure users feel is end of speech → first audio (e2e); only a run of the real processes on one
clock measures it, so this benchmark does what a person would: it speaks questions (piper's voice,
generated here) into the audio service's virtual microphone, in real time, while the LLM server, the
vision service (on an image or video) and the agent run as they do on the robot. The agent's turn log
is the measurement: every stage of every turn on the machine-wide monotonic clock.

Each pass of each mode gets a fresh agent (`WATUS_AGENT_PIPELINE=<mode>`, its own turn log, an empty
conversation) and a fresh audio service playing the same microphone folder; the LLM server and vision run
once for all, so the modes differ in the pipeline only, and passes alternate the modes' order so a load
that drifts weighs on both. The agent starts first, because it must be subscribed to the audio events
before the first question plays (the first WAV begins with `lead_in_s` of silence for that). Once a reply
has played a few seconds and the LLM is idle, the benchmark stops the speaker (see `PlaybackCutter`), so
a question need not wait out the 40 s a long reply can take.

Results: a JSONL (turns, per-mode summaries, telemetry, goal checks), the `bench:e2e` section of
`docs/benchmarks.md`, and a waterfall PNG beside it. The report itself lives in `e2e_report`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer

from watus.agent.turnlog import TurnLog
from watus.bench.e2e_report import (
    MODES,
    E2EConfig,
    E2EResult,
    ModeTelemetry,
    chart_link,
    goal_checks,
    mode_stats,
    render_markdown,
    waterfall_chart,
    write_jsonl,
)
from watus.bench.procs import free_port as _free_port
from watus.bench.procs import service
from watus.core.telemetry import TelemetrySampler

log = logging.getLogger(__name__)

#: Spoken first in each mode and not timed: the first real turn then meets warm caches everywhere.
WARMUP_QUESTION = "Hi Watus, are you there?"
#: Above this share of the machine's CPU used by other processes during a mode, its figures are flagged.
NOISY_OTHER_CPU_PERCENT = 10.0
#: (label, done, total): a phase or a count of turns, for the command's progress bars.
ProgressFn = Callable[[str, int, int], None]


class E2EBenchError(RuntimeError):
    """A process of the benchmark could not be started or the run could not be set up."""


# --- processes ---------------------------------------------------------------------------------------------





def _vision_folder(source: Path, out_dir: Path) -> Path:
    """An image is shown to the vision service as a one-image folder (looped); a video file is used as is."""
    from vision.sources import IMAGE_SUFFIXES

    if source.is_dir() or source.suffix.lower() not in IMAGE_SUFFIXES:
        return source
    folder = out_dir / "e2e-vision-source"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(source, folder / source.name)
    return folder


class PlaybackCutter:
    """Stops the speaker `after_s` after a reply started playing (0: never), from the audio event stream.

    A reply of the CPU default can play for 40 s; the microphone file's gap would have to be longer than
    the longest reply, or the next question barges in. Playback costs no CPU, and e2e (t1 − t0) is measured
    before the cut, so the cut changes no figure of the turn, only how long the run takes. The agent sees
    the cut as an interruption and writes the record at once; the benchmark marks it `cut_by_bench`.

    The cut waits until the LLM server generates nothing (its `watus_llm_requests_running` gauge): a turn
    cut while its reply is still streaming loses the reply and stays out of the conversation memory, and
    the next question would then meet a shorter prompt in one mode than in the other.
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
        self._thread = threading.Thread(target=self._listen, name="e2e-playback-cutter", daemon=True)

    def __enter__(self) -> PlaybackCutter:
        if self._after > 0:
            self._thread.start()
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
                        if line.startswith("data: {"):
                            self._on_event(json.loads(line[6:]))
            except (httpx.HTTPError, ValueError) as e:
                log.debug("playback cutter: audio events unavailable (%s)", e)
            self._closed.wait(0.2)

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind, turn = ev.get("type"), ev.get("turn_id")
        if not isinstance(turn, str):
            return
        with self._lock:
            if kind == "playback_started" and turn not in self._started:
                self._started.add(turn)
                timer = threading.Timer(self._after, self._cut, (turn,))
                timer.daemon = True
                self._timers.append(timer)
                timer.start()
            elif kind == "interrupted" or (kind == "playback_finished" and ev.get("final")):
                self._over.add(turn)

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


# --- the microphone --------------------------------------------------------------------------------------------


def make_mic_folder(folder: Path, sequence: list[str], lead_in_s: float) -> list[float]:
    """One 16 kHz WAV per spoken question in play order (the first led by `lead_in_s` of silence), each
    text synthesised once with the default piper voice; returns the seconds of speech of each file."""
    import numpy as np
    import soundfile as sf

    from audio.pcm import ASR_RATE
    from watus.bench.speech import make_wavs

    unique = list(dict.fromkeys(sequence))
    voiced = make_wavs(folder / "voice", tuple(unique), "q")
    audio = {text: sf.read(path, dtype="float32")[0] for path, text, _ in voiced}
    mic = folder / "mic"
    shutil.rmtree(mic, ignore_errors=True)
    mic.mkdir(parents=True)
    for i, text in enumerate(sequence):
        pcm = audio[text]
        if i == 0:
            pcm = np.concatenate([np.zeros(int(lead_in_s * ASR_RATE), np.float32), pcm])
        sf.write(mic / f"{i:04d}.wav", pcm, ASR_RATE, subtype="PCM_16")
    return [len(audio[text]) / ASR_RATE for text in sequence]


def closest_question(transcript: str, questions: list[str]) -> tuple[str, float]:
    """The question a transcript most likely is, and its word error rate against it."""
    from watus.bench.speech import word_error_rate

    scored = [(word_error_rate(q, transcript), q) for q in questions]
    wer, question = min(scored)
    return question, round(wer, 3)


# --- one mode ---------------------------------------------------------------------------------------------------


def _own_cpu_seconds() -> float:
    """CPU time of this process and its children (every service of the run), user + system."""
    me = psutil.Process()
    total = 0.0
    for proc in (me, *me.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _wait_connected(agent_url: str, until: float) -> bool:
    """Whether the agent reports its audio event stream connected before `until` (monotonic s)."""
    with httpx.Client(trust_env=False, timeout=3.0) as http:
        while time.monotonic() < until:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if http.get(agent_url + "/health").json().get("audio_events") == "connected":
                    return True
            time.sleep(0.25)
    return False


def _collect(turn_log: Path, expected: int, deadline: float, label: str, progress: ProgressFn) -> list[dict[str, Any]]:
    reader = TurnLog(turn_log)
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = reader.read()
        progress(label, min(len(records), expected), expected)
        if len(records) >= expected:
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
    expected: int  # turns per pass of one mode
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
                 "WATUS_AGENT_PIPELINE": mode, "WATUS_AGENT_TEMPERATURE": "0"}
    if cfg.max_tokens is not None:
        agent_env["WATUS_AGENT_MAX_TOKENS"] = str(cfg.max_tokens)
    audio_env = {"WATUS_AUDIO_HOST": "127.0.0.1", "WATUS_AUDIO_PORT": str(audio_port),
                 "WATUS_AUDIO_MIC_BACKEND": "file", "WATUS_AUDIO_MIC_FILE": str(ses.mic),
                 "WATUS_AUDIO_MIC_GAP_S": str(cfg.gap_s), "WATUS_AUDIO_MIC_LOOP": "false",
                 "WATUS_AUDIO_SPEAKER_BACKEND": "null"}
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
        if not _wait_connected(agent_url, started + cfg.lead_in_s * 0.75):
            result.errors.append(f"{label}: the agent was not subscribed to the audio events within "
                                 f"{cfg.lead_in_s * 0.75:.0f} s; the first question may be lost")
        sampler = stack.enter_context(TelemetrySampler(0.5))
        own_cpu = _own_cpu_seconds()
        records = _collect(turn_log, ses.expected, started + ses.timeline_s + cfg.settle_timeout_s,
                           f"{label}: turns", ses.progress)
        own_cpu = _own_cpu_seconds() - own_cpu
        sampler.stop()
    tel = sampler.summary()
    other = None
    if tel.cpu_percent is not None and tel.duration_s > 0:
        mine = own_cpu / tel.duration_s / (psutil.cpu_count() or 1) * 100.0
        other = round(max(0.0, tel.cpu_percent.mean - mine), 1)
        if other > NOISY_OTHER_CPU_PERCENT:
            log.warning("%s: other processes used %.0f%% of the CPU meanwhile; its figures are noisy", label, other)
    result.telemetry.append(ModeTelemetry(mode, run, tel, other))
    if len(records) < ses.expected:
        result.errors.append(f"{label}: {len(records)} of {ses.expected} turns recorded (see {turn_log})")
    questions = [WARMUP_QUESTION, *cfg.questions]
    for i, rec in enumerate(records[:ses.expected]):
        question, wer = closest_question(str(rec.get("transcript", "")), questions)
        result.turns.append({**rec, "mode": mode, "run": run, "index": i, "warmup": i < cfg.warmup,
                             "question": question, "question_wer": wer,
                             "cut_by_bench": rec.get("turn_id") in cutter.cut})


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
           "WATUS_VISION_SOURCE": str(_vision_folder(cfg.vision_source, out_dir)), "WATUS_VISION_LOOP": "true",
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
                  progress: ProgressFn | None = None) -> E2EResult:
    """Run `cfg.runs` passes of every mode; write the JSONL (in `out_dir`), the chart and the report section
    (where given). A mode whose processes do not start is reported in `errors`; the others still run."""
    from watus.bench import machine_info, update_markdown_section

    say: ProgressFn = progress or (lambda _label, _done, _total: None)
    for mode in cfg.modes:
        if mode not in MODES:
            raise E2EBenchError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    result = E2EResult(cfg, machine_info(("xllamacpp", "faster-whisper", "piper-tts", "onnxruntime",
                                          "pydantic-ai-slim")), started.isoformat(timespec="seconds"))
    out_dir.mkdir(parents=True, exist_ok=True)
    sequence = [WARMUP_QUESTION] * cfg.warmup + list(cfg.questions)
    say("speaking the questions (piper)", 0, 1)
    speech_s = make_mic_folder(out_dir / f"e2e-{stamp}-wavs", sequence, cfg.lead_in_s)
    say("speaking the questions (piper)", 1, 1)
    timeline_s = cfg.lead_in_s + sum(speech_s) + cfg.gap_s * len(sequence)
    log.info("%d questions per pass, %.0f s of microphone each", len(sequence), timeline_s)
    with _llm(cfg, out_dir, stamp, say) as llm_url, _vision(cfg, out_dir, stamp, say) as vision_url:
        result.llm_model = _model_name(llm_url)
        ses = _Session(cfg, out_dir, stamp, out_dir / f"e2e-{stamp}-wavs" / "mic", timeline_s, len(sequence),
                       llm_url, vision_url, result, say)
        for run in range(1, cfg.runs + 1):
            # Passes alternate the order of the modes (AB BA ...), so a load that drifts during the run, or
            # whatever the first mode leaves behind, weighs on both alike.
            for mode in cfg.modes if run % 2 else tuple(reversed(cfg.modes)):
                try:
                    run_mode(mode, run, ses)
                except E2EBenchError as e:
                    log.error("%s, run %d failed: %s", mode, run, e)
                    result.errors.append(f"{mode}, run {run}: {e}")
    if chart is not None and result.turns:
        result.chart_path = waterfall_chart(result, chart)
    result.jsonl_path = out_dir / f"e2e-{stamp}.jsonl"
    write_jsonl(result.jsonl_path, result)
    if report is not None:
        link = chart_link(result.chart_path, report) if result.chart_path is not None else None
        update_markdown_section(report, "e2e", render_markdown(result, link))
    return result


# --- the command ------------------------------------------------------------------------------------------------


def _questions(values: list[str] | None) -> tuple[str, ...]:
    defaults = E2EConfig.questions
    if not values:
        return defaults
    if len(values) == 1 and values[0].strip().isdigit():
        n = int(values[0])
        if n < 1:
            raise typer.BadParameter("at least one question", param_hint="--questions")
        return tuple(defaults[i % len(defaults)] for i in range(n))
    texts = tuple(v.strip() for v in values if v.strip())
    if not texts:
        raise typer.BadParameter("empty question", param_hint="--questions")
    return texts


def _default_image() -> Path:
    from vision.samples import sample_image

    try:
        return sample_image("bus.jpg")
    except FileNotFoundError as e:
        raise typer.BadParameter(f"{e}; or give --image/--video, or --no-vision", param_hint="--image") from None


def e2e(
    questions: Annotated[list[str] | None, typer.Option(
        "--questions", "-q", help="A number N (the first N built-in questions, repeated as needed) or the "
        "questions' text, repeatable. Default: the 4 built-in questions.")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Passes over the questions per mode, each with a fresh agent "
                                      "and audio service; passes alternate the modes' order.")] = 2,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up questions at the start of each pass.")] = 1,
    modes: Annotated[str, typer.Option(help="Pipelines to run, comma separated.")] = "streaming,sequential",
    image: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Image the vision service "
                                               "watches (default: the bus.jpg sample in the model cache).")] = None,
    video: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Video file the vision "
                                               "service watches (looped).")] = None,
    no_vision: Annotated[bool, typer.Option("--no-vision", help="Run without the vision service.")] = False,
    vision_fps: Annotated[float, typer.Option(min=0.1, help="Frames per second the vision service takes from "
                                              "the image or video (the CPU it leaves to the rest).")] = 2.0,
    llm_url: Annotated[str | None, typer.Option(help="Use this LLM server instead of starting "
                                                "`python -m trt_server`.")] = None,
    gap: Annotated[float, typer.Option(min=1, max=60, help="Silence after each question (s): time for the "
                                       "reply to be thought, started, and cut.")] = 16.0,
    playback_s: Annotated[float, typer.Option(min=0, help="Seconds of each reply played before the benchmark "
                                              "stops the speaker (after e2e is measured); 0: replies play to the "
                                              "end, and --gap must outlast the longest.")] = 6.0,
    max_tokens: Annotated[int | None, typer.Option(min=8, help="The agent's reply limit in tokens (default: the "
                                                   "agent's own setting).")] = None,
    out_dir: Annotated[Path, typer.Option(help="Folder for the JSONL, the turn logs, WAVs and process logs.")]
    = Path("bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose e2e section is rewritten.")] = Path(
        "docs/benchmarks.md"),
    chart: Annotated[Path | None, typer.Option(help="Waterfall PNG (default: e2e_waterfall.png beside the "
                                               "report).")] = None,
) -> None:
    """Spoken questions through every process: e2e and stage latency, streaming vs sequential; goal check."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    console = Console()
    if sum((image is not None, video is not None, no_vision)) > 1:
        raise typer.BadParameter("give one of --image, --video and --no-vision")
    source = None if no_vision else (image or video or _default_image())
    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    if not mode_list or any(m not in MODES for m in mode_list):
        raise typer.BadParameter(f"modes are {', '.join(MODES)}", param_hint="--modes")
    cfg = E2EConfig(questions=_questions(questions), runs=runs, warmup=warmup, modes=mode_list,
                    vision_source=source, vision_fps=vision_fps, llm_url=llm_url, gap_s=gap, max_tokens=max_tokens,
                    playback_s=playback_s)
    chart_path = chart or report.parent / "e2e_waterfall.png"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        try:
            result = run_e2e_bench(cfg, out_dir, report, chart_path, on_progress)
        except E2EBenchError as e:
            console.print(f"[red]e2e benchmark failed:[/red] {e}")
            raise typer.Exit(code=1) from None
    stats = {m: mode_stats(result.turns, m) for m in cfg.modes}
    for m, s in stats.items():
        p50 = f"{s.e2e.p50:,.0f}" if s.e2e else "–"
        p95 = f"{s.e2e.p95:,.0f}" if s.e2e else "–"
        console.print(f"{m}: e2e p50 {p50} ms, p95 {p95} ms ({s.timed} timed turns, {s.interrupted} interrupted "
                      "other than by the playback cut)")
    for g in goal_checks(stats):
        colour = {"PASS": "green", "FAIL": "red"}.get(g.verdict, "yellow")
        console.print(f"[{colour}]{g.verdict}[/{colour}] {g.name}: {g.figures}  (goal {g.goal})")
    for err in result.errors:
        console.print(f"[red]problem:[/red] {err}")
    console.print(f"raw data: {result.jsonl_path}\nchart: {result.chart_path}\nreport: {report}")
    if not any(s.timed for s in stats.values()):
        raise typer.Exit(code=1)


__all__ = ["E2EBenchError", "E2EConfig", "E2EResult", "e2e", "run_e2e_bench"]

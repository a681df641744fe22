"""`watus bench speech`: ASR latency and real-time factor per model, TTS time to first audio and real-time
factor, and VAD end of speech → transcript latency, as p50/p95 over WAVs the benchmark makes itself.

Three parts, each measured where its figure means something:
- ASR per model, in-process through the service's own runner (the model's cost without HTTP), on
  piper-spoken sentences of about 1.5, 3 and 6 s; word error rate against the text spoken.
- TTS through a real `python -m audio`, streamed over HTTP as the agent will use it: request sent →
  first audio byte, for one-sentence replies; real-time factor from the same requests.
- End of speech → transcript through the same process with a WAV file as its microphone, played in real
  time (utterances of ~3 s with pauses), read from the `transcript` events' own stage timings (t0 is the
  moment the VAD declared end of speech, on the shared monotonic clock). Run with speculative ASR (the
  default) and, for comparison, without it.

Results: one JSONL file per run, and the `bench:speech` section of `docs/benchmarks.md`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer

from watus.bench.procs import free_port as _free_port
from watus.bench.procs import service
from watus.bench.report import cell as _p
from watus.bench.report import row as _row
from watus.bench.stats import Summary, fmt, summarize

log = logging.getLogger(__name__)

GOAL_EOS_TO_TRANSCRIPT_MS = 500.0
GOAL_TTS_FIRST_AUDIO_MS = 300.0

#: Sentences spoken for the ASR part, short (~1.5 s), medium (~3 s) and long (~6 s).
ASR_SENTENCES = (
    "Watus, turn on the light.",
    "Hello Watus, what can you see in the kitchen right now?",
    "Watus, please go to the living room, look around carefully, and tell me how many people are sitting "
    "on the sofa next to the window.",
    "Can you tell me how many chairs are in this room?",
    "Good morning Watus.",
    "The red ball is under the table, next to the big green plant by the door, and the cat is asleep on it.",
)
#: About 3 s each: the utterances of the end-of-speech part (the goal is stated for a 3-second utterance).
EOS_SENTENCES = (
    "Hello Watus, what can you see in the kitchen right now?",
    "Watus, please tell me how many people are in the room.",
    "Can you describe the person who is standing by the door?",
    "Good morning Watus, is anybody sitting on the sofa today?",
    "Please look at the table and tell me what is on it.",
    "Watus, remind me what we talked about yesterday evening.",
)
#: One-sentence replies of the kind the agent speaks.
TTS_REPLIES = (
    "I can see two people and a chair.",
    "Hello! It is nice to see you again today.",
    "There is a red ball under the table, next to the plant.",
    "Sure, I will remind you about it tomorrow morning.",
    "Nobody is sitting on the sofa right now.",
)

ProgressFn = Callable[[str], None]
#: Above this share of the CPU used by other processes during a part, its figures are flagged as noisy.
NOISY_OTHER_CPU_PERCENT = 10.0


@dataclass
class SpeechBenchConfig:
    asr_models: tuple[str, ...] = ("tiny.en", "base")
    runs: int = 3  # timed transcriptions per WAV and model; TTS requests per reply
    warmup: int = 1
    threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    eos_rounds: int = 1  # passes over EOS_SENTENCES through the live pipeline
    compare_plain: bool = True  # also measure end of speech → transcript without speculative ASR


@dataclass
class SpeechBenchResult:
    config: SpeechBenchConfig
    machine: dict[str, str]
    started: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    jsonl_path: Path | None = None
    #: Per part: % of the machine's CPU used by processes other than the benchmark and its service.
    other_cpu_percent: dict[str, float] = field(default_factory=dict)

    def values(self, type_: str, key: str, **match: object) -> list[float]:
        return [float(r[key]) for r in self.rows
                if r["type"] == type_ and r.get(key) is not None and all(r.get(k) == v for k, v in match.items())]

    def summary(self, type_: str, key: str, **match: object) -> Summary | None:
        return summarize(self.values(type_, key, **match))


def word_error_rate(ref: str, hyp: str) -> float:
    """Word-level Levenshtein distance / reference words, ignoring case and punctuation."""
    r = re.sub(r"[^a-z0-9' ]", " ", ref.lower()).split()
    h = re.sub(r"[^a-z0-9' ]", " ", hyp.lower()).split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[len(h)] / max(1, len(r))


# --- the WAV set ------------------------------------------------------------------------------------------


def make_wavs(folder: Path, sentences: tuple[str, ...], prefix: str,
              lead_in_s: float = 0.0) -> list[tuple[Path, str, float]]:
    """Speak each sentence with the default piper voice into a 16 kHz WAV: (path, text, seconds of speech).

    `lead_in_s` of silence goes before the speech (live playback: time for a client to subscribe).
    """
    import soundfile as sf

    from audio.pcm import ASR_RATE, resample, to_float32
    from audio.settings import AudioSettings
    from audio.tts.piper import PiperEngine

    engine = PiperEngine(AudioSettings(tts_threads=1))
    engine.load()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, text in enumerate(sentences):
        pcm = np.concatenate(list(engine.synthesize(text, engine.voices()[0], 1.0)))
        audio = resample(to_float32(pcm), engine.sample_rate, ASR_RATE)
        path = folder / f"{prefix}{i:02d}.wav"
        lead = np.zeros(int(lead_in_s * ASR_RATE), np.float32)
        sf.write(path, np.concatenate([lead, audio]), ASR_RATE, subtype="PCM_16")
        out.append((path, text, len(audio) / ASR_RATE))
    return out


# --- ASR in-process -------------------------------------------------------------------------------------------


def bench_asr(cfg: SpeechBenchConfig, wavs: list[tuple[Path, str, float]], result: SpeechBenchResult,
              progress: ProgressFn) -> None:
    import soundfile as sf

    from audio.asr import select_asr
    from audio.asr.runner import AsrRunner
    from audio.runtime import asr_options
    from audio.settings import AudioSettings

    audio = {p: sf.read(p, dtype="float32")[0] for p, _, _ in wavs}
    for model in cfg.asr_models:
        progress(f"ASR {model}")
        settings = AudioSettings(asr_model=model, asr_threads=cfg.threads)
        try:
            t = time.perf_counter()
            runner = AsrRunner(select_asr(settings))
            runner.load().result()
            load_ms = (time.perf_counter() - t) * 1000
        except Exception as e:  # a missing model is reported in the table, the rest still runs
            result.errors.append(f"ASR {model}: {e}")
            continue
        options = asr_options(settings)
        try:
            for _ in range(cfg.warmup):
                runner.submit(audio[wavs[0][0]], options).result()
            for path, text, seconds in wavs:
                for run in range(cfg.runs):
                    tr = runner.submit(audio[path], options).result()
                    result.rows.append({"type": "asr", "model": model, "wav": path.name, "audio_s": round(seconds, 3),
                                        "run": run, "latency_ms": round(tr.asr_ms, 1), "rtf": round(tr.rtf, 4),
                                        "wer": round(word_error_rate(text, tr.text), 4), "text": tr.text,
                                        "load_ms": round(load_ms, 1)})
        finally:
            runner.close()


# --- the service: TTS over HTTP, end of speech → transcript over SSE ------------------------------------------------



@contextmanager
def audio_service(env: dict[str, str], log_path: Path, timeout_s: float = 90.0) -> Iterator[str]:
    """`python -m audio` with `env` added; yields its URL once healthy, stops it after."""
    port = _free_port()
    full = {**os.environ, **env, "WATUS_AUDIO_PORT": str(port), "WATUS_AUDIO_HOST": "127.0.0.1"}
    url = f"http://127.0.0.1:{port}"
    with service("audio", full, url, log_path, timeout_s):
        yield url


def _collect_transcripts(url: str, expected: int, timeout_s: float) -> list[dict[str, Any]]:
    """Transcript events from `/v1/events` until `expected` arrived or the microphone input ended."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with httpx.stream("GET", url + "/v1/events", timeout=httpx.Timeout(5, read=20)) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                if ev["type"] == "transcript":
                    found.append(ev)
            if len(found) >= expected or time.monotonic() > deadline:
                break
    return found


def bench_eos(cfg: SpeechBenchConfig, wav_dir: Path, n: int, speculative: bool, out_dir: Path,
              result: SpeechBenchResult, progress: ProgressFn) -> None:
    variant = "speculative" if speculative else "plain"
    progress(f"end of speech → transcript ({variant})")
    env = {"WATUS_AUDIO_MIC_BACKEND": "file", "WATUS_AUDIO_MIC_FILE": str(wav_dir), "WATUS_AUDIO_MIC_GAP_S": "2.0",
           "WATUS_AUDIO_MIC_LOOP": "true" if cfg.eos_rounds > 1 else "false",
           "WATUS_AUDIO_SPEAKER_BACKEND": "null", "WATUS_AUDIO_ASR_THREADS": str(cfg.threads),
           "WATUS_AUDIO_TTS_THREADS": str(cfg.threads), "WATUS_AUDIO_ASR_SPECULATIVE": str(speculative).lower()}
    try:
        with audio_service(env, out_dir / f"audio-eos-{variant}.log") as url:
            # The file plays from the moment the service is up: the first utterance starts after its own
            # lead-in silence, so a client subscribing now misses nothing.
            events = _collect_transcripts(url, n * cfg.eos_rounds, timeout_s=n * cfg.eos_rounds * 8 + 20)
    except RuntimeError as e:
        result.errors.append(f"EOS {variant}: {e}")
        return
    for ev in events:
        stages = ev["stages_ms"]
        # The sentence it heard: the closest (a split or missed utterance must not shift the pairing).
        wer = min(word_error_rate(ref, ev["text"]) for ref in EOS_SENTENCES)
        result.rows.append({"type": "eos", "variant": variant, "turn_id": ev["turn_id"], "text": ev["text"],
                            "speech_ms": stages["speech"], "eos_to_transcript_ms": stages["eos_to_transcript"],
                            "asr_ms": stages["asr"], "asr_queue_ms": stages["asr_queue"],
                            "speculative_used": ev["speculative"],
                            "wer": round(wer, 4)})
    if len(events) < n * cfg.eos_rounds:
        result.errors.append(f"EOS {variant}: {len(events)} of {n * cfg.eos_rounds} transcripts arrived")


def bench_tts(cfg: SpeechBenchConfig, out_dir: Path, result: SpeechBenchResult, progress: ProgressFn) -> None:
    progress("TTS over HTTP")
    env = {"WATUS_AUDIO_MIC_BACKEND": "none", "WATUS_AUDIO_SPEAKER_BACKEND": "null",
           "WATUS_AUDIO_TTS_THREADS": str(cfg.threads), "WATUS_AUDIO_ASR_THREADS": str(cfg.threads)}
    try:
        with audio_service(env, out_dir / "audio-tts.log") as url, httpx.Client(base_url=url, timeout=60) as http:
            for i in range(cfg.warmup):
                http.post("/v1/audio/speech", json={"input": TTS_REPLIES[i % len(TTS_REPLIES)]}).raise_for_status()
            for text in TTS_REPLIES:
                for run in range(cfg.runs):
                    result.rows.append({"type": "tts", "text": text, "run": run, **_time_speech(http, text)})
    except (RuntimeError, httpx.HTTPError) as e:
        result.errors.append(f"TTS: {e}")


def _time_speech(http: httpx.Client, text: str) -> dict[str, Any]:
    """Request sent → first audio byte and → last byte, over a streamed `pcm` response (24 kHz 16-bit)."""
    t0 = time.perf_counter()
    first: float | None = None
    n = 0
    with http.stream("POST", "/v1/audio/speech", json={"model": "tts-1", "input": text,
                                                       "response_format": "pcm"}) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter()
            n += len(chunk)
    total = time.perf_counter() - t0
    audio_s = n / 2 / 24_000
    return {"chars": len(text), "first_audio_ms": round((first - t0) * 1000, 1) if first else None,
            "total_ms": round(total * 1000, 1), "audio_s": round(audio_s, 3),
            "rtf": round(total / audio_s, 4) if audio_s else None}


class _OtherCpu:
    """CPU used by other processes while a part runs: system busy time minus this process tree's.

    Samples every `interval_s` in a thread, so the audio service's CPU is counted even though it exits
    before the part ends (up to one interval of it is lost). On a shared machine this says whether a
    figure was measured on a quiet CPU.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        import psutil

        self._psutil = psutil
        self._interval = interval_s
        self._own: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _busy(self) -> float:
        t = self._psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def _sample_own(self) -> None:
        me = self._psutil.Process()
        for proc in (me, *me.children(recursive=True)):
            try:
                times = proc.cpu_times()
            except self._psutil.Error:
                continue
            self._own[proc.pid] = max(self._own.get(proc.pid, 0.0), times.user + times.system)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample_own()

    def __enter__(self) -> _OtherCpu:
        self._sample_own()
        self._own0 = sum(self._own.values())
        self._busy0, self._t0 = self._busy(), time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample_own()
        busy = self._busy() - self._busy0
        own = sum(self._own.values()) - self._own0
        elapsed = (time.monotonic() - self._t0) * (self._psutil.cpu_count() or 1)
        self.percent = max(0.0, (busy - own) / elapsed * 100.0) if elapsed > 0 else 0.0


@contextmanager
def _watch(result: SpeechBenchResult, part: str) -> Iterator[None]:
    with _OtherCpu() as watch:
        yield
    result.other_cpu_percent[part] = round(watch.percent, 1)
    if watch.percent > NOISY_OTHER_CPU_PERCENT:
        log.warning("%s: other processes used %.0f%% of the CPU meanwhile; its figures are noisy", part,
                    watch.percent)


# --- orchestration -------------------------------------------------------------------------------------------------


def run_speech_bench(cfg: SpeechBenchConfig, out_dir: Path, progress: ProgressFn | None = None) -> SpeechBenchResult:
    """Run every part in turn (never two models loaded at once) and write the JSONL to `out_dir`."""
    from watus.bench import machine_info

    say = progress or (lambda _msg: None)
    started = datetime.now(timezone.utc)
    result = SpeechBenchResult(cfg, machine_info(("faster-whisper", "ctranslate2", "piper-tts", "onnxruntime")),
                               started.isoformat(timespec="seconds"))
    out_dir.mkdir(parents=True, exist_ok=True)
    wav_root = out_dir / f"speech-wavs-{started.strftime('%Y%m%d-%H%M%S')}"
    say("making WAVs with piper")
    asr_wavs = make_wavs(wav_root / "asr", ASR_SENTENCES, "asr")
    eos_wavs = make_wavs(wav_root / "eos", EOS_SENTENCES, "eos", lead_in_s=1.0)
    with _watch(result, "asr"):
        bench_asr(cfg, asr_wavs, result, say)
    with _watch(result, "tts"):
        bench_tts(cfg, out_dir, result, say)
    with _watch(result, "eos speculative"):
        bench_eos(cfg, wav_root / "eos", len(eos_wavs), True, out_dir, result, say)
    if cfg.compare_plain:
        with _watch(result, "eos plain"):
            bench_eos(cfg, wav_root / "eos", len(eos_wavs), False, out_dir, result, say)
    result.jsonl_path = out_dir / f"speech-{started.strftime('%Y%m%d-%H%M%S')}.jsonl"
    write_jsonl(result.jsonl_path, result)
    return result


@dataclass(frozen=True)
class GoalCheck:
    name: str
    goal: str
    figures: str
    passed: bool | None


def goal_checks(result: SpeechBenchResult) -> list[GoalCheck]:
    checks = []
    eos = result.summary("eos", "eos_to_transcript_ms", variant="speculative")
    goal = f"≤ {GOAL_EOS_TO_TRANSCRIPT_MS:.0f} ms for a 3-second utterance (p50; p95 shown)"
    if eos is None:
        checks.append(GoalCheck("end of speech → transcript", goal, "not measured", None))
    else:
        checks.append(GoalCheck("end of speech → transcript", goal,
                                f"p50 {eos.p50:.0f} ms, p95 {eos.p95:.0f} ms (n={eos.n})",
                                eos.p50 <= GOAL_EOS_TO_TRANSCRIPT_MS))
    tts = result.summary("tts", "first_audio_ms")
    goal = f"≤ {GOAL_TTS_FIRST_AUDIO_MS:.0f} ms for a one-sentence reply (p50; p95 shown)"
    if tts is None:
        checks.append(GoalCheck("TTS first audio", goal, "not measured", None))
    else:
        checks.append(GoalCheck("TTS first audio", goal, f"p50 {tts.p50:.0f} ms, p95 {tts.p95:.0f} ms (n={tts.n})",
                                tts.p50 <= GOAL_TTS_FIRST_AUDIO_MS))
    return checks




def render_markdown(result: SpeechBenchResult) -> str:
    """The report section (without markers): machine, ASR per model, TTS, end of speech → transcript, goals."""
    cfg = result.config
    out = ["## Speech (`watus bench speech`)", "",
           f"Measured {result.started}: {cfg.threads} CPU threads per model, {cfg.warmup} warm-up + {cfg.runs} timed "
           f"runs per WAV (ASR) and per reply (TTS), {cfg.eos_rounds} pass(es) over {len(EOS_SENTENCES)} live "
           "utterances. All audio is spoken by piper (en_US joe-medium) at run time."
           + (f" Raw data: `{result.jsonl_path}`." if result.jsonl_path else ""), "",
           "ASR latency: transcription time of a whole utterance in-process (no HTTP), RTF = latency / audio "
           "length. TTS first audio: `POST /v1/audio/speech` sent → first PCM byte received (the service "
           "splits a long first sentence at a comma). End of speech → transcript: t0 (the VAD declares end of "
           "speech after 500 ms of silence) → the `transcript` event, from a live `python -m audio` whose "
           "microphone is a WAV file played in real time.", ""]
    out += ["### Machine", "", _row("", ""), "|---|---|", *[_row(k, v) for k, v in result.machine.items()]]
    if result.other_cpu_percent:
        out.append(_row("CPU used by other processes", ", ".join(
            f"{part} {pct:.0f}%" for part, pct in result.other_cpu_percent.items())))
    out.append("")
    out += ["### ASR", "", _row("model", "audio s", "latency p50 ms", "latency p95 ms", "RTF p50", "RTF p95", "WER",
                                "load ms"), "|---|---|---|---|---|---|---|---|"]
    for model in cfg.asr_models:
        rows = [r for r in result.rows if r["type"] == "asr" and r["model"] == model]
        for seconds in sorted({r["audio_s"] for r in rows}):
            lat = result.summary("asr", "latency_ms", model=model, audio_s=seconds)
            rtf = result.summary("asr", "rtf", model=model, audio_s=seconds)
            w = result.summary("asr", "wer", model=model, audio_s=seconds)
            load = next(r["load_ms"] for r in rows)
            out.append(_row(model, f"{seconds:.1f}", _p(lat, "p50", 0), _p(lat, "p95", 0), _p(rtf, "p50", 3),
                            _p(rtf, "p95", 3), _p(w, "mean", 2), fmt(load, 0)))
    out += ["", "### TTS", "", _row("reply", "chars", "audio s", "first audio p50 ms", "first audio p95 ms",
                                    "total p50 ms", "RTF p50"), "|---|---|---|---|---|---|---|"]
    for text in TTS_REPLIES:
        first = result.summary("tts", "first_audio_ms", text=text)
        total = result.summary("tts", "total_ms", text=text)
        rtf = result.summary("tts", "rtf", text=text)
        audio_s = result.summary("tts", "audio_s", text=text)
        out.append(_row(text, str(len(text)), _p(audio_s, "p50", 2), _p(first, "p50", 0), _p(first, "p95", 0),
                        _p(total, "p50", 0), _p(rtf, "p50", 3)))
    out += ["", "### End of speech → transcript (live pipeline)", "",
            _row("variant", "utterances", "speech ms p50", "EOS → transcript p50 ms", "p95 ms", "max ms",
                 "ASR ms p50", "speculative result used", "WER"), "|---|---|---|---|---|---|---|---|---|"]
    for variant in ("speculative", "plain"):
        rows = [r for r in result.rows if r["type"] == "eos" and r["variant"] == variant]
        if not rows:
            continue
        eos = result.summary("eos", "eos_to_transcript_ms", variant=variant)
        out.append(_row(variant, str(len(rows)), _p(result.summary("eos", "speech_ms", variant=variant), "p50", 0),
                        _p(eos, "p50", 0), _p(eos, "p95", 0), _p(eos, "max", 0),
                        _p(result.summary("eos", "asr_ms", variant=variant), "p50", 0),
                        f"{sum(bool(r['speculative_used']) for r in rows)}/{len(rows)}",
                        _p(result.summary("eos", "wer", variant=variant), "mean", 2)))
    out += ["", "### Goal check", "", _row("check", "goal", "figures", "result"), "|---|---|---|---|"]
    for g in goal_checks(result):
        out.append(_row(g.name, g.goal, g.figures, "**n/a**" if g.passed is None else
                        ("**PASS**" if g.passed else "**FAIL**")))
    if result.errors:
        out += ["", "Problems: " + "; ".join(result.errors)]
    return "\n".join(out) + "\n"


def write_jsonl(path: Path, result: SpeechBenchResult) -> None:
    lines: list[dict[str, Any]] = [{"type": "meta", "started": result.started, "config": asdict(result.config),
                                    "machine": result.machine, "errors": result.errors,
                                    "other_cpu_percent": result.other_cpu_percent}]
    lines += result.rows
    for key, type_, attr in (("asr_latency_ms", "asr", "latency_ms"), ("asr_rtf", "asr", "rtf"),
                             ("tts_first_audio_ms", "tts", "first_audio_ms"), ("tts_rtf", "tts", "rtf")):
        s = result.summary(type_, attr)
        lines.append({"type": "summary", "figure": key, **(s.as_dict() if s else {})})
    for variant in ("speculative", "plain"):
        s = result.summary("eos", "eos_to_transcript_ms", variant=variant)
        if s is not None:
            lines.append({"type": "summary", "figure": f"eos_to_transcript_ms_{variant}", **s.as_dict()})
    lines += [{"type": "goal", **asdict(g)} for g in goal_checks(result)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


# --- the command ---------------------------------------------------------------------------------------------------


def speech(
    asr_model: Annotated[list[str] | None, typer.Option(
        "--asr-model", "-m", help="ASR model to time, repeatable: tiny.en, base or a CTranslate2 folder. "
        "Default: tiny.en and base.")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs per WAV (ASR) and per reply (TTS).")] = 3,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed runs before the timed ones.")] = 1,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads per model (default: cores, at most 4).")]
    = None,
    eos_rounds: Annotated[int, typer.Option(min=1, help="Passes over the live utterances (6 per pass, ~8 s "
                                            "each in real time).")] = 1,
    compare_plain: Annotated[bool, typer.Option("--compare-plain/--no-compare-plain", help="Also time end of "
                                                "speech → transcript without speculative ASR.")] = True,
    out_dir: Annotated[Path, typer.Option(help="Folder for the JSONL, the WAVs and service logs.")] = Path(
        "bench-results"),
    report: Annotated[Path, typer.Option(help="Markdown file whose speech section is rewritten.")] = Path(
        "docs/benchmarks.md"),
) -> None:
    """Time speech: ASR latency/RTF per model, TTS first audio/RTF, end of speech → transcript; goal check."""
    from rich.console import Console

    from watus.bench import update_markdown_section

    console = Console()
    cfg = SpeechBenchConfig(asr_models=tuple(asr_model or SpeechBenchConfig.asr_models), runs=runs, warmup=warmup,
                            eos_rounds=eos_rounds, compare_plain=compare_plain)
    if threads is not None:
        cfg.threads = threads
    result = run_speech_bench(cfg, out_dir, lambda msg: console.print(f"[bold]·[/bold] {msg}"))
    update_markdown_section(report, "speech", render_markdown(result))
    for name, type_, key in (("ASR latency ms", "asr", "latency_ms"), ("ASR RTF", "asr", "rtf"),
                             ("TTS first audio ms", "tts", "first_audio_ms"), ("TTS RTF", "tts", "rtf")):
        s = result.summary(type_, key)
        console.print(f"{name}: p50 {_p(s, 'p50', 3)}  p95 {_p(s, 'p95', 3)}")
    for g in goal_checks(result):
        verdict = ("[yellow]n/a[/yellow]" if g.passed is None
                   else "[green]PASS[/green]" if g.passed else "[red]FAIL[/red]")
        console.print(f"{verdict} {g.name}: {g.figures}  (goal {g.goal})")
    for e in result.errors:
        console.print(f"[red]problem:[/red] {e}")
    console.print(f"raw runs: {result.jsonl_path}\nreport: {report}")
    if not result.rows:
        raise typer.Exit(code=1)


__all__ = ["GoalCheck", "SpeechBenchConfig", "SpeechBenchResult", "goal_checks", "render_markdown",
           "run_speech_bench", "speech", "word_error_rate", "write_jsonl"]

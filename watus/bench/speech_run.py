"""The parts of `watus bench speech`, each measured where its figure means something, and the whole run.

ASR in-process through the service's own runner; TTS through a real `python -m audio` over HTTP; end of
speech → transcript through the same process with a WAV folder as its microphone, played in real time,
read from its typed `transcript` events. Each part also records how much CPU other processes took.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from watus.bench.procs import free_port as _free_port
from watus.bench.procs import service
from watus.bench.speech_report import SpeechBenchConfig, SpeechBenchResult, write_jsonl
from watus.bench.speech_workload import ASR_SENTENCES, EOS_SENTENCES, TTS_REPLIES, make_wavs, word_error_rate
from watus.core.wire import WireError
from watus.core.wire.audio import Transcript, parse_event

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]
#: Above this share of the CPU used by other processes during a part, its figures are flagged as noisy.
NOISY_OTHER_CPU_PERCENT = 10.0


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
    # The bench's own service, on loopback: no key for it whatever WATUS_API_KEY says (its clients send none).
    full = {**os.environ, **env, "WATUS_AUDIO_PORT": str(port), "WATUS_AUDIO_HOST": "127.0.0.1",
            "WATUS_AUDIO_API_KEY": ""}
    url = f"http://127.0.0.1:{port}"
    with service("audio", full, url, log_path, timeout_s):
        yield url


def _collect_transcripts(url: str, expected: int, timeout_s: float) -> tuple[list[Transcript], int]:
    """Transcript events from `/v1/events` until `expected` arrived, the microphone input ended or `timeout_s`
    passed; and how many events did not match the contract (logged and skipped)."""
    found: list[Transcript] = []
    invalid = 0
    deadline = time.monotonic() + timeout_s
    with httpx.stream("GET", url + "/v1/events", timeout=httpx.Timeout(5, read=20)) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                try:
                    event = parse_event(line[5:].strip())
                except WireError as e:
                    log.error("audio event skipped: %s (%.120s)", e, line)
                    invalid += 1
                else:
                    if isinstance(event, Transcript):
                        found.append(event)
            if len(found) >= expected or time.monotonic() > deadline:
                break
    return found, invalid


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
            events, invalid = _collect_transcripts(url, n * cfg.eos_rounds, timeout_s=n * cfg.eos_rounds * 8 + 20)
    except (RuntimeError, httpx.HTTPError) as e:
        result.errors.append(f"EOS {variant}: {e}")
        return
    if invalid:
        result.errors.append(f"EOS {variant}: {invalid} audio event(s) did not match the contract (skipped)")
    for ev in events:
        stages = ev.stages_ms
        # The sentence it heard: the closest (a split or missed utterance must not shift the pairing).
        wer = min(word_error_rate(ref, ev.text) for ref in EOS_SENTENCES)
        result.rows.append({"type": "eos", "variant": variant, "turn_id": ev.turn_id, "text": ev.text,
                            "speech_ms": stages.get("speech"), "eos_to_transcript_ms": stages.get("eos_to_transcript"),
                            "asr_ms": stages.get("asr"), "asr_queue_ms": stages.get("asr_queue"),
                            "speculative_used": ev.speculative, "wer": round(wer, 4)})
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

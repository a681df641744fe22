"""`watus bench duplex`: talking over the robot, `aec` and `half` side by side in the virtual room.

Each mode runs the real audio pipeline in-process (piper speaks, Silero listens, faster-whisper
transcribes, WebRTC AEC3 cancels) with the `room` microphone: the robot's own output comes back through
a −6 dB echo path (40 ms, RT60 120 ms), and a second voice (espeak-ng, not piper's) talks over the
robot 1 s into its reply. Figures per mode:
- ERLE (dB): microphone / echo-cancelled energy while the robot talked and nobody else did;
- false barge-ins per minute of robot speech (pauses or speech starts with nobody talking);
- barge-in word retention: WER of the interrupting utterance's transcript against what was said;
- onset → playback stopped (ms, p50/p95): the person's first audible sound to the speaker going silent;
- AEC CPU: time in the canceller / audio time (fraction of one core).
Results: a table, `--json FILE`, and the `bench:duplex` section of docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from watus.bench import update_markdown_section
from watus.bench.speech_workload import word_error_rate
from watus.bench.stats import percentile

log = logging.getLogger(__name__)

ROBOT_REPLY = (
    "Let me tell you a long story about the robot that lived in the kitchen of a large old house. "
    "Every morning it watched the people come down the stairs, and it said hello to each of them by name. "
    "It listened to their questions about the weather, the news, and what there was to eat for breakfast. "
    "In the afternoon it cleaned the floor, watered the plants on the window sill, and sorted the letters. "
    "When the evening came, it sang a quiet song and waited patiently for the next day to begin again.")
PHRASES = ("Stop, please stop now.", "Wait a moment, I have a question.", "Excuse me, what is the time?",
           "Hold on, that is not what I asked.", "Sorry to interrupt, can you turn on the light?")


def espeak_wav(text: str, path: Path) -> Path:
    """The interrupting voice: espeak-ng, resampled to 16 kHz mono."""
    import soundfile as sf

    from audio.pcm import ASR_RATE, resample

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is needed for the second voice: apt-get install espeak-ng")
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us+f3", "-s", "150", "-w", str(raw), text], check=True,
                   capture_output=True)
    audio, rate = sf.read(raw, dtype="float32")
    sf.write(path, resample(audio.astype(np.float32), int(rate), ASR_RATE), ASR_RATE, subtype="PCM_16")
    return path


@dataclass
class BargeIn:
    phrase: str
    transcript: str | None
    wer: float
    onset_to_stop_ms: float | None


@dataclass
class ModeResult:
    mode: str
    erle_db: float | None = None
    robot_speech_s: float = 0.0
    false_barge_ins: int = 0
    aec_cpu_fraction: float | None = None
    barge_ins: list[BargeIn] = field(default_factory=list)

    @property
    def false_per_min(self) -> float:
        return self.false_barge_ins / max(self.robot_speech_s / 60, 1e-9)

    @property
    def mean_wer(self) -> float | None:
        return float(np.mean([b.wer for b in self.barge_ins])) if self.barge_ins else None

    def stop_ms(self, q: float) -> float | None:
        xs = [b.onset_to_stop_ms for b in self.barge_ins if b.onset_to_stop_ms is not None]
        return percentile(xs, q) if xs else None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "false_barge_ins_per_min": round(self.false_per_min, 2), "wer": self.mean_wer,
                "onset_to_stop_ms_p50": self.stop_ms(50), "onset_to_stop_ms_p95": self.stop_ms(95)}


async def _run_once(models: Any, mode: str, talker: Path | None, reply: str, wait_s: float) -> dict[str, Any]:
    """One reply in the room (with or without a talker 1 s in): the events, echo stats and room schedule."""
    from audio.events import EventBus
    from audio.metrics import AudioMetrics
    from audio.runtime import AudioRuntime
    from audio.settings import AudioSettings
    from watus.core import metrics as m

    settings = AudioSettings(speaker_backend="null", mic_backend="room", echo_mode=mode,
                             room_speech=[talker] if talker else [], room_speech_at_s=[1.0] if talker else [],
                             asr_threads=2, tts_threads=2)
    bus = EventBus(asyncio.get_running_loop())
    sub = bus.subscribe()
    runtime = AudioRuntime(settings, models, bus, AudioMetrics(m.new_registry()))
    events: list[Any] = []
    await runtime.start()
    try:
        assert runtime.speaker is not None
        await runtime.speaker.say(reply, models.voices.default, turn_id="reply", barge_in=False)
        deadline = asyncio.get_running_loop().time() + wait_s
        done = False
        while asyncio.get_running_loop().time() < deadline and not done:
            ev = await sub.next(0.2)
            if ev is None:
                continue
            events.append(ev)
            if ev.type == "playback_started" and runtime.room is not None:
                runtime.room.start_clock(ev.t_ns)
            done = ev.type == "playback_finished" or (talker is not None and ev.type == "transcript")
        await asyncio.sleep(0.5)
        while (ev := await sub.next(0.05)) is not None:
            events.append(ev)
        health = runtime.health()
    finally:
        await runtime.close()
    return {"events": events, "echo": health.get("echo"), "room": health.get("room")}


async def run_duplex(modes: list[str], phrases: list[str], reply: str, work: Path) -> list[ModeResult]:
    from audio.runtime import load_models
    from audio.settings import AudioSettings

    models = await load_models(AudioSettings(mic_backend="none", speaker_backend="null", asr_threads=2,
                                             tts_threads=2))
    clips = [espeak_wav(p, work / f"phrase-{i}.wav") for i, p in enumerate(phrases)]
    results = []
    try:
        for mode in modes:
            res = ModeResult(mode)
            quiet = await _run_once(models, mode, None, reply, 90)
            played = [e for e in quiet["events"] if e.type == "playback_finished"]
            res.robot_speech_s = sum(e.played_ms for e in played) / 1000
            res.false_barge_ins = sum(e.type in ("playback_paused", "speech_started") for e in quiet["events"])
            echo = quiet["echo"] or {}
            res.erle_db = echo.get("erle_db")
            res.aec_cpu_fraction = echo.get("cpu_fraction")
            for phrase, clip in zip(phrases, clips, strict=True):
                run = await _run_once(models, mode, clip, reply, 40)
                text = next((e.text for e in run["events"] if e.type == "transcript"), None)
                paused = next((e for e in run["events"] if e.type in ("playback_paused", "interrupted")), None)
                talkers = (run["room"] or {}).get("talkers") or [{}]
                onset = talkers[0].get("onset_ns")
                stop = None if paused is None or onset is None else round((paused.t_ns - onset) / 1e6, 1)
                res.barge_ins.append(BargeIn(phrase, text, round(word_error_rate(phrase, text or ""), 3), stop))
                log.info("%s: %r → %r (stop %s ms)", mode, phrase, text, stop)
            results.append(res)
    finally:
        models.close()
    return results


def _f(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def render_markdown(results: list[ModeResult], machine: str) -> str:
    by = {r.mode: r for r in results}
    lines = ["## Talking over the robot (`watus bench duplex`)", "",
             f"Machine: {machine}. Virtual room: −6 dB echo, 40 ms, RT60 120 ms; the robot says five long "
             "sentences; a second voice (espeak-ng) talks 1 s into the reply. One run, modes side by side.", "",
             "| mode | ERLE dB | false barge-ins / min | barge-in WER | onset → stopped p50 ms | p95 ms | "
             "AEC CPU (of one core) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        cpu = "—" if r.aec_cpu_fraction is None else f"{r.aec_cpu_fraction * 100:.2f} %"
        lines.append(f"| {r.mode} | {_f(r.erle_db)} | {r.false_per_min:.2f} | {_f(r.mean_wer, 3)} | "
                     f"{_f(r.stop_ms(50))} | {_f(r.stop_ms(95))} | {cpu} |")
    lines += ["", "Transcripts of the interruptions:", ""]
    for r in results:
        for b in r.barge_ins:
            lines.append(f"- {r.mode}: “{b.phrase}” → “{b.transcript}” (WER {b.wer:.2f}, stop "
                         f"{_f(b.onset_to_stop_ms)} ms)")
    aec = by.get("aec")
    if aec is not None:
        half = by.get("half")
        checks = [
            ("ERLE ≥ 25 dB", aec.erle_db is not None and aec.erle_db >= 25),
            ("zero false barge-ins", aec.false_barge_ins == 0),
            ("barge-in WER ≤ 0.15 (aec)", aec.mean_wer is not None and aec.mean_wer <= 0.15),
            ("aec WER below half's", half is None or (aec.mean_wer or 0) < (half.mean_wer or 1)),
            ("onset → stopped p95 ≤ 150 ms", (aec.stop_ms(95) or 1e9) <= 150),
            ("AEC CPU ≤ 5 % of one core", (aec.aec_cpu_fraction or 1) <= 0.05),
        ]
        lines += ["", "Goals: " + "; ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in checks) + "."]
    return "\n".join(lines)


def duplex(
    mode: Annotated[list[str] | None, typer.Option("--mode", help="Echo modes to compare, repeatable: aec, "
                                                   "half, off. Default: aec and half.")] = None,
    phrases: Annotated[int, typer.Option(min=1, max=len(PHRASES), help="Interrupting phrases per mode.")] = 5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON here.")] = None,
    report: Annotated[Path, typer.Option(help="Markdown file whose duplex section is rewritten.")] = Path(
        "docs/benchmarks.md"),
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not touch the Markdown report.")] = False,
) -> None:
    """Echo cancellation vs the half-duplex gate in the virtual room: ERLE, false barge-ins, barge-in WER,
    onset → playback stopped, AEC CPU."""
    from rich.console import Console

    modes = mode or ["aec", "half"]
    bad = [m for m in modes if m not in ("aec", "half", "off")]
    if bad:
        raise typer.BadParameter(f"unknown mode(s) {bad}: choose aec, half or off")
    console = Console()
    with tempfile.TemporaryDirectory(prefix="watus-duplex-") as tmp:
        try:
            results = asyncio.run(run_duplex(modes, list(PHRASES[:phrases]), ROBOT_REPLY, Path(tmp)))
        except RuntimeError as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(1) from None
    machine = f"{platform.machine()}, {platform.processor() or platform.platform()}, {os.cpu_count() or 1} cores"
    md = render_markdown(results, machine)
    console.print(md)
    if json_out is not None:
        json_out.write_text(json.dumps({"machine": machine, "modes": [r.as_json() for r in results]}, indent=2))
    if not no_report:
        update_markdown_section(report, "duplex", md)


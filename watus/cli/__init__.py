"""The `watus` command line: chat, listen, ask, up, status, doctor, bench, models, config.

Commands that need the LLM server start it on the CPU defaults when none answers (and stop it after),
so each works on a fresh machine right after `./install.sh`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from watus.agent.settings import AgentSettings
from watus.bench.cli import bench_app
from watus.cli import ops as cli_ops
from watus.cli.models import models_app
from watus.cli.services import llm_server
from watus.core.config import reveal

app = typer.Typer(help="Watus: the robot's brain that hears, sees and talks.", no_args_is_help=True,
                  add_completion=False)
console = Console()
err = Console(stderr=True)


async def _chat(settings: AgentSettings, prompt: str | None) -> None:
    """Text turns through the agent's brain: the scene (if vision runs), memory, streaming reply."""
    from watus.agent.brain import Session, TurnDeps, build_agent, stream_reply
    from watus.agent.scene import VisionClient
    from watus.core.timing import new_turn_id

    agent = build_agent(settings)
    vision = VisionClient(settings.vision_url, settings.service_timeout_s, settings.scene_max_age_ms,
                          api_key=reveal(settings.vision_api_key))
    session = Session(new_turn_id(), settings.memory_turns)
    try:
        while True:
            if prompt is None:
                try:
                    line = (await asyncio.to_thread(console.input, "[bold cyan]you> [/bold cyan]")).strip()
                except (EOFError, KeyboardInterrupt):
                    console.print()
                    return
                if not line:
                    return
                console.print("[bold green]watus>[/bold green] ", end="")
            else:
                line = prompt
            view = await vision.look()
            deps = TurnDeps(vision=vision, view=view, language=settings.language.value)
            async for delta in stream_reply(agent, session, line, deps, settings.max_reply_chars):
                console.print(delta, end="", markup=False, highlight=False, soft_wrap=True)
            console.print()
            if prompt is not None:
                return
    finally:
        await vision.aclose()


@app.command()
def chat(
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Ask once and exit.")] = None,
    url: Annotated[str | None, typer.Option(help="LLM server base URL (default: WATUS_AGENT_LLM_URL).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Longest reply in tokens.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    start: Annotated[bool, typer.Option(help="Start the LLM server if none is running.")] = True,
    log_dir: Annotated[Path, typer.Option(help="Where a started server writes its log.")] = Path("var/log"),
) -> None:
    """Text chat with the agent in the terminal (streaming; uses the camera scene if vision runs)."""
    overrides = {k: v for k, v in {"llm_url": url, "max_tokens": max_tokens, "temperature": temperature}.items()
                 if v is not None}
    try:
        settings = AgentSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:  # e.g. --max-tokens below the setting's minimum: one line, no traceback
        first = e.errors()[0]
        err.print(f"[red]{'.'.join(str(x) for x in first['loc'])}: {first['msg']}[/red]")
        raise typer.Exit(2) from None
    base = settings.llm_url.rstrip("/")
    with llm_server(base, start, log_dir / "llm.log", console, err):
        if prompt is None:
            console.print(f"[bold]Chatting with {settings.robot_name}[/bold] (LLM at {base}) — empty line to quit.")
        asyncio.run(_chat(settings, prompt))


async def _listen(settings: AgentSettings, turns: int | None) -> None:
    from watus.agent.audio_client import AudioClient
    from watus.agent.brain import Session, build_agent
    from watus.agent.scene import VisionClient
    from watus.agent.turnlog import TurnLog, TurnRecord
    from watus.agent.voice import VoiceLoop
    from watus.core.timing import new_turn_id

    done = asyncio.Event()
    count = 0

    def show(rec: TurnRecord) -> None:
        nonlocal count
        count += 1
        console.print(f"[bold cyan]you>[/bold cyan] {rec.transcript}")
        tag = " [yellow](interrupted)[/yellow]" if rec.interrupted else ""
        console.print(f"[bold green]{settings.robot_name.lower()}>[/bold green] {rec.reply}{tag}", highlight=False)
        e2e = f"{rec.e2e_ms:.0f} ms" if rec.e2e_ms is not None else "n/a"
        console.print(f"  [dim]e2e {e2e}; " + ", ".join(f"{k} {v:.0f}" for k, v in rec.stage_ms().items()
                                                        if not k.endswith("_step_ms")) + "[/dim]")
        if turns is not None and count >= turns:
            done.set()

    vision = VisionClient(settings.vision_url, settings.service_timeout_s, settings.scene_max_age_ms,
                          api_key=reveal(settings.vision_api_key))
    audio = AudioClient(settings.audio_url, settings.service_timeout_s, api_key=reveal(settings.audio_api_key))
    loop = VoiceLoop(settings, build_agent(settings), Session(new_turn_id(), settings.memory_turns), vision, audio,
                     TurnLog(settings.turn_log, settings.turn_log_max_bytes, settings.turn_log_backups), show)
    audio.on_lost = loop.audio_lost
    runner = asyncio.create_task(loop.run())
    try:
        await done.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await vision.aclose()
        await audio.aclose()


@app.command()
def listen(
    mic_wav: Annotated[Path | None, typer.Option("--mic-wav", help="A WAV file (or folder) as the microphone.",
                                                  exists=True)] = None,
    speaker_wav: Annotated[Path | None, typer.Option("--speaker-wav", help="Record what would be played here "
                                                      "instead of using the speaker.")] = None,
    turns: Annotated[int | None, typer.Option(min=1, help="Stop after this many turns (default: Ctrl-C).")] = None,
    start: Annotated[bool, typer.Option(help="Start the LLM and audio services if they are not running.")] = True,
    log_dir: Annotated[Path, typer.Option(help="Where started services write their logs.")] = Path("var/log"),
) -> None:
    """The voice loop: hear (microphone or --mic-wav), look, think and speak, turn after turn."""
    from watus.cli.services import ensure_service, healthy

    settings = AgentSettings()
    audio_env: dict[str, str] = {}
    if mic_wav is not None:
        audio_env.update(WATUS_AUDIO_MIC_BACKEND="file", WATUS_AUDIO_MIC_FILE=str(mic_wav.resolve()))
    if speaker_wav is not None:
        audio_env.update(WATUS_AUDIO_SPEAKER_BACKEND="wav", WATUS_AUDIO_SPEAKER_WAV_PATH=str(speaker_wav.resolve()))
    if audio_env and healthy(settings.audio_url):
        err.print(f"[red]An audio service already runs at {settings.audio_url}[/red]: it uses its own microphone "
                  "and speaker; stop it, or drop --mic-wav/--speaker-wav.")
        raise typer.Exit(2)
    with llm_server(settings.llm_url.rstrip("/"), start, log_dir / "llm.log", console, err):
        # Begin listening before the audio service starts, so the first words of a WAV mic are not missed.
        async def main() -> None:
            listener = asyncio.create_task(_listen(settings, turns))
            audio = ensure_service("audio", settings.audio_url, start, log_dir / "audio.log", console, err, audio_env)
            await asyncio.to_thread(audio.__enter__)  # waiting for health must not stall the listener
            try:
                console.print("Listening — Ctrl-C to stop.")
                await listener
            finally:
                await asyncio.to_thread(audio.__exit__, None, None, None)

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            console.print()


@app.command()
def ask(
    wav: Annotated[Path | None, typer.Option("--wav", help="The spoken question (WAV/FLAC/OGG/MP3).",
                                              exists=True, dir_okay=False)] = None,
    text: Annotated[str | None, typer.Option("--text", help="Or: a question piper speaks first (demo).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the spoken reply here (WAV).")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="The scene: this image (else the running vision "
                                                "service, if any).", exists=True, dir_okay=False)] = None,
    start: Annotated[bool, typer.Option(help="Start the LLM server if none is running.")] = True,
    log_dir: Annotated[Path, typer.Option(help="Where a started server writes its log.")] = Path("var/log"),
) -> None:
    """One spoken turn offline: transcribe, look, think, speak into OUT.wav; print the latency breakdown."""
    from rich.table import Table

    from watus.agent.ask import ask as run_ask
    from watus.agent.ask import breakdown

    if (wav is None) == (text is None):
        err.print("[red]Give exactly one of --wav FILE or --text 'question'.[/red]")
        raise typer.Exit(2)
    settings = AgentSettings()
    with (llm_server(settings.llm_url.rstrip("/"), start, log_dir / "llm.log", console, err),
          console.status("Loading speech models and answering ...")):
        try:
            result = asyncio.run(run_ask(wav, text, image, settings))
        except Exception as e:  # a bad file or a missing model: one line, no traceback
            err.print(f"[red]ask failed:[/red] {type(e).__name__}: {e}")
            raise typer.Exit(1) from e
    if out is not None:
        import soundfile as sf

        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(out, result.audio, result.sample_rate, subtype="PCM_16")
    console.print(f"[bold]transcript:[/bold] {result.transcript}")
    console.print("[bold]scene:[/bold] ", end="")
    console.print(result.scene, markup=False)
    console.print(f"[bold]reply:[/bold] {result.reply}")
    if result.record.error:
        err.print(f"[yellow]{result.record.error}[/yellow]")
    # The turn log's stage names and figures: ms after the end of speech (the end of the recording).
    table = Table(title=f"turn {result.record.turn_id}: ms after end of speech")
    table.add_column("stage")
    table.add_column("ms", justify="right")
    table.add_column("step ms", justify="right")
    for name, at, step in breakdown(result):
        table.add_row(name, "-" if at is None else f"{at:.0f}", "" if step is None else f"{step:.0f}")
    console.print(table)
    if out is not None:
        console.print(f"spoken reply: {out} ({len(result.audio) / result.sample_rate:.1f} s)")


@app.command("config")
def config_reference(
    env: Annotated[bool, typer.Option("--env", help="Print an env file (all settings commented out).")] = False,
    readme: Annotated[Path | None, typer.Option("--readme", help="Rewrite the reference in this README.")] = None,
) -> None:
    """Print every setting: env var, default and meaning (Markdown), or as an env file."""
    from watus.cli.settings_catalog import env_file, markdown_reference

    if readme is not None:
        from watus.cli.readme import update

        console.print(f"{readme}: {'updated' if update(readme) else 'already up to date'}")
        return
    sys.stdout.write(env_file() if env else markdown_reference())


app.add_typer(bench_app, name="bench")
app.add_typer(models_app, name="models")
app.command()(cli_ops.up)
app.command()(cli_ops.status)
app.command()(cli_ops.doctor)


def main() -> None:
    app()

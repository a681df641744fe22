"""The `watus` command line.

For now: `watus chat` (starts the LLM server on the CPU defaults when none is running, then chats with
it, streaming), `watus config` (every setting with its env var and default) and `watus bench`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from watus import cli_ops
from watus.bench.cli import bench_app

app = typer.Typer(help="Watus: the robot's brain that hears, sees and talks.", no_args_is_help=True,
                  add_completion=False)
console = Console()
err = Console(stderr=True)


def _llm_url_default() -> str:
    from trt_server.settings import LLMSettings

    s = LLMSettings()
    return f"http://{s.host}:{s.port}"


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _llm_server(url: str, start: bool, log_path: Path) -> Iterator[None]:
    """Use the server at `url`, or start `python -m trt_server` there and stop it afterwards."""
    if _healthy(url):
        yield
        return
    if not start:
        err.print(f"[red]No LLM server at {url}[/red]: start one with `python -m trt_server`, or drop --no-start.")
        raise typer.Exit(2)
    port = httpx.URL(url).port or 8080
    host = httpx.URL(url).host
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WATUS_LLM_PORT": str(port), "WATUS_LLM_HOST": host}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trt_server"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with console.status(f"Starting the LLM server on {url} (log: {log_path}) ..."):
            deadline = time.monotonic() + 180
            while not _healthy(url):
                if proc.poll() is not None:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                    err.print(f"[red]The LLM server exited ({proc.returncode}):[/red]\n" + "\n".join(tail))
                    raise typer.Exit(1)
                if time.monotonic() > deadline:
                    err.print(f"[red]The LLM server did not become healthy in 180 s; see {log_path}[/red]")
                    raise typer.Exit(1)
                time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _stream_reply(client: Any, model: str, history: list[dict[str, str]], max_tokens: int,
                  temperature: float) -> str:
    stream = client.chat.completions.create(model=model, messages=history, stream=True,
                                            max_tokens=max_tokens, temperature=temperature)
    parts: list[str] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            piece = chunk.choices[0].delta.content
            parts.append(piece)
            console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
    console.print()
    return "".join(parts)


@app.command()
def chat(
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Ask once and exit.")] = None,
    url: Annotated[str | None, typer.Option(help="LLM server base URL (default from WATUS_LLM_HOST/PORT).")] = None,
    system: Annotated[str, typer.Option(help="System prompt.")] = "You are Watus, a helpful robot.",
    max_tokens: Annotated[int, typer.Option(help="Longest reply in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    start: Annotated[bool, typer.Option(help="Start the LLM server if none is running.")] = True,
    log_dir: Annotated[Path, typer.Option(help="Where a started server writes its log.")] = Path("var/log"),
) -> None:
    """Chat with the LLM in the terminal (streaming). Empty line or Ctrl-D ends."""
    import openai

    base = (url or _llm_url_default()).rstrip("/")
    with _llm_server(base, start, log_dir / "llm.log"):
        client = openai.OpenAI(base_url=base + "/v1", api_key=os.environ.get("WATUS_LLM_API_KEY") or "none")
        model = client.models.list().data[0].id
        history = [{"role": "system", "content": system}]
        if prompt is not None:
            history.append({"role": "user", "content": prompt})
            _stream_reply(client, model, history, max_tokens, temperature)
            return
        console.print(f"[bold]Chatting with {model}[/bold] at {base} — empty line to quit.")
        while True:
            try:
                line = console.input("[bold cyan]you> [/bold cyan]").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if not line:
                break
            history.append({"role": "user", "content": line})
            console.print("[bold green]watus>[/bold green] ", end="")
            reply = _stream_reply(client, model, history, max_tokens, temperature)
            history.append({"role": "assistant", "content": reply})


@app.command("config")
def config_reference(
    env: Annotated[bool, typer.Option("--env", help="Print an env file (all settings commented out).")] = False,
) -> None:
    """Print every setting: env var, default and meaning (Markdown), or as an env file."""
    from watus.settings_catalog import env_file, markdown_reference

    sys.stdout.write(env_file() if env else markdown_reference())


app.add_typer(bench_app, name="bench")
app.command()(cli_ops.up)
app.command()(cli_ops.status)
app.command()(cli_ops.doctor)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

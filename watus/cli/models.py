"""`watus models ...`: prepare, check and export models (mounted by `watus.cli` as `models`).

Only this layer prints. The work is in `watus.core.modelstore` (steps, checksums, the tool venv) and in
each service's `modelsetup` module; `export-yolo` runs `vision/export.py` with the tool interpreter.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from watus.core.modelstore import (
    ModelStoreSettings,
    SetupError,
    SetupStep,
    ToolEnv,
    load_manifest,
    run_setup,
    select_steps,
    step_state,
)

models_app = typer.Typer(help="Prepare the models every process needs (once, offline), check them, export YOLO.",
                         no_args_is_help=True)
console = Console()
err = Console(stderr=True)
log = logging.getLogger(__name__)


def _settings(cache_dir: Path | None, tool_python: Path | None) -> ModelStoreSettings:
    overrides: dict[str, object] = {}
    if cache_dir is not None:
        overrides["cache_dir"] = cache_dir
    if tool_python is not None:
        overrides["tool_python"] = tool_python
    return ModelStoreSettings(**overrides)  # type: ignore[arg-type]


def all_steps() -> list[SetupStep]:
    """Every service's setup steps, vision's first. Collected here, at the top layer: `watus.core` knows
    no service, and each service declares its own steps in its `modelsetup` module."""
    from audio.modelsetup import setup_steps as audio_steps
    from vision.modelsetup import setup_steps as vision_steps

    steps: dict[str, SetupStep] = {}
    for provider in (vision_steps, audio_steps):
        for step in provider():
            steps[step.name] = step
    return list(steps.values())


def _steps(only: list[str] | None) -> list[SetupStep]:
    try:
        return select_steps(all_steps(), only or ())
    except SetupError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Model cache (WATUS_MODELS_CACHE_DIR).")]
OnlyOpt = Annotated[list[str] | None, typer.Option("--only", help="Step or group (e.g. vision), repeatable.")]


@models_app.command("setup")
def setup(
    only: OnlyOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Run steps again even when done.")] = False,
    cache_dir: CacheOpt = None,
    tool_python: Annotated[Path | None, typer.Option(
        help="Python with torch + ultralytics to export with (WATUS_MODELS_TOOL_PYTHON); default: a tool venv "
        "that setup makes in the cache.")] = None,
    remove_tool_env: Annotated[bool, typer.Option(
        "--remove-tool-env", help="Delete the tool venv (1-2 GB) afterwards; a later setup makes it again.")] = False,
) -> None:
    """Prepare every model not prepared yet (idempotent; checksums in <cache>/manifest.json)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    settings = _settings(cache_dir, tool_python)
    steps = _steps(only)
    console.print(f"model cache: {settings.cache_dir}")
    started = time.monotonic()

    def progress(step: SetupStep, outcome: str, error: str | None) -> None:
        if outcome == "start":
            console.print(f"[cyan]…[/cyan] {step.name}: {step.description}")
        elif outcome == "ok":
            console.print(f"[green]✓[/green] {step.name} (already done)")
        elif outcome == "done":
            console.print(f"[green]✓[/green] {step.name}")
        else:
            console.print(f"[red]✗ {step.name}[/red]: {error}")

    results = run_setup(steps, settings=settings, force=force, progress=progress)
    cache = settings.cache_dir.expanduser()
    if remove_tool_env and ToolEnv(cache, settings, [], cache / "logs" / "setup.log").remove():
        console.print("tool venv removed")
    failed = [r for r in results if r.outcome == "failed"]
    ran = sum(1 for r in results if r.outcome == "done")
    console.print(f"{ran} step(s) run, {len(results) - ran - len(failed)} already done, {len(failed)} failed "
                  f"in {time.monotonic() - started:.0f} s")
    if failed:
        raise typer.Exit(1)


@models_app.command("status")
def status(
    only: OnlyOpt = None,
    cache_dir: CacheOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="Compare sizes only, do not re-hash the files.")] = False,
) -> None:
    """Every setup step, whether its files are there with their recorded checksums."""
    settings = _settings(cache_dir, None)
    cache = settings.cache_dir.expanduser()
    manifest = load_manifest(cache)
    table = Table(title=f"models in {cache}")
    for col in ("step", "state", "files", "description"):
        table.add_column(col, overflow="fold")
    bad = 0
    for step in _steps(only):
        st = step_state(step, cache, manifest, verify=not quick)
        bad += not st.done
        colour = "green" if st.done else "yellow"
        files = "\n".join(f"{rel} ({st.outputs.get(rel, {}).get('sha256', '?')[:12]})" for rel in step.outputs)
        table.add_row(step.name, f"[{colour}]{st.state}[/{colour}] {st.detail}".strip(), files, step.description)
    console.print(table)
    if bad:
        console.print(f"{bad} step(s) not ready: run `watus models setup`")
        raise typer.Exit(1)


models_app.command("list", help="Same as `status`.")(status)


@models_app.command("export-yolo")
def export_yolo(
    source: Annotated[Path, typer.Argument(help="YOLO checkpoint (.pt).", exists=True, dir_okay=False)],
    out: Annotated[Path | None, typer.Option(help="File to write (default: next to the cache's vision "
                                                "models, named after the checkpoint).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto (engine on a CUDA GPU with TensorRT, else onnx), "
                                      "onnx or engine.")] = "auto",
    imgsz: Annotated[int, typer.Option(min=32, max=4096, help="Square input size, a multiple of 32.")] = 640,
    half: Annotated[bool, typer.Option("--half/--no-half", help="FP16 engine.")] = True,
    workspace: Annotated[float, typer.Option(min=0.1, help="TensorRT builder workspace (GiB).")] = 4.0,
    device: Annotated[str | None, typer.Option(help="CUDA device for an engine (default 0).")] = None,
    detect_only: Annotated[bool, typer.Option("--detect-only", help="Export a -seg checkpoint as a plain "
                                              "detector.")] = False,
    cache_dir: CacheOpt = None,
    tool_python: Annotated[Path | None, typer.Option(help="Python with torch + ultralytics (default: "
                                                        "WATUS_MODELS_TOOL_PYTHON, else the tool venv).")] = None,
) -> None:
    """Export any YOLO `.pt` to a TensorRT `.engine` (FP16) on a GPU box, or to ONNX elsewhere."""
    from vision.modelsetup import EXPORT_SCRIPT, EXPORT_TOOLS

    if imgsz % 32:
        raise typer.BadParameter("must be a multiple of 32", param_hint="--imgsz")
    if fmt not in ("auto", "onnx", "engine"):
        raise typer.BadParameter("auto, onnx or engine", param_hint="--format")
    settings = _settings(cache_dir, tool_python)
    cache = settings.cache_dir.expanduser()
    (cache / "logs").mkdir(parents=True, exist_ok=True)
    step = SetupStep(name="export-yolo", group="tools", description="", outputs=(), run=lambda ctx: None,
                     tool_requirements=EXPORT_TOOLS)
    tools = ToolEnv(cache, settings, [step], cache / "logs" / "export.log")
    target = out or cache / "vision" / source.stem  # export.py adds the suffix of the format it picks
    args = [str(EXPORT_SCRIPT), "yolo", str(source.resolve()), str(target), "--format", fmt, "--imgsz", str(imgsz),
            "--half" if half else "--no-half", "--workspace", str(workspace)]
    if device is not None:
        args += ["--device", device]
    if detect_only:
        args.append("--detect-only")
    try:
        with console.status("exporting (the first run also makes the tool venv) ..."):
            output = tools.run([str(tools.python()), *args])
    except SetupError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    line = next((x for x in output.splitlines() if x.startswith("WATUS-EXPORT ")), "")
    console.print(line.removeprefix("WATUS-EXPORT ") or output.strip().splitlines()[-1])


def _register_build_llm() -> None:
    """`watus models build-llm` from `models/build_llm.py`, a recipe file of the source tree, not a package.

    It lives with the other recipes (next to its JSON recipes) in the checkout, and in /opt/watus/src on
    the robot after deploy/install.sh; it is loaded from there by path.
    """
    import importlib.util

    import watus

    for root in (Path(watus.__file__).resolve().parents[1], Path("/opt/watus/src")):
        path = root / "models" / "build_llm.py"
        if not path.is_file():
            continue
        spec = importlib.util.spec_from_file_location("watus_build_llm", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        models_app.command("build-llm")(module.build_llm_command)
        return


_register_build_llm()

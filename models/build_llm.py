"""Build a TensorRT-LLM engine for the robot from a Hugging Face checkpoint (`watus models build-llm`).

An engine is specific to the GPU, the TensorRT version and every build flag, so it is built on the
robot itself, and what went into it is written down next to it: the LLM server reports that manifest
in `/v1/models`, so a figure measured later can always be traced to the exact build.

Two steps, as NVIDIA's Jetson guide for TensorRT-LLM v0.12.0-jetson does them:
1. `convert_checkpoint.py` from the examples folder of the installed TensorRT-LLM (`examples/llama`
   for Llama-3, `examples/qwen` for Qwen2.5) turns the HF checkpoint into a TensorRT-LLM checkpoint,
   quantising the weights to INT4 on the way (`--use_weight_only --weight_only_precision int4`), or
   reading a GPTQ checkpoint as it is (`int4_gptq --per_group`);
2. `trtllm-build` compiles that into the engine (`--gemm_plugin float16`, the batch and length limits,
   `--use_paged_context_fmha enable`).
Then the tokenizer files are copied next to the engine (so `WATUS_LLM_MODEL_PATH` alone is enough) and
`watus_manifest.json` is written. Every tool's output goes to `build_llm.log` in the engine folder.

This file is the entry point (`build_llm`, the `build_llm_command` CLI); the work is in its siblings:
`build_llm_recipes.py` (recipes and input checks), `build_llm_plan.py` (tools and command lines),
`build_llm_steps.py` (folders, running the tools, the manifest). Recipes (`models/llm_recipes/*.json`)
are JSON because the robot's Python (3.10, JetPack 6) has no `tomllib`. `models/` is not an installed
package: the CLI loads this file by path, and `python models/build_llm.py --help` runs it directly, so
this file puts its own folder on `sys.path` for the siblings to import by name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

sys.path.append(str(Path(__file__).resolve().parent))

from build_llm_plan import BuildPlan, Command, find_examples_dir, find_trtllm_build, plan_build
from build_llm_recipes import BuildError, Limits, Recipe, list_recipes, load_recipe
from build_llm_steps import (
    LOG_FILE,
    MANIFEST_FILE,
    make_manifest,
    memory_warning,
    prepare_dir,
    run_tool,
    tool_versions,
)

__all__ = [
    "LOG_FILE",
    "MANIFEST_FILE",
    "BuildError",
    "BuildPlan",
    "BuildResult",
    "Command",
    "Limits",
    "ProgressFn",
    "Recipe",
    "build_llm",
    "build_llm_command",
    "find_examples_dir",
    "find_trtllm_build",
    "list_recipes",
    "load_recipe",
    "plan_build",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]


@dataclass
class BuildResult:
    plan: BuildPlan
    manifest: dict[str, Any] | None = None
    manifest_path: Path | None = None
    log_path: Path | None = None


def build_llm(checkpoint: Path, output_dir: Path, *, recipe: str | Recipe = "llama-3-8b-instruct",
              quantization: str = "auto", max_batch_size: int | None = None, max_input_len: int | None = None,
              max_seq_len: int | None = None, max_num_tokens: int | None = None, examples_dir: Path | None = None,
              python: str | None = None, trtllm_build: str | None = None, work_dir: Path | None = None,
              keep_checkpoint: bool = False, overwrite: bool = False, dry_run: bool = False,
              progress: ProgressFn | None = None) -> BuildResult:
    """Convert and build; with `dry_run` only check and plan (the commands are in `result.plan`).

    Raises BuildError for arguments that cannot work, missing tools, and failed steps.
    """
    plan = plan_build(checkpoint, output_dir, recipe=recipe, quantization=quantization,
                      max_batch_size=max_batch_size, max_input_len=max_input_len, max_seq_len=max_seq_len,
                      max_num_tokens=max_num_tokens, examples_dir=examples_dir, python=python,
                      trtllm_build=trtllm_build, work_dir=work_dir, strict_tools=not dry_run)
    if warning := memory_warning(plan.recipe):
        plan.warnings.append(warning)
    for warning in plan.warnings:
        log.warning("%s", warning)
    if dry_run:
        return BuildResult(plan=plan)
    say = progress or (lambda text: log.info("%s", text))
    versions = tool_versions(plan.python)
    installed = versions.get("tensorrt_llm")
    if installed is None:
        log.warning("%s has no tensorrt_llm package: the conversion will fail", plan.python)
    elif plan.examples_version and not installed.startswith(plan.examples_version):
        log.warning("convert_checkpoint.py comes from TensorRT-LLM %s but %s is installed: converters and the "
                    "builder of different versions often disagree on the checkpoint format",
                    plan.examples_version, installed)
    prepare_dir(plan.output_dir, overwrite, "engine folder")
    prepare_dir(plan.work_dir, True, "checkpoint work folder")
    log_path = plan.output_dir / LOG_FILE
    # The robot is usually offline: the Hub must not be asked for anything the folder already holds.
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1")}
    seconds: dict[str, float] = {}
    with log_path.open("w", encoding="utf-8") as log_file:
        log_file.write(f"watus build-llm {plan.recipe.name} {plan.quantization} "
                       f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
        say(f"converting {plan.checkpoint.name} ({plan.quantization}) -> {plan.work_dir}")
        seconds["convert_checkpoint"] = run_tool(plan.convert, "convert_checkpoint.py", log_file, log_path, env)
        if not (plan.work_dir / "config.json").is_file():
            raise BuildError(f"convert_checkpoint.py wrote no config.json into {plan.work_dir} (log: {log_path})")
        say(f"building the engine -> {plan.output_dir}")
        seconds["trtllm_build"] = run_tool(plan.build, "trtllm-build", log_file, log_path, env)
    if not (plan.output_dir / "config.json").is_file() or not any(plan.output_dir.glob("*.engine")):
        raise BuildError(f"trtllm-build wrote no engine into {plan.output_dir} (log: {log_path})")
    for name in plan.tokenizer_files:
        shutil.copy2(plan.checkpoint / name, plan.output_dir / name)
    manifest = make_manifest(plan, versions, seconds)
    manifest_path = plan.output_dir / MANIFEST_FILE
    tmp = manifest_path.with_name(MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(manifest_path)
    if not keep_checkpoint:
        shutil.rmtree(plan.work_dir, ignore_errors=True)
    say(f"engine ready: {plan.output_dir} (manifest {manifest_path.name}, log {LOG_FILE})")
    return BuildResult(plan=plan, manifest=manifest, manifest_path=manifest_path, log_path=log_path)


# -- command line ---------------------------------------------------------------------------------------


def build_llm_command(
    checkpoint: Annotated[Path, typer.Argument(help="Hugging Face checkpoint folder (config.json, weights, "
                                               "tokenizer).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Engine folder to create; point "
                                         "WATUS_LLM_MODEL_PATH at it.")],
    recipe: Annotated[str, typer.Option(help=f"Recipe name ({', '.join(list_recipes())}) or a .json file.")
                      ] = "llama-3-8b-instruct",
    quantization: Annotated[str, typer.Option(help="auto (int4_gptq for a GPTQ checkpoint, else int4), int4 or "
                                              "int4_gptq.")] = "auto",
    max_batch_size: Annotated[int | None, typer.Option(min=1, max=256, help="Default: the recipe's.")] = None,
    max_input_len: Annotated[int | None, typer.Option(min=1, help="Longest prompt (default: the recipe's).")] = None,
    max_seq_len: Annotated[int | None, typer.Option(min=2, help="Prompt + output (default: the recipe's).")] = None,
    max_num_tokens: Annotated[int | None, typer.Option(min=1, help="Tokens per engine step (default: "
                                                       "trtllm-build's).")] = None,
    examples_dir: Annotated[Path | None, typer.Option(envvar="WATUS_TRTLLM_EXAMPLES_DIR", help="examples/ of the "
                                                      "installed TensorRT-LLM (default /opt/TensorRT-LLM/examples).")
                            ] = None,
    python: Annotated[str | None, typer.Option(help="Python with tensorrt_llm (default: this one).")] = None,
    trtllm_build: Annotated[str | None, typer.Option(help="trtllm-build (default: next to the Python, else PATH).")
                            ] = None,
    work_dir: Annotated[Path | None, typer.Option(help="TensorRT-LLM checkpoint folder (default: next to the "
                                                  "engine, removed afterwards).")] = None,
    keep_checkpoint: Annotated[bool, typer.Option("--keep-checkpoint", help="Keep the converted checkpoint.")
                               ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild into an existing engine folder.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the arguments and print the commands.")] = False,
) -> None:
    """Build a TensorRT-LLM INT4 engine from a Hugging Face checkpoint (on the robot), with a manifest."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        result = build_llm(checkpoint, output, recipe=recipe, quantization=quantization,
                           max_batch_size=max_batch_size, max_input_len=max_input_len, max_seq_len=max_seq_len,
                           max_num_tokens=max_num_tokens, examples_dir=examples_dir, python=python,
                           trtllm_build=trtllm_build, work_dir=work_dir, keep_checkpoint=keep_checkpoint,
                           overwrite=overwrite, dry_run=dry_run, progress=typer.echo)
    except BuildError as e:
        typer.secho(f"build-llm: {e}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    plan = result.plan
    if dry_run:
        typer.echo(f"# {plan.recipe.model} -> {plan.output_dir} ({plan.quantization})")
        for cmd in plan.commands:
            typer.echo(cmd.shell())
        typer.echo(f"# then: copy {', '.join(plan.tokenizer_files)} and write {MANIFEST_FILE} into {plan.output_dir}")
        return
    typer.echo(f"WATUS_LLM_ENGINE=trtllm\nWATUS_LLM_MODEL_PATH={plan.output_dir}")


if __name__ == "__main__":
    # Run from a checkout (`python models/build_llm.py ...`): `watus` may not be installed yet.
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
    typer.run(build_llm_command)

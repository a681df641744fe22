"""Planning a TensorRT-LLM build: the converter and `trtllm-build` found, and their exact command lines.

Two steps, as NVIDIA's Jetson guide for TensorRT-LLM v0.12.0-jetson does them: `convert_checkpoint.py`
from the examples folder of the installed TensorRT-LLM (`examples/llama`, `examples/qwen`) quantises
the HF checkpoint to INT4 on the way, then `trtllm-build` compiles the engine. A `BuildPlan` is all of
it resolved and checked, before anything runs. Part of `models/build_llm.py`, which loads it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build_llm_recipes import (
    BuildError,
    Limits,
    Recipe,
    check_checkpoint,
    check_limits,
    load_recipe,
    resolve_quantization,
)

#: Where setup.sh puts the TensorRT-LLM sources, and where the jetson-containers image has them.
DEFAULT_EXAMPLES_DIRS = (Path("/opt/TensorRT-LLM/examples"), Path.home() / "TensorRT-LLM" / "examples")
#: Files of an HF tokenizer; never config.json, which in the engine folder is the engine's own.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json")


@dataclass(frozen=True)
class Command:
    """One tool run: argv and the folder it runs in."""

    argv: tuple[str, ...]
    cwd: Path | None = None

    def shell(self) -> str:
        line = shlex.join(self.argv)
        return f"cd {shlex.quote(str(self.cwd))} && {line}" if self.cwd else line


@dataclass
class BuildPlan:
    """Everything checked and resolved: what will run, and what goes into the manifest."""

    recipe: Recipe
    checkpoint: Path
    output_dir: Path
    work_dir: Path
    quantization: str
    group_size: int | None
    limits: Limits
    python: str
    convert: Command
    build: Command
    tokenizer_files: list[str]
    checkpoint_info: dict[str, Any]
    #: `__version__` of the TensorRT-LLM source tree the converter comes from, when it is in one.
    examples_version: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def commands(self) -> list[Command]:
        return [self.convert, self.build]


def find_examples_dir(given: Path | None) -> Path | None:
    if given is not None:
        return given.expanduser()
    return next((d for d in DEFAULT_EXAMPLES_DIRS if d.is_dir()), None)


def find_trtllm_build(given: str | None, python: str) -> str | None:
    """The given path, else `trtllm-build` next to the interpreter (its venv), else on PATH."""
    if given:
        return given
    beside = Path(python).parent / "trtllm-build"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("trtllm-build")


def _source_version(examples_dir: Path) -> str | None:
    """`__version__` of the TensorRT-LLM source tree the examples belong to, when they are in one."""
    version_py = examples_dir.parent / "tensorrt_llm" / "version.py"
    try:
        m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_py.read_text(encoding="utf-8"))
    except OSError:
        return None
    return m.group(1) if m else None


def plan_build(checkpoint: Path, output_dir: Path, *, recipe: str | Recipe = "llama-3-8b-instruct",
               quantization: str = "auto", max_batch_size: int | None = None, max_input_len: int | None = None,
               max_seq_len: int | None = None, max_num_tokens: int | None = None,
               examples_dir: Path | None = None, python: str | None = None, trtllm_build: str | None = None,
               work_dir: Path | None = None, strict_tools: bool = True) -> BuildPlan:
    """Check every argument and resolve the tools; with `strict_tools=False` (dry run) missing tools are
    warnings and the commands name where they would be."""
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    checkpoint = checkpoint.expanduser().resolve()
    output_dir = output_dir.expanduser().resolve()
    info = check_checkpoint(checkpoint, rec)
    quant, group = resolve_quantization(quantization, info["quant"])
    limits = Limits(max_batch_size=max_batch_size or rec.max_batch_size,
                    max_input_len=max_input_len or rec.max_input_len,
                    max_seq_len=max_seq_len or rec.max_seq_len,
                    max_num_tokens=max_num_tokens if max_num_tokens is not None else rec.max_num_tokens)
    check_limits(limits, info["config"])
    warnings: list[str] = []
    work = (work_dir.expanduser().resolve() if work_dir is not None
            else output_dir.parent / f"{output_dir.name}.tllm_checkpoint")
    for folder, what in ((output_dir, "engine folder"), (work, "work folder")):
        if folder == checkpoint or checkpoint in folder.parents or folder in checkpoint.parents:
            raise BuildError(f"the {what} {folder} must not be, contain or sit inside the checkpoint folder")
    if work == output_dir:
        raise BuildError("the work folder must differ from the engine folder")
    py = python or sys.executable

    examples = find_examples_dir(examples_dir)
    script = (examples or DEFAULT_EXAMPLES_DIRS[0]) / rec.family / "convert_checkpoint.py"
    if not script.is_file():
        msg = (f"{script} not found: point --examples-dir (WATUS_TRTLLM_EXAMPLES_DIR) at the examples folder of the "
               "installed TensorRT-LLM (deploy/jetson/setup.sh puts it in /opt/TensorRT-LLM/examples)")
        if strict_tools:
            raise BuildError(msg)
        warnings.append(msg)
    builder = find_trtllm_build(trtllm_build, py)
    if builder is None:
        msg = "trtllm-build not found next to the Python nor on PATH (it comes with the tensorrt_llm wheel)"
        if strict_tools:
            raise BuildError(msg)
        warnings.append(msg)
        builder = "trtllm-build"

    convert_argv = [py, str(script), "--model_dir", str(checkpoint), "--output_dir", str(work),
                    "--dtype", rec.dtype, "--use_weight_only", "--weight_only_precision", quant]
    if quant == "int4_gptq":
        convert_argv += ["--per_group", "--group_size", str(group)]
    build_argv = [builder, "--checkpoint_dir", str(work), "--output_dir", str(output_dir),
                  "--gemm_plugin", "float16", "--max_batch_size", str(limits.max_batch_size),
                  "--max_input_len", str(limits.max_input_len), "--max_seq_len", str(limits.max_seq_len),
                  "--use_paged_context_fmha", "enable"]
    if limits.max_num_tokens is not None:
        build_argv += ["--max_num_tokens", str(limits.max_num_tokens)]
    tokenizer_files = [name for name in TOKENIZER_FILES if (checkpoint / name).is_file()]
    return BuildPlan(recipe=rec, checkpoint=checkpoint, output_dir=output_dir, work_dir=work, quantization=quant,
                     group_size=group, limits=limits, python=py, convert=Command(tuple(convert_argv), script.parent),
                     build=Command(tuple(build_argv)), tokenizer_files=tokenizer_files,
                     checkpoint_info={"architectures": info["architectures"], "quantization_config": info["quant"]},
                     examples_version=_source_version(script.parent.parent), warnings=warnings)

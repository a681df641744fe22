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

Recipes (`models/llm_recipes/*.json`) hold each model's family, expected architecture and limits; JSON
because the robot's Python (3.10, JetPack 6) has no `tomllib`. `models/` is not an installed package:
the CLI loads this file by path, and `python models/build_llm.py --help` runs it directly.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Annotated, Any

import typer

log = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parent / "llm_recipes"
MANIFEST_FILE = "watus_manifest.json"  # the name trt_server/engines/trtllm.py reads
LOG_FILE = "build_llm.log"
#: Where setup.sh puts the TensorRT-LLM sources, and where the jetson-containers image has them.
DEFAULT_EXAMPLES_DIRS = (Path("/opt/TensorRT-LLM/examples"), Path.home() / "TensorRT-LLM" / "examples")
QUANTIZATIONS = ("int4", "int4_gptq")
#: Files of an HF tokenizer; never config.json, which in the engine folder is the engine's own.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json")
_VERSIONS_SCRIPT = """
import importlib.metadata as md, json
out = {}
for name in ("tensorrt_llm", "tensorrt", "torch", "transformers"):
    try:
        out[name] = md.version(name)
    except Exception:
        out[name] = None
if out["tensorrt"] is None:  # JetPack's python3-libnvinfer may come without package metadata
    try:
        import tensorrt
        out["tensorrt"] = tensorrt.__version__
    except Exception:
        pass
print(json.dumps(out))
"""

#: Called with a short line at each step of a real build.
ProgressFn = Callable[[str], None]


class BuildError(Exception):
    """Arguments that cannot work, a missing tool, or a tool that failed (with its log's tail)."""


@dataclass(frozen=True)
class Recipe:
    """One model: which converter folder, what the checkpoint must be, the default engine limits."""

    name: str
    model: str
    family: str
    architectures: tuple[str, ...]
    hf_repo: str
    gptq_repo: str | None = None
    license: str = ""
    dtype: str = "float16"
    max_batch_size: int = 4
    max_input_len: int = 3072
    max_seq_len: int = 4096
    max_num_tokens: int | None = None
    build_memory_gb: float = 20.0
    kv_cache_kib_per_token: float | None = None
    expected: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name_or_path: str) -> Recipe:
    """A recipe by name (`llama-3-8b-instruct`) or by the path of a JSON file."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = RECIPES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise BuildError(f"no recipe {name_or_path!r}: choose one of {', '.join(list_recipes())} or give a .json file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["architectures"] = tuple(data.get("architectures") or ())
        data["notes"] = tuple(data.get("notes") or ())
        return Recipe(**data)
    except (OSError, ValueError, TypeError) as e:
        raise BuildError(f"unreadable recipe {path}: {e}") from e


@dataclass(frozen=True)
class Command:
    """One tool run: argv and the folder it runs in."""

    argv: tuple[str, ...]
    cwd: Path | None = None

    def shell(self) -> str:
        line = shlex.join(self.argv)
        return f"cd {shlex.quote(str(self.cwd))} && {line}" if self.cwd else line


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int | None


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


@dataclass
class BuildResult:
    plan: BuildPlan
    manifest: dict[str, Any] | None = None
    manifest_path: Path | None = None
    log_path: Path | None = None


# -- checks ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BuildError(f"unreadable {path}: {e}") from e
    if not isinstance(data, dict):
        raise BuildError(f"{path} is not a JSON object")
    return data


def _gptq_config(checkpoint: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's quantisation config (config.json, or AutoGPTQ's older quantize_config.json)."""
    quant = config.get("quantization_config")
    if isinstance(quant, dict):
        return quant
    legacy = checkpoint / "quantize_config.json"
    if legacy.is_file():
        data = _read_json(legacy)
        data.setdefault("quant_method", "gptq")
        return data
    return None


def check_checkpoint(checkpoint: Path, recipe: Recipe) -> dict[str, Any]:
    """What the build needs from the HF folder: config.json of the right architecture, weights, tokenizer."""
    if not checkpoint.is_dir():
        raise BuildError(f"checkpoint folder not found: {checkpoint}")
    config_path = checkpoint / "config.json"
    if not config_path.is_file():
        raise BuildError(f"{checkpoint} has no config.json: give the folder of a Hugging Face checkpoint "
                         f"(e.g. `hf download {recipe.hf_repo} --local-dir {checkpoint}`)")
    config = _read_json(config_path)
    archs = [str(a) for a in config.get("architectures") or []]
    if recipe.architectures and not set(archs) & set(recipe.architectures):
        raise BuildError(f"{checkpoint} is a {', '.join(archs) or 'model of unknown architecture'}, but recipe "
                         f"{recipe.name} converts {', '.join(recipe.architectures)}: pick the matching --recipe")
    if not any(checkpoint.glob("*.safetensors")) and not any(checkpoint.glob("pytorch_model*.bin")):
        raise BuildError(f"{checkpoint} holds no weights (*.safetensors or pytorch_model*.bin)")
    if not (checkpoint / "tokenizer_config.json").is_file() or not (
            (checkpoint / "tokenizer.json").is_file() or (checkpoint / "tokenizer.model").is_file()):
        raise BuildError(f"{checkpoint} has no tokenizer (tokenizer_config.json plus tokenizer.json or "
                         "tokenizer.model): the server needs it next to the engine")
    return {"config": config, "architectures": archs, "quant": _gptq_config(checkpoint, config)}


def resolve_quantization(requested: str, quant: dict[str, Any] | None) -> tuple[str, int | None]:
    """(int4 | int4_gptq, GPTQ group size) for the request and the checkpoint's own quantisation."""
    method = str(quant.get("quant_method", "")).lower() if quant else ""
    if method and method != "gptq":
        raise BuildError(f"the checkpoint is quantised with {method!r}; these recipes take an FP16/BF16 checkpoint "
                         "(int4) or a 4-bit GPTQ one (int4_gptq)")
    if requested == "auto":
        requested = "int4_gptq" if method == "gptq" else "int4"
    if requested not in QUANTIZATIONS:
        raise BuildError(f"quantization must be auto, {' or '.join(QUANTIZATIONS)}, not {requested!r}")
    if requested == "int4" and method == "gptq":
        raise BuildError("the checkpoint is already GPTQ-quantised: build it with --quantization int4_gptq")
    if requested == "int4_gptq":
        if method != "gptq" or quant is None:
            raise BuildError("int4_gptq needs a GPTQ checkpoint (quantization_config.quant_method = gptq in "
                             "config.json); for an FP16 checkpoint use --quantization int4")
        bits = int(quant.get("bits", 4))
        if bits != 4:
            raise BuildError(f"the GPTQ checkpoint has {bits}-bit weights; int4_gptq needs 4")
        group = int(quant.get("group_size", 128))
        if group not in (32, 64, 128):
            raise BuildError(f"GPTQ group size {group} is not one TensorRT-LLM's weight-only kernels take (32/64/128)")
        return requested, group
    return requested, None


def check_limits(limits: Limits, config: dict[str, Any]) -> None:
    """Range checks, and no sequence longer than the model was trained for (BuildError)."""
    if not 1 <= limits.max_batch_size <= 256:
        raise BuildError(f"max_batch_size must be within 1..256, got {limits.max_batch_size}")
    if not 1 <= limits.max_input_len <= 131072:
        raise BuildError(f"max_input_len must be within 1..131072, got {limits.max_input_len}")
    if not 2 <= limits.max_seq_len <= 131072:
        raise BuildError(f"max_seq_len must be within 2..131072, got {limits.max_seq_len}")
    if limits.max_input_len >= limits.max_seq_len:
        raise BuildError(f"max_input_len ({limits.max_input_len}) must be below max_seq_len ({limits.max_seq_len}), "
                         "or no token is left to generate")
    if limits.max_num_tokens is not None and not limits.max_input_len <= limits.max_num_tokens <= 1_048_576:
        raise BuildError(f"max_num_tokens must be within max_input_len ({limits.max_input_len})..1048576, "
                         f"got {limits.max_num_tokens}")
    trained = config.get("max_position_embeddings")
    if isinstance(trained, int) and limits.max_seq_len > trained:
        raise BuildError(f"max_seq_len {limits.max_seq_len} exceeds the model's max_position_embeddings {trained}")


# -- tools ----------------------------------------------------------------------------------------------


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


# -- running --------------------------------------------------------------------------------------------


_OWN_FILES = "|".join(re.escape(n) for n in (*TOKENIZER_FILES, LOG_FILE, MANIFEST_FILE))
_BUILD_OUTPUT = re.compile(rf"^(rank\d+\.(engine|safetensors)|config\.json|model\.cache|timing\.cache|{_OWN_FILES})"
                           r"(\.tmp)?$")


def _looks_like_ours(folder: Path) -> bool:
    """Safe to empty: only files a build (or a failed one) writes. An HF checkpoint (model-*.safetensors)
    or any subfolder is never ours."""
    return all(p.is_file() and _BUILD_OUTPUT.match(p.name) for p in folder.iterdir())


def _prepare_dir(folder: Path, overwrite: bool, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise BuildError(f"{what} {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise BuildError(f"{what} {folder} is not empty: pass --overwrite to rebuild it")
        if not _looks_like_ours(folder):
            raise BuildError(f"{what} {folder} holds files that are not a TensorRT-LLM build: refusing to empty it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def _run(cmd: Command, name: str, log_file: IO[str], log_path: Path, env: dict[str, str]) -> float:
    log_file.write(f"\n$ {cmd.shell()}\n")
    log_file.flush()
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=25)
    try:
        proc = subprocess.Popen(list(cmd.argv), cwd=cmd.cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace")
    except OSError as e:
        raise BuildError(f"{name} could not start ({cmd.argv[0]}): {e}") from e
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            log_file.write(line)
            tail.append(line.rstrip())
    log_file.flush()
    if proc.returncode != 0:
        raise BuildError(f"{name} failed with exit code {proc.returncode} (full log: {log_path}):\n"
                         + "\n".join(tail))
    return time.monotonic() - started


def tool_versions(python: str) -> dict[str, str | None]:
    """tensorrt_llm, TensorRT, torch and transformers as the build's Python sees them, and CUDA."""
    versions: dict[str, str | None] = {}
    try:
        out = subprocess.run([python, "-c", _VERSIONS_SCRIPT], capture_output=True, text=True, timeout=120,
                             check=True).stdout
        versions.update(json.loads(out.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        log.warning("could not read package versions from %s: %s", python, e)
    versions["cuda"] = cuda_version()
    return versions


def cuda_version() -> str | None:
    try:
        data = json.loads(Path("/usr/local/cuda/version.json").read_text(encoding="utf-8"))
        return str(data["cuda"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)
    if nvcc:
        try:
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        if m := re.search(r"release (\d+\.\d+)", out):
            return m.group(1)
    return None


def _memory_warning(recipe: Recipe) -> str | None:
    from watus.core.memwatch import read_meminfo

    info, _ = read_meminfo()
    if info is None or info.available_mb >= recipe.build_memory_gb * 1024:
        return None
    return (f"only {info.available_mb / 1024:.1f} GB of memory available; converting {recipe.model} needs about "
            f"{recipe.build_memory_gb:.0f} GB (unified memory: stop watus.target first, and swap will make it slow)")


def _engine_summary(output_dir: Path) -> dict[str, Any]:
    config = _read_json(output_dir / "config.json")
    build = config.get("build_config") or {}
    pretrained = config.get("pretrained_config") or {}
    return {
        "files": {p.name: p.stat().st_size for p in sorted(output_dir.glob("*.engine"))},
        "version": config.get("version"),
        "quant_algo": (pretrained.get("quantization") or {}).get("quant_algo"),
        "build_config": {k: build.get(k) for k in ("max_batch_size", "max_input_len", "max_seq_len",
                                                   "max_num_tokens") if k in build},
    }


def make_manifest(plan: BuildPlan, versions: dict[str, str | None], seconds: dict[str, float]) -> dict[str, Any]:
    from watus.bench import machine_info

    rec = plan.recipe
    return {
        "format": 1,
        "model": rec.model,
        "recipe": rec.name,
        "family": rec.family,
        "license": rec.license,
        "source_checkpoint": str(plan.checkpoint),
        "source_architectures": plan.checkpoint_info["architectures"],
        "source_quantization_config": plan.checkpoint_info["quantization_config"],
        "quantization": plan.quantization,
        "dtype": rec.dtype,
        "group_size": plan.group_size,
        "build_flags": {
            "gemm_plugin": "float16",
            "use_paged_context_fmha": "enable",
            **{k: v for k, v in asdict(plan.limits).items() if v is not None},
        },
        "commands": {"convert_checkpoint": list(plan.convert.argv), "convert_checkpoint_cwd": str(plan.convert.cwd),
                     "trtllm_build": list(plan.build.argv)},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "versions": {**versions, "convert_checkpoint_source": plan.examples_version},
        "engine": _engine_summary(plan.output_dir),
        "tokenizer_files": plan.tokenizer_files,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "machine": machine_info(()),
        "log": LOG_FILE,
    }


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
    if warning := _memory_warning(plan.recipe):
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
    _prepare_dir(plan.output_dir, overwrite, "engine folder")
    _prepare_dir(plan.work_dir, True, "checkpoint work folder")
    log_path = plan.output_dir / LOG_FILE
    # The robot is usually offline: the Hub must not be asked for anything the folder already holds.
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1")}
    seconds: dict[str, float] = {}
    with log_path.open("w", encoding="utf-8") as log_file:
        log_file.write(f"watus build-llm {plan.recipe.name} {plan.quantization} "
                       f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
        say(f"converting {plan.checkpoint.name} ({plan.quantization}) -> {plan.work_dir}")
        seconds["convert_checkpoint"] = _run(plan.convert, "convert_checkpoint.py", log_file, log_path, env)
        if not (plan.work_dir / "config.json").is_file():
            raise BuildError(f"convert_checkpoint.py wrote no config.json into {plan.work_dir} (log: {log_path})")
        say(f"building the engine -> {plan.output_dir}")
        seconds["trtllm_build"] = _run(plan.build, "trtllm-build", log_file, log_path, env)
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

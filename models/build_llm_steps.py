"""Running a planned TensorRT-LLM build: its folders, the tools with their log, and the manifest.

Every tool's output goes to `build_llm.log` in the engine folder (the last lines also into the error
when a tool fails). `watus_manifest.json` records what went into the engine (recipe, flags, commands,
versions, machine), which the LLM server reports in `/v1/models`. Part of `models/build_llm.py`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import subprocess
import time
from collections import deque
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from build_llm_plan import TOKENIZER_FILES, BuildPlan, Command
from build_llm_recipes import BuildError, Recipe, read_json

log = logging.getLogger(__name__)

MANIFEST_FILE = "watus_manifest.json"  # the name trt_server/engines/trtllm_dir.py reads
LOG_FILE = "build_llm.log"
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


_OWN_FILES = "|".join(re.escape(n) for n in (*TOKENIZER_FILES, LOG_FILE, MANIFEST_FILE))
_BUILD_OUTPUT = re.compile(rf"^(rank\d+\.(engine|safetensors)|config\.json|model\.cache|timing\.cache|{_OWN_FILES})"
                           r"(\.tmp)?$")


def _looks_like_ours(folder: Path) -> bool:
    """Safe to empty: only files a build (or a failed one) writes. An HF checkpoint (model-*.safetensors)
    or any subfolder is never ours."""
    return all(p.is_file() and _BUILD_OUTPUT.match(p.name) for p in folder.iterdir())


def prepare_dir(folder: Path, overwrite: bool, what: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise BuildError(f"{what} {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise BuildError(f"{what} {folder} is not empty: pass --overwrite to rebuild it")
        if not _looks_like_ours(folder):
            raise BuildError(f"{what} {folder} holds files that are not a TensorRT-LLM build: refusing to empty it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def run_tool(cmd: Command, name: str, log_file: IO[str], log_path: Path, env: dict[str, str]) -> float:
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


def memory_warning(recipe: Recipe) -> str | None:
    from watus.core.memwatch import read_meminfo

    info, _ = read_meminfo()
    if info is None or info.available_mb >= recipe.build_memory_gb * 1024:
        return None
    return (f"only {info.available_mb / 1024:.1f} GB of memory available; converting {recipe.model} needs about "
            f"{recipe.build_memory_gb:.0f} GB (unified memory: stop watus.target first, and swap will make it slow)")


def _engine_summary(output_dir: Path) -> dict[str, Any]:
    config = read_json(output_dir / "config.json")
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

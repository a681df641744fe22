"""The TensorRT-LLM engine directory on disk: where it is, its tokenizer, its limits and build manifest.

`trtllm-build` writes `config.json` and `rank0.engine`; the models/ recipes add the HF tokenizer files
and `watus_manifest.json`. Every error names the setting to fix (`WATUS_LLM_MODEL_PATH`,
`WATUS_LLM_TOKENIZER_PATH`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from trt_server.engines.base import ModelNotFoundError
from trt_server.engines.hf_tokenizer import has_tokenizer_files

log = logging.getLogger(__name__)

MANIFEST_FILE = "watus_manifest.json"


def resolve_engine_dir(path: Path | None) -> Path:
    """The engine directory from WATUS_LLM_MODEL_PATH, checked to hold config.json and an engine file."""
    if path is None:
        raise ModelNotFoundError(
            "The trtllm engine needs WATUS_LLM_MODEL_PATH set to a TensorRT-LLM engine directory (built with "
            "trtllm-build, see models/)."
        )
    path = path.expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"TensorRT-LLM engine directory not found: {path} (WATUS_LLM_MODEL_PATH). Build one with "
            "trtllm-build (see models/) and point WATUS_LLM_MODEL_PATH at it."
        )
    if not (path / "config.json").is_file() or not any(path.glob("*.engine")):
        raise ModelNotFoundError(
            f"{path} (WATUS_LLM_MODEL_PATH) is not a TensorRT-LLM engine directory: it needs config.json and "
            "rank0.engine as written by trtllm-build."
        )
    return path


def resolve_tokenizer_dir(path: Path | None, engine_dir: Path) -> Path:
    """The HF tokenizer from WATUS_LLM_TOKENIZER_PATH, else the one copied into the engine directory."""
    path = (path or engine_dir).expanduser()
    if not has_tokenizer_files(path):
        raise ModelNotFoundError(
            f"No Hugging Face tokenizer in {path}: set WATUS_LLM_TOKENIZER_PATH to the model's HF directory "
            "(tokenizer.json + tokenizer_config.json), or copy those files into the engine directory."
        )
    return path


def read_engine_config(engine_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((engine_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(
            f"Unreadable engine config {engine_dir / 'config.json'} (WATUS_LLM_MODEL_PATH): {e}"
        ) from e
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{engine_dir / 'config.json'} (WATUS_LLM_MODEL_PATH) is no engine config.")
    return config


def engine_limits(config: dict[str, Any], context_length: int) -> tuple[int, int]:
    """(max_context, max_input_len) of the engine, the context capped by WATUS_LLM_CONTEXT_LENGTH."""
    build = config.get("build_config") or {}
    max_input = build.get("max_input_len")
    max_seq = build.get("max_seq_len")
    if not isinstance(max_seq, int) and isinstance(max_input, int):
        # Engines from before max_seq_len (<= 0.9) give the output length separately.
        max_seq = max_input + int(build.get("max_output_len") or 0) or max_input
    max_context = min(context_length, max_seq) if isinstance(max_seq, int) and max_seq > 0 else context_length
    max_input = min(max_input, max_context) if isinstance(max_input, int) and max_input > 0 else max_context
    return max_context, max_input


def tokens_per_block(config: dict[str, Any]) -> int | None:
    """The engine's KV-cache block size (tokens), from `trtllm-build`'s plugin config; None if it is not there."""
    plugin = (config.get("build_config") or {}).get("plugin_config") or {}
    value = plugin.get("tokens_per_block") if isinstance(plugin, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def read_manifest(engine_dir: Path) -> dict[str, Any] | None:
    """The build manifest the models/ recipes leave with an engine (model, quantisation, flags, versions)."""
    file = engine_dir / MANIFEST_FILE
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", file, e)
        return None
    return data if isinstance(data, dict) else {"value": data}

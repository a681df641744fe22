"""The inputs of a TensorRT-LLM build (`watus models build-llm`): recipes, the checkpoint, the limits.

A recipe (`models/llm_recipes/*.json`) holds one model's converter family, the architectures its
converter takes and the default engine limits. The checks here run before any tool does and fail with
a `BuildError` that says what to change. Part of `models/build_llm.py`, which loads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parent / "llm_recipes"
QUANTIZATIONS = ("int4", "int4_gptq")


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
class Limits:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int | None


def read_json(path: Path) -> dict[str, Any]:
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
        data = read_json(legacy)
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
    config = read_json(config_path)
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

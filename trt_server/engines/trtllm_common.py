"""What both TensorRT-LLM paths share: finding the installed API, matching its signatures, sampling.

TensorRT-LLM moves its classes between modules and renames keyword arguments from one version to the
next (0.12.0-jetson on the robot, 1.x on x86 GPUs), so classes are looked up in a list of modules and
keyword arguments are matched to the installed signatures rather than to a version number. The
request's sampling parameters map to the same knobs on the `LLM` API and on `ModelRunnerCpp`.

Nothing here imports `tensorrt_llm` at import time.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import AsyncGenerator, Callable, Iterable
from types import ModuleType
from typing import Any, Protocol

from trt_server.engines.base import EngineNotInstalledError, SamplingParams
from trt_server.engines.hf_tokenizer import HFTokenizer

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "The trtllm engine needs TensorRT-LLM. On the Jetson (JetPack 6) install the TensorRT-LLM "
    "0.12.0-jetson wheel or build the v0.12.0-jetson branch from source (deploy/jetson/setup.sh does "
    "either); on an x86 NVIDIA GPU: pip install tensorrt-llm --extra-index-url https://pypi.nvidia.com. "
    "Without a GPU use WATUS_LLM_ENGINE=llamacpp."
)

#: New token ids of one step, and the finish reason on the last step.
IdStream = AsyncGenerator[tuple[list[int], str | None], None]


class Backend(Protocol):
    """One way of running the engine (the `LLM` API or `ModelRunnerCpp`), loaded and ready."""

    #: The name `/v1/models` reports ("llm" or "model_runner_cpp").
    api: str
    supports_grammar: bool

    def stream(self, prompt_ids: list[int], params: SamplingParams, max_tokens: int) -> IdStream:
        """New ids per step; closing the generator early cancels the request."""
        ...

    async def close(self) -> None: ...


def import_tensorrt_llm() -> ModuleType:
    # The robot is often offline: Hub lookups inside TensorRT-LLM must fail fast, not retry.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return importlib.import_module("tensorrt_llm")
    except ImportError as e:
        raise EngineNotInstalledError(f"{INSTALL_HINT} (import tensorrt_llm: {e})") from e


def import_attr(modules: Iterable[str], name: str) -> Any:
    """The first `module.name` that imports, or None."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


def accepted(func: Callable[..., Any]) -> set[str] | None:
    """Keyword names `func` takes, or None when it takes any (**kwargs) or has no readable signature."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def only(kwargs: dict[str, Any], names: set[str] | None, what: str) -> dict[str, Any]:
    """`kwargs` without the names a signature does not take (all of them when `names` is None)."""
    if names is None:
        return kwargs
    dropped = sorted(set(kwargs) - names)
    if dropped:
        log.debug("%s of this TensorRT-LLM takes no %s; left out", what, ", ".join(dropped))
    return {k: v for k, v in kwargs.items() if k in names}


def finish_reason(reported: object, produced: int, max_tokens: int) -> str:
    if reported in ("stop", "length"):
        return str(reported)
    return "length" if produced >= max_tokens else "stop"


def stop_ids(tok: HFTokenizer, params: SamplingParams) -> list[int]:
    """Ids that end a generation besides end_id: the model's other EOS ids (<|eot_id|>), the request's."""
    eos = [] if params.ignore_eos else tok.eos_token_ids
    ids = dict.fromkeys([*eos, *params.stop_token_ids])
    if not params.ignore_eos and tok.eos_token_id is not None:
        ids.pop(tok.eos_token_id, None)  # already end_id
    return list(ids)


def pad_id(tok: HFTokenizer) -> int | None:
    return tok.eos_token_id if tok.pad_token_id is None else tok.pad_token_id


def sampling_knobs(params: SamplingParams) -> dict[str, Any]:
    """Temperature, top-p and penalties, under the names both APIs use."""
    kw: dict[str, Any] = {}
    if params.temperature <= 0.0:
        kw["top_k"] = 1  # greedy; some versions reject temperature 0
    else:
        kw["temperature"] = params.temperature
        # With top_k and top_p both unset the runtime decodes greedily: top_p 1.0 keeps sampling on.
        kw["top_p"] = params.top_p if 0.0 < params.top_p <= 1.0 else 1.0
    if params.presence_penalty:
        kw["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        kw["frequency_penalty"] = params.frequency_penalty
    return kw

"""What both TensorRT-LLM paths share: finding the installed API, matching its signatures, sampling.

TensorRT-LLM moves its classes between modules and renames keyword arguments from one version to the
next (0.12.0-jetson on the robot, 1.x on x86 GPUs), so classes are looked up in a list of modules and
keyword arguments are matched to the installed signatures rather than to a version number. The
request's sampling parameters map to the same knobs on the `LLM` API and on `ModelRunnerCpp`.

Output objects differ the same way: 1.x's `CompletionOutput` carries `finish_reason` and `stop_reason`,
0.12's (a slots dataclass) has neither, and `ModelRunnerCpp` reports no reason at all. So a backend
yields what it was told (`Step.reported`) and the engine derives the finish reason (`finish_reason`).

Nothing here imports `tensorrt_llm` at import time.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import AsyncGenerator, Callable, Collection, Iterable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Step:
    """What one engine step produced."""

    #: New token ids, as the engine returned them (end-of-generation ids included where it returns them).
    ids: list[int] = field(default_factory=list)
    #: True on the last step of a request.
    done: bool = False
    #: The finish reason the installed TensorRT-LLM reported on the last step (1.x), else None.
    reported: str | None = None
    #: Prompt tokens taken from the KV cache (reused blocks), once the engine reports them; else None.
    cached: int | None = None


IdStream = AsyncGenerator[Step, None]


class Backend(Protocol):
    """One way of running the engine (the `LLM` API or `ModelRunnerCpp`), loaded and ready."""

    #: The name `/v1/models` reports ("llm" or "model_runner_cpp").
    api: str
    supports_grammar: bool
    #: How the last request closed early was stopped (e.g. "RequestOutput.abort()"), or why it could not be;
    #: "" before any. The self-test reports it: cancelling differs most between versions.
    last_cancel: str

    def stream(self, prompt_ids: list[int], params: SamplingParams, max_tokens: int) -> IdStream:
        """The request's steps, the last with `done`; closing the generator early cancels the request."""
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


def reported_finish(completion: object) -> str | None:
    """The finish reason a 1.x `CompletionOutput` carries, or None.

    0.12's `CompletionOutput` is a `@dataclass(slots=True)` without `finish_reason` or `stop_reason` (they
    arrived in 0.14): reading them there raises AttributeError, so they are only read where present.
    1.x sets `stop_reason` (the stop token id or string) when a stop matched, with `finish_reason` "stop".
    """
    reason = getattr(completion, "finish_reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if getattr(completion, "stop_reason", None) is not None:
        return "stop"
    return None


def finish_reason(reported: str | None, produced: int, max_tokens: int, last_id: int | None,
                  ends: Collection[int]) -> str:
    """OpenAI's finish reason of a finished request: "stop" or "length".

    1.x's own "stop"/"length" is taken as it is (it also says "length" when the engine's max_seq_len cut the
    request short). Otherwise (0.12, `ModelRunnerCpp`, 1.x's "cancelled"/"timeout") it is derived: the
    last token an end-of-generation or stop id means stop; the token budget used up means length; anything
    else is an end id the executor did not return, so stop. Stop strings are matched by the server, which
    sets "stop" itself.
    """
    if reported in ("stop", "length"):
        return reported
    if last_id is not None and last_id in ends:
        return "stop"
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

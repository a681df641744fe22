"""What a request asks of the server and its engine, checked before any work: a 400 naming the parameter.

The wire schemas (`protocol`) check each field alone; these are the checks across fields and against
`Capabilities`, what the engine declares it can do (log-probabilities and how many alternatives,
several streams per request, logit bias, the vocabulary's size). Nothing an engine does not declare
reaches it: the request is refused here, before it is admitted.
"""

from __future__ import annotations

from collections.abc import Sequence

from trt_server.engines.base import Capabilities
from trt_server.errors import BadRequestError
from trt_server.protocol import MAX_CHOICES, ChatCompletionRequest, CompletionRequest


def _engine(caps: Capabilities) -> str:
    return f"the {caps.name} engine" if caps.name else "this engine"


def _check_common(req: ChatCompletionRequest | CompletionRequest, caps: Capabilities, n_prompts: int) -> None:
    if req.stream_options is not None and not req.stream:
        raise BadRequestError("stream_options is only allowed with stream: true", param="stream_options")
    n = req.n or 1
    if n * n_prompts > MAX_CHOICES:
        raise BadRequestError(f"{n_prompts} prompts x n={n} asks for {n * n_prompts} choices; at most "
                              f"{MAX_CHOICES} per request", param="n")
    if n > 1 and not caps.supports_parallel_choices:
        raise BadRequestError(f"n={n}: {_engine(caps)} generates one choice per request (n must be 1)",
                              param="n")
    if req.logit_bias:
        if not caps.supports_logit_bias:
            raise BadRequestError(f"logit_bias is not supported by {_engine(caps)}", param="logit_bias")
        check_token_ids([t for t, _ in req.bias_pairs()], caps, "logit_bias")


def _check_logprobs(caps: Capabilities, top: int, param: str) -> None:
    """Log-probabilities with `top` alternatives per token; `param` names the count."""
    if caps.max_logprobs is None:
        raise BadRequestError(f"logprobs are not supported by {_engine(caps)}", param="logprobs")
    if top > caps.max_logprobs:
        raise BadRequestError(f"{param}={top}: {_engine(caps)} gives at most {caps.max_logprobs} "
                              "alternatives per token", param=param)


def check_chat(req: ChatCompletionRequest, caps: Capabilities) -> None:
    """Raise BadRequestError (400, naming the parameter) for what this chat request cannot get."""
    _check_common(req, caps, 1)
    if req.top_logprobs and not req.logprobs:
        raise BadRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
    if req.logprobs:
        _check_logprobs(caps, req.top_logprobs or 0, "top_logprobs")


def check_completion(req: CompletionRequest, caps: Capabilities, n_prompts: int) -> None:
    """Raise BadRequestError (400, naming the parameter) for what this completions request cannot get."""
    if req.suffix:
        raise BadRequestError("suffix (fill-in-the-middle) is not supported", param="suffix")
    if req.best_of not in (None, 1, req.n or 1):
        raise BadRequestError("best_of other than n is not supported (every choice generated is returned)",
                              param="best_of")
    if n_prompts > 1 and not caps.supports_parallel_choices:
        raise BadRequestError(f"{n_prompts} prompts: {_engine(caps)} takes one prompt per request",
                              param="prompt")
    _check_common(req, caps, n_prompts)
    if req.logprobs is not None:
        _check_logprobs(caps, req.logprobs, "logprobs")
        if req.echo:
            raise BadRequestError("echo with logprobs needs the log-probabilities of the prompt's tokens, "
                                  "which this server does not compute: drop echo or logprobs", param="echo")


def check_token_ids(ids: Sequence[int], caps: Capabilities, param: str) -> None:
    """Token ids outside the vocabulary (when the engine knows its size) are a 400, not a crash."""
    if caps.vocab_size is None:
        return
    bad = [t for t in ids if t >= caps.vocab_size]
    if bad:
        raise BadRequestError(f"token id {bad[0]} is outside this model's vocabulary of {caps.vocab_size} "
                              "tokens", param=param)
